#!/usr/bin/env bash
# Issue 12: road warriors with their own certificates on one %any spigot connection. spigot
# (namespace b, 192.0.2.2, gateway certificate RSA-2048 with subjectAltName gw-b.example and
# serverAuth) takes any peer whose certificate chains to the root and whose DN matches the
# pattern "C=CH, O=Example, CN=*", and gives each a virtual IP from the pool rw
# (198.18.3.0/28). Seven strongSwan 5.9.8 road warriors (kernel-libipsec, vips = 0.0.0.0), each
# signing its AUTH differently, so that every signature method spigot verifies and every one
# it chooses to sign with meets the real thing:
#   peer1  RSA-2048, RFC 7427 with RSASSA-PSS (charon rsa_pss = yes)        -> method 14, PSS
#   peer2  ECDSA P-256, classic (charon signature_authentication = no)      -> method 9
#   peer3  RSA-2048, classic (signature_authentication = no)               -> method 1
#   peer4  ECDSA P-256, RFC 7427, but its DN is O=Other: not matched by the pattern, refused
#          with AUTHENTICATION_FAILED, counted in spigot's auth_failures.
#   peer5  ECDSA P-384, classic                                            -> method 10
#   peer6  ECDSA P-521, classic                                            -> method 11
#   peer7  ECDSA P-384, RFC 7427 (ECDSA with SHA-384)                      -> method 14
# spigot has rsa_pss = true: it signs to peer1 with method 14 and RSASSA-PSS; peers 2 and 3
# announce no SIGNATURE_HASH_ALGORITHMS, so spigot signs to them (and to 5 and 6) with the
# classic RSA method (1). Each of peers 1-3 and 5-7 gets a distinct address from the pool,
# listed under its DN in `spigot leases`, and pings 203.0.113.1 (spigot's side) from it, every
# reply back.
# Addresses: documentation ranges and 198.18.0.0/15 only (the hub helper's 198.19.I.1 on the
# peers' lo are removed).
# usage: roadwarrior_certs.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PINGS=4
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"
T0=$(date +%s)

# ------------------------------------------------ certificates, with strongSwan's pki
D=$(pki_dir)
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Example Root CA"
pki_key gw rsa 2048
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth
peer_dn() { if [ "$1" = 4 ]; then echo "C=CH, O=Other, CN=peer4"; else echo "C=CH, O=Example, CN=peer$1"; fi; }
PEERS="1 2 3 4 5 6 7" GOOD="1 2 3 5 6 7"
for i in $PEERS; do
  case $i in 1 | 3) pki_key "peer$i" rsa 2048 ;; 5 | 7) pki_key "peer$i" ecdsa 384 ;; 6) pki_key "peer$i" ecdsa 521 ;;
    *) pki_key "peer$i" ecdsa 256 ;; esac
  pki_issue "peer$i" root "$(peer_dn "$i")" --flag clientAuth
done
log "pki: root (RSA), gw-b.example (RSA), peers 1 and 3 (RSA), 2 and 4 (ECDSA P-256), 5 and 7 (P-384), 6 (P-521)"

# ------------------------------------------------ spigot, the concentrator
netns_hub_setup 7
for i in $PEERS; do ip -n "${NS}p$i" addr del "198.19.$i.1/32" dev lo; done
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"

[[pool]]
name = "rw"
addrs = "198.18.3.0/28"

[[connection]]
name = "rw"
local_addrs = "192.0.2.2"
remote_addrs = "%any"
local_id = "gw-b.example"
remote_id = "C=CH, O=Example, CN=*"
local_auth = "pubkey"
remote_auth = "pubkey"
local_cert = "$D/gw.pem"
local_key = "$D/gw.key"
ca_certs = "$D/root.pem"
rsa_pss = true
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
pools = "rw"
TOML
spigot_start b

# ------------------------------------------------ strongSwan road warriors
# rw_cert_peer I OPTIONS: peer I's charon (identity its DN, its certificate and key, trusting the
# root for gw-b.example), OPTIONS added to the charon section of strongswan.conf.
rw_cert_peer() {
  mkdir -p "$WORK/charon-p$1/private"
  cp "$D/peer$1.key" "$WORK/charon-p$1/private/"
  charon_rw_gw_cert_peer "$1" "$IKE" "$ESP" "$D/root.pem" "auth = pubkey
      certs = $D/peer$1.pem
      id = \"$(peer_dn "$1")\"" "" "$2"
}
rw_cert_peer 1 "rsa_pss = yes"
rw_cert_peer 2 "signature_authentication = no"
rw_cert_peer 3 "signature_authentication = no"
rw_cert_peer 4 ""
rw_cert_peer 5 "signature_authentication = no"
rw_cert_peer 6 "signature_authentication = no"
rw_cert_peer 7 ""
for i in $GOOD; do
  swan "p$i" --initiate --child net --timeout 30 >"$WORK/initiate-p$i.out" 2>&1 ||
    { cat "$WORK/initiate-p$i.out"; tail -n 20 "$WORK/spigot-b.log"; fail "peer$i could not log in with its certificate"; }
done
log "ok: peers 1-3 and 5-7 logged in with their certificates"

# How each side signed, from the peers' logs (charon names the scheme it signed or verified).
expect_log() {  # expect_log I PATTERN WHAT
  grep -q "$2" "$WORK/charon-p$1.log" ||
    { grep "authentication of" "$WORK/charon-p$1.log"; fail "peer$1: $3"; }
}
expect_log 1 "authentication of 'C=CH, O=Example, CN=peer1' (myself) with RSA_EMSA_PSS_SHA2_256_SALT_32 successful" \
  "did not sign with RSASSA-PSS (so spigot did not verify PSS)"
expect_log 1 "authentication of 'gw-b.example' with RSA_EMSA_PSS_SHA2_256_SALT_32 successful" \
  "did not verify spigot's RFC 7427 RSASSA-PSS signature"
expect_log 2 "authentication of 'C=CH, O=Example, CN=peer2' (myself) with ECDSA-256 signature successful" \
  "did not sign with the classic ECDSA method (9)"
expect_log 2 "authentication of 'gw-b.example' with RSA signature successful" \
  "did not get spigot's classic RSA signature (method 1)"
expect_log 3 "authentication of 'C=CH, O=Example, CN=peer3' (myself) with RSA signature successful" \
  "did not sign with the classic RSA method (1)"
expect_log 3 "authentication of 'gw-b.example' with RSA signature successful" \
  "did not get spigot's classic RSA signature (method 1)"
expect_log 5 "authentication of 'C=CH, O=Example, CN=peer5' (myself) with ECDSA-384 signature successful" \
  "did not sign with the classic ECDSA P-384 method (10)"
expect_log 5 "authentication of 'gw-b.example' with RSA signature successful" \
  "did not get spigot's classic RSA signature (method 1)"
expect_log 6 "authentication of 'C=CH, O=Example, CN=peer6' (myself) with ECDSA-521 signature successful" \
  "did not sign with the classic ECDSA P-521 method (11)"
expect_log 7 "authentication of 'C=CH, O=Example, CN=peer7' (myself) with ECDSA_WITH_SHA384_DER successful" \
  "did not sign with an RFC 7427 ECDSA P-384 signature"
log "ok: spigot verified RSASSA-PSS (14), ECDSA P-256 (9), P-384 (10), P-521 (11), ECDSA P-384 with SHA-384 (14) and RSA (1) signatures, and signed with 14 (PSS) and 1"

# peer4: a good certificate under the root, but a DN the pattern does not match.
auth_failures() { sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["auth_failures"])'; }
before=$(auth_failures)
if swan p4 --initiate --child net --timeout 10 >"$WORK/initiate-p4.out" 2>&1; then
  fail "peer4 (O=Other) was let in through the pattern C=CH, O=Example, CN=*"
fi
grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-p4.log" ||
  { tail -n 20 "$WORK/charon-p4.log"; fail "peer4 did not get AUTHENTICATION_FAILED"; }
[ "$(auth_failures)" -gt "$before" ] || fail "spigot did not count peer4's refusal in auth_failures"
log "ok: peer4 (C=CH, O=Other) refused with AUTHENTICATION_FAILED and counted: $(grep "O=Other" "$WORK/spigot-b.log" | tail -n 1)"

# Leases by DN, distinct, installed on the peers' sides; pings through each peer's own SA.
sctl b leases --json >"$WORK/leases.json"
python3 - "$WORK/leases.json" >"$WORK/leases.txt" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["pools"]:
    for l in p["leases"]:
        if l.get("online", True):
            print(l["address"].split("/")[0], l["identity"], sep="\t")
PY
log "leases: $(tr '\t\n' '=;' <"$WORK/leases.txt")"
[ "$(wc -l <"$WORK/leases.txt")" = 6 ] || fail "want 6 leases, one per peer 1-3 and 5-7"
[ "$(cut -f1 "$WORK/leases.txt" | sort -u | wc -l)" = 6 ] || fail "the leases are not distinct"
replies() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$1" | head -n1; }
for i in $GOOD; do
  vip=$(awk -F'\t' -v id="$(peer_dn "$i")" '$2 == id { print $1 }' "$WORK/leases.txt")
  [ -n "$vip" ] || fail "no lease listed under peer$i's DN $(peer_dn "$i")"
  until_ok 5 sh -c "ip -n '${NS}p$i' addr | grep -q ' $vip/'" || fail "charon of peer$i did not install $vip"
  ip netns exec "${NS}p$i" ping -n -c "$PINGS" -i 0.2 -W 3 -I "$vip" 203.0.113.1 >"$WORK/ping-p$i.txt" 2>&1 || true
  [ "$(replies "$WORK/ping-p$i.txt")" = "$PINGS" ] ||
    { cat "$WORK/ping-p$i.txt"; fail "peer$i: ping from $vip through its SA lost replies"; }
  log "ok: peer$i ($vip): $PINGS of $PINGS replies"
done
cf=$(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["cert_failures"])')
[ "$cf" = 0 ] || fail "spigot counted $cf certificate failures (peer4's certificate is good; only its DN is refused)"
echo "PASS: road warriors with their own certificates on one %any connection, DN pattern, pool, traffic ($(( $(date +%s) - T0 )) s)"
