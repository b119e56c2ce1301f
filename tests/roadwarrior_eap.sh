#!/usr/bin/env bash
# Issue 13: road warriors logging in with EAP-MSCHAPv2 (RFC 7296 2.16) against local users.
# spigot (namespace b, 192.0.2.2) proves itself with a gateway certificate (RSA-2048, SAN
# gw-b.example, serverAuth, made with strongSwan's pki) and runs EAP-MSCHAPv2 against its
# [[eap_user]] entries; the pool rw (198.18.4.0/28) hands out addresses. Three strongSwan 5.9.8
# road warriors (kernel-libipsec, the eap-mschapv2 plugin of libcharon-extauth-plugins,
# vips = 0.0.0.0):
#   peer1  alice, right password        -> virtual IP, ping through its own SA
#   peer2  bob, right password          -> virtual IP, ping
#   peer3  alice's name, wrong password -> AUTHENTICATION_FAILED (and EAP-Failure), counted in
#          spigot's ike.auth_failures and ike.eap_logins.mschapv2.failure; the password and
#          the EAP identity appear nowhere in spigot's log.
#   then peer3 keeps guessing: after 3 free failures it is backed off (refused before any
#          password check, ike.eap_logins.throttled), `spigot doctor` names password_guessing,
#          and alice from peer1's address is not locked out (logs in again).
# Then both logged-in peers pass traffic; the leases are listed by EAP user (eap:alice, eap:bob),
# not by the IKE identities.
# Addresses: documentation ranges and 198.18.0.0/15 only.
# usage: roadwarrior_eap.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PINGS=4
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
[ -e /usr/lib/ipsec/plugins/libstrongswan-eap-mschapv2.so ] ||
  fail "strongSwan's eap-mschapv2 plugin is missing (scripts/install-deps.sh installs libcharon-extauth-plugins)"
T0=$(date +%s)

D=$(pki_dir)
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Example Root CA"
pki_key gw rsa 2048
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth

netns_hub_setup 3
for i in 1 2 3; do ip -n "${NS}p$i" addr del "198.19.$i.1/32" dev lo; done
ALICE_PW="alice's 1st password" BOB_PW="bob-pass-42" WRONG_PW="not-alices-password"
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.4.0/28"

[[eap_user]]
id = "alice"
secret = "$ALICE_PW"

[[eap_user]]
id = "bob"
secret = "$BOB_PW"

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
spigot_start b

# rw_eap_peer I EAP_ID PASSWORD: peer I's charon, logging in as EAP_ID.
rw_eap_peer() {
  charon_rw_gw_cert_peer "$1" "$IKE" "$ESP" "$D/root.pem" "auth = eap-mschapv2
      id = peer$1.example
      eap_id = $2" "eap-user { id = $2
    secret = \"$3\" }" "" "eap-identity eap-mschapv2"
}
rw_eap_peer 1 alice "$ALICE_PW"
rw_eap_peer 2 bob "$BOB_PW"
rw_eap_peer 3 alice "$WRONG_PW"
for i in 1 2; do
  swan "p$i" --initiate --child net --timeout 30 >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; tail -n 20 "$WORK/spigot-b.log"; fail "peer$i could not log in with EAP-MSCHAPv2"; }
  grep -q "EAP-MS-CHAPv2 succeeded" "$WORK/charon-p$i.log" || fail "peer$i: charon did not see EAP-MSCHAPv2 succeed"
  grep -q "authentication of 'gw-b.example' with RSA_EMSA_PKCS1_SHA2_256 successful" "$WORK/charon-p$i.log" ||
    fail "peer$i did not verify spigot's certificate signature"
done
log "ok: alice and bob logged in with EAP-MSCHAPv2 (spigot authenticated by its certificate, both AUTHs with the MSK)"

stat() { sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike']; print($1)"; }
before=$(stat 's["auth_failures"]')
if swan p3 --initiate --child net --timeout 15 >"$WORK/initiate-p3.out" 2>&1; then
  fail "peer3 logged in as alice with a wrong password"
fi
grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-p3.log" ||
  { tail -n 20 "$WORK/charon-p3.log"; fail "peer3 did not get AUTHENTICATION_FAILED"; }
[ "$(stat 's["auth_failures"]')" = $((before + 1)) ] || fail "the wrong password is not in ike.auth_failures"
[ "$(stat 's["eap_logins"]["mschapv2"]["failure"]')" = 1 ] || fail "the wrong password is not in eap_logins.mschapv2.failure"
[ "$(stat 's["eap_logins"]["mschapv2"]["success"]')" = 2 ] || fail "eap_logins.mschapv2.success is not 2"
log "ok: a wrong password is refused with AUTHENTICATION_FAILED and counted: $(grep "EAP-MSCHAPv2 with" "$WORK/spigot-b.log" | tail -n 1)"
for secret in "$ALICE_PW" "$BOB_PW" "$WRONG_PW" "alice" "bob"; do
  if grep -qF -- "$secret" "$WORK/spigot-b.log"; then fail "spigot's log names an EAP identity or password ($secret)"; fi
done
log "ok: no EAP identity or password in spigot's log"

# Brute force: peer3 keeps guessing alice's password. After 3 free failures the 4th puts
# (alice, 192.0.2.13) in a 1 s back-off; an attempt within it is refused before any password
# check (ike.eap_logins.throttled), doctor names password_guessing, and alice from peer1's
# address still logs in.
# (Back-offs double: 1, 2, 4, 8 s; however slow the machine, an attempt lands inside one.)
throttled=0
for attempt in 2 3 4 5 6 7 8 9; do
  swan p3 --initiate --child net --timeout 10 >"$WORK/initiate-p3.out" 2>&1 && fail "peer3 got in on attempt $attempt"
  throttled=$(stat 's["eap_logins"]["throttled"]')
  [ "$throttled" -ge 1 ] && break
done
[ "$throttled" -ge 1 ] || { grep "EAP" "$WORK/spigot-b.log" | tail -n 8; fail "no attempt was throttled after 9 wrong passwords"; }
grep -q "EAP login from 192.0.2.13 refused unchecked" "$WORK/spigot-b.log" || fail "the back-off refusal is not logged with the address"
sctl b doctor --json >"$WORK/doctor.json" || true
grep -q '"password_guessing"' "$WORK/doctor.json" || { cat "$WORK/doctor.json"; fail "doctor does not name password_guessing"; }
swan p1 --terminate --ike gw --timeout 10 >/dev/null 2>&1 || true
swan p1 --initiate --child net --timeout 30 >"$WORK/initiate-p1.out" 2>&1 ||
  { cat "$WORK/initiate-p1.out"; fail "alice from peer1's address was locked out by peer3's guessing"; }
log "ok: guessing throttled ($throttled attempts refused unchecked), doctor: password_guessing; alice still logs in from 192.0.2.11"

sctl b leases --json >"$WORK/leases.json"
python3 - "$WORK/leases.json" >"$WORK/leases.txt" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["pools"]:
    for l in p["leases"]:
        if l.get("online", True):
            print(l["address"].split("/")[0], l["identity"], sep="\t")
PY
[ "$(wc -l <"$WORK/leases.txt")" = 2 ] || { cat "$WORK/leases.txt"; fail "want 2 leases (alice, bob)"; }
replies() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$1" | head -n1; }
for i in 1 2; do
  user=$([ "$i" = 1 ] && echo alice || echo bob)
  vip=$(awk -F'\t' -v id="eap:$user" '$2 == id { print $1 }' "$WORK/leases.txt")
  [ -n "$vip" ] || { cat "$WORK/leases.txt"; fail "no lease for peer$i under its EAP user eap:$user"; }
  until_ok 5 sh -c "ip -n '${NS}p$i' addr | grep -q ' $vip/'" || fail "charon of peer$i did not install $vip"
  ip netns exec "${NS}p$i" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$vip" 203.0.113.1 >"$WORK/ping-p$i.txt" 2>&1 || true
  [ "$(replies "$WORK/ping-p$i.txt")" = "$PINGS" ] || { cat "$WORK/ping-p$i.txt"; fail "peer$i ($vip): lost replies"; }
  log "ok: peer$i ($vip): $PINGS of $PINGS replies"
done

# Uniqueness by EAP user (unique = "replace", the default): alice logs in again from peer3 (its
# IKE identity peer3.example differs): spigot replaces peer1's IKE SA, counts it, and alice keeps
# her address.
ALICE_VIP=$(awk -F'\t' '$2 == "eap:alice" { print $1 }' "$WORK/leases.txt")
replaced() { stat 's["unique_replaced"]'; }
before=$(replaced)
sed -i "s/secret = \"$WRONG_PW\"/secret = \"$ALICE_PW\"/" "$WORK/charon-p3/swanctl.conf"
swan p3 --load-creds --file "$WORK/charon-p3/swanctl.conf" >/dev/null 2>&1 || fail "peer3 could not load alice's password"
sleep 9  # peer3's back-off (from the guessing above) runs out
swan p3 --initiate --child net --timeout 30 >"$WORK/initiate-p3.out" 2>&1 ||
  { cat "$WORK/initiate-p3.out"; fail "alice could not log in from peer3"; }
until_ok 5 sh -c "[ \"\$('$SPIGOT' stats --json --socket '$WORK/b.sock' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"ike\"][\"unique_replaced\"])')\" -gt $before ]" ||
  fail "alice's second login did not replace her first IKE SA (unique by EAP user)"
until_ok 5 sh -c "ip -n '${NS}p3' addr | grep -q ' $ALICE_VIP/'" || fail "alice did not get her address $ALICE_VIP back on peer3"
log "ok: alice from peer3 replaced her IKE SA from peer1 (unique_replaced $(replaced)) and kept $ALICE_VIP"
echo "PASS: EAP-MSCHAPv2 road warriors against local users, wrong password refused and counted ($(( $(date +%s) - T0 )) s)"
