"""Every compiled kernel variant against the portable reference, through the one kernel test plan:
csrc/tests/kernel_test_harness.cc, which the standalone qbinfer_kernel_tests also runs (natively
and under qemu for AArch64, scripts/test-aarch64.sh). This file only drives it, one test per
kernel family x variant this build has and this CPU runs (scalar included: its packed and
row-range entries against the whole-image references).

What the plan compares (see the harness for the cases):
  bit-exact    bitpack and the binary conv (the dot is an integer and the epilogue is one multiply
               then one add on every variant), depthwise f32 and INT8 (absmax, quantization,
               conv), the fused epilogue (floats and bits), the dense conv, pools, concat and the
               element-wise kernels. Floats compare as bit patterns; NaN positions must match,
               NaN payloads are free.
  tolerance    the FC encodings (f32, INT8, bitplane8): |got - exact| <= 1e-5 * M, exact and M
               (the same sum over |terms|, plus |bias|) in double, as fc.h states and as the
               Python tests this replaced checked (RTOL 1e-5).

The seed is in every test id (QBINFER_KERNEL_TEST_SEED overrides it; QBINFER_KERNEL_TEST_SCALE
multiplies the number of random cases); a failure prints the command that replays it.
Variants this build has but this CPU cannot run (avx512_vpopcnt without VPOPCNTDQ, say) are named
in one skip. The kernels' agreement with numpy / PyTorch is tests/test_kernels_reference.py.
"""

from __future__ import annotations

import os

import pytest

from qbinfer import _core, _testing

SEED = int(os.environ.get("QBINFER_KERNEL_TEST_SEED", "20260604"))
SCALE = float(os.environ.get("QBINFER_KERNEL_TEST_SCALE", "1"))
FAMILIES = _testing.kernel_test_families()
RUNNABLE = [(f, v) for f in FAMILIES for v in _testing.kernel_variants(f)]
NOT_RUNNABLE = [
    (f, v)
    for f in FAMILIES
    for v in _testing.kernel_variants(f, runnable_only=False)
    if v not in _testing.kernel_variants(f)
]


def why_not_runnable(variant: str) -> str:
    if variant == "avx512_vpopcnt":
        return "needs AVX-512 VPOPCNTDQ"
    if variant == "neon_dotprod":
        return "needs the AArch64 dot-product extension"
    base = variant.split("_")[0]
    if base not in _core.supported_isas():
        return f"this CPU does not run {base}"
    return "not runnable here"


@pytest.mark.parametrize(
    "family,variant", RUNNABLE, ids=[f"{f}-{v}-seed{SEED}" for f, v in RUNNABLE]
)
def test_variant_matches_reference(family, variant):
    report = _testing.run_kernel_tests(seed=SEED, family=family, isa=variant, scale=SCALE)
    print(
        f"{family}/{variant}: {report['cases']} cases, {report['failures']} failures "
        f"({report['seconds']:.2f} s), seed {SEED}"
    )
    assert report["family"] == family and report["variant"] == variant
    assert report["cases"] > 0, f"{family}/{variant} ran no case"
    assert report["failures"] == 0, (
        f"{family}/{variant}: {report['failures']} of {report['cases']} cases failed "
        f"(seed {SEED}); replay with QBINFER_KERNEL_TEST_SEED={SEED} or "
        f"qbinfer_kernel_tests --seed {SEED} --family {family} --variant {variant}. First:\n"
        + "\n".join(report["messages"])
    )


def test_compiled_variants_this_cpu_cannot_run():
    """One skip naming exactly the compiled variants this CPU cannot run (none: a pass)."""
    assert RUNNABLE, "no runnable kernel variant at all"
    for family in FAMILIES:
        runnable = _testing.kernel_variants(family)
        compiled = _testing.kernel_variants(family, runnable_only=False)
        assert set(runnable) <= set(compiled), family
    if NOT_RUNNABLE:
        pytest.skip(
            "compiled but not runnable on this CPU: "
            + ", ".join(f"{f}/{v} ({why_not_runnable(v)})" for f, v in NOT_RUNNABLE)
        )


def test_unknown_family_or_variant_is_a_value_error():
    with pytest.raises(ValueError, match="unknown kernel family 'bogus'; families: bitpack"):
        _testing.run_kernel_tests(seed=1, family="bogus", isa="scalar")
    with pytest.raises(ValueError, match="no variant 'avx9000'.*runnable: scalar"):
        _testing.run_kernel_tests(seed=1, family="bconv", isa="avx9000")
    with pytest.raises(ValueError, match="unknown kernel family"):
        _testing.kernel_variants("bogus")
