#!/usr/bin/env bash
# Issue 13: road warriors logging in with EAP-TLS (RFC 5216; RFC 7296 2.16) and their own user
# certificates. spigot (namespace b, 192.0.2.2) proves itself in IKE with its gateway certificate
# (RSA-2048, SAN gw-b.example, serverAuth, made with strongSwan's pki), runs the TLS server of
# EAP-TLS with the same certificate (OpenSSL's TLS 1.2), and checks each user's certificate
# against ca_certs (the root). The pool rw (198.18.5.0/28) hands out addresses. Three strongSwan
# 5.9.8 road warriors (kernel-libipsec, the eap-tls plugin of libcharon-extra-plugins, vips =
# 0.0.0.0, local { auth = eap-tls }):
#   peer1  alice: ECDSA P-256 certificate under the root, SAN alice@example.org, EAP identity
#          alice@example.org                           -> virtual IP, ping through its own SA
#   peer2  bob: RSA-2048 certificate under the root, EAP identity its DN "C=CH, O=Example, CN=bob"
#          (the subject holds it)                      -> virtual IP, ping
#   peer3  mallory: a certificate from another CA        -> AUTHENTICATION_FAILED on the client,
#          counted in spigot's ike.auth_failures and ike.eap_logins.tls.failure
# Each gets its own address, listed under its EAP identity in `spigot leases`; both logged-in
# peers pass traffic (echo request in, reply out: ESP both ways). No EAP identity in spigot's log.
# Addresses: documentation ranges and 198.18.0.0/15 only.
# usage: roadwarrior_eap_tls.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PINGS=4
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
[ -e /usr/lib/ipsec/plugins/libstrongswan-eap-tls.so ] ||
  fail "strongSwan's eap-tls plugin is missing (scripts/install-deps.sh installs libcharon-extra-plugins)"
T0=$(date +%s)

# ------------------------------------------------ certificates, with strongSwan's pki
D=$(pki_dir)
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Example Root CA"
pki_key gw rsa 2048
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth
pki_key alice ecdsa 256
pki_issue alice root "C=CH, O=Example, CN=alice" --san alice@example.org --flag clientAuth
pki_key bob rsa 2048
pki_issue bob root "C=CH, O=Example, CN=bob" --san bob@example.org --flag clientAuth
pki_key other ecdsa 256
pki_self_ca other "C=CH, O=Other, CN=Other Root CA"
pki_key mallory ecdsa 256
pki_issue mallory other "C=CH, O=Other, CN=mallory" --san mallory@example.org --flag clientAuth
log "pki: root (RSA), gw-b.example (RSA), alice (ECDSA), bob (RSA); mallory (ECDSA) under another CA"

# ------------------------------------------------ spigot, the EAP-TLS server
netns_hub_setup 3
for i in 1 2 3; do ip -n "${NS}p$i" addr del "198.19.$i.1/32" dev lo; done
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.5.0/28"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b.example"
remote_id = "%any"
local_auth = "pubkey"
remote_auth = "eap-tls"
local_cert = "$D/gw.pem"
local_key = "$D/gw.key"
ca_certs = "$D/root.pem"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
spigot_start b

# ------------------------------------------------ strongSwan road warriors
# rw_tls_peer I NAME EAP_ID: peer I's charon, proving itself in EAP-TLS with NAME's certificate
# and key as EAP_ID, trusting the root for gw-b.example (IKE and TLS).
rw_tls_peer() {
  mkdir -p "$WORK/charon-p$1/private"
  cp "$D/$2.key" "$WORK/charon-p$1/private/"
  charon_rw_gw_cert_peer "$1" "$IKE" "$ESP" "$D/root.pem" "auth = eap-tls
      id = peer$1.example
      certs = $D/$2.pem
      eap_id = \"$3\"" "" "" "eap-identity eap-tls"
}
ALICE=alice@example.org BOB="C=CH, O=Example, CN=bob"
rw_tls_peer 1 alice "$ALICE"
rw_tls_peer 2 bob "$BOB"
rw_tls_peer 3 mallory mallory@example.org
for i in 1 2; do
  swan "p$i" --initiate --child net --timeout 30 >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; tail -n 20 "$WORK/spigot-b.log"; fail "peer$i could not log in with EAP-TLS"; }
  grep -q "EAP method EAP_TLS succeeded, MSK established" "$WORK/charon-p$i.log" ||
    fail "peer$i: charon did not see EAP-TLS succeed with an MSK"
  grep -q "authentication of 'gw-b.example' with RSA_EMSA_PKCS1_SHA2_256 successful" "$WORK/charon-p$i.log" ||
    fail "peer$i did not verify spigot's certificate signature"
done
log "ok: alice and bob logged in with EAP-TLS (spigot authenticated by its certificate, both AUTHs with the MSK)"

stat() { sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike']; print($1)"; }
before=$(stat 's["auth_failures"]')
if swan p3 --initiate --child net --timeout 15 >"$WORK/initiate-p3.out" 2>&1; then
  fail "peer3 logged in with a certificate from another CA"
fi
grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-p3.log" ||
  { tail -n 30 "$WORK/charon-p3.log"; fail "peer3 did not get AUTHENTICATION_FAILED"; }
[ "$(stat 's["auth_failures"]')" = $((before + 1)) ] || fail "the refused certificate is not in ike.auth_failures"
[ "$(stat 's["eap_logins"]["tls"]["failure"]')" = 1 ] || fail "the refused certificate is not in eap_logins.tls.failure"
[ "$(stat 's["eap_logins"]["tls"]["success"]')" = 2 ] || fail "eap_logins.tls.success is not 2"
# Issue 17: the TLS handshake flights (two per login: the ClientHello, the client's certificate
# flight) ran on the IKE workers, none on the control thread (a worker is always free here).
offloaded=$(stat 's["eap_offloaded"]') inline=$(stat 's["eap_inline"]')
{ [ "$offloaded" -ge 5 ] && [ "$inline" = 0 ]; } ||
  fail "EAP-TLS handshake steps: $offloaded on the workers, $inline inline (want >= 5 and 0)"
log "ok: $offloaded EAP-TLS handshake steps ran on the IKE workers, none inline"
log "ok: a certificate from another CA is refused with AUTHENTICATION_FAILED and counted: $(grep "EAP (tls) with" "$WORK/spigot-b.log" | tail -n 1)"
for name in "$ALICE" "CN=bob" "alice" "mallory"; do
  if grep -qF -- "$name" "$WORK/spigot-b.log"; then fail "spigot's log names an EAP identity ($name)"; fi
done
log "ok: no EAP identity in spigot's log"

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
  user=$([ "$i" = 1 ] && echo "$ALICE" || echo "$BOB")
  vip=$(awk -F'\t' -v id="eap:$user" '$2 == id { print $1 }' "$WORK/leases.txt")
  [ -n "$vip" ] || { cat "$WORK/leases.txt"; fail "no lease for peer$i under its EAP identity eap:$user"; }
  until_ok 5 sh -c "ip -n '${NS}p$i' addr | grep -q ' $vip/'" || fail "charon of peer$i did not install $vip"
  ip netns exec "${NS}p$i" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$vip" 203.0.113.1 >"$WORK/ping-p$i.txt" 2>&1 || true
  [ "$(replies "$WORK/ping-p$i.txt")" = "$PINGS" ] || { cat "$WORK/ping-p$i.txt"; fail "peer$i ($vip): lost replies"; }
  log "ok: peer$i ($vip): $PINGS of $PINGS replies"
done
echo "PASS: EAP-TLS road warriors with user certificates, another CA's certificate refused and counted ($(( $(date +%s) - T0 )) s)"
