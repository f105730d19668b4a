"""Kernel microbenchmarks over the real layer shapes of the zoo at 224x224 (every distinct
shape of the four models), per ISA, through the engine's own entries with weights packed
once. extra_info reports throughput: binary MACs/s for the binary conv (one MAC = one XOR +
popcount bit), GFLOP/s (2 per MAC) for the float kernels, G elements/s for the epilogue, and
the fraction of this core's measured ceiling (conftest.peaks).

    python -m pytest benchmarks/test_bench_kernels.py --benchmark-only
"""

import pytest
from bench_util import bench_isas
from zoo_shapes import shape_id, unique_shapes

from qbinfer import _testing

MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")
SHAPES = unique_shapes(MODELS)
# The classifier head in each encoding the converter offers.
SHAPES += [(f, dict(ci=2048, co=1000), list(MODELS)) for f in ("fc_qs8", "fc_bitplane8")]
# The depthwise convs with INT8 weights and dynamic input scale.
SHAPES += [("dwconv_qs8", p, m) for f, p, m in unique_shapes(MODELS) if f == "dwconv_f32"]


@pytest.mark.parametrize("isa", bench_isas())
@pytest.mark.parametrize("family,params,models", SHAPES, ids=[shape_id(f, p) for f, p, _ in SHAPES])
def test_kernel(benchmark, peaks, isa, family, params, models):
    bench = _testing.bench.KernelBench(family, isa, params)
    benchmark.group = shape_id(family, params)
    benchmark.extra_info.update(
        family=family,
        isa=isa,
        entry=bench.entry,
        models=models,
        **{f"p_{k}": v for k, v in params.items()},
    )
    bench.run(2)  # warm caches and weights
    benchmark(bench.run, 1)
    t = benchmark.stats.stats.median
    if bench.binary_macs:
        rate = bench.binary_macs / t
        benchmark.extra_info["G_binary_MAC_per_s"] = round(rate / 1e9, 2)
        benchmark.extra_info["peak_fraction"] = round(rate / peaks[isa]["binary_macs_per_s"], 3)
    elif bench.float_macs:
        rate = bench.float_macs / t
        benchmark.extra_info["GFLOP_per_s"] = round(2 * rate / 1e9, 2)
        benchmark.extra_info["peak_fraction"] = round(rate / peaks[isa]["float_macs_per_s"], 3)
    else:
        benchmark.extra_info["G_elements_per_s"] = round(bench.elements / t / 1e9, 3)
