#!/usr/bin/env bash
# The whole test suite: installs dependencies, then builds and runs CTest in
#   build/release   Release build (unit tests)
#   build/asan      ASan + UBSan build (unit tests)
#   build/fuzz      clang + libFuzzer targets, each run for a bounded time over its corpus
# Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

# Unity builds (16 sources per compiler run): each header is parsed once per batch, not once
# per source — on two cores the three builds take about half the time.
configure() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 "$@" >/dev/null
}

echo "== Release build"
configure build/release -DCMAKE_BUILD_TYPE=Release
ninja -C build/release -j "$JOBS"
echo "== Release tests"
ctest --test-dir build/release --output-on-failure -j "$JOBS"

echo "== ASan + UBSan build"
# -O1 -g1: the sanitizers' usual optimisation level, and a faster build on two cores.
configure build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_SANITIZE=ON -DSPIGOT_BENCH=OFF \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1"
ninja -C build/asan -j "$JOBS"
echo "== ASan + UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS" -LE slow

echo "== Fuzz build (clang, libFuzzer)"
configure build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSPIGOT_FUZZ_SECONDS="$FUZZ_SECONDS"
ninja -C build/fuzz -j "$JOBS"
echo "== Fuzz runs (${FUZZ_SECONDS}s each, two at a time)"
ctest --test-dir build/fuzz --output-on-failure -j "$JOBS"
