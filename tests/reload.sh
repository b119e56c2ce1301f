#!/usr/bin/env bash
# `spigot reload`: an added connection appears, a removed one is terminated (DELETE to the
# peer), changed limits apply — all without a restart and without disturbing the SAs that stay.
# usage: reload.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
IKE=aes128gcm16-prfsha256-x25519 ESP=aes128gcm16
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

netns_setup
spigot_config a "$IKE" "$ESP"
spigot_config b "$IKE" "$ESP"
# Side b has a second connection "extra" (an IPv6 inner network) that side a lacks at first.
cat >>"$WORK/b.toml" <<'TOML'

[[connection]]
name = "extra"
local_addrs = "192.0.2.2"
remote_addrs = "192.0.2.1"
local_id = "gw-b-extra"
remote_id = "gw-a-extra"
psk = "another secret"
local_ts = "2001:db8:b::/64"
remote_ts = "2001:db8:a::/64"
TOML
spigot_start a
spigot_start b
sctl a initiate peer >/dev/null
ikespis() { sctl "$1" sas --json | python3 -c 'import json,sys; print(sorted((s["name"], s["spi_i"], [c["spi_in"] for c in s["children"]]) for s in json.load(sys.stdin)["ike_sas"] if s["state"]=="ESTABLISHED"))'; }
one() { [ "$(ikespis a | grep -o "'peer'" | wc -l)" = 1 ]; }
until_ok 10 one || fail "peer not established"
before=$(ikespis a)

# 1. Add "extra" on side a and raise max_spi.
cat >>"$WORK/a.toml" <<'TOML'

[[connection]]
name = "extra"
local_addrs = "192.0.2.1"
remote_addrs = "192.0.2.2"
local_id = "gw-a-extra"
remote_id = "gw-b-extra"
psk = "another secret"
local_ts = "2001:db8:a::/64"
remote_ts = "2001:db8:b::/64"
TOML
sed -i 's/^cookie_threshold = .*/&\nmax_spi = 2000000/' "$WORK/a.toml"
sctl a reload >/dev/null || fail "reload refused a valid config"
[ "$(sctl a stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["max_spi"])')" = 2000000 ] || fail "max_spi not applied"
sctl a initiate extra >/dev/null || fail "the added connection is unknown"
two() { ikespis a | grep -q "'extra'"; }
until_ok 10 two || fail "the added connection did not come up"
INNER=6 ping_ok a || fail "no traffic through the added connection"
[ "$(ikespis a | grep -o "('peer'[^)]*)")" = "$(echo "$before" | grep -o "('peer'[^)]*)")" ] || fail "reload disturbed the established SAs: $before -> $(ikespis a)"
log "ok: added connection up, max_spi raised, established SAs untouched"

# 2. A bad config is refused with file, key and reason, and changes nothing.
cp "$WORK/a.toml" "$WORK/a.good"
echo 'max_spi = -5' >>"$WORK/a.toml"
out=$(sctl a reload 2>&1) && fail "reload accepted a bad config"
echo "$out" | grep -q "a.toml" || fail "error does not name the file: $out"
log "ok: bad config refused: $out"
cp "$WORK/a.good" "$WORK/a.toml"

# 3. Remove "peer": its IKE SA is deleted toward side b; "extra" stays.
python3 - "$WORK/a.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = text.split("[[connection]]")
keep = [b for b in blocks[1:] if 'name = "peer"' not in b]
open(sys.argv[1], "w").write(blocks[0] + "".join("[[connection]]" + b for b in keep))
PY
sctl a reload >/dev/null
gone() { ! ikespis b | grep -q "'peer'"; }
until_ok 10 gone || fail "the removed connection's SAs survive on the peer"
ikespis a | grep -q "'extra'" || fail "reload removed the wrong connection"
INNER=6 ping_ok a || fail "the remaining connection stopped passing traffic"
log "ok: removed connection terminated on both sides, the other kept working"
echo "PASS: reload"
