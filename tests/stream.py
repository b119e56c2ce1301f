#!/usr/bin/env python3
"""A checked TCP byte stream for tunnel tests.

  stream.py serve ADDR PORT BYTES     receive BYTES, print "ok <sha256>" if they match the
                                      generator's, else "bad ..." (exit 1)
  stream.py send ADDR PORT BYTES      send BYTES of the deterministic stream
  stream.py udp-send ADDR PORT COUNT RATE   COUNT datagrams numbered 0.., RATE per second
  stream.py udp-recv ADDR PORT COUNT SECONDS  print how many of 0..COUNT-1 arrived, and which not
  stream.py udp-recv-timed ADDR PORT COUNT SECONDS OUT   as udp-recv, and write every arrival
                                      (sequence number, wall-clock time) to OUT as JSON
The stream is Python's seeded Mersenne Twister, block by block, so both ends know every byte.
"""
import hashlib
import json
import os
import random
import socket
import struct
import sys
import time

CHUNK = 1 << 16
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# udp-send writes the sequence numbers the host refused to send (JSON list) to this file.
REFUSED_FILE = os.environ.get("STREAM_REFUSED_FILE")


def block(i):
    # 64 KiB of pseudo-random bytes, the same on both ends.
    return random.Random(i).randbytes(CHUNK)


def expected_digest(total):
    h = hashlib.sha256()
    i = 0
    left = total
    while left > 0:
        b = block(i)[: min(CHUNK, left)]
        h.update(b)
        left -= len(b)
        i += 1
    return h.hexdigest()


def serve(addr, port, total):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(120)
    c, _ = s.accept()
    c.settimeout(120)
    h = hashlib.sha256()
    got = 0
    while got < total:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
        got += len(d)
    want = expected_digest(total)
    if got == total and h.hexdigest() == want:
        print("ok", want)
        return 0
    print(f"bad: received {got} of {total} bytes, sha256 {h.hexdigest()} want {want}")
    return 1


def send(addr, port, total):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(50):
        try:
            c = socket.create_connection((addr, port), timeout=10)
            break
        except OSError:
            time.sleep(0.1)
    else:
        print("cannot connect")
        return 1
    i = 0
    left = total
    start = time.time()
    while left > 0:
        b = block(i)[: min(CHUNK, left)]
        c.sendall(b)
        left -= len(b)
        i += 1
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    secs = time.time() - start
    print(f"sent {total} bytes in {secs:.2f} s ({total * 8 / secs / 1e6:.0f} Mbit/s)")
    return 0


def big_receive_buffer(s):
    # 4 MiB, so that this receiver being scheduled late (a loaded 2-core machine) does not count
    # as loss in the tunnel. SO_RCVBUF is capped at net.core.rmem_max; as root SO_RCVBUFFORCE is not.
    try:
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 4 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)


def missing_report(count, seen):
    # "missing N: a-b c ..." as runs, so that one long gap and scattered losses read differently.
    runs, n = [], 0
    while n < count:
        if n in seen:
            n += 1
            continue
        first = n
        while n < count and n not in seen:
            n += 1
        runs.append(f"{first}-{n - 1}" if n - 1 > first else str(first))
    shown = " ".join(runs[:12]) + (f" ... ({len(runs)} runs)" if len(runs) > 12 else "")
    return f"received {len(seen)} of {count}; missing {count - len(seen)}: [{shown}]"


def udp_send(addr, port, count, rate):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    start = time.time()
    lag, lag_at = 0.0, 0
    refused = []
    for n in range(count):
        # Sequence number, then the send time (for udp-recv-timed's per-packet delay).
        try:
            s.sendto(n.to_bytes(4, "big") + struct.pack("!d", time.time()) + b"x" * 52, (addr, port))
        except OSError as e:
            # The host refused it (e.g. strongSwan's kernel-libipsec removes its route into the
            # tunnel for a moment during a rekey: ENETUNREACH). Counted, and the stream goes on.
            refused.append((n, e.errno))
        delay = start + (n + 1) / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            if -delay > lag:
                lag, lag_at = -delay, n
            # Behind schedule (this process, or the whole machine, was not scheduled): catch up
            # at four times the rate, 16 at a time, not in one burst. A burst of seconds' worth
            # of datagrams overflows the TUN device's queue (txqueuelen 500) before the gateway
            # reads it — counted as kernel_tun_tx_dropped, but a loss of the test machine, not
            # of the tunnel under test.
            if n % 16 == 15:
                time.sleep(16 / (4 * rate))
    # How far this sender fell behind its schedule (then sent the backlog at once): a loss right
    # after such a burst points at queues on the way, not at the tunnel's SAs.
    print(f"udp-send to {addr}: {count} datagrams, at most {lag:.2f} s behind schedule (at {lag_at})",
          file=sys.stderr)
    if refused:
        print(f"udp-send to {addr}: {len(refused)} refused by the host: "
              + " ".join(f"{n}:{os.strerror(e)}" for n, e in refused[:8]), file=sys.stderr)
        if REFUSED_FILE:
            with open(REFUSED_FILE, "w") as f:
                json.dump([n for n, _ in refused], f)
    return 0


# A receiver waits `seconds` from its start, and while datagrams still come, until ARRIVAL_GRACE
# seconds after the latest: a sender that falls behind its schedule on a loaded machine is not
# taken for loss (rekey_flood once lost its last 274 datagrams to a receiver that had exited),
# and a stream that stopped still ends the wait.
ARRIVAL_GRACE = 2.0


def udp_recv(addr, port, count, seconds):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    big_receive_buffer(s)
    s.bind((addr, port))
    s.settimeout(0.5)
    seen = set()
    end = time.time() + seconds
    while time.time() < end and len(seen) < count:
        try:
            d, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        seen.add(int.from_bytes(d[:4], "big"))
        end = max(end, time.time() + ARRIVAL_GRACE)
    print(missing_report(count, seen))
    return 0 if len(seen) == count else 1


def udp_recv_timed(addr, port, count, seconds, out):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    big_receive_buffer(s)
    # The kernel's arrival time (SO_TIMESTAMPNS), so that this process being scheduled late
    # does not count as delay in the tunnel.
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((addr, port))
    s.settimeout(0.5)
    arrivals = []
    seen = set()
    end = time.time() + seconds
    while time.time() < end and len(seen) < count:
        try:
            d, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        at = time.time()
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("@qq", data[:16])
                at = sec + nsec / 1e9
        n = int.from_bytes(d[:4], "big")
        sent = struct.unpack("!d", d[4:12])[0] if len(d) >= 12 else at
        arrivals.append([n, at, sent])
        seen.add(n)
        end = max(end, time.time() + ARRIVAL_GRACE)
    with open(out, "w") as f:
        json.dump({"count": count, "arrivals": arrivals}, f)
    print(missing_report(count, seen))
    return 0 if len(seen) == count else 1


def main():
    cmd = sys.argv[1]
    if cmd == "serve":
        return serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    if cmd == "send":
        return send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    if cmd == "udp-send":
        return udp_send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    if cmd == "udp-recv-timed":
        return udp_recv_timed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    if cmd == "udp-recv":
        return udp_recv(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    print(__doc__)
    return 2


sys.exit(main())
