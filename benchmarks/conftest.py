"""Fixtures of the benchmarks (not tests: run them with
`python -m pytest benchmarks/ --benchmark-only`; the default `python -m pytest` only collects
tests/). QBINFER_BENCH_ISAS=avx2,avx512 picks the ISAs (default: every supported one but
scalar)."""

import pytest

from qbinfer import _core, _testing


@pytest.fixture(scope="session")
def peaks():
    """Per ISA: this core's XOR+popcount and FMA ceilings (binary / float MACs per second)."""
    out = {}
    for isa in _core.supported_isas():
        out[isa] = _testing.bench.peak(isa, 0.3)
    if _core.build_info()["avx512_vpopcntdq"]:
        out["avx512"] = _testing.bench.peak("avx512_vpopcnt", 0.3)
    return out
