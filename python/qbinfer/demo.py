"""qbinfer demo: the shipped model on its held-out set, or the whole path with a zoo model.

* qbinfer demo: run the trained model that ships inside the package (a QB-Net-Small variant for
  the 8x8 scikit-learn digits upscaled to 32x32, in qbinfer/models/) on its held-out set of 450
  images; print the engine's top-1 accuracy, PyTorch's (measured now when the tools extra is
  installed, else the value recorded at training time) and the median latency per image at
  batch 1. Needs numpy and the extension only.
* qbinfer demo --arch NAME: with the tools extra (torch): build a zoo model (random weights,
  randomised BN statistics), convert it PyTorch -> ONNX -> .qbw, run one image through qbinfer,
  PyTorch and ONNX Runtime, compare the logits and time the three. When the logits differ from
  PyTorch's, the reference interpreter tells whether the image holds a near-tie decision (a
  sign within rounding distance of 0, which two correct implementations may take either way).
  That part lives with the tools (python -m weights_tools.demo_convert); this command hands
  over to it.
* qbinfer demo --model FILE.qbw: run that file on one image (no torch needed). A shipped model
  (a record FILE.json with a held-out set beside it, e.g. qbinfer/models/digits_qbnet_int8.qbw,
  the INT8 variant) runs on its held-out set as the shipped model does, unless --image is given.

* qbinfer demo --task segmentation: the shipped segmentation model (DeepLabv3+ on the digits
  model's QB-Net-Small backbone, the "digit scenes" of docs/segmentation.md) on its held-out
  set: the engine's mIoU, PyTorch's (measured when the tools extra is installed, else
  recorded) and their per-pixel agreement, the latency, and one overlay PNG (--overlay).
  numpy, Pillow and the extension only.

--json prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .model import load
from .text import printable

__all__ = [
    "add_parser",
    "run_demo",
    "run_file_demo",
    "run_on_image",
    "run_shipped_demo",
    "shipped_record",
    "tools_demo",
    "SHIPPED_MODEL",
]


def median_ms(fn: Callable[[], Any], runs: int) -> float:
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


def log_step(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_on_image(
    qbw_path: str, image: Any, threads: int, runs: int
) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
    """Run a .qbw file on one image: (report fields, the preprocessed NCHW input, the logits).
    The conversion demo (`weights_tools.demo_convert`) compares these logits with PyTorch's."""
    model = load(qbw_path, threads=threads)
    from .preprocess import preprocess

    x_nhwc = preprocess(image, model.preprocessing)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    logits = model.run(x_nchw)
    result: Dict[str, Any] = {
        "qbw_bytes": os.path.getsize(qbw_path),
        "model": model.name,
        "top5": model.predict(image, top_k=5),
        "latency_ms": round(median_ms(lambda: model.run(x_nchw), runs), 3),
        "threads": model.threads,
    }
    return result, x_nchw, logits


def run_file_demo(args: argparse.Namespace) -> Dict[str, Any]:
    """`--model FILE`: run that .qbw file on one image (numpy and the extension only)."""
    result: Dict[str, Any] = {"image": "synthetic" if args.image is None else str(args.image)}
    image = synthetic_image() if args.image is None else args.image
    log_step(args.json, f"running {args.model} with qbinfer")
    fields, _, _ = run_on_image(args.model, image, args.threads, args.runs)
    result.update(fields)
    return result


TOOLS_INSTALL = "pip install 'qbinfer[tools]'"


def tools_demo(purpose: str, required: bool) -> Optional[ModuleType]:
    """`weights_tools.demo_convert`, the tools' side of the demo, when it is importable.

    The single place where the runtime reaches into the tool set (tests/test_runtime_imports.py
    enforces that): the runtime needs numpy and the extension only, the tools need torch. When
    they are missing, `required` makes this a clear exit naming the extra to install; otherwise
    it returns None and the caller goes on without them."""
    try:
        return importlib.import_module("weights_tools.demo_convert")
    except ImportError as exc:
        if required:
            raise SystemExit(
                f"qbinfer demo: {purpose} needs the tools extra (torch, onnx): "
                f"{TOOLS_INSTALL} ({exc})"
            ) from exc
        return None


SHIPPED_MODEL = "digits_qbnet"


def shipped_record(name: str = SHIPPED_MODEL) -> Tuple[str, Dict[str, Any]]:
    """(folder, training record) of a model shipped in `qbinfer/models/`."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
    path = os.path.join(folder, name + ".json")
    if not os.path.exists(path):
        raise SystemExit(
            f"qbinfer demo: the shipped model record {path} is missing (a broken installation?)"
        )
    with open(path, encoding="utf-8") as f:
        return folder, json.load(f)


def record_beside(qbw_path: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(folder, record) when `qbw_path` is a shipped model: a NAME.json record naming it, with
    a held-out set, in the same folder; else None."""
    folder = os.path.dirname(os.path.abspath(qbw_path))
    stem = os.path.splitext(os.path.basename(qbw_path))[0]
    path = os.path.join(folder, stem + ".json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    if record.get("model") != os.path.basename(qbw_path) or not record.get("holdout"):
        return None
    return folder, record


def run_shipped_demo(
    args: argparse.Namespace, shipped: Optional[Tuple[str, Dict[str, Any]]] = None
) -> Dict[str, Any]:
    """The shipped model (or `shipped`: (folder, record) of another) on its held-out set:
    accuracy of the engine and of PyTorch, latency."""
    quiet = args.json
    folder, record = shipped or shipped_record()
    qbw_path = os.path.join(folder, record["model"])
    log_step(quiet, f"[1/3] loading {qbw_path}")
    model = load(qbw_path, threads=args.threads)
    with np.load(os.path.join(folder, record["holdout"]), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    from .preprocess import preprocess

    x_nhwc = np.concatenate([preprocess(im, model.preprocessing) for im in images])
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))

    log_step(quiet, f"[2/3] qbinfer on {len(labels)} held-out images, one at a time")
    model.run(x_nchw[:1])  # warm-up: first touch of the arena and of the weights' pages
    preds = np.empty(len(labels), np.int64)
    times = np.empty(len(labels))
    for i in range(len(labels)):
        t0 = time.perf_counter()
        logits = model.run(x_nchw[i : i + 1])
        times[i] = time.perf_counter() - t0
        preds[i] = int(np.argmax(logits[0]))
    t0 = time.perf_counter()
    batch_preds = model.run(x_nchw).argmax(axis=1)
    batch_s = time.perf_counter() - t0
    result: Dict[str, Any] = {
        "model": model.name,
        "qbw": qbw_path,
        "qbw_bytes": os.path.getsize(qbw_path),
        "dataset": record.get("data_source", ""),
        "images": int(len(labels)),
        "accuracy_engine": round(100.0 * float(np.mean(preds == labels)), 4),
        "accuracy_torch": None,
        "accuracy_torch_source": "recorded",
        "accuracy_torch_recorded": record.get("accuracy_torch"),
        "latency_ms": round(float(np.median(times)) * 1e3, 4),
        "batch_ms_per_image": round(batch_s * 1e3 / len(labels), 4),
        # one batch must give what single images give (the engine's contract)
        "batch_matches_single": bool(np.array_equal(batch_preds, preds)),
        "threads": model.threads,
    }
    log_step(quiet, "[3/3] PyTorch on the same inputs")
    measured = None
    if not args.no_torch:
        tools = tools_demo("measuring PyTorch's accuracy", required=False)
        if tools is None:
            log_step(
                quiet, f"      torch or the tool set is not importable: {TOOLS_INSTALL} to measure"
            )
        else:
            weights = os.path.join(folder, record["weights"])
            measured = tools.shipped_torch_logits(weights, x_nchw, args.threads)
    if measured is None:
        result["accuracy_torch"] = record.get("accuracy_torch")
    else:
        ref, torch_ms = measured
        ref_preds = ref.argmax(axis=1)
        result.update(
            accuracy_torch=round(100.0 * float(np.mean(ref_preds == labels)), 4),
            accuracy_torch_source="measured",
            top1_agreement=round(100.0 * float(np.mean(ref_preds == preds)), 4),
            torch_latency_ms=round(torch_ms, 4),
        )
    return result


SHIPPED_SEGMENTER = "digit_scenes_deeplab"


def run_segmentation_demo(args: argparse.Namespace) -> Dict[str, Any]:
    """The shipped segmentation model on its held-out set: mIoU of the engine and of PyTorch,
    per-pixel agreement, latency; writes one overlay PNG (held-out images, the engine's masks
    over them, the true masks)."""
    from .cli_segment import VOID, colorize, confusion_matrix, mean_iou, overlay

    quiet = args.json
    folder, record = shipped_record(SHIPPED_SEGMENTER)
    qbw_path = os.path.join(folder, record["model"])
    if not os.path.exists(qbw_path):
        raise SystemExit(
            f"qbinfer demo: {qbw_path} is missing: the segmentation model has not been "
            f"converted in this installation ({record.get('convert_command', 'see docs')})"
        )
    log_step(quiet, f"[1/4] loading {qbw_path}")
    model = load(qbw_path, threads=args.threads)
    with np.load(os.path.join(folder, record["holdout"]), allow_pickle=False) as z:
        images, masks = z["images"], z["masks"]
    from .preprocess import preprocess

    x_nhwc = np.concatenate([preprocess(im, model.preprocessing) for im in images])
    num_classes = len(record["classes"])

    log_step(quiet, f"[2/4] qbinfer on {len(images)} held-out images, one at a time")
    model.run(x_nhwc[:1], layout="nhwc")  # warm-up
    preds = np.empty(masks.shape, np.int64)
    times = np.empty(len(images))
    for i in range(len(images)):
        t0 = time.perf_counter()
        out = model.run(x_nhwc[i : i + 1], layout="nhwc")
        times[i] = time.perf_counter() - t0
        if out.shape[1:3] != masks.shape[1:]:
            raise ValueError(
                f"the model's output is {out.shape[1]}x{out.shape[2]}, the held-out masks "
                f"{masks.shape[1]}x{masks.shape[2]}"
            )
        preds[i] = out[0].argmax(axis=2)
    miou_engine, iou_engine = mean_iou(confusion_matrix(preds, masks, num_classes))
    result: Dict[str, Any] = {
        "task": "segmentation",
        "model": model.name,
        "qbw": qbw_path,
        "qbw_bytes": os.path.getsize(qbw_path),
        "dataset": record.get("data_source", ""),
        "images": int(len(images)),
        "miou_engine": round(miou_engine, 4),
        "iou_engine": [None if v is None else round(v, 3) for v in iou_engine],
        "miou_torch": record.get("miou_torch"),
        "miou_torch_source": "recorded",
        "latency_ms": round(float(np.median(times)) * 1e3, 4),
        "threads": model.threads,
    }
    log_step(quiet, "[3/4] PyTorch on the same inputs")
    measured = None
    if not args.no_torch:
        tools = tools_demo("measuring PyTorch's mIoU", required=False)
        if tools is None:
            log_step(
                quiet, f"      torch or the tool set is not importable: {TOOLS_INSTALL} to measure"
            )
        else:
            x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
            weights = os.path.join(folder, record["weights"])
            measured = tools.shipped_torch_logits(weights, x_nchw, args.threads)
    if measured is not None:
        ref, torch_ms = measured
        ref_preds = ref.argmax(axis=1)
        miou_torch, _ = mean_iou(confusion_matrix(ref_preds, masks, num_classes))
        result.update(
            miou_torch=round(miou_torch, 4),
            miou_torch_source="measured",
            pixel_agreement=round(100.0 * float(np.mean(ref_preds == preds)), 4),
            torch_latency_ms=round(torch_ms, 4),
        )
    log_step(quiet, f"[4/4] writing {args.overlay}")
    shown = list(range(min(6, len(images))))
    rows = [
        np.concatenate([images[i] for i in shown], axis=1),
        np.concatenate([overlay(images[i], preds[i]) for i in shown], axis=1),
        # the truth marks stroke borders VOID (ignored in training and scoring): drawn as void
        np.concatenate(
            [colorize(np.where(masks[i] == VOID, -1, masks[i].astype(np.int32))) for i in shown],
            axis=1,
        ),
    ]
    picture = np.concatenate(rows, axis=0)
    from .cli_segment import _pil

    Image = _pil()
    big = Image.fromarray(picture).resize(
        (picture.shape[1] * 3, picture.shape[0] * 3), Image.NEAREST
    )
    big.save(args.overlay, format="PNG")
    result["overlay"] = args.overlay
    return result


def _print_segmentation_report(r: Dict[str, Any]) -> None:
    print(
        f"model      {printable(r['model'])}  ({r['qbw_bytes'] / 1e6:.2f} MB .qbw, "
        "shipped in the package)"
    )
    print(f"data       {r['images']} held-out images: {r['dataset']}")
    note = (
        "measured now"
        if r["miou_torch_source"] == "measured"
        else "recorded at training time; torch not used"
    )
    torch_miou = "n/a" if r["miou_torch"] is None else f"{r['miou_torch']:.2f}"
    print(f"mIoU       qbinfer {r['miou_engine']:.2f}   PyTorch {torch_miou} ({note})")
    if "pixel_agreement" in r:
        print(f"agreement  {r['pixel_agreement']:.3f}% of the pixels get the same class")
    print(
        f"qbinfer    {r['latency_ms']:.3f} ms median per image, batch 1, {r['threads']} thread(s)"
    )
    if "torch_latency_ms" in r:
        print(f"PyTorch    {r['torch_latency_ms']:.3f} ms median per image, batch 1")
    print(f"overlay    {printable(r['overlay'])} (images; qbinfer's masks over them; truth)")


def run_demo(args: argparse.Namespace) -> Dict[str, Any]:
    if getattr(args, "task", "classification") == "segmentation":
        return run_segmentation_demo(args)
    if args.arch:
        tools = tools_demo("--arch (building and converting a zoo model)", required=True)
        assert tools is not None
        return tools.run_arch_demo(args)
    if args.model:
        shipped = record_beside(args.model) if args.image is None else None
        return run_shipped_demo(args, shipped) if shipped else run_file_demo(args)
    return run_shipped_demo(args)


def _print_shipped_report(r: Dict[str, Any]) -> None:
    print(
        f"model      {printable(r['model'])}  ({r['qbw_bytes'] / 1e6:.2f} MB .qbw, "
        "shipped in the package)"
    )
    print(f"data       {r['images']} held-out images: {r['dataset']}")
    torch_note = (
        "measured now"
        if r["accuracy_torch_source"] == "measured"
        else "recorded at training time; torch not used"
    )
    print(
        f"top-1      qbinfer {r['accuracy_engine']:.2f}%   PyTorch {r['accuracy_torch']:.2f}% "
        f"({torch_note})"
    )
    if "top1_agreement" in r:
        print(f"agreement  {r['top1_agreement']:.2f}% of the images get the same class")
    print(
        f"qbinfer    {r['latency_ms']:.3f} ms median per image, batch 1, "
        f"{r['threads']} thread(s); {r['batch_ms_per_image']:.3f} ms per image in one batch"
    )
    if "torch_latency_ms" in r:
        print(f"PyTorch    {r['torch_latency_ms']:.3f} ms median per image, batch 1")


def print_report(r: Dict[str, Any]) -> None:
    if r.get("task") == "segmentation":
        _print_segmentation_report(r)
        return
    if "accuracy_engine" in r:
        _print_shipped_report(r)
        return
    print(f"model      {printable(r['model'])}  ({r['qbw_bytes'] / 1e6:.2f} MB .qbw)")
    print(f"image      {printable(r['image'])}")
    print("top-5      " + ", ".join(f"{printable(name)} {p:.3f}" for name, p in r["top5"]))
    print(f"qbinfer    {r['latency_ms']:.2f} ms median, batch 1, {r['threads']} thread(s)")
    if "torch_rel_l2" in r:
        print(
            f"PyTorch    {r['torch_latency_ms']:.2f} ms; logits rel. L2 diff {r['torch_rel_l2']:.2e}, "
            f"same top-1: {r['torch_top1_equal']}"
        )
    if "torch_diff_note" in r:
        print(f"           {printable(r['torch_diff_note'])}")
    if "ort_rel_l2" in r:
        print(
            f"ONNX Rt    {r['ort_latency_ms']:.2f} ms; logits rel. L2 diff {r['ort_rel_l2']:.2e}, "
            f"same top-1: {r['ort_top1_equal']}"
        )


_BUILD_DEFAULTS = {"input_size": 224, "num_classes": 1000, "fc": "fp32", "depthwise": "fp32"}


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The options of building a zoo model, shared with `python -m weights_tools.demo_convert`
    (defined here so that `qbinfer demo --help` lists them without the tools installed)."""
    p.add_argument(
        "--se",
        choices=["se1", "se2"],
        default=None,
        help="with --arch: squeeze-and-excitation blocks (se1: after the downsampling blocks' "
        "depthwise halves, se2: after every depthwise half; default none)",
    )
    p.add_argument(
        "--input-size", type=int, metavar="N", help="with --arch: N x N input (default 224)"
    )
    p.add_argument(
        "--num-classes", type=int, metavar="K", help="with --arch: output classes (default 1000)"
    )
    p.add_argument(
        "--fc",
        choices=["fp32", "int8", "bitplane8"],
        help="with --arch: how the converter stores the FC weights (default fp32)",
    )
    p.add_argument(
        "--depthwise",
        choices=["fp32", "int8"],
        help="with --arch: how the converter stores the depthwise weights (default fp32)",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of every form of the demo."""
    p.add_argument("--runs", type=int, default=10, help="timed runs per engine (median reported)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="with --arch: seed of the random weights (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a report")


def fill_build_defaults(args: argparse.Namespace) -> None:
    for key, value in _BUILD_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def add_parser(sub: Any, common: Optional[argparse.ArgumentParser] = None) -> None:
    p = sub.add_parser(
        "demo",
        parents=[] if common is None else [common],
        help="run the shipped model on its held-out set, or build, convert "
        "and compare a zoo model end to end",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--arch",
        help="build this zoo model (random weights) and compare qbinfer, "
        "PyTorch and ONNX Runtime on one image (needs the tools extra)",
    )
    p.add_argument("--model", help="run this .qbw file on one image (no torch needed)")
    p.add_argument(
        "--task",
        choices=["classification", "segmentation"],
        default="classification",
        help="segmentation: the shipped DeepLabv3+ model on its held-out scenes (mIoU)",
    )
    p.add_argument(
        "--overlay",
        default="segmentation_overlay.png",
        metavar="PNG",
        help="--task segmentation: where the overlay picture goes "
        "(default: segmentation_overlay.png)",
    )
    add_build_arguments(p)
    p.add_argument(
        "--image", help="with --arch or --model: an image file (default: a synthetic picture)"
    )
    add_run_arguments(p)
    p.add_argument(
        "--no-torch",
        action="store_true",
        help="shipped model: report the recorded PyTorch accuracy, do not import torch",
    )

    def main(args: argparse.Namespace) -> int:
        build_only = [
            f"--{k.replace('_', '-')}"
            for k in ("se", "input_size", "num_classes", "fc", "depthwise")
            if getattr(args, k) is not None
        ]
        if build_only and not args.arch:
            p.error(f"{', '.join(build_only)} go(es) with --arch (building a zoo model)")
        if args.arch and args.model:
            p.error("give --arch (build a model) or --model (run a file), not both")
        if args.task == "segmentation" and (args.arch or args.model or args.image):
            p.error(
                "--task segmentation runs the shipped segmentation model: no --arch, "
                "--model or --image"
            )
        if args.image and not (args.arch or args.model):
            p.error(
                "--image goes with --arch or --model; the shipped model runs on its held-out set"
            )
        fill_build_defaults(args)
        result = run_demo(args)
        if args.json:
            print(json.dumps(result))
        else:
            print_report(result)
        return 0

    p.set_defaults(func=main)
