#!/usr/bin/env bash
# spigot <-> strongSwan 5.9.8 (kernel-libipsec) in two network namespaces, for one proposal pair.
# Both roles; in each, a CHILD rekey and an IKE rekey started from each side, then a delete
# (from spigot in the first round, from charon in the second); both sides must agree on the
# SAs (SPIs and algorithms, checked against `swanctl --list-sas`) after every step. Finally a
# wrong PSK must fail cleanly on both sides, in both roles.
#
# usage: interop_strongswan.sh SPIGOT_BINARY IKE_PROPOSAL ESP_PROPOSAL EXPECT_IKE EXPECT_ESP
#   e.g. ... aes128gcm16-prfsha256-x25519 aes128gcm16 AES_GCM_16_128/PRF_HMAC_SHA2_256 AES_GCM_16_128
set -euo pipefail
SPIGOT=$1 IKE=$2 ESP=$3 EXP_IKE=$4 EXP_ESP=$5
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_start a
charon_start b "$IKE" "$ESP"

agree() {
  sctl a sas --json >"$WORK/s.json" && swan b --list-sas >"$WORK/c.txt" &&
    python3 "$HERE/agree.py" spigot-vs-charon "$WORK/s.json" "$WORK/c.txt" "$EXP_IKE" "$EXP_ESP"
}
none() {
  sctl a sas --json >"$WORK/s.json" && swan b --list-sas >"$WORK/c.txt" &&
    python3 "$HERE/agree.py" none "$WORK/s.json" "$WORK/c.txt"
}
spis() {  # "IKE_SPI_I CHILD_SPI_IN" as spigot sees them
  sctl a sas --json | python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["ike_sas"] if x["state"]=="ESTABLISHED"][0]; print(s["spi_i"], s["children"][0]["spi_in"])'
}
step() {  # step DESCRIPTION: both sides agree within 10 s
  until_ok 10 agree || { agree || true; fail "$1: sides disagree"; }
  log "ok: $1"
}
changed() {  # changed WHAT BEFORE: the SPI pair moved
  local now; now=$(spis)
  [ "$now" != "$2" ] || fail "$1 did not change the SPIs ($now)"
}
rekeys() {
  local before
  before=$(spis); sctl a rekey peer >/dev/null; step "CHILD rekey from spigot"; changed "CHILD rekey from spigot" "$before"
  before=$(spis); swan b --rekey --child net >/dev/null; step "CHILD rekey from charon"; changed "CHILD rekey from charon" "$before"
  before=$(spis); sctl a rekey peer --ike >/dev/null; step "IKE rekey from spigot"; changed "IKE rekey from spigot" "$before"
  before=$(spis); swan b --rekey --ike gw >/dev/null; step "IKE rekey from charon"; changed "IKE rekey from charon" "$before"
}

log "round 1: charon initiates ($IKE / $ESP)"
swan b --initiate --child net >/dev/null || fail "charon could not initiate"
step "charon -> spigot established"
cookies_checked a
rekeys
sctl a terminate peer >/dev/null
until_ok 10 none || fail "delete from spigot: SAs remain"
log "ok: delete from spigot"

log "round 2: spigot initiates"
sctl a initiate peer >/dev/null
step "spigot -> charon established"
rekeys
swan b --terminate --ike gw >/dev/null
until_ok 10 none || fail "delete from charon: SAs remain"
log "ok: delete from charon"

log "round 3: wrong PSK on spigot's side"
spigot_config a "$IKE" "$ESP" "not-the-secret"
sctl a reload >/dev/null
sctl a initiate peer >/dev/null
until_ok 10 grep -q "AUTHENTICATION_FAILED" "$WORK/spigot-a.log" || fail "spigot as initiator did not report AUTHENTICATION_FAILED"
until_ok 10 none || fail "wrong PSK (spigot initiating) left SAs behind"
swan b --initiate --child net >/dev/null 2>&1 && fail "charon established with a wrong PSK"
until_ok 10 grep -q "does not verify" "$WORK/spigot-a.log" || fail "spigot as responder did not reject the AUTH"
until_ok 10 none || fail "wrong PSK (charon initiating) left SAs behind"
log "ok: wrong PSK fails cleanly both ways"
echo "PASS: strongSwan interop $IKE / $ESP"
