#!/usr/bin/env bash
# spigot(8) (dist/spigot.8) and the bash completion (dist/bash-completion/spigot) against the
# code (issue 15, item 4): every config key the loader accepts (the CheckKnownKeys lists of
# src/spigot/config/config.cc) is documented in its table's section, every subcommand of
# `spigot --help` (and of `bench`, `debug`) has its entry and is completed, and man(1) renders
# the page without a warning. A second or two.
# usage: manpage.sh SPIGOT_BINARY
set -euo pipefail
SPIGOT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAN=$ROOT/dist/spigot.8
COMPLETION=$ROOT/dist/bash-completion/spigot
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 - "$ROOT/src/spigot/config/config.cc" "$MAN" <<'PY' || exit 1
import re, sys
code, man = open(sys.argv[1]).read(), open(sys.argv[2]).read().splitlines()
lists = []
for m in re.finditer(r"CheckKnownKeys\(\w+, \w+,\s*\{(.*?)\}\)", code, re.S):
    lists.append(re.findall(r'"([a-z_0-9]+)"', re.sub(r"//[^\n]*", "", m.group(1))))
if len(lists) < 5:
    sys.exit(f"FAIL: found {len(lists)} CheckKnownKeys lists in config.cc, expected 5")
sections, current = {}, None
for line in man:
    if line.startswith(".SS "):
        current = line[4:].strip()
    elif line.startswith(".B ") and current:
        sections.setdefault(current, set()).add(line[3:].strip())
# Each table's section, known by a key only its list has.
tables = (("max_spi", "[global]"), ("remote_addrs", "[[connection]]"), ("addrs", "[[pool]]"),
          ("servers", "[radius]"), ("id", "[[eap_user]]"))
missing = []
for keys in lists:
    section = next((s for k, s in tables if k in keys), None)
    if section is None:
        sys.exit(f"FAIL: a key list of config.cc this check does not know: {keys}")
    missing += [f"{section} {k}" for k in keys if k not in sections.get(section, set())]
if missing:
    sys.exit("FAIL: spigot(8) lacks config key(s): " + ", ".join(missing))
print(f"ok: {sum(len(k) for k in lists)} config keys in {len(lists)} tables documented")
PY

MAN_PLAIN=$(sed 's/\\-/-/g' "$MAN")  # roff's \- as -
subcommands() {  # the subcommands `spigot ARGS --help` lists
  "$SPIGOT" "$@" --help | awk '/^Subcommands:/ {on=1; next} on && /^  [a-z]/ {print $1}'
}
top=$(subcommands)
[ "$(wc -w <<<"$top")" -ge 10 ] || fail "spigot --help lists only: $top"
for c in $top; do
  grep -q "^\.B spigot $c\b" <<<"$MAN_PLAIN" || fail "spigot(8) has no entry for 'spigot $c'"
  grep -q "local commands=.*\b$c\b" "$COMPLETION" || fail "the bash completion lacks '$c'"
done
for group in bench debug; do
  for c in $(subcommands "$group"); do
    grep -q "^\.B spigot $group $c\b" <<<"$MAN_PLAIN" || fail "spigot(8) has no entry for 'spigot $group $c'"
    grep -q "\b$c\b" "$COMPLETION" || fail "the bash completion lacks '$group $c'"
  done
done

warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$MAN" 2>&1 >/dev/null)
[ -z "$warnings" ] || fail "man --warnings: $warnings"
bash -n "$COMPLETION" || fail "the bash completion does not parse"
echo "PASS: spigot(8) documents every config key and command ($(wc -w <<<"$top") commands); completion covers them"
