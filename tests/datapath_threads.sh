#!/usr/bin/env bash
# A thread per core (issue 14 item 4): two spigots with global.datapath_threads = 2 (a TUN queue
# and a UDP 4500 socket per thread, both directions on each) carry parallel flows both ways at
# once with nothing lost and every counter exact:
#   - TCP streams, every byte checked; paced UDP flows, every datagram counted at the receiver;
#   - no drop on either side (spigot's reasons but no_policy, the hand-over ring, send and TUN
#     write failures, the kernel's socket queues);
#   - the threads' own counts add up to the totals (datapath.threads[i].tx / rx), and what one
#     side sealed is exactly what the other opened;
#   - every thread sealed part of the traffic (the TUN's queues spread flows by their hash; more
#     flows are started until each thread has had one, up to three rounds).
# usage: datapath_threads.sh SPIGOT_BINARY [ESP_PROPOSAL]
#   STEERING=misroute in the environment: the spigots' reuseport program sends every ESP
#   datagram to the thread that does NOT own its SA (SPIGOT_TEST_STEERING), so that every packet
#   takes the hand-over path (datapath/handoff.h); the same checks hold, and each side must have
#   handed packets over.
set -euo pipefail
SPIGOT=$1 ESP=${2:-aes128gcm16}
IKE=aes128gcm16-prfsha256-x25519
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
T0=$(date +%s)

netns_setup
export DATAPATH_THREADS=2
[ -z "${STEERING:-}" ] || export SPIGOT_TEST_STEERING=$STEERING
for side in a b; do
  spigot_config "$side" "$IKE" "$ESP"
  spigot_start "$side"
done
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "no CHILD SA"
until_ok 10 ping_ok a || fail "ping a -> b"
for side in a b; do
  sctl "$side" stats --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["datapath"]
want = sys.argv[2] or "spi"
print(sys.argv[1], "datapath:", d)
sys.exit(0 if len(d["threads"]) == 2 and d["steering"] == want else 1)' "$side" "${STEERING:-}" ||
    fail "spigot $side does not run 2 data-path threads steered by ${STEERING:-spi}"
done

# One round: TCP streams a -> b and b -> a and paced UDP flows a -> b, all at once.
BYTES=${BYTES:-4194304}
UDP_COUNT=2000
round() {  # round N
  local r=$1 pids=() port i
  for i in 1 2 3 4; do
    port=$((5300 + 10 * r + i))
    ip netns exec "${NS}b" python3 "$HERE/stream.py" serve 203.0.113.1 "$port" "$BYTES" >"$WORK/serve-$port.log" 2>&1 &
    pids+=($!)
    listening "${NS}b" tcp 203.0.113.1 "$port"
  done
  for i in 5 6; do
    port=$((5300 + 10 * r + i))
    ip netns exec "${NS}a" python3 "$HERE/stream.py" serve 198.51.100.1 "$port" "$BYTES" >"$WORK/serve-$port.log" 2>&1 &
    pids+=($!)
    listening "${NS}a" tcp 198.51.100.1 "$port"
  done
  for i in 7 8; do
    port=$((7300 + 10 * r + i))
    ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-recv 203.0.113.1 "$port" "$UDP_COUNT" 20 >"$WORK/udp-$port.log" 2>&1 &
    pids+=($!)
    listening "${NS}b" udp 203.0.113.1 "$port"
  done
  for i in 1 2 3 4; do
    ip netns exec "${NS}a" python3 "$HERE/stream.py" send 203.0.113.1 $((5300 + 10 * r + i)) "$BYTES" >/dev/null 2>&1 &
  done
  for i in 5 6; do
    ip netns exec "${NS}b" python3 "$HERE/stream.py" send 198.51.100.1 $((5300 + 10 * r + i)) "$BYTES" >/dev/null 2>&1 &
  done
  for i in 7 8; do
    ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 $((7300 + 10 * r + i)) "$UDP_COUNT" 1000 >/dev/null 2>&1 &
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  for i in 1 2 3 4 5 6; do
    port=$((5300 + 10 * r + i))
    grep -q "^ok" "$WORK/serve-$port.log" || fail "TCP stream on port $port: $(cat "$WORK/serve-$port.log")"
  done
  for i in 7 8; do
    port=$((7300 + 10 * r + i))
    grep -q "^received $UDP_COUNT of $UDP_COUNT;" "$WORK/udp-$port.log" ||
      fail "UDP flow on port $port lost datagrams: $(cat "$WORK/udp-$port.log")"
  done
  log "round $r: 6 TCP streams of $BYTES bytes checked, 2 x $UDP_COUNT UDP datagrams all arrived"
}

# Every thread of both sides sealed packets, or another round.
spread() {
  local side
  for side in a b; do
    sctl "$side" stats --json | python3 -c '
import json, sys
sys.exit(0 if all(t["tx"] > 0 for t in json.load(sys.stdin)["datapath"]["threads"]) else 1)' || return 1
  done
}
rounds=0
for r in 1 2 3; do
  round "$r"
  rounds=$r
  spread && break
done
spread || fail "after $rounds rounds a data-path thread had sealed nothing"

# The counters at rest: nothing moves for a second (keepalives and DPD are not ESP packets).
snapshot() { sctl a stats --json >"$WORK/a.json" && sctl b stats --json >"$WORK/b.json" &&
  python3 -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
print(a["traffic"]["tx_packets"], a["traffic"]["rx_packets"], b["traffic"]["tx_packets"], b["traffic"]["rx_packets"])' "$WORK/a.json" "$WORK/b.json"; }
prev=""
for _ in $(seq 20); do
  now=$(snapshot)
  [ "$now" = "$prev" ] && break
  prev=$now
  sleep 0.5
done
python3 - "$WORK/a.json" "$WORK/b.json" "${STEERING:-}" <<'PY' || fail "counters not exact, or drops"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
steering = sys.argv[3]
ok = True
def check(cond, what):
    global ok
    if not cond:
        print("FAIL:", what)
        ok = False
for name, s, other in (("a", a, b), ("b", b, a)):
    t, d, dp = s["traffic"], s["packets_dropped"], s["datapath"]
    print(name, "traffic", {k: t[k] for k in ("tx_packets", "rx_packets")}, "datapath", dp)
    # no_policy: the host's own packets into the TUN that no connection covers (IPv6 router
    # solicitations when it comes up), not traffic of the tunnel.
    drops = {k: v for k, v in d.items() if v and k != "no_policy"}
    check(not drops, f"{name} dropped {drops}")
    check(dp["handoff_dropped"] == 0, f"{name} hand-over ring dropped {dp['handoff_dropped']}")
    check(sum(x["tx"] for x in dp["threads"]) == t["tx_packets"],
          f"{name}: threads' tx {[x['tx'] for x in dp['threads']]} != tx_packets {t['tx_packets']}")
    check(sum(x["rx"] for x in dp["threads"]) == t["rx_packets"],
          f"{name}: threads' rx {[x['rx'] for x in dp['threads']]} != rx_packets {t['rx_packets']}")
    check(all(x["tx"] > 0 for x in dp["threads"]), f"{name}: a thread sealed nothing")
    check(t["tx_packets"] == other["traffic"]["rx_packets"],
          f"{name} sealed {t['tx_packets']} but the other side opened {other['traffic']['rx_packets']}")
    if steering == "misroute":
        # Every ESP datagram came to the wrong thread: all were handed over and opened by the owner.
        check(dp["handed_over"] == other["traffic"]["tx_packets"],
              f"{name} handed over {dp['handed_over']} of {other['traffic']['tx_packets']} datagrams")
sys.exit(0 if ok else 1)
PY
echo "PASS: datapath_threads=2 ${STEERING:-spi} steering, $rounds round(s) of parallel flows both ways, counters exact ($(( $(date +%s) - T0 )) s)"
