#!/usr/bin/env bash
# The wheel for this machine (linux_x86_64), as a user gets it: `pip wheel .` with
# QBINFER_RELEASE_WHEEL=1 (pyproject.toml: without qbinfer._testing), the wheel checked
# (scripts/check_wheel.py: tags, METADATA, RECORD hashes, the console script, the shipped models,
# nothing test-only), installed with pip into a fresh venv without the system's packages (numpy
# comes from the package index, as for a user) and run there from another directory:
# `qbinfer demo --json` must give the shipped digits model's recorded accuracy.
#
# usage: bash scripts/test-x86-wheel.sh [--out DIR]     (default dist/)
# environment: QBINFER_JOBS (default 2), PYTHON (default python, else python3)
# The CMake tree is pip install .'s (build/cp3XX-cp3XX-linux_x86_64), so after `pip install .`
# only qbinfer._core and qbinfer-bench relink.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-$(command -v python || command -v python3)}
OUT=dist
T0=$(date +%s)
die() { echo "test-x86-wheel.sh: FAILED: $*" >&2; exit 1; }
step() { echo "--- [$(($(date +%s) - T0))s] $*"; }
case ${1:-} in
  --out) OUT=${2:?--out needs a value} ;;
  "") ;;
  *) die "usage: bash scripts/test-x86-wheel.sh [--out DIR]" ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VERSION=$(awk -F'"' '/^version = / { print $2; exit }' pyproject.toml)
TAG=$("$PY" -c "import sys; v = '%d%d' % sys.version_info[:2]; print(f'cp{v}-cp{v}')")
WHEEL=$OUT/qbinfer-$VERSION-$TAG-linux_x86_64.whl

# The CMake tree is shared with `pip install .`, so the wheel is built the way that install
# configured it, or CMake starts the tree over: in pip's isolated build environment (CI's
# `pip install ".[tools,dev]"`; the cache then names a cmake under /tmp/pip-build-env-*) or with
# this environment's backend (`pip install --no-build-isolation .`, the README's development
# setup). A new tree: isolated unless this environment has the backend.
ISOLATION=()
CACHE=build/$TAG-linux_x86_64/CMakeCache.txt
if [[ -f "$CACHE" ]]; then
  grep -q '^CMAKE_COMMAND:INTERNAL=.*/pip-build-env-' "$CACHE" || ISOLATION=(--no-build-isolation)
elif "$PY" -c "import pybind11, scikit_build_core" >/dev/null 2>&1; then
  ISOLATION=(--no-build-isolation)
fi
if ((${#ISOLATION[@]})) && ! "$PY" -c "import pybind11, scikit_build_core" >/dev/null 2>&1; then
  "$PY" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" || die "cannot install the build backend"
fi

step "pip wheel . (QBINFER_RELEASE_WHEEL=1) -> $WHEEL"
rm -f "$WHEEL"
QBINFER_RELEASE_WHEEL=1 CMAKE_BUILD_PARALLEL_LEVEL=${QBINFER_JOBS:-2} \
  "$PY" -m pip wheel ${ISOLATION[@]+"${ISOLATION[@]}"} --no-deps -q -w "$OUT" . || die "pip wheel . failed"
[[ -f "$WHEEL" ]] || die "pip wheel did not write $WHEEL: $(ls "$OUT")"
EXT_SUFFIX=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
"$PY" scripts/check_wheel.py "$WHEEL" --platform linux_x86_64 --ext-suffix "$EXT_SUFFIX" ||
  die "$WHEEL is not a correct qbinfer wheel"

ENV_DIR=$(mktemp -d /tmp/qbinfer-wheel-env.XXXXXX)
trap 'rm -rf "$ENV_DIR"' EXIT
step "pip install into a fresh venv $ENV_DIR (no system packages)"
"$PY" -m venv "$ENV_DIR"
"$ENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" ||
  die "pip install $WHEEL into a fresh venv failed"
SITE=$("$ENV_DIR/bin/python" -c "import sysconfig; print(sysconfig.get_path('platlib'))")

step "qbinfer demo --json (the venv's console script, run from $ENV_DIR)"
(cd "$ENV_DIR" && bin/qbinfer demo --json >demo.json) || die "qbinfer demo --json failed"
cat "$ENV_DIR/demo.json"
"$PY" scripts/check_wheel.py --demo-json "$ENV_DIR/demo.json" --site-packages "$SITE" ||
  die "qbinfer demo --json from the wheel does not give the shipped model's accuracy"
"$ENV_DIR/bin/qbinfer-bench" "$SITE/qbinfer/models/digits_qbnet.qbw" --runs 1 --warmup 0 \
  >"$ENV_DIR/bench.log" 2>&1 || { cat "$ENV_DIR/bench.log"; die "the wheel's qbinfer-bench failed"; }
grep -E '^isa ' "$ENV_DIR/bench.log"
step "done: $WHEEL"
