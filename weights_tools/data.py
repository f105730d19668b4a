"""Data for `weights_tools.train`: image datasets, the ReActNet augmentation and the loaders.

Two sources of images:

* `ImageFolder(root)`: one folder per class of image files (ImageNet's `train/` and `val/`
  layout), read with Pillow; classes are the sorted folder names.
* `digits(split)`: the 8x8 handwritten digits bundled with scikit-learn (1,797 images, UCI
  "Optical Recognition of Handwritten Digits", CC BY 4.0), scaled to 0..255, upscaled to 32x32
  with PIL's bilinear filter and repeated to RGB, split into a training set and a held-out set of
  45 images per class (450) by a fixed permutation. Nothing is downloaded.

Augmentation is a pure function of (seed, epoch, sample index): `TransformedDataset` builds a
`numpy.random.Generator` from those three numbers for every sample, so a run gives the same
batches whatever the number of loader workers, and a resumed run gives the batches the
uninterrupted run would have given.

Training transform (ReActNet, configurable): random resized crop (scale and aspect ranges),
horizontal flip, AlexNet PCA lighting, then normalization. Evaluation transform: resize the
shorter side with PIL's bilinear filter (rounded as `qbinfer`'s preprocessing rounds it), center
crop, normalization: exactly what the engine does with the preprocessing stored in a .qbw file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "DIGITS_HOLDOUT_PER_CLASS",
    "DataSpec",
    "ImageFolder",
    "ArrayDataset",
    "TransformedDataset",
    "ResumableSampler",
    "EvalShardSampler",
    "Compose",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "Lighting",
    "ResizeShorter",
    "CenterCrop",
    "ToTensor",
    "Normalize",
    "build_transform",
    "digits",
    "digits_arrays",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet pixels (as in ReActNet's `Lighting`).
_IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
_IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# Mean and standard deviation of the digits training split after upscaling (pixel/255), one value
# for the three identical channels; fixed here so that the shipped model's preprocessing does not
# depend on a recomputation.
DIGITS_MEAN = (0.3048, 0.3048, 0.3048)
DIGITS_STD = (0.3231, 0.3231, 0.3231)
DIGITS_HOLDOUT_PER_CLASS = 45
DIGITS_SIZE = 32


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is in the tools extra
        raise ImportError("weights_tools.data needs Pillow (pip install 'qbinfer[tools]')") from exc
    return Image


# ---------------------------------------------------------------------------------------------
# Datasets: (PIL RGB image, class index) pairs


class ImageFolder(Dataset):
    """`root/<class>/<image>`: class indices follow the sorted folder names."""

    def __init__(
        self, root: "str | os.PathLike[str]", extensions: Sequence[str] = IMAGE_EXTENSIONS
    ):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder not found: {self.root!r}")
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root!r} has no class folders (expected root/<class>/<image>)")
        exts = tuple(e.lower() for e in extensions)
        self.samples: List[Tuple[str, int]] = []
        for index, name in enumerate(self.classes):
            walk = os.walk(os.path.join(self.root, name), followlinks=True)
            for dirpath, _, files in sorted(walk):
                for f in sorted(files):
                    if f.lower().endswith(exts):
                        self.samples.append((os.path.join(dirpath, f), index))
        if not self.samples:
            raise ValueError(f"{self.root!r}: no image files with extensions {', '.join(exts)}")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with _pil().open(path) as img:
            return img.convert("RGB"), target


class ArrayDataset(Dataset):
    """In-memory N x H x W x 3 uint8 images with integer labels."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, classes: Sequence[str]):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"images must be N x H x W x 3 uint8, got {images.shape} {images.dtype}"
            )
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return _pil().fromarray(self.images[i]), self.targets[i]


def digits_arrays(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as (N x 32 x 32 x 3 uint8, N int64 labels) for split "train" or
    "holdout" (45 per class, chosen by a fixed permutation; the rest is "train")."""
    if split not in ("train", "holdout"):
        raise ValueError(f"digits split must be 'train' or 'holdout', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits dataset comes from scikit-learn "
            "(pip install scikit-learn, or 'qbinfer[tools]')"
        ) from exc
    d = load_digits()
    rng = np.random.default_rng(20240607)
    holdout = np.zeros(len(d.target), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(d.target == c)
        holdout[rng.permutation(members)[:DIGITS_HOLDOUT_PER_CLASS]] = True
    keep = holdout if split == "holdout" else ~holdout
    small = np.clip(np.rint(d.images[keep] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    Image = _pil()
    size = (DIGITS_SIZE, DIGITS_SIZE)
    big = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in small])
    images = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=3))
    return images, d.target[keep].astype(np.int64)


def digits(split: str) -> ArrayDataset:
    images, labels = digits_arrays(split)
    return ArrayDataset(images, labels, [str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------
# Transforms: callables (image, rng) -> image; PIL in, torch tensor out after ToTensor


class Compose:
    def __init__(self, steps: Sequence[Callable]):
        self.steps = list(steps)

    def __call__(self, img, rng: np.random.Generator):
        for step in self.steps:
            img = step(img, rng)
        return img

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(s) for s in self.steps) + ")"


@dataclass
class RandomResizedCrop:
    """torchvision's RandomResizedCrop (area fraction `scale`, log-uniform aspect `ratio`, ten
    tries then a center crop), resampled with PIL's bilinear filter."""

    size: Tuple[int, int]
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)

    def box(self, width: int, height: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, w, h
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img, rng: np.random.Generator):
        left, top, w, h = self.box(img.width, img.height, rng)
        return img.resize(
            (self.size[1], self.size[0]), _pil().BILINEAR, box=(left, top, left + w, top + h)
        )


@dataclass
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, img, rng: np.random.Generator):
        if rng.random() < self.p:
            return img.transpose(_pil().FLIP_LEFT_RIGHT)
        return img


@dataclass
class ResizeShorter:
    """Shorter side to `size` (PIL bilinear), the long side rounded as `qbinfer.preprocess` does."""

    size: int

    def __call__(self, img, rng: np.random.Generator):
        w, h = img.size
        if min(w, h) == self.size:
            return img
        if h <= w:
            nh, nw = self.size, max(1, int(round(w * self.size / h)))
        else:
            nh, nw = max(1, int(round(h * self.size / w))), self.size
        return img.resize((nw, nh), _pil().BILINEAR)


@dataclass
class CenterCrop:
    size: Tuple[int, int]

    def __call__(self, img, rng: np.random.Generator):
        ch, cw = self.size
        w, h = img.size
        if h < ch or w < cw:
            raise ValueError(f"image of {h}x{w} is smaller than the {ch}x{cw} crop")
        top = int(round((h - ch) / 2.0))
        left = int(round((w - cw) / 2.0))
        return img.crop((left, top, left + cw, top + ch))


class ToTensor:
    """PIL RGB -> float32 3 x H x W tensor in [0, 1]."""

    def __call__(self, img, rng: np.random.Generator) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)

    def __repr__(self) -> str:
        return "ToTensor()"


@dataclass
class Lighting:
    """AlexNet-style PCA lighting noise on a [0, 1] tensor (ReActNet uses alphastd = 0.1)."""

    alphastd: float = 0.1
    eigval: Tuple[float, ...] = _IMAGENET_EIGVAL
    eigvec: Tuple[Tuple[float, ...], ...] = _IMAGENET_EIGVEC

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.alphastd == 0:
            return x
        alpha = rng.normal(0.0, self.alphastd, 3)
        rgb = np.asarray(self.eigvec, dtype=np.float64) @ (alpha * np.asarray(self.eigval))
        return x + torch.tensor(rgb, dtype=x.dtype).view(3, 1, 1)


@dataclass
class Normalize:
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(3, 1, 1)
        return (x - mean) / std


AUGMENTATIONS = ("crop", "flip", "lighting")


def build_transform(
    train: bool,
    input_size: Tuple[int, int],
    resize_short: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: Sequence[str] = AUGMENTATIONS,
    crop_scale: Tuple[float, float] = (0.08, 1.0),
    lighting: float = 0.1,
) -> Compose:
    """The training transform (the `augment` subset of crop, flip, lighting) or the evaluation
    one (resize the shorter side to `resize_short`, center crop `input_size`)."""
    unknown = set(augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {sorted(unknown)}; known: {', '.join(AUGMENTATIONS)}"
        )
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if not train:
        return Compose(
            [ResizeShorter(resize_short), CenterCrop(input_size), ToTensor(), Normalize(mean, std)]
        )
    steps: List[Callable] = []
    if "crop" in augment:
        steps.append(RandomResizedCrop(input_size, scale=tuple(crop_scale)))
    else:
        steps += [ResizeShorter(resize_short), CenterCrop(input_size)]
    if "flip" in augment:
        steps.append(RandomHorizontalFlip())
    steps.append(ToTensor())
    if "lighting" in augment and lighting > 0:
        steps.append(Lighting(lighting))
    steps.append(Normalize(mean, std))
    return Compose(steps)


class TransformedDataset(Dataset):
    """`base[i]` through `transform`, with randomness drawn from (seed, epoch, i) only."""

    def __init__(self, base: Dataset, transform: Compose, seed: int = 0):
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        img, target = self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return self.transform(img, rng), target


# ---------------------------------------------------------------------------------------------
# Samplers


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (the shard of this rank; shuffled by seed + epoch) that can start
    part-way through an epoch: `set_start(k)` skips the first k samples of the shard, which is
    how a run resumed from a mid-epoch checkpoint sees the batches it had not seen."""

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class EvalShardSampler(torch.utils.data.Sampler):
    """Every `num_replicas`-th index from `rank`, no padding: the shards add up to the whole
    set exactly once, so summed counts give the exact accuracy."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class DataSpec:
    """What a trained model needs to know about its data: classes and eval preprocessing."""

    classes: List[str]
    input_size: Tuple[int, int]
    resize_short: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    augment: Tuple[str, ...] = AUGMENTATIONS
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocessing(self) -> dict:
        """The fields of `weights_tools.qbw.Preprocessing` for this data."""
        return {
            "resize_short": int(self.resize_short),
            "crop_height": int(self.input_size[0]),
            "crop_width": int(self.input_size[1]),
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "pixel_scale": 1.0 / 255.0,
        }
