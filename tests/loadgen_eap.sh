#!/usr/bin/env bash
# `spigot loadgen --eap-id --eap-secret --ca --vips` (issue 13): N road warriors (IKE identities
# loadgen-1..N, each asking for a virtual IP from the pool 198.18.16.0/20) log in with
# EAP-MSCHAPv2 as users user1..userN (one password) against a spigot responder, then against a
# strongSwan 5.9.8 responder (16 threads, eap-identity and eap-mschapv2 plugins), each proving
# itself with a gateway certificate (ECDSA P-256, SAN gw-b.example, made with strongSwan's pki)
# that the loadgen checks against the root. Every login must succeed, with none left after the
# DELETEs; spigot counts N EAP successes. Then a wrong password: every login refused, counted
# by spigot. Prints both establish rates (a functional check, not a benchmark: see
# bench/storm.sh for rates under load).
# usage: loadgen_eap.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
N=${N:-100} RATE=${RATE:-100} PW="loadgen's password"
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
[ -e /usr/lib/ipsec/plugins/libstrongswan-eap-mschapv2.so ] ||
  fail "strongSwan's eap-mschapv2 plugin is missing (scripts/install-deps.sh installs libcharon-extauth-plugins)"
D=$(pki_dir)
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Loadgen Root CA"
pki_key gw ecdsa 256
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth

json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
login() {  # login NAME PASSWORD [HOLD_S]: N EAP logins from side a, in the background (LG), up HOLD_S (2)
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --eap-id 'user%d' --eap-secret "$2" --ca "$D/root.pem" \
    --ike-sas "$N" --rate "$RATE" --duration "${3:-2}" --ike "$IKE" --esp "$ESP" --vips --json \
    >"$WORK/$1.json" 2>"$WORK/loadgen-$1.log" &
  LG=$!
}
check_report() {
  local r="$WORK/$1.json"
  [ -s "$r" ] || { cat "$WORK/loadgen-$1.log"; fail "$1: no report"; }
  [ "$(json_field "$r" '["established"]')" = "$N" ] || { cat "$r"; tail -n 20 "$WORK/loadgen-$1.log"; fail "$1: not all $N established"; }
  [ "$(json_field "$r" '["failed"]')" = 0 ] || { cat "$r"; fail "$1: failures"; }
  [ "$(json_field "$r" '["deletes_unanswered"]')" = 0 ] || { cat "$r"; fail "$1: DELETEs unanswered"; }
  log "ok: $1: $N EAP-MSCHAPv2 logins, $(json_field "$r" '["establish_rate_per_second"]') /s," \
      "p99 $(json_field "$r" '["latency_ms"]["p99"]') ms"
}

netns_setup
# ---------------------------------------------------------------- against spigot
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.16.0/20"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b.example"
remote_id = "%any"
local_auth = "pubkey"
remote_auth = "eap-mschapv2"
local_cert = "$D/gw.pem"
local_key = "$D/gw.key"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
for u in $(seq "$N"); do printf '\n[[eap_user]]\nid = "user%d"\nsecret = "%s"\n' "$u" "$PW"; done >>"$WORK/b.toml"
spigot_start b
stat() { sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike']; print($1)"; }
# Held 6 s: the leases are read while all N are up (on a loaded machine one read takes ~1 s).
login spigot "$PW" 6
eap_leases() {  # online leases keyed by an EAP user (eap:userN)
  sctl b leases --json | python3 -c 'import json,sys; print(sum(l["identity"].startswith("eap:user") for p in json.load(sys.stdin)["pools"] for l in p["leases"]))'
}
n=0
for _ in $(seq 50); do n=$(eap_leases); [ "$n" = "$N" ] && break; sleep 0.2; done
[ "$n" = "$N" ] || { sctl b leases --json | head -c 600; fail "spigot: $n leases keyed by EAP users, want $N"; }
wait "$LG" || { cat "$WORK/spigot.json"; fail "spigot: loadgen exited non-zero"; }
check_report spigot
[ "$(stat 's["eap_logins"]["mschapv2"]["success"]')" = "$N" ] || fail "spigot did not count $N EAP successes"
login spigot-wrong "not $PW"
wait "$LG" || true
[ "$(json_field "$WORK/spigot-wrong.json" '["established"]')" = 0 ] || fail "a wrong password got in"
[ "$(stat 's["eap_logins"]["mschapv2"]["failure"]')" -ge 1 ] || fail "spigot did not count the wrong passwords"
log "ok: spigot: wrong password refused, $(stat 's["eap_logins"]["mschapv2"]["failure"]') failures"
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}" || true
PIDS=()

# ---------------------------------------------------------------- against strongSwan
charon_eap_responder b "$IKE" "$ESP" "$D/gw.pem" "$D/gw.key" 198.18.16.0/20 "" "$PW" no 16
login strongswan "$PW"
wait "$LG" || { cat "$WORK/strongswan.json"; fail "strongSwan: loadgen exited non-zero"; }
check_report strongswan
echo "PASS: $N EAP-MSCHAPv2 logins each against spigot ($(json_field "$WORK/spigot.json" '["establish_rate_per_second"]')/s) and strongSwan ($(json_field "$WORK/strongswan.json" '["establish_rate_per_second"]')/s), none left; wrong password refused"
