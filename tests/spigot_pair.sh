#!/usr/bin/env bash
# Two spigots in two network namespaces: establish, CHILD and IKE rekeys from each side,
# deletes from each side, and the SIGTERM shutdown that deletes SAs toward the peer.
# usage: spigot_pair.sh SPIGOT_BINARY IKE_PROPOSAL ESP_PROPOSAL
set -euo pipefail
SPIGOT=$1 IKE=$2 ESP=$3
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
spigot_start a
spigot_start b

agree() {
  sctl a sas --json >"$WORK/a.json" && sctl b sas --json >"$WORK/b.json" &&
    python3 "$HERE/agree.py" spigot-vs-spigot "$WORK/a.json" "$WORK/b.json"
}
empty() {
  for s in a b; do
    sctl "$s" sas --json | python3 -c 'import json,sys; sys.exit(1 if json.load(sys.stdin)["ike_sas"] else 0)' || return 1
  done
}
step() {
  until_ok 10 agree || { agree || true; fail "$1: sides disagree"; }
  log "ok: $1"
}
spis() {  # side a's "IKE_SPI_I CHILD_SPI_IN"
  sctl a sas --json | python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["ike_sas"] if x["state"]=="ESTABLISHED"][0]; print(s["spi_i"], s["children"][0]["spi_in"])'
}
# When each CHILD SA negotiation and CHILD rekey was asked for ($SECONDS): the check of the
# per-minute rates at the end counts those still inside its 60-second window.
NEGOTIATED_AT=() REKEYED_AT=()
rekey_step() {  # rekey_step SIDE [--ike]
  local before; before=$(spis)
  [ -n "${2:-}" ] || REKEYED_AT+=("$SECONDS")
  sctl "$1" rekey peer ${2:-} >/dev/null
  step "${2:+IKE}${2:-CHILD} rekey from $1"
  [ "$(spis)" != "$before" ] || fail "rekey from $1 ${2:-} did not change the SPIs"
}

for initiator in a b; do
  other=$([ $initiator = a ] && echo b || echo a)
  NEGOTIATED_AT+=("$SECONDS")
  sctl $initiator initiate peer >/dev/null
  step "$initiator initiates"
  cookies_checked $other
  for side in a b; do
    rekey_step $side
    rekey_step $side --ike
  done
  sctl $other terminate peer >/dev/null
  until_ok 10 empty || fail "delete from $other: SAs remain"
  log "ok: delete from $other"
done

# The rates in `spigot stats` saw the CHILD SA negotiations and CHILD rekeys above (one and two
# per round) — those asked for less than 57 s ago, still inside the rates' one-minute window
# (all of them unless the machine is slow).
within_window() {  # within_window TIMES... -> how many are less than 57 s old
  local n=0 now=$SECONDS t
  for t in "$@"; do [ $(( now - t )) -lt 57 ] && n=$(( n + 1 )); done
  echo "$n"
}
want_negs=$(within_window "${NEGOTIATED_AT[@]}") want_rekeys=$(within_window "${REKEYED_AT[@]}")
rates=$(sctl a stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["negotiations_per_minute"], s["rekeys_per_minute"])')
read -r negs rekeys <<<"$rates"
python3 -c "import sys; sys.exit(0 if float('$negs') >= $want_negs and float('$rekeys') >= $want_rekeys else 1)" ||
  fail "stats rates missed events: negotiations_per_minute $negs (want $want_negs), rekeys_per_minute $rekeys (want $want_rekeys)"
log "ok: rates negotiations_per_minute $negs (>= $want_negs), rekeys_per_minute $rekeys (>= $want_rekeys)"
log "ok: stats: negotiations_per_minute $negs, rekeys_per_minute $rekeys"

sctl a initiate peer >/dev/null
step "established again"
kill -TERM "${PIDS[0]}"
until_ok 10 sh -c "'$SPIGOT' sas --json --socket '$WORK/b.sock' | python3 -c 'import json,sys; sys.exit(1 if json.load(sys.stdin)[\"ike_sas\"] else 0)'" ||
  fail "SIGTERM on side a did not delete the SAs on side b"
wait "${PIDS[0]}" || fail "spigot exited non-zero after SIGTERM"
grep -q "deleted by peer" "$WORK/spigot-b.log" || fail "side b was not told by DELETE"
log "ok: SIGTERM deletes SAs toward the peer and exits 0"
echo "PASS: spigot <-> spigot $IKE / $ESP"
