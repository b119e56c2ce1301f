#!/usr/bin/env bash
# Renegotiation storm (issue 5, scenario 2): 1,000 tunnels with a 20-second CHILD rekey time for
# two minutes against a spigot responder that schedules the rekeys itself, limited to
# max_rekeys_per_second = 100 (1,000 / 20 s = 50/s steady, more in the first wave).
#   - every rekey completes: no CHILD SA failure, the rekeys the responder started all installed
#     new SAs (but for the few in flight when it is sampled), and all tunnels still stand;
#   - rekeys started never exceed the limit in any one-second window (the scheduler's own
#     sliding-window peak, and the per-second rate seen by polling the stats);
#   - traffic on a sample tunnel (a second spigot, same 20 s rekey time) loses nothing: paced
#     UDP streams with sequence numbers both ways for the whole run.
# usage: renegotiation_storm.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=storm-secret
N=${N:-1000} RUN=${RUN:-120} LIMIT=${LIMIT:-100} RATE=${RATE:-500}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
lifetimes='child_rekey_time = "20s"\nchild_lifetime = "60s"\n'
spigot_config a "$IKE" "$ESP" "$PSK"
printf "$lifetimes" >>"$WORK/a.toml"
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i "s/^cookie_threshold = .*/&\nmax_rekeys_per_second = $LIMIT/" "$WORK/b.toml"
printf "$lifetimes" >>"$WORK/b.toml"
# The load generator's tunnels: any identity with the PSK, road warriors each with its own
# address from the pool (the sample tunnel's traffic keeps its own policy).
cat >>"$WORK/b.toml" <<TOML

[[connection]]
name = "storm"
local_addrs = "192.0.2.2"
remote_addrs = "192.0.2.1"
remote_id = "%any"
local_id = "gw-b"
psk = "$PSK"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.128/25"
pools = "rw"
TOML
printf "$lifetimes" >>"$WORK/b.toml"
printf '\n[[pool]]\nname = "rw"\naddrs = "198.18.0.0/20"\n' >>"$WORK/b.toml"
spigot_start a
spigot_start b
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "the sample tunnel did not come up"
until_ok 10 ping_ok a || fail "the sample tunnel does not pass traffic"

# Streams through the sample tunnel for the whole run, both ways.
count=$(( RATE * (RUN + 20) ))
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$to" python3 "$HERE/stream.py" udp-recv "$(inner_host "$to")" 7000 "$count" $((RUN + 30)) \
    >"$WORK/recv-$dir.log" 2>&1 &
  eval "recv_$dir=\$!"
done
for to in a b; do listening "${NS}$to" udp "$(inner_host "$to")" 7000; done
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$from" python3 "$HERE/stream.py" udp-send "$(inner_host "$to")" 7000 "$count" "$RATE" &
  eval "send_$dir=\$!"
done

# The storm: N initiators at 100/s, kept up for RUN seconds; the responder rekeys them.
ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" --rate 100 \
  --duration "$RUN" --ike "$IKE" --esp "$ESP" --vips --remote-ts 203.0.113.128/25 \
  --id-prefix storm --json >"$WORK/loadgen.json" 2>"$WORK/loadgen.log" &
lg=$!

# Poll the responder's rekey counter once a second while the storm runs.
python3 - "$SPIGOT" "$WORK/b.sock" "$((RUN - 5))" "$WORK/polls.json" <<'PY' &
import json, subprocess, sys, time
spigot, sock, run, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
polls, end = [], time.monotonic() + run
while time.monotonic() < end:
    s = json.loads(subprocess.run([spigot, "stats", "--json", "--socket", sock], capture_output=True, text=True).stdout)
    polls.append({"t": time.monotonic(), "started": s["rekeys"]["started"], "children": s["active_sas"]})
    time.sleep(1)
json.dump(polls, open(out, "w"))
PY
poller=$!

wait "$poller"
sctl b stats --json >"$WORK/end.json"
sctl b doctor --json >"$WORK/doctor.json"
sctl b sas --json >"$WORK/sas.json"
wait "$lg" || { cat "$WORK/loadgen.json"; fail "loadgen exited non-zero"; }
for dir in ab ba; do
  eval "wait \$send_$dir"
  eval "wait \$recv_$dir" || fail "stream $dir through the sample tunnel lost packets during the storm: $(cat "$WORK/recv-$dir.log")"
  log "ok: stream $dir: $(cat "$WORK/recv-$dir.log")"
done

started=$(field "$WORK/end.json" rekeys.started)
completed=$(field "$WORK/end.json" rekeys.completed)
peak=$(field "$WORK/end.json" rekeys.peak_per_second)
child_failures=$(field "$WORK/end.json" ike.child_failures)
timers_missed=$(field "$WORK/end.json" ike.timers_missed)
established=$(field "$WORK/loadgen.json" established)
polled_max=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))
print(max((b["started"]-a["started"])/(b["t"]-a["t"]) for a,b in zip(p,p[1:])))' "$WORK/polls.json")
storm_children=$(python3 -c 'import json,sys; print(sum(len(s["children"]) for s in json.load(open(sys.argv[1]))["ike_sas"] if s["name"]=="storm"))' "$WORK/sas.json")
oldest=$(python3 -c 'import json,sys; print(max(c["installed_seconds_ago"] for s in json.load(open(sys.argv[1]))["ike_sas"] for c in s["children"]))' "$WORK/sas.json")
log "storm: $established tunnels; responder started $started CHILD rekeys, $completed completed," \
    "peak $peak per second (limit $LIMIT), polled max $(printf '%.1f' "$polled_max")/s," \
    "CHILD failures $child_failures; $storm_children storm CHILD SAs at the end, oldest ${oldest}s;" \
    "IKE timers the heap missed: $timers_missed"
[ "$established" = "$N" ] || { cat "$WORK/loadgen.json"; fail "not all $N tunnels were established"; }
[ "$(field "$WORK/loadgen.json" failed)" = 0 ] || { cat "$WORK/loadgen.json"; fail "loadgen failures"; }
[ "$child_failures" = 0 ] || fail "$child_failures CHILD SA negotiations failed"
[ "$peak" -le "$LIMIT" ] || fail "rekeys started in one second peaked at $peak, above the limit $LIMIT"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) * 1.1 else 1)" "$polled_max" "$LIMIT" ||
  fail "polled rekey rate $polled_max/s above the limit $LIMIT"
# 1,000 tunnels rekeying every 18-20 s for ~(RUN - 30) s after the first wave.
want=$(( N * (RUN - 30) / 20 ))
[ "$started" -ge "$want" ] || fail "only $started rekeys started (want at least $want)"
[ $(( started - completed )) -le "$LIMIT" ] || fail "$((started - completed)) of $started rekeys did not complete"
[ "$storm_children" = "$N" ] || fail "$storm_children storm CHILD SAs left, want $N"
[ "$oldest" -le 30 ] || fail "a CHILD SA is ${oldest}s old: it missed its 20 s rekey"
python3 - "$WORK/doctor.json" <<'PY' || fail "doctor did not diagnose the storm: $(cat "$WORK/doctor.json")"
import json, sys
f = [x for x in json.load(open(sys.argv[1]))["findings"] if x["cause"] == "renegotiation_storm"]
assert f, f
print("doctor:", f[0]["evidence"], "->", f[0]["fix"])
PY
log "ok: spigot doctor diagnosed renegotiation_storm live"
echo "PASS: renegotiation storm: $started rekeys at <= $LIMIT/s, all tunnels kept, no packet lost"
