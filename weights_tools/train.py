"""`python -m weights_tools.train`: train QB-Net / QSB-Net with the paper's recipe (SPEC §2).

Two stages with knowledge distillation from a float teacher read from a local checkpoint file:

    stage 1   binary activations, float weights   Adam(0.9, 0.999) lr 1e-3, weight decay 1e-5
    stage 2   both binary, from stage 1's weights  Adam(0.9, 0.999) lr 1e-3, weight decay 0
    int8      fine-tune of a stage-2 model with INT8 depthwise convs and FC (the paper's
              8-bit fine-tune)                    Adam(0.9, 0.999) lr 1e-4, weight decay 0

INT8 quantization-aware training (`weights_tools.fake_quant`, forward = the engine's integer
arithmetic): `--int8-dw` trains stages 1 and 2 with INT8 depthwise convs from the start (the
paper's 8-bit DS convs); `--stage int8 --init STAGE2/model.pth` fine-tunes the depthwise convs and
the FC (`--int8-fc int8|bitplane8`) with the input scales calibrated on training images first
(`--int8-input-scale learned|calibrated|running-max`). The scales are model state: checkpoints and
`--resume` carry them, and `python -m weights_tools.convert --int8-scales trained` stores them.

Loss with a teacher: KL(teacher softmax || student softmax) (ReActNet's distributional loss);
without one, cross-entropy. Learning rate: "poly" lr * (1 - t/T) per step (t the step, T the
run's steps), or `--schedule cosine --warmup E` (linear warm-up over E epochs, then cosine to 0):
the from-scratch variant, without a teacher. ReActNet augmentation (random resized crop, flip,
lighting; configurable), eval by resize + center crop. Mixed precision on CUDA. Checkpoints
every epoch with everything needed to resume bit for bit (`--resume`), a progress bar and log
lines on stderr, a JSON-lines log, top-1/top-5 after every epoch.

Distributed through torch.distributed: run under torchrun and each process trains a shard with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs):

    torchrun --nproc_per_node=8 -m weights_tools.train --stage 1 --arch qsb_net_large ...

A small teacher is trained with the same tool (`--stage teacher --arch cifar_resnet20`).
See docs/training.md for the recipe and the exact commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import data as D
from .checkpoint import read_checkpoint, read_state_dict
from .teacher import TEACHER_ARCHS, build_teacher, is_teacher_arch, load_teacher
from .zoo import ARCHS, BLOCK_TYPES, build_model, set_training_stage, with_overrides

__all__ = [
    "main",
    "train",
    "run",
    "TrainConfig",
    "parse_config",
    "build_parser",
    "model_from_meta",
    "topk_correct",
    "kd_loss",
    "lr_factor",
    "Progress",
]

DEFAULT_WEIGHT_DECAY = {"teacher": 1e-4, "1": 1e-5, "2": 0.0, "int8": 0.0}
DEFAULT_LR = {"teacher": 1e-3, "1": 1e-3, "2": 1e-3, "int8": 1e-4}
STAGES = ("teacher", "1", "2", "int8")
CHECKPOINT = "checkpoint.pth"
FINAL = "model.pth"


# ---------------------------------------------------------------------------------------------
# Small pieces, unit-tested on their own


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> List[int]:
    """How many rows have their target among the k largest logits, for each k (k is capped at
    the number of classes, so top-5 of a 3-class problem is top-3)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T², averaged over the batch.

    ReActNet's distributional loss is the cross-entropy against the teacher's softmax: the same
    gradient (the two differ by the teacher's entropy, a constant)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based)."""
    total = max(1, total_steps)
    if schedule == "poly":
        return max(0.0, 1.0 - step / total)
    if schedule == "cosine":
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


class Progress:
    """Progress of a loop on stderr: a tqdm bar on a terminal. When stderr is a file or a pipe
    (a log, a batch job) there is no bar, only one plain line every `every` steps (default: every
    10%) and at the last step, so that a log shows the run moving without redrawn lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        every: int = 0,
        stream=None,
        width: int = 24,
        initial: int = 0,
    ):
        self.total, self.desc, self.enabled, self.width = total, desc, enabled, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every > 0 else max(1, total // 10)
        self.n = self.initial = initial
        self.t0 = time.perf_counter()
        self.bar: Optional[tqdm] = None
        if enabled and self.tty:
            self.bar = tqdm(
                total=total, desc=desc, initial=initial, file=self.stream, dynamic_ncols=True
            )

    def update(self, n: int = 1, **info: Any) -> None:
        self.n += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(
                {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in info.items()},
                refresh=False,
            )
            self.bar.update(n)
            return
        if self.n % self.every and self.n != self.total:
            return
        frac = self.n / self.total if self.total else 1.0
        filled = int(round(self.width * min(frac, 1.0)))
        elapsed = time.perf_counter() - self.t0
        done = self.n - self.initial
        eta = elapsed / done * (self.total - self.n) if done > 0 else 0.0
        text = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
        )
        self.stream.write(
            f"{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] {self.n}/{self.total} "
            f"{elapsed:.0f}s<{eta:.0f}s {text}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# The run's configuration


@dataclass
class TrainConfig:
    """Everything one training run is told; the command line (`build_parser`) fills it, and its
    defaults are the command line's. `dataclasses.asdict(config)` is what the logs record."""

    # what to train
    stage: str  # "teacher", "1", "2" or "int8" (the INT8 fine-tune of a stage-2 model)
    arch: str
    out: str  # folder: checkpoint.pth, model.pth, log.jsonl, train.log
    se: str = "none"
    se_weights: str = "fp32"  # the SE FCs' weights: fp32, int8 or binary (layers.SqueezeExcite)
    padding: str = "zero"
    blocks: Optional[str] = None  # comma list replacing the arch's block types
    stem_channels: Optional[int] = None
    name: Optional[str] = None
    num_classes: Optional[int] = None  # None: the number of classes in the data
    init: Optional[str] = None  # start from these weights (stage 2: stage 1's model.pth)
    # data
    dataset: str = "imagefolder"  # or "digits"
    data: Optional[str] = None
    train_dir: Optional[str] = None
    val_dir: Optional[str] = None
    input_size: Optional[int] = None
    resize_short: Optional[int] = None
    augment: Optional[str] = None
    crop_scale: Optional[float] = None
    lighting: float = 0.1
    workers: int = 4
    # distillation
    teacher: Optional[str] = None
    teacher_arch: Optional[str] = None
    kd_temperature: float = 1.0
    ce_weight: float = 0.0
    eval_teacher: bool = False
    # optimization
    epochs: int = 256
    batch_size: int = 256  # per process
    lr: Optional[float] = None  # None: DEFAULT_LR[stage]
    weight_decay: Optional[float] = None  # None: DEFAULT_WEIGHT_DECAY[stage]
    schedule: str = "poly"
    warmup: float = 0.0  # epochs
    lr_update: str = "step"  # or "epoch"
    label_smoothing: float = 0.0
    amp: str = "auto"
    sync_bn: bool = False
    # run
    resume: Optional[str] = None  # a checkpoint, or "auto"
    seed: int = 0
    max_steps: int = 0
    eval_every: int = 1
    eval_batch_size: int = 0  # 0: batch_size
    device: str = "auto"
    threads: int = 0
    quiet: bool = False  # no progress bar or progress lines
    log_interval: int = 0
    save_rank_weights: bool = False
    # INT8 quantization-aware training (weights_tools.fake_quant)
    int8_dw: bool = False  # stages 1 and 2: INT8 depthwise convs from the start
    int8_fc: Optional[str] = None  # "int8" or "bitplane8" (stage int8 default: "int8")
    int8_input_scale: str = "learned"
    int8_calibration_images: int = 256  # stage int8: calibrate the input scales on these first

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    @property
    def weight_decay_value(self) -> float:
        return DEFAULT_WEIGHT_DECAY[self.stage] if self.weight_decay is None else self.weight_decay

    @property
    def lr_value(self) -> float:
        return DEFAULT_LR[self.stage] if self.lr is None else self.lr

    @property
    def int8(self) -> Optional[Dict[str, Any]]:
        """The fake-quant settings of the student (`fake_quant.quantize_model`), or None."""
        if self.stage == "int8":
            fc = self.int8_fc or "int8"
            return {
                "dw": True,
                "fc": None if fc == "fp32" else fc,
                "input_scale": self.int8_input_scale,
            }
        if self.int8_dw or self.int8_fc:
            fc = None if self.int8_fc in (None, "fp32") else self.int8_fc
            return {"dw": self.int8_dw, "fc": fc, "input_scale": self.int8_input_scale}
        return None


def parse_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    return TrainConfig.from_args(build_parser().parse_args(argv))


# ---------------------------------------------------------------------------------------------
# Distributed set-up


class DistInfo:
    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device, backend: str):
        self.rank, self.world, self.local_rank, self.device, self.backend = (
            rank,
            world,
            local_rank,
            device,
            backend,
        )

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> List[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()


def setup_distributed(device_arg: str) -> DistInfo:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) -> a process group: NCCL when this
    process trains on a GPU, gloo on the CPU. Without torchrun: one process, no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world, local_rank, device, backend if world > 1 else "none")


# ---------------------------------------------------------------------------------------------
# Models


def _parse_blocks(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    blocks = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in blocks if b not in BLOCK_TYPES]
    if unknown or not blocks:
        raise SystemExit(
            f"--blocks: unknown block type(s) {unknown}; known: {', '.join(BLOCK_TYPES)}"
        )
    return blocks


def model_from_meta(meta: Dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) model described by a checkpoint's "meta" record."""
    if meta.get("task") == "segmentation":
        from .train_segmentation import segmenter_from_meta

        return segmenter_from_meta(meta)
    num_classes = int(meta["num_classes"])
    if meta.get("kind") == "teacher":
        return build_teacher(meta["arch"], num_classes)
    arch: Any = meta["arch"]
    changes: Dict[str, Any] = {}
    if meta.get("blocks"):
        changes["blocks"] = tuple(meta["blocks"])
    if meta.get("stem_channels"):
        changes["stem_channels"] = int(meta["stem_channels"])
    if changes:
        arch = dataclasses.replace(
            with_overrides(arch, **changes), name=meta.get("name") or f"{arch}_custom"
        )
    model = build_model(
        arch,
        num_classes=num_classes,
        se=meta.get("se"),
        se_weights=meta.get("se_weights", "fp32"),
        padding=meta.get("padding", "zero"),
        stage=int(meta.get("stage", 2)),
    )
    if meta.get("int8"):
        from .fake_quant import quantize_model

        quantize_model(model, **meta["int8"])
    return model


def _weight_decay_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on conv and FC weights only (ReActNet); none on biases, BN, PReLU slopes,
    alphas and the learnable biases before signs."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if name.endswith("weight") and p.ndim >= 2 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _average_buffers(model: nn.Module, info: DistInfo) -> None:
    """Average BN running statistics over the ranks, so that every rank evaluates and saves the
    same model (DDP keeps parameters equal; each rank's last forward updates its own buffers)."""
    if not info.enabled:
        return
    for buf in _unwrap(model).buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(info.world)


def state_checksum(state: Dict[str, torch.Tensor]) -> str:
    """A SHA-256 of a state_dict's names, dtypes, shapes and bytes (identical iff bit-equal)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Data


def _pair(v: int) -> Tuple[int, int]:
    return (int(v), int(v))


def build_data(cfg: "TrainConfig") -> Tuple[D.DataSpec, Any, Any]:
    """(spec, train set, eval set): untransformed datasets of (PIL image, label)."""
    if cfg.dataset == "digits":
        train_set, eval_set = D.digits("train"), D.digits("holdout")
        size = cfg.input_size or 32
        spec = D.DataSpec(
            classes=train_set.classes,
            input_size=_pair(size),
            resize_short=cfg.resize_short or size,
            mean=D.DIGITS_MEAN,
            std=D.DIGITS_STD,
            augment=("crop", "lighting"),
            crop_scale=(0.5, 1.0),
            source="scikit-learn digits (UCI Optical Recognition of Handwritten "
            "Digits, CC BY 4.0), upscaled 8x8 -> 32x32",
        )
    else:
        train_dir = cfg.train_dir or (os.path.join(cfg.data, "train") if cfg.data else None)
        val_dir = cfg.val_dir or (os.path.join(cfg.data, "val") if cfg.data else None)
        if not train_dir or not val_dir:
            raise SystemExit(
                "imagefolder data: give --data ROOT (ROOT/train, ROOT/val) or "
                "--train-dir and --val-dir"
            )
        train_set, eval_set = D.ImageFolder(train_dir), D.ImageFolder(val_dir)
        if train_set.classes != eval_set.classes:
            raise SystemExit(f"{train_dir} and {val_dir} have different class folders")
        size = cfg.input_size or 224
        spec = D.DataSpec(
            classes=train_set.classes,
            input_size=_pair(size),
            resize_short=cfg.resize_short or int(round(size * 256 / 224)),
            mean=D.IMAGENET_MEAN,
            std=D.IMAGENET_STD,
            source=f"ImageFolder {os.path.abspath(train_dir)}",
        )
    if cfg.augment is not None:
        spec.augment = tuple(a for a in cfg.augment.split(",") if a and a != "none")
    if cfg.crop_scale is not None:
        spec.crop_scale = (float(cfg.crop_scale), 1.0)
    return spec, train_set, eval_set


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _save_atomic(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# ---------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m weights_tools.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run under torchrun for several processes (DDP). Recipe: docs/training.md.",
    )
    g = p.add_argument_group("what to train")
    g.add_argument(
        "--stage",
        choices=STAGES,
        required=True,
        help="teacher: a float model (--arch a teacher arch); 1: binary activations, "
        "float weights; 2: both binary (start it from stage 1 with --init); int8: fine-tune "
        "a stage-2 model (--init) with INT8 depthwise convs and FC (lr 1e-4)",
    )
    g.add_argument(
        "--arch",
        required=True,
        help=f"zoo model ({', '.join(ARCHS)}) or, for --stage teacher, a teacher "
        f"({', '.join(TEACHER_ARCHS)}, or a torchvision name when importable)",
    )
    g.add_argument("--se", choices=("none", "se1", "se2"))
    g.add_argument(
        "--se-weights",
        choices=("fp32", "int8", "binary"),
        help="how the SE FCs hold their weights (binary: sign x per-row scale, STE; default fp32)",
    )
    g.add_argument("--padding", choices=("zero", "one"))
    g.add_argument(
        "--blocks",
        help="replace the arch's block list, e.g. N,D,N,Q,N,Q,N (sizes a "
        "zoo model down for a small data set)",
    )
    g.add_argument("--stem-channels", type=int, help="replace the arch's stem width")
    g.add_argument(
        "--name",
        help="the model's name (default: the arch, with _custom when "
        "--blocks or --stem-channels change it)",
    )
    g.add_argument("--num-classes", type=int, help="default: the number of class folders")
    g.add_argument(
        "--init",
        metavar="CKPT",
        help="start from these weights (stage 2: stage 1's "
        "model.pth); optimizer and schedule start afresh",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=("imagefolder", "digits"),
        help="imagefolder: class-per-folder images; digits: scikit-learn's 8x8 digits "
        "upscaled to 32x32 (in-package, nothing downloaded)",
    )
    g.add_argument("--data", help="ImageFolder root holding train/ and val/")
    g.add_argument("--train-dir")
    g.add_argument("--val-dir")
    g.add_argument("--input-size", type=int, help="crop size (default 224; digits 32)")
    g.add_argument(
        "--resize-short",
        type=int,
        help="eval resize of the shorter side (default 256/224 of the crop)",
    )
    g.add_argument(
        "--augment",
        help="comma list of crop, flip, lighting, or none (default: all "
        "three; digits: crop,lighting - no flips for digits)",
    )
    g.add_argument(
        "--crop-scale",
        type=float,
        help="smallest area fraction of the random resized crop (default 0.08; digits 0.5)",
    )
    g.add_argument("--lighting", type=float, help="PCA lighting std (ReActNet: 0.1)")
    g.add_argument("--workers", type=int, help="data loader processes per rank")
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", metavar="CKPT", help="teacher weights, a local file")
    g.add_argument(
        "--teacher-arch",
        help="teacher architecture (default: recorded in CKPT); "
        "torchvision-style names such as resnet34",
    )
    g.add_argument("--kd-temperature", type=float)
    g.add_argument(
        "--ce-weight",
        type=float,
        help="weight of the label cross-entropy added to the KD loss (ReActNet: 0)",
    )
    g.add_argument(
        "--eval-teacher", action="store_true", help="report the teacher's accuracy first"
    )
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process")
    g.add_argument("--lr", type=float, help="default: 1e-3; stage int8 1e-4")
    g.add_argument(
        "--weight-decay",
        type=float,
        help="default: stage 1 1e-5, stage 2 0, teacher 1e-4 (conv and FC weights only)",
    )
    g.add_argument("--schedule", choices=("poly", "cosine", "constant"))
    g.add_argument("--warmup", type=float, help="warm-up epochs (cosine)")
    g.add_argument(
        "--lr-update",
        choices=("step", "epoch"),
        help="change the learning rate after every step (default) or, as the paper "
        "words the poly rule, once per epoch",
    )
    g.add_argument(
        "--label-smoothing",
        type=float,
        help="of the cross-entropy (runs without a teacher)",
    )
    g.add_argument(
        "--amp",
        choices=("auto", "off", "fp16", "bf16"),
        help="mixed precision (CUDA only); auto: fp16 on CUDA, off on the CPU",
    )
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs")
    g = p.add_argument_group("run")
    g.add_argument(
        "--out",
        required=True,
        help="output folder: checkpoint.pth, model.pth, log.jsonl, train.log",
    )
    g.add_argument(
        "--resume",
        metavar="CKPT",
        help="resume from a checkpoint ('auto': OUT/checkpoint.pth if it exists)",
    )
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--max-steps",
        type=int,
        help="stop (with a checkpoint) after this many optimizer steps in all",
    )
    g.add_argument("--eval-every", type=int, help="epochs between evaluations")
    g.add_argument("--eval-batch-size", type=int, help="default: --batch-size")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"))
    g.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    g.add_argument(
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        help="no progress bar or progress lines (the per-epoch log lines stay)",
    )
    g.add_argument(
        "--log-interval",
        type=int,
        help="steps between progress lines when stderr is not a terminal (there is no bar "
        "then; 0: every 10%%)",
    )
    g.add_argument(
        "--save-rank-weights",
        action="store_true",
        help="every rank also writes OUT/final_rank<R>.pth (checks DDP agreement)",
    )
    g = p.add_argument_group("INT8 quantization-aware training (weights_tools.fake_quant)")
    g.add_argument(
        "--int8-dw",
        action="store_true",
        help="stages 1 and 2: train the depthwise convs as the engine's INT8 depthwise "
        "(8-bit weights and input) from the start",
    )
    g.add_argument(
        "--int8-fc",
        choices=("fp32", "int8", "bitplane8"),
        help="the FC as the engine's INT8 or bitplane8 FC (stage int8 default: int8)",
    )
    g.add_argument(
        "--int8-input-scale",
        choices=("learned", "calibrated", "running-max"),
        help="depthwise input scales: learned (LSQ, default), calibrated (fixed at "
        "max|u|/127 over calibration images, the converter's rule) or running-max",
    )
    g.add_argument(
        "--int8-calibration-images",
        type=int,
        help="stage int8: calibrate the input scales on this many training images (eval "
        "transform) before fine-tuning (default 256; 0: from the first batch)",
    )
    # One source of defaults: TrainConfig's (the parser and the dataclass cannot drift apart).
    p.set_defaults(**TrainConfig.defaults())
    return p


class _Logger:
    def __init__(self, out: str, enabled: bool):
        self.enabled = enabled
        self.text = self.jsonl = None
        if enabled:
            self.text = open(os.path.join(out, "train.log"), "a", encoding="utf-8")
            self.jsonl = open(os.path.join(out, "log.jsonl"), "a", encoding="utf-8")

    def line(self, msg: str) -> None:
        if not self.enabled:
            return
        stamped = time.strftime("%H:%M:%S ") + msg
        print(stamped, file=sys.stderr, flush=True)
        self.text.write(stamped + "\n")  # type: ignore[union-attr]
        self.text.flush()  # type: ignore[union-attr]

    def record(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = _json_safe({"event": event, "time": time.time(), **fields})
        self.jsonl.write(json.dumps(rec) + "\n")  # type: ignore[union-attr]
        self.jsonl.flush()  # type: ignore[union-attr]

    def close(self) -> None:
        for f in (self.text, self.jsonl):
            if f is not None:
                f.close()


def _autocast(device: torch.device, amp: Optional[torch.dtype]):
    if amp is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=amp)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    amp: Optional[torch.dtype] = None,
    progress: bool = False,
) -> Dict[str, float]:
    """Top-1, top-5 (percent) and cross-entropy over the whole eval set (all ranks' shards).

    Pass the bare model, not its DistributedDataParallel wrapper: the shards may differ in length
    by a batch, and only the wrapper's forward would talk to the other ranks."""
    model.eval()
    loss_sum, c1, c5, n = 0.0, 0, 0, 0
    bar = Progress(len(loader), "  eval", enabled=progress)
    for x, y in loader:
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        with _autocast(info.device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        a, b = topk_correct(logits, y, (1, 5))
        c1, c5, n = c1 + a, c5 + b, n + int(y.numel())
        bar.update()
    bar.close()
    loss_sum, c1, c5, n = info.sum([loss_sum, c1, c5, n])
    n = max(n, 1)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss_sum / n, "n": int(n)}


# ---------------------------------------------------------------------------------------------
# The run, in steps


def check_config(cfg: TrainConfig) -> None:
    """Refuse combinations that cannot work, before anything is built."""
    is_teacher = cfg.stage == "teacher"
    if is_teacher and not is_teacher_arch(cfg.arch):
        raise SystemExit(
            f"--stage teacher needs a teacher arch ({', '.join(TEACHER_ARCHS)}), got {cfg.arch!r}"
        )
    if not is_teacher and cfg.arch not in ARCHS:
        raise SystemExit(
            f"--stage {cfg.stage} needs a zoo arch ({', '.join(ARCHS)}), got {cfg.arch!r}"
        )
    if is_teacher and cfg.teacher:
        raise SystemExit("--teacher is for the student stages")
    if cfg.warmup and cfg.schedule != "cosine":
        raise SystemExit("--warmup goes with --schedule cosine")
    if is_teacher and (cfg.int8_dw or cfg.int8_fc):
        raise SystemExit("--int8-dw / --int8-fc are for the student stages")
    if cfg.stage == "int8" and not (cfg.init or cfg.resume):
        raise SystemExit("--stage int8 fine-tunes a trained model: give --init STAGE2/model.pth")


def amp_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """The mixed-precision dtype (None: full precision); mixed precision is for CUDA only."""
    if cfg.amp in ("fp16", "bf16") and device.type != "cuda":
        raise SystemExit(f"--amp {cfg.amp} needs CUDA (mixed precision is for GPUs)")
    if device.type == "cuda" and cfg.amp != "off":
        torch.backends.cudnn.benchmark = True
        return torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return None


def build_meta(cfg: TrainConfig, spec: D.DataSpec) -> Dict[str, Any]:
    """The checkpoint's "meta" record: what `model_from_meta` rebuilds the model from."""
    num_classes = cfg.num_classes or spec.num_classes
    if num_classes < spec.num_classes:
        raise SystemExit(f"--num-classes {num_classes} < {spec.num_classes} classes in the data")
    blocks = _parse_blocks(cfg.blocks)
    is_teacher = cfg.stage == "teacher"
    return {
        "kind": "teacher" if is_teacher else "student",
        "arch": cfg.arch,
        "name": cfg.name or (f"{cfg.arch}_custom" if blocks or cfg.stem_channels else cfg.arch),
        "blocks": blocks,
        "stem_channels": cfg.stem_channels,
        "se": None if cfg.se == "none" else cfg.se,
        "se_weights": cfg.se_weights,
        "padding": cfg.padding,
        "num_classes": num_classes,
        "stage": 2 if is_teacher or cfg.stage == "int8" else int(cfg.stage),
        "int8": None if is_teacher else cfg.int8,
        "data": _json_safe(asdict(spec)),
    }


def build_student(
    cfg: TrainConfig, meta: Dict[str, Any], info: DistInfo, log: "_Logger"
) -> Tuple[nn.Module, nn.Module]:
    """(the model, the module to train: its DistributedDataParallel wrapper under torchrun)."""
    # The same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    int8 = meta.get("int8")
    model = model_from_meta({**meta, "int8": None})
    if cfg.init:
        init_state = read_state_dict(cfg.init)
        # An FP32 model's weights load before the switch to fake-quant, an INT8 one's after
        # (its input scales are state too).
        quantized_init = any(".input_quant." in k for k in init_state)
        if int8 and quantized_init:
            _quantize(model, int8)
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            raise SystemExit(f"--init {cfg.init} does not fit {meta['name']}: {exc}") from None
        log.line(f"initialised from {cfg.init}")
    if int8 and not any(".input_quant." in k for k in model.state_dict()):
        _quantize(model, int8)
    if cfg.stage != "teacher":
        set_training_stage(model, int(meta["stage"]))
    model.to(info.device)
    if cfg.sync_bn and info.enabled and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp_model: nn.Module = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    return model, ddp_model


def _student_teacher(cfg: TrainConfig, device: torch.device) -> Optional[nn.Module]:
    """A zoo student as the teacher (a `weights_tools.train` checkpoint of kind "student",
    e.g. the FP32 stage-2 model that an INT8 fine-tune distils from), frozen in eval mode; None
    when --teacher is not one (or --teacher-arch is given)."""
    if cfg.teacher_arch:
        return None
    saved = read_checkpoint(cfg.teacher)
    meta = saved.get("meta") if isinstance(saved, dict) else None
    if not meta or meta.get("kind") != "student":
        return None
    model = model_from_meta(meta)
    model.load_state_dict(read_state_dict(cfg.teacher))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


def _quantize(model: nn.Module, int8: Dict[str, Any]) -> None:
    from .fake_quant import quantize_model

    quantize_model(model, **int8)


def calibrate_int8(s: "Session", train_base: Any, spec: D.DataSpec) -> None:
    """Stage int8 (or --int8-dw from --init): set the depthwise input scales to max|u| / 127 over
    the first --int8-calibration-images training images with the eval transform (the converter's
    calibrated mode), unless they are set already (a resumed run, an INT8 --init)."""
    from .fake_quant import calibrate, input_quantizers

    quants = input_quantizers(s.model)
    count = min(s.cfg.int8_calibration_images, len(train_base))
    if not quants or count <= 0 or all(bool(q.initialized) for q in quants):
        return
    subset = torch.utils.data.Subset(train_base, range(count))
    data = D.TransformedDataset(
        subset, D.build_transform(False, spec.input_size, spec.resize_short, spec.mean, spec.std)
    )
    loader = DataLoader(data, batch_size=s.cfg.eval_batch_size or s.cfg.batch_size)
    n = calibrate(s.model, (x for x, _ in loader))
    s.log.line(f"INT8: calibrated {len(quants)} depthwise input scales on {n} training images")


@dataclass
class Loaders:
    train_set: D.TransformedDataset
    sampler: D.ResumableSampler
    train: DataLoader
    eval: DataLoader
    steps_per_epoch: int


def build_loaders(
    cfg: TrainConfig, spec: D.DataSpec, train_base: Any, eval_base: Any, info: DistInfo
) -> Loaders:
    """This rank's shards: augmented training batches (resumable mid-epoch), eval batches."""
    train_set = D.TransformedDataset(
        train_base,
        D.build_transform(
            True,
            spec.input_size,
            spec.resize_short,
            spec.mean,
            spec.std,
            spec.augment,
            spec.crop_scale,
            cfg.lighting,
        ),
        cfg.seed,
    )
    eval_set = D.TransformedDataset(
        eval_base, D.build_transform(False, spec.input_size, spec.resize_short, spec.mean, spec.std)
    )
    sampler = D.ResumableSampler(train_set, info.world, info.rank, shuffle=True, seed=cfg.seed)
    drop_last = sampler.num_samples >= cfg.batch_size
    loader_kw: Dict[str, Any] = dict(num_workers=cfg.workers, pin_memory=info.device.type == "cuda")
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last, **loader_kw
    )
    eval_loader = DataLoader(
        eval_set,
        batch_size=cfg.eval_batch_size or cfg.batch_size,
        sampler=D.EvalShardSampler(len(eval_set), info.world, info.rank),
        **loader_kw,
    )
    steps_per_epoch = (
        sampler.num_samples // cfg.batch_size
        if drop_last
        else math.ceil(sampler.num_samples / cfg.batch_size)
    )
    return Loaders(train_set, sampler, train_loader, eval_loader, steps_per_epoch)


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, steps_per_epoch: int
) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam(0.9, 0.999) with weight decay on conv and FC weights, and the learning-rate schedule
    stepped after every optimizer step."""
    optimizer = torch.optim.Adam(
        _weight_decay_groups(model, cfg.weight_decay_value), lr=cfg.lr_value, betas=(0.9, 0.999)
    )
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup * steps_per_epoch))
    if cfg.lr_update == "epoch":  # the schedule over epochs: t and T counted in whole epochs

        def schedule(s: int) -> float:
            return lr_factor(s // steps_per_epoch, cfg.epochs, cfg.schedule, int(round(cfg.warmup)))
    else:

        def schedule(s: int) -> float:
            return lr_factor(s, total_steps, cfg.schedule, warmup_steps)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass
class Position:
    """Where the run stands: what a checkpoint records so that a resumed run continues bit for bit."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclass
class Session:
    """What the steps of one run share: the configuration, the models, the optimizer and its
    schedule, the data, where the run stands, and the log."""

    cfg: TrainConfig
    info: DistInfo
    meta: Dict[str, Any]
    model: nn.Module
    ddp_model: nn.Module
    teacher: Optional[nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: Optional[torch.dtype]
    loaders: Loaders
    log: "_Logger"
    pos: Position = dataclasses.field(default_factory=Position)


_RESUME_MUST_MATCH = (
    "arch",
    "num_classes",
    "stage",
    "blocks",
    "stem_channels",
    "se",
    "padding",
    "int8",
)


def resolve_resume(cfg: TrainConfig) -> Optional[str]:
    """The checkpoint to resume from: --resume, or with 'auto' OUT/checkpoint.pth if it exists."""
    if cfg.resume != "auto":
        return cfg.resume
    path = os.path.join(cfg.out, CHECKPOINT)
    return path if os.path.exists(path) else None


def load_checkpoint(s: Session, path: str) -> None:
    """Restore the model, optimizer, schedule, scaler, random states and position of `path`."""
    ck = read_checkpoint(path)
    for key in _RESUME_MUST_MATCH:
        if ck["meta"].get(key) != s.meta.get(key):
            raise SystemExit(
                f"--resume {path}: checkpoint has "
                f"{key}={ck['meta'].get(key)!r}, this run {s.meta.get(key)!r}"
            )
    s.model.load_state_dict(ck["model"])
    s.optimizer.load_state_dict(ck["optimizer"])
    s.scheduler.load_state_dict(ck["scheduler"])
    if "scaler" in ck and s.scaler.is_enabled():
        s.scaler.load_state_dict(ck["scaler"])
    _set_rng_state(ck["rng"])
    s.pos = Position(
        ck["epoch"], ck["step_in_epoch"], ck["global_step"], list(ck.get("history", []))
    )
    if s.pos.step_in_epoch >= s.loaders.steps_per_epoch:
        s.pos.epoch, s.pos.step_in_epoch = s.pos.epoch + 1, 0
    s.log.line(
        f"resumed from {path}: epoch {s.pos.epoch}, step {s.pos.step_in_epoch} of "
        f"{s.loaders.steps_per_epoch}, global step {s.pos.global_step}"
    )


def save_checkpoint(s: Session, epoch: int, step_in_epoch: int) -> None:
    """OUT/checkpoint.pth (rank 0, written atomically): everything `load_checkpoint` restores."""
    if s.info.main:
        ck = {
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": s.pos.global_step,
            "rng": _rng_state(),
            "meta": s.meta,
            "args": _json_safe(asdict(s.cfg)),
            "history": s.pos.history,
        }
        if s.scaler.is_enabled():
            ck["scaler"] = s.scaler.state_dict()
        _save_atomic(ck, os.path.join(s.cfg.out, CHECKPOINT))
    s.info.barrier()


def _loss(s: Session, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KD from the teacher (plus --ce-weight x cross-entropy), or cross-entropy without one."""
    cfg = s.cfg
    if s.teacher is None:
        return F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    with torch.no_grad():
        t_logits = s.teacher(x)
    loss = kd_loss(logits, t_logits, cfg.kd_temperature)
    if cfg.ce_weight:
        loss = loss + cfg.ce_weight * F.cross_entropy(logits.float(), y)
    return loss


def train_epoch(s: Session, epoch: int, skip: int) -> Tuple[Dict[str, Any], bool, int]:
    """One epoch from step `skip` on (a resumed epoch starts mid-way): (the epoch's record,
    whether --max-steps stopped it, the step in the epoch it ended at)."""
    cfg, info, loaders = s.cfg, s.info, s.loaders
    loaders.sampler.set_epoch(epoch)
    loaders.sampler.set_start(skip * cfg.batch_size)
    loaders.train_set.set_epoch(epoch)
    s.ddp_model.train()
    bar = Progress(
        loaders.steps_per_epoch,
        f"epoch {epoch + 1}/{cfg.epochs}",
        enabled=info.main and not cfg.quiet,
        every=cfg.log_interval,
        initial=skip,
    )
    loss_sum, seen, c1 = 0.0, 0, 0
    t0 = time.perf_counter()
    step_in_epoch = skip
    stopped = False
    for x, y in loaders.train:
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        with _autocast(info.device, s.amp):
            logits = s.ddp_model(x)
            loss = _loss(s, x, y, logits)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        s.pos.global_step += 1
        step_in_epoch += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise SystemExit(f"loss is {value} at step {s.pos.global_step}: stopping")
        loss_sum += value * int(y.numel())
        seen += int(y.numel())
        c1 += topk_correct(logits.detach().float(), y, (1,))[0]
        bar.update(loss=value, lr=s.optimizer.param_groups[0]["lr"])
        if cfg.max_steps and s.pos.global_step >= cfg.max_steps:
            stopped = True
            break
    bar.close()
    loss_sum, seen, c1 = info.sum([loss_sum, seen, c1])
    record: Dict[str, Any] = {
        "epoch": epoch + 1,
        "global_step": s.pos.global_step,
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": 100.0 * c1 / max(seen, 1),
        "lr": s.optimizer.param_groups[0]["lr"],
        "time_s": round(time.perf_counter() - t0, 2),
    }
    return record, stopped, step_in_epoch


def _log_start(
    s: Session, spec: D.DataSpec, train_images: int, eval_images: int, resumed_from: Optional[str]
) -> None:
    cfg, info, log, meta = s.cfg, s.info, s.log, s.meta
    steps_per_epoch = s.loaders.steps_per_epoch
    total_steps = steps_per_epoch * cfg.epochs
    n_params = sum(p.numel() for p in s.model.parameters())
    log.line(
        f"{meta['name']} stage {cfg.stage}: {n_params / 1e6:.2f} M parameters, "
        f"{meta['num_classes']} classes, {train_images} training / {eval_images} eval images "
        f"({spec.source}); {info.world} process(es), {info.device}, backend {info.backend}, "
        f"amp {s.amp if s.amp is not None else 'off'}"
    )
    log.line(
        f"Adam lr {cfg.lr_value} wd {cfg.weight_decay_value}, {cfg.schedule} schedule over "
        f"{total_steps} steps ({cfg.epochs} epochs x {steps_per_epoch}), batch "
        f"{cfg.batch_size} x {info.world}, "
        f"{'KD from ' + cfg.teacher if s.teacher is not None else 'cross-entropy'}, "
        f"augment {','.join(spec.augment) or 'none'}"
    )
    log.record(
        "start",
        args=asdict(cfg),
        meta=meta,
        world_size=info.world,
        device=str(info.device),
        parameters=n_params,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        weight_decay=cfg.weight_decay_value,
        resumed_from=resumed_from,
        global_step=s.pos.global_step,
    )


def _log_epoch(s: Session, record: Dict[str, Any]) -> None:
    s.log.record("epoch", **record)
    s.log.line(
        f"epoch {record['epoch']}/{s.cfg.epochs}: loss {record['train_loss']:.4f}, train top-1 "
        f"{record['train_top1']:.2f}%"
        + (
            f", val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%"
            if "val_top1" in record
            else ""
        )
        + f" ({record['time_s']:.0f} s)"
    )


def save_final(
    s: Session, metrics: Dict[str, float], stopped: bool, train_time_s: float
) -> Dict[str, Any]:
    """OUT/model.pth (weights, meta, metrics); with --save-rank-weights each rank's copy too.
    Returns the final record."""
    cfg, info = s.cfg, s.info
    final = {
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "loss": metrics["loss"],
        "n": metrics["n"],
        "global_step": s.pos.global_step,
        "complete": not stopped,
        "train_time_s": round(train_time_s, 1),
    }
    state = {k: v.detach().cpu() for k, v in s.model.state_dict().items()}
    checksum = state_checksum(state)
    if info.main:
        _save_atomic(
            {"model": state, "meta": s.meta, "metrics": final}, os.path.join(cfg.out, FINAL)
        )
    if cfg.save_rank_weights:
        _save_atomic(
            {"model": state, "checksum": checksum},
            os.path.join(cfg.out, f"final_rank{info.rank}.pth"),
        )
    s.log.record("end", checksum=checksum, **final)
    s.log.line(
        f"done: top-1 {final['top1']:.2f}%  top-5 {final['top5']:.2f}% on {final['n']} eval "
        f"images; weights {os.path.join(cfg.out, FINAL)} (sha256 {checksum[:12]})"
    )
    return {"final": final, "checksum": checksum}


def train(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the command line in this process and return a summary (the final metrics, the paths,
    the history of per-epoch records)."""
    return run(parse_config(argv))


def run_as_rank(
    device: str,
    threads: int,
    out: str,
    body: Callable[[DistInfo, "_Logger"], Dict[str, Any]],
) -> Dict[str, Any]:
    """Run `body(info, log)` as this process's rank (of a torchrun job, or alone): the process
    group, the thread count, the output folder and the logger are set up here and always torn
    down, so classification and segmentation training share one life cycle."""
    info = setup_distributed(device)
    try:
        if threads:
            torch.set_num_threads(threads)
        os.makedirs(out, exist_ok=True)
        info.barrier()
        log = _Logger(out, info.main)
        try:
            return body(info, log)
        finally:
            log.close()
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def run(cfg: TrainConfig) -> Dict[str, Any]:
    """Train as `cfg` says, in this process (one rank of a torchrun job, or alone)."""
    return run_as_rank(
        cfg.device, cfg.threads, cfg.out, lambda info, log: _run_logged(cfg, info, log)
    )


def _run_logged(cfg: TrainConfig, info: DistInfo, log: _Logger) -> Dict[str, Any]:
    check_config(cfg)
    amp = amp_dtype(cfg, info.device)
    spec, train_base, eval_base = build_data(cfg)
    meta = build_meta(cfg, spec)
    model, ddp_model = build_student(cfg, meta, info, log)
    teacher = None
    if cfg.teacher:
        teacher = _student_teacher(cfg, info.device)
        if teacher is None:
            teacher = load_teacher(cfg.teacher, cfg.teacher_arch, meta["num_classes"], info.device)
    loaders = build_loaders(cfg, spec, train_base, eval_base, info)
    optimizer, scheduler = build_optimizer(cfg, model, loaders.steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    s = Session(
        cfg, info, meta, model, ddp_model, teacher, optimizer, scheduler, scaler, amp, loaders, log
    )
    resume = resolve_resume(cfg)
    if resume:
        load_checkpoint(s, resume)
    elif cfg.init and meta.get("int8"):
        calibrate_int8(s, train_base, spec)
    _log_start(s, spec, len(train_base), len(eval_base), resume)
    if teacher is not None and cfg.eval_teacher:
        tm = evaluate(teacher, loaders.eval, info, amp)
        log.line(f"teacher: top-1 {tm['top1']:.2f}%  top-5 {tm['top5']:.2f}%")
        log.record("teacher_eval", **tm)

    stopped = False
    last_metrics: Optional[Dict[str, float]] = None
    t_run = time.perf_counter()
    start_epoch, start_step = s.pos.epoch, s.pos.step_in_epoch
    for epoch in range(start_epoch, cfg.epochs):
        skip = start_step if epoch == start_epoch else 0
        record, stopped, step_in_epoch = train_epoch(s, epoch, skip)
        # Every rank evaluates and saves the same BN statistics.
        _average_buffers(ddp_model, info)
        if stopped and step_in_epoch < loaders.steps_per_epoch:
            record["partial"] = True
            save_checkpoint(s, epoch, step_in_epoch)
            log.record("stopped", **record)
            log.line(f"stopped after {s.pos.global_step} steps (--max-steps); checkpoint saved")
            break
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            last_metrics = evaluate(model, loaders.eval, info, amp)
            record.update(
                val_top1=last_metrics["top1"],
                val_top5=last_metrics["top5"],
                val_loss=last_metrics["loss"],
            )
        s.pos.history.append(record)
        _log_epoch(s, record)
        save_checkpoint(s, epoch + 1, 0)
        if stopped:
            break

    if last_metrics is None or stopped:
        last_metrics = evaluate(model, loaders.eval, info, amp)
    saved = save_final(s, last_metrics, stopped, time.perf_counter() - t_run)
    info.barrier()
    return {
        "out": cfg.out,
        "final": saved["final"],
        "history": s.pos.history,
        "checksum": saved["checksum"],
        "weight_decay": cfg.weight_decay_value,
        "meta": meta,
        "steps_per_epoch": loaders.steps_per_epoch,
        "rank": info.rank,
        "world_size": info.world,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # `--task segmentation` hands the whole command line to the segmentation trainer
    # (weights_tools/train_segmentation.py); `--task classification` is this module's.
    for i, a in enumerate(args):
        task = args[i + 1] if a == "--task" and i + 1 < len(args) else None
        if a.startswith("--task="):
            task = a.split("=", 1)[1]
        if task is None and a != "--task":
            continue
        if task not in ("classification", "segmentation"):
            raise SystemExit(f"--task must be classification or segmentation, got {task!r}")
        rest = args[:i] + args[i + (1 if "=" in a else 2) :]
        if task == "segmentation":
            from .train_segmentation import main as segmentation_main

            return segmentation_main(rest)
        args = rest
        break
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
