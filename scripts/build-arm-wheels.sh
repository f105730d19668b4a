#!/usr/bin/env bash
# Wheels for the Raspberry Pi without one: qbinfer-VERSION-cp311-cp311-linux_aarch64.whl (Raspberry
# Pi OS 64-bit / Debian bookworm arm64) and ...-linux_armv7l.whl (Raspberry Pi OS 32-bit / Debian
# bookworm armhf), cross-built on x86-64 by scikit-build-core (`pip wheel`) with the toolchain
# files in cmake/toolchains/, then each installed with pip in a venv of the Debian root's own
# Python under qemu-user and run: `qbinfer demo --json` on the shipped digits model.
#
# For each architecture:
#   1. the Debian bookworm root (scripts/debian-root.sh): build/cross-aarch64/debian-arm64 (the one
#      scripts/test-aarch64-python.sh makes) or build/cross-armv7/debian-armhf
#   2. `pip wheel .` with QBINFER_RELEASE_WHEEL=1 (pyproject.toml: no qbinfer._testing), the
#      toolchain file, no host Python hints (cmake.python-hints=false): CMake's FindPython runs
#      the root's python3.11 through the toolchain's emulator (qemu -L the root) for its headers
#      and SOABI; pybind11 gets the module suffix directly. _PYTHON_HOST_PLATFORM names the wheel's
#      platform; the interpreter tag is the host Python's, so the host must be CPython 3.11 (the
#      bookworm Python). CMake tree: build/cross-<arch>/wheel (kept: reruns are incremental).
#   3. unless --no-check: a venv (--system-site-packages, for Debian's numpy) made by the root's
#      python3.11 under qemu, pip run from pip's own wheel (the root has no pip; the wheel is
#      fetched from PyPI once into build/pip), `pip install --no-index` of the new wheel (so its
#      dependencies must already be satisfied: numpy from Debian), then the installed `qbinfer`
#      console script: `qbinfer demo --json`, whose accuracy must equal the one recorded in the
#      shipped model's record (python/qbinfer/models/digits_qbnet.json), and `qbinfer-bench` on
#      the same model, whose `isa` must be neon.
#
# usage: bash scripts/build-arm-wheels.sh [--arch aarch64|armv7l|all] [--no-check] [--out DIR]
#   --arch      which wheels (default all)
#   --no-check  build only
#   --out DIR   where the wheels go (default dist/)
# environment: QBINFER_JOBS (default 2), PYTHON (the x86-64 CPython 3.11 that runs pip wheel;
#              default python, else python3), DEBIAN_MIRROR (default http://deb.debian.org/debian)
# Needs root (or sudo) for apt-get (debootstrap, qemu-user, the cross compilers when missing),
# and root for debootstrap. Timings (qemu) say nothing about a Pi's speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${QBINFER_JOBS:-2}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-$(command -v python || command -v python3)}
ARCHES=(aarch64 armv7l)
CHECK=1
OUT=dist
T0=$(date +%s)

die() { echo "build-arm-wheels.sh: FAILED: $*" >&2; exit 1; }
step() { echo "--- [$(($(date +%s) - T0))s] $*"; }
usage() { sed -n '/^# usage:/,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//'; }
# have, logged, apt_install; debian_root
source scripts/lib.sh
source scripts/debian-root.sh

while (($#)); do
  case $1 in
    --arch)
      [[ $# -ge 2 ]] || die "--arch needs a value"
      case $2 in
        aarch64 | armv7l) ARCHES=("$2") ;;
        all) ARCHES=(aarch64 armv7l) ;;
        *) die "--arch: '$2' is not aarch64, armv7l or all" ;;
      esac
      shift
      ;;
    --no-check) CHECK=0 ;;
    --out)
      [[ $# -ge 2 ]] || die "--out needs a value"
      OUT=$2
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Per architecture: Debian's name, the cross compiler package, qemu, the wheel's platform.
arch_config() {
  case $1 in
    aarch64)
      DEB_ARCH=arm64 GXX=aarch64-linux-gnu-g++ GXX_PKG=g++-aarch64-linux-gnu
      QEMU_NAME=qemu-aarch64 TOOLCHAIN=cmake/toolchains/aarch64-linux-gnu.cmake
      ROOT=$PWD/build/cross-aarch64/debian-arm64 WORK=build/cross-aarch64
      ;;
    armv7l)
      DEB_ARCH=armhf GXX=arm-linux-gnueabihf-g++ GXX_PKG=g++-arm-linux-gnueabihf
      QEMU_NAME=qemu-arm TOOLCHAIN=cmake/toolchains/arm-linux-gnueabihf.cmake
      ROOT=$PWD/build/cross-armv7/debian-armhf WORK=build/cross-armv7
      ;;
  esac
}

step "tools"
need=()
have debootstrap || need+=(debootstrap)
have cmake || need+=(cmake)
{ have qemu-aarch64 || have qemu-aarch64-static; } || need+=(qemu-user)
for arch in "${ARCHES[@]}"; do
  arch_config "$arch"
  have "$GXX" || need+=("$GXX_PKG")
done
apt_install ${need[@]+"${need[@]}"}
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) or sys.implementation.name != "cpython")' ||
  die "$PY is not CPython 3.11: the wheels' cp311 tag comes from the Python that builds them (set PYTHON)"
# cmake.toolchain-file and cmake.python-hints need scikit-build-core 1.1; --no-build-isolation
# keeps the CMake trees incremental, so the backend comes from this environment.
if ! "$PY" - <<'EOF' >/dev/null 2>&1
import pybind11, scikit_build_core
from packaging.version import Version
assert Version(scikit_build_core.__version__) >= Version("1.1")
EOF
then
  logged /tmp/qbinfer-pip.log "$PY" -m pip install "scikit-build-core>=1.1" "pybind11>=2.12"
fi
VERSION=$(awk -F'"' '/^version = / { print $2; exit }' pyproject.toml)
# The toolchain files search packages in the target's root only, so pybind11 (headers and CMake
# code, nothing compiled) is named directly.
PYBIND11_DIR=$("$PY" -c "import pybind11; print(pybind11.get_cmake_dir())")

# pip for the roots: pip's wheel runs as `python pip-X.whl/pip ...` without being installed.
PIP_WHL=$(ls build/pip/pip-*-py3-none-any.whl 2>/dev/null | sort -V | tail -n 1 || true)
if ((CHECK)) && [[ -z "$PIP_WHL" ]]; then
  step "pip's wheel from PyPI into build/pip (for the Arm roots, which have no pip)"
  logged /tmp/qbinfer-pip.log "$PY" -m pip download --no-deps --only-binary=:all: -d build/pip "pip>=24"
  PIP_WHL=$(ls build/pip/pip-*-py3-none-any.whl | sort -V | tail -n 1)
fi

BUILT=()
for arch in "${ARCHES[@]}"; do
  arch_config "$arch"
  QEMU=$(command -v "$QEMU_NAME" || command -v "$QEMU_NAME-static") || die "no $QEMU_NAME"
  step "$arch: Debian bookworm $DEB_ARCH root"
  debian_root "$DEB_ARCH" "$ROOT" "$MIRROR"
  ARM_PY=("$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11")
  EXT_SUFFIX=$("${ARM_PY[@]}" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))") ||
    die "the $DEB_ARCH Python in $ROOT does not run under $QEMU"
  echo "$ROOT/usr/bin/python3.11: extension suffix $EXT_SUFFIX"

  step "$arch: pip wheel (scikit-build-core, $TOOLCHAIN; CMake tree $WORK/wheel)"
  WHEEL=$OUT/qbinfer-$VERSION-cp311-cp311-linux_$arch.whl
  rm -f "$WHEEL"
  # SETUPTOOLS_EXT_SUFFIX: scikit-build-core's SKBUILD_SOABI for the target, not the host.
  # QBINFER_CROSS_SYSROOT=the Debian root: CMake searches headers there, and FindPython runs the
  # root's interpreter through the toolchain's emulator (qemu -L the root) to learn its include
  # dir and SOABI (cmake.python-hints=false: no host Python_* hints). pybind11's own interpreter
  # queries cannot go through an emulator, so it gets the answers directly
  # (PYBIND11_USE_CROSSCOMPILING, PYTHON_MODULE_EXTENSION). Debian's Python.h includes
  # <TRIPLET/python3.11/pyconfig.h>: -idirafter adds the root's /usr/include after the cross
  # compiler's own headers, so its glibc headers never shadow the toolchain's.
  QBINFER_RELEASE_WHEEL=1 _PYTHON_HOST_PLATFORM=linux-$arch SETUPTOOLS_EXT_SUFFIX=$EXT_SUFFIX \
    CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
    logged "$WORK/wheel.log" "$PY" -m pip wheel --no-build-isolation --no-deps -w "$OUT" . \
    -C cmake.toolchain-file="$TOOLCHAIN" -C cmake.python-hints=false \
    -C build-dir="$WORK/wheel" \
    -C cmake.define.QBINFER_CROSS_SYSROOT="$ROOT" \
    -C cmake.define.Python_EXECUTABLE="$ROOT/usr/bin/python3.11" \
    -C cmake.define.pybind11_DIR="$PYBIND11_DIR" -C cmake.define.PYBIND11_USE_CROSSCOMPILING=ON \
    -C cmake.define.PYTHON_MODULE_EXTENSION="$EXT_SUFFIX" \
    -C cmake.define.PYTHON_IS_DEBUG=0 -C cmake.define.PYTHON_MODULE_DEBUG_POSTFIX= \
    -C "cmake.define.CMAKE_CXX_FLAGS=-idirafter $ROOT/usr/include"
  [[ -f "$WHEEL" ]] || die "pip wheel did not write $WHEEL (see $WORK/wheel.log): $(ls "$OUT")"
  "$PY" scripts/check_wheel.py "$WHEEL" --platform "linux_$arch" --ext-suffix "$EXT_SUFFIX" ||
    die "$WHEEL is not a correct qbinfer wheel"
  BUILT+=("$WHEEL")

  ((CHECK)) || continue
  ENV_DIR=$PWD/$WORK/wheel-env
  step "$arch: pip install in a venv of the $DEB_ARCH root's python3.11 (qemu): $ENV_DIR"
  rm -rf "$ENV_DIR"
  "${ARM_PY[@]}" -m venv --without-pip --system-site-packages "$ENV_DIR" ||
    die "python3.11 -m venv in the $DEB_ARCH root failed"
  ENV_PY=("$QEMU" -L "$ROOT" "$ENV_DIR/bin/python")
  "${ENV_PY[@]}" "$PIP_WHL/pip" install --no-index --no-compile --disable-pip-version-check "$WHEEL" ||
    die "pip install $WHEEL in the $DEB_ARCH root failed"
  [[ -f "$ENV_DIR/bin/qbinfer" ]] || die "pip installed no qbinfer console script"

  step "$arch: qbinfer demo --json (the installed console script, under qemu; emulated timings)"
  # The console script is a Python script whose #! line names the venv's python; without
  # binfmt_misc the host cannot exec an Arm interpreter, so qemu runs that python on it.
  DEMO_JSON=$WORK/wheel-demo.json
  "${ENV_PY[@]}" "$ENV_DIR/bin/qbinfer" demo --json >"$DEMO_JSON" || die "qbinfer demo --json failed"
  cat "$DEMO_JSON"
  "$PY" scripts/check_wheel.py --demo-json "$DEMO_JSON" \
    --site-packages "$ENV_DIR/lib/python3.11/site-packages" ||
    die "qbinfer demo --json from the $arch wheel does not give the shipped model's accuracy"
  BENCH_LOG=$WORK/wheel-bench.log
  "$QEMU" -L "$ROOT" "$ENV_DIR/bin/qbinfer-bench" \
    "$ENV_DIR/lib/python3.11/site-packages/qbinfer/models/digits_qbnet.qbw" --runs 1 --warmup 0 \
    >"$BENCH_LOG" 2>&1 || { cat "$BENCH_LOG"; die "the wheel's qbinfer-bench failed"; }
  grep -E '^isa ' "$BENCH_LOG"
  grep -qE '^isa +neon$' "$BENCH_LOG" || die "the wheel's qbinfer-bench does not run the NEON kernels"
done
step "done: ${BUILT[*]}"
