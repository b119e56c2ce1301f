#!/usr/bin/env python3
"""Do spigot and strongSwan (or two spigots) agree on the IKE and CHILD SAs?

usage: agree.py spigot-vs-charon SPIGOT_SAS_JSON SWANCTL_LIST_SAS_TEXT EXPECT_IKE EXPECT_ESP
       agree.py spigot-vs-spigot SAS_JSON_A SAS_JSON_B
       agree.py none SPIGOT_SAS_JSON SWANCTL_LIST_SAS_TEXT     (both sides have no IKE SA)
Exits 0 when they agree, else prints why and exits 1.
"""
import json
import re
import sys


def spigot_state(path):
    sas = json.load(open(path))["ike_sas"]
    est = [s for s in sas if s["state"] == "ESTABLISHED" and s["children"]]
    if len(est) != 1:
        return None, f"spigot: {len(est)} established IKE SAs with CHILD SAs (all: {[s['state'] for s in sas]})"
    s = est[0]
    if len(s["children"]) != 1:
        return None, f"spigot: {len(s['children'])} CHILD SAs"
    c = s["children"][0]
    return {"ike": (s["spi_i"], s["spi_r"]), "in": c["spi_in"], "out": c["spi_out"],
            "ike_alg": s["algorithms"], "esp_alg": c["algorithms"]}, None


def charon_state(text):
    ike = re.findall(r"ESTABLISHED, IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r", text)
    if len(ike) != 1:
        return None, f"charon: {len(ike)} established IKE SAs"
    children = re.findall(r"INSTALLED, TUNNEL[^\n]*ESP:([^\n]*)\n(?:[^\n]*\n)*?\s+in\s+([0-9a-f]{8})[^\n]*\n\s+out\s+([0-9a-f]{8})", text)
    if len(children) != 1:
        return None, f"charon: {len(children)} installed CHILD SAs"
    alg_line = re.search(r"\n\s+([A-Z0-9_\-/]+)\n\s+established", text)
    esp, cin, cout = children[0]
    return {"ike": ike[0], "in": cin, "out": cout, "ike_alg": alg_line.group(1) if alg_line else "",
            "esp_alg": esp.strip()}, None


def norm(alg):
    return alg.replace("AES_GCM_16-", "AES_GCM_16_").replace("AES_CBC-", "AES_CBC_").replace(
        "HMAC_SHA2_256_128", "HMAC_SHA2_256_128")


def main():
    mode = sys.argv[1]
    if mode == "none":
        sas = json.load(open(sys.argv[2]))["ike_sas"]
        text = open(sys.argv[3]).read()
        live = [s for s in sas if s["state"] != "DEAD"]
        if live or "ESTABLISHED" in text or "CONNECTING" in text:
            print(f"expected no IKE SAs: spigot {[s['state'] for s in live]}, charon:\n{text}")
            return 1
        return 0
    if mode == "spigot-vs-spigot":
        a, err = spigot_state(sys.argv[2])
        if err: print(err); return 1
        b, err = spigot_state(sys.argv[3])
        if err: print(err); return 1
        ok = a["ike"] == b["ike"] and a["in"] == b["out"] and a["out"] == b["in"] and a["esp_alg"] == b["esp_alg"]
        if not ok: print(f"disagree: {a} vs {b}")
        return 0 if ok else 1
    s, err = spigot_state(sys.argv[2])
    if err: print(err); return 1
    c, err = charon_state(open(sys.argv[3]).read())
    if err: print(err); return 1
    problems = []
    if tuple(s["ike"]) != tuple(c["ike"]): problems.append(f"IKE SPIs {s['ike']} vs {c['ike']}")
    if s["in"] != c["out"] or s["out"] != c["in"]: problems.append(f"CHILD SPIs spigot in/out {s['in']}/{s['out']} charon in/out {c['in']}/{c['out']}")
    if len(sys.argv) > 5:
        if norm(s["ike_alg"]) != norm(c["ike_alg"]) or sys.argv[4] not in norm(c["ike_alg"]):
            problems.append(f"IKE algorithms spigot {s['ike_alg']} charon {c['ike_alg']} (want {sys.argv[4]})")
        if not norm(c["esp_alg"]).startswith(norm(s["esp_alg"]).split("/ESN")[0]) or sys.argv[5] not in norm(c["esp_alg"]):
            problems.append(f"ESP algorithms spigot {s['esp_alg']} charon {c['esp_alg']} (want {sys.argv[5]})")
    if problems:
        print("; ".join(problems))
        return 1
    return 0


sys.exit(main())
