"""The one table of the zoo's layer shapes (csrc/tests/zoo_shapes.inc), read by the C++ benchmarks,
the C++ kernel tests and, through qbinfer._testing.zoo_layers(), benchmarks/zoo_shapes.py, must
be what weights_tools.zoo builds: regenerate it with `python benchmarks/zoo_shapes.py --write`."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="weights_tools.zoo needs torch")

from qbinfer import _testing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_zoo_shapes():
    spec = importlib.util.spec_from_file_location(
        "zoo_shapes", ROOT / "benchmarks" / "zoo_shapes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_table_matches_the_zoo():
    zs = load_zoo_shapes()
    assert zs.INC_PATH.read_text() == zs.render_inc(), (
        "csrc/tests/zoo_shapes.inc disagrees with weights_tools.zoo: run "
        "`python benchmarks/zoo_shapes.py --write` and rebuild"
    )


def test_compiled_table_matches_the_zoo():
    """The table compiled into the extension (a stale build would differ) is the zoo's."""
    from weights_tools.zoo import ARCHS

    zs = load_zoo_shapes()
    compiled = _testing.zoo_layers()
    assert sorted({m for m, _, _ in compiled}) == sorted(ARCHS)
    for name in ARCHS:
        got = [(f, p) for m, f, p in compiled if m == name]
        assert got == zs.layer_shapes_from_zoo(name), name
