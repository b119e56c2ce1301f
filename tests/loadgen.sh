#!/usr/bin/env bash
# `spigot loadgen` from side a: 200 initiators at 100/s, first against a spigot responder on side
# b (with CHILD rekeys; as road warriors with --vips, since a %any connection gives each peer its
# own addresses and refuses another peer's with TS_UNACCEPTABLE), then against strongSwan's charon (kernel-libipsec, which fakes a NAT, so
# IKE moves to port 4500 with the non-ESP marker). Every initiator must be established with no
# failure, the responder must count them all while they are up, and the loadgen's DELETEs at the
# end must leave the responder empty.
# usage: loadgen.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16 PSK=loadgen-secret
N=${N:-200} RATE=${RATE:-100}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

# wait_for WANT TIMEOUT_S CMD...: until CMD prints WANT; prints the last answer on timeout.
wait_for() {
  local want=$1 deadline=$(( $(date +%s) + $2 )) got; shift 2
  while :; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "last: '$got'"; return 1; }
    sleep 0.3
  done
}
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# loadgen NAME DURATION [ARGS...]: runs the loadgen from side a in the background (LG = its pid).
loadgen() {
  local name=$1 duration=$2; shift 2
  ip netns exec "${NS}a" "$SPIGOT" loadgen --target 192.0.2.2 --psk "$PSK" --ike-sas "$N" \
    --rate "$RATE" --duration "$duration" --ike "$IKE" --esp "$ESP" --json "$@" \
    >"$WORK/$name.json" 2>"$WORK/loadgen-$name.log" &
  LG=$!
}
# check_report NAME: every initiator established, none failed, no DELETE left unanswered.
check_report() {
  local r="$WORK/$1.json"
  [ -s "$r" ] || fail "$1: no report"
  [ "$(json_field "$r" '["established"]')" = "$N" ] || { cat "$r"; fail "$1: not all $N established"; }
  [ "$(json_field "$r" '["failed"]')" = 0 ] || { cat "$r"; fail "$1: failures"; }
  [ "$(json_field "$r" '["deletes_unanswered"]')" = 0 ] || { cat "$r"; fail "$1: DELETEs unanswered"; }
  log "ok: $1: $N established, $(json_field "$r" '["establish_rate_per_second"]') /s," \
      "p99 $(json_field "$r" '["latency_ms"]["p99"]') ms, rekeys $(json_field "$r" '["rekeys_completed"]')"
}

netns_setup

# ---------------------------------------------------------------- against spigot
spigot_config b "$IKE" "$ESP" "$PSK"
sed -i -e 's/^remote_id = .*/remote_id = "%any"/' -e '/^remote_ts = /d' "$WORK/b.toml"
cat >>"$WORK/b.toml" <<TOML
pools = "rw"

[[pool]]
name = "rw"
addrs = "198.18.0.0/20"
TOML
spigot_start b
spigot_ike_sas() { sctl b stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ike_sas"])'; }

loadgen spigot 10 --child-rekey-time 4s --vips
wait_for "$N" 8 spigot_ike_sas || fail "spigot: the responder does not hold $N IKE SAs"
log "ok: spigot responder holds $N IKE SAs"
wait "$LG" || { cat "$WORK/spigot.json"; fail "spigot: loadgen exited non-zero"; }
check_report spigot
[ "$(json_field "$WORK/spigot.json" '["vips"]["distinct"]')" = "$N" ] || fail "spigot: not $N distinct virtual IPs"
rekeys=$(json_field "$WORK/spigot.json" '["rekeys_completed"]')
[ "$rekeys" -ge "$N" ] || fail "spigot: only $rekeys CHILD rekeys completed (4 s rekey time, 10 s run)"
wait_for 0 5 spigot_ike_sas || fail "spigot: IKE SAs left on the responder after the loadgen's DELETEs"
log "ok: spigot responder empty after the DELETEs"
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}" || true
PIDS=()

# ---------------------------------------------------------------- against strongSwan
# charon_start (lib.sh) knows one peer identity; this responder takes any identity with the PSK.
charon_any_responder b "$IKE" "$ESP" "$PSK"
swan_ike_sas() { swan b --stats | sed -n 's/^IKE_SAs: \([0-9]*\) total.*/\1/p'; }

loadgen strongswan 8
wait_for "$N" 8 swan_ike_sas || fail "strongSwan: charon does not hold $N IKE SAs"
established=$(swan b --list-sas | grep -c ESTABLISHED || true)
[ "$established" = "$N" ] || fail "strongSwan: $established IKE SAs ESTABLISHED, want $N"
natt=$(swan b --list-sas | grep -c "192.0.2.2\[4500\]" || true)
[ "$natt" = "$N" ] || fail "strongSwan: $natt of $N IKE SAs moved to port 4500 (NAT-T)"
log "ok: charon holds $N ESTABLISHED IKE SAs, all on port 4500"
wait "$LG" || { cat "$WORK/strongswan.json"; fail "strongSwan: loadgen exited non-zero"; }
check_report strongswan
wait_for 0 5 swan_ike_sas || fail "strongSwan: IKE SAs left on charon after the loadgen's DELETEs"
log "ok: charon empty after the DELETEs"
echo "PASS: loadgen establishes $N IKE + CHILD SAs against spigot and strongSwan"
