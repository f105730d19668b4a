"""`python -m weights_tools.train --task segmentation`: DeepLabv3+ on a QB/QSB backbone.

    python -m weights_tools.train --task segmentation --data scenes --arch qsb_net_small \\
        --stage 1 --epochs 10 --out runs/seg1
    python -m weights_tools.train --task segmentation --data scenes --arch qsb_net_small \\
        --stage 2 --init runs/seg1/model.pth --epochs 10 --out runs/seg2
    torchrun --nproc_per_node=8 -m weights_tools.train --task segmentation --data voc \\
        --voc-root VOCdevkit/VOC2012 --arch qsb_net_large ...        (docs/segmentation.md)

The recipe: per-pixel cross-entropy with ignore index 255; DeepLabv3's "poly" learning rate
lr * (1 - t/T)^power per step (power 0.9); the paper's two stages for the binary convs (stage 1
binary activations with float weights, stage 2 binary weights from stage 1's result, as
`weights_tools.train` does for classification: `zoo.set_training_stage`); mIoU from a confusion
matrix summed over the ranks. Distributed through torchrun with DistributedDataParallel, the
same set-up and life cycle as classification (`train.run_as_rank`).

The run directory gets `model.pth` ({"model", "meta", "metrics"}: `meta` rebuilds the model,
`train.model_from_meta`), `checkpoint.pth` after every epoch, `log.jsonl` and `train.log`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from . import seg_data as SD
from .checkpoint import read_checkpoint
from .seg_zoo import OUTPUT_STRIDES, SEG_HEADS, build_segmenter
from .train import (
    DistInfo,
    _average_buffers,
    _Logger,
    _parse_blocks,
    _save_atomic,
    _unwrap,
    _weight_decay_groups,
    run_as_rank,
    state_checksum,
)
from .zoo import ARCHS, set_training_stage, with_overrides

__all__ = [
    "confusion_matrix",
    "miou",
    "poly_factor",
    "segmenter_from_meta",
    "build_parser",
    "run",
    "main",
]

DEFAULT_WEIGHT_DECAY = {"1": 1e-5, "2": 0.0}
LATENT_SCALE = 0.05  # sign-only weights restart at this magnitude (load_backbone)


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """K x K int64 counts, rows = true class, columns = predicted; ignored pixels left out."""
    keep = target != ignore_index
    t = target[keep].long()
    p = pred[keep].long()
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(f"a label outside 0..{num_classes - 1} (and not {ignore_index})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def miou(conf: Any) -> Tuple[float, List[float]]:
    """(mean IoU in percent over the classes present in truth or prediction, per-class IoU in
    percent, NaN for a class that is in neither). IoU_c = TP / (TP + FP + FN)."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan) * 100.0
    valid = iou[~np.isnan(iou)]
    return (float(valid.mean()) if valid.size else float("nan")), [float(v) for v in iou]


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """DeepLabv3's learning-rate multiplier before step `step`: (1 - step / total)^power."""
    return max(0.0, 1.0 - step / max(1, total_steps)) ** power


# ---------------------------------------------------------------------------------------------
# Models


def _arch_from(meta: Dict[str, Any]):
    arch: Any = meta["arch"]
    changes: Dict[str, Any] = {}
    if meta.get("blocks"):
        changes["blocks"] = tuple(meta["blocks"])
    if meta.get("stem_channels"):
        changes["stem_channels"] = int(meta["stem_channels"])
    if changes:
        arch = dataclasses.replace(with_overrides(arch, **changes), name=f"{arch}_custom")
    return arch


def segmenter_from_meta(meta: Dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) segmenter a run's "meta" record describes."""
    return build_segmenter(
        meta.get("segmenter", "deeplabv3plus"),
        backbone=_arch_from(meta),
        num_classes=int(meta["num_classes"]),
        output_stride=int(meta["output_stride"]),
        se=meta.get("se"),
        head=meta["head"],
        stage=int(meta.get("stage", 2)),
        aspp_channels=int(meta["aspp_channels"]),
        low_level_channels=int(meta["low_level_channels"]),
        decoder_channels=int(meta["decoder_channels"]),
    )


def load_backbone(model: nn.Module, path: str) -> int:
    """Copy a classification model's stem and blocks (`weights_tools.train`'s model.pth, e.g.
    ImageNet-trained, or compact .npz weights) into the segmenter's backbone; returns how many
    tensors were copied.
    Dilation changes no weight shape, so every backbone tensor must be there."""
    if path.endswith(".npz"):  # compact weights (export.save_compact_weights), e.g. shipped
        from .export import load_compact_model

        state = load_compact_model(path).state_dict()
    else:
        ck = read_checkpoint(path)
        state = ck["model"] if "model" in ck else ck
    own = model.backbone.state_dict()
    take = {k: v for k, v in state.items() if k in own and k.split(".")[0] in ("stem", "blocks")}
    missing = sorted(set(own) - set(take))
    if missing:
        raise SystemExit(
            f"--backbone-init {path}: {len(missing)} backbone tensors missing, e.g. {missing[0]}"
        )
    model.backbone.load_state_dict(take)
    # Compact weights keep only sign(W) (+-1): at |W| = 1 an Adam step of 1e-3 needs ~1000 steps
    # to flip a sign, and past 1 the STE passes no gradient. The latent weights restart at the
    # zoo's initial magnitude (BinaryConv2d: uniform in +-0.1), signs kept: a stage-2 (binary)
    # model computes the same function, and stage 1's BN renormalises the scale.
    from .layers import BinaryConv2d

    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, BinaryConv2d) and bool((m.weight.abs() == 1).all()):
                m.weight.mul_(LATENT_SCALE)
    return len(take)


# ---------------------------------------------------------------------------------------------
# Data


def build_datasets(args: argparse.Namespace):
    """(train dataset, eval dataset, class names, preprocessing record)."""
    if args.data == "scenes":
        images, masks = SD.holdout_arrays(args.input_size)
        train = SD.DigitScenes(args.scenes_per_epoch, seed=args.seed, size=args.input_size)
        return (
            train,
            SD.SegArrayDataset(images, masks),
            list(SD.SCENE_CLASSES),
            _preprocessing(args.input_size, SD.SCENE_MEAN, SD.SCENE_STD),
        )
    if not args.voc_root:
        raise SystemExit("--data voc needs --voc-root (the VOC2012 folder)")
    train = SD.VOCSegmentation(
        args.voc_root, args.train_split, True, args.input_size, seed=args.seed
    )
    val = SD.VOCSegmentation(args.voc_root, args.val_split, False, args.input_size)
    from .data import IMAGENET_MEAN, IMAGENET_STD

    return (
        train,
        val,
        list(SD.VOC_CLASSES),
        _preprocessing(args.input_size, IMAGENET_MEAN, IMAGENET_STD),
    )


def _preprocessing(size: int, mean, std) -> Dict[str, Any]:
    # The engine resizes an input image to the model's size (no crop: the mask covers it all).
    return {
        "resize_short": int(size),
        "crop_height": int(size),
        "crop_width": int(size),
        "mean": list(mean),
        "std": list(std),
        "pixel_scale": 1.0 / 255.0,
    }


# ---------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m weights_tools.train --task segmentation",
        description="Train DeepLabv3+ on a QB-Net / QSB-Net backbone (docs/segmentation.md).",
    )
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="qsb_net_large", choices=sorted(ARCHS), help="backbone")
    g.add_argument("--blocks", help="replace the backbone's block list, e.g. N,DS,N,QS,N")
    g.add_argument("--stem-channels", type=int, help="replace the backbone's stem width")
    g.add_argument("--head", default="binary", choices=SEG_HEADS)
    g.add_argument("--output-stride", type=int, default=16, choices=OUTPUT_STRIDES)
    g.add_argument("--se", choices=("none", "se1", "se2"), default="none")
    g.add_argument("--aspp-channels", type=int, default=256)
    g.add_argument("--low-level-channels", type=int, default=48)
    g.add_argument("--decoder-channels", type=int, default=256)
    g.add_argument("--stage", choices=("1", "2"), default="1")
    g.add_argument("--init", metavar="CKPT", help="start from this segmenter (stage 2: stage 1's)")
    g.add_argument(
        "--backbone-init",
        metavar="CKPT",
        help="copy a classification model.pth's stem and blocks into the backbone",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", default="scenes", choices=("scenes", "voc"))
    g.add_argument("--voc-root", help="VOC2012 folder (JPEGImages, SegmentationClass[Aug], ...)")
    g.add_argument("--train-split", default="train_aug")
    g.add_argument("--val-split", default="val")
    g.add_argument("--input-size", type=int, help="crop size (default: scenes 64, voc 513)")
    g.add_argument("--scenes-per-epoch", type=int, default=4096)
    g.add_argument(
        "--eval-images", type=int, help="evaluate on the first N eval images only (quick runs)"
    )
    g.add_argument("--workers", type=int, default=0)
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument(
        "--head-lr-mult", type=float, default=1.0, help="ASPP and decoder learning rate = lr x this"
    )
    g.add_argument("--momentum", type=float, default=0.9, help="SGD")
    g.add_argument("--weight-decay", type=float, help="default: stage 1 1e-5, stage 2 0")
    g.add_argument("--power", type=float, default=0.9, help="poly schedule exponent")
    g.add_argument("--sync-bn", action="store_true")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--threads", type=int, default=0)
    g.add_argument("--eval-every", type=int, default=1)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--max-minutes", type=float, help="stop (and save) after this wall time")
    g.add_argument(
        "--save-rank-weights",
        action="store_true",
        help="every rank writes final_rank<R>.pth (its weights and their checksum; DDP checks)",
    )
    return p


def build_meta(args: argparse.Namespace, classes: List[str], pre: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "task": "segmentation",
        "segmenter": "deeplabv3plus",
        "arch": args.arch,
        "blocks": _parse_blocks(args.blocks),
        "stem_channels": args.stem_channels,
        "head": args.head,
        "output_stride": args.output_stride,
        "se": None if args.se == "none" else args.se,
        "aspp_channels": args.aspp_channels,
        "low_level_channels": args.low_level_channels,
        "decoder_channels": args.decoder_channels,
        "num_classes": len(classes),
        "classes": classes,
        "stage": int(args.stage),
        "input_size": [args.input_size, args.input_size],
        "preprocessing": pre,
        "data": args.data,
        "ignore_index": SD.IGNORE_INDEX,
    }


def evaluate(model: nn.Module, loader, info: DistInfo, num_classes: int) -> Dict[str, Any]:
    """mIoU, pixel accuracy and loss over the eval set (all ranks' shards summed)."""
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, pixels = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(info.device), y.to(info.device)
            logits = model(x)
            loss_sum += float(
                F.cross_entropy(logits, y, ignore_index=SD.IGNORE_INDEX, reduction="sum")
            )
            pixels += int((y != SD.IGNORE_INDEX).sum())
            conf += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), num_classes)
    if info.enabled:
        t = torch.cat(
            [conf.flatten().double(), torch.tensor([loss_sum, pixels], dtype=torch.float64)]
        )
        t = t.to(info.device)
        torch.distributed.all_reduce(t)
        t = t.cpu()
        conf = t[: num_classes * num_classes].round().long().reshape(num_classes, num_classes)
        loss_sum, pixels = float(t[-2]), int(t[-1])
    m, per_class = miou(conf.numpy())
    acc = float(np.trace(conf.numpy()) / max(1, conf.sum().item()) * 100)
    return {
        "miou": m,
        "pixel_acc": acc,
        "loss": loss_sum / max(1, pixels),
        "iou": per_class,
        "pixels": pixels,
    }


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.input_size is None:
        args.input_size = SD.SCENE_SIZE if args.data == "scenes" else 513
    if args.stage == "2" and not args.init:
        print(
            "note: stage 2 without --init starts from random weights (the recipe starts from "
            "stage 1's model.pth)",
            file=sys.stderr,
        )
    return run_as_rank(args.device, args.threads, args.out, lambda info, log: _run(args, info, log))


def _run(args: argparse.Namespace, info: DistInfo, log: _Logger) -> Dict[str, Any]:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_set, eval_set, classes, pre = build_datasets(args)
    meta = build_meta(args, classes, pre)
    model = segmenter_from_meta(meta)
    if args.backbone_init:
        n = load_backbone(model, args.backbone_init)
        log.line(f"backbone: {n} tensors from {args.backbone_init}")
    if args.init:
        ck = read_checkpoint(args.init)
        model.load_state_dict(ck["model"] if "model" in ck else ck)
        log.line(f"initialised from {args.init}")
    set_training_stage(model, int(args.stage))
    model.to(info.device)
    if args.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = (
        nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
        if info.enabled
        else model
    )
    train_sampler = (
        DistributedSampler(train_set, info.world, info.rank, shuffle=True, seed=args.seed)
        if info.enabled
        else None
    )
    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        num_workers=args.workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
        pin_memory=info.device.type == "cuda",
    )
    n_eval = len(eval_set) if args.eval_images is None else min(args.eval_images, len(eval_set))
    eval_indices = list(range(info.rank, n_eval, info.world))
    eval_loader = DataLoader(
        torch.utils.data.Subset(eval_set, eval_indices),
        batch_size=args.eval_batch_size or args.batch_size,
        num_workers=args.workers,
    )
    wd = args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAY[args.stage]
    groups = _weight_decay_groups(model.backbone, wd)
    # ASPP and decoder start from scratch on a pre-trained backbone: DeepLab's larger head
    # learning rate (--head-lr-mult; 1 = one rate for all).
    for g in _weight_decay_groups(nn.ModuleList([model.aspp, model.decoder]), wd):
        g["lr"] = args.lr * args.head_lr_mult
        groups.append(g)
    if args.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=args.lr, betas=(0.9, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: poly_factor(s, total, args.power)
    )
    log.line(
        f"{meta['arch']} DeepLabv3+ ({args.head} head, OS {args.output_stride}), stage "
        f"{args.stage}, {len(train_set)} train / {len(eval_set)} eval images, "
        f"{steps_per_epoch} steps/epoch x {args.epochs}, world {info.world}"
    )
    log.record("start", meta=meta, args=vars(args))
    t0 = time.perf_counter()
    metrics: Dict[str, Any] = {}
    history = []
    stopped = False
    for epoch in range(args.epochs):
        ddp.train()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        loss_sum, n = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
            loss = F.cross_entropy(ddp(x), y, ignore_index=SD.IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
            n += 1
            if args.max_minutes and (time.perf_counter() - t0) > args.max_minutes * 60:
                stopped = True
                break
        _average_buffers(ddp, info)
        record: Dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, n),
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - t0,
        }
        if stopped or (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            metrics = evaluate(model, eval_loader, info, len(classes))
            record.update(val_miou=metrics["miou"], val_pixel_acc=metrics["pixel_acc"])
        history.append(record)
        log.record("epoch", **record)
        log.line(
            f"epoch {epoch + 1}/{args.epochs}: loss {record['train_loss']:.4f}"
            + (f"  mIoU {record['val_miou']:.2f}" if "val_miou" in record else "")
            + f"  ({record['seconds']:.0f} s)"
        )
        if info.main:
            _save_atomic(
                {"model": _unwrap(ddp).state_dict(), "meta": meta, "epoch": epoch + 1},
                os.path.join(args.out, "checkpoint.pth"),
            )
        if stopped:
            log.line(f"stopped by --max-minutes {args.max_minutes} in epoch {epoch + 1}")
            break
    if not metrics:
        metrics = evaluate(model, eval_loader, info, len(classes))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checksum = state_checksum(state)
    final = dict(metrics, stopped_early=stopped, seconds=time.perf_counter() - t0)
    if info.main:
        _save_atomic(
            {"model": state, "meta": meta, "metrics": final, "history": history},
            os.path.join(args.out, "model.pth"),
        )
    if args.save_rank_weights:
        _save_atomic(
            {"model": state, "checksum": checksum},
            os.path.join(args.out, f"final_rank{info.rank}.pth"),
        )
    log.record("end", checksum=checksum, world=info.world, **final)
    log.line(f"done: mIoU {metrics['miou']:.2f} on {len(eval_set)} eval images")
    info.barrier()
    return {"out": args.out, "final": final, "history": history, "meta": meta}


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
