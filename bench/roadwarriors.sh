#!/usr/bin/env bash
# Road warriors with virtual IPs against a spigot concentrator and against a strongSwan 5.9.8
# responder (charon, 16 threads, kernel-libipsec, the attr plugin's pools), same topology, same
# load generator, same run (issue 11):
#   1. N road warriors at up to RATE/s against each responder. Every one asks for a virtual IP
#      from a pool over 198.18.0.0/15 (CFG_REQUEST) and sends PACKETS ICMP echo requests from
#      it to 203.0.113.1 (on the responder's loopback) through its own CHILD SA; the responder's
#      kernel answers back through that peer's SA. The SAs stay up HOLD seconds past the start.
#   2. spigot only: BIG road warriors the same way at up to BIG_RATE/s, to measure memory at
#      scale with every one passing traffic. BIG_RATE (default 1000) stays below what spigot
#      establishes on a 2-core machine (~1,700/s quiet, ~650/s with builds running beside it):
#      offered 10,000/s for 100,000 peers, the negotiation queue overflows for minutes and peers
#      give up after their 5 retransmits, which measures overload, not memory per peer. The peak
#      depends a little on the rate: the SAs that carried packets within the last one to two
#      datapath::kIdleKeysPeriod (10 s) keep their expanded keys (~2.2 KB each), the idle rest
#      do not - at 600/s ~6,000-12,000 of them.
# For each: establish rate, p50/p99 latency, failures, virtual IPs (distinct), peers with all /
# some / none of their replies, peak responder RSS (VmHWM). The ratio is spigot's establish
# rate over strongSwan's from this run. Run as root.
# usage: bench/roadwarriors.sh [BUILD_DIR] [N] [BIG]
#        defaults: build/release 10000 100000; RATE=10000 BIG_RATE=1000 PACKETS=3 HOLD (default
#        N/1000 + 20 seconds) in the environment; N=0 skips 1, BIG=0 skips 2
# Addresses: documentation ranges and 198.18.0.0/15 only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/release}
N=${2:-10000} BIG=${3:-100000}
RATE=${RATE:-10000} BIG_RATE=${BIG_RATE:-1000} PACKETS=${PACKETS:-3}
SPIGOT=$(cd "$BUILD" && pwd)/spigot
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=roadwarriors-secret
POOL=198.18.0.0/15 TARGET=203.0.113.1
RESULTS="$WORK/results.txt"
: >"$RESULTS"

spigot_responder() {
  cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "$POOL"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b"
remote_id = "%any"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
  spigot_start b
}

# charon as a concentrator: any identity with the PSK, a virtual IP from the pool, local_ts
# 203.0.113.0/24. kernel-libipsec carries the ESP in userspace over its ipsec0 TUN device; the
# pool is routed into it once (install_routes = no: no route per road warrior).
strongswan_responder() {
  local dir="$WORK/charon-b"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink attr
  install_routes = no
  threads = 16
  block_threshold = 1000000
  ikesa_table_size = 65536
  ikesa_table_segments = 16
  filelog { stderr { default = 0 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  rw {
    local_addrs = 192.0.2.2
    proposals = $IKE
    pools = rw
    local {
      auth = psk
      id = gw-b
    }
    remote {
      auth = psk
      id = %any
    }
    children {
      net {
        local_ts = 203.0.113.0/24
        esp_proposals = $ESP
      }
    }
  }
}
pools {
  rw {
    addrs = $POOL
  }
}
secrets {
  ike-any {
    secret = $PSK
  }
}
CONF
  charon_launch b
  until_ok 10 ip -n "${NS}b" link show ipsec0 >/dev/null || fail "charon: no ipsec0 device"
  ip -n "${NS}b" link set ipsec0 up
  ip -n "${NS}b" route add "$POOL" dev ipsec0
}

stop_responder() {
  kill -TERM "$RPID" 2>/dev/null || true
  wait "$RPID" 2>/dev/null || true
  PIDS=()
  sleep 1
}

# run_case RESPONDER NAME COUNT [RATE]
run_case() {
  local who=$1 name=$2 count=$3 rate=${4:-$RATE}
  local hold=${HOLD:-$(( count / 1000 + 20 ))}
  if [ "$who" = spigot ]; then spigot_responder; else strongswan_responder; fi
  RPID=${PIDS[-1]}
  log "$name vs $who: $count road warriors at up to $rate/s, $PACKETS echoes each, held ${hold}s"
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$count" \
    --rate "$rate" --duration "${hold}s" --ike "$IKE" --esp "$ESP" --vips --traffic \
    --packets "$PACKETS" --traffic-dst "$TARGET" --id-prefix "$name" --json \
    >"$WORK/$name-$who.json" 2>"$WORK/$name-$who.progress" || true
  local hwm_kb
  hwm_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$RPID/status")
  stop_responder
  local r="$WORK/$name-$who.json"
  [ -s "$r" ] || { tail -5 "$WORK/$name-$who.progress"; fail "$name vs $who: no report"; }
  python3 - "$r" "$who" "$name" "$hwm_kb" <<'PY' | tee -a "$RESULTS"
import json, sys
r, who, name, hwm = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
v, t = r.get("vips", {}), r.get("traffic", {})
fails = ", ".join(f"{k}: {n}" for k, n in r.get("failures", {}).items()) or "-"
drops = ", ".join(f"{k}: {n}" for k, n in t.get("dropped", {}).items()) or "-"
print(f"{name:<5} {who:<10} established {r['established']:>6}  failed {r['failed']:>5}  "
      f"rate {r['establish_rate_per_second']:>8.1f}/s  p50 {r['latency_ms']['p50']:>7.1f} ms  "
      f"p99 {r['latency_ms']['p99']:>8.1f} ms  vips {v.get('assigned', 0)} ({v.get('distinct', 0)} distinct)  "
      f"peers all/some/none replies {t.get('peers_all_replies', 0)}/{t.get('peers_some_replies', 0)}/"
      f"{t.get('peers_no_replies', 0)}  echoes {t.get('received', 0)}/{t.get('sent', 0)}  "
      f"peak RSS {hwm / 1024:.1f} MiB  (failures: {fails}; traffic drops: {drops})")
PY
}

command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
netns_setup
if [ "$N" -gt 0 ]; then
  run_case spigot rw "$N"
  run_case strongswan rw "$N"
fi
if [ "$BIG" -gt 0 ]; then run_case spigot big "$BIG" "$BIG_RATE"; fi

echo
echo "roadwarriors.sh: N=$N BIG=$BIG RATE=$RATE BIG_RATE=$BIG_RATE PACKETS=$PACKETS (spigot $(git -C "$ROOT" rev-parse --short HEAD))"
cat "$RESULTS"
python3 - "$WORK" <<'PY'
import json, os, sys
w = sys.argv[1]
def rate(who):
    p = os.path.join(w, f"rw-{who}.json")
    return json.load(open(p))["establish_rate_per_second"] if os.path.exists(p) else None
s, g = rate("spigot"), rate("strongswan")
if s and g:
    print(f"road warriors: spigot establishes {s / g:.1f}x as fast as strongSwan ({s:.0f}/s vs {g:.0f}/s)")
PY
