#!/usr/bin/env bash
# Two spigots; side a has start_action = "trap".
#  1. Trap: the first packet to the unestablished connection triggers the negotiation and
#     arrives; a burst larger than the hold queue is partly dropped and exactly that many drops
#     are counted (no_sa_queue_full).
#  2. Hostile input on UDP 4500 (random bytes, truncated ESP, a replayed ESP packet, a valid SPI
#     with a bad ICV, an authentic packet whose inner addresses are outside the selectors is
#     covered by the unit tests): nothing delivered, each counted under its reason, and the
#     tunnel keeps working.
# usage: trap_and_hostile.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config a "$IKE" "$ESP"
echo 'start_action = "trap"' >>"$WORK/a.toml"
spigot_config b "$IKE" "$ESP"
spigot_start b
spigot_start a
stat() {  # stat SIDE DOTTED.KEY
  sctl "$1" stats --json | python3 -c "import json,sys; v=json.load(sys.stdin)
for k in '$2'.split('.'): v=v[k]
print(v)"
}

# 1. Trap. The hold queue keeps 32 packets per acquire (policy::AcquireQueueOptions). A burst
# of 100 UDP datagrams, sent before IKE can finish, must be split exactly. IKE is held back
# for the burst by stopping side b's spigot (its IKE_SA_INIT waits in the socket), so a fast
# handshake or a slow sender cannot change the split.
ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-recv 203.0.113.1 7001 100 8 >"$WORK/trap.log" 2>&1 &
receiver=$!
listening "${NS}b" udp 203.0.113.1 7001
kill -STOP "${PIDS[0]}"
ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 7001 100 100000
kill -CONT "${PIDS[0]}"
wait "$receiver" || true
held_dropped=$(stat a packets_dropped.no_sa_queue_full)
received=$(sed -n 's/received \([0-9]*\) of.*/\1/p' "$WORK/trap.log")
log "trap burst: received $received of 100, no_sa_queue_full = $held_dropped, acquires = $(stat a traffic.acquires)"
[ "$(stat a traffic.acquires)" = 1 ] || fail "expected exactly one acquire"
[ "$received" -ge 1 ] || fail "the first packet did not arrive after the negotiation"
[ $((received + held_dropped)) = 100 ] || fail "received $received + counted drops $held_dropped != 100 sent"
[ "$held_dropped" = 68 ] || fail "the hold queue should keep 32 of 100 and drop 68, dropped $held_dropped"
until_ok 5 ping_ok a || fail "the trapped tunnel does not carry traffic"
log "ok: trap"

# 2. Hostile input to side b's UDP 4500, sent from side a's namespace.
spi=$(sctl b sas --json | python3 -c 'import json,sys; print([c["spi_in"] for s in json.load(sys.stdin)["ike_sas"] for c in s["children"]][0])')
before() { stat b "packets_dropped.$1"; }
r0=$(before replay); i0=$(before bad_icv); u0=$(before unknown_spi); m0=$(before malformed)
# Capture one authentic ESP packet on its way to b, to replay it.
ip netns exec "${NS}b" python3 - "${NS}vb" >"$WORK/captured.hex" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((sys.argv[1], 0))
s.settimeout(5)
while True:
    f = s.recv(4096)
    ip = f[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] == 17 and int.from_bytes(ip[ihl + 2:ihl + 4], "big") == 4500 and ip[ihl + 8:ihl + 12] != b"\0\0\0\0":
        print(ip[ihl + 8:].hex())
        break
PY
capture=$!
# Python binds its socket a second or more after it starts on a loaded machine (CI once pinged
# before that and caught nothing): ping until it has its packet.
for _ in $(seq 40); do
  kill -0 "$capture" 2>/dev/null || break
  ping_ok a >/dev/null || true
  sleep 0.2
done
wait "$capture" || fail "could not capture an ESP packet"
sleep 0.5  # the last ping's replies
rx0=$(stat b traffic.rx_packets)
ip netns exec "${NS}a" python3 - "$spi" "$(cat "$WORK/captured.hex")" <<'PY'
import os, socket, sys
spi = bytes.fromhex(sys.argv[1])
esp = bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to = ("192.0.2.2", 4500)
rnd = __import__("random").Random(7)
for n in range(200):                     # random bytes (never the non-ESP marker)
    d = bytes([0xAA]) + rnd.randbytes(rnd.randrange(0, 300))
    s.sendto(d, to)
for n in range(1, 8):                    # truncated ESP with our SPI
    s.sendto(spi + b"\0\0\0\x01" * n, to)
s.sendto(esp, to)                        # the captured packet again: a replay
bad = bytearray(esp); bad[-1] ^= 0x55     # a valid SPI and sequence number, a bad ICV
bad[4:8] = (0x7fffffff).to_bytes(4, "big")
s.sendto(bytes(bad), to)
PY
sleep 1
log "after hostile input on b: replay +$(( $(before replay) - r0 )), bad_icv +$(( $(before bad_icv) - i0 )), unknown_spi +$(( $(before unknown_spi) - u0 )), malformed +$(( $(before malformed) - m0 ))"
[ $(( $(before replay) - r0 )) -ge 1 ] || fail "replayed ESP not counted as replay"
[ $(( $(before bad_icv) - i0 )) -ge 1 ] || fail "bad ICV not counted"
[ $(( $(before unknown_spi) - u0 )) -ge 150 ] || fail "random bytes not counted as unknown SPI"
[ $(( $(before malformed) - m0 )) -ge 1 ] || fail "truncated ESP not counted as malformed"
ping_ok a || fail "the tunnel stopped working after hostile input"
# Delivered to b since rx0 (after the capture): the 3 echo requests just now. Anything more came
# from the hostile datagrams.
delivered=$(( $(stat b traffic.rx_packets) - rx0 ))
[ "$delivered" = 3 ] || fail "b delivered $delivered packets, expected the 3 pings only"
log "ok: hostile input counted, nothing of it delivered, tunnel still up"
echo "PASS: trap and hostile input"
