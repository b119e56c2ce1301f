#!/usr/bin/env bash
# The whole test suite: installs dependencies, then builds and runs CTest in
#   build/release   Release build: unit tests and the namespace tests (tests/)
#   build/asan      ASan + UBSan build: the same, except those labelled `slow`
#   build/fuzz      clang + libFuzzer targets, each run for a bounded time over its corpus
# Each later tree compiles in the background (nice 19) while the previous tree's tests run.
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

# The sanitizer tree compiles while the Release tests run: those tests spend most of their
# time waiting on tunnels in network namespaces, and at nice 19 the compiler only takes the
# CPU they leave idle. Its log is printed if it fails.
echo "== ASan + UBSan build (in the background, nice 19)"
# -O1 -g1: the sanitizers' usual optimisation level, and a faster build on two cores.
configure build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_SANITIZE=ON -DSPIGOT_BENCH=OFF \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1"
nice -n 19 ninja -C build/asan -j "$JOBS" >build/asan-build.log 2>&1 &
asan_build=$!

echo "== Release tests"
ctest --test-dir build/release --output-on-failure -j "$JOBS" || { kill "$asan_build" 2>/dev/null; exit 1; }

if ! wait "$asan_build"; then
  cat build/asan-build.log
  echo "ASan + UBSan build failed"
  exit 1
fi
tail -n 1 build/asan-build.log

echo "== Fuzz build (clang, libFuzzer, in the background, nice 19)"
configure build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSPIGOT_FUZZ_SECONDS="$FUZZ_SECONDS"
nice -n 19 ninja -C build/fuzz -j "$JOBS" >build/fuzz-build.log 2>&1 &
fuzz_build=$!

echo "== ASan + UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS" -LE slow || { kill "$fuzz_build" 2>/dev/null; exit 1; }

if ! wait "$fuzz_build"; then
  cat build/fuzz-build.log
  echo "fuzz build failed"
  exit 1
fi
tail -n 1 build/fuzz-build.log
echo "== Fuzz runs (${FUZZ_SECONDS}s each, two at a time)"
ctest --test-dir build/fuzz --output-on-failure -j "$JOBS"
