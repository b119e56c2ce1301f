#!/usr/bin/env bash
# Issue 12: certificate authentication against strongSwan 5.9.8, certificates made by strongSwan's
# `pki` in the test: a root CA (RSA-2048), an intermediate CA (ECDSA P-256), spigot's gateway
# certificate (RSA-2048, subjectAltName gw-b.example, serverAuth) and strongSwan's (ECDSA P-256,
# DN "C=CH, O=Example, CN=gw-a.example"), both under the intermediate, which each side sends in
# a CERT payload; each side trusts only the root. spigot matches strongSwan by the DN pattern
# "C=CH, O=Example, CN=*" and checks revocation against the intermediate's CRL.
#   1. strongSwan initiates: both sides authenticate (RFC 7427 signatures, RSA one way, ECDSA
#      the other), with fragment_size 576 on both sides so that IKE_AUTH with its certificate
#      chain is fragmented both ways (RFC 7383); ping through the tunnel; then spigot initiates,
#      ping again.
#   2. Refusals, each with AUTHENTICATION_FAILED and spigot's cert_failures counted, spigot
#      still up: a revoked certificate (in the CRL), one from a CA spigot does not trust, and an
#      expired one. (An identity the certificate does not hold cannot be made with strongSwan,
#      which falls back to the subject DN: ike_sa_cert_test covers it.)
#   3. spigot's certificate is renewed on disk (a new ECDSA P-384 key) and `spigot reload` uses
#      it for the next IKE SA, without a restart: charon verifies spigot's RFC 7427 ECDSA
#      signature with SHA-384.
# usage: interop_certs.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
T0=$(date +%s)
D="$WORK/pki"  # pki_key, pki_self_ca and pki_issue (lib.sh) write there

# ------------------------------------------------ certificates, with strongSwan's pki
pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Example Root CA"
pki_key inter ecdsa 256
pki_issue inter root "C=CH, O=Example, CN=Example Intermediate CA" --ca
pki_key b rsa 2048
pki_issue b inter "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth
pki_key a ecdsa 256
pki_issue a inter "C=CH, O=Example, CN=gw-a.example" --san gw-a.example --flag clientAuth
pki_key revoked ecdsa 256
pki_issue revoked inter "C=CH, O=Example, CN=revoked.example" --san revoked.example
pki_key expired ecdsa 256
pki_issue expired inter "C=CH, O=Example, CN=expired.example" --san expired.example \
  --dateform "%Y-%m-%d" --not-before 2025-01-01 --not-after 2025-06-30
pki_key stranger-root ecdsa 256
pki_self_ca stranger-root "C=CH, O=Example, CN=Stranger CA"
pki_key stranger ecdsa 256
pki_issue stranger stranger-root "C=CH, O=Example, CN=gw-a.example" --san gw-a.example
pki_run --signcrl --cacert "$D/inter.pem" --cakey "$D/inter.key" --lifetime 30 \
  --cert "$D/revoked.pem" --reason key-compromise --outform pem >"$D/inter.crl"
cat "$D/b.pem" "$D/inter.pem" >"$D/b-chain.pem"
log "pki: root (RSA), intermediate (ECDSA), gw-b (RSA), gw-a (ECDSA), a revoked, an expired and a stranger's; CRL"

# ------------------------------------------------ spigot (side b)
netns_setup
cat >"$WORK/b.toml" <<TOML
[global]
control_socket = "$WORK/b.sock"
listen = "192.0.2.2"
fragment_size = 576

[[connection]]
name = "swan"
local_addrs = "192.0.2.2"
remote_addrs = "192.0.2.1"
local_id = "gw-b.example"
remote_id = "C=CH, O=Example, CN=*"
local_auth = "pubkey"
remote_auth = "pubkey"
local_cert = "$D/b-chain.pem"
local_key = "$D/b.key"
ca_certs = "$D/root.pem"
crl_files = "$D/inter.crl"
ike_proposals = "$IKE"
esp_proposals = "$ESP"
local_ts = "203.0.113.0/24"
remote_ts = "198.51.100.0/24"
TOML
spigot_start b

# ------------------------------------------------ strongSwan (side a)
# swan_config CERT KEY ID CA: side a's configuration, authenticating with CERT/KEY as ID and
# trusting CA for spigot's certificate (the intermediate is loaded so that charon sends it).
swan_config() {
  local cert=$1 keyf=$2 id=$3 ca=$4 dir="$WORK/charon-a"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 pkcs8 x509 pubkey constraints revocation socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  fragment_size = 576
  filelog { stderr { default = 1 ike = 2 cfg = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } revocation { enable_ocsp = no } }
}
CONF
  cat >"$dir/swanctl.conf" <<CONF
connections {
  gw {
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = $IKE
    local {
      auth = pubkey
      certs = $cert
      id = "$id"
    }
    remote {
      auth = pubkey
      id = gw-b.example
      cacerts = $ca
    }
    children {
      net {
        local_ts = 198.51.100.0/24
        remote_ts = 203.0.113.0/24
        esp_proposals = $ESP
      }
    }
  }
}
authorities {
  inter {
    cacert = $D/inter.pem
  }
}
CONF
  # swanctl loads private keys from the private/ folder beside the configuration file.
  rm -rf "$dir/private"
  mkdir -p "$dir/private"
  cp "$keyf" "$dir/private/"
}
swan_restart() {  # swan_restart CERT KEY ID CA
  if [ -n "${SWAN_PID:-}" ]; then kill -TERM "$SWAN_PID" 2>/dev/null || true; wait "$SWAN_PID" 2>/dev/null || true; fi
  rm -f "$WORK/charon-a/run/charon.vici"  # or charon_launch would take the old socket for the new charon's
  swan_config "$@"
  charon_launch a
  SWAN_PID=${PIDS[-1]}
}
cert_failures() { sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["cert_failures"])'; }
children() { sctl b sas --json | python3 -c 'import json,sys; print(sum(len(s["children"]) for s in json.load(sys.stdin)["ike_sas"] if s["state"] == "ESTABLISHED"))'; }
ping_through() { ip netns exec "${NS}a" ping -n -c 3 -i 0.2 -W 2 -I 198.51.100.1 203.0.113.1 >"$WORK/ping.txt" 2>&1; }

# ------------------------------------------------ 1. both roles
swan_restart "$D/a.pem" "$D/a.key" "C=CH, O=Example, CN=gw-a.example" "$D/root.pem"
swan a --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 ||
  { cat "$WORK/initiate.out"; fail "strongSwan could not establish with spigot's certificate"; }
grep -q "authentication of 'gw-b.example' with RSA_EMSA_PKCS1_SHA2_256 successful" "$WORK/charon-a.log" ||
  { grep -i "authentication of" "$WORK/charon-a.log"; fail "charon did not verify spigot's RSA signature (RFC 7427, SHA-256)"; }
grep -q "received end entity cert \"C=CH, O=Example, CN=gw-b.example\"" "$WORK/charon-a.log" ||
  fail "charon did not receive spigot's certificate"
grep -q "received issuer cert \"C=CH, O=Example, CN=Example Intermediate CA\"" "$WORK/charon-a.log" ||
  fail "charon did not receive the intermediate from spigot"
frag() { sctl b stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ike']['fragments']['$1'])"; }
grep -q "reassembled fragmented IKE message" "$WORK/charon-a.log" ||
  fail "charon did not receive spigot's IKE_AUTH in fragments (fragment_size 576)"
[ "$(frag reassembled)" -ge 1 ] && [ "$(frag messages_fragmented)" -ge 1 ] ||
  fail "spigot did not reassemble charon's fragments or fragment its own (fragment_size 576)"
log "ok: IKE_AUTH with certificate chains fragmented both ways: spigot sent $(frag sent) fragments, reassembled $(frag reassembled) messages"
ping_through || { cat "$WORK/ping.txt"; fail "no traffic through the certificate tunnel (strongSwan initiated)"; }
log "ok: strongSwan -> spigot: ECDSA and RSA certificates through the intermediate, RFC 7427 signatures, ping"
swan a --terminate --ike gw --timeout 10 >/dev/null 2>&1 || true
until_ok 5 sh -c "[ \"\$('$SPIGOT' sas --json --socket '$WORK/b.sock' | grep -c ESTABLISHED)\" = 0 ]" || fail "spigot kept the IKE SA after strongSwan's DELETE"

sctl b initiate swan >/dev/null
until_ok 10 sh -c "[ \"\$('$SPIGOT' sas --json --socket '$WORK/b.sock' | grep -c INSTALLED)\" -ge 1 ]" ||
  fail "spigot could not establish with strongSwan as initiator"
ping_through || { cat "$WORK/ping.txt"; fail "no traffic through the certificate tunnel (spigot initiated)"; }
grep -q "authentication of 'gw-b.example' with RSA_EMSA_PKCS1_SHA2_256 successful" "$WORK/charon-a.log" || fail "charon did not verify spigot as initiator"
log "ok: spigot -> strongSwan: established, ping"
[ "$(cert_failures)" = 0 ] || fail "spigot counted certificate failures on good certificates"
# Issue 17: the public-key work of both IKE_AUTHs ran on the IKE workers: as responder (the
# peer's chain and signature, our signature), as initiator our signature and the check of
# strongSwan's chain and signature in its response; none on the control thread.
auth() { sctl b stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ike']['auth_$1'])"; }
{ [ "$(auth offloaded)" -ge 3 ] && [ "$(auth inline)" = 0 ]; } ||
  fail "IKE_AUTH work: $(auth offloaded) on the workers, $(auth inline) inline (want >= 3 and 0)"
log "ok: IKE_AUTH public-key work on the IKE workers in both roles ($(auth offloaded) jobs, none inline)"

# ------------------------------------------------ 2. refusals
refused() {  # refused WHAT CERT KEY ID: strongSwan with this certificate is refused by spigot
  local what=$1 before
  before=$(cert_failures)
  swan a --terminate --ike gw --timeout 5 >/dev/null 2>&1 || true
  swan_restart "$2" "$3" "$4" "$D/root.pem"
  if swan a --initiate --child net --timeout 10 >"$WORK/initiate.out" 2>&1; then
    fail "$what: strongSwan was let in"
  fi
  grep -q "received AUTHENTICATION_FAILED notify error" "$WORK/charon-a.log" ||
    { tail -n 20 "$WORK/charon-a.log"; fail "$what: charon did not get AUTHENTICATION_FAILED"; }
  [ "$(cert_failures)" = $((before + 1)) ] || fail "$what: spigot's cert_failures did not count it"
  log "ok: $what refused with AUTHENTICATION_FAILED, counted: $(grep -o "AUTH from.*" "$WORK/spigot-b.log" | tail -n 1)"
}
refused "a revoked certificate" "$D/revoked.pem" "$D/revoked.key" "C=CH, O=Example, CN=revoked.example"
refused "a certificate from an untrusted CA" "$D/stranger.pem" "$D/stranger.key" "C=CH, O=Example, CN=gw-a.example"
refused "an expired certificate" "$D/expired.pem" "$D/expired.key" "C=CH, O=Example, CN=expired.example"
sctl b stats --json >/dev/null || fail "spigot is not answering after the refusals"

# ------------------------------------------------ 3. a renewed gateway certificate, no restart
# spigot's certificate is replaced on disk (a new key, ECDSA P-384 this time) and `spigot reload`
# reads it: the next IKE SA is authenticated with it.
pki_key b2 ecdsa 384
pki_issue b2 inter "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth
cat "$D/b2.pem" "$D/inter.pem" >"$D/b-chain.pem"
cp "$D/b2.key" "$D/b.key"
sctl b reload >/dev/null || fail "spigot reload with the renewed certificate failed"
swan_restart "$D/a.pem" "$D/a.key" "C=CH, O=Example, CN=gw-a.example" "$D/root.pem"
swan a --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 ||
  { cat "$WORK/initiate.out"; fail "strongSwan could not establish after spigot reloaded its certificate"; }
grep -q "authentication of 'gw-b.example' with ECDSA_WITH_SHA384_DER successful" "$WORK/charon-a.log" ||
  { grep "authentication of" "$WORK/charon-a.log"; fail "charon did not verify spigot's renewed (ECDSA P-384, SHA-384) certificate"; }
ping_through || fail "no traffic after the certificate was renewed"
log "ok: spigot reload picked up the renewed certificate (now ECDSA P-384, signed with SHA-384) without a restart"
echo "PASS: certificates with strongSwan, both roles, refusals counted ($(( $(date +%s) - T0 )) s)"
