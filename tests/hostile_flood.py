#!/usr/bin/env python3
"""Hostile datagrams at a gateway's UDP 500 and 4500, a known number of each kind.

  hostile_flood.py ADDR mixed SCALE [SEED]
  hostile_flood.py ADDR burst COUNT [SEED]

mixed: sends, as fast as it can, to ADDR (an IPv4 address):
  esp_random_spi      4500  ESP-looking packets with random SPIs (unknown to the gateway)
  ike_garbage_header  500   28..300 bytes: an IKE header with random SPIs, version, length
                      4500  the same behind the non-ESP marker (RFC 3948 2.2)
  truncated           500   0..27 bytes (shorter than an IKE header)
                      4500  0 and 2..7 bytes (shorter than an ESP header; 1 byte would be a
                            keepalive unless it is 0xff, so one byte is never sent)
  oversized           both  4000..9000 bytes (fragmented on the wire, reassembled by the host)
  random_junk         both  random bytes, random lengths 1..1400 (never a lone 0xff)
  ike_sa_init         500   valid-looking IKE_SA_INIT requests (SA, KE x25519, Nonce), each
                            with a new SPI, from SCALE/10 different source ports
Counts scale with SCALE (100: about 4,600 datagrams). burst: COUNT ESP packets with random
SPIs (esp_random_spi, 4500) and COUNT IKE headers with random SPIs (ike_garbage_header, 500),
100..200 bytes each, interleaved, to outrun a receiver. Prints one JSON object: the datagrams
sent per kind and port, and the totals per port ("sent_500", "sent_4500"). A datagram the
local stack refuses (ENOBUFS, EAGAIN) is retried, so every one counted was handed to the kernel.
"""
import json
import os
import random
import socket
import struct
import sys
import time


def ike_header(spi_i, spi_r, next_payload, exchange, flags, msg_id, length, version=0x20):
    return struct.pack("!8s8sBBBBII", spi_i, spi_r, next_payload, version, exchange, flags, msg_id, length)


def ike_sa_init(rnd):
    # RFC 7296 3.3: one proposal (IKE), AES-GCM-16/128 (20, key length 128), PRF HMAC-SHA2-256
    # (5), DH group 31 (curve25519); no INTEG with an AEAD.
    def transform(last, ttype, tid, attrs=b""):
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs
    transforms = (transform(False, 1, 20, struct.pack("!HH", 0x800E, 128)) +
                  transform(False, 2, 5) + transform(True, 4, 31))
    proposal = struct.pack("!BBHBBBB", 0, 0, 8 + len(transforms), 1, 1, 0, 3) + transforms
    sa = struct.pack("!BBH", 34, 0, 4 + len(proposal)) + proposal           # next: KE
    ke_data = struct.pack("!HH", 31, 0) + rnd.randbytes(32)
    ke = struct.pack("!BBH", 40, 0, 4 + len(ke_data)) + ke_data              # next: Nonce
    nonce_data = rnd.randbytes(32)
    nonce = struct.pack("!BBH", 0, 0, 4 + len(nonce_data)) + nonce_data
    body = sa + ke + nonce
    spi_i = rnd.randbytes(8)
    return ike_header(spi_i, bytes(8), 33, 34, 0x08, 0, 28 + len(body)) + body


def send(sock, data, to):
    while True:
        try:
            sock.sendto(data, to)
            return
        except (BlockingIOError, InterruptedError):
            time.sleep(0.0005)
        except OSError as e:
            if e.errno in (105,):  # ENOBUFS: the local queue is full for a moment
                time.sleep(0.0005)
                continue
            raise


def main():
    addr, mode, scale = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    sent = {}

    def count(kind, port, n=1):
        key = f"{kind}_{port}"
        sent[key] = sent.get(key, 0) + n

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    ike, natt = (addr, 500), (addr, 4500)

    def junk(lo, hi):
        d = rnd.randbytes(rnd.randint(lo, hi))
        return b"\x00" if d == b"\xff" else d

    if mode == "burst":
        for _ in range(scale):
            send(s, struct.pack("!II", rnd.randint(1, 0xFFFFFFFF), 1) + rnd.randbytes(rnd.randint(92, 192)), natt)
            count("esp_random_spi", 4500)
            send(s, ike_header(rnd.randbytes(8), rnd.randbytes(8), 0, 0, 0, 0, 0) + rnd.randbytes(rnd.randint(72, 172)), ike)
            count("ike_garbage_header", 500)
        scale = 0  # nothing of the mixed flood
    for _ in range(20 * scale):
        spi = rnd.randint(1, 0xFFFFFFFF)
        send(s, struct.pack("!II", spi, rnd.randint(1, 1 << 31)) + rnd.randbytes(rnd.randint(16, 200)), natt)
        count("esp_random_spi", 4500)
    for _ in range(5 * scale):
        body = rnd.randbytes(rnd.randint(0, 272))
        h = ike_header(rnd.randbytes(8), rnd.randbytes(8), rnd.randint(0, 255), rnd.randint(0, 255),
                       rnd.randint(0, 255), rnd.randint(0, (1 << 32) - 1), rnd.randint(0, (1 << 32) - 1),
                       version=rnd.randint(0, 255))
        send(s, h + body, ike)
        count("ike_garbage_header", 500)
        if rnd.random() < 0.4:
            send(s, b"\x00\x00\x00\x00" + h + body, natt)
            count("ike_garbage_header", 4500)
    for i in range(2 * scale):
        send(s, rnd.randbytes(i % 28), ike)
        count("truncated", 500)
        n = [0, 2, 3, 4, 5, 6, 7][i % 7]
        d = rnd.randbytes(n)
        if n >= 4 and d[:4] == b"\0\0\0\0":
            d = b"\x01" + d[1:]
        send(s, d, natt)
        count("truncated", 4500)
    for _ in range(scale // 2):
        send(s, rnd.randbytes(rnd.randint(4000, 9000)), ike)
        count("oversized", 500)
        send(s, b"\x01" + rnd.randbytes(rnd.randint(4000, 9000)), natt)
        count("oversized", 4500)
    for _ in range(5 * scale):
        send(s, junk(1, 1400), ike)
        count("random_junk", 500)
        send(s, junk(1, 1400), natt)
        count("random_junk", 4500)
    # Many source ports: each socket its own ephemeral port, a few requests each.
    ports = scale // 10
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(ports)]
    for _ in range(4):
        for p in socks:
            send(p, ike_sa_init(rnd), ike)
            count("ike_sa_init", 500)
    for p in socks:
        p.close()
    sent["sent_500"] = sum(v for k, v in sent.items() if k.endswith("_500"))
    sent["sent_4500"] = sum(v for k, v in sent.items() if k.endswith("_4500"))
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
