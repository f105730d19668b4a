"""Helpers shared by the test files.

Plain functions, imported with `from conftest import rel_l2, ...` (pytest puts this folder on
sys.path, as it does for the test modules). torch, onnxruntime and weights_tools are imported
inside the helpers that need them, so that numpy-only test files can use the others on an
installation without the tools extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# Numbers


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖, the measure of SPEC §6 for logits that differ by float rounding."""
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-30))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def assert_matches(
    engine: np.ndarray, ref: np.ndarray, path: str, x: np.ndarray, label: str, tol: float = 1e-3
) -> Dict[str, Any]:
    """The engine's outputs of the .qbw at `path` on inputs `x` match `ref` (PyTorch, ONNX
    Runtime, ...), judged image by image on the decisions (SPEC section 6):

    - every image that differs (per-image rel L2 > tol, or another top-1) must hold a near-tie
      decision that the reference interpreter finds (a sign input within 1e-6 of its threshold,
      relative to the layer's range, or an INT8 code at a rounding boundary): float rounding,
      which differs between any two correct implementations, may flip such a sign, and one flip
      in a binary network moves the logits by far more than tol;
    - the median image must match to 1e-4, so a batch cannot pass by being all ties.

    Not "top-1 >= 97%" over the batch: at 224x224 a deep BNN with random weights holds a near tie
    in many images, so PyTorch's own float32 and float64 runs of the same model disagree on top-1
    for 2-7 of 32 images (measured on Bi-Real-34 and ReActNet-A); the engine, whose binary dots
    are exact integers, agrees with float64 at least as often as float32 PyTorch does. Which
    images flip depends on the CPU's BLAS, so a count would be flaky across CPUs; the image-by-
    image accounting is not. Returns the figures (for the log)."""
    assert engine.shape == ref.shape, (engine.shape, ref.shape)
    assert np.isfinite(engine).all(), f"{label}: the engine gave non-finite outputs"
    flat_e, flat_r = engine.reshape(len(engine), -1), ref.reshape(len(ref), -1)
    per_image = np.linalg.norm(flat_e - flat_r, axis=1) / np.linalg.norm(flat_r, axis=1)
    differs = (per_image > tol) | (flat_e.argmax(1) != flat_r.argmax(1))
    figures = {
        "median_rel_l2": float(np.median(per_image)),
        "top1": top1_agreement(flat_e, flat_r),
        "differ": int(differs.sum()),
        "images": len(engine),
    }
    if differs.any():
        from weights_tools.qbw import read_qbw
        from weights_tools.reference import near_tie_images

        # Images are independent: the reference runs on the differing ones only.
        _, ties = near_tie_images(read_qbw(path), x[differs])
        unexplained = np.flatnonzero(differs)[~ties]
        assert unexplained.size == 0, (
            f"{label}: rel L2 {rel_l2(engine, ref):.2e}, top-1 {figures['top1']:.2%}; images "
            f"{unexplained.tolist()} differ (rel L2 "
            f"{np.array2string(per_image[unexplained], precision=2)}) without a near tie"
        )
    assert figures["median_rel_l2"] <= 1e-4, (
        f"{label}: median per-image rel L2 {figures['median_rel_l2']:.2e} > 1e-4 "
        f"(per image: {np.array2string(per_image, precision=2)})"
    )
    print(
        f"{label}: median rel L2 {figures['median_rel_l2']:.1e}, top-1 {figures['top1']:.1%}, "
        f"{figures['differ']}/{figures['images']} images differ, each holding a near tie"
    )
    return figures


def random_inputs(shape: Sequence[int], seed: int) -> np.ndarray:
    """Standard-normal float32 model inputs, a function of `seed` only."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def random_f32(rng: np.random.Generator, shape: Sequence[int], scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(tuple(shape)) * scale).astype(np.float32)


def pack_bits(minus_one: np.ndarray) -> np.ndarray:
    """The bit contract in numpy, written independently of the engine: bool [..., C] (True = -1)
    -> uint64 words [..., ceil(C/64)], channel c at bit c % 64 of word c // 64 (little-endian),
    tail bits 0."""
    channels = minus_one.shape[-1]
    words = (channels + 63) // 64
    padded = np.zeros(minus_one.shape[:-1] + (words * 64,), dtype=bool)
    padded[..., :channels] = minus_one
    return np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little")).view("<u8")


# ---------------------------------------------------------------------------------------------
# Models (need the tools extra)


def zoo_model(name: str, seed: int, num_classes: int = 10, se: Optional[str] = None, **kw: Any):
    """A zoo model in eval mode with seeded random weights and randomised BN statistics (so that
    BN folding is exercised, which all-default statistics would not)."""
    import torch

    from weights_tools.convert import randomize_bn
    from weights_tools.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, se=se, **kw)
    randomize_bn(model, seed=seed)
    return model.eval()


def randomise_segmenter(model, seed: int, mean_scale: float, bias_scale: float):
    """A segmenter (or any BN network) in eval mode with random BN statistics and affines and
    random learnable biases (the thresholds before signs), so that nothing converts by accident
    of an identity and no sign input sits on an exact 0 (a fresh model's BN is the identity, so
    integer dot products of 0 would reach the next sign as an exact 0, which fused runtimes may
    round either way). `mean_scale`/`bias_scale`: the spread of BN running means and biases."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * mean_scale)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * bias_scale)
        for name, p in model.named_parameters():
            if name.endswith("gamma.bias") or name.endswith("beta.bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def convert_model(model, tmp_path, name: str, size: Tuple[int, int], **kw: Any) -> Tuple[str, str]:
    """Convert a PyTorch model to TMP/NAME.qbw, keeping the exported TMP/NAME.onnx:
    (qbw path, onnx path). `kw` goes to `to_qbw` (fc=, depthwise=, class_names=, ...)."""
    from weights_tools.convert import to_qbw

    path = str(tmp_path / f"{name}.qbw")
    onnx_path = str(tmp_path / f"{name}.onnx")
    to_qbw(model, path, input_size=size, onnx_path=onnx_path, **kw)
    return path, onnx_path


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def ort_logits(onnx_path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# ---------------------------------------------------------------------------------------------
# Fresh interpreters

# Prepended to code run with block_torch: every later `import torch` fails, as on an installation
# without the tools extra.
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_python(
    code: str,
    *,
    block_torch: bool = False,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 300,
    cwd: str = ROOT,
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (this one may already have imported torch, or read an
    environment variable at import): text output captured, never raising on failure."""
    return subprocess.run(
        [sys.executable, "-c", (BLOCK_TORCH if block_torch else "") + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def run_module(
    module: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS...` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def run_qbinfer_main(*args: str, block_torch: bool = False) -> subprocess.CompletedProcess:
    """The `qbinfer` command line (qbinfer.__main__.main) in a fresh interpreter; with
    block_torch, as without the tools extra."""
    code = f"import sys\nfrom qbinfer.__main__ import main\nsys.exit(main({list(args)!r}))\n"
    return run_python(code, block_torch=block_torch)
