#!/usr/bin/env bash
# MOBIKE (RFC 4555), spigot as the gateway: strongSwan 5.9.8 (mobike = yes, its default) is a
# road warrior on side a and moves: its address 192.0.2.1 goes away and 192.0.2.5 comes up on
# its link, later 192.0.2.6 behind nftables source NAT (its datagrams leave as 192.0.2.7). charon
# notices through netlink and says so with UPDATE_SA_ADDRESSES from the new address. spigot
# moves the IKE SA and every CHILD SA there: the same IKE SA carries on (no new login; charon
# with kernel-libipsec rekeys its CHILD SA after a move), pings keep flowing with a bounded gap,
# and ike.mobike counts the updates. spigot checks each new address before ESP goes there
# (RFC 4555 3.7: an INFORMATIONAL with COOKIE2 that charon must echo); the check passes every
# time and the ping gap stays bounded. spigot listens on the wildcard address with local_addrs
# 192.0.2.2 and 192.0.2.3, so it announces 192.0.2.3 in IKE_AUTH (ADDITIONAL_IP4_ADDRESS, 3.6);
# a reload to 192.0.2.2 and 192.0.2.4 announces the new list in an INFORMATIONAL: charon logs
# each address it got (ike log level 2).
# usage: mobike.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16

netns_setup
# Taking the primary address away must leave the new one (a secondary until then) in place.
ip netns exec "${NS}a" sysctl -qw net.ipv4.conf.all.promote_secondaries=1 "net.ipv4.conf.${NS}va.promote_secondaries=1"
spigot_config b "$IKE" "$ESP"
sed -i -e 's/^remote_addrs = .*/remote_addrs = "%any"/' -e 's/^listen = .*/listen = "0.0.0.0"/' \
  -e 's/^local_addrs = .*/local_addrs = "192.0.2.2, 192.0.2.3"/' "$WORK/b.toml"
ip -n "${NS}b" addr add 192.0.2.3/24 dev "${NS}vb"
ip -n "${NS}b" addr add 192.0.2.4/24 dev "${NS}vb"
spigot_start b
charon_start a "$IKE" "$ESP"
# A road warrior takes whatever address it has.
sed -i 's/^    local_addrs = .*/    local_addrs = %any/' "$WORK/charon-a/swanctl.conf"
swan a --load-all --file "$WORK/charon-a/swanctl.conf" >/dev/null 2>&1 || fail "swanctl --load-all failed"
swan a --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 || fail "charon could not initiate: $(cat "$WORK/initiate.out")"
b_sa() { sctl b sas --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike_sas']; print(len(s), s[0]['spi_i'] if s else '-', s[0]['remote'] if s else '-', s[0]['children'][0]['spi_in'] if s and s[0]['children'] else '-')" 2>/dev/null; }
mobike() { sctl b stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ike']['mobike'][sys.argv[1]])" "$1"; }
until_ok 10 ping_ok a || fail "the tunnel did not come up"
read -r _ spi_i remote child <<<"$(b_sa)"
[ "$(mobike negotiated)" = 1 ] || fail "MOBIKE was not negotiated with charon"
log "tunnel up, MOBIKE negotiated: b sees a at $remote"

# RFC 4555 3.6: spigot's other address reached charon, and a reload's new list too.
peer_addrs() { sctl b sas --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike_sas'][0]; print(' '.join(s.get('mobike', {}).get('peer_addresses', ['-'])))"; }
until_ok 5 grep -q "got additional MOBIKE peer address: 192.0.2.3" "$WORK/charon-a.log" ||
  fail "charon did not get spigot's additional address 192.0.2.3: $(grep -i mobike "$WORK/charon-a.log" | tail -n 5)"
sed -i 's/^local_addrs = .*/local_addrs = "192.0.2.2, 192.0.2.4"/' "$WORK/b.toml"
sctl b reload >/dev/null || fail "reload with another address list failed"
until_ok 10 grep -q "got additional MOBIKE peer address: 192.0.2.4" "$WORK/charon-a.log" ||
  fail "charon did not get spigot's new address list after the reload"
[ "$(mobike address_lists_sent)" -ge 2 ] || fail "address lists sent: $(mobike address_lists_sent), want 2"
log "charon got spigot's addresses (192.0.2.3 in IKE_AUTH, 192.0.2.4 after the reload); b keeps charon's: $(peer_addrs)"

# A continuous ping across each move: how many answers are missing.
move() {  # move OLD NEW EXPECTED_REMOTE_PREFIX: a's address OLD is replaced by NEW
  local old=$1 new=$2 want=$3 updates received checks passed
  updates=$(mobike updates) checks=$(mobike rr_checks) passed=$(mobike rr_passed)
  ip netns exec "${NS}a" ping -c 60 -i 0.1 -W 1 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping-move.log" 2>&1 &
  local pinger=$!
  sleep 1
  ip -n "${NS}a" addr add "$new/24" dev "${NS}va"
  ip -n "${NS}a" addr del "$old/24" dev "${NS}va"
  wait "$pinger" || true
  received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping-move.log")
  read -r n spi_after remote_after child_after <<<"$(b_sa)"
  log "moved $old -> $new: b sees a at $remote_after; $received of 60 pings answered; mobike updates $(mobike updates)"
  case "$remote_after" in "$want"*) ;; *) fail "b did not follow a to $want: $(b_sa); charon: $(tail -n 20 "$WORK/charon-a.log")" ;; esac
  [ "$n" = 1 ] && [ "$spi_after" = "$spi_i" ] || fail "the IKE SA was replaced ($n IKE SA(s), SPI $spi_after, was $spi_i)"
  # charon with kernel-libipsec cannot move its SAs in place and rekeys the CHILD SA right after
  # the update: the same CHILD SA, or its rekeyed successor (counted), nothing else.
  if [ "$child_after" != "$child" ]; then
    [ "$(sctl b stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['rekeys']['answered'])")" -ge 1 ] ||
      fail "the CHILD SA was replaced without a rekey ($child_after, was $child)"
    log "charon rekeyed its CHILD SA after the move ($child -> $child_after)"
    child=$child_after
  fi
  [ "$(mobike updates)" -gt "$updates" ] || fail "no UPDATE_SA_ADDRESSES counted"
  # RFC 4555 3.7: the new address was checked (COOKIE2 echoed by charon) before ESP went there.
  [ "$(mobike rr_checks)" -gt "$checks" ] && [ "$(mobike rr_passed)" -gt "$passed" ] ||
    fail "no return routability check passed (checks $(mobike rr_checks), passed $(mobike rr_passed), failed $(mobike rr_failed))"
  [ "$(mobike rr_failed)" = 0 ] || fail "$(mobike rr_failed) return routability check(s) failed"
  log "return routability: $(mobike rr_checks) check(s), $(mobike rr_passed) passed; ESP goes to $(sctl b sas --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ike_sas'][0]['mobike']['esp_remote'])")"
  [ "${received:-0}" -ge 45 ] || fail "only $received of 60 pings answered across the move"
  ping_ok a || fail "no traffic after the move"
}
move 192.0.2.1 192.0.2.5 "192.0.2.5:"

# Behind a NAT now: 192.0.2.6 leaves as 192.0.2.7.
ip -n "${NS}a" addr add 192.0.2.7/24 dev "${NS}va"
ip netns exec "${NS}a" nft -f - <<NFT
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat;
    ip saddr 192.0.2.6 ip daddr 192.0.2.2 udp sport { 500, 4500 } snat to 192.0.2.7:40000-40099
  }
}
NFT
move 192.0.2.5 192.0.2.6 "192.0.2.7:"
log "ok: charon moved twice, the second time behind a NAT, on one IKE SA"
echo "PASS: MOBIKE: spigot followed strongSwan's UPDATE_SA_ADDRESSES to $(b_sa | cut -d' ' -f3), on one IKE SA"
