#!/usr/bin/env bash
# ESP seal/open against the bare intel-ipsec-mb AES-GCM-128 ceiling, in one process and run.
# Usage: bench/esp.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BUILD/spigot_bench" --benchmark_filter='BM_(EspSeal|EspOpen|RawAesGcm128)/' \
  --benchmark_min_time=0.3 --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$out"
python3 - "$out" <<'PY'
import json, sys
# Medians of 5 interleaved repetitions: a shared machine's noise hits all rows alike.
runs = {b["run_name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"]
        if b.get("aggregate_name") == "median"}
def gbps(name):
    return runs[name]["bytes_per_second"] * 8 / 1e9
print(f"{'inner bytes':>11} {'raw GCM Gbit/s':>15} {'seal Gbit/s':>12} {'seal/raw':>9} {'open Gbit/s':>12} {'open/raw':>9}")
for n in (64, 512, 1400):
    raw, seal, opn = gbps(f"BM_RawAesGcm128/{n}"), gbps(f"BM_EspSeal/{n}"), gbps(f"BM_EspOpen/{n}")
    print(f"{n:>11} {raw:>15.2f} {seal:>12.2f} {seal/raw:>8.0%} {opn:>12.2f} {opn/raw:>8.0%}")
PY
