#!/usr/bin/env bash
# Graceful stop (issue 16, item 3): SIGTERM to a spigot responder holding N IKE SAs (each with
# a CHILD SA) from `spigot loadgen` road warriors. spigot sends an INFORMATIONAL DELETE of every
# IKE SA (which ends its CHILD SAs at the peer, RFC 7296 1.4.1) and exits when all are
# confirmed, or when none was answered for Gateway::kShutdownGrace (5 s), or at
# Gateway::kShutdownLimit (25 s), saying how many were not:
#  - spigot exits within the bound (plus start-up slack), with status 0;
#  - its log says every DELETE was confirmed ("every DELETE confirmed by the peer");
#  - the peer's SA count went to 0: the loadgen lost all N established SAs to the responder's
#    DELETEs ("lost": N, none left for it to delete, none unanswered).
# Prints the time from SIGTERM to exit. bench use: N=10000 / N=100000 (RATE paces the logins
# below what the negotiation queue takes; see README "Graceful stop").
# usage: sigterm_stop.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=sigterm-secret
N=${N:-1000} RATE=${RATE:-500} BOUND_S=${BOUND_S:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
T0=$(date +%s)

netns_setup
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"
max_spi = $(( N * 2 > 1048576 ? N * 2 : 1048576 ))

[[pool]]
name = "rw"
addrs = "198.18.0.0/15"

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
dpd_delay = "0s"
TOML
spigot_start b
B_PID=${PIDS[-1]}
stats_b() { sctl b stats --json >"$WORK/stats.json" && field "$WORK/stats.json" "$1"; }
ike_sas_are() { [ "$(stats_b ike_sas)" = "$1" ]; }

ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" \
  --rate "$RATE" --duration 100000 --ike "$IKE" --esp "$ESP" --vips --json \
  >"$WORK/lg.json" 2>"$WORK/loadgen.log" &
LG=$!
PIDS+=("$LG")
until_ok $(( N / RATE * 3 + 30 )) ike_sas_are "$N" ||
  fail "not $N IKE SAs on b: $(stats_b ike_sas) ($(tail -1 "$WORK/loadgen.log"))"
[ "$(stats_b active_sas)" = "$N" ] || fail "not $N CHILD SAs on b: $(stats_b active_sas)"
log "ok: $N IKE SAs and $N CHILD SAs up"

t_term=$(date +%s.%N)
kill -TERM "$B_PID"
status=0
wait "$B_PID" || status=$?
t_exit=$(date +%s.%N)
took=$(python3 -c "print('%.2f' % ($t_exit - $t_term))")
[ "$status" = 0 ] || fail "spigot exited with $status after SIGTERM"
grep "shutdown:" "$WORK/spigot-b.log" | tail -2
python3 -c "import sys; sys.exit(0 if $took <= $BOUND_S + 1.5 else 1)" ||
  fail "spigot took $took s to stop, bound $BOUND_S s"
grep -q "every DELETE confirmed by the peer" "$WORK/spigot-b.log" ||
  fail "not every DELETE confirmed: $(grep 'shutdown:' "$WORK/spigot-b.log")"

# The peer's side: every established SA was deleted by the responder.
kill -INT "$LG"
wait "$LG" || true
r="$WORK/lg.json"
[ "$(field "$r" established)" = "$N" ] || { cat "$r"; fail "loadgen established $(field "$r" established)"; }
[ "$(field "$r" lost)" = "$N" ] || { cat "$r"; fail "the peer lost $(field "$r" lost) SAs to the DELETEs, want $N"; }
[ "$(field "$r" deletes_unanswered)" = 0 ] || fail "the loadgen still had SAs to delete"
log "ok: the peer's $N IKE SAs (and their CHILD SAs) deleted by spigot's DELETEs"
echo "PASS: SIGTERM with $N SAs: all deleted at the peer and spigot gone in $took s (bound $BOUND_S s) ($(( $(date +%s) - T0 )) s)"
