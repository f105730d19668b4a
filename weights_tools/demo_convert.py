"""The conversion demo: build a zoo model, convert it PyTorch -> ONNX -> .qbw, run one image
through qbinfer, PyTorch and ONNX Runtime, compare the logits and time the three.

    python -m weights_tools.demo_convert --arch qb_net_small [--fc bitplane8 --depthwise int8]

`qbinfer demo --arch NAME` hands over to `run_arch_demo` here when the tools extra is installed:
the runtime package itself never imports torch or this tool set. The shipped-model demo
(`qbinfer demo`) also asks `shipped_torch_logits` for PyTorch's side when it can.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from qbinfer.demo import (
    add_build_arguments,
    add_run_arguments,
    fill_build_defaults,
    log_step,
    median_ms,
    print_report,
    run_on_image,
    synthetic_image,
)

from .export import load_compact_model, torch_logits

PROG = "python -m weights_tools.demo_convert"

__all__ = ["explain_difference", "run_arch_demo", "shipped_torch_logits", "rel_l2", "main"]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖: how far the engine's logits are from the reference's."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_arch_demo(args: argparse.Namespace) -> Dict[str, Any]:
    """Build `args.arch` (random weights, randomised BN statistics), convert, run and compare.

    `args` carries what `qbinfer demo` parses: arch, se, input_size, num_classes, fc, depthwise,
    image (None: a synthetic picture), runs, threads, seed, json (quiet progress)."""
    try:  # the converter needs onnx, which importing this module does not
        from .convert import ConversionError, randomize_bn, to_qbw
        from .zoo import build_model
    except ImportError as exc:
        raise SystemExit(
            f"qbinfer demo: converting a model needs the tools extra "
            f"(pip install 'qbinfer[tools]'): {exc}"
        ) from exc
    from .bnn_zoo import BNN_ZOO_NAMES
    from .zoo import ARCHS

    known = list(ARCHS) + list(BNN_ZOO_NAMES)
    if args.arch not in known:
        raise ValueError(
            f"--arch {args.arch!r} is not a zoo model; choose one of {', '.join(known)}"
        )
    quiet = args.json
    image = synthetic_image() if args.image is None else args.image
    result: Dict[str, Any] = {"image": "synthetic" if args.image is None else str(args.image)}
    with tempfile.TemporaryDirectory(prefix="qbinfer-demo-") as tmp:
        torch.manual_seed(args.seed)
        log_step(
            quiet,
            f"[1/4] building {args.arch} ({args.input_size}x{args.input_size}, "
            f"{args.num_classes} classes, random weights, randomised BN statistics)",
        )
        torch_model = build_model(args.arch, num_classes=args.num_classes, se=args.se)
        randomize_bn(torch_model, seed=args.seed)
        torch_model.eval()
        qbw_path = os.path.join(tmp, f"{args.arch}.qbw")
        onnx_path = os.path.join(tmp, f"{args.arch}.onnx")
        log_step(
            quiet,
            f"[2/4] converting PyTorch -> ONNX -> .qbw (fc={args.fc}, depthwise={args.depthwise})",
        )
        t0 = time.perf_counter()
        try:
            to_qbw(
                torch_model,
                qbw_path,
                input_size=(args.input_size, args.input_size),
                fc=args.fc,
                depthwise=args.depthwise,
                onnx_path=onnx_path,
            )
        except ConversionError as exc:
            raise ConversionError(
                f"{args.arch} at {args.input_size}x{args.input_size} does not convert: {exc}"
            ) from exc
        result["convert_s"] = round(time.perf_counter() - t0, 2)

        log_step(quiet, f"[3/4] running {qbw_path} with qbinfer")
        fields, x_nchw, logits = run_on_image(qbw_path, image, args.threads, args.runs)
        result.update(fields)

        log_step(quiet, "[4/4] comparing with PyTorch and ONNX Runtime")
        with torch.no_grad():
            xt = torch.from_numpy(x_nchw)
            ref = torch_model(xt).numpy()
            torch.set_num_threads(args.threads)
            result["torch_latency_ms"] = round(median_ms(lambda: torch_model(xt), args.runs), 3)
        result["torch_rel_l2"] = rel_l2(logits, ref)
        result["torch_top1_equal"] = bool(np.argmax(logits) == np.argmax(ref))
        if result["torch_rel_l2"] > TOLERANCE:
            log_step(quiet, "      the logits differ: looking for a near-tie decision")
            quantized = ", ".join(
                f"{part} {mode}"
                for part, mode in (("fc", args.fc), ("depthwise", args.depthwise))
                if mode != "fp32"
            )
            result.update(
                explain_difference(qbw_path, x_nchw, logits, result["torch_rel_l2"], quantized)
            )
        result.update(_compare_onnxruntime(onnx_path, x_nchw, logits, args.threads, args.runs))
    return result


# Whole models agree with PyTorch within this relative L2 error of the logits unless a decision
# is a near tie (SPEC §6, tests/test_engine_e2e.py).
TOLERANCE = 1e-3
SIGN_REL = 1e-6  # a sign input within this fraction of the op's largest |x - t| is a near tie


def explain_difference(
    qbw_path: str,
    x_nchw: np.ndarray,
    logits: np.ndarray,
    torch_rel_l2: float,
    quantized: str = "",
) -> Dict[str, Any]:
    """Why the engine's logits differ from PyTorch's by more than TOLERANCE. The reference
    interpreter (`reference.near_tie_images`) runs the converted graph on the same input and
    records whether a decision lies within rounding distance of its threshold (a sign input
    within SIGN_REL of 0, an INT8 code on a rounding boundary): such a decision may go either way
    between two correct implementations, and the flip spreads through the network; not a bug.
    `quantized` names the INT8/bit-plane encodings of the file ('' for none): PyTorch runs the
    float weights, so the difference is then the quantization's.

    Returns {"near_tie": bool, "reference_rel_l2": the engine against the reference
    interpreter, "torch_diff_note": the explanation}."""
    from .qbw import read_qbw
    from .reference import near_tie_images

    ref_logits, ties = near_tie_images(read_qbw(qbw_path), x_nchw[:1], sign_rel=SIGN_REL)
    near_tie = bool(ties[0])
    ref_rel = rel_l2(logits[:1], ref_logits[:1])
    lead = f"torch_rel_l2 {torch_rel_l2:.3g}"
    if quantized:
        note = (
            f"{lead}: the .qbw stores {quantized} weights and PyTorch runs the float ones; "
            f"against the reference interpreter of the same file the engine's rel. L2 is "
            f"{ref_rel:.2g}"
        )
    elif near_tie:
        note = (
            f"{lead}: a near-tie sign flip (the reference interpreter finds a sign decision "
            f"within {SIGN_REL:g} of 0 on this image); not a bug"
        )
    else:
        note = (
            f"{lead} is above {TOLERANCE:g} and the reference interpreter finds no near-tie "
            "decision on this image: unexpected, please report it with this output"
        )
    return {"near_tie": near_tie, "reference_rel_l2": ref_rel, "torch_diff_note": note}


def _compare_onnxruntime(
    onnx_path: str, x_nchw: np.ndarray, logits: np.ndarray, threads: int, runs: int
) -> Dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": "not installed"}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x_nchw}
    ort_logits = sess.run(None, feed)[0]
    return {
        "ort_rel_l2": rel_l2(logits, ort_logits),
        "ort_top1_equal": bool(np.argmax(logits) == np.argmax(ort_logits)),
        "ort_latency_ms": round(median_ms(lambda: sess.run(None, feed), runs), 3),
    }


def shipped_torch_logits(
    weights: str, x_nchw: np.ndarray, threads: int
) -> Tuple[np.ndarray, float]:
    """PyTorch logits of a shipped model's weights on `x_nchw` and the median batch-1 latency
    (on `threads` threads, as qbinfer), for `qbinfer demo`'s accuracy comparison."""
    torch.set_num_threads(threads)
    model = load_compact_model(weights)
    logits = torch_logits(model, x_nchw)
    with torch.no_grad():
        one = torch.from_numpy(x_nchw[:1])
        latency = median_ms(lambda: model(one), 20)
    return logits, latency


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--arch", required=True, help="the zoo model to build (random weights)")
    add_build_arguments(p)
    p.add_argument("--image", help="an image file (default: a synthetic picture)")
    add_run_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    fill_build_defaults(args)
    try:
        result = run_arch_demo(args)
    except (ValueError, OSError) as exc:  # an unknown --arch, a model that does not convert
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
