#!/usr/bin/env bash
# Builds the Debian package (debian/) from this working tree with dpkg-buildpackage, installs it
# with `dpkg -i` into a clean root and checks what it put there, purges it again, and runs
# lintian (any error fails). Run as root on Debian 12; results in build/deb/.
#
# The clean root: an overlay of this machine's root in a private mount namespace, so the
# install (the spigot user, /etc/spigot, the unit) never reaches the real system and is gone
# when the script ends. Inside it the installed spigot runs with the shipped example
# configuration in a network namespace of its own.
#
# Not part of scripts/test.sh: the package build compiles spigot once more (about 10 minutes
# on two cores); tests/manpage.sh and tests/systemd_unit.sh, which are, check the man page and
# the unit the package ships.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-build/deb}
JOBS=${JOBS:-2}
START=$SECONDS
step() { printf '== %s (at %ds)\n' "$1" $(( SECONDS - START )); }
fail() { echo "FAIL: $*" >&2; exit 1; }

# The packaging tools, and what debian/control's Build-Depends names.
tools=(dpkg-dev debhelper lintian fakeroot)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
dpkg-checkbuilddeps debian/control || fail "missing build dependencies (scripts/install-deps.sh installs them)"

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
rm -rf "$OUT"
SRC=$OUT/src/spigot-$version
mkdir -p "$SRC"
step "copying the working tree (tracked and new files, no build trees) to $SRC"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$SRC"

step "dpkg-buildpackage -b"
(cd "$SRC" && DEB_BUILD_OPTIONS="parallel=$JOBS nocheck" dpkg-buildpackage -us -uc -b) \
  >"$OUT/build.log" 2>&1 || { tail -n 40 "$OUT/build.log"; fail "dpkg-buildpackage failed (log: $OUT/build.log)"; }
mv "$OUT"/src/*.deb "$OUT"/src/*.changes "$OUT"/src/*.buildinfo "$OUT"/ 2>/dev/null || true
DEB=$(ls "$OUT"/spigot_"$version"_*.deb)
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'
dpkg-deb --contents "$DEB" | awk '{print $1, $2, $6}' | grep -v '/$' || true

step "lintian"
lintian --fail-on error --display-info "$OUT"/spigot_"$version"_*.changes | tee "$OUT/lintian.txt" ||
  fail "lintian reports errors"
echo "lintian: $(grep -c '^E:' "$OUT/lintian.txt" || true) error(s), $(grep -c '^W:' "$OUT/lintian.txt" || true) warning(s), $(grep -c '^I:' "$OUT/lintian.txt" || true) info"

step "dpkg -i into a clean root (overlay of /, private mount namespace)"
ROOT=$(mktemp -d /tmp/spigot-deb-root.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
cp "$DEB" "$ROOT/spigot.deb"
cat >"$ROOT/check.sh" <<'CHECK'
#!/bin/sh
# Runs inside the clean root.
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
dpkg -s spigot >/dev/null 2>&1 && fail "spigot already installed in the clean root"
getent passwd spigot >/dev/null && fail "a spigot user already exists in the clean root"
dpkg -i /tmp/spigot.deb
[ "$(dpkg-query -W -f='${Status}' spigot)" = "install ok installed" ] || fail "not installed"

/usr/sbin/spigot --help >/dev/null || fail "/usr/sbin/spigot does not run"
uid=$(getent passwd spigot | cut -d: -f3)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] || fail "no spigot system user (uid '$uid')"
getent group spigot >/dev/null || fail "no spigot group"
[ "$(stat -c '%U:%G %a' /etc/spigot)" = "root:spigot 750" ] || fail "/etc/spigot is $(stat -c '%U:%G %a' /etc/spigot)"
[ "$(stat -c '%U:%G %a' /etc/spigot/spigot.toml)" = "root:spigot 640" ] ||
  fail "/etc/spigot/spigot.toml is $(stat -c '%U:%G %a' /etc/spigot/spigot.toml)"
dpkg-query -W -f='${Conffiles}\n' spigot | grep -q '^ /etc/spigot/spigot.toml ' || fail "spigot.toml is not a conffile"
man -w spigot | grep -q '/usr/share/man/man8/spigot.8.gz' || fail "man spigot finds no spigot(8)"
bash -c '. /usr/share/bash-completion/bash_completion 2>/dev/null; . /usr/share/bash-completion/completions/spigot; complete -p spigot' |
  grep -q _spigot || fail "no bash completion"
unit=/lib/systemd/system/spigot.service
[ -f "$unit" ] || fail "no $unit"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
echo "$out" | grep spigot.service && fail "systemd-analyze verify complains about the installed unit"
[ -e /etc/systemd/system/multi-user.target.wants/spigot.service ] && fail "enabled before it is configured"

# The installed binary with the shipped configuration, in a network namespace of its own.
unshare -n sh -c '
  ip link set lo up
  /usr/sbin/spigot run -c /etc/spigot/spigot.toml >/tmp/spigot-run.log 2>&1 &
  pid=$!
  for i in $(seq 50); do [ -S /run/spigot/spigot.sock ] && break; sleep 0.1; done
  /usr/sbin/spigot stats --json >/tmp/stats.json || { cat /tmp/spigot-run.log; exit 1; }
  kill -TERM $pid; wait $pid
' || fail "spigot does not run with the shipped /etc/spigot/spigot.toml"
grep -q '"max_spi": 1048576' /tmp/stats.json || fail "unexpected stats: $(head -c 300 /tmp/stats.json)"
echo "installed: $(dpkg-query -W -f='${Package} ${Version} ${Installed-Size} KiB' spigot), user spigot uid $uid, the example config runs"

dpkg --purge spigot
[ -e /usr/sbin/spigot ] && fail "/usr/sbin/spigot left after purge"
[ -e /etc/spigot ] && fail "/etc/spigot left after purge"
dpkg-statoverride --list | grep -q /etc/spigot && fail "statoverrides left after purge"
echo "purged: no files, no statoverrides left"
CHECK
chmod +x "$ROOT/check.sh"
unshare -m sh -c '
  set -e
  R=$1
  mkdir -p "$R/ovl"
  mount -t tmpfs tmpfs "$R/ovl"
  mkdir "$R/ovl/upper" "$R/ovl/work" "$R/ovl/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$R/ovl/upper,workdir=$R/ovl/work" "$R/ovl/root"
  for d in dev sys; do mount --rbind "/$d" "$R/ovl/root/$d"; done
  mount -t proc proc "$R/ovl/root/proc"
  mount -t tmpfs tmpfs "$R/ovl/root/run"
  mount -t tmpfs tmpfs "$R/ovl/root/tmp"
  cp "$R/spigot.deb" "$R/check.sh" "$R/ovl/root/tmp/"
  chroot "$R/ovl/root" /tmp/check.sh
' sh "$ROOT" || fail "the install check failed"
getent passwd spigot >/dev/null && [ ! -e /usr/sbin/spigot ] && echo "note: a spigot user exists on this machine (not from this script)"
[ -e /usr/sbin/spigot ] && fail "/usr/sbin/spigot appeared on the real system"

step "done: $DEB"
