#!/usr/bin/env bash
# A strongSwan peer that crashes (kill -9) and comes back: its new IKE SA carries INITIAL_CONTACT
# (RFC 7296 2.4) and spigot drops the IKE and CHILD SAs of the peer's previous life at once —
# not after DPD or a lifetime — with their SPIs; traffic flows on the new SAs.
# usage: reconnect_initial_contact.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
command -v swanctl >/dev/null || fail "strongSwan is not installed (scripts/install-deps.sh installs it)"

netns_setup
spigot_config a "$IKE" "$ESP"
# Several IKE SAs per identity allowed: only INITIAL_CONTACT may remove the old ones here.
echo 'unique = "no"' >>"$WORK/a.toml"
spigot_start a
charon_start b "$IKE" "$ESP"

established() {  # the spi_i of spigot's established IKE SAs, one per line
  sctl a sas --json | python3 -c 'import json,sys; [print(s["spi_i"]) for s in json.load(sys.stdin)["ike_sas"] if s["state"] == "ESTABLISHED"]'
}
stat() { sctl a stats --json >"$WORK/stats.json" && field "$WORK/stats.json" "$1"; }

swan b --initiate --child net >/dev/null || fail "charon could not initiate"
until_ok 10 ping_ok b || fail "no traffic through the first tunnel"
first=$(established)
[ "$(echo "$first" | wc -l)" = 1 ] || fail "expected one IKE SA, got: $first"
log "ok: first life of the peer: IKE SA $first"

# The peer loses its state: no DELETE reaches spigot.
kill -KILL "${PIDS[1]}"
wait "${PIDS[1]}" 2>/dev/null || true
rm -f "$WORK/charon-b/run/charon.pid" "$WORK/charon-b/run/charon.vici"
[ "$(established)" = "$first" ] || fail "spigot lost the old IKE SA before the peer came back"
charon_launch b
swan b --initiate --child net >/dev/null || fail "the restarted charon could not initiate"
grep -q "INIT_CONTACT" "$WORK/charon-b.log" || fail "charon sent no INITIAL_CONTACT"

only_new() { local now; now=$(established); [ -n "$now" ] && [ "$now" != "$first" ] && [ "$(echo "$now" | wc -l)" = 1 ]; }
until_ok 10 only_new || fail "the old IKE SA was not replaced: $(established | tr '\n' ' ')"
[ "$(stat ike.unique_replaced)" = 1 ] || fail "unique_replaced is $(stat ike.unique_replaced), want 1"
[ "$(stat spi_in_use)" = 1 ] || fail "the old CHILD SA still holds an SPI: spi_in_use $(stat spi_in_use)"
[ "$(stat active_sas)" = 1 ] || fail "active_sas $(stat active_sas), want 1"
until_ok 10 ping_ok b || fail "no traffic through the new tunnel"
log "ok: second life: IKE SA $(established), old SAs gone at once, SPIs back in the pool"
echo "PASS: a restarted strongSwan peer's INITIAL_CONTACT replaces its old SAs"
