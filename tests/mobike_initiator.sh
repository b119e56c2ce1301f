#!/usr/bin/env bash
# MOBIKE (RFC 4555 3.5), spigot as the original initiator: spigot on side a is a road warrior
# listening on 0.0.0.0 with local_addrs %any (its IKE and ESP source chosen per IKE SA with
# IP_PKTINFO), strongSwan 5.9.8 on side b the responder (mobike = yes, its default). With the
# tunnel up, a's address 192.0.2.1 is replaced by 192.0.2.5 on its link (add the new one, delete
# the old, promote_secondaries). spigot sees the change through netlink, waits for the burst to
# settle, moves its IKE SA and every CHILD SA to 192.0.2.5 and sends UPDATE_SA_ADDRESSES from
# there. Checked: charon's IKE SA (same SPIs) has a's new address, pings keep flowing with a
# bounded gap, spigot counted the move and the update, and neither side made a new IKE SA. Also:
# charon's NAT detection finds spigot behind no NAT (spigot hashes its real address, not 0.0.0.0).
# usage: mobike_initiator.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup
# Taking the primary address away must leave the new one (a secondary until then) in place.
ip netns exec "${NS}a" sysctl -qw net.ipv4.conf.all.promote_secondaries=1 "net.ipv4.conf.${NS}va.promote_secondaries=1"
spigot_config a "$IKE" "$ESP"
sed -i -e 's/^listen = .*/listen = "0.0.0.0"/' -e 's/^local_addrs = .*/local_addrs = "%any"/' "$WORK/a.toml"
charon_start b "$IKE" "$ESP"
# The road warrior may come from anywhere.
sed -i 's/^    remote_addrs = .*/    remote_addrs = %any/' "$WORK/charon-b/swanctl.conf"
swan b --load-all --file "$WORK/charon-b/swanctl.conf" >/dev/null 2>&1 || fail "swanctl --load-all failed"
spigot_start a
sctl a initiate peer >/dev/null || fail "spigot could not initiate"

# a_state: spigot's IKE SAs, SPIi, SPIr, local, remote, NAT detected, then ike.mobike's
# counters as NAME=VALUE.
a_state() {
  { sctl a sas --json; echo; sctl a stats --json; } | python3 -c '
import json, sys
text, dec = sys.stdin.read(), json.JSONDecoder()
sas, end = dec.raw_decode(text)
stats, _ = dec.raw_decode(text[end:].lstrip())
s = [x for x in sas["ike_sas"] if x["state"] != "DEAD"]; f = s[0] if s else {}
print(len(s), f.get("spi_i", "-"), f.get("spi_r", "-"), f.get("local", "-"), f.get("remote", "-"),
      str(f.get("nat_detected", "-")).lower(),
      " ".join("%s=%s" % kv for kv in sorted(stats["ike"]["mobike"].items())))' 2>/dev/null
}
state() {
  local counters
  read -r n spi_i spi_r local remote nat counters <<<"$(a_state)"
  for kv in $counters; do eval "mobike_${kv}"; done
}
# charon's IKE SAs: "COUNT SPIi SPIr REMOTE" of the first one (swanctl --list-sas --raw).
b_state() {
  swan b --list-sas --raw 2>/dev/null | python3 -c '
import re, sys
text = sys.stdin.read()
sas = re.findall(r"gw \{uniqueid=\d+ version=2 state=(\w+).*?remote-host=(\S+).*?initiator-spi=([0-9a-f]+) responder-spi=([0-9a-f]+)", text)
est = [s for s in sas if s[0] == "ESTABLISHED"]
f = est[0] if est else ("-", "-", "-", "-")
print(len(est), f[2], f[3], f[1])'
}

until_ok 15 ping_ok a || fail "the tunnel did not come up"
state
[ "$n" = 1 ] || fail "spigot has $n IKE SAs, want 1"
[ "$mobike_negotiated" = 1 ] || fail "MOBIKE was not negotiated with charon"
case "$local" in 192.0.2.1:*) ;; *) fail "spigot's IKE SA is at $local on a wildcard listen, want 192.0.2.1 (the route's source)" ;; esac
# charon with kernel-libipsec fakes a NAT on its side (its NAT_DETECTION_SOURCE_IP is off on
# purpose, to force UDP encapsulation), so spigot sees one there; but spigot's own hashes are of
# its real address: charon must not find spigot behind a NAT (as it did when spigot hashed
# 0.0.0.0).
! grep -q "remote host is behind NAT" "$WORK/charon-b.log" ||
  fail "charon found spigot behind a NAT: NAT detection hashed the wildcard address? $(grep -i nat "$WORK/charon-b.log" | head -n 5)"
read -r b_n b_spi_i b_spi_r b_remote <<<"$(b_state)"
[ "$b_n" = 1 ] && [ "$b_spi_i" = "$spi_i" ] || fail "charon's IKE SA ($b_n, $b_spi_i) is not spigot's ($spi_i)"
[ "$b_remote" = 192.0.2.1 ] || fail "charon sees spigot at $b_remote, want 192.0.2.1"
log "tunnel up, MOBIKE negotiated: spigot at $local, IKE SA ${spi_i}_i ${spi_r}_r, charon finds spigot behind no NAT"

# The move, under a continuous ping: how many answers are missing.
ip netns exec "${NS}a" ping -c 50 -i 0.1 -W 1 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping-move.log" 2>&1 &
pinger=$!
sleep 1
ip -n "${NS}a" addr add 192.0.2.5/24 dev "${NS}va"
ip -n "${NS}a" addr del 192.0.2.1/24 dev "${NS}va"
moved_b() { read -r b_n b_spi_i b_spi_r b_remote <<<"$(b_state)"; [ "$b_remote" = 192.0.2.5 ]; }
until_ok 10 moved_b || fail "charon did not follow spigot to 192.0.2.5 (it has $b_remote): $(grep -i 'update\|mobike\|address' "$WORK/charon-b.log" | tail -n 8)"
wait "$pinger" || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping-move.log")
state
log "moved: spigot at $local, charon sees $b_remote; $received of 50 pings answered; local moves $mobike_local_moves, updates sent $mobike_updates_sent"
# The same IKE SA on both sides, nothing new.
[ "$b_n" = 1 ] && [ "$b_spi_i" = "$spi_i" ] && [ "$b_spi_r" = "$spi_r" ] ||
  fail "charon's IKE SA changed: $b_n IKE SA(s), ${b_spi_i}_i ${b_spi_r}_r (was ${spi_i}_i ${spi_r}_r)"
read -r now_n now_spi_i now_spi_r _ <<<"$(a_state)"
[ "$now_n" = 1 ] && [ "$now_spi_i" = "$spi_i" ] || fail "spigot's IKE SA changed: $now_n IKE SA(s), $now_spi_i (was $spi_i)"
case "$local" in 192.0.2.5:*) ;; *) fail "spigot's IKE SA is at $local, want 192.0.2.5" ;; esac
! grep -q "remote host is behind NAT" "$WORK/charon-b.log" || fail "charon found spigot behind a NAT after the move"
[ "${mobike_local_moves:-0}" -ge 1 ] && [ "${mobike_updates_sent:-0}" -ge 1 ] ||
  fail "spigot counted no move (local_moves $mobike_local_moves, updates_sent $mobike_updates_sent)"
[ "${received:-0}" -ge 35 ] || fail "only $received of 50 pings answered across the move"
ping_ok a || fail "no traffic after the move"
# A TCP stream from a (every byte checked): the data path's batched sends (sendmmsg, UDP GSO)
# carry the IKE SA's new source address too.
log "pings flow after the move; a TCP stream next"
transfer_ok a 4000000 || fail "the TCP transfer through the moved tunnel failed"
state
gso=$(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["traffic"]["udp_offload"]["gso_sends"])')
log "after the transfer: spigot still at $local, $gso GSO message(s) sent"
case "$local" in 192.0.2.5:*) ;; *) fail "spigot's IKE SA left 192.0.2.5: $local" ;; esac
grep -q "local address moved from 192.0.2.1:[0-9]* to 192.0.2.5:[0-9]*" "$WORK/spigot-a.log" ||
  fail "spigot's log does not show the move"
echo "PASS: MOBIKE initiator: spigot moved from 192.0.2.1 to 192.0.2.5 on one IKE SA (${spi_i}_i), charon followed, $received of 50 pings answered across the move"
