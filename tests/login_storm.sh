#!/usr/bin/env bash
# Login storm (issue 5, scenario 3, scaled to CI): N initiators start within about one second
# against a responder with max_queue = Q. The negotiation queue never exceeds its bound,
# refusals are counted (queue_overflows), and every initiator is established within a bounded
# time (initiators retransmit what was refused).
# usage: login_storm.sh SPIGOT_BINARY [N] [Q]
set -euo pipefail
SPIGOT=$1 N=${2:-2000} Q=${3:-200}
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=storm-secret
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i 's/^remote_id = .*/remote_id = "%any"/' "$WORK/b.toml"
sed -i "s/^cookie_threshold = .*/&\nmax_queue = $Q/" "$WORK/b.toml"
spigot_start b

ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" \
  --rate "$N" --duration 5 --ike "$IKE" --esp "$ESP" --json >"$WORK/storm.json" 2>"$WORK/loadgen.log" &
lg=$!
max_depth=0
while kill -0 "$lg" 2>/dev/null; do
  d=$(sctl b stats --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_depth"])' || echo 0)
  [ "$d" -gt "$max_depth" ] && max_depth=$d
  [ "$d" -le "$Q" ] || fail "queue depth $d exceeds max_queue $Q"
  sleep 0.05
done
wait "$lg" || true
report=$(cat "$WORK/storm.json")
established=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["established"])' "$report")
p99=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["latency_ms"]["p99"])' "$report")
overflows=$(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_overflows"])')
log "storm: $established of $N established, p99 ${p99} ms, peak sampled queue depth $max_depth of $Q, queue_overflows $overflows"
[ "$established" = "$N" ] || { echo "$report"; fail "not every initiator was established"; }
python3 -c "import sys; sys.exit(0 if float('$p99') < 60000 else 1)" || fail "p99 latency ${p99} ms is not bounded by a minute"
echo "PASS: login storm of $N against max_queue $Q"
