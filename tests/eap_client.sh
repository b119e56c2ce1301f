#!/usr/bin/env bash
# Issue 13: spigot as the EAP-MSCHAPv2 client (local_auth = "eap-mschapv2", eap_id) of a
# strongSwan 5.9.8 responder (kernel-libipsec, the eap-mschapv2 and eap-identity plugins of
# libcharon-extauth-plugins, the attr plugin's pool 198.18.5.0/28). charon proves itself with a
# gateway certificate made with strongSwan's pki (spigot checks it against the root: remote_auth
# "pubkey"), then asks spigot for its EAP identity and runs MS-CHAPv2.
#   1. alice's right password: established, spigot checked charon's authenticator response and
#      both MSK AUTHs, gets a virtual IP, pings 203.0.113.1 (charon's side) through the tunnel;
#      ike.eap_logins.mschapv2.success is 1.
#   2. after a reload with a wrong password: charon refuses it (AUTHENTICATION_FAILED), spigot
#      counts it in auth_failures and eap_logins.mschapv2.failure and logs no password.
# usage: eap_client.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
TUN=speap0
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
[ -e /usr/lib/ipsec/plugins/libstrongswan-eap-mschapv2.so ] ||
  fail "strongSwan's eap-mschapv2 plugin is missing (scripts/install-deps.sh installs libcharon-extauth-plugins)"
T0=$(date +%s)

D=$(pki_dir)
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Example Root CA"
pki_key gw ecdsa 256
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth

netns_setup
ip -n "${NS}a" addr del 198.51.100.1/32 dev lo
ALICE_PW="alice's password, 2nd" WRONG_PW="not-the-password"
spigot_eap_config() {  # spigot_eap_config PASSWORD
  cat >"$WORK/a.toml" <<TOML
[global]
control_socket = "$WORK/a.sock"
listen = "192.0.2.1"
tun_name = "$TUN"

[[eap_user]]
id = "alice"
secret = "$1"

[[connection]]
name = "home"
local_addrs = "192.0.2.1"
remote_addrs = "192.0.2.2"
local_id = "rw.example"
remote_id = "gw-b.example"
local_auth = "eap-mschapv2"
eap_id = "alice"
remote_auth = "pubkey"
ca_certs = "$D/root.pem"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "0.0.0.0/0"
vips = "0.0.0.0"
remote_ts = "203.0.113.0/24"
TOML
}
spigot_eap_config "$ALICE_PW"

spigot_start a
charon_eap_responder b "$IKE" "$ESP" "$D/gw.pem" "$D/gw.key" 198.18.5.0/28 alice "$ALICE_PW" yes
stat() { sctl a stats --json | python3 -c "import json,sys; s=json.load(sys.stdin)['ike']; print($1)"; }

# ------------------------------------------------ 1. the right password
sctl a initiate home >/dev/null || fail "spigot could not initiate"
assigned() { grep -o 'home: virtual IP [0-9.]*/32 assigned' "$WORK/spigot-a.log" | tail -n 1 | awk '{print $4}'; }
has_vip() { [ -n "$(assigned)" ]; }
until_ok 15 has_vip || { tail -n 30 "$WORK/charon-b.log"; fail "spigot did not log in with EAP-MSCHAPv2 (no virtual IP)"; }
VIP=$(assigned) VIP_HOST=${VIP%/32}
grep -q "EAP-MS-CHAPv2 verification\|EAP method EAP_MSCHAPV2 succeeded" "$WORK/charon-b.log" ||
  { grep -i "eap" "$WORK/charon-b.log" | tail -n 5; fail "charon did not see the MS-CHAPv2 login succeed"; }
grep -q "authentication of 'rw.example' with EAP successful" "$WORK/charon-b.log" ||
  { grep "authentication of" "$WORK/charon-b.log"; fail "charon did not accept spigot's MSK AUTH"; }
[ "$(stat 's["eap_logins"]["mschapv2"]["success"]')" = 1 ] || fail "eap_logins.mschapv2.success is not 1"
ping_from_a() { ip netns exec "${NS}a" ping -c 3 -i 0.2 -W 2 203.0.113.1 >"$WORK/ping-a.log" 2>&1; }
until_ok 10 ping_from_a || fail "no replies through the EAP tunnel: $(cat "$WORK/ping-a.log")"
log "ok: spigot logged in to strongSwan as alice (EAP-MSCHAPv2), got $VIP, ping through the tunnel"

# ------------------------------------------------ 2. a wrong password
sctl a terminate home >/dev/null || true
until_ok 10 sh -c "[ \"\$('$SPIGOT' sas --json --socket '$WORK/a.sock' | grep -c ESTABLISHED)\" = 0 ]" || fail "the IKE SA did not go"
spigot_eap_config "$WRONG_PW"
sctl a reload >/dev/null || fail "reload with the new password failed"
before=$(stat 's["auth_failures"]')
sctl a initiate home >/dev/null || true
refused() { [ "$(stat 's["eap_logins"]["mschapv2"]["failure"]')" = 1 ]; }
until_ok 15 refused || { tail -n 20 "$WORK/spigot-a.log"; fail "the wrong password was not counted in eap_logins.mschapv2.failure"; }
[ "$(stat 's["auth_failures"]')" -gt "$before" ] || fail "the wrong password is not in auth_failures"
grep -q "AUTHENTICATION_FAILED\|EAP-Failure\|refused the MS-CHAPv2 login" "$WORK/spigot-a.log" ||
  { tail -n 20 "$WORK/spigot-a.log"; fail "spigot's log does not say the login was refused"; }
for secret in "$ALICE_PW" "$WRONG_PW"; do
  if grep -qF -- "$secret" "$WORK/spigot-a.log"; then fail "spigot's log holds a password"; fi
done
log "ok: a wrong password is refused by strongSwan and counted: $(grep "home: IKE SA .* gone" "$WORK/spigot-a.log" | tail -n 1)"
echo "PASS: spigot as EAP-MSCHAPv2 client of strongSwan, virtual IP, traffic; a wrong password refused ($(( $(date +%s) - T0 )) s)"
