#!/usr/bin/env bash
# Lifetimes drive rekeys on their own: CHILD SAs every ~3 s (less jitter) and the IKE SA every
# ~7 s, under a paced UDP stream that must lose nothing. (The rekey counts and times are checked
# with a fake clock in src/spigot/gateway/gateway_test.cc.)
# Then volume lifetimes (child_life_packets, child_life_bytes) do the same.
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
listening "${NS}b" udp 203.0.113.1 7002
ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-send 203.0.113.1 7002 12000 1000
wait "$receiver" || fail "lost packets across lifetime-driven rekeys: $(cat "$WORK/recv.log")"
started=$(( $(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rekeys"]["started"])') + $(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rekeys"]["started"])') ))
ike_after=$(sctl a sas --json | python3 -c 'import json,sys; print([s["spi_i"] for s in json.load(sys.stdin)["ike_sas"] if s["state"]=="ESTABLISHED"][0])')
log "$(cat "$WORK/recv.log"); scheduled CHILD rekeys started by the two sides: $started; IKE SA $ike_before -> $ike_after"
# How many rekeys the lifetimes start, and the IKE SA's rekey at ike_rekey_time, are timing
# logic: gateway_test checks them with the fake clock (TimeLifetimesRekeyChildAndIkeSasUnderTraffic).
# Here what needs real packets: that the stream lost nothing while at least one rekey happened.
[ "$started" -ge 1 ] || fail "no scheduled CHILD rekey in 12 s of 3 s lifetimes"

# Volume lifetimes: time lifetimes long; first side a rekeys its CHILD SAs every 2,000 packets
# (soft at 80-90 %), then side b every 200 kB. Applied by a reload, to the SAs installed after it.
for s in a b; do
  sed -i 's/^child_rekey_time = .*/child_rekey_time = "1h"/; s/^ike_rekey_time = .*/ike_rekey_time = "4h"/' "$WORK/$s.toml"
done
by_volume() { sctl "$1" stats --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["rekeys"]; print(r["by_volume"], r["volume_deletes"])'; }
# volume_phase SIDE: a 6,000-datagram stream b -> a; SIDE must have rekeyed at least twice.
volume_phase() {
  local side=$1 before after deletes
  read -r before _ <<<"$(by_volume "$side")"
  ip netns exec "${NS}a" python3 "$HERE/stream.py" udp-recv 198.51.100.1 7003 6000 10 >"$WORK/recv-ba.log" 2>&1 &
  local receiver=$!
  listening "${NS}a" udp 198.51.100.1 7003
  ip netns exec "${NS}b" python3 "$HERE/stream.py" udp-send 198.51.100.1 7003 6000 1000
  wait "$receiver" || fail "lost packets across volume-driven rekeys: $(cat "$WORK/recv-ba.log")"
  read -r after deletes <<<"$(by_volume "$side")"
  # (A hard-limit deletion, possible if a tick comes late, must not lose traffic either: the
  # rekey goes first. Only logged.)
  log "$(cat "$WORK/recv-ba.log"); side $side: $((after - before)) volume rekeys, $deletes volume deletes"
  [ $((after - before)) -ge 2 ] || fail "side $side: 6,000 packets gave $((after - before)) volume rekeys, want >= 2"
}
echo 'child_life_packets = 2000' >>"$WORK/a.toml"
sctl a reload >/dev/null
sctl b reload >/dev/null
sleep 4  # SAs installed under the old 3 s lifetimes rekey once more, under the new config
volume_phase a
sed -i '/^child_life_packets/d' "$WORK/a.toml"
echo 'child_life_bytes = 200000' >>"$WORK/b.toml"
sctl a reload >/dev/null
sctl b reload >/dev/null
sctl a rekey peer >/dev/null  # fresh SAs under the new limits
sleep 1
volume_phase b
echo "PASS: time and volume lifetimes drive CHILD and IKE rekeys without loss"
