#!/usr/bin/env bash
# Issue 12, item 3: native-client proposals. spigot (side a) answers with its DEFAULT proposals
# (no ike_proposals / esp_proposals in its config) a strongSwan 5.9.8 initiator (side b) that
# offers, one connection at a time, what the native IKEv2 clients send:
#   1. aes256-sha256-modp2048 (IKE) with aes256-sha1 (ESP): Windows with DH2048, macOS/iOS
#   2. aes256-sha1-ecp384 (IKE) with aes128-sha256 (ESP)
# each established on both sides with the expected algorithms and pings through the tunnel;
#   3. aes256-sha1-modp1024 only (Windows' default group): refused with NO_PROPOSAL_CHOSEN,
#      counted in ike.weak_proposals_refused.modp1024, logged naming modp1024;
#   4. the same after `allow_weak = "modp1024"` and a reload: established, pings.
#
# usage: native_client_proposals.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup

# spigot_defaults_config [ALLOW_WEAK]: side a, default proposals, optionally allow_weak.
spigot_defaults_config() {
  local allow=${1:-} lts rts
  read -r lts rts <<<"$(inner_nets a)"
  cat >"$WORK/a.toml" <<TOML
[global]
control_socket = "$WORK/a.sock"
listen = "192.0.2.1"

[[connection]]
name = "peer"
local_addrs = "192.0.2.1"
remote_addrs = "192.0.2.2"
local_id = "gw-a"
remote_id = "gw-b"
psk = "interop-secret"
local_ts = "$lts"
remote_ts = "$rts"
$([ -n "$allow" ] && echo "allow_weak = \"$allow\"")
TOML
}

# charon on side b: one connection per offer, all to spigot with the same identities.
charon_offers() {
  local dir="$WORK/charon-b" lts rts conns="" name ike esp
  read -r lts rts <<<"$(inner_nets b)"
  mkdir -p "$dir/run"
  cat >"$dir/strongswan.conf" <<CONF
charon {
  load = random nonce aes sha1 sha2 hmac gcm chapoly curve25519 openssl kdf pem pkcs1 x509 pubkey socket-default vici kernel-libipsec kernel-netlink updown
  install_routes = yes
  retransmit_tries = 1
  filelog { stderr { default = 1 ike = 2 } }
  plugins { kernel-libipsec { allow_peer_ts = yes } }
}
CONF
  for offer in "modp2048|aes256-sha256-modp2048|aes256-sha1" "ecp384|aes256-sha1-ecp384|aes128-sha256" \
               "modp1024|aes256-sha1-modp1024|aes256-sha1"; do
    IFS='|' read -r name ike esp <<<"$offer"
    conns+="
  $name {
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = $ike
    local {
      auth = psk
      id = gw-b
    }
    remote {
      auth = psk
      id = gw-a
    }
    children {
      net_$name {
        local_ts = $lts
        remote_ts = $rts
        esp_proposals = $esp
      }
    }
  }"
  done
  cat >"$dir/swanctl.conf" <<CONF
connections {$conns
}
secrets {
  ike-1 {
    id-1 = gw-a
    id-2 = gw-b
    secret = interop-secret
  }
}
CONF
  charon_launch b
}

# established NAME IKE_ALGS ESP_ALGS: spigot shows one established IKE SA with these algorithms
# and a CHILD SA with those; charon agrees on the IKE proposal.
established() {
  sctl a sas --json >"$WORK/sas.json" || return 1
  python3 - "$WORK/sas.json" "$2" "$3" <<'PY' || return 1
import json, sys
sas = [s for s in json.load(open(sys.argv[1]))["ike_sas"] if s["state"] == "ESTABLISHED"]
assert len(sas) == 1, sas
assert sas[0]["algorithms"] == sys.argv[2], sas[0]["algorithms"]
assert [c["algorithms"] for c in sas[0]["children"]] == [sys.argv[3]], sas[0]["children"]
PY
  # charon names the same key exchange group and ESP integrity (e.g. MODP_2048, HMAC_SHA1_96).
  swan b --list-sas --ike "$1" >"$WORK/swan-sas.txt" || return 1
  grep -q ESTABLISHED "$WORK/swan-sas.txt" && grep -q "${2##*/}" "$WORK/swan-sas.txt" &&
    grep -q "${3##*/}" "$WORK/swan-sas.txt"
}

weak_refused() { sctl a stats --json >"$WORK/stats.json" && field "$WORK/stats.json" ike.weak_proposals_refused.modp1024; }

spigot_defaults_config
spigot_start a
charon_offers

for case in "modp2048|AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048|AES_CBC_256/HMAC_SHA1_96" \
            "ecp384|AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/ECP_384|AES_CBC_128/HMAC_SHA2_256_128"; do
  IFS='|' read -r name ike esp <<<"$case"
  swan b --initiate --child "net_$name" >"$WORK/init-$name.log" 2>&1 || fail "charon could not initiate $name"
  until_ok 5 established "$name" "$ike" "$esp" || { established "$name" "$ike" "$esp" || true; fail "$name: not established as $ike / $esp"; }
  ping_ok b || fail "$name: no traffic through the tunnel"
  ping_ok a || fail "$name: no traffic through the tunnel (from spigot's side)"
  log "ok: $name established ($ike, $esp), pings both ways"
  swan b --terminate --ike "$name" >/dev/null 2>&1 || fail "charon could not terminate $name"
  until_ok 5 sh -c "! '$SPIGOT' sas --socket '$WORK/a.sock' | grep -q ESTABLISHED" || fail "$name: SA left behind"
done

[ "$(weak_refused)" = 0 ] || fail "weak refusals counted before any weak offer"
swan b --initiate --child net_modp1024 >"$WORK/init-weak.log" 2>&1 && fail "charon established a MODP-1024-only IKE SA"
grep -q "NO_PROPOSAL_CHOSEN" "$WORK/init-weak.log" "$WORK/charon-b.log" || fail "charon did not get NO_PROPOSAL_CHOSEN"
until_ok 5 grep -q "weak transform(s) refused: modp1024" "$WORK/spigot-a.log" || fail "spigot did not log the weak transform"
[ "$(weak_refused)" = 1 ] || fail "ike.weak_proposals_refused.modp1024 is $(weak_refused), want 1"
log "ok: MODP-1024-only offer refused with NO_PROPOSAL_CHOSEN, logged and counted"

spigot_defaults_config modp1024
sctl a reload >/dev/null || fail "reload with allow_weak failed"
swan b --initiate --child net_modp1024 >"$WORK/init-weak2.log" 2>&1 || fail "charon could not initiate modp1024 with allow_weak"
until_ok 5 established modp1024 AES_CBC_256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024 AES_CBC_256/HMAC_SHA1_96 ||
  fail "modp1024 with allow_weak: not established"
ping_ok b || fail "modp1024 with allow_weak: no traffic"
[ "$(weak_refused)" = 1 ] || fail "an allowed weak proposal was counted as refused"
log "ok: with allow_weak = \"modp1024\" the same offer is accepted, pings"
echo "PASS: native-client proposals"
