"""`python -m weights_tools.export`: a trained checkpoint -> the files a shipped model needs.

From a `model.pth` written by `weights_tools.train` (its "meta" record says how to rebuild the
model and what preprocessing its data had), write into `--out-dir`:

* `NAME.qbw`: the converted model, with the eval preprocessing and the class names;
* `NAME_weights.npz`: the PyTorch weights, compact: the weights of binary convs as sign bits
  (`np.packbits` of W < 0; the model only ever sees sign(W), so this is lossless for a stage-2
  model), everything else as it is, and the meta record as JSON. `load_compact_model` rebuilds
  the PyTorch model from it, so the PyTorch accuracy can be re-measured from the installed package;
* with `--holdout digits`: `digits_holdout.npz` (uint8 N x 32 x 32 x 3 images and labels, the
  held-out split of `weights_tools.data.digits_arrays`);
* `NAME.json`: the record: files, PyTorch and engine accuracy on the held-out set, the training
  runs' results and the commands given with `--command`.

The engine's accuracy on the held-out set is measured here too, and the export fails when it is
more than `--max-gap` points away from PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import data as D
from .layers import BinaryConv2d

__all__ = ["save_compact_weights", "load_compact_model", "torch_logits", "main"]


def _binary_weight_names(model: nn.Module) -> List[str]:
    return [
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, BinaryConv2d) and m.binary_weights
    ]


def save_compact_weights(model: nn.Module, meta: Dict[str, Any], path: str) -> None:
    """The state_dict of a stage-2 model with binary conv weights stored as sign bits."""
    binary = set(_binary_weight_names(model))
    arrays: Dict[str, np.ndarray] = {
        "meta_json": np.frombuffer(json.dumps(meta).encode(), np.uint8)
    }
    for name, t in model.state_dict().items():
        a = t.detach().cpu().numpy()
        if name in binary:
            arrays["bits:" + name] = np.packbits((a < 0).reshape(-1))
            arrays["shape:" + name] = np.asarray(a.shape, np.int64)
        else:
            arrays["t:" + name] = a
    np.savez_compressed(path, **arrays)


def load_compact_model(path: str) -> nn.Module:
    """Rebuild the PyTorch model (eval mode) from `save_compact_weights`' file."""
    from .train import model_from_meta

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta_json"]).decode())
        model = model_from_meta(meta)
        state = {}
        for key in z.files:
            if key.startswith("t:"):
                state[key[2:]] = torch.from_numpy(np.array(z[key]))
            elif key.startswith("bits:"):
                name = key[5:]
                shape = tuple(int(s) for s in z["shape:" + name])
                bits = np.unpackbits(z[key])[: int(np.prod(shape))].reshape(shape)
                state[name] = torch.from_numpy(np.where(bits == 1, -1.0, 1.0).astype(np.float32))
    model.load_state_dict(state)
    model.meta = meta  # type: ignore[assignment]
    return model.eval()


def eval_inputs(images: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """uint8 N x H x W x 3 images -> float32 N x 3 x h x w with the eval transform of `spec` (a
    DataSpec record): PIL resize of the shorter side, center crop, normalization."""
    from PIL import Image

    t = D.build_transform(
        False, tuple(spec["input_size"]), int(spec["resize_short"]), spec["mean"], spec["std"]
    )
    rng = np.random.default_rng(0)  # unused: the eval transform is deterministic
    return np.stack([t(Image.fromarray(im), rng).numpy() for im in images]).astype(np.float32)


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [
            model(torch.from_numpy(x[i : i + batch_size])).numpy()
            for i in range(0, len(x), batch_size)
        ]
    )


def _run_metrics(run_dir: Optional[str]) -> Optional[Dict[str, Any]]:
    if not run_dir:
        return None
    ck = torch.load(os.path.join(run_dir, "model.pth"), map_location="cpu", weights_only=True)
    m = dict(ck.get("metrics", {}))
    m["arch"] = ck["meta"].get("name")
    return m


def _same_holdout(path: str, images: np.ndarray, labels: np.ndarray) -> bool:
    if not os.path.exists(path):
        return False
    with np.load(path, allow_pickle=False) as z:
        return np.array_equal(z["images"], images) and np.array_equal(z["labels"], labels)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .convert import to_qbw
    from .teacher import read_state_dict
    from .train import model_from_meta

    p = argparse.ArgumentParser(
        prog="python -m weights_tools.export", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("checkpoint", help="model.pth of a stage-2 run of weights_tools.train")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", required=True, help="file stem, e.g. digits_qbnet")
    p.add_argument("--holdout", choices=("digits",), help="also write this held-out sample set")
    p.add_argument("--teacher-run", help="the teacher's run folder (its numbers go in the record)")
    p.add_argument("--stage1-run", help="stage 1's run folder")
    p.add_argument("--command", action="append", default=[], help="a command to record (repeat)")
    p.add_argument(
        "--max-gap",
        type=float,
        default=0.5,
        help="fail if engine and PyTorch top-1 differ by more (points)",
    )
    args = p.parse_args(argv)

    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    meta = dict(ck["meta"])
    if meta.get("kind") != "student" or int(meta.get("stage", 0)) != 2:
        raise SystemExit(f"{args.checkpoint}: not a stage-2 student checkpoint")
    model = model_from_meta(meta)
    model.load_state_dict(read_state_dict(args.checkpoint))
    model.eval()
    spec = meta["data"]
    os.makedirs(args.out_dir, exist_ok=True)
    qbw = os.path.join(args.out_dir, args.name + ".qbw")
    weights = os.path.join(args.out_dir, args.name + "_weights.npz")
    preprocessing = {
        "resize_short": int(spec["resize_short"]),
        "crop_height": int(spec["input_size"][0]),
        "crop_width": int(spec["input_size"][1]),
        "mean": tuple(spec["mean"]),
        "std": tuple(spec["std"]),
        "pixel_scale": 1.0 / 255.0,
    }
    # a model trained with INT8 (weights_tools.fake_quant) converts with its trained encodings
    # and input scales
    int8 = meta.get("int8") or {}
    report = to_qbw(
        model,
        qbw,
        fc=int8.get("fc") or "fp32",
        depthwise="int8" if int8.get("dw") else "fp32",
        input_size=tuple(spec["input_size"]),
        class_names=spec["classes"],
        preprocessing=preprocessing,
    )
    print(report)
    save_compact_weights(model, meta, weights)

    record: Dict[str, Any] = {
        "model": os.path.basename(qbw),
        "weights": os.path.basename(weights),
        "arch": meta.get("name"),
        "num_classes": meta["num_classes"],
        "data_source": spec.get("source"),
        "training": {
            "teacher": _run_metrics(args.teacher_run),
            "stage1": _run_metrics(args.stage1_run),
            "stage2": dict(ck.get("metrics", {})),
        },
        "commands": list(args.command),
        "torch": torch.__version__,
    }
    if args.holdout == "digits":
        images, labels = D.digits_arrays("holdout")
        holdout = os.path.join(args.out_dir, "digits_holdout.npz")
        if not _same_holdout(holdout, images, labels):  # shared by the shipped models
            np.savez_compressed(holdout, images=images, labels=labels)
        record["holdout"] = os.path.basename(holdout)
        record["holdout_size"] = int(len(labels))
        x = eval_inputs(images, spec)
        ref = torch_logits(model, x)
        compact = torch_logits(load_compact_model(weights), x)
        if not np.array_equal(ref.argmax(1), compact.argmax(1)):
            raise SystemExit("the compact weights do not reproduce the model's predictions")
        import qbinfer

        engine = qbinfer.load(qbw).run(x)
        acc_torch = 100.0 * float(np.mean(ref.argmax(1) == labels))
        acc_engine = 100.0 * float(np.mean(engine.argmax(1) == labels))
        agreement = 100.0 * float(np.mean(engine.argmax(1) == ref.argmax(1)))
        record.update(
            accuracy_torch=round(acc_torch, 4),
            accuracy_engine=round(acc_engine, 4),
            top1_agreement=round(agreement, 4),
        )
        print(
            f"held-out ({len(labels)} images): PyTorch top-1 {acc_torch:.2f}%, engine top-1 "
            f"{acc_engine:.2f}%, agreement {record['top1_agreement']:.2f}%"
        )
        if abs(acc_torch - acc_engine) > args.max_gap:
            gap = abs(acc_torch - acc_engine)
            raise SystemExit(
                f"engine and PyTorch accuracy differ by {gap:.2f} points (> {args.max_gap})"
            )
    with open(os.path.join(args.out_dir, args.name + ".json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    for path in (qbw, weights):
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
