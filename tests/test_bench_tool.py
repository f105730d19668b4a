"""qbinfer-bench (csrc/tools/qbinfer_bench.cc), the C++ command-line runner: strings from the
file (model name, producer, class names) are printed quoted, their control characters shown
as '?', so a hostile file can neither drive the terminal nor forge a line (issue 14).

The tool is the one `pip install .` puts beside the interpreter's scripts (pyproject.toml
builds it with the extension), or QBINFER_BENCH_BIN when that names a built binary, else it is
built with CMake into build/tools (as docs/raspberry-pi.md shows)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

import qbinfer

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"


@pytest.fixture(scope="module")
def bench() -> str:
    given = os.environ.get("QBINFER_BENCH_BIN")
    if given:
        return given
    # pip install builds it with the extension and puts it beside the interpreter's scripts.
    installed = os.path.join(sysconfig.get_path("scripts"), "qbinfer-bench")
    if os.path.isfile(installed) and os.access(installed, os.X_OK):
        return installed
    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake (a build requirement) is needed to build qbinfer-bench"
    build = os.path.join(ROOT, "build", "tools")
    for cmd in (
        [cmake, "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release"]
        + ["-DQBINFER_BUILD_PYTHON=OFF", "-DQBINFER_BUILD_TOOLS=ON"],
        [cmake, "--build", build, "--target", "qbinfer-bench", "-j", "2"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return os.path.join(build, "qbinfer-bench")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> str:
    from weights_tools.qbw import read_qbw, write_qbw

    graph = read_qbw(DIGITS)
    graph.model_name = "net\x1b]0;pwned\x07"
    graph.producer = "tool\r\nforged: producer"
    graph.class_names = [f"c{i}\x1b[2J\r\nforged" for i in range(len(graph.class_names))]
    path = str(tmp_path_factory.mktemp("hostile") / "hostile.qbw")
    write_qbw(path, graph)
    return path


def test_file_strings_are_quoted(bench, hostile):
    out = subprocess.run(
        [bench, hostile, "--runs", "1", "--warmup", "0", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for bad in ("\x1b", "\x07", "\r"):
        assert bad not in out.stdout
    lines = out.stdout.splitlines()
    for line in lines:
        assert not line.startswith("forged"), line  # no line was injected
    model_line = next(line for line in lines if line.startswith("model "))
    assert "('net?]0;pwned?', 'tool??forged: producer', format 1.0" in model_line
    top = [line for line in lines if "'c" in line]
    assert len(top) == 3 and all(line.rstrip().endswith("?[2J??forged'") for line in top), top
