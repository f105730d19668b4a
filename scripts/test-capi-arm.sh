#!/usr/bin/env bash
# The C API on Arm, as a device application uses it: libqbinfer cross-compiled for AArch64 and
# ARMv7 (armhf), installed into a prefix inside a per-target root, the example
# (examples/c/classify.c) configured against that installed package with find_package(qbinfer)
# and linked twice (libqbinfer.so and libqbinfer.a), then run under qemu-user on an image, its
# top-5 compared with the Python API's predict on the same image on this x86-64 machine:
#
#   1. reference: the installed Python package (x86-64) writes the image (a held-out digit,
#      resized through the recipe's downscale path, as a PPM) and Model.predict's top-5 with
#      the best ISA and with QBINFER_ISA=scalar                     build/capi-arm/reference
#   2. per target: libqbinfer in build/cross-<target> (the build directories of
#      scripts/test-aarch64.sh: after it, only the C API's two files compile), installed to
#      build/capi-arm/<target>/root/usr/local; the example built against it
#   3. runs the example under qemu, twice: with the kernels the target picks (NEON on AArch64), the same
#      top-5 classes as x86-64's best ISA with probabilities within 1e-5 + 1e-4 x p (float sums
#      run in another order); with QBINFER_ISA=scalar (the portable kernels), the x86-64 scalar
#      result bit for bit (every printed digit of the probabilities)
#   4. tests/c (capi_tests: damaged, hostile and non-regular files, bad arguments, the fuzz
#      corpus; hpp_test: the C++ layer) built against the same package and run under qemu
#
# usage: bash scripts/test-capi-arm.sh [--no-armv7]
# environment: QBINFER_JOBS (parallel compile jobs, default 2), PYTHON (default python, else
#              python3; must import qbinfer, e.g. after `pip install .`).
# Missing tools (cmake, the cross compilers, qemu-user) are installed with apt-get (root or
# sudo). Exits non-zero naming the failed step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${QBINFER_JOBS:-2}
RUN_ARMV7=1
for arg in "$@"; do
  case "$arg" in
    --no-armv7) RUN_ARMV7=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-capi-arm.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

STEP=""
die() {
  echo "test-capi-arm.sh: FAILED${STEP:+ in '$STEP'}: $*" >&2
  exit 1
}
step() {
  STEP=$1
  echo
  echo "=== $STEP"
}
# have, logged, apt_install
source scripts/lib.sh

step "tools"
need=()
have cmake || need+=(cmake)
have aarch64-linux-gnu-g++ || need+=(g++-aarch64-linux-gnu)
((RUN_ARMV7)) && ! have arm-linux-gnueabihf-g++ && need+=(g++-arm-linux-gnueabihf)
{ have qemu-aarch64 || have qemu-aarch64-static; } || need+=(qemu-user)
((RUN_ARMV7)) && ! { have qemu-arm || have qemu-arm-static; } && need+=(qemu-user)
apt_install ${need[@]+"${need[@]}"}
QEMU_AARCH64=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
QEMU_ARM=$(command -v qemu-arm || command -v qemu-arm-static || true)
PY=${PYTHON:-$(command -v python || command -v python3 || true)}
[[ -n "$PY" ]] && "$PY" -c "import qbinfer" 2>/dev/null ||
  die "'${PY:-python} -c \"import qbinfer\"' fails: install the package first (pip install .)"

OUT=build/capi-arm
MODEL=python/qbinfer/models/digits_qbnet.qbw
mkdir -p "$OUT/reference"

step "reference: Python's Model.predict on x86-64 (best ISA and scalar)"
# The image: a held-out digit repeated 3x3 and cut to 96 x 81, so the recipe resizes (81 ->
# 32 on the short side) and crops: the filters and the crop are part of what is compared.
cat >"$OUT/reference/predict.py" <<'EOF'
import os
import sys

import numpy as np

import qbinfer

model_path, out = sys.argv[1], sys.argv[2]
models = os.path.dirname(model_path)
with np.load(os.path.join(models, "digits_holdout.npz"), allow_pickle=False) as z:
    digit = z["images"][5]
pixels = np.ascontiguousarray(np.repeat(np.repeat(digit, 3, axis=0), 3, axis=1)[:, 7:88])
h, w = pixels.shape[:2]
with open(os.path.join(out, "digit_96x81.ppm"), "wb") as f:
    f.write(b"P6\n%d %d\n255\n" % (w, h) + pixels.tobytes())
model = qbinfer.load(model_path, threads=1)
names = model.class_names
with open(os.path.join(out, "top5." + os.environ.get("QBINFER_ISA", "best")), "w") as f:
    for name, p in model.predict(pixels, top_k=5):
        f.write("%d %.17g\n" % (names.index(name), p))
print(model.isa, model.predict(pixels, top_k=5))
EOF
logged "$OUT/reference/python.log" "$PY" "$OUT/reference/predict.py" "$MODEL" "$OUT/reference"
logged "$OUT/reference/python-scalar.log" env QBINFER_ISA=scalar \
  "$PY" "$OUT/reference/predict.py" "$MODEL" "$OUT/reference"
cat "$OUT/reference/python.log" "$OUT/reference/python-scalar.log" | sed 's/^/    /' 
IMAGE=$OUT/reference/digit_96x81.ppm

# compare LABEL OUTPUT REFERENCE EXACT: the example's "rank index probability name" lines
# against the reference's "index probability" lines.
compare() {
  local label=$1 output=$2 reference=$3 exact=$4
  "$PY" - "$output" "$reference" "$exact" <<'EOF' || die "$label: top-5 differs from Python's"
import sys

output, reference, exact = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
lines = open(output).read().splitlines()
start = next(i for i, line in enumerate(lines) if line.startswith("top-"))
got = [(int(l.split()[1]), l.split()[2]) for l in lines[start + 1 :]]
want = [tuple(l.split()) for l in open(reference).read().splitlines()]
want = [(int(i), p) for i, p in want]
ok = [g[0] for g in got] == [w[0] for w in want]
for (gi, gp), (wi, wp) in zip(got, want):
    if exact:
        ok = ok and gp == wp
    else:
        ok = ok and abs(float(gp) - float(wp)) <= 1e-5 + 1e-4 * float(wp)
print("    C (qemu): " + "  ".join("%d %s" % g for g in got))
print("    Python  : " + "  ".join("%d %s" % w for w in want) + ("  (exact)" if exact else ""))
sys.exit(0 if ok and len(got) == 5 else 1)
EOF
}

# target NAME TOOLCHAIN SYSROOT QEMU...: builds and installs libqbinfer, builds the example
# against the installed package (shared and static), runs both under qemu.
run_target() {
  local name=$1 toolchain=$2 sysroot=$3
  shift 3
  local qemu=("$@" -L "$sysroot")
  local build=build/cross-$name
  local root=$OUT/$name/root
  local prefix=$root/usr/local
  step "$name: libqbinfer cross-built in $build, installed to $prefix"
  mkdir -p "$build"
  logged "$build/capi-configure.log" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DQBINFER_CROSS_SYSROOT="$sysroot" \
    -DQBINFER_BUILD_PYTHON=OFF -DQBINFER_BUILD_C_API=ON
  logged "$build/capi-build.log" cmake --build "$build" -j "$JOBS" \
    --target qbinfer_static --target qbinfer_shared
  rm -rf "$root"
  logged "$build/capi-install.log" cmake --install "$build" --component capi --prefix "$prefix"
  find "$prefix" -type f | sort | sed 's/^/    /'
  local linkage
  for linkage in shared static; do
    step "$name: examples/c against the installed package ($linkage library)"
    local ex=$OUT/$name/classify-$linkage
    local static=OFF
    [[ $linkage == static ]] && static=ON
    # The toolchain file limits package searches to the target's libc root (find_package would
    # look for $prefix inside it): qbinfer_DIR names the installed package's directory.
    logged "$OUT/$name/classify-$linkage.configure.log" cmake -S examples/c -B "$ex" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE="$PWD/$toolchain" \
      -DQBINFER_CROSS_SYSROOT="$sysroot" -Dqbinfer_DIR="$PWD/$prefix/lib/cmake/qbinfer" \
      -Dqbinfer_USE_STATIC_LIBS=$static
    logged "$OUT/$name/classify-$linkage.build.log" cmake --build "$ex" -j "$JOBS"
    file "$ex/classify" 2>/dev/null | sed 's/^/    /' || true
    local run=$OUT/$name/classify-$linkage
    # The kernels the target picks (NEON on AArch64; on ARMv7 those of this build): the same
    # classes as x86-64's best ISA, probabilities within tolerance. The portable kernels: bit
    # for bit the x86-64 scalar result.
    logged "$run.out" "${qemu[@]}" "$ex/classify" "$MODEL" "$IMAGE"
    head -n 3 "$run.out" | sed 's/^/    /'
    compare "$name $linkage" "$run.out" "$OUT/reference/top5.best" 0
    logged "$run.scalar.out" env QBINFER_ISA=scalar "${qemu[@]}" "$ex/classify" "$MODEL" "$IMAGE"
    echo "    QBINFER_ISA=scalar:"
    compare "$name $linkage (scalar)" "$run.scalar.out" "$OUT/reference/top5.scalar" 1
  done
  step "$name: tests/c (damaged files, bad arguments; static library) under qemu"
  local tests=$OUT/$name/capi-tests
  logged "$tests.configure.log" cmake -S tests/c -B "$tests" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$PWD/$toolchain" -DQBINFER_CROSS_SYSROOT="$sysroot" \
    -Dqbinfer_DIR="$PWD/$prefix/lib/cmake/qbinfer"
  logged "$tests.build.log" cmake --build "$tests" -j "$JOBS"
  rm -rf "$tests.work" && mkdir -p "$tests.work"
  logged "$tests.out" "${qemu[@]}" "$tests/capi_tests" "$MODEL" "$tests.work" fuzz/corpus/*.qbw
  grep -E '^(FAIL|[0-9]+ checks)' "$tests.out" | sed 's/^/    /'
  grep -q '^[0-9]* checks, 0 failures$' "$tests.out" || die "$name: tests/c/capi_tests failed"
  cp "$MODEL" "$tests.work/damaged.qbw" && printf 'X' | dd of="$tests.work/damaged.qbw" bs=1 \
    seek=200 conv=notrunc status=none
  logged "$tests.hpp.out" "${qemu[@]}" "$tests/hpp_test" "$MODEL" "$tests.work/damaged.qbw"
  grep -c '^ok' "$tests.hpp.out" | sed 's/^/    hpp_test: /; s/$/ checks ok/'
}

run_target aarch64 cmake/toolchains/aarch64-linux-gnu.cmake /usr/aarch64-linux-gnu \
  env -u QEMU_CPU "$QEMU_AARCH64"
if ((RUN_ARMV7)); then
  [[ -n "$QEMU_ARM" ]] || die "qemu-arm not found"
  run_target armv7 cmake/toolchains/arm-linux-gnueabihf.cmake /usr/arm-linux-gnueabihf "$QEMU_ARM"
fi

echo
echo "test-capi-arm.sh: all passed"
