#!/usr/bin/env python3
"""Checks a udp-recv-timed record (stream.py) around an event at wall-clock time T.

  arrivals.py FILE T WINDOW_S MAX_GAP_MS MAX_REORDER
prints the longest inter-arrival gap in [T - 0.05 s, T + WINDOW_S], the number of duplicates,
late (reordered) arrivals and the largest reorder distance; exit 1 if anything was lost or
duplicated, the gap reached MAX_GAP_MS, or a packet arrived MAX_REORDER or more places late
(the replay window: beyond it the receiver would have dropped it).
"""
import json
import sys


def main():
    path, t, window, max_gap_ms, max_reorder = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
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
    times = [a[1] for a in arrivals if t - 0.05 <= a[1] <= t + window]
    gap = max((b - a for a, b in zip(times, times[1:])), default=float("inf")) * 1000
    print(f"longest gap {gap:.1f} ms in [T-50ms, T+{window}s] ({len(times)} arrivals), "
          f"missing {missing}, duplicates {duplicates}, late {late} (by at most {worst})")
    ok = missing == 0 and duplicates == 0 and gap < max_gap_ms and worst < max_reorder and len(times) > 1
    return 0 if ok else 1


sys.exit(main())
