"""`python -m weights_tools.seg_recipe`: train, ship and convert the segmentation model of
`qbinfer demo --task segmentation` (docs/segmentation.md).

    python -m weights_tools.seg_recipe                 # train both stages, then --ship
    python -m weights_tools.seg_recipe --ship          # runs/ -> python/qbinfer/models/
    python -m weights_tools.seg_recipe --convert       # shipped weights -> .qbw, engine mIoU
    python -m weights_tools.seg_recipe --checkpoint runs/voc2/model.pth -o voc.qbw   # any run

The model: DeepLabv3+ (binary head, output stride 16) on the backbone of the shipped digits
classifier (QB-Net-Small cut after block 12: blocks N, D, N, Q, N, Q, N, N, N, N, N, 512 channels
at stride 16), initialised from that classifier's weights, with 64 ASPP/decoder channels and 24
low-level channels, on the 64x64 digit scenes of `weights_tools.seg_data`, trained with the
two-stage binary recipe on the CPU.

--ship writes into `--ship-dir` (default python/qbinfer/models):
* `digit_scenes_deeplab_weights.npz`: the stage-2 PyTorch weights, binary conv weights as sign
  bits (`export.save_compact_weights`; `export.load_compact_model` rebuilds the model);
* `digit_scenes_holdout.npz`: the held-out scenes, `images` (N x 64 x 64 x 3 uint8) and `masks`
  (N x 64 x 64 uint8, 255 = ignore);
* `digit_scenes_deeplab.json`: the record: PyTorch mIoU on the held-out set, the training runs,
  the commands.
--convert makes `digit_scenes_deeplab.qbw` from the shipped weights (weights_tools.convert;
needs the engine's dilated depthwise conv and Resize), measures the engine's mIoU and its
per-pixel agreement with PyTorch on the held-out set, adds them to the record, and fails when the
engine's mIoU is more than --max-gap points from PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["STUDENT", "commands", "ship", "convert", "main"]

NAME = "digit_scenes_deeplab"
HOLDOUT = "digit_scenes_holdout.npz"
SHIP_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "qbinfer", "models"
)
STUDENT = [
    "--data",
    "scenes",
    "--arch",
    "qb_net_small",
    "--blocks",
    "N,D,N,Q,N,Q,N,N,N,N,N",
    "--aspp-channels",
    "64",
    "--low-level-channels",
    "24",
    "--decoder-channels",
    "64",
    "--head",
    "binary",
    "--output-stride",
    "16",
]
# Stage 1's backbone: the shipped digits classifier (`digits_recipe`), which never saw the
# held-out digits: DeepLab's ImageNet pre-training, scaled down.
BACKBONE = os.path.join(SHIP_DIR, "digits_qbnet_weights.npz")
COMMON = [
    "--scenes-per-epoch",
    "3072",
    "--batch-size",
    "32",
    "--lr",
    "1e-3",
    "--head-lr-mult",
    "5",
    "--eval-every",
    "2",
    "--threads",
    "1",
    "--seed",
    "0",
]
# Wall-clock caps (--max-minutes) bound the runs on a shared 2-core machine; the record keeps
# where each run stopped.
STAGE_ARGS = {
    "1": ["--stage", "1", "--epochs", "4", "--max-minutes", "12"],
    "2": ["--stage", "2", "--epochs", "3", "--max-minutes", "10"],
}
CONVERT_COMMAND = "python -m weights_tools.seg_recipe --convert"


def commands(runs: str) -> List[List[str]]:
    train = [sys.executable, "-m", "weights_tools.train", "--task", "segmentation"]
    s1 = os.path.join(runs, "stage1")
    s2 = os.path.join(runs, "stage2")
    return [
        train + STUDENT + COMMON + STAGE_ARGS["1"] + ["--backbone-init", BACKBONE, "--out", s1],
        train
        + STUDENT
        + COMMON
        + STAGE_ARGS["2"]
        + ["--init", os.path.join(s1, "model.pth"), "--out", s2],
    ]


def _shown(cmd: Sequence[str]) -> str:
    """The command as the docs and the record show it: `python`, paths from the repository."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    words = ["python" if c == sys.executable else c.replace(root, "") for c in cmd]
    return " ".join(shlex.quote(w) for w in words)


def _run_summary(run: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(run, "model.pth")
    if not os.path.exists(path):
        return None
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    m = ck.get("metrics", {})
    return {
        "miou": m.get("miou"),
        "pixel_acc": m.get("pixel_acc"),
        "stopped_early": m.get("stopped_early"),
        "seconds": m.get("seconds"),
        "epochs": ck.get("history", []),
    }


def _holdout_inputs(images: np.ndarray, pre: Dict[str, Any]) -> np.ndarray:
    from .seg_data import normalize

    return normalize(images, tuple(pre["mean"]), tuple(pre["std"])).numpy()


def ship(runs: str, ship_dir: str, cmds: Sequence[str]) -> Dict[str, Any]:
    import torch

    from . import seg_data as SD
    from .export import load_compact_model, save_compact_weights, torch_logits
    from .train import model_from_meta
    from .train_segmentation import confusion_matrix, miou

    ck = torch.load(os.path.join(runs, "stage2", "model.pth"), map_location="cpu")
    meta = dict(ck["meta"])
    if meta.get("task") != "segmentation" or int(meta.get("stage", 0)) != 2:
        raise SystemExit("runs/stage2/model.pth is not a stage-2 segmentation model")
    model = model_from_meta(meta)
    model.load_state_dict(ck["model"])
    model.eval()
    os.makedirs(ship_dir, exist_ok=True)
    weights = os.path.join(ship_dir, NAME + "_weights.npz")
    save_compact_weights(model, meta, weights)
    images, masks = SD.holdout_arrays(int(meta["input_size"][0]))
    np.savez_compressed(os.path.join(ship_dir, HOLDOUT), images=images, masks=masks)
    x = _holdout_inputs(images, meta["preprocessing"])
    ref = torch_logits(model, x, batch_size=50)
    compact = torch_logits(load_compact_model(weights), x, batch_size=50)
    if not np.array_equal(ref.argmax(1), compact.argmax(1)):
        raise SystemExit("the compact weights do not reproduce the model's predictions")
    conf = confusion_matrix(
        torch.from_numpy(ref.argmax(1)),
        torch.from_numpy(masks.astype(np.int64)),
        len(SD.SCENE_CLASSES),
    )
    m, per_class = miou(conf.numpy())
    record = {
        "task": "segmentation",
        "model": NAME + ".qbw",
        "weights": os.path.basename(weights),
        "holdout": HOLDOUT,
        "holdout_size": int(len(images)),
        "classes": meta["classes"],
        "input_size": meta["input_size"],
        "arch": "DeepLabv3+ (binary head, OS 16) on QB-Net-Small, blocks "
        + ",".join(meta["blocks"] or [])
        + ", backbone from digits_qbnet",
        "data_source": "digit scenes: scikit-learn digits (UCI, CC BY 4.0) on crops of "
        "scikit-learn's sample photos (CC BY 2.0), 64x64, held-out digits and photo regions",
        "miou_torch": round(m, 4),
        "iou_torch": [round(v, 3) for v in per_class],
        "training": {
            "stage1": _run_summary(os.path.join(runs, "stage1")),
            "stage2": _run_summary(os.path.join(runs, "stage2")),
        },
        "commands": list(cmds),
        "convert_command": CONVERT_COMMAND,
        "torch": torch.__version__,
    }
    _write_record(ship_dir, record)
    print(f"PyTorch held-out mIoU {m:.2f} ({len(images)} scenes); wrote {weights}")
    return record


def _write_record(ship_dir: str, record: Dict[str, Any]) -> None:
    with open(os.path.join(ship_dir, NAME + ".json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def convert(ship_dir: str, max_gap: float) -> Dict[str, Any]:
    import qbinfer

    from .convert import to_qbw
    from .export import load_compact_model, torch_logits
    from .train_segmentation import miou

    with open(os.path.join(ship_dir, NAME + ".json"), encoding="utf-8") as f:
        record = json.load(f)
    model = load_compact_model(os.path.join(ship_dir, record["weights"]))
    meta = model.meta
    qbw = os.path.join(ship_dir, record["model"])
    pre = dict(meta["preprocessing"])
    pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
    report = to_qbw(
        model,
        qbw,
        input_size=tuple(meta["input_size"]),
        class_names=meta["classes"],
        preprocessing=pre,
    )
    print(report)
    with np.load(os.path.join(ship_dir, record["holdout"]), allow_pickle=False) as z:
        images, masks = z["images"], z["masks"]
    x = _holdout_inputs(images, pre)
    ref = torch_logits(model, x, batch_size=50).argmax(1)
    engine_model = qbinfer.load(qbw)
    t0 = time.perf_counter()
    out = engine_model.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="nhwc")
    seconds = time.perf_counter() - t0
    got = out.argmax(axis=3)
    k = len(meta["classes"])
    keep = masks != 255

    def conf_of(pred: np.ndarray) -> np.ndarray:
        t = masks[keep].astype(np.int64)
        return np.bincount(t * k + pred[keep], minlength=k * k).reshape(k, k)

    m_engine, per_engine = miou(conf_of(got))
    m_torch, _ = miou(conf_of(ref))
    record.update(
        miou_engine=round(m_engine, 4),
        iou_engine=[round(v, 3) for v in per_engine],
        miou_torch=round(m_torch, 4),
        pixel_agreement=round(100.0 * float(np.mean(got == ref)), 4),
        qbw_bytes=os.path.getsize(qbw),
        engine_batch_ms_per_image=round(seconds * 1e3 / len(images), 4),
    )
    _write_record(ship_dir, record)
    print(
        f"held-out mIoU: engine {m_engine:.2f}, PyTorch {m_torch:.2f}, per-pixel agreement "
        f"{record['pixel_agreement']:.3f}%; wrote {qbw} ({record['qbw_bytes'] / 1e6:.2f} MB)"
    )
    if abs(m_engine - m_torch) > max_gap:
        raise SystemExit(f"engine and PyTorch mIoU differ by more than {max_gap} points")
    return record


def convert_checkpoint(checkpoint: str, output: str) -> None:
    """Any `weights_tools.train --task segmentation` model.pth -> .qbw, with the run's input size,
    preprocessing and class names (e.g. a VOC model)."""
    from .checkpoint import read_checkpoint
    from .convert import to_qbw
    from .train import model_from_meta

    ck = read_checkpoint(checkpoint)
    meta = ck.get("meta") or {}
    if meta.get("task") != "segmentation":
        raise SystemExit(f"{checkpoint}: not a segmentation run's model.pth")
    model = model_from_meta(meta)
    model.load_state_dict(ck["model"])
    model.eval()
    pre = dict(meta["preprocessing"])
    pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
    print(
        to_qbw(
            model,
            output,
            input_size=tuple(meta["input_size"]),
            class_names=meta["classes"],
            preprocessing=pre,
        )
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m weights_tools.seg_recipe", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--runs", default="runs/digit_scenes", help="training run folders")
    p.add_argument("--ship-dir", default=SHIP_DIR)
    p.add_argument("--ship", action="store_true", help="only the export of finished runs")
    p.add_argument("--convert", action="store_true", help="only the .qbw of the shipped weights")
    p.add_argument("--max-gap", type=float, default=0.5)
    p.add_argument(
        "--checkpoint",
        metavar="MODEL.pth",
        help="convert this segmentation run's model.pth to the .qbw given by -o (nothing else)",
    )
    p.add_argument("-o", "--output", help="with --checkpoint: the .qbw to write")
    args = p.parse_args(argv)
    if args.checkpoint:
        if not args.output:
            p.error("--checkpoint needs -o OUT.qbw")
        convert_checkpoint(args.checkpoint, args.output)
        return 0
    if args.convert:
        convert(args.ship_dir, args.max_gap)
        return 0
    cmds = commands(args.runs)
    if not args.ship:
        for cmd in cmds:
            print("+ " + _shown(cmd), flush=True)
            subprocess.run(cmd, check=True)
    ship(args.runs, args.ship_dir, [_shown(c) for c in cmds])
    return 0


if __name__ == "__main__":
    sys.exit(main())
