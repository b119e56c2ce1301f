#!/usr/bin/env bash
# IKE handshakes per second on one core against the X25519 ceiling, in one process and run.
# Usage: bench/ike.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BUILD/spigot_bench" --benchmark_filter='BM_(X25519|IkeHandshake)$' --benchmark_min_time=0.5 \
  --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$out"
python3 - "$out" <<'PY'
import json, sys
runs = {b["run_name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]
        if b.get("aggregate_name") == "median"}
x = runs["BM_X25519"]["items_per_second"]
h = runs["BM_IkeHandshake"]["items_per_second"]
ceiling = x / 2
print(f"X25519 (keygen + shared secret): {x:10.0f} /s")
print(f"handshake ceiling (half of that): {ceiling:10.0f} /s")
print(f"IKE_SA_INIT + IKE_AUTH:          {h:10.0f} /s  = {h / ceiling:.0%} of the ceiling")
PY
