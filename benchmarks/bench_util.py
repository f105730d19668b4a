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


# ------------------------------------------------------------------ the published BNNs
def is_bnn_zoo(name: str) -> bool:
    """True for a published network of weights_tools.bnn_zoo (ReActNet-A, Bi-Real Net,
    XNOR-Net, BinaryNet), False for the paper's zoo models."""
    from weights_tools.bnn_zoo import BNN_ZOO

    return name in BNN_ZOO


def input_shape(name: str):
    """(C, H, W) that a model is benchmarked at: 3x224x224, or its published input shape for
    the BNN zoo (BinaryNet's MLP: 1x28x28)."""
    if is_bnn_zoo(name):
        from weights_tools.bnn_zoo import BNN_ZOO

        return tuple(BNN_ZOO[name].input_shape)
    return (3, 224, 224)


# Replaces an exact 0.0 among the weights of a binary layer: PyTorch binarizes it to
# sign(0) = 0, which one bit cannot hold and the converter refuses. A positive value this small
# binarizes to +1 and leaves every scale (mean |W|) as it was.
BINARY_ZERO_REPLACEMENT = 1e-30


def replace_binary_zeros(model) -> int:
    """Replace exact zeros in the binary weights of `model` (in place) by
    BINARY_ZERO_REPLACEMENT; returns how many there were. Random normal weights hold one with
    probability about 2^-24 per weight: a few per run in the largest networks."""
    import torch

    from weights_tools.ops import _binary_weight, is_binary_layer

    replaced = 0
    with torch.no_grad():
        for module in model.modules():
            if is_binary_layer(module) or getattr(module, "binary_weights", False) is True:
                w = _binary_weight(module)
                zeros = w == 0
                replaced += int(zeros.sum())
                w[zeros] = BINARY_ZERO_REPLACEMENT
    return replaced


def bnn_model(name: str, seed: int = 0):
    """A published BNN of weights_tools.bnn_zoo with random weights, as the test suite draws
    them (tests/bnn_styles.randomize: every weight, shift and PReLU slope random, BN statistics
    measured on random 32x32 images, a class-balancing last bias), exact zeros in binary weights
    replaced (replace_binary_zeros), in eval mode. The benchmark needs a valid model, not an
    accurate one; the speed of every engine is the same for any weights."""
    import sys

    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import bnn_styles

    from weights_tools.bnn_zoo import BNN_ZOO
    from weights_tools.zoo import build_model

    model = build_model(name, num_classes=BNN_ZOO[name].num_classes)
    bnn_styles.randomize(model, seed=seed)
    model.replaced_binary_zeros = replace_binary_zeros(model)
    return model.eval()


def bnn_zoo_file(name: str, seed: int = 0):
    """A published BNN (bnn_model) converted at its input shape and cached: returns (qbw path,
    onnx path, state-dict path). The state dict lets a PyTorch worker run the very weights the
    .qbw holds. Raises what the converter raises when the network does not convert."""
    stem = f"{name}-bnn-{seed}"
    qbw, onnx = cache_dir() / f"{stem}.qbw", cache_dir() / f"{stem}.onnx"
    state = cache_dir() / f"{stem}.pt"
    if not (qbw.exists() and onnx.exists() and state.exists()):
        import torch

        from weights_tools.convert import to_qbw

        c, h, w = input_shape(name)
        model = bnn_model(name, seed)
        torch.save(model.state_dict(), state)
        to_qbw(model, str(qbw), input_size=(h, w), onnx_path=str(onnx), in_channels=c)
    return str(qbw), str(onnx), str(state)
