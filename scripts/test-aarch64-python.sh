#!/usr/bin/env bash
# The Python package on 64-bit Arm, without Arm hardware: the aarch64 wheel, cross-built for
# Debian bookworm's arm64 Python 3.11, installed with pip in a venv of that Python under
# qemu-aarch64 and run, then the Python API of that install compared with the x86-64 Python on
# this machine on the shipped digits model and its held-out images
# (scripts/aarch64_python_check.py).
#
#   1. scripts/build-arm-wheels.sh --arch aarch64: the arm64 Debian root in
#      build/cross-aarch64/debian-arm64 (scripts/debian-root.sh: debootstrap --foreign and
#      dpkg-deb -x, about 56 MB download, 280 MB on disk; kept for reruns), the wheel
#      build/cross-aarch64/dist/qbinfer-VERSION-cp311-cp311-linux_aarch64.whl (pip wheel with
#      cmake/toolchains/aarch64-linux-gnu.cmake; CMake tree build/cross-aarch64/wheel), checked
#      (scripts/check_wheel.py), `pip install`ed in build/cross-aarch64/wheel-env and run:
#      `qbinfer demo --json` must give the shipped model's recorded accuracy, qbinfer-bench NEON
#   2. scripts/aarch64_python_check.py with the x86-64 Python (the reference), then with the
#      venv's arm64 python3.11 under qemu-aarch64 (the installed wheel), logits compared
#
# usage: bash scripts/test-aarch64-python.sh
# environment: QBINFER_JOBS (default 2), PYTHON (the x86-64 CPython 3.11 with qbinfer installed,
#              for the reference logits and to run pip wheel; default python, else python3),
#              DEBIAN_MIRROR (default http://deb.debian.org/debian)
# Needs root (or sudo) for apt-get (qemu-user, debootstrap, the cross compiler when missing), and
# root for debootstrap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROOT=$PWD/build/cross-aarch64/debian-arm64
BUILD=build/cross-aarch64
PY=${PYTHON:-$(command -v python || command -v python3)}
T0=$(date +%s)

die() { echo "test-aarch64-python.sh: FAILED: $*" >&2; exit 1; }
step() { echo "--- [$(($(date +%s) - T0))s] $*"; }

step "the aarch64 wheel: scripts/build-arm-wheels.sh --arch aarch64"
bash scripts/build-arm-wheels.sh --arch aarch64 --out "$BUILD/dist" ||
  die "scripts/build-arm-wheels.sh --arch aarch64 failed"
QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
ENV_PY=("$QEMU" -L "$ROOT" "$PWD/build/cross-aarch64/wheel-env/bin/python")

# ---------------------------------------------------------------------------------------------
REF=$BUILD/digits_x86.npz
if "$PY" -c "import qbinfer" >/dev/null 2>&1; then
  step "x86-64 reference: $PY (the installed qbinfer)"
  "$PY" scripts/aarch64_python_check.py --save "$REF" || die "the x86-64 Python run failed"
else
  echo "note: '$PY -c \"import qbinfer\"' fails (pip install . first): no x86-64 comparison"
  REF=""
fi

step "arm64: the installed wheel, Debian's python3.11 under qemu-aarch64 (emulated; timings are not a Pi's)"
"${ENV_PY[@]}" scripts/aarch64_python_check.py ${REF:+--compare "$REF"} \
  || die "the arm64 Python run failed"
step "done"
