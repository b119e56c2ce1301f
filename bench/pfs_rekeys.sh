#!/usr/bin/env bash
# CHILD rekeys with PFS answered by a spigot responder (issue 17): N road warriors from
# `spigot loadgen` (PSK, a virtual IP each), every CHILD SA rekeyed every CHILD_LIFE seconds
# with a DH of the ESP proposal's group, held HOLD seconds. Reports the rekeys the responder
# answered per second over the steady part of the run, and the CPU its control thread (the main
# thread: the event loop) and the whole process used meanwhile, as a share of one core.
# Not a test. Run as root.
# usage: bench/pfs_rekeys.sh SPIGOT_BINARY [N] [HOLD]
#        defaults: 2000 40; CHILD_LIFE=5 RATE=1000 ESP=aes128gcm16-modp2048
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SPIGOT=$(readlink -f "$1")
N=${2:-2000} HOLD=${3:-40}
CHILD_LIFE=${CHILD_LIFE:-5} RATE=${RATE:-1000}
IKE=aes128gcm16-prfsha256-x25519 ESP=${ESP:-aes128gcm16-modp2048} PSK=bench-secret
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
source "$ROOT/bench/control_cpu.sh"

netns_setup
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i -e 's/^remote_id = .*/remote_id = "%any"/' -e '/^remote_ts = /d' "$WORK/b.toml"
printf 'pools = "rw"\n\n[[pool]]\nname = "rw"\naddrs = "198.18.0.0/15"\n' >>"$WORK/b.toml"
spigot_start b
RPID=${PIDS[-1]}

ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --vips --ike-sas "$N" \
  --rate "$RATE" --duration "${HOLD}s" --ike "$IKE" --esp "$ESP" --child-rekey-time "${CHILD_LIFE}s" \
  --json >"$WORK/loadgen.json" 2>"$WORK/loadgen.progress" &
LG=$!
# Steady state: every initiator up and past its first rekey.
WARM=$(( N / RATE + CHILD_LIFE + 2 ))
sleep "$WARM"
WINDOW=$(( HOLD - WARM - 3 ))
[ "$WINDOW" -ge 5 ] || fail "HOLD too short for N, RATE and CHILD_LIFE"
read -r per_s control process <<<"$(control_window "$RPID" b "$WINDOW")"
wait "$LG" || true
sctl b stats --json >"$WORK/stats.json"
python3 - "$WORK/loadgen.json" "$WORK/stats.json" "$per_s" "$control" "$process" "$WINDOW" "$ESP" "$N" "$CHILD_LIFE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
per_s, control, process, w = (float(x) for x in sys.argv[3:7])
esp, n, life = sys.argv[7], sys.argv[8], sys.argv[9]
ike = json.load(open(sys.argv[2]))["ike"]
print(f"esp {esp}, {n} IKE SAs, CHILD rekey every {life} s, window {w:.0f} s:")
print(f"  rekeys answered {per_s:8.1f}/s   control thread CPU {control:5.1f} % of a core   process {process:5.1f} %")
print(f"  loadgen: established {r['established']} failed {r['failed']} rekeys {r['rekeys_completed']} "
      f"failures {r.get('failures', {})}")
print("  ike: " + ", ".join(f"{k} {ike.get(k)}" for k in
      ("child_pfs_offloaded", "child_pfs_inline", "ike_rekey_offloaded", "ike_rekey_inline", "offload")))
PY
