"""Whole-model benchmarks: the four zoo models at 224x224, batch 1, per ISA and thread count
(random weights with randomize_bn; converted once and cached, see conftest.zoo_file). For
the comparison with ONNX Runtime and PyTorch, and peak RSS, see benchmarks/compare.py.

    python -m pytest benchmarks/test_bench_models.py --benchmark-only
"""

import numpy as np
import pytest
from bench_util import bench_isas, zoo_file

from qbinfer import _core

pytest.importorskip("torch", reason="converting the zoo needs the tools extra")

MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", bench_isas())
@pytest.mark.parametrize("name", MODELS)
def test_model(benchmark, name, isa, threads):
    qbw, _ = zoo_file(name)
    model = _core.Model(qbw, threads, isa)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(5):
        model.run(x)
    benchmark.group = f"{name} 224x224 batch 1"
    benchmark.extra_info.update(
        model=name,
        isa=isa,
        threads=threads,
        steps=len(model.steps()),
        ops=len(model.ops()),
        arena_bytes=model.arena_bytes,
        packed_bytes=model.packed_bytes,
    )
    benchmark(model.run, x)
    benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1e3, 3)
