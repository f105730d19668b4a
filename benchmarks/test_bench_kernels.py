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
SHAPES += [
    (f, dict(ci=2048, co=1000), list(MODELS))
    for f in ("fc_qs8", "fc_bitplane8", "fc_bitplane8_packed")
]
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


# The strided binary conv and the binary FC next to the stride-1 binary conv on the same channel
# counts (issue 12: at least 70% of its G binary-MAC/s), one pytest-benchmark group per pair;
# benchmarks/binary_vs_stride1.py prints the ratios.
PAIRS = []
for _h, _c in ((112, 64), (56, 128), (28, 256), (14, 512)):
    _group = f"bconv3x3 {_h}x{_h}x{_c} stride 2 vs stride 1"
    PAIRS.append(
        (_group, "bconv_general", dict(h=_h, w=_h, ci=_c, co=_c, k=3, stride=2, pt=1, pl=1))
    )
    PAIRS.append((_group, "bconv", dict(h=_h // 2, w=_h // 2, ci=_c, co=_c, k=3)))
for _c in (2048, 6144):
    _group = f"bfc {_c} vs bconv1x1 on 1x1"
    PAIRS.append((_group, "bfc", dict(ci=_c, co=_c)))
    PAIRS.append((_group, "bconv", dict(h=1, w=1, ci=_c, co=_c, k=1)))


@pytest.mark.parametrize("isa", bench_isas())
@pytest.mark.parametrize(
    "group,family,params",
    PAIRS,
    ids=[f + "-" + "-".join(f"{k}{v}" for k, v in p.items()) for _, f, p in PAIRS],
)
def test_against_stride1(benchmark, peaks, isa, group, family, params):
    bench = _testing.bench.KernelBench(family, isa, params)
    benchmark.group = group
    benchmark.extra_info.update(family=family, isa=isa, entry=bench.entry, **params)
    bench.run(2)
    benchmark(bench.run, 1)
    rate = bench.binary_macs / benchmark.stats.stats.median
    benchmark.extra_info["G_binary_MAC_per_s"] = round(rate / 1e9, 2)
    benchmark.extra_info["peak_fraction"] = round(rate / peaks[isa]["binary_macs_per_s"], 3)
