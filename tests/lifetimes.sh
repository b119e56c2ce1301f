#!/usr/bin/env bash
# Lifetimes drive rekeys on their own: CHILD SAs every ~3 s (less jitter) and the IKE SA every
# ~7 s, under a paced UDP stream that must lose nothing; the rekey scheduler's counters move.
# usage: lifetimes.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16-x25519
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
for s in a b; do
  spigot_config $s "$IKE" "$ESP"
  printf 'child_rekey_time = "3s"\nike_rekey_time = "7s"\n' >>"$WORK/$s.toml"
done
spigot_start a
spigot_start b
sctl a initiate peer >/dev/null
installed() { sctl a sas --json | grep -q INSTALLED; }
until_ok 10 installed || fail "no CHILD SA"
ike_before=$(sctl a sas --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike_sas"][0]["spi_i"])')
ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-recv 203.0.113.1 7002 12000 16 >"$WORK/recv.log" 2>&1 &
receiver=$!
sleep 0.3
ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 7002 12000 1000
wait "$receiver" || fail "lost packets across lifetime-driven rekeys: $(cat "$WORK/recv.log")"
started=$(( $(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rekeys"]["started"])') + $(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rekeys"]["started"])') ))
ike_after=$(sctl a sas --json | python3 -c 'import json,sys; print([s["spi_i"] for s in json.load(sys.stdin)["ike_sas"] if s["state"]=="ESTABLISHED"][0])')
log "$(cat "$WORK/recv.log"); scheduled CHILD rekeys started by the two sides: $started; IKE SA $ike_before -> $ike_after"
[ "$started" -ge 3 ] || fail "expected at least 3 scheduled CHILD rekeys in 12 s, got $started"
[ "$ike_after" != "$ike_before" ] || fail "the IKE SA was not rekeyed at ike_rekey_time"
echo "PASS: lifetimes drive CHILD and IKE rekeys without loss"
