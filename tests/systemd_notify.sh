#!/usr/bin/env bash
# spigot under a service manager (issue 15, item 2), with this script as the manager: a unix
# datagram socket it binds is NOTIFY_SOCKET (sd_notify(3)), WATCHDOG_USEC asks for a 2 s
# watchdog, and JOURNAL_STREAM names spigot's stderr as if it were the journal.
#  - READY=1 arrives, and by then the control socket answers, the TUN device is up and the
#    connection is loaded; its STATUS= line counts SAs and the queue;
#  - STATUS= follows the state: a tunnel initiated afterwards shows as 1 IKE SA, 1 CHILD SA;
#  - WATCHDOG=1 arrives every second (WatchdogSec/2) while all threads progress;
#  - `spigot debug hang THREAD S` stops a data-path thread (each of two): the pings stop (none for
#    the rest of the hang), STATUS= names the thread, the log says why at priority <3>; when
#    the thread resumes, so do the pings;
#  - log lines carry a syslog priority prefix and no timestamp; SIGTERM sends STOPPING=1.
# usage: systemd_notify.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
T0=$(date +%s)

netns_setup
export DATAPATH_THREADS=2
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"

# The manager's end: every notification line, with the time it came.
python3 -u - "$WORK/notify.sock" "$WORK/notify.txt" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        for line in s.recv(4096).decode().split("\n"):
            out.write(f"{time.time():.3f} {line}\n")
PY
PIDS+=($!)
until_ok 5 test -S "$WORK/notify.sock" || fail "the notify listener did not start"

: >"$WORK/spigot-b.log"
journal=$(stat -c %d:%i "$WORK/spigot-b.log")
ip netns exec "${NS}b" env NOTIFY_SOCKET="$WORK/notify.sock" WATCHDOG_USEC=2000000 \
  JOURNAL_STREAM="$journal" "$SPIGOT" run -c "$WORK/b.toml" >"$WORK/spigot-b.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
spigot_start a

ready() { grep -q " READY=1$" "$WORK/notify.txt"; }
until_ok 10 ready || fail "no READY=1"
# Everything READY=1 promises is there now.
sctl b stats --json >"$WORK/stats.json" || fail "READY=1 sent, but the control socket does not answer"
ip -n "${NS}b" link show spigot0 | grep -q ",UP" || fail "READY=1 sent, but TUN spigot0 is not up"
status=$(grep " STATUS=" "$WORK/notify.txt" | head -1 | cut -d" " -f2-)
echo "$status" | grep -q "STATUS=0 IKE SA(s), 0 CHILD SA(s), 0 negotiating; queue 0/65536 (0 overflows); SPIs 0/1048576" ||
  fail "first STATUS=: $status"
log "ok: READY=1 with control socket, TUN and $status"

# Pings: every second while all is well.
sleep 3.2
pings() {  # pings FROM TO: WATCHDOG=1 lines between two epoch times
  python3 - "$WORK/notify.txt" "$1" "$2" <<'PY'
import sys
n = 0
for line in open(sys.argv[1]):
    t, _, msg = line.rstrip("\n").partition(" ")
    if msg == "WATCHDOG=1" and float(sys.argv[2]) <= float(t) < float(sys.argv[3]):
        n += 1
print(n)
PY
}
now=$(date +%s.%N)
n=$(pings "$(python3 -c "print($now - 3)")" "$now")
[ "$n" -ge 2 ] && [ "$n" -le 4 ] || fail "$n WATCHDOG=1 in 3 s with WATCHDOG_USEC=2000000 (want about 3)"
log "ok: $n WATCHDOG=1 in 3 s"

# STATUS= follows the gateway: a tunnel comes up, the next refresh (every 5 s) counts it.
sctl a initiate peer >/dev/null
tunnel_in_status() { grep -q "STATUS=1 IKE SA(s), 1 CHILD SA(s)" "$WORK/notify.txt"; }
until_ok 12 tunnel_in_status || fail "STATUS= never showed the tunnel: $(grep STATUS= "$WORK/notify.txt" | tail -1)"
log "ok: $(grep STATUS= "$WORK/notify.txt" | tail -1 | cut -d' ' -f2-)"

# A hung data-path thread: no ping from (hang + stall bound 1 s + one period 1 s) to its end.
for thread in 0 1; do
  t_hang=$(date +%s.%N)
  sctl b debug hang "$thread" 5 >/dev/null
  sleep 5.5
  n=$(pings "$(python3 -c "print($t_hang + 2.1)")" "$(python3 -c "print($t_hang + 5)")")
  [ "$n" = 0 ] || fail "$n WATCHDOG=1 while the $thread thread hung"
  grep -q "STATUS=.*watchdog withheld: datapath-$thread silent" "$WORK/notify.txt" ||
    fail "STATUS= did not name the hung $thread thread"
  grep -q "^<3>systemd watchdog: no ping while a thread makes no progress (datapath-$thread" "$WORK/spigot-b.log" ||
    fail "no <3> log line naming datapath-$thread"
  t_back=$(date +%s.%N)
  sleep 2.5
  n=$(pings "$t_back" "$(date +%s.%N)")
  [ "$n" -ge 1 ] || fail "no WATCHDOG=1 after the $thread thread resumed"
  log "ok: $thread thread hung 5 s: no WATCHDOG=1 from 2.1 s to 5 s, pings again after"
done

# The journal format: a priority prefix, no timestamp of its own.
grep -q "^<6>spigot listening on 192.0.2.2" "$WORK/spigot-b.log" || fail "no <6> info line"
grep -q "^<4>debug hang: data-path thread 0" "$WORK/spigot-b.log" || fail "no <4> warning line"
! grep -qE "^[0-9]{4}-[0-9]{2}-[0-9]{2} " "$WORK/spigot-b.log" || fail "timestamps in the journal's lines"
! grep -qv "^<[0-7]>" "$WORK/spigot-b.log" || fail "a line without a priority: $(grep -v "^<[0-7]>" "$WORK/spigot-b.log" | head -1)"

kill -TERM "$B_PID"
wait "$B_PID" || fail "spigot exited with $? after SIGTERM"
grep -q " STOPPING=1$" "$WORK/notify.txt" || fail "no STOPPING=1"
echo "PASS: READY, STATUS, watchdog pings withheld while a data-path thread hangs, journal priorities ($(( $(date +%s) - T0 )) s)"
