#!/usr/bin/env bash
# Traffic through the tunnel: pings both ways and a TCP stream of BYTES each way with every byte
# checked.
# usage: tunnel_traffic.sh SPIGOT_BINARY PEER ESP_PROPOSAL [BYTES]
#   PEER: spigot                  two spigots, side a initiates
#         strongswan-initiates    charon on side b initiates to spigot on side a
#         spigot-initiates        spigot on side a initiates to charon on side b
#   INNER=6 in the environment tunnels IPv6 (2001:db8:a::/64 <-> 2001:db8:b::/64).
#   TUN_OFFLOAD=false runs the spigots with global.tun_offload = false (one packet per TUN read
#   and write, the path before issue 14).
set -euo pipefail
SPIGOT=$1 PEER=$2 ESP=$3 BYTES=${4:-104857600}
IKE=aes128gcm16-prfsha256-x25519
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
TUN_OFFLOAD=${TUN_OFFLOAD:-true}
tun_offload_config() {  # tun_offload_config SIDE
  [ "$TUN_OFFLOAD" = true ] || sed -i '/^\[global\]/a tun_offload = false' "$WORK/$1.toml"
}
spigot_config a "$IKE" "$ESP"
tun_offload_config a
spigot_start a
case "$PEER" in
  spigot)
    spigot_config b "$IKE" "$ESP"
    tun_offload_config b
    spigot_start b
    sctl a initiate peer >/dev/null ;;
  strongswan-initiates)
    charon_start b "$IKE" "$ESP"
    swan b --initiate --child net >/dev/null || fail "charon could not initiate" ;;
  spigot-initiates)
    charon_start b "$IKE" "$ESP"
    sctl a initiate peer >/dev/null ;;
  *) fail "unknown peer $PEER" ;;
esac
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "no CHILD SA"

until_ok 10 ping_ok a || fail "ping a -> b"
log "ok: ping a -> b"
ping_ok b || fail "ping b -> a"
log "ok: ping b -> a"
transfer_ok a "$BYTES" || fail "TCP transfer a -> b"
log "ok: $BYTES bytes a -> b, checked"
transfer_ok b "$BYTES" || fail "TCP transfer b -> a"
log "ok: $BYTES bytes b -> a, checked"
sctl a stats --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
d = s["packets_dropped"]
bad = {k: d[k] for k in ("replay", "bad_icv", "unknown_spi", "selector_mismatch", "malformed") if d[k]}
print("spigot a traffic:", s["traffic"], "drops:", {k: v for k, v in d.items() if v})
sys.exit(1 if bad else 0)' || fail "spigot counted drops on a clean tunnel"
# UDP GSO/GRO (issue 14 item 2), where the kernel has them: a's sealed stream left in GSO sends;
# a spigot b took it in GRO-coalesced and split it back without a drop.
offload_used() {  # offload_used SIDE FLAG COUNTER: COUNTER > 0, or FLAG off (kernel without it)
  sctl "$1" stats --json | python3 -c '
import json, sys
o = json.load(sys.stdin)["traffic"]["udp_offload"]
print(sys.argv[1], "udp_offload:", o)
sys.exit(0 if not o[sys.argv[2]] or o[sys.argv[3]] > 0 else 1)' "$1" "$2" "$3"
}
offload_used a gso gso_sends || fail "spigot a sent the stream without UDP GSO"
if [ "$PEER" = spigot ]; then
  offload_used b gro gro_batches || fail "spigot b received the stream without UDP GRO"
  sctl b stats --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["packets_dropped"]
bad = {k: d[k] for k in ("replay", "bad_icv", "unknown_spi", "selector_mismatch", "malformed") if d[k]}
sys.exit(1 if bad else 0)' || fail "spigot b counted drops on a clean tunnel"
fi
# TUN offloads (issue 14 item 1), where the kernel grants them: a's stack handed spigot a the
# stream as TSO super-segments, which it split into packets (the receiver checked every byte);
# a spigot b wrote what it opened GRO-coalesced. No frame was dropped for a bad header. Off:
# no virtio-net header, nothing counted.
tun_offload_used() {  # tun_offload_used SIDE FLAG COUNTER: COUNTER > 0, or FLAG off (not granted)
  sctl "$1" stats --json | python3 -c '
import json, sys
o = json.load(sys.stdin)["traffic"]["tun_offload"]
side, flag, counter, wanted = sys.argv[1:5]
print(side, "tun_offload:", o)
if o["bad_vnet_hdr"] or o["enabled"] != (wanted == "true"):
    sys.exit(1)
if wanted != "true":
    sys.exit(1 if o["vnet_hdr"] or o["super_segments"] or o["coalesced_writes"] else 0)
sys.exit(0 if not o["vnet_hdr"] or not o[flag] or o[counter] > 0 else 1)' "$1" "$2" "$3" "$TUN_OFFLOAD"
}
tun_offload_used a "tso${INNER:-4}" super_segments || fail "spigot a read the stream without TSO super-segments"
if [ "$PEER" = spigot ]; then
  tun_offload_used b vnet_hdr coalesced_writes || fail "spigot b wrote the stream without coalescing"
  # And the stream back: b split it, a coalesced it.
  tun_offload_used b "tso${INNER:-4}" super_segments || fail "spigot b read the stream without TSO super-segments"
  tun_offload_used a vnet_hdr coalesced_writes || fail "spigot a wrote the stream without coalescing"
fi
echo "PASS: traffic $PEER $ESP inner IPv${INNER:-4} tun_offload $TUN_OFFLOAD"
