"""`qbinfer demo`: the whole path in one command.

With the tools extra (torch) installed: build a zoo model (random weights, randomised BN
statistics), convert it PyTorch -> ONNX -> .qbw, run one image through qbinfer, PyTorch and ONNX
Runtime, compare the logits and time the three. With `--model FILE.qbw`: run that file only (no
torch needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .model import load

__all__ = ["add_parser", "run_demo"]


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm-up: first-touch of the arena and of the weights' pages
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def synthetic_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A deterministic H x W x 3 uint8 test picture: gradients plus a few shapes and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([255 * xx, 255 * yy, 255 * (1 - xx) * yy], axis=-1)
    img[(xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.04] = (230, 40, 40)
    img[(np.abs(xx - 0.3) < 0.1) & (np.abs(yy - 0.75) < 0.08)] = (30, 200, 60)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> Dict[str, Any]:
    quiet = args.json
    image = synthetic_image() if args.image is None else args.image
    result: Dict[str, Any] = {"image": "synthetic" if args.image is None else str(args.image)}
    with tempfile.TemporaryDirectory(prefix="qbinfer-demo-") as tmp:
        torch_model = None
        onnx_path: Optional[str] = None
        if args.model:
            qbw_path = args.model
        else:
            try:
                import torch
                from weights_tools.convert import randomize_bn, to_qbw
                from weights_tools.zoo import build_model
            except ImportError as exc:
                raise SystemExit(
                    f"qbinfer demo: building and converting a model needs the tools extra "
                    f"(pip install 'qbinfer[tools]'): {exc}. Or pass --model FILE.qbw.")
            torch.manual_seed(args.seed)
            _log(quiet, f"[1/4] building {args.arch} ({args.input_size}x{args.input_size}, "
                        f"{args.num_classes} classes, random weights, randomised BN statistics)")
            torch_model = build_model(args.arch, num_classes=args.num_classes, se=args.se)
            randomize_bn(torch_model, seed=args.seed)
            torch_model.eval()
            qbw_path = os.path.join(tmp, f"{args.arch}.qbw")
            onnx_path = os.path.join(tmp, f"{args.arch}.onnx")
            _log(quiet, f"[2/4] converting PyTorch -> ONNX -> .qbw (fc={args.fc}, depthwise={args.depthwise})")
            t0 = time.perf_counter()
            to_qbw(torch_model, qbw_path, input_size=(args.input_size, args.input_size), fc=args.fc,
                   depthwise=args.depthwise, onnx_path=onnx_path)
            result["convert_s"] = round(time.perf_counter() - t0, 2)
        result["qbw_bytes"] = os.path.getsize(qbw_path)

        _log(quiet, f"[3/4] running {qbw_path} with qbinfer")
        model = load(qbw_path, threads=args.threads)
        from .preprocess import preprocess
        x_nhwc = preprocess(image, model.preprocessing)
        x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
        logits = model.run(x_nchw)
        result.update(model=model.name, top5=model.predict(image, top_k=5),
                      latency_ms=round(_median_ms(lambda: model.run(x_nchw), args.runs), 3),
                      threads=model.threads)

        _log(quiet, "[4/4] comparing with PyTorch and ONNX Runtime")
        if torch_model is not None:
            import torch
            with torch.no_grad():
                xt = torch.from_numpy(x_nchw)
                ref = torch_model(xt).numpy()
                torch.set_num_threads(args.threads)
                result["torch_latency_ms"] = round(_median_ms(lambda: torch_model(xt), args.runs), 3)
            result["torch_rel_l2"] = _rel_l2(logits, ref)
            result["torch_top1_equal"] = bool(np.argmax(logits) == np.argmax(ref))
        if onnx_path is not None:
            try:
                import onnxruntime as ort
            except ImportError:
                result["onnxruntime"] = "not installed"
            else:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = args.threads
                sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
                feed = {sess.get_inputs()[0].name: x_nchw}
                ort_logits = sess.run(None, feed)[0]
                result["ort_rel_l2"] = _rel_l2(logits, ort_logits)
                result["ort_top1_equal"] = bool(np.argmax(logits) == np.argmax(ort_logits))
                result["ort_latency_ms"] = round(_median_ms(lambda: sess.run(None, feed), args.runs), 3)
    return result


def _print_report(r: Dict[str, Any]) -> None:
    print(f"model      {r['model']}  ({r['qbw_bytes'] / 1e6:.2f} MB .qbw)")
    print(f"image      {r['image']}")
    print("top-5      " + ", ".join(f"{name} {p:.3f}" for name, p in r["top5"]))
    print(f"qbinfer    {r['latency_ms']:.2f} ms median, batch 1, {r['threads']} thread(s)")
    if "torch_rel_l2" in r:
        print(f"PyTorch    {r['torch_latency_ms']:.2f} ms; logits rel. L2 diff {r['torch_rel_l2']:.2e}, "
              f"same top-1: {r['torch_top1_equal']}")
    if "ort_rel_l2" in r:
        print(f"ONNX Rt    {r['ort_latency_ms']:.2f} ms; logits rel. L2 diff {r['ort_rel_l2']:.2e}, "
              f"same top-1: {r['ort_top1_equal']}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build, convert, run and compare a model end to end",
                       description=__doc__)
    p.add_argument("--model", help="run this .qbw file instead of building one")
    p.add_argument("--arch", default="qb_net_small", help="zoo model to build (default: qb_net_small)")
    p.add_argument("--se", choices=["se1", "se2"], default=None)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--fc", choices=["fp32", "int8", "bitplane8"], default="fp32")
    p.add_argument("--depthwise", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--image", help="an image file (default: a synthetic picture)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per engine (median reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a report")

    def main(args: argparse.Namespace) -> int:
        result = run_demo(args)
        if args.json:
            print(json.dumps(result))
        else:
            _print_report(result)
        return 0

    p.set_defaults(func=main)
