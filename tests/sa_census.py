#!/usr/bin/env python3
"""The SAs two IKE peers hold, compared: every IKE SA and CHILD SA of one side must be on the
other, established / installed, and nothing else may be left (no half of an SA on one side only,
no SA still connecting, rekeyed or deleting).

usage: sa_census.py [--charon-rekeyed-ok] KIND_A FILE_A KIND_B FILE_B
  KIND spigot: FILE is the output of `spigot sas --json`
  KIND charon: FILE is the output of `swanctl --list-sas`
  --charon-rekeyed-ok: an old IKE SA charon answered a rekey of and still waits to be deleted
  (state REKEYED, no CHILD SA) is listed but not a difference: strongSwan 5.9 deletes such an
  SA itself 90 s after the rekey when the peer's DELETE was lost (ike_rekey.c), a bound longer
  than a CI test should wait. Likewise a rekeyed CHILD SA in state DELETED under an established
  IKE SA: charon keeps its inbound half for charon.delete_rekeyed_delay (5 s) after the rekey, for
  packets still on their way (as spigot's inbound linger does, which `spigot sas` does not list).
Prints one line per side ("a: 4 IKE SAs, 4 CHILD SAs") and what differs; exits 0 when both
sides hold the same SAs, 1 otherwise.
"""
import json
import re
import sys


def spigot_census(path):
    """(IKE SAs, CHILD SAs, SAs in other states) of a `spigot sas --json` file.

    IKE SAs as (spi_i, spi_r); CHILD SAs as (spi_in, spi_out), ours."""
    ike, child, other = set(), set(), []
    for s in json.load(open(path))["ike_sas"]:
        key = (s["spi_i"], s["spi_r"])
        if s["state"] != "ESTABLISHED" or s.get("rekeyed"):
            other.append(f"IKE {key[0]}_i {key[1]}_r {'REKEYED' if s.get('rekeyed') else s['state']}")
            continue
        ike.add(key)
        for c in s["children"]:
            child.add((c["spi_in"], c["spi_out"]))
    return ike, child, other


IKE_LINE = re.compile(r"^\S[^:]*: #\d+, (\w+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r\*?")
CHILD_LINE = re.compile(r"^\s+\S[^:]*: #\d+, reqid \d+, (\w+),")
IN_LINE = re.compile(r"^\s+in\s+([0-9a-f]{8})")
OUT_LINE = re.compile(r"^\s+out\s+([0-9a-f]{8})")


def charon_census(path, rekeyed_ok=False):
    """The same from `swanctl --list-sas` text (and the REKEYED IKE SAs let pass)."""
    ike, child, other = set(), set(), []
    ike_ok = False
    waiting = []
    child_state, spi_in = None, None
    for line in open(path).read().splitlines():
        m = IKE_LINE.match(line)
        if m:
            state, spi_i, spi_r = m.groups()
            ike_ok = state == "ESTABLISHED"
            if ike_ok:
                ike.add((spi_i, spi_r))
            elif state == "REKEYED" and rekeyed_ok:
                waiting.append(f"IKE {spi_i}_i {spi_r}_r REKEYED")
            else:
                other.append(f"IKE {spi_i}_i {spi_r}_r {state}")
            child_state = None
            continue
        m = CHILD_LINE.match(line)
        if m:
            child_state, spi_in = m.group(1), None
            continue
        m = IN_LINE.match(line)
        if m and child_state is not None:
            spi_in = m.group(1)
            continue
        m = OUT_LINE.match(line)
        if m and child_state is not None and spi_in is not None:
            if child_state == "INSTALLED" and ike_ok:
                child.add((spi_in, m.group(1)))
            elif child_state == "DELETED" and ike_ok and rekeyed_ok:
                waiting.append(f"CHILD {spi_in}/{m.group(1)} DELETED")
            else:
                other.append(f"CHILD {spi_in}/{m.group(1)} {child_state}")
            child_state = None
    for w in waiting:
        print(f"charon: {w}, waiting for charon's own delete timer")
    return ike, child, other


def census(kind, path, rekeyed_ok):
    return spigot_census(path) if kind == "spigot" else charon_census(path, rekeyed_ok)


def main():
    args = sys.argv[1:]
    rekeyed_ok = bool(args) and args[0] == "--charon-rekeyed-ok"
    if rekeyed_ok:
        args = args[1:]
    if len(args) != 4 or args[0] not in ("spigot", "charon") or args[2] not in ("spigot", "charon"):
        print(__doc__, file=sys.stderr)
        return 2
    a_ike, a_child, a_other = census(args[0], args[1], rekeyed_ok)
    b_ike, b_child, b_other = census(args[2], args[3], rekeyed_ok)
    print(f"a ({args[0]}): {len(a_ike)} IKE SAs, {len(a_child)} CHILD SAs, {len(a_other)} in other states")
    print(f"b ({args[2]}): {len(b_ike)} IKE SAs, {len(b_child)} CHILD SAs, {len(b_other)} in other states")
    problems = []
    for side, other in (("a", a_other), ("b", b_other)):
        problems += [f"{side}: {o}" for o in other]
    problems += [f"IKE SA only on a: {k[0]}_i {k[1]}_r" for k in sorted(a_ike - b_ike)]
    problems += [f"IKE SA only on b: {k[0]}_i {k[1]}_r" for k in sorted(b_ike - a_ike)]
    # a's inbound SPI is b's outbound one.
    b_mirrored = {(o, i) for i, o in b_child}
    problems += [f"CHILD SA only on a: in {i} out {o}" for i, o in sorted(a_child - b_mirrored)]
    problems += [f"CHILD SA only on b: in {o} out {i}" for i, o in sorted(b_mirrored - a_child)]
    for p in problems:
        print(p)
    return 1 if problems else 0


sys.exit(main())
