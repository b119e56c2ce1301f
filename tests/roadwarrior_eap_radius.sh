#!/usr/bin/env bash
# Issue 13: road warriors logging in with EAP-MSCHAPv2 checked by FreeRADIUS (RFC 3579 EAP
# pass-through). spigot (namespace b, 192.0.2.2, gateway certificate, pool rw 198.18.4.0/28) has
# remote_auth = "eap-radius" and two FreeRADIUS 3 servers (Debian's freeradius, started here in
# namespace b on loopback, users file written here): R1 127.0.0.1:18121, R2 127.0.0.1:18122,
# timeout 1 s, 1 retry. strongSwan 5.9.8 road warriors (eap-mschapv2):
#   peer1  alice: FreeRADIUS replies Framed-IP-Address 198.18.4.9 and Class -> that address,
#          not the pool's first; traffic both ways
#   peer2  bob: no Framed-IP-Address -> an address from the pool; traffic
#   peer3  alice with a wrong password -> Access-Reject -> AUTHENTICATION_FAILED, counted
#   R1 stopped: peer4 (carol) logs in through R2 after R1's retries (a failover, R1 marked
#          dead); the tunnels of peer1 and peer2 keep passing traffic
#   R2 stopped too: carol's next login fails cleanly (AUTHENTICATION_FAILED after every
#          server's retries), radius.timeouts says why and doctor names radius_unreachable;
#          peer1 and peer2 still pass traffic. alice's RADIUS Class shows in `spigot sas`.
# No password or EAP identity in spigot's log.
# Addresses: documentation ranges, 198.18.0.0/15 and loopback only.
# usage: roadwarrior_eap_radius.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PINGS=3
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

netns_hub_setup 4
for i in 1 2 3 4; do ip -n "${NS}p$i" addr del "198.19.$i.1/32" dev lo; done
ALICE_PW="alice's radius password" BOB_PW="bob-radius-42" CAROL_PW="carol:radius" WRONG_PW="not-alices-password"
RADIUS_SECRET="radius shared secret 7"
USERS="alice Cleartext-Password := \"$ALICE_PW\"
  Framed-IP-Address = 198.18.4.9,
  Class = \"gold-tier\"
bob Cleartext-Password := \"$BOB_PW\"
carol Cleartext-Password := \"$CAROL_PW\""
radius_start r1 "${NS}b" 127.0.0.1 18121 "$RADIUS_SECRET" 127.0.0.1 "$USERS"
radius_start r2 "${NS}b" 127.0.0.1 18122 "$RADIUS_SECRET" 127.0.0.1 "$USERS"
log "FreeRADIUS r1 and r2 listening on 127.0.0.1:18121 and :18122 in ${NS}b"

cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[radius]
servers = "127.0.0.1:18121, 127.0.0.1:18122"
secret = "$RADIUS_SECRET"
timeout = "1s"
retries = 1

[[pool]]
name = "rw"
addrs = "198.18.4.0/28"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b.example"
remote_id = "%any"
local_auth = "pubkey"
remote_auth = "eap-radius"
local_cert = "$D/gw.pem"
local_key = "$D/gw.key"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
spigot_start b

rw_eap_peer() {  # rw_eap_peer I EAP_ID PASSWORD
  charon_rw_gw_cert_peer "$1" "$IKE" "$ESP" "$D/root.pem" "auth = eap-mschapv2
      id = peer$1.example
      eap_id = $2" "eap-user { id = $2
    secret = \"$3\" }" "" "eap-identity eap-mschapv2"
}
rw_eap_peer 1 alice "$ALICE_PW"
rw_eap_peer 2 bob "$BOB_PW"
rw_eap_peer 3 alice "$WRONG_PW"
rw_eap_peer 4 carol "$CAROL_PW"

stats() { sctl b stats --json | python3 -c "import json,sys; s=json.load(sys.stdin); r=s['radius']; e=s['ike']['eap_logins']['radius']; print($1)"; }
vip_of() { ip -n "${NS}p$1" -4 addr show | sed -n 's/.*inet \(198\.18\.[0-9.]*\)\/.*/\1/p' | head -n1; }
ping_from() {  # ping_from I: PINGS pings from peer I's virtual IP to 203.0.113.1, all answered
  local vip
  vip=$(vip_of "$1")
  [ -n "$vip" ] || fail "peer$1 has no virtual IP"
  ip netns exec "${NS}p$1" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$vip" 203.0.113.1 >"$WORK/ping-p$1.txt" 2>&1 || true
  grep -q " $PINGS received" "$WORK/ping-p$1.txt" || { cat "$WORK/ping-p$1.txt"; fail "peer$1 ($vip): lost replies $2"; }
}

for i in 1 2; do
  swan "p$i" --initiate --child net --timeout 30 >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; tail -n 20 "$WORK/spigot-b.log"; tail -n 20 "$WORK/radius-r1.log"; fail "peer$i could not log in through RADIUS"; }
  grep -q "EAP-MS-CHAPv2 succeeded" "$WORK/charon-p$i.log" || fail "peer$i: charon did not see EAP-MSCHAPv2 succeed"
done
until_ok 5 sh -c "ip -n '${NS}p1' addr | grep -q ' 198.18.4.9/'" ||
  { ip -n "${NS}p1" addr; fail "alice did not get her Framed-IP-Address 198.18.4.9"; }
bob_vip=$(vip_of 2)
[ -n "$bob_vip" ] && [ "$bob_vip" != 198.18.4.9 ] || fail "bob's address ($bob_vip) is not from the pool"
grep -q "Login OK: \[alice" "$WORK/radius-r1.log" || { tail "$WORK/radius-r1.log"; fail "FreeRADIUS r1 did not log alice's login"; }
[ "$(stats 'e["success"]')" = 2 ] || fail "eap_logins.radius.success is not 2"
sctl b leases --json | grep -q '"eap:alice"' || fail "alice's lease is not under her EAP identity"
# FreeRADIUS's Class for alice ("gold-tier"), kept with her IKE SA.
sctl b sas --json | grep -q '"676f6c642d74696572"' || { sctl b sas --json; fail "alice's RADIUS Class is not in spigot sas"; }
ping_from 1 "(Framed-IP-Address)"
ping_from 2 "(pool address)"
log "ok: alice (Framed-IP-Address 198.18.4.9) and bob ($bob_vip from the pool) logged in through FreeRADIUS; $PINGS of $PINGS pings each"

if swan p3 --initiate --child net --timeout 15 >"$WORK/initiate-p3.out" 2>&1; then
  fail "peer3 logged in as alice with a wrong password"
fi
grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-p3.log" ||
  { tail -n 20 "$WORK/charon-p3.log"; fail "peer3 did not get AUTHENTICATION_FAILED"; }
[ "$(stats 'r["rejects"]')" -ge 1 ] || fail "radius.rejects did not count the Access-Reject"
[ "$(stats 'e["failure"]')" = 1 ] || fail "eap_logins.radius.failure is not 1"
log "ok: a wrong password is an Access-Reject, refused with AUTHENTICATION_FAILED and counted"

# R1 goes away: carol's login waits out R1's two tries (1 s each), then R2 answers.
radius_stop r1
started=$(date +%s.%N)
swan p4 --initiate --child net --timeout 30 >"$WORK/initiate-p4.out" 2>&1 ||
  { cat "$WORK/initiate-p4.out"; tail -n 20 "$WORK/spigot-b.log"; fail "carol could not log in through R2 with R1 down"; }
took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
[ "$(stats 'r["failovers"]')" -ge 1 ] || fail "radius.failovers did not count the move to R2"
[ "$(stats 'r["servers"][0]["dead"]')" = True ] || fail "R1 is not marked dead"
grep -q "Login OK: \[carol" "$WORK/radius-r2.log" || fail "FreeRADIUS r2 did not log carol's login"
ping_from 1 "after R1 stopped"
ping_from 2 "after R1 stopped"
ping_from 4 "(carol, through R2)"
log "ok: with R1 stopped, carol logged in through R2 in $took s (failovers $(stats 'r["failovers"]'), R1 dead); established tunnels unaffected"

# R2 goes away too: a new login fails cleanly once every server was tried.
radius_stop r2
swan p4 --terminate --ike gw --timeout 10 >/dev/null 2>&1 || true
before=$(stats 'r["timeouts"]')
if swan p4 --initiate --child net --timeout 30 >"$WORK/initiate-p4b.out" 2>&1; then
  fail "carol logged in with no RADIUS server running"
fi
grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-p4.log" ||
  { tail -n 20 "$WORK/charon-p4.log"; fail "carol did not get AUTHENTICATION_FAILED with every RADIUS server down"; }
[ "$(stats 'r["timeouts"]')" -gt "$before" ] || fail "radius.timeouts did not count the login no server answered"
grep -q "no RADIUS server answered" "$WORK/spigot-b.log" || fail "spigot's log does not say why carol's login failed"
ping_from 1 "with every RADIUS server down"
ping_from 2 "with every RADIUS server down"
sctl b doctor --json >"$WORK/doctor.json" || true
grep -q '"radius_unreachable"' "$WORK/doctor.json" || { cat "$WORK/doctor.json"; fail "doctor does not name radius_unreachable"; }
log "ok: with both servers down carol is refused (radius.timeouts $(stats 'r["timeouts"]')), peer1 and peer2 still pass traffic"

for secret in "$ALICE_PW" "$BOB_PW" "$CAROL_PW" "$WRONG_PW" "$RADIUS_SECRET" alice bob carol; do
  if grep -qF -- "$secret" "$WORK/spigot-b.log"; then fail "spigot's log names an EAP identity or a secret ($secret)"; fi
done
log "ok: no EAP identity, password or RADIUS secret in spigot's log"
sctl b stats --json | python3 -c "import json,sys; r=json.load(sys.stdin)['radius']; r.pop('servers'); print('radius:', json.dumps(r))"
echo "PASS: EAP-MSCHAPv2 road warriors through FreeRADIUS, Framed-IP-Address, reject, failover and dead servers ($(( $(date +%s) - T0 )) s)"
