#!/usr/bin/env bash
# `spigot loadgen --cert --key --ca` (issue 12): N initiators log in with one client certificate
# (ECDSA P-256, made with strongSwan's pki under a root CA) under its subject DN, against a
# spigot responder and then a strongSwan responder, each with a gateway certificate (RSA-2048,
# SAN gw-b.example, serverAuth) that the loadgen checks against the root; both responders allow
# duplicate identities (spigot unique = "no", strongSwan unique = never). Every initiator must
# be established with no failure, the responder must hold N IKE SAs of that one identity, and
# none may remain after the loadgen's DELETEs. Then the loadgen refuses, before sending
# anything, a key that is not the certificate's and an --id the certificate does not hold.
# usage: loadgen_certs.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
N=${N:-100} RATE=${RATE:-100}
CLIENT_DN="C=CH, O=Example, CN=loadgen-client"
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
D="$WORK/pki"

pki_key root rsa 2048
pki_self_ca root "C=CH, O=Example, CN=Loadgen Root CA"
pki_key gw rsa 2048
pki_issue gw root "C=CH, O=Example, CN=gw-b.example" --san gw-b.example --flag serverAuth
pki_key client ecdsa 256
pki_issue client root "$CLIENT_DN" --flag clientAuth
log "pki: root CA (RSA), gateway gw-b.example (RSA), client \"$CLIENT_DN\" (ECDSA)"

json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
# login NAME: N certificate logins from side a; checks the report.
login() {
  local name=$1 r="$WORK/$1.json"
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --cert "$D/client.pem" --key "$D/client.key" \
    --ca "$D/root.pem" --ike-sas "$N" --rate "$RATE" --duration 3 --ike "$IKE" --esp "$ESP" --json \
    >"$r" 2>"$WORK/loadgen-$name.log" &
  LG=$!
}
check_report() {
  local r="$WORK/$1.json"
  [ -s "$r" ] || { cat "$WORK/loadgen-$1.log"; fail "$1: no report"; }
  [ "$(json_field "$r" '["established"]')" = "$N" ] || { cat "$r"; fail "$1: not all $N established"; }
  [ "$(json_field "$r" '["failed"]')" = 0 ] || { cat "$r"; fail "$1: failures"; }
  [ "$(json_field "$r" '["deletes_unanswered"]')" = 0 ] || { cat "$r"; fail "$1: DELETEs unanswered"; }
  log "ok: $1: $N certificate logins, $(json_field "$r" '["establish_rate_per_second"]') /s," \
      "p99 $(json_field "$r" '["latency_ms"]["p99"]') ms"
}

netns_setup

# ---------------------------------------------------------------- against spigot
spigot_config b "$IKE" "$ESP"
spigot_cert_auth b "$D/gw.pem" "$D/gw.key" "$D/root.pem" gw-b.example "$CLIENT_DN"
spigot_start b
established() {  # spigot's ESTABLISHED IKE SAs; its connection takes exactly CLIENT_DN
  sctl b sas --json | python3 -c 'import json,sys; print(sum(s["state"] == "ESTABLISHED" for s in json.load(sys.stdin)["ike_sas"]))'
}
login spigot
n=0
for _ in $(seq 50); do n=$(established); [ "$n" = "$N" ] && break; sleep 0.2; done
[ "$n" = "$N" ] || fail "spigot: $n IKE SAs ESTABLISHED, want $N (unique = \"no\")"
log "ok: spigot holds $N IKE SAs, all of \"$CLIENT_DN\""
wait "$LG" || { cat "$WORK/spigot.json"; fail "spigot: loadgen exited non-zero"; }
check_report spigot
[ "$(sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike"]["cert_failures"])')" = 0 ] ||
  fail "spigot counted certificate failures"
[ "$(established)" = 0 ] || fail "spigot: IKE SAs left after the loadgen's DELETEs"
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}" || true
PIDS=()

# ---------------------------------------------------------------- against strongSwan
charon_cert_responder b "$IKE" "$ESP" "$D/gw.pem" "$D/gw.key" "$D/root.pem" gw-b.example "$CLIENT_DN"
swan_ike_sas() { swan b --stats | sed -n 's/^IKE_SAs: \([0-9]*\) total.*/\1/p'; }
login strongswan
n=0
for _ in $(seq 50); do n=$(swan_ike_sas); [ "$n" = "$N" ] && break; sleep 0.2; done
[ "$n" = "$N" ] || fail "strongSwan: charon holds $n IKE SAs, want $N (unique = never)"
ids=$(swan b --list-sas | grep -cF "remote '$CLIENT_DN'" || true)
[ "$ids" = "$N" ] || fail "strongSwan: $ids of $N IKE SAs are of \"$CLIENT_DN\""
log "ok: charon holds $N IKE SAs, all of \"$CLIENT_DN\""
wait "$LG" || { cat "$WORK/strongswan.json"; fail "strongSwan: loadgen exited non-zero"; }
check_report strongswan
[ "$(swan_ike_sas)" = 0 ] || fail "strongSwan: IKE SAs left on charon after the loadgen's DELETEs"

# ---------------------------------------------------------------- refusals before any packet
refused() {  # refused WANT ARGS...: the loadgen exits 2 with WANT in its message
  local want=$1 rc=0; shift
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --ike-sas 1 "$@" >/dev/null 2>"$WORK/refused.log" || rc=$?
  [ "$rc" = 2 ] && grep -qF "$want" "$WORK/refused.log" || { cat "$WORK/refused.log"; fail "loadgen did not refuse: want '$want'"; }
}
refused "does not belong to the certificate" --cert "$D/client.pem" --key "$D/gw.key" --ca "$D/root.pem"
refused "is not in the certificate" --cert "$D/client.pem" --key "$D/client.key" --ca "$D/root.pem" --id someone.example
log "ok: a foreign key and an identity not in the certificate refused before sending"
echo "PASS: $N certificate logins under one identity against spigot and strongSwan"
