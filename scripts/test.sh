#!/usr/bin/env bash
# The whole test suite: installs dependencies, then builds and runs CTest in
#   build/release   Release build: unit tests and the namespace tests (tests/) labelled
#                   `release_only`
#   build/asan      ASan + UBSan build: the unit tests, and the other namespace tests (labelled
#                   `sanitizer_run`; tests/CMakeLists.txt says which and why) — each namespace
#                   test runs once
#   build/fuzz      clang + libFuzzer targets, each run for a bounded time over its corpus
# The later trees compile in the background (nice 19) while the Release tests run; the fuzzers
# run in the background during the sanitizer tests.
# Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's tools first, for everything below and every test CTest starts: a python3 shim (pyenv)
# earlier in PATH cost 0.6 CPU-seconds per call here, and the namespace tests make thousands
# (tests/lib.sh says the same for tests run by hand).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

bash scripts/install-deps.sh

JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

# Unity builds (16 sources per compiler run): each header is parsed once per batch, not once
# per source — on two cores the three builds take about half the time.
configure() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 "$@" >/dev/null
}

START=$SECONDS
phase() { printf '== %s (at %dm%02ds)\n' "$1" $(( (SECONDS - START) / 60 )) $(( (SECONDS - START) % 60 )); }

phase "Release build"
# Without the benchmarks (no test runs them; scripts/demo.sh asks for them in the same tree):
# this build is the one step nothing runs beside.
configure build/release -DCMAKE_BUILD_TYPE=Release -DSPIGOT_BENCH=OFF
ninja -C build/release -j "$JOBS"

# The sanitizer and fuzz trees compile while the Release tests run: those tests spend most of
# their time waiting on tunnels in network namespaces, and at nice 19 the compilers only take the
# CPU they leave idle. The fuzz targets run later, beside the sanitizer tests. Each step's log is
# printed if it fails.
phase "ASan + UBSan build and the fuzz build (in the background, nice 19)"
# -Og -g1: with ASan + UBSan, GCC compiles -Og in a bit over half the time of -O1 (53 s
# against 94 s for the gateway tests' unity file), so the build fits in the Release tests'
# idle time on two cores; the code still runs at near -O1 speed, which the storm tests need.
configure build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_SANITIZE=ON -DSPIGOT_BENCH=OFF \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-Og -g1"
# The fuzz tree with line tables only (-gline-tables-only: enough for symbolized crash reports),
# and -DNDEBUG as RelWithDebInfo has: clang compiled the largest unity file (the gateway's) in 63
# CPU-s against 82 with full -g.
configure build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSPIGOT_FUZZ_SECONDS="$FUZZ_SECONDS" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG"
rm -f build/fuzz-failed build/fuzz-may-run build/asan-build.rc
( rc=0; nice -n 19 ninja -C build/asan -j "$JOBS" >build/asan-build.log 2>&1 || rc=$?
  echo "$rc" >build/asan-build.rc; exit "$rc" ) &
asan_build=$!
# The fuzz job: its build beside the sanitizer build, one compiler at a time (so the sanitizer
# build, which the next phase waits for, gets two thirds of the idle CPU); its runs once the
# Release tests are over (build/fuzz-may-run), beside the sanitizer tests. Started after the
# sanitizer build instead, the fuzz build was the suite's critical path: it ran beside the
# CPU-bound sanitizer tests and finished 4 minutes after them.
(
  nice -n 19 ninja -C build/fuzz -j 1 >build/fuzz-build.log 2>&1 || { echo build >build/fuzz-failed; exit 1; }
  while [ ! -e build/fuzz-may-run ]; do sleep 2; done
  nice -n 19 ctest --test-dir build/fuzz --output-on-failure -j "$JOBS" >build/fuzz-test.log 2>&1 ||
    { echo runs >build/fuzz-failed; exit 1; }
) &
fuzz=$!
stop_background() { kill "$asan_build" 2>/dev/null; pkill -P "$fuzz" 2>/dev/null; kill "$fuzz" 2>/dev/null; true; }

phase "Release tests"
ctest --test-dir build/release --output-on-failure -j "$JOBS" -LE sanitizer_run || { stop_background; exit 1; }
touch build/fuzz-may-run

phase "waiting for the ASan + UBSan build"
if ! wait "$asan_build"; then
  cat build/asan-build.log
  echo "ASan + UBSan build failed"
  stop_background
  exit 1
fi
tail -n 1 build/asan-build.log
phase "fuzz runs (clang, libFuzzer, ${FUZZ_SECONDS}s each, in the background, nice 19, once built)"

phase "ASan + UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS" -LE release_only || { stop_background; exit 1; }

phase "waiting for the fuzz runs"
if ! wait "$fuzz"; then
  case $(cat build/fuzz-failed 2>/dev/null) in
    build) cat build/fuzz-build.log; echo "fuzz build failed" ;;
    *) cat build/fuzz-test.log; echo "fuzz runs failed" ;;
  esac
  exit 1
fi
tail -n 1 build/fuzz-build.log
grep -E "tests passed|Total Test time" build/fuzz-test.log
phase "done"
