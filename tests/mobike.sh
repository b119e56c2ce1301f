#!/usr/bin/env bash
# MOBIKE (RFC 4555), spigot as the gateway: strongSwan 5.9.8 (mobike = yes, its default) is a
# road warrior on side a and moves: its address 192.0.2.1 goes away and 192.0.2.5 comes up on
# its link, later 192.0.2.6 behind nftables source NAT (its datagrams leave as 192.0.2.7), then
# 192.0.2.8 behind another (leaving as 192.0.2.9, other ports). charon
# notices through netlink and says so with UPDATE_SA_ADDRESSES from the new address. spigot
# moves the IKE SA and every CHILD SA there: the same IKE SA carries on (no new login; charon
# with kernel-libipsec rekeys its CHILD SA after a move), pings keep flowing with a bounded gap,
# and ike.mobike counts the updates. spigot checks each new address before ESP goes there
# (RFC 4555 3.7: an INFORMATIONAL with COOKIE2 that charon must echo); the check passes every
# time and the ping gap stays bounded. Address lists (3.6): spigot listens on 192.0.2.2 only, so
# its IKE_AUTH response says NO_ADDITIONAL_ADDRESSES (charon's log shows it parsed); charon
# announces its own other addresses as they come and go, and spigot shows the list it keeps in
# `sas --json`. (A list that changes on reload needs a wildcard listen: covered by the
# in-process tests only; spigot moving itself as the initiator: mobike_initiator.sh.)
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
sed -i 's/^remote_addrs = .*/remote_addrs = "%any"/' "$WORK/b.toml"
spigot_start b
charon_start a "$IKE" "$ESP"
# A road warrior takes whatever address it has.
sed -i 's/^    local_addrs = .*/    local_addrs = %any/' "$WORK/charon-a/swanctl.conf"
swan a --load-all --file "$WORK/charon-a/swanctl.conf" >/dev/null 2>&1 || fail "swanctl --load-all failed"
swan a --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 || fail "charon could not initiate: $(cat "$WORK/initiate.out")"
# b_state: b's IKE SA and counters, one read (the control socket is slow on a loaded machine):
# IKE SAs, SPIi, remote, first CHILD SA's inbound SPI, where ESP goes, the peer's MOBIKE address
# list (comma-separated, "-" if empty), rekeys answered, then ike.mobike's counters as NAME=VALUE.
b_state() {
  { sctl b sas --json; echo; sctl b stats --json; } | python3 -c '
import json, sys
text, dec = sys.stdin.read(), json.JSONDecoder()
sas, end = dec.raw_decode(text)
stats, _ = dec.raw_decode(text[end:].lstrip())
s = sas["ike_sas"]; f = s[0] if s else {}
m = f.get("mobike", {})
print(len(s), f.get("spi_i", "-"), f.get("remote", "-"),
      f["children"][0]["spi_in"] if f.get("children") else "-", m.get("esp_remote", "-"),
      ",".join(m.get("peer_addresses", [])) or "-", stats["rekeys"]["answered"],
      " ".join("%s=%s" % kv for kv in sorted(stats["ike"]["mobike"].items())))' 2>/dev/null
}
# state: reads b_state into n spi remote child esp peers answered and mobike_NAME variables.
state() {
  local counters
  read -r n spi remote child_now esp peers answered counters <<<"$(b_state)"
  for kv in $counters; do eval "mobike_${kv}"; done
}
until_ok 10 ping_ok a || fail "the tunnel did not come up"
state
spi_i=$spi child=$child_now
[ "$mobike_negotiated" = 1 ] || fail "MOBIKE was not negotiated with charon"
log "tunnel up, MOBIKE negotiated: b sees a at $remote"

# RFC 4555 3.6: spigot's list (the one address it listens on: NO_ADDITIONAL_ADDRESSES) reached
# charon in IKE_AUTH.
grep -q "parsed IKE_AUTH response 1 \[.*N(NO_ADD_ADDR)" "$WORK/charon-a.log" ||
  fail "no NO_ADDITIONAL_ADDRESSES in spigot's IKE_AUTH response: $(grep 'IKE_AUTH response' "$WORK/charon-a.log")"
[ "$mobike_address_lists_sent" = 1 ] || fail "address lists sent: $mobike_address_lists_sent, want 1"
log "charon parsed spigot's NO_ADDITIONAL_ADDRESSES; b keeps charon's list: $peers"

# A continuous ping across each move: how many answers are missing.
move() {  # move OLD NEW EXPECTED_REMOTE_PREFIX [AFTER...]: a's address OLD is replaced by NEW,
          # then the command AFTER runs (in the same moment)
  local old=$1 new=$2 want=$3 received updates checks passed
  shift 3
  state
  updates=$mobike_updates checks=$mobike_rr_checks passed=$mobike_rr_passed
  ip netns exec "${NS}a" ping -c 60 -i 0.1 -W 1 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping-move.log" 2>&1 &
  local pinger=$!
  sleep 1
  ip -n "${NS}a" addr add "$new/24" dev "${NS}va"
  ip -n "${NS}a" addr del "$old/24" dev "${NS}va"
  [ $# = 0 ] || "$@"
  wait "$pinger" || true
  received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping-move.log")
  state
  log "moved $old -> $new: b sees a at $remote, ESP to $esp; $received of 60 pings answered; mobike updates $mobike_updates, return routability checks $mobike_rr_checks (passed $mobike_rr_passed, failed $mobike_rr_failed)"
  case "$remote" in "$want"*) ;; *) fail "b did not follow a to $want: $remote; charon: $(tail -n 20 "$WORK/charon-a.log")" ;; esac
  [ "$n" = 1 ] && [ "$spi" = "$spi_i" ] || fail "the IKE SA was replaced ($n IKE SA(s), SPI $spi, was $spi_i)"
  # charon with kernel-libipsec cannot move its SAs in place and rekeys the CHILD SA right after
  # the update: the same CHILD SA, or its rekeyed successor (counted), nothing else.
  if [ "$child_now" != "$child" ]; then
    [ "$answered" -ge 1 ] || fail "the CHILD SA was replaced without a rekey ($child_now, was $child)"
    log "charon rekeyed its CHILD SA after the move ($child -> $child_now)"
    child=$child_now
  fi
  [ "$mobike_updates" -gt "$updates" ] || fail "no UPDATE_SA_ADDRESSES counted"
  # RFC 4555 3.7: the new address was checked (COOKIE2 echoed by charon) before ESP went there,
  # and ESP goes there now.
  [ "$mobike_rr_checks" -gt "$checks" ] && [ "$mobike_rr_passed" -gt "$passed" ] ||
    fail "no return routability check passed (checks $mobike_rr_checks, passed $mobike_rr_passed, failed $mobike_rr_failed)"
  [ "$mobike_rr_failed" = 0 ] || fail "$mobike_rr_failed return routability check(s) failed"
  [ "$esp" = "$remote" ] || fail "ESP goes to $esp, the IKE SA is at $remote"
  [ "${received:-0}" -ge 45 ] || fail "only $received of 60 pings answered across the move"
  ping_ok a || fail "no traffic after the move"
}
move 192.0.2.1 192.0.2.5 "192.0.2.5:"

# Behind a NAT now: 192.0.2.6 leaves as 192.0.2.7.
ip -n "${NS}a" addr add 192.0.2.7/24 dev "${NS}va"
# charon announces its new address (ADDITIONAL_IP4_ADDRESS in an INFORMATIONAL); spigot keeps it.
has_peer_addr() { state; case ",$peers," in *",$1,"*) return 0 ;; esac; return 1; }
until_ok 10 has_peer_addr 192.0.2.7 ||
  fail "charon's new address 192.0.2.7 is not in b's list ($peers): $(grep 'ADD_4_ADDR\|NO_ADD_ADDR' "$WORK/charon-a.log" | tail -n 3)"
log "charon announced 192.0.2.7; b keeps $peers ($mobike_additional_addresses address(es) taken so far)"
ip netns exec "${NS}a" nft -f - <<NFT
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat;
    ip saddr 192.0.2.6 ip daddr 192.0.2.2 udp sport { 500, 4500 } snat to 192.0.2.7:40000-40099
  }
}
NFT
move 192.0.2.5 192.0.2.6 "192.0.2.7:"

# From behind that NAT to behind another: 192.0.2.8 leaves as 192.0.2.9. The first NAT's outside
# address goes in the same moment (else charon's route would take it as its source, unNATed),
# and the second's comes after 192.0.2.8, so that 192.0.2.8 is the address charon moves to.
ip netns exec "${NS}a" nft add rule ip nat post ip saddr 192.0.2.8 ip daddr 192.0.2.2 udp sport '{ 500, 4500 }' \
  snat to 192.0.2.9:41000-41099
second_nat() {
  ip -n "${NS}a" addr del 192.0.2.7/24 dev "${NS}va"
  ip -n "${NS}a" addr add 192.0.2.9/24 dev "${NS}va"
}
move 192.0.2.6 192.0.2.8 "192.0.2.9:" second_nat
log "ok: charon moved three times — on its link, behind a NAT, behind another NAT — on one IKE SA"
echo "PASS: MOBIKE: spigot followed strongSwan's UPDATE_SA_ADDRESSES to $remote (from one NAT to another), on one IKE SA, checking each new address first"
