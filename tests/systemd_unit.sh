#!/usr/bin/env bash
# The shipped unit dist/systemd/spigot.service (issue 15, item 2): `systemd-analyze verify`
# accepts it without a word about it (verify exits 0 on keys it ignores, so its output is read
# too), and it keeps the settings spigot's contract with systemd depends on. Prints the
# exposure score of `systemd-analyze security`. No namespaces, no daemon: a second or two.
# usage: systemd_unit.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$(realpath "$1")
UNIT=$(cd "$(dirname "$0")/.." && pwd)/dist/systemd/spigot.service
WORK=$(mktemp -d /tmp/spigot-unit.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null || fail "systemd-analyze not installed (package systemd)"
# The installed path /usr/sbin/spigot is this build's binary here: verify checks it is executable.
sed "s#/usr/sbin/spigot#$SPIGOT#g" "$UNIT" >"$WORK/spigot.service"
out=$(systemd-analyze verify --man=no "$WORK/spigot.service" 2>&1) || fail "systemd-analyze verify: $out"
if grep "spigot.service" <<<"$out"; then fail "systemd-analyze verify complains about the unit"; fi

# A unit with a typo is caught (the check above can fail).
sed 's/^Type=notify/Type=notfy/' "$WORK/spigot.service" >"$WORK/bad.service"
bad=$(systemd-analyze verify --man=no "$WORK/bad.service" 2>&1 || true)
grep -q "bad.service" <<<"$bad" || fail "a misspelt Type= went unnoticed: the verify check is blind"

want=(
  "Type=notify"                       # READY=1 from spigot (io/systemd.h)
  "NotifyAccess=main"
  "WatchdogSec="                      # WATCHDOG=1 while every thread progresses
  "ExecReload=/usr/sbin/spigot reload"
  "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE"
  "NoNewPrivileges=yes"
  "ProtectSystem=strict"
  "DeviceAllow=/dev/net/tun rw"       # the TUN device
  "RuntimeDirectory=spigot"           # /run/spigot/spigot.sock, the default control_socket
  "StateDirectory=spigot"             # /var/lib/spigot: the lease database
  "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"  # control, UDP, routes
)
for w in "${want[@]}"; do
  grep -q "^$w" "$UNIT" || fail "the unit lacks $w"
done
# spigot's own paths under the unit's writable directories.
"$SPIGOT" --help >/dev/null
grep -q '^control_socket = "/run/spigot/spigot.sock"' "$(dirname "$UNIT")/../spigot.toml" ||
  fail "dist/spigot.toml does not put the control socket in the RuntimeDirectory"

score=$(systemd-analyze security --offline=yes "$WORK/spigot.service" 2>/dev/null | tail -1 || true)
echo "PASS: systemd-analyze verify clean; $score"
