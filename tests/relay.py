#!/usr/bin/env python3
"""A router that reorders and duplicates the IPsec datagrams it forwards (issue 16 item 2).

  relay.py TUN_NAME STATS_FILE REORDER_PERCENT DUPLICATE_PERCENT [SEED]

Runs in the middle namespace of tests/reorder_duplicate.sh. Policy routing there sends every
packet that arrives on one of the two links into the TUN device TUN_NAME (created here); this
process reads it and writes it back, and the kernel forwards what comes back out of the TUN to
its destination. On the way:
  - REORDER_PERCENT of the packets are held back and released after 1-3 later packets of the
    same direction (or after HOLD_MS when none follow): the receiver sees them out of order;
  - DUPLICATE_PERCENT of the packets are sent again, the copy held back the same way (so the
    copy comes after newer packets: an ESP copy is a replay within the window, an IKE copy a
    retransmission).
A packet is held at most once and never dropped. What was done is counted per direction (by
the destination address) and kind: IKE (UDP 500, or UDP 4500 behind the non-ESP marker), ESP
(UDP 4500), NAT-T keepalives and other packets. STATS_FILE gets the counts as JSON on SIGUSR1
and at SIGTERM, and is written while packets are still held only after those are sent.
"""
import fcntl
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
HOLD_MS = 30


def kind_of(pkt):
    """'ike', 'esp', 'keepalive' or 'other' for an IPv4 packet."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 17:
        return "other"
    ihl = (pkt[0] & 0x0F) * 4
    if len(pkt) < ihl + 8:
        return "other"
    dport = int.from_bytes(pkt[ihl + 2 : ihl + 4], "big")
    payload = pkt[ihl + 8 :]
    if dport == 500:
        return "ike"
    if dport != 4500:
        return "other"
    if len(payload) == 1 and payload[0] == 0xFF:
        return "keepalive"
    if len(payload) >= 4 and payload[:4] == b"\0\0\0\0":
        return "ike"
    return "esp"


class Direction:
    """The packets towards one destination: those held back, each with the number of later
    packets still to pass it and its deadline."""

    def __init__(self):
        self.held = []  # [countdown, deadline, packet]
        self.counts = {}

    def count(self, kind, what):
        k = self.counts.setdefault(kind, {"forwarded": 0, "reordered": 0, "duplicated": 0})
        k[what] += 1


def main():
    name, stats_file = sys.argv[1], sys.argv[2]
    reorder, duplicate = float(sys.argv[3]), float(sys.argv[4])
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    directions = {}
    stop = []
    dump = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: dump.append(1))

    def write_stats():
        out = {"reorder_percent": reorder, "duplicate_percent": duplicate,
               "directions": {dst: d.counts for dst, d in directions.items()}}
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, stats_file)

    def send(pkt):
        os.write(fd, pkt)

    def release(d, now, passed):
        # Every held packet that `passed` later packets have now overtaken, or whose time is up.
        keep = []
        for h in d.held:
            h[0] -= passed
            if h[0] <= 0 or h[1] <= now:
                send(h[2])
            else:
                keep.append(h)
        d.held = keep

    print("relay ready", flush=True)
    while not stop:
        if dump and not any(d.held for d in directions.values()):
            dump.clear()
            write_stats()
        try:
            ready, _, _ = select.select([fd], [], [], HOLD_MS / 3000)
        except InterruptedError:
            continue
        now = time.monotonic()
        if ready:
            pkt = os.read(fd, 65536)
            ipv4 = len(pkt) >= 20 and pkt[0] >> 4 == 4
            dst = ".".join(str(b) for b in pkt[16:20]) if ipv4 else "not IPv4"
            d = directions.setdefault(dst, Direction())
            kind = kind_of(pkt)
            d.count(kind, "forwarded")
            if kind in ("ike", "esp") and rng.random() * 100 < reorder:
                d.count(kind, "reordered")
                d.held.append([rng.randint(1, 3), now + HOLD_MS / 1000, pkt])
                release(d, now, 0)
            else:
                send(pkt)
                release(d, now, 1)
            if kind in ("ike", "esp") and rng.random() * 100 < duplicate:
                d.count(kind, "duplicated")
                d.held.append([rng.randint(1, 3), now + HOLD_MS / 1000, pkt])
        for d in directions.values():
            release(d, now, 0)
    for d in directions.values():
        for h in d.held:
            send(h[2])
        d.held = []
    write_stats()


if __name__ == "__main__":
    main()
