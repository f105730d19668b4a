#!/usr/bin/env bash
# The Python extension on 64-bit Arm, without Arm hardware: cross-compiles qbinfer._core against
# Debian bookworm's arm64 Python 3.11 and runs the Python API with that Python under
# qemu-aarch64, on the shipped digits model and its held-out images, comparing the logits with
# the x86-64 Python on this machine (scripts/aarch64_python_check.py).
#
#   1. an arm64 Debian root in build/cross-aarch64/debian-arm64: debootstrap's first stage
#      (--foreign, no chroot) fetches python3.11, libpython3.11-dev and python3-numpy with
#      their dependencies, and every fetched package is unpacked with dpkg-deb, which is all
#      that running Python from it needs (about 56 MB download, 280 MB on disk; kept for reruns)
#   2. qbinfer._core cross-compiled with cmake/toolchains/aarch64-linux-gnu.cmake in
#      build/cross-aarch64/python, with the root's Python headers (FindPython runs the arm64
#      interpreter through qemu, so the suffix is .cpython-311-aarch64-linux-gnu.so) and the
#      host's pybind11 (pip-installed when missing)
#   3. python/qbinfer plus that module laid out in build/cross-aarch64/python/site, run by the
#      arm64 python3.11 under qemu-aarch64
#
# usage: bash scripts/test-aarch64-python.sh
# environment: QBINFER_JOBS (default 2), PYTHON (the x86-64 Python with qbinfer installed, for
#              the reference logits; default python, else python3), DEBIAN_MIRROR (default
#              http://deb.debian.org/debian)
# Needs root (or sudo) for apt-get (qemu-user, debootstrap, the cross compiler when missing), and
# root for debootstrap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${QBINFER_JOBS:-2}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$PWD/build/cross-aarch64/debian-arm64
BUILD=build/cross-aarch64/python
SITE=$BUILD/site
PY=${PYTHON:-$(command -v python || command -v python3)}
T0=$(date +%s)

die() { echo "test-aarch64-python.sh: FAILED: $*" >&2; exit 1; }
step() { echo "--- [$(($(date +%s) - T0))s] $*"; }
# have, logged, apt_install
source scripts/lib.sh

step "tools"
need=()
have debootstrap || need+=(debootstrap)
have aarch64-linux-gnu-g++ || need+=(g++-aarch64-linux-gnu)
{ have qemu-aarch64 || have qemu-aarch64-static; } || need+=(qemu-user)
have cmake || need+=(cmake)
apt_install ${need[@]+"${need[@]}"}
QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
if ! "$PY" -c "import pybind11" >/dev/null 2>&1; then
  logged /tmp/qbinfer-pip.log "$PY" -m pip install "pybind11>=2.12"
fi
PYBIND11_DIR=$("$PY" -c "import pybind11; print(pybind11.get_cmake_dir())")

# ---------------------------------------------------------------------------------------------
if [[ ! -f "$ROOT/.qbinfer-ready" ]]; then
  step "arm64 Debian bookworm root in $ROOT (debootstrap --foreign, then dpkg-deb -x)"
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  # --foreign: download and unpack only, no chroot (that would need binfmt_misc for qemu).
  logged build/cross-aarch64/debootstrap.log debootstrap --foreign --arch=arm64 \
    --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib,libpython3.11-dev,python3-numpy \
    bookworm "$ROOT" "$MIRROR"
  # The first stage unpacks only the essential packages; the rest wait in the archive cache for
  # the second stage, which needs a chroot. Unpacking them all is enough to run Python.
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  rm -f "$ROOT"/var/cache/apt/archives/*.deb  # 56 MB no longer needed
  # numpy links libblas.so.3 / liblapack.so.3, links that update-alternatives makes in the
  # packages' postinst scripts, which never ran.
  lib=$ROOT/usr/lib/aarch64-linux-gnu
  ln -sfn blas/libblas.so.3 "$lib/libblas.so.3"
  ln -sfn lapack/liblapack.so.3 "$lib/liblapack.so.3"
  touch "$ROOT/.qbinfer-ready"
fi
ARM_PY=("$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11")
"${ARM_PY[@]}" -c "import platform, numpy; print('arm64 root:', platform.machine(), 'Python', platform.python_version(), 'numpy', numpy.__version__)" \
  || die "the arm64 Python in $ROOT does not run under $QEMU"

# ---------------------------------------------------------------------------------------------
step "cross-compiling qbinfer._core in $BUILD"
VERSION=$(awk -F'"' '/^version = / { print $2; exit }' pyproject.toml)
EXT_SUFFIX=$("${ARM_PY[@]}" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
# QBINFER_CROSS_SYSROOT=the Debian root: CMake searches headers there, and FindPython runs the
# arm64 interpreter through the toolchain's emulator (qemu -L the root) to learn its include
# dir and SOABI. pybind11's own interpreter queries cannot go through an emulator, so it gets
# the answers directly (PYBIND11_USE_CROSSCOMPILING). Debian's Python.h includes
# <aarch64-linux-gnu/python3.11/pyconfig.h>: -idirafter adds the root's /usr/include after the
# cross compiler's own headers, so its glibc headers never shadow the toolchain's.
logged "$BUILD.configure.log" cmake -S . -B "$BUILD" \
  -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
  -DQBINFER_CROSS_SYSROOT="$ROOT" -DCMAKE_BUILD_TYPE=Release \
  -DSKBUILD_PROJECT_VERSION="$VERSION" \
  -DQBINFER_BUILD_PYTHON=ON -DQBINFER_BUILD_TOOLS=OFF \
  -DPython_EXECUTABLE="$ROOT/usr/bin/python3.11" \
  -Dpybind11_DIR="$PYBIND11_DIR" -DPYBIND11_USE_CROSSCOMPILING=ON \
  -DPYTHON_MODULE_EXTENSION="$EXT_SUFFIX" -DPYTHON_IS_DEBUG=0 -DPYTHON_MODULE_DEBUG_POSTFIX= \
  "-DCMAKE_CXX_FLAGS=-idirafter $ROOT/usr/include"
logged "$BUILD.build.log" cmake --build "$BUILD" -j "$JOBS" --target _core
so=$(ls "$BUILD"/_core*.so)
echo "$so: $(aarch64-linux-gnu-readelf -h "$so" | sed -n 's/^ *Machine: *//p')"

step "package in $SITE"
rm -rf "$SITE"
mkdir -p "$SITE"
cp -r python/qbinfer "$SITE/qbinfer"
rm -rf "$SITE/qbinfer/__pycache__" "$SITE"/qbinfer/_core*.so
cp "$so" "$SITE/qbinfer/"
echo "$SITE/qbinfer: $(ls "$SITE/qbinfer" | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
REF=$BUILD/digits_x86.npz
if "$PY" -c "import qbinfer" >/dev/null 2>&1; then
  step "x86-64 reference: $PY (the installed qbinfer)"
  "$PY" scripts/aarch64_python_check.py --save "$REF" || die "the x86-64 Python run failed"
else
  echo "note: '$PY -c \"import qbinfer\"' fails (pip install . first): no x86-64 comparison"
  REF=""
fi

step "arm64: Debian's python3.11 under qemu-aarch64 (emulated; timings are not a Pi's)"
PYTHONPATH=$SITE "${ARM_PY[@]}" scripts/aarch64_python_check.py ${REF:+--compare "$REF"} \
  || die "the arm64 Python run failed"
step "done"
