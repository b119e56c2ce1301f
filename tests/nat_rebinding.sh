#!/usr/bin/env bash
# NAT rebinding without MOBIKE (RFC 7296 2.23), through a real NAT: side a sits behind nftables
# source NAT (its datagrams leave as 192.0.2.3, ports 40000-40099); side b is the responder, not
# behind a NAT. Then the NAT "reboots": its mapping table is flushed and the new rule maps to
# ports 41000-41099, so a's next datagrams arrive from a new port. No IKE message is due: b must
# follow a's authentic ESP (the pings' packets), move the IKE SA and every CHILD SA, and answer
# to the new port, without a new IKE SA and with no more than a few pings lost. Before, and
# after, ESP with the SA's SPI from a third address (forged, so not authentic) moves nothing.
# usage: nat_rebinding.sh SPIGOT_BINARY [spigot|charon]   (charon: strongSwan is side a)
set -euo pipefail
SPIGOT=$1 PEER=${2:-spigot}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16

netns_setup
ip -n "${NS}a" addr add 192.0.2.3/24 dev "${NS}va"
ip -n "${NS}b" addr add 192.0.2.66/24 dev "${NS}vb"  # the spoofer's address
nat() {  # nat FIRST_PORT: a's IKE and ESP leave as 192.0.2.3:FIRST_PORT..+99
  ip netns exec "${NS}a" nft -f - <<NFT
flush ruleset
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat;
    ip saddr 192.0.2.1 ip daddr 192.0.2.2 udp sport { 500, 4500 } snat to 192.0.2.3:$1-$(($1 + 99))
  }
}
NFT
}
nat 40000

spigot_config b "$IKE" "$ESP"
sed -i 's/^remote_addrs = .*/remote_addrs = "%any"/' "$WORK/b.toml"
# Without MOBIKE (with it, the peer announces its moves and 2.23 is off: tests/mobike.sh).
sed -i 's/^remote_addrs = .*/&\nmobike = false/' "$WORK/b.toml"
spigot_start b
if [ "$PEER" = charon ]; then
  charon_start a "$IKE" "$ESP"
  swan a --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 || fail "charon could not initiate: $(cat "$WORK/initiate.out")"
else
  spigot_config a "$IKE" "$ESP"
  spigot_start a
  sctl a initiate peer >/dev/null
fi
b_sa() { sctl b sas --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike_sas']; print(len(s), s[0]['spi_i'], s[0]['remote'], len(s[0]['children']) if s else 0)" 2>/dev/null; }
up() { [ "$(b_sa | cut -d' ' -f1)" = 1 ] && [ "$(b_sa | cut -d' ' -f4)" -ge 1 ] && ping_ok a; }
until_ok 15 up || fail "the tunnel through the NAT did not come up: $(b_sa)"
read -r _ spi_i remote _ <<<"$(b_sa)"
case "$remote" in 192.0.2.3:40*) ;; *) fail "b sees a at $remote, not behind the NAT (192.0.2.3:40000-40099)" ;; esac

log "tunnel up through the NAT: b sees a at $remote"

stat() { sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin)
v=s
for k in sys.argv[1].split('.'): v=v[k]
print(v)" "$1"; }
spoof() {  # ESP with the inbound SPI of b's CHILD SA, a high sequence number, junk for the rest
  local spi; spi=$(sctl b sas --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ike_sas'][0]['children'][0]['spi_in'])")
  ip netns exec "${NS}b" python3 - "$spi" <<'PY'
import os, socket, struct, sys
spi = int(sys.argv[1], 16)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.66", 4500))
for seq in range(1000, 1020):
    s.sendto(struct.pack("!II", spi, seq) + os.urandom(100), ("192.0.2.2", 4500))
PY
}
bad_icv=$(stat packets_dropped.bad_icv)
spoof
counted() { [ "$(stat packets_dropped.bad_icv)" -ge $((bad_icv + 20)) ]; }
until_ok 5 counted || fail "b did not drop the forged ESP as bad_icv"
[ "$(b_sa | cut -d' ' -f3)" = "$remote" ] || fail "forged ESP from 192.0.2.66 moved the tunnel: $(b_sa)"
log "ok: forged ESP from 192.0.2.66 dropped (bad_icv), the tunnel stays at $remote"

# The NAT loses its mappings and maps a anew.
moved_before=$(stat ike.peer_moved.followed)
nat 41000
ip netns exec "${NS}a" conntrack -F >/dev/null 2>&1
# Pings from a: the first ESP packet arrives from the new port; b follows it and replies there.
ip netns exec "${NS}a" ping -c 20 -i 0.1 -W 1 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping-move.log" 2>&1 || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping-move.log")
read -r n spi_after remote_after _ <<<"$(b_sa)"
log "after the NAT's new mapping: b sees a at $remote_after; $received of 20 pings answered"
case "$remote_after" in 192.0.2.3:41*) ;; *) fail "b did not follow a to its new mapping: $(b_sa); $(cat "$WORK/ping-move.log")" ;; esac
[ "$n" = 1 ] && [ "$spi_after" = "$spi_i" ] || fail "the IKE SA was replaced ($n IKE SA(s), SPI $spi_after, was $spi_i)"
[ "$(stat ike.peer_moved.followed)" -gt "$moved_before" ] || fail "b did not count the move"
[ "${received:-0}" -ge 18 ] || fail "only $received of 20 pings answered across the move"
ping_ok a || fail "no traffic after the move"

# The IKE SA went with it: an IKE rekey from b reaches a at the new mapping.
sctl b rekey peer --ike >/dev/null
rekeyed() { [ "$(b_sa | cut -d' ' -f1)" = 1 ] && [ "$(b_sa | cut -d' ' -f2)" != "$spi_i" ]; }
until_ok 10 rekeyed || fail "an IKE rekey from b did not reach a at its new mapping"
ping_ok a || fail "no traffic after the IKE rekey"
log "ok: b's IKE rekey reached a at its new mapping"
spoof
sleep 0.5
[ "$(b_sa | cut -d' ' -f3)" = "$remote_after" ] || fail "forged ESP moved the tunnel after the move: $(b_sa)"
echo "PASS: NAT rebinding ($PEER behind the NAT): b followed authentic ESP from $remote to $remote_after, forged ESP moved nothing"
