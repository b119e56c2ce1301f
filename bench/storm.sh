#!/usr/bin/env bash
# Login and renegotiation storms against a spigot responder and a strongSwan 5.9.8 responder
# (charon, 16 threads, kernel-libipsec), same topology, same load generator, same run:
#   1. N IKE SAs (each with its CHILD SA) as fast as they go (the load generator offers RATE/s),
#      PSK, each initiator asking for a virtual IP from 198.18.0.0/15 (both responders);
#   2. N IKE SAs with CHILD SAs rekeyed every CHILD_LIFE seconds, held for HOLD seconds;
#   3. spigot only: BIG IKE SAs with their CHILD SAs, held, to measure memory at scale;
#   4. certificate logins (issue 12): N IKE SAs as in 1, authenticated with certificates both
#      ways, once per gateway key type in CERT (ecdsa = P-256, rsa2048, rsa3072), offered
#      CERT_RATE/s (default per type, a little under what spigot's one IKE_AUTH thread
#      sustained on the 2-core test machine: ecdsa 600 (651/s at 1000 offered), rsa2048 270
#      (287/s at 400), rsa3072 100). Certificates are made in the run with strongSwan's `pki`: a root CA and the
#      gateway's certificate (SAN gw-b.example, serverAuth) with keys of that type, and one
#      client certificate (ECDSA P-256, DN "C=CH, O=Example, CN=storm-client", clientAuth) under
#      the same root. Every initiator logs in with that one client certificate under its subject
#      DN (`spigot loadgen --cert --key --ca`), so both responders allow duplicate identities
#      (spigot unique = "no", strongSwan unique = never) and match exactly that DN; the
#      load generator checks the gateway's certificate against the root. The client key is
#      ECDSA whatever CERT says, so that the load generator's own signatures stay cheap: per
#      login a responder signs once with the gateway key and verifies the client certificate
#      (CA's signature) and the client's ECDSA AUTH. spigot signs on its control thread (one
#      core; issue 17 moves it), strongSwan on its 16 threads.
#   5. EAP-MSCHAPv2 logins (issue 13), with EAP=1 (default): N road warriors, each its own user
#      (storm1..stormN, one password; `spigot loadgen --eap-id 'storm%d' --eap-secret --ca
#      --vips`) asking for a virtual IP, against spigot ([[eap_user]] entries, an ECDSA P-256
#      gateway certificate, pool 198.18.0.0/16) and strongSwan (eap-identity + eap-mschapv2, the
#      attr pool of the same range, a wildcard EAP secret), offered EAP_RATE/s (default 600).
#      A login is five IKE_AUTH exchanges: the gateway's signature, EAP-Identity, the MS-CHAPv2
#      challenge, its success and the two MSK AUTHs; on spigot all on the control thread.
#   6. EAP-MSCHAPv2 logins through RADIUS (issue 13), with EAP_RADIUS=1 (default): as 5, but
#      both responders pass every EAP message to one FreeRADIUS 3 server (Debian's freeradius,
#      started here in the responders' namespace on 127.0.0.1:18121, users storm1..stormN in its
#      users file): spigot with remote_auth = "eap-radius", strongSwan with its eap-radius
#      plugin (16 sockets, one per worker thread). Offered EAP_RATE/s.
#   7. a mobility storm (issue 17), with MOVE road warriors (default 1000; MOVE=0 skips): PSK,
#      virtual IPs, each pinging 203.0.113.1 every 200 ms through its own CHILD SA; once all are
#      up, all of them move at once from 192.0.2.1 to 192.0.2.5 (a second address of side a) and
#      say so with MOBIKE UPDATE_SA_ADDRESSES (RFC 4555 3.5; `spigot loadgen --move-to`). Per
#      responder: updates answered and how long they took (p50/p99/max from the move), road
#      warriors whose echo replies came back to the new address and when, and that the crowd
#      stayed on its IKE SAs (no failure, none lost, every DELETE at the end answered from the
#      new address). spigot checks each new address before its CHILD SAs follow (3.7, COOKIE2);
#      strongSwan as responder moves at once.
#   8. the IKE workers against the control thread (issue 17 item 4), spigot only, with WORKERS
#      (default 2000; WORKERS=0 skips) IKE SAs per case: each case once against a spigot with
#      its IKE workers (global.ike_workers unset: one per core) and once against one started
#      with SPIGOT_BENCH_IKE_INLINE=1 (no workers: every IKE_SA_INIT, IKE_AUTH, PFS and IKE
#      rekey computation at once on the control thread, as before issue 17). Cases:
#      certificate logins as in 4 with an RSA-2048 and an ECDSA P-256 gateway, offered
#      W_RATE_RSA (default 1000) and W_RATE_ECDSA (2000) per second, more than either spigot
#      sustains on 2 cores; and PFS rekeys as bench/pfs_rekeys.sh measures them: PSK road
#      warriors offered 1000/s, each rekeying its CHILD SA with MODP-2048 every W_CHILD_LIFE
#      (default 5) seconds for W_HOLD (30) seconds. Per case: establish rate, rekeys answered
#      per second (over the steady window after every road warrior's first rekey), the control
#      thread's CPU (its /proc/PID/task/TID/stat) as a share of one core (logins: from the
#      first login to the last established; rekeys: over the window), p99 login latency, and
#      p99 of the control thread's tick lag (spigot stats control.tick_lag_us).
# For each: establish rate, p50/p99 latency, failures, rekeys completed, peak responder RSS
# (VmHWM). Ratios are spigot over strongSwan from this run. Run as root.
# usage: bench/storm.sh [BUILD_DIR] [N] [HOLD] [BIG]
#        defaults: build/release 20000 300 100000; CHILD_LIFE=60 RATE=10000
#        CERT="ecdsa rsa2048" in the environment (CERT_RATE: see 4);
#        EAP=1 EAP_RATE=600;
#        N=0 skips 1, 2, 4, 5 and 6, HOLD=0 skips 2, BIG=0 skips 3, CERT= (empty) skips 4,
#        EAP=0 skips 5, EAP_RADIUS=0 skips 6, MOVE=0 skips 7 (MOVE_RATE: its offered rate, 500),
#        WORKERS=0 skips 8, W_CERT= (empty) its certificate cases (W_RATE_RSA, W_RATE_ECDSA,
#        W_CHILD_LIFE, W_HOLD: see 8)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/release}
N=${2:-20000} HOLD=${3:-300} BIG=${4:-100000}
CHILD_LIFE=${CHILD_LIFE:-60} RATE=${RATE:-10000}
CERT=${CERT-ecdsa rsa2048} CERT_RATE=${CERT_RATE:-}
EAP=${EAP:-1} EAP_RATE=${EAP_RATE:-600} EAP_PW=storm-password-1  # no blanks: login_args is split on them
EAP_RADIUS=${EAP_RADIUS:-1} RADIUS_SECRET=storm-radius-secret
MOVE=${MOVE:-1000} MOVE_RATE=${MOVE_RATE:-500}
WORKERS=${WORKERS:-2000} W_CERT=${W_CERT-rsa2048 ecdsa} W_RATE_RSA=${W_RATE_RSA:-1000} W_RATE_ECDSA=${W_RATE_ECDSA:-2000}
W_CHILD_LIFE=${W_CHILD_LIFE:-5} W_HOLD=${W_HOLD:-30}
SPIGOT=$(cd "$BUILD" && pwd)/spigot
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
source "$ROOT/bench/control_cpu.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=storm-secret
RESULTS="$WORK/results.txt"
: >"$RESULTS"


# How run_case's responders and initiators authenticate: AUTH=psk, or AUTH=cert with the
# certificates make_certs made (in $PKI_DIR).
AUTH=psk CLIENT_DN="C=CH, O=Example, CN=storm-client" GW_ID=gw-b.example
PKI_DIR="$WORK/pki"

make_certs() {  # make_certs ecdsa|rsa2048|rsa3072: a root and gateway of that type, the client
  local type size
  case "$1" in
    ecdsa) type=ecdsa size=256 ;;
    rsa2048) type=rsa size=2048 ;;
    rsa3072) type=rsa size=3072 ;;
    *) fail "CERT: '$1' is not ecdsa, rsa2048 or rsa3072" ;;
  esac
  rm -rf "$PKI_DIR"
  pki_key root "$type" "$size"
  pki_self_ca root "C=CH, O=Example, CN=Storm Root CA ($1)"
  pki_key gw "$type" "$size"
  pki_issue gw root "C=CH, O=Example, CN=$GW_ID" --san "$GW_ID" --flag serverAuth
  pki_key client ecdsa 256
  pki_issue client root "$CLIENT_DN" --flag clientAuth
  log "pki: root CA and gateway $GW_ID ($1), client \"$CLIENT_DN\" (ECDSA P-256)"
}

# spigot_eap_responder COUNT: side b's config for AUTH=eap: the gateway certificate, EAP-MSCHAPv2
# users storm1..stormCOUNT, virtual IPs from 198.18.0.0/16.
spigot_eap_responder() {
  cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.0.0/16"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "$GW_ID"
remote_id = "%any"
local_auth = "pubkey"
remote_auth = "$([ "$AUTH" = eap-radius ] && echo eap-radius || echo eap-mschapv2)"
local_cert = "$PKI_DIR/gw.pem"
local_key = "$PKI_DIR/gw.key"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
  if [ "$AUTH" = eap-radius ]; then
    printf '\n[radius]\nservers = "127.0.0.1:18121"\nsecret = "%s"\n' "$RADIUS_SECRET" >>"$WORK/b.toml"
    return
  fi
  python3 - "$1" "$EAP_PW" >>"$WORK/b.toml" <<'PY'
import sys
for i in range(1, int(sys.argv[1]) + 1):
    print(f'\n[[eap_user]]\nid = "storm{i}"\nsecret = "{sys.argv[2]}"')
PY
}

start_responder() {  # start_responder spigot|strongswan -> RPID
  if [ "$1" = spigot ] && [ "${AUTH%-radius}" = eap ]; then
    spigot_eap_responder "$N"
    spigot_start b
  elif [ "$AUTH" = eap ]; then
    charon_eap_responder b "$IKE" "$ESP" "$PKI_DIR/gw.pem" "$PKI_DIR/gw.key" 198.18.0.0/16 "" "$EAP_PW" no 16
  elif [ "$AUTH" = eap-radius ]; then
    charon_eap_responder b "$IKE" "$ESP" "$PKI_DIR/gw.pem" "$PKI_DIR/gw.key" 198.18.0.0/16 "" "" no 16 \
      "127.0.0.1 18121 $RADIUS_SECRET"
  elif [ "$1" = spigot ]; then
    spigot_config b "$IKE" "$ESP" "$PSK"
    if [ "$AUTH" = cert ]; then
      spigot_cert_auth b "$PKI_DIR/gw.pem" "$PKI_DIR/gw.key" "$PKI_DIR/root.pem" "$GW_ID" "$CLIENT_DN"
    else
      # Road warriors with virtual IPs (--vips): each peer's CHILD SA is for its own address,
      # as spigot's per-peer policies require of peers on one %any connection.
      sed -i -e 's/^remote_id = .*/remote_id = "%any"/' -e '/^remote_ts = /d' "$WORK/b.toml"
      printf 'pools = "rw"\n\n[[pool]]\nname = "rw"\naddrs = "198.18.0.0/15"\n' >>"$WORK/b.toml"
    fi
    spigot_start b
  elif [ "$AUTH" = cert ]; then
    charon_cert_responder b "$IKE" "$ESP" "$PKI_DIR/gw.pem" "$PKI_DIR/gw.key" "$PKI_DIR/root.pem" \
      "$GW_ID" "$CLIENT_DN" 16
  else
    charon_any_responder b "$IKE" "$ESP" "$PSK" 16 198.18.0.0/15 %any
  fi
  RPID=${PIDS[-1]}
}
login_args() {  # the loadgen's authentication options for AUTH
  if [ "${AUTH%-radius}" = eap ]; then
    echo --eap-id 'storm%d' --eap-secret "$EAP_PW" --ca "$PKI_DIR/root.pem" --vips
  elif [ "$AUTH" = cert ]; then
    echo --cert "$PKI_DIR/client.pem" --key "$PKI_DIR/client.key" --ca "$PKI_DIR/root.pem"
  else
    echo --psk "$PSK" --vips
  fi
}
stop_responder() {
  kill -TERM "$RPID" 2>/dev/null || true
  wait "$RPID" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$RPID" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  sleep 1
}

# run_case RESPONDER NAME COUNT HOLD_SECONDS [LOADGEN ARGS...] (offered rate: RATE, or
# CASE_RATE when set)
run_case() {
  local who=$1 name=$2 count=$3 hold=$4 rate=${CASE_RATE:-$RATE} auth; shift 4
  read -r -a auth <<<"$(login_args)"
  start_responder "$who"
  log "$name vs $who: $count IKE SAs at up to $rate/s, held ${hold}s $*"
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 "${auth[@]}" --ike-sas "$count" \
    --rate "$rate" --duration "$hold" --ike "$IKE" --esp "$ESP" --json "$@" \
    >"$WORK/$name-$who.json" 2>"$WORK/$name-$who.progress" || true
  local hwm_kb
  hwm_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$RPID/status")
  stop_responder
  local r="$WORK/$name-$who.json"
  [ -s "$r" ] || { tail -5 "$WORK/$name-$who.progress"; fail "$name vs $who: no report"; }
  local line
  line=$(python3 - "$r" "$who" "$name" "$hwm_kb" "$rate" <<'PY'
import json, sys
r, who, name, hwm, offered = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
fails = ", ".join(f"{k}: {v}" for k, v in r.get("failures", {}).items()) or "-"
print(f"{name:<12} {who:<10} established {r['established']:>6}  failed {r['failed']:>5}  "
      f"rate {r['establish_rate_per_second']:>8.1f}/s  p50 {r['latency_ms']['p50']:>7.1f} ms  "
      f"p99 {r['latency_ms']['p99']:>8.1f} ms  rekeys {r['rekeys_completed']:>7}  "
      f"peak RSS {hwm / 1024:>7.1f} MiB  offered {offered}/s  ({fails})")
PY
)
  echo "$line" | tee -a "$RESULTS"
}

# workers_case workers|inline NAME COUNT RATE HOLD [LOADGEN ARGS...]: case 8 against spigot with
# its IKE workers or with all the work on its control thread. With W_WINDOW set (rekeys), the
# rekeys answered and the CPU are measured over W_WINDOW seconds from W_WARM seconds after the
# start.
workers_case() {
  local mode=$1 name=$2 count=$3 rate=$4 hold=$5 auth t0 lg window=""; shift 5
  read -r -a auth <<<"$(login_args)"
  if [ "$mode" = inline ]; then
    SPIGOT_BENCH_IKE_INLINE=1 start_responder spigot
  else
    start_responder spigot
  fi
  sleep 1  # its start-up (the DH measurement) outside the figures
  log "$name, $mode: $count IKE SAs at up to $rate/s, held ${hold}s $*"
  cpu_sampler_start "$RPID" "$WORK/$name-$mode.cpu"
  t0=$(cut -d' ' -f1 /proc/uptime)
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 "${auth[@]}" --ike-sas "$count" \
    --rate "$rate" --duration "$hold" --ike "$IKE" --esp "$ESP" --json "$@" \
    >"$WORK/$name-$mode.json" 2>"$WORK/$name-$mode.progress" &
  lg=$!
  if [ -n "${W_WINDOW:-}" ]; then
    sleep "$W_WARM"
    window=$(control_window "$RPID" b "$W_WINDOW")
  fi
  wait "$lg" || true
  sctl b stats --json >"$WORK/$name-$mode.stats"
  cpu_sampler_stop
  stop_responder
  [ -s "$WORK/$name-$mode.json" ] || { tail -5 "$WORK/$name-$mode.progress"; fail "$name, $mode: no report"; }
  local base="$WORK/$name-$mode" per_s cpu end
  if [ -n "${W_WINDOW:-}" ]; then
    read -r per_s cpu _ <<<"$window"
  else
    # Logins: from the first (the loadgen's start) to the last established.
    end=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); x = r["establish_rate_per_second"]
print(float(sys.argv[2]) + (r["established"] / x if x else 0))' "$base.json" "$t0")
    per_s=- cpu=$(cpu_share "$base.cpu" "$t0" "$end")
  fi
  python3 - "$base" "$name" "$mode" "$rate" "$per_s" "$cpu" <<'PY' | tee -a "$RESULTS"
import json, sys
base, name, mode, offered, per_s, cpu = sys.argv[1:7]
r, st = json.load(open(base + ".json")), json.load(open(base + ".stats"))
ike, lag = st["ike"], st["control"]["tick_lag_us"]
rekeys = f"{float(per_s):7.1f}/s" if per_s != "-" else "      -  "
fails = ", ".join(f"{k}: {v}" for k, v in r.get("failures", {}).items()) or "-"
print(f"{name:<13} {mode:<8} established {r['established']:>5}  rate {r['establish_rate_per_second']:>7.1f}/s  "
      f"rekeys {rekeys}  control thread {float(cpu):5.1f} %  p99 {r['latency_ms']['p99']:>7.1f} ms  "
      f"tick lag p99 {lag['p99'] / 1000:>6.1f} ms  offered {offered}/s  "
      f"({'on workers' if mode == 'workers' else 'run at once'}: IKE_AUTH {ike['auth_offloaded']}, "
      f"PFS DH {ike['child_pfs_offloaded']}; inline for want of a worker: {ike['auth_inline']}, "
      f"{ike['child_pfs_inline']}; failures {fails})")
PY
}

netns_setup
if [ "$N" -gt 0 ]; then
  run_case spigot login "$N" 5
  run_case strongswan login "$N" 5
fi
if [ "$N" -gt 0 ] && [ "$HOLD" -gt 0 ]; then
  run_case spigot rekey "$N" "$HOLD" --child-rekey-time "${CHILD_LIFE}s" --id-prefix rk
  run_case strongswan rekey "$N" "$HOLD" --child-rekey-time "${CHILD_LIFE}s" --id-prefix rk
fi
if [ "$BIG" -gt 0 ]; then run_case spigot big "$BIG" 20 --id-prefix big; fi
if [ "$N" -gt 0 ] && [ -n "$CERT" ]; then
  for c in $CERT; do
    make_certs "$c"
    rate=$CERT_RATE
    [ -n "$rate" ] || case "$c" in ecdsa) rate=600 ;; rsa2048) rate=270 ;; *) rate=100 ;; esac
    AUTH=cert CASE_RATE=$rate run_case spigot "cert-$c" "$N" 5
    AUTH=cert CASE_RATE=$rate run_case strongswan "cert-$c" "$N" 5
  done
fi

if [ "$N" -gt 0 ] && [ "$EAP" = 1 ]; then
  make_certs ecdsa
  AUTH=eap CASE_RATE=$EAP_RATE run_case spigot eap "$N" 5
  AUTH=eap CASE_RATE=$EAP_RATE run_case strongswan eap "$N" 5
fi

if [ "$N" -gt 0 ] && [ "$EAP_RADIUS" = 1 ]; then
  make_certs ecdsa
  radius_start storm "${NS}b" 127.0.0.1 18121 "$RADIUS_SECRET" 127.0.0.1 \
    "$(python3 -c "import sys; print('\n'.join(f'storm{i} Cleartext-Password := \"$EAP_PW\"' for i in range(1, $N + 1)))")"
  AUTH=eap-radius CASE_RATE=$EAP_RATE run_case spigot eap-radius "$N" 5
  AUTH=eap-radius CASE_RATE=$EAP_RATE run_case strongswan eap-radius "$N" 5
  radius_stop storm
fi

if [ "$MOVE" -gt 0 ]; then
  ip -n "${NS}a" addr add 192.0.2.5/24 dev "${NS}va"
  # Long enough that everyone still pings well after the move, at the slower responder too.
  packets=$(( (MOVE / MOVE_RATE + 12) * 5 ))
  for who in spigot strongswan; do
    CASE_RATE=$MOVE_RATE run_case "$who" move "$MOVE" 0 --id-prefix mv --traffic --traffic-dst 203.0.113.1 \
      --packets "$packets" --traffic-interval 200 --move-to 192.0.2.5 --move-after 1000
    python3 - "$WORK/move-$who.json" "$who" <<'PY' | tee -a "$RESULTS"
import json, sys
r, who = json.load(open(sys.argv[1])), sys.argv[2]
m, t = r["mobility"], r["traffic"]
a, c = m["answer_ms"], m.get("recover_ms", {})
print(f"move         {who:<10} moved {m['moved']:>5}  answered {m['answered']:>5} "
      f"(p50 {a['p50']:.0f} ms, p99 {a['p99']:.0f} ms, all by {a['max']:.0f} ms)  "
      f"replies at the new address {m.get('recovered', 0):>5} (p50 {c.get('p50', 0):.0f} ms, "
      f"p99 {c.get('p99', 0):.0f} ms, all by {c.get('max', 0):.0f} ms)  echo {t['received']}/{t['sent']}  "
      f"lost {r['lost']}  DELETEs unanswered {r['deletes_unanswered']}")
PY
  done
fi

if [ "$WORKERS" -gt 0 ]; then
  for c in $W_CERT; do
    make_certs "$c"
    rate=$W_RATE_RSA
    [ "$c" != ecdsa ] || rate=$W_RATE_ECDSA
    for mode in workers inline; do AUTH=cert workers_case "$mode" "w-cert-$c" "$WORKERS" "$rate" 2; done
  done
  # As bench/pfs_rekeys.sh measures: from when every road warrior is up and past its first rekey.
  warm=$(( WORKERS / 1000 + W_CHILD_LIFE + 2 ))
  [ $(( W_HOLD - warm - 3 )) -ge 5 ] || fail "W_HOLD too short for WORKERS and W_CHILD_LIFE"
  for mode in workers inline; do
    ESP=aes128gcm16-modp2048 W_WARM=$warm W_WINDOW=$(( W_HOLD - warm - 3 )) workers_case "$mode" w-pfs-rekey \
      "$WORKERS" 1000 "$W_HOLD" --child-rekey-time "${W_CHILD_LIFE}s" --id-prefix pfs
  done
fi

echo
echo "storm.sh: N=$N RATE=$RATE HOLD=${HOLD}s CHILD_LIFE=${CHILD_LIFE}s BIG=$BIG CERT=\"$CERT\" CERT_RATE=${CERT_RATE:-by type} WORKERS=$WORKERS (spigot $(git -C "$ROOT" rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg))"
cat "$RESULTS"
python3 - "$WORK" $CERT <<'PY'
import json, os, sys
w = sys.argv[1]
def rate(case, who):
    p = os.path.join(w, f"{case}-{who}.json")
    return json.load(open(p))["establish_rate_per_second"] if os.path.exists(p) else None
for case in ["login", "rekey"] + [f"cert-{c}" for c in sys.argv[2:]] + ["eap", "eap-radius"]:
    s, g = rate(case, "spigot"), rate(case, "strongswan")
    if s and g:
        print(f"{case}: spigot establishes {s / g:.1f}x as fast as strongSwan ({s:.0f}/s vs {g:.0f}/s)")
for case in ["w-cert-rsa2048", "w-cert-ecdsa"]:
    s, g = rate(case, "workers"), rate(case, "inline")
    if s and g:
        print(f"{case}: with the IKE workers {s / g:.1f}x the establish rate of the control thread alone "
              f"({s:.0f}/s vs {g:.0f}/s)")
PY
