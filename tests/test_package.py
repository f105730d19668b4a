"""Package-level guarantees: the runtime never pulls in torch, and the CLI runs."""

from __future__ import annotations

import subprocess
import sys

import qbinfer


def test_import_does_not_import_torch():
    # A fresh interpreter: in this one another test may already have imported torch.
    subprocess.run(
        [sys.executable, "-c", "import qbinfer, sys; assert 'torch' not in sys.modules"],
        check=True,
    )


def test_version_matches_metadata():
    from importlib.metadata import version

    assert qbinfer.__version__ == version("qbinfer")
    assert qbinfer.BITS_PER_WORD == 64


def test_cli_version():
    out = subprocess.run(
        [sys.executable, "-m", "qbinfer", "version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith(f"qbinfer {qbinfer.__version__}\n")
    assert "reference" in out


def test_cli_main_returns_exit_code(capsys):
    from qbinfer.__main__ import main

    assert main(["version", "--verbose"]) == 0
    assert "compiled_isas: reference" in capsys.readouterr().out
