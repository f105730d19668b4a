"""Helpers shared by the benchmarks and compare.py: which ISAs to time, and the zoo models
converted once at 224x224 (random weights + randomize_bn) and cached between runs
(QBINFER_BENCH_CACHE, default <tmp>/qbinfer-bench-cache)."""

import os
import tempfile
from pathlib import Path

from qbinfer import _core


def bench_isas():
    env = os.environ.get("QBINFER_BENCH_ISAS")
    supported = _core.supported_isas()
    if env:
        return [i for i in env.split(",") if i in supported]
    best = [i for i in supported if i != "scalar"]
    return best or ["scalar"]


def cache_dir() -> Path:
    path = Path(
        os.environ.get("QBINFER_BENCH_CACHE", Path(tempfile.gettempdir()) / "qbinfer-bench-cache")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def zoo_file(name: str, size: int = 224, se=None, fc: str = "fp32", seed: int = 0):
    """A zoo model with random weights and randomize_bn, converted at `size` (cached):
    returns (qbw path, onnx path)."""
    stem = f"{name}-{se or 'plain'}-{size}-{fc}-{seed}"
    qbw, onnx = cache_dir() / f"{stem}.qbw", cache_dir() / f"{stem}.onnx"
    if not (qbw.exists() and onnx.exists()):
        import torch

        from weights_tools.convert import randomize_bn, to_qbw
        from weights_tools.zoo import build_model

        torch.manual_seed(seed)
        model = build_model(name, num_classes=1000, se=se)
        randomize_bn(model, seed=seed)
        model.eval()
        to_qbw(model, str(qbw), input_size=(size, size), onnx_path=str(onnx), fc=fc)
    return str(qbw), str(onnx)
