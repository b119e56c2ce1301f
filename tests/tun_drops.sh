#!/usr/bin/env bash
# Every datagram accounted for on the TUN side too (issue 16 item 1): the kernel's drops at
# spigot's TUN device reach `spigot stats` (packets_dropped.kernel_tun_tx_dropped), so that
# what the inner hosts sent = what crossed the tunnel + what the kernel dropped before spigot.
#
# Two spigots with a tunnel. spigot a is stopped (SIGSTOP) while BURST datagrams from a's inner
# host to b's are routed into a's TUN: the device's queue (txqueuelen 500) fills and the kernel
# drops the rest (the TUN's tx_dropped). spigot a is let go (SIGCONT) and seals what was queued.
# Checked, exactly: received by b's inner host + a's kernel_tun_tx_dropped = BURST; spigot a's
# counter = the device's own tx_dropped (ip -s link); and a paced stream afterwards loses nothing.
# The other direction: b's TUN is set down and PINGS echo requests from a's inner host cross the
# tunnel; b opens each and its write to the TUN is refused (EIO). Checked, exactly: b's
# packets_dropped.tun_write_failed and kernel_tun_rx_dropped (the device's rx_dropped, which on
# this kernel counts the writes it refused) each grew by PINGS.
# usage: tun_drops.sh SPIGOT_BINARY [BURST (3000)] [PINGS (200)]
set -euo pipefail
SPIGOT=$1 BURST=${2:-3000} PINGS=${3:-200}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
spigot_start b
spigot_start a
A_PID=${PIDS[1]}
sctl a initiate peer >/dev/null
until_ok 10 ping_ok a || fail "no tunnel"

tun_dropped() {  # tun_dropped SIDE tx|rx: the TUN device's own count
  ip -n "${NS}$1" -j -s link show spigot0 | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['stats64']['$2']['dropped'])"
}
stat() {  # stat SIDE PYTHON_EXPRESSION_OF_s
  sctl "$1" stats --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"
}
before_dev=$(tun_dropped a tx)
before=$(stat a 's["packets_dropped"]["kernel_tun_tx_dropped"]')

ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-recv 203.0.113.1 5003 "$BURST" 8 >"$WORK/burst.txt" 2>&1 &
recv=$!
listening "${NS}b" udp 203.0.113.1 5003
kill -STOP "$A_PID"
# All at once (a rate far above what the stopped spigot reads: nothing): the first ~500 wait in
# the TUN's queue, the kernel drops the rest.
ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 5003 "$BURST" 1000000 2>>"$WORK/send.log"
kill -CONT "$A_PID"
wait "$recv" || true
got=$(sed -n 's/^received \([0-9]*\) of.*/\1/p' "$WORK/burst.txt")
dev=$(( $(tun_dropped a tx) - before_dev ))
counted=$(( $(stat a 's["packets_dropped"]["kernel_tun_tx_dropped"]') - before ))
log "burst of $BURST into a stopped spigot: $got crossed the tunnel, the kernel dropped $dev at the TUN, spigot a counted $counted"
[ "$dev" -gt 0 ] || fail "the TUN's queue did not overflow (nothing to account for)"
[ "$counted" = "$dev" ] || fail "spigot a counted $counted kernel TUN drops, the device $dev"
[ $(( got + counted )) = "$BURST" ] || fail "received $got + dropped $counted != sent $BURST"

# The tunnel carries a paced stream afterwards, whole.
ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-recv 203.0.113.1 5004 1000 6 >"$WORK/after.txt" 2>&1 &
recv=$!
listening "${NS}b" udp 203.0.113.1 5004
ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 5004 1000 500 2>>"$WORK/send.log"
wait "$recv" || { cat "$WORK/after.txt"; fail "the paced stream after the burst lost datagrams"; }
log "ok: after the burst: $(cat "$WORK/after.txt")"

# Opened packets the kernel refuses: b's TUN down (its routes go with it; nothing after this
# needs them). ICMP echoes are not coalesced: one TUN write each.
before_rx_dev=$(tun_dropped b rx)
before_rx=$(stat b 's["packets_dropped"]["kernel_tun_rx_dropped"]')
before_failed=$(stat b 's["packets_dropped"]["tun_write_failed"]')
before_opened=$(stat b 's["traffic"]["rx_packets"]')
ip -n "${NS}b" link set spigot0 down
ip netns exec "${NS}a" ping -q -c "$PINGS" -i 0.005 -W 1 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping-down.log" 2>&1 || true
sleep 1
rx_dev=$(( $(tun_dropped b rx) - before_rx_dev ))
rx=$(( $(stat b 's["packets_dropped"]["kernel_tun_rx_dropped"]') - before_rx ))
failed=$(( $(stat b 's["packets_dropped"]["tun_write_failed"]') - before_failed ))
opened=$(( $(stat b 's["traffic"]["rx_packets"]') - before_opened ))
log "$PINGS echo requests into b's downed TUN: b opened $opened, its writes refused $failed, kernel_tun_rx_dropped $rx, the device's rx_dropped $rx_dev"
[ "$opened" = "$PINGS" ] || fail "b opened $opened of $PINGS echo requests"
[ "$failed" = "$PINGS" ] || fail "b counted $failed refused TUN writes, expected $PINGS"
[ "$rx" = "$rx_dev" ] || fail "b's kernel_tun_rx_dropped grew by $rx, the device's rx_dropped by $rx_dev"
[ "$rx" = "$PINGS" ] || fail "b's kernel_tun_rx_dropped grew by $rx, expected $PINGS"
echo "PASS: $BURST datagrams = $got through the tunnel + $counted counted as kernel TUN drops;" \
  "$PINGS packets written to a downed TUN = $failed refused writes = $rx kernel TUN rx drops"
