#!/usr/bin/env bash
# CHILD rekeys in the middle of a paced UDP stream with sequence numbers must lose nothing
# (make-before-break, RFC 7296 2.8). One rekey started by each side, streams both ways.
# usage: rekey_flood.sh SPIGOT_BINARY PEER        PEER: spigot | strongswan
set -euo pipefail
SPIGOT=$1 PEER=$2
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
COUNT=${COUNT:-6000} RATE=${RATE:-1500}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_start a
if [ "$PEER" = spigot ]; then
  spigot_config b "$IKE" "$ESP"
  spigot_start b
else
  charon_start b "$IKE" "$ESP"
fi
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "no CHILD SA"
until_ok 10 ping_ok a || fail "tunnel does not pass traffic"
child_spi() { sctl a sas --json | python3 -c 'import json,sys; print([c["spi_in"] for s in json.load(sys.stdin)["ike_sas"] for c in s["children"]])'; }
rekey_b() { if [ "$PEER" = spigot ]; then sctl b rekey peer >/dev/null; else swan b --rekey --child net >/dev/null; fi; }

secs=$(( COUNT / RATE + 3 ))
for dir in ab ba; do
  from=${dir:0:1} to=${dir:1:1}
  ip netns exec "${NS}$to" python3 "$HERE/stream.py" udp-recv "$(inner_host "$to")" 7000 "$COUNT" "$secs" >"$WORK/recv-$dir.log" 2>&1 &
  receiver=$!
  listening "${NS}$to" udp "$(inner_host "$to")" 7000
  ip netns exec "${NS}$from" python3 "$HERE/stream.py" udp-send "$(inner_host "$to")" 7000 "$COUNT" "$RATE" &
  sender=$!
  before=$(child_spi)
  sleep 1; sctl a rekey peer >/dev/null
  sleep 1; rekey_b
  wait "$sender"
  wait "$receiver" || fail "stream $dir across two CHILD rekeys lost packets: $(cat "$WORK/recv-$dir.log")"
  after=$(child_spi)
  [ "$before" != "$after" ] || fail "the CHILD SA was not rekeyed ($before)"
  log "ok: $dir: $(cat "$WORK/recv-$dir.log") across rekeys $before -> $after"
done
log "side a: $(sctl a stats --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["rekeys"]; print("rekeys answered", r["answered"], "- outbound switched on the peer'"'"'s first packet", r["outbound_switched_on_traffic"])')"
echo "PASS: no loss across CHILD rekeys, spigot <-> $PEER"
