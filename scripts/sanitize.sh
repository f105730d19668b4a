#!/usr/bin/env bash
# The C++ engine under sanitizers (run by .ci/run on every submission):
#
#   1. ASan + UBSan build (build/asan) of the kernel tests, the fuzz driver and qbinfer-bench:
#        - the kernel test plan (every variant this CPU runs against the portable reference);
#        - the regression files fuzz/regressions/*.qbw (every file that ever crashed the engine);
#        - field-aware mutations of the seed corpus (fuzz/corpus/*.qbw and the shipped digits
#          model) from fuzz/qbw_mutator.py, with a fresh seed per round, until the time budget
#          is spent; every file is loaded and, if it loads, run on 2 images (1 and 2 threads);
#   2. TSan build (build/tsan) of qbinfer-bench and the fuzz driver: the multi-threaded engine
#      (2 and 4 threads: a batch split by image, and each step split by rows) on whole models.
# Any sanitizer report aborts the run (-fno-sanitize-recover), and the driver fails on any
# exception other than qbinfer::Error. A failing mutated file is copied to fuzz/failures/ with
# its mutation log line: reproduce with build/asan/qbinfer_fuzz_driver FILE, then add it to
# fuzz/regressions/ with the fix.
#
# usage: bash scripts/sanitize.sh [--fuzz-seconds N] [--seed S] [--no-tsan]
#   --fuzz-seconds  time budget of the mutation rounds (default 180)
#   --seed          first round's seed (default: from the clock; printed)
# environment: QBINFER_JOBS (parallel compile jobs, default 2), PYTHON (default python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${QBINFER_JOBS:-2}
PY=${PYTHON:-python}
FUZZ_SECONDS=180
SEED=$(date +%s)
RUN_TSAN=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-seconds) FUZZ_SECONDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --no-tsan) RUN_TSAN=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "sanitize.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Huge allocations from a hostile file must surface as std::bad_alloc (which the engine turns
# into an error or the driver counts), not as an ASan abort; leaks are reported at exit.
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

build() {  # build DIR SANITIZERS TARGETS...
  local dir=$1 san=$2
  shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQBINFER_BUILD_PYTHON=OFF \
    -DQBINFER_BUILD_TESTS=ON -DQBINFER_BUILD_TOOLS=ON -DQBINFER_SANITIZE="$san" >/dev/null
  cmake --build "$dir" -j "$JOBS" --target "$@"
}

echo "=== ASan + UBSan build"
build build/asan address,undefined qbinfer_kernel_tests qbinfer_fuzz_driver

echo "=== kernel tests under ASan + UBSan"
build/asan/qbinfer_kernel_tests --seed "$SEED" --scale 0.25

echo "=== regression files"
shopt -s nullglob
regressions=(fuzz/regressions/*.qbw)
if [ ${#regressions[@]} -gt 0 ]; then
  build/asan/qbinfer_fuzz_driver --quiet "${regressions[@]}"
  build/asan/qbinfer_fuzz_driver --quiet --threads 2 "${regressions[@]}"
fi

echo "=== fuzzing for ${FUZZ_SECONDS} s (first seed $SEED)"
corpus=(fuzz/corpus python/qbinfer/models/digits_qbnet.qbw)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
end=$(($(date +%s) + FUZZ_SECONDS))
round=0
total=0
while [ "$(date +%s)" -lt "$end" ]; do
  seed=$((SEED + round))
  rm -rf "$work/round"
  "$PY" fuzz/qbw_mutator.py --seed "$seed" --count 500 --out "$work/round" "${corpus[@]}" >/dev/null
  threads=$((1 + round % 2))
  if ! build/asan/qbinfer_fuzz_driver --quiet --threads "$threads" "$work"/round/*.qbw \
      >"$work/driver.txt" 2>&1; then
    cat "$work/driver.txt" | tail -40
    mkdir -p fuzz/failures
    # The file the driver was on when it stopped: the line after the last one it printed is
    # unknown after an abort, so keep the whole round (500 files, small) with its log.
    cp -r "$work/round" "fuzz/failures/seed$seed"
    echo "sanitize.sh: the fuzz round with seed $seed failed (threads $threads);" \
         "its files and mutations.txt are in fuzz/failures/seed$seed" >&2
    exit 1
  fi
  summary=$(grep '^files ' "$work/driver.txt")
  echo "seed $seed, threads $threads: $summary"
  round=$((round + 1))
  total=$((total + 500))
done
echo "fuzzed $total files in $round rounds; no sanitizer report, no unexpected exception"

if [ "$RUN_TSAN" = 1 ]; then
  echo "=== TSan build"
  build build/tsan thread qbinfer-bench qbinfer_fuzz_driver
  echo "=== the engine's threads under TSan"
  # The driver runs 2 images: with 2 threads one image per thread (a workspace each), with 4
  # threads the images one after the other, each step's rows split across the pool.
  models=(fuzz/corpus/model_*.qbw python/qbinfer/models/digits_qbnet.qbw)
  for t in 2 4; do
    build/tsan/qbinfer_fuzz_driver --quiet --threads "$t" "${models[@]}"
  done
  build/tsan/qbinfer-bench python/qbinfer/models/digits_qbnet.qbw --threads 2 --runs 3 \
    --warmup 1 >/dev/null
  echo "TSan: no report"
fi
echo "sanitize.sh: passed"
