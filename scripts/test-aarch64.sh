#!/usr/bin/env bash
# Builds qbinfer for AArch64 and 32-bit ARMv7 (NEON kernels on both) with Debian's cross
# compilers and tests the binaries under qemu-user against the x86-64 build on this machine:
#
#   1. x86-64:  qbinfer-bench (+ qbinfer_kernel_tests when CMakeLists.txt has it)  build/cross-x86
#   2. AArch64: the same, cross-compiled; the kernel tests run under qemu-aarch64 twice, on the
#               default CPU (which has dotprod) and as a Cortex-A72 (no dotprod)  build/cross-aarch64
#   3. ARMv7:   the same for 32-bit hard-float (NEON kernels with -mfpu=neon-vfpv4, picked
#               from HWCAP), under qemu-arm: the NEON kernel tests on the default CPU and (fewer
#               cases) a Cortex-A7, the portable ones (fewer cases) on a Cortex-R5F, which has no
#               NEON, so only they may run                                     build/cross-armv7
#   4. models:  the shipped digits model, and, when torch and weights_tools import, two
#               random-weight zoo models at 72x72; each runs through qbinfer-bench on x86
#               (best ISA and QBINFER_ISA=scalar) and under qemu (AArch64 NEON with and without
#               dotprod, AArch64 scalar, ARMv7 NEON on the default CPU and a Cortex-A7, ARMv7
#               scalar, ARMv7 without NEON), and every ARM output must match the x86 one:
#               |diff| <= 1e-5 x (|x86| + max|x86|) and the same top-5 (qbinfer-bench --compare);
#               the portable kernels' output (AArch64 scalar, ARMv7 scalar) must equal x86-64
#               scalar's bit for bit, and ARMv7 NEON's must equal AArch64 NEON's without dotprod
#               bit for bit (the same kernels; neon_compat.h keeps ARMv7 NEON IEEE-exact)
#
# usage: bash scripts/test-aarch64.sh [--python] [--no-armv7] [--no-zoo]
#   --python    also run scripts/test-aarch64-python.sh (the Python extension on arm64 Debian
#               under qemu; downloads ~60 MB of Debian packages)
#   --no-armv7  skip the 32-bit build
#   --no-zoo    only the shipped digits model (no torch needed)
# environment: QBINFER_JOBS (parallel compile jobs, default 2), PYTHON (default python, else
#              python3).
#
# Missing tools (cmake, g++, the cross compilers, qemu-user) are installed with apt-get, which
# needs root (or sudo). Exits non-zero with a message naming the failed step. Timings under qemu
# are emulation, not the speed of an ARM board.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${QBINFER_JOBS:-2}
RUN_PYTHON=0
RUN_ARMV7=1
RUN_ZOO=1
for arg in "$@"; do
  case "$arg" in
    --python) RUN_PYTHON=1 ;;
    --no-armv7) RUN_ARMV7=0 ;;
    --no-zoo) RUN_ZOO=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-aarch64.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# Phases: each is timed; the table is printed at the end, and on failure the failed phase is named.
PHASE=""
PHASE_T0=0
SCRIPT_T0=$(date +%s.%N)
TIMINGS=()
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase() {
  PHASE=$1
  PHASE_T0=$(date +%s.%N)
  echo
  echo "=== $PHASE"
}
phase_done() {
  local dt
  dt=$(elapsed "$PHASE_T0")
  TIMINGS+=("$(printf '  %-58s %7ss' "$PHASE" "$dt")")
  echo "--- $PHASE: ${dt}s"
  PHASE=""
}
print_timings() {
  echo
  echo "=== timings (qemu phases are emulation, not ARM hardware speed)"
  local t
  for t in "${TIMINGS[@]}"; do echo "$t"; done
  printf '  %-58s %7ss\n' "total" "$(elapsed "$SCRIPT_T0")"
}
die() {
  echo >&2
  echo "test-aarch64.sh: FAILED${PHASE:+ in phase '$PHASE'}: $*" >&2
  exit 1
}
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    ((${#TIMINGS[@]})) && print_timings >&2
    [[ -n "$PHASE" ]] && echo "test-aarch64.sh: FAILED in phase '$PHASE' (exit $rc)" >&2
  fi
}
trap on_exit EXIT

# have, logged, apt_install
source scripts/lib.sh

# ---------------------------------------------------------------------------------------------
phase "tools (install what is missing)"
need=()
have cmake || need+=(cmake)
have g++ || need+=(g++)
have aarch64-linux-gnu-g++ || need+=(g++-aarch64-linux-gnu)
((RUN_ARMV7)) && ! have arm-linux-gnueabihf-g++ && need+=(g++-arm-linux-gnueabihf)
{ have qemu-aarch64 || have qemu-aarch64-static; } || need+=(qemu-user)
((RUN_ARMV7)) && ! { have qemu-arm || have qemu-arm-static; } && need+=(qemu-user)
apt_install ${need[@]+"${need[@]}"}
QEMU_AARCH64=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
QEMU_ARM=$(command -v qemu-arm || command -v qemu-arm-static || true)
echo "cmake $(cmake --version | head -n1 | awk '{print $3}'), $(g++ --version | head -n1)"
echo "$(aarch64-linux-gnu-g++ --version | head -n1), $("$QEMU_AARCH64" --version | head -n1)"
phase_done

# The kernel test executable (csrc/tests/kernel_tests.cc over the kernel test plan in
# csrc/tests/kernel_test_harness.cc, the same plan tests/test_kernels_simd.py runs): build and run
# it when the project has it, and say so when it does not.
KERNEL_TESTS=OFF
if grep -q 'qbinfer_kernel_tests' CMakeLists.txt && [[ -f csrc/tests/kernel_tests.cc ]]; then
  KERNEL_TESTS=ON
else
  echo "note: no qbinfer_kernel_tests target in CMakeLists.txt; only qbinfer-bench is tested"
fi
TARGETS=(qbinfer-bench)
[[ $KERNEL_TESTS == ON ]] && TARGETS+=(qbinfer_kernel_tests)

# configure_and_build DIR [cmake args...]: only the C++ library and the two executables, never
# the Python extension (-DQBINFER_BUILD_PYTHON=OFF).
configure_and_build() {
  local dir=$1
  shift
  mkdir -p "$dir"
  logged "$dir/configure.log" cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release \
    -DQBINFER_BUILD_PYTHON=OFF -DQBINFER_BUILD_TOOLS=ON -DQBINFER_BUILD_TESTS=$KERNEL_TESTS "$@"
  logged "$dir/build.log" cmake --build "$dir" -j "$JOBS" --target "${TARGETS[@]}"
  # Warnings on a 32- or 64-bit ARM target that x86 does not show are portability bugs in
  # waiting: list them (the build still counts as passed).
  local warnings
  warnings=$(grep -c 'warning:' "$dir/build.log" || true)
  if [[ $warnings -gt 0 ]]; then
    echo "$warnings compiler warning(s) in $dir/build.log:"
    # sed reads to the end: with `head`, sort could die of SIGPIPE (141) under pipefail.
    grep 'warning:' "$dir/build.log" | sort -u | sed -n '1,20p'
  fi
}

# run_kernel_tests LABEL CMD...: the kernel tests print their own report; exit status decides.
run_kernel_tests() {
  local label=$1
  shift
  echo "kernel tests, $label: $*"
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "kernel tests failed on $label"
  fi
  tail -n 5 "$log"
  rm -f "$log"
}

# ---------------------------------------------------------------------------------------------
phase "x86-64 build (build/cross-x86: ${TARGETS[*]})"
configure_and_build build/cross-x86
X86_BENCH=build/cross-x86/qbinfer-bench
phase_done

if [[ $KERNEL_TESTS == ON ]]; then
  phase "x86-64 kernel tests"
  run_kernel_tests "x86-64" build/cross-x86/qbinfer_kernel_tests
  phase_done
fi

phase "AArch64 cross-build (build/cross-aarch64: ${TARGETS[*]})"
# QBINFER_CROSS_SYSROOT explicitly: scripts/test-aarch64-python.sh points it elsewhere in its own
# build directory, and this one must stay on the cross toolchain's libc.
configure_and_build build/cross-aarch64 \
  -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
  -DQBINFER_CROSS_SYSROOT=/usr/aarch64-linux-gnu
A64_RUN=("$QEMU_AARCH64" -L /usr/aarch64-linux-gnu)
A64_BENCH=build/cross-aarch64/qbinfer-bench
phase_done

if [[ $KERNEL_TESTS == ON ]]; then
  phase "AArch64 kernel tests under qemu (default CPU: dotprod; cortex-a72: none)"
  run_kernel_tests "qemu-aarch64 (default CPU)" env -u QEMU_CPU "${A64_RUN[@]}" \
    build/cross-aarch64/qbinfer_kernel_tests
  run_kernel_tests "qemu-aarch64 -cpu cortex-a72" env QEMU_CPU=cortex-a72 "${A64_RUN[@]}" \
    build/cross-aarch64/qbinfer_kernel_tests
  phase_done
fi

if ((RUN_ARMV7)); then
  phase "ARMv7 cross-build (build/cross-armv7: ${TARGETS[*]})"
  configure_and_build build/cross-armv7 \
    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/arm-linux-gnueabihf.cmake \
    -DQBINFER_CROSS_SYSROOT=/usr/arm-linux-gnueabihf
  [[ -n "$QEMU_ARM" ]] || die "qemu-arm not found"
  A32_RUN=("$QEMU_ARM" -L /usr/arm-linux-gnueabihf)
  A32_BENCH=build/cross-armv7/qbinfer-bench
  phase_done
  if [[ $KERNEL_TESTS == ON ]]; then
    phase "ARMv7 kernel tests under qemu-arm (default CPU, cortex-a7: NEON; cortex-r5f: none)"
    # CI time: the NEON variants at full scale here; the portable ones (the C++ that x86-64 tests
    # at full scale) at a reduced scale on the Cortex-R5F below.
    echo "kernel tests, qemu-arm (default CPU): ${A32_RUN[*]} build/cross-armv7/qbinfer_kernel_tests --variant neon"
    A32_KT_LOG=$(mktemp)
    env -u QEMU_CPU "${A32_RUN[@]}" build/cross-armv7/qbinfer_kernel_tests --variant neon \
      >"$A32_KT_LOG" 2>&1 ||
      { cat "$A32_KT_LOG" >&2; die "kernel tests failed on qemu-arm (default CPU)"; }
    tail -n 5 "$A32_KT_LOG"
    # Every family with a NEON file must have run its NEON variant (HWCAP NEON + VFPv4 -> neon).
    for family in bitpack bconv dwconv conv2d pool elementwise epilogue fc bfc bconv_general \
      dwconv_dilated resize; do
      grep -qE "^$family +neon +[0-9]+ cases +ok" "$A32_KT_LOG" ||
        { cat "$A32_KT_LOG" >&2; die "ARMv7: no NEON variant of '$family' ran under qemu-arm"; }
    done
    rm -f "$A32_KT_LOG"
    # Fewer cases on the Cortex-A7: the same code, only the CPU's HWCAP differs.
    run_kernel_tests "qemu-arm -cpu cortex-a7" env QEMU_CPU=cortex-a7 "${A32_RUN[@]}" \
      build/cross-armv7/qbinfer_kernel_tests --scale 0.1 --variant neon
    # A Cortex-R5F has VFPv3-D16 and no NEON: the build's baseline. The NEON variants must be
    # skipped (HWCAP), and nothing may die of SIGILL.
    run_kernel_tests "qemu-arm -cpu cortex-r5f (no NEON)" env QEMU_CPU=cortex-r5f "${A32_RUN[@]}" \
      build/cross-armv7/qbinfer_kernel_tests --scale 0.05
    phase_done
  fi
fi

# ---------------------------------------------------------------------------------------------
MODEL_DIR=build/cross-x86/models
OUT_DIR=build/cross-x86/logits
mkdir -p "$MODEL_DIR" "$OUT_DIR"
MODELS=(python/qbinfer/models/digits_qbnet.qbw)
PY=${PYTHON:-$(command -v python || command -v python3 || true)}
if ((RUN_ZOO)) && [[ -n "$PY" ]] && "$PY" -c "import torch, weights_tools" >/dev/null 2>&1; then
  phase "zoo models: random weights and BN statistics, 72x72, converted to .qbw"
  # 72x72 keeps qemu quick and gives odd feature maps (9x9, 5x5, 3x3) where the kernels have
  # tails. Between them the two models use every op and encoding: SE (sigmoid, channel scale),
  # FP32 and INT8 depthwise, FP32/INT8/bitplane FC, zero and one padding.
  logged "$MODEL_DIR/convert.log" "$PY" - "$MODEL_DIR" <<'EOF'
import sys
import torch
from weights_tools.convert import randomize_bn, to_qbw
from weights_tools.zoo import build_model

out = sys.argv[1]
specs = [
    ("qb_net_small_se1_72", "qb_net_small", dict(se="se1"), dict(fc="int8")),
    ("qsb_net_small_se2_one_72", "qsb_net_small", dict(se="se2", padding="one"),
     dict(fc="bitplane8", depthwise="int8")),
]
for i, (name, arch, build_kw, convert_kw) in enumerate(specs):
    torch.manual_seed(i)
    model = build_model(arch, num_classes=1000, **build_kw)
    randomize_bn(model, i, (72, 72))
    model.eval()
    to_qbw(model, f"{out}/{name}.qbw", input_size=(72, 72), **convert_kw)
    print(name, build_kw, convert_kw)
EOF
  cat "$MODEL_DIR/convert.log"
  MODELS+=("$MODEL_DIR/qb_net_small_se1_72.qbw" "$MODEL_DIR/qsb_net_small_se2_one_72.qbw")
  phase_done
elif ((RUN_ZOO)); then
  echo
  echo "note: '${PY:-python} -c \"import torch, weights_tools\"' fails: testing the shipped digits model only"
fi

# bench LABEL LOG CMD...: runs qbinfer-bench, prints its ISA, latency and comparison lines, and
# dies with the whole output when it fails (a --compare mismatch exits 3).
bench() {
  local label=$1 log=$2
  shift 2
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  printf '  %-34s %s\n' "$label" "$(grep -E '^kernels' "$log" | sed 's/^kernels *//')"
  grep -E '^(latency|compare)' "$log" | sed 's/^/      /'
  if [[ $rc -ne 0 ]]; then
    cat "$log" >&2
    die "$label: qbinfer-bench exited $rc (${*})"
  fi
}

phase "whole models: x86-64 reference logits"
for m in "${MODELS[@]}"; do
  name=$(basename "$m" .qbw)
  echo "$m"
  bench "x86-64 best ISA" "$OUT_DIR/$name.x86.log" \
    "$X86_BENCH" "$m" --runs 10 --dump-logits "$OUT_DIR/$name.x86.f32"
  sed -n '/^top-/,/^[a-z]/p' "$OUT_DIR/$name.x86.log" | grep -vE '^(wrote|compare)' | sed 's/^/      /'
  bench "x86-64 QBINFER_ISA=scalar" "$OUT_DIR/$name.x86-scalar.log" \
    env QBINFER_ISA=scalar "$X86_BENCH" "$m" --runs 10 --dump-logits "$OUT_DIR/$name.x86-scalar.f32" \
    --compare "$OUT_DIR/$name.x86.f32"
done
phase_done

# Two timed runs are enough under emulation; the point is the comparison.
QEMU_RUNS=(--runs 2 --warmup 1)
phase "whole models: AArch64 under qemu-aarch64, compared with x86-64"
for m in "${MODELS[@]}"; do
  name=$(basename "$m" .qbw)
  ref="$OUT_DIR/$name.x86.f32"
  echo "$m"
  bench "neon, default CPU (dotprod)" "$OUT_DIR/$name.a64.log" \
    env -u QEMU_CPU "${A64_RUN[@]}" "$A64_BENCH" "$m" "${QEMU_RUNS[@]}" --compare "$ref"
  bench "neon, 2 threads" "$OUT_DIR/$name.a64-t2.log" \
    env -u QEMU_CPU "${A64_RUN[@]}" "$A64_BENCH" "$m" "${QEMU_RUNS[@]}" --threads 2 --compare "$ref"
  bench "neon, cortex-a72 (no dotprod)" "$OUT_DIR/$name.a64-a72.log" \
    env QEMU_CPU=cortex-a72 "${A64_RUN[@]}" "$A64_BENCH" "$m" "${QEMU_RUNS[@]}" --compare "$ref" \
    --dump-logits "$OUT_DIR/$name.a64-a72.f32"
  # The emulated Cortex-A72 has no SDOT/UDOT: a dotprod kernel there means the HWCAP check is
  # wrong (and the run would have died with SIGILL on a real A72).
  if grep -E '^kernels' "$OUT_DIR/$name.a64-a72.log" | grep -q dotprod; then
    die "a dotprod kernel was chosen on cortex-a72, which has no dotprod"
  fi
  bench "QBINFER_ISA=scalar" "$OUT_DIR/$name.a64-scalar.log" \
    env -u QEMU_CPU QBINFER_ISA=scalar "${A64_RUN[@]}" "$A64_BENCH" "$m" "${QEMU_RUNS[@]}" \
    --compare "$ref"
  # The portable kernels are the same C++ on every machine, built without FMA contraction
  # (CMakeLists.txt): their output must be bit for bit the x86-64 portable output.
  bench "scalar = x86-64 scalar, bit-exact" "$OUT_DIR/$name.a64-scalar-exact.log" \
    env -u QEMU_CPU QBINFER_ISA=scalar "${A64_RUN[@]}" "$A64_BENCH" "$m" --runs 1 --warmup 0 \
    --rtol 0 --atol 0 --compare "$OUT_DIR/$name.x86-scalar.f32"
done
phase_done

if ((RUN_ARMV7)); then
  phase "whole models: ARMv7 under qemu-arm, compared with x86-64"
  for m in "${MODELS[@]}"; do
    name=$(basename "$m" .qbw)
    echo "$m"
    bench "armv7 neon, default CPU" "$OUT_DIR/$name.armv7.log" \
      env -u QEMU_CPU "${A32_RUN[@]}" "$A32_BENCH" "$m" "${QEMU_RUNS[@]}" \
      --dump-logits "$OUT_DIR/$name.armv7.f32" --compare "$OUT_DIR/$name.x86.f32"
    grep -qE '^isa +neon$' "$OUT_DIR/$name.armv7.log" ||
      die "ARMv7: the NEON kernels were not picked on qemu-arm's default CPU"
    # The AArch64 NEON kernels without dotprod, compiled for ARMv7: the same arithmetic.
    bench "armv7 neon = aarch64 neon (a72), exact" "$OUT_DIR/$name.armv7-a64.log" \
      env -u QEMU_CPU "${A32_RUN[@]}" "$A32_BENCH" "$m" --runs 1 --warmup 0 --rtol 0 --atol 0 \
      --compare "$OUT_DIR/$name.a64-a72.f32"
    bench "armv7 neon, cortex-a7" "$OUT_DIR/$name.armv7-a7.log" \
      env QEMU_CPU=cortex-a7 "${A32_RUN[@]}" "$A32_BENCH" "$m" "${QEMU_RUNS[@]}" \
      --compare "$OUT_DIR/$name.x86.f32"
    grep -qE '^isa +neon$' "$OUT_DIR/$name.armv7-a7.log" ||
      die "ARMv7: the NEON kernels were not picked on a Cortex-A7"
    bench "armv7 scalar = x86-64 scalar, exact" "$OUT_DIR/$name.armv7-exact.log" \
      env -u QEMU_CPU QBINFER_ISA=scalar "${A32_RUN[@]}" "$A32_BENCH" "$m" --runs 1 --warmup 0 \
      --rtol 0 --atol 0 --compare "$OUT_DIR/$name.x86-scalar.f32"
    # No NEON in HWCAP: the portable kernels, picked without QBINFER_ISA.
    bench "armv7 cortex-r5f (no NEON), exact" "$OUT_DIR/$name.armv7-r5.log" \
      env QEMU_CPU=cortex-r5f "${A32_RUN[@]}" "$A32_BENCH" "$m" --runs 1 --warmup 0 \
      --rtol 0 --atol 0 --compare "$OUT_DIR/$name.x86-scalar.f32"
    grep -qE '^isa +scalar$' "$OUT_DIR/$name.armv7-r5.log" ||
      die "ARMv7: a CPU without NEON did not get the portable kernels"
  done
  phase_done
fi

if ((RUN_PYTHON)); then
  phase "Python extension on arm64 Debian under qemu (scripts/test-aarch64-python.sh)"
  bash scripts/test-aarch64-python.sh || die "scripts/test-aarch64-python.sh failed"
  phase_done
fi

print_timings
echo
echo "test-aarch64.sh: all passed"
