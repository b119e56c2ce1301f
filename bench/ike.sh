#!/usr/bin/env bash
# IKE handshakes per second on one core, each against the ceiling of the operations it cannot
# avoid, measured in the same process and run:
#   PSK:          IKE_SA_INIT + IKE_AUTH against X25519 (a handshake needs two X25519 units,
#                 keygen + shared secret, one per side)
#   certificates: RSA-2048, RSA-3072 and ECDSA P-256 end entities under a root of the same key
#                 type, both sides authenticating by certificate (RFC 7427 signatures, SHA-256):
#                 against 2 signatures + 4 verifications (each side checks the peer's AUTH and
#                 the peer's certificate under the root) + two X25519 units; with every peer
#                 certificate parsed (distinct users) and with the parse cache hit (the same
#                 users reconnecting, or the intermediate every road warrior sends)
# Usage: bench/ike.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BUILD/spigot_bench" \
  --benchmark_filter='BM_(X25519|IkeHandshake|CertSign/[0-9]|CertVerify/[0-9]|IkeHandshakeCert/[0-9]/[01])$' \
  --benchmark_min_time=0.5 --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$out"
python3 - "$out" <<'PY'
import json, sys
runs = {b["run_name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]
        if b.get("aggregate_name") == "median"}
rate = lambda name: runs[name]["items_per_second"]
x = rate("BM_X25519")
h = rate("BM_IkeHandshake")
ceiling = x / 2
print(f"X25519 (keygen + shared secret): {x:10.0f} /s")
print(f"PSK handshake ceiling (half of that): {ceiling:10.0f} /s")
print(f"PSK IKE_SA_INIT + IKE_AUTH:          {h:10.0f} /s  = {h / ceiling:.0%} of the ceiling")
print()
print(f"{'certificates':<12} {'sign/s':>9} {'verify/s':>9} {'ceiling/s':>10} "
      f"{'handshakes/s':>13} {'of ceiling':>10} {'cached/s':>9} {'of ceiling':>10}")
for i, name in enumerate(("RSA-2048", "RSA-3072", "ECDSA P-256")):
    s, v = rate(f"BM_CertSign/{i}"), rate(f"BM_CertVerify/{i}")
    c, cc = rate(f"BM_IkeHandshakeCert/{i}/0"), rate(f"BM_IkeHandshakeCert/{i}/1")
    ceil = 1 / (2 / s + 4 / v + 2 / x)
    print(f"{name:<12} {s:9.0f} {v:9.0f} {ceil:10.0f} {c:13.0f} {c / ceil:10.0%} {cc:9.0f} {cc / ceil:10.0%}")
PY
