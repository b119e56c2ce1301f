#!/usr/bin/env bash
# A long fuzzing campaign: every libFuzzer target (or the ones named) for HOURS of wall-clock
# time in all, JOBS targets at a time (default 2, one per core here), at nice 19. Each target
# gets the same share of CPU time: HOURS * 3600 * JOBS / targets seconds. Afterwards each
# target's grown corpus is merged back into fuzz/corpus/TARGET, minimised (`-merge=1` keeps
# the fewest inputs that cover every edge), and a table gives per target: CPU time, runs,
# executions, execs/s, coverage (cov = edges, ft = features) of the committed corpus before and
# of the merged corpus after (-runs=0 over each), its size, and the crashes found.
#
#   scripts/fuzz-long.sh HOURS [TARGET...]      e.g. scripts/fuzz-long.sh 8
#
# A crash, leak, timeout (TIMEOUT seconds of wall time for one input, default 30: at nice 19
# beside builds a starved fuzzer took more than 10 s for an ordinary input) or out-of-memory
# (2 GB) ends a run; its input is kept in
# build/fuzz-long/artifacts/ and the target runs again for what is left of its share, so one
# finding does not end the campaign. The script exits non-zero if anything was found. Logs:
# build/fuzz-long/TARGET.log. CI runs each target for SPIGOT_FUZZ_SECONDS (scripts/test.sh);
# this is the long variant, not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "usage: $0 HOURS [TARGET...]" >&2
  exit 2
fi
HOURS=$1
shift
JOBS=${JOBS:-2}
TIMEOUT=${TIMEOUT:-30}
BUILD=${BUILD:-build/fuzz}
OUT=build/fuzz-long
mkdir -p "$OUT/artifacts"

# The fuzz tree, configured as scripts/test.sh does, built if anything changed.
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPIGOT_FUZZ=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" >/dev/null
fi
# Every target is a directory of fuzz/corpus/ with a *_fuzz.cc beside it.
all=()
for f in fuzz/*_fuzz.cc; do all+=("$(basename "$f" .cc)"); done
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
echo "== building ${targets[*]}"
nice -n 19 ninja -C "$BUILD" -j "$JOBS" "${targets[@]}" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }

corpus_of() { local t=$1; echo "fuzz/corpus/${t%_fuzz}"; }
# "cov ft" of a corpus: the INITED line of a run that only reads it.
coverage_of() {  # target, dir...
  local t=$1; shift
  "$BUILD/fuzz/$t" -runs=0 -timeout="$TIMEOUT" -rss_limit_mb=2048 "$@" 2>&1 </dev/null |
    sed -n 's/.*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | tail -n 1
}

share=$(awk -v h="$HOURS" -v j="$JOBS" -v n="${#targets[@]}" 'BEGIN { s = int(h * 3600 * j / n); print (s < 10 ? 10 : s) }')
echo "== ${#targets[@]} targets, ${share}s of CPU each, $JOBS at a time, nice 19"

# One target's campaign: runs until its share is spent, restarting after a finding; then the
# merge. Writes OUT/TARGET.stats: cpu_s runs execs cov0 ft0 cov ft files bytes findings.
campaign() {
  local t=$1 corpus grown log left findings=0 runs=0 execs=0 cpu=0 start
  corpus=$(corpus_of "$t")
  grown="$OUT/$t-grown"
  log="$OUT/$t.log"
  mkdir -p "$grown" "$corpus"
  : >"$log"
  read -r cov0 ft0 < <(coverage_of "$t" "$corpus"; echo)
  start=$SECONDS
  while left=$(( share - (SECONDS - start) )); [ "$left" -ge 5 ]; do
    runs=$((runs + 1))
    local rc=0 from
    from=$(( $(wc -l <"$log") + 1 ))
    TIMEFORMAT='%U %S'
    # shellcheck disable=SC2046  # fuzz/TARGET.options: the target's extra flags, word-split
    { time nice -n 19 "$BUILD/fuzz/$t" $(cat "fuzz/$t.options" 2>/dev/null) -max_total_time="$left" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-" "$grown" "$corpus" \
        >>"$log" 2>&1 </dev/null || rc=$?; } 2>"$OUT/$t.time"
    read -r u s <"$OUT/$t.time"
    cpu=$(awk -v c="$cpu" -v u="$u" -v s="$s" 'BEGIN { print c + u + s }')
    # This run's executions: its final stats, or on a crash its last status line ("#N ...").
    local n
    n=$(tail -n "+$from" "$log" | sed -n 's/^stat::number_of_executed_units: \([0-9]*\)/\1/p; s/^#\([0-9]*\)[[:space:]].*/\1/p' | tail -n 1)
    execs=$(( execs + ${n:-0} ))
    if [ "$rc" -ne 0 ]; then
      findings=$((findings + 1))
      echo "!! $t: run $runs ended with status $rc (see $log)"
    fi
  done
  # Merge: the committed corpus and what grew, minimised into a fresh directory. On edges only
  # (-use_counters=0): keeping every hit-count bucket kept ~5x the files (1 MB for the four deep
  # targets after 15 minutes each) for <0.3 % more edges.
  local merged="$OUT/$t-merged"
  rm -rf "$merged"
  mkdir -p "$merged"
  nice -n 19 "$BUILD/fuzz/$t" $(cat "fuzz/$t.options" 2>/dev/null) -merge=1 -use_counters=0 -timeout="$TIMEOUT" -rss_limit_mb=2048 -artifact_prefix="$OUT/artifacts/$t-merge-" \
    "$merged" "$corpus" "$grown" >>"$log" 2>&1 </dev/null || findings=$((findings + 1))
  if [ -n "$(ls -A "$merged")" ]; then
    rm -rf "$corpus"
    mkdir -p "$corpus"
    cp "$merged"/* "$corpus"/
  fi
  read -r cov ft < <(coverage_of "$t" "$corpus"; echo)
  echo "$cpu $runs $execs ${cov0:-0} ${ft0:-0} ${cov:-0} ${ft:-0} $(ls "$corpus" | wc -l) $(du -sb "$corpus" | cut -f1) $findings" >"$OUT/$t.stats"
  echo "== $t done: $(cat "$OUT/$t.stats")"
}

for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  campaign "$t" &
done
wait

total_findings=0
printf '\n%-20s %9s %5s %11s %10s %13s %13s %6s %9s %8s\n' target cpu_h runs execs exec/cpu_s "cov/ft before" "cov/ft after" files bytes findings
for t in "${targets[@]}"; do
  read -r cpu runs execs cov0 ft0 cov ft files bytes findings <"$OUT/$t.stats"
  awk -v t="$t" -v cpu="$cpu" -v runs="$runs" -v e="$execs" -v c0="$cov0" -v f0="$ft0" -v c="$cov" -v f="$ft" \
      -v files="$files" -v bytes="$bytes" -v n="$findings" 'BEGIN {
    printf "%-20s %9.2f %5d %11d %10.0f %13s %13s %6d %9d %8d\n", t, cpu / 3600, runs, e,
           (cpu > 0 ? e / cpu : 0), c0 "/" f0, c "/" f, files, bytes, n }'
  total_findings=$((total_findings + findings))
done
ls "$OUT/artifacts" 2>/dev/null | sed 's/^/artifact: /'
[ "$total_findings" -eq 0 ]
