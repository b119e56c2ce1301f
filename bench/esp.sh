#!/usr/bin/env bash
# ESP seal/open against the bare intel-ipsec-mb AES-GCM-128 ceiling, and AES-256-CBC +
# HMAC-SHA-256 per packet and batched against bare multi-buffer jobs, in one process and run.
# Usage: bench/esp.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BUILD/spigot_bench" --benchmark_filter='BM_(EspSeal|EspOpen|RawAesGcm128|RawCbcHmacMb|EspSealCbc|EspSealCbcBatch|EspOpenCbc|EspOpenCbcBatch)/' \
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
print()
print("AES-256-CBC + HMAC-SHA-256-128, Gbit/s; 'pkt' one packet at a time, 'batch' 64 at a time"
      " (esp::CryptoBatch), ratios against raw multi-buffer jobs")
print(f"{'inner bytes':>11} {'raw MB':>7} {'seal pkt':>9} {'seal batch':>11} {'batch/raw':>10}"
      f" {'open pkt':>9} {'open batch':>11} {'batch/raw':>10}")
for n in (64, 512, 1400):
    raw = gbps(f"BM_RawCbcHmacMb/{n}")
    sp, sb = gbps(f"BM_EspSealCbc/{n}"), gbps(f"BM_EspSealCbcBatch/{n}")
    op, ob = gbps(f"BM_EspOpenCbc/{n}"), gbps(f"BM_EspOpenCbcBatch/{n}")
    print(f"{n:>11} {raw:>7.2f} {sp:>9.2f} {sb:>11.2f} {sb/raw:>9.0%} {op:>9.2f} {ob:>11.2f} {ob/raw:>9.0%}")
PY
