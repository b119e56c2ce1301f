#!/usr/bin/env bash
# Login and renegotiation storms against a spigot responder and a strongSwan 5.9.8 responder
# (charon, 16 threads, kernel-libipsec), same topology, same load generator, same run:
#   1. N IKE SAs (each with its CHILD SA) as fast as they go (the load generator offers RATE/s);
#   2. N IKE SAs with CHILD SAs rekeyed every CHILD_LIFE seconds, held for HOLD seconds;
#   3. spigot only: BIG IKE SAs with their CHILD SAs, held, to measure memory at scale.
# For each: establish rate, p50/p99 latency, failures, rekeys completed, peak responder RSS
# (VmHWM). Ratios are spigot over strongSwan from this run. Run as root.
# usage: bench/storm.sh [BUILD_DIR] [N] [HOLD] [BIG]
#        defaults: build/release 20000 300 100000; CHILD_LIFE=60 RATE=10000 in the environment;
#        N=0 skips 1 and 2, HOLD=0 skips 2, BIG=0 skips 3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/release}
N=${2:-20000} HOLD=${3:-300} BIG=${4:-100000}
CHILD_LIFE=${CHILD_LIFE:-60} RATE=${RATE:-10000}
SPIGOT=$(cd "$BUILD" && pwd)/spigot
HERE=$ROOT/tests
source "$ROOT/tests/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=storm-secret
RESULTS="$WORK/results.txt"
: >"$RESULTS"


start_responder() {  # start_responder spigot|strongswan -> RPID
  if [ "$1" = spigot ]; then
    spigot_config b "$IKE" "$ESP" "$PSK"
    sed -i 's/^remote_id = .*/remote_id = "%any"/' "$WORK/b.toml"
    spigot_start b
  else
    charon_any_responder b "$IKE" "$ESP" "$PSK" 16
  fi
  RPID=${PIDS[-1]}
}
stop_responder() {
  kill -TERM "$RPID" 2>/dev/null || true
  wait "$RPID" 2>/dev/null || true
  PIDS=()
  sleep 1
}

# run_case RESPONDER NAME COUNT HOLD_SECONDS [LOADGEN ARGS...]
run_case() {
  local who=$1 name=$2 count=$3 hold=$4; shift 4
  start_responder "$who"
  log "$name vs $who: $count IKE SAs at up to $RATE/s, held ${hold}s $*"
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$count" \
    --rate "$RATE" --duration "$hold" --ike "$IKE" --esp "$ESP" --json "$@" \
    >"$WORK/$name-$who.json" 2>"$WORK/$name-$who.progress" || true
  local hwm_kb
  hwm_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$RPID/status")
  stop_responder
  local r="$WORK/$name-$who.json"
  [ -s "$r" ] || { tail -5 "$WORK/$name-$who.progress"; fail "$name vs $who: no report"; }
  local line
  line=$(python3 - "$r" "$who" "$name" "$hwm_kb" <<'PY'
import json, sys
r, who, name, hwm = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
fails = ", ".join(f"{k}: {v}" for k, v in r.get("failures", {}).items()) or "-"
print(f"{name:<8} {who:<10} established {r['established']:>6}  failed {r['failed']:>5}  "
      f"rate {r['establish_rate_per_second']:>8.1f}/s  p50 {r['latency_ms']['p50']:>7.1f} ms  "
      f"p99 {r['latency_ms']['p99']:>8.1f} ms  rekeys {r['rekeys_completed']:>7}  "
      f"peak RSS {hwm / 1024:>7.1f} MiB  ({fails})")
PY
)
  echo "$line" | tee -a "$RESULTS"
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

echo
echo "storm.sh: N=$N RATE=$RATE HOLD=${HOLD}s CHILD_LIFE=${CHILD_LIFE}s BIG=$BIG (spigot $(git -C "$ROOT" rev-parse --short HEAD))"
cat "$RESULTS"
python3 - "$WORK" <<'PY'
import json, os, sys
w = sys.argv[1]
def rate(case, who):
    p = os.path.join(w, f"{case}-{who}.json")
    return json.load(open(p))["establish_rate_per_second"] if os.path.exists(p) else None
for case in ("login", "rekey"):
    s, g = rate(case, "spigot"), rate(case, "strongswan")
    if s and g:
        print(f"{case}: spigot establishes {s / g:.1f}x as fast as strongSwan ({s:.0f}/s vs {g:.0f}/s)")
PY
