#!/usr/bin/env bash
# Simultaneous IKE SA rekeys (RFC 7296 2.8.2): spigot (side a) and its peer (side b: another
# spigot, or strongSwan 5.9.8) rekey the IKE SA at the same moment, ROUNDS times. Each side
# answers the other's rekey while its own is in flight, so two new IKE SAs exist; the one
# created with the lowest of the four nonces is deleted by its creator, the CHILD SA moves to
# the survivor, the old IKE SA is deleted by the survivor's creator.
#
# To make the requests cross every time (the link's round trip is far shorter than the moment
# between two commands), nftables in a's namespace drops a's IKE datagrams for ~2 s while a's
# rekey and then b's are started: b's rekey reaches a while a's own is outstanding; when a
# retransmits, b's rekey is still waiting for its answer. Both sides then see all four nonces.
#
# a's answer to b's rekey is one of the datagrams held, so b resolves the collision by the
# nonces only if a's SA lost (b's retransmission then gets the answer); if a's SA won, a deletes
# the old IKE SA before that, b's candidate (a's SA) takes the CHILD SA, and a deletes b's
# orphaned SA after its 10 s grace.
#
# Checked after every round: one IKE SA on each side (no redundant one left), the same one, the
# CHILD SA unchanged (the same SPIs: nothing renegotiated); spigot a resolved the collision by
# the nonces. Across all rounds: a paced ping through the tunnel loses nothing.
#
# usage: ike_rekey_collision.sh SPIGOT_BINARY spigot|charon [ROUNDS]
set -euo pipefail
SPIGOT=$1 PEER=$2 ROUNDS=${3:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16

netns_setup
spigot_config a "$IKE" "$ESP"
# Without MOBIKE: strongSwan with MOBIKE sends an address list update (an INFORMATIONAL) when its
# link-local address settles, at a moment of its own; queued with it, its rekey would not cross.
sed -i 's/^remote_ts = .*/&\nmobike = false/' "$WORK/a.toml"
spigot_start a
if [ "$PEER" = spigot ]; then
  spigot_config b "$IKE" "$ESP"
  spigot_start b
else
  command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
  charon_start b "$IKE" "$ESP"
fi

# One IKE SA on each side, in any state, and the two sides agree on it and its CHILD SA.
settled() {
  sctl a sas --json >"$WORK/a.json" || return 1
  python3 -c 'import json,sys; sys.exit(0 if len(json.load(open(sys.argv[1]))["ike_sas"]) == 1 else 1)' "$WORK/a.json" || return 1
  if [ "$PEER" = spigot ]; then
    sctl b sas --json >"$WORK/b.json" || return 1
    python3 -c 'import json,sys; sys.exit(0 if len(json.load(open(sys.argv[1]))["ike_sas"]) == 1 else 1)' "$WORK/b.json" || return 1
    python3 "$HERE/agree.py" spigot-vs-spigot "$WORK/a.json" "$WORK/b.json"
  else
    swan b --list-sas >"$WORK/c.txt" || return 1
    [ "$(grep -c ', IKEv2, ' "$WORK/c.txt")" = 1 ] || return 1
    python3 "$HERE/agree.py" spigot-vs-charon "$WORK/a.json" "$WORK/c.txt" AES_GCM_16_128/PRF_HMAC_SHA2_256 AES_GCM_16_128
  fi
}
ids() {  # "IKE_SPI_I IKE_SPI_R CHILD_SPI_IN CHILD_SPI_OUT" as spigot a sees them
  sctl a sas --json | python3 -c 'import json,sys
s=json.load(sys.stdin)["ike_sas"][0]; c=s["children"][0]
print(s["spi_i"], s["spi_r"], c["spi_in"], c["spi_out"])'
}
collisions() {  # collisions SIDE -> "RESOLVED OURS_REDUNDANT"
  sctl "$1" stats --json | python3 -c 'import json,sys
c=json.load(sys.stdin)["ike"]["ike_rekey_collisions"]; print(c["resolved"], c["ours_redundant"])'
}
rekey_b() {
  if [ "$PEER" = spigot ]; then sctl b rekey peer --ike >/dev/null; else swan b --rekey --ike gw >/dev/null; fi
}

ip netns exec "${NS}a" nft add table inet collide
ip netns exec "${NS}a" nft add chain inet collide out '{ type filter hook output priority 0; }'

sctl a initiate peer >/dev/null
until_ok 10 settled || { settled || true; fail "the tunnel did not come up"; }
log "ok: tunnel up ($PEER)"

# A paced stream through the tunnel for the whole test: 20 pings a second.
pings=$(( ROUNDS * 7 * 20 ))
ip netns exec "${NS}a" ping -i 0.05 -c "$pings" -W 2 -I "$(inner_host a)" "$(inner_host b)" >"$WORK/ping.log" 2>&1 &
pinger=$!

for round in $(seq "$ROUNDS"); do
  read -r ike_i ike_r child_in child_out <<<"$(ids)"
  # a's IKE out (UDP 500, and UDP 4500 behind the non-ESP marker: ESP keeps flowing), a's
  # rekey first, b's 0.8 s later.
  # a retransmits at 1 s (dropped) and 2.7-3.3 s; b at 1.7-1.9 s (its answer dropped) and from
  # 3.5 s (spigot; strongSwan from 4.8 s). Letting a's IKE out at ~2.2 s, a's retransmission
  # reaches b while b's rekey still waits, and b's retransmission gets a's answer after that.
  ip netns exec "${NS}a" nft add rule inet collide out udp dport 500 drop
  ip netns exec "${NS}a" nft add rule inet collide out udp dport 4500 @th,64,32 0 drop
  sctl a rekey peer --ike >/dev/null
  sleep 0.8
  rekey_b
  sleep 1.3
  ip netns exec "${NS}a" nft flush chain inet collide out
  until_ok 20 settled || { settled || true; fail "round $round: the sides did not settle on one IKE SA"; }
  read -r ike_i2 ike_r2 child_in2 child_out2 <<<"$(ids)"
  [ "$ike_i2 $ike_r2" != "$ike_i $ike_r" ] || fail "round $round: the IKE SA was not rekeyed"
  [ "$child_in2 $child_out2" = "$child_in $child_out" ] ||
    fail "round $round: the CHILD SA changed ($child_in $child_out -> $child_in2 $child_out2)"
  read -r resolved ours <<<"$(collisions a)"
  [ "$resolved" = "$round" ] || fail "round $round: spigot a resolved $resolved collisions"
  log "ok: round $round: IKE SA $ike_i2 $ike_r2 survived, CHILD SA $child_in2 kept (a: $ours of $resolved redundant)"
done

wait "$pinger" || true
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$WORK/ping.log")
got=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$WORK/ping.log")
[ -n "$sent" ] && [ "$sent" = "$got" ] || { cat "$WORK/ping.log"; fail "pings lost during the collisions: $got of $sent"; }
log "ok: $got of $sent pings through the tunnel"

read -r resolved a_ours <<<"$(collisions a)"
if [ "$PEER" = spigot ]; then
  read -r b_resolved b_ours <<<"$(collisions b)"
  log "ok: spigot b resolved $b_resolved by the nonces, its own SA redundant in $b_ours"
fi
log "ok: spigot a resolved $resolved collisions, its own SA redundant in $a_ours"
echo "PASS: simultaneous IKE rekeys against $PEER, $ROUNDS rounds"
