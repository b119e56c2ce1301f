#!/usr/bin/env python3
"""Checks a udp-recv-timed record (stream.py) around an event at wall-clock time T.

  arrivals.py FILE T WINDOW_S MAX_DELAY_MS MAX_REORDER
prints the longest delay (kernel arrival time at the receiver minus the sender's clock just
before sendto; both ends are on this machine, one clock) of the packets sent in
[T - 0.05 s, T + WINDOW_S], the longest inter-arrival gap there, the number of duplicates, late
(reordered) arrivals and the largest reorder distance. Exit 1 if anything was lost or
duplicated, a packet's delay reached MAX_DELAY_MS, or a packet arrived MAX_REORDER or more
places late (the replay window: beyond it the receiver would have dropped it).

Delay, not the gap between arrivals, is what "traffic resumes within MAX_DELAY_MS" means, and it
does not grow when the sender itself is scheduled late on a busy machine.
"""
import json
import sys


def main():
    path, t, window, max_delay_ms, max_reorder = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    rec = json.load(open(path))
    arrivals = rec["arrivals"]
    seqs = [a[0] for a in arrivals]
    missing = rec["count"] - len(set(seqs))
    duplicates = len(seqs) - len(set(seqs))
    late, worst, highest = 0, 0, -1
    for n in seqs:
        if n < highest:
            late += 1
            worst = max(worst, highest - n)
        highest = max(highest, n)
    around = [a for a in arrivals if t - 0.05 <= a[2] <= t + window]
    delay = max((a[1] - a[2] for a in around), default=float("inf")) * 1000
    times = sorted(a[1] for a in around)
    gap = max((b - a for a, b in zip(times, times[1:])), default=0.0) * 1000
    print(f"longest delay {delay:.1f} ms, longest inter-arrival gap {gap:.1f} ms, of {len(around)} packets "
          f"sent in [T-50ms, T+{window}s]; missing {missing}, duplicates {duplicates}, late {late} (by at most {worst})")
    ok = missing == 0 and duplicates == 0 and delay < max_delay_ms and worst < max_reorder and len(around) > 1
    return 0 if ok else 1


sys.exit(main())
