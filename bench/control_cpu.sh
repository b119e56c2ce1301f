# Sourced by bench scripts (after tests/lib.sh): what a spigot responder's control thread (its
# main thread: the event loop) spends, from /proc, and the CHILD rekeys it answered.
#   control_ticks PID / process_ticks PID: utime + stime so far, in clock ticks (getconf CLK_TCK)
#   rekeys_answered SIDE: the responder's rekeys.answered (spigot stats)
#   control_window PID SIDE SECONDS: over the next SECONDS, prints "ANSWERED_PER_S
#     CONTROL_PERCENT PROCESS_PERCENT" (CPU as a share of one core)
#   cpu_sampler_start PID FILE / cpu_sampler_stop: "UPTIME CONTROL_TICKS" every 0.2 s into FILE,
#     for a share over a window known only afterwards (cpu_share FILE FROM TO: FROM and TO in
#     seconds of /proc/uptime)
control_ticks() { awk '{print $14 + $15}' "/proc/$1/task/$1/stat"; }
process_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rekeys_answered() {
  sctl "$1" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rekeys"]["answered"])'
}

control_window() {
  local pid=$1 side=$2 seconds=$3 a0 c0 p0 a1 c1 p1
  a0=$(rekeys_answered "$side") c0=$(control_ticks "$pid") p0=$(process_ticks "$pid")
  sleep "$seconds"
  a1=$(rekeys_answered "$side") c1=$(control_ticks "$pid") p1=$(process_ticks "$pid")
  python3 -c 'import sys; a0, a1, c0, c1, p0, p1, hz, w = map(float, sys.argv[1:])
print(f"{(a1 - a0) / w:.1f} {100 * (c1 - c0) / hz / w:.1f} {100 * (p1 - p0) / hz / w:.1f}")' \
    "$a0" "$a1" "$c0" "$c1" "$p0" "$p1" "$(getconf CLK_TCK)" "$seconds"
}

cpu_sampler_start() {
  local pid=$1 out=$2
  (
    while [ -r "/proc/$pid/task/$pid/stat" ]; do
      echo "$(cut -d' ' -f1 /proc/uptime) $(control_ticks "$pid")"
      sleep 0.2
    done
  ) >"$out" 2>/dev/null &
  CPU_SAMPLER=$!
}
cpu_sampler_stop() {
  kill "$CPU_SAMPLER" 2>/dev/null || true
  wait "$CPU_SAMPLER" 2>/dev/null || true
}
# The control thread's share of one core between FROM and TO (the samples nearest inside).
cpu_share() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import sys
f, lo, hi, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = [tuple(map(float, l.split())) for l in open(f) if len(l.split()) == 2]
inside = [x for x in s if lo <= x[0] <= hi] or s[-1:]
a, b = inside[0], inside[-1]
print(f"{100 * (b[1] - a[1]) / hz / (b[0] - a[0]):.1f}" if b[0] > a[0] else "nan")
PY
}
