"""The engine-level tests once per ISA this machine runs (highway's pattern: every compiled
target tested on the same machine), each in a subprocess with QBINFER_ISA set, since the ISA is
fixed per process. A subset keeps this file to a few minutes: the non-zoo nets, single convs
and stages (every stride, padding and multiplier), INT8 depthwise (static and dynamic scale)
and the INT8 / bitplane FC, fusion and threads on a zoo model with SE and on the hand-built
graphs, and the API's zoo-model-vs-PyTorch test. The kernels' own bit-exactness
against the reference is tested per variant in the kernel test files.

Plus: a QBINFER_ISA that names no ISA, or one this CPU lacks, is a clear ValueError, never a
crash."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qbinfer import _core

ROOT = Path(__file__).resolve().parent.parent
ISAS = _core.supported_isas()

SUBSET = [
    "tests/test_engine_e2e.py::test_non_zoo_bnn_converts_and_matches",
    "tests/test_engine_e2e.py::test_single_binary_conv_dot_is_exact",
    "tests/test_engine_e2e.py::test_single_stage_within_1e_5",
    "tests/test_engine_e2e.py::test_quantized_paths_match_the_reference_interpreter"
    "[bitplane8-int8-True]",
    "tests/test_engine_e2e.py::test_quantized_paths_match_the_reference_interpreter"
    "[fp32-int8-False]",
    "tests/test_engine_fusion.py::test_non_zoo_nets_fused_equals_unfused",
    "tests/test_engine_fusion.py::test_zoo_fused_equals_unfused[qb_net_small-se1]",
    "tests/test_engine_fusion.py::test_binary_chain_packs_bits_for_the_next_binary_conv",
    "tests/test_engine_fusion.py::test_chains_stop_at_a_second_reader_and_the_graph_output",
    "tests/test_engine_fusion.py::test_inplace_chain_only_when_its_base_is_dead",
    "tests/test_engine_fusion.py::test_concat_of_different_values_stays_a_concat",
    "tests/test_engine_fusion.py::test_stem_fc_and_large_elementwise_split_across_threads",
    "tests/test_engine_fusion.py::test_fusion_switch_and_step_listing",
    "tests/test_api.py::test_run_matches_pytorch_in_both_layouts",
]


def env_with(isa):
    env = dict(os.environ)
    env["QBINFER_ISA"] = isa
    env.pop("QBINFER_FUSION", None)
    return env


def run_python(code, isa, timeout=120):
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env_with(isa),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("isa", ISAS)
def test_engine_tests_pass_under_isa(isa):
    pytest.importorskip("torch", reason="the engine-level tests build models with torch")
    probe = run_python(
        "from qbinfer import _core; m = _core.build_info(); "
        "print(_core.active_isa(), m['kernels']['bconv'])",
        isa,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[0] == isa
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET],
        env=env_with(isa),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = (result.stdout[-4000:] + "\n" + result.stderr[-2000:]).strip()
    assert result.returncode == 0, f"QBINFER_ISA={isa}:\n{tail}"
    assert " passed" in result.stdout and "failed" not in result.stdout, tail


def tiny_model(tmp_path):
    from test_engine_format import rng_for, save, stem_graph

    g, _ = stem_graph(rng_for(1))
    return save(tmp_path, g)


@pytest.mark.parametrize(
    "value,why",
    [
        ("bogus", "is not an ISA name"),
        ("neon" if "neon" not in ISAS else "avx512", "is not supported"),
    ],
)
def test_bad_isa_is_a_clear_error(tmp_path, value, why):
    if value in ISAS:
        pytest.skip(f"this machine supports {value}")
    path = tiny_model(tmp_path)
    code = f"""
import qbinfer
from qbinfer import _core
info = _core.build_info()
assert info['active_isa'].startswith('error: QBINFER_ISA={value}'), info['active_isa']
for call in (_core.active_isa, lambda: qbinfer.load({path!r})):
    try:
        call()
    except ValueError as e:
        print('ValueError:', e)
    else:
        raise SystemExit('no error')
"""
    r = run_python(code, value)
    assert r.returncode == 0, r.stderr  # not a crash: a clean exit with the errors caught
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert f"QBINFER_ISA={value} {why}" in line and "supported: scalar" in line, line
    cli = subprocess.run(
        [sys.executable, "-m", "qbinfer", "version", "-v"],
        env=env_with(value),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and f"active_isa: error: QBINFER_ISA={value}" in cli.stdout


def test_explicit_isa_argument(tmp_path):
    """The isa argument picks another table in-process; results agree across ISAs here (a
    stem conv within float tolerance, the rest exact)."""
    path = tiny_model(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)
    outs = {}
    for isa in ISAS:
        m = _core.Model(path, 1, isa)
        assert m.isa == isa and set(m.kernels) >= {"bconv", "dwconv", "epilogue"}
        outs[isa] = m.run(x)
    for isa, out in outs.items():
        np.testing.assert_allclose(out, outs["scalar"], rtol=1e-5, atol=1e-5, err_msg=isa)
    with pytest.raises(ValueError, match="supported: scalar"):
        _core.Model(path, 1, "bogus")


def test_supported_isas_shape():
    assert ISAS[0] == "scalar"
    assert len(set(ISAS)) == len(ISAS)
    assert set(ISAS) <= {"scalar", "avx2", "avx512", "neon"}
    assert _core.active_isa() in ISAS
    if "QBINFER_ISA" not in os.environ:
        assert _core.active_isa() == ISAS[-1], "without an override the best ISA is used"


def test_every_supported_isa_has_a_variant_in_every_family():
    """The plain ISA names reach each family's selector; VPOPCNTDQ adds exactly one variant.
    Concat is a memcpy per row that the C library vectorizes already: it has only its portable
    entry, on purpose (csrc/kernels/concat/concat.h), and the kernel table falls back to it."""
    from qbinfer import _testing

    portable_only = {"concat"}
    for family in _testing.kernel_test_families():
        variants = _testing.kernel_variants(family)
        assert variants[0] == "scalar", family
        if family in portable_only:
            assert variants == ["scalar"], f"{family} gained variants: drop it from portable_only"
            continue
        for isa in ISAS:
            assert isa in variants, f"{isa} is supported but {family} has no {isa} variant"
    vpopcnt = _core.build_info()["avx512_vpopcntdq"]
    assert ("avx512_vpopcnt" in _testing.kernel_variants("bconv")) == vpopcnt
    if vpopcnt:
        assert "avx512" in ISAS


def test_qbinfer_isa_override_selects_scalar():
    r = run_python("from qbinfer import _core; print(_core.active_isa())", "scalar", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"
