#!/usr/bin/env bash
# Style gate, run by .ci/run before the tests: ruff (lint and format) on all Python,
# clang-format on csrc/ (dry run, fails on any difference), mypy on the runtime package.
# Fix locally with:  ruff check --fix . && ruff format . && clang-format -i $(git ls-files 'csrc/*.cc' 'csrc/*.h')
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
git ls-files -z 'csrc/*.cc' 'csrc/*.h' | xargs -0 clang-format --dry-run --Werror
mypy
echo "style: ruff, ruff format, clang-format, mypy clean"
