"""Segmentation data: the offline "digit scenes" set and PASCAL VOC 2012 (+ SBD).

Digit scenes (docs/segmentation.md, "The offline data set"): real images on this machine, no
downloads. The 1,797 scikit-learn digits (8x8, UCI, CC BY 4.0) are scaled, recoloured and placed
on crops of the two photos scikit-learn bundles (`load_sample_images`: china.jpg, flower.jpg,
CC BY 2.0). Classes: 0 = background, 1..10 = the digits 0..9 (class = digit + 1). A pixel's label
comes from the digit's own strokes: its intensity (0..16, scaled to 0..1 after resizing) is the
alpha with which the colour is blended into the photo; alpha >= 0.5 is the digit, alpha in
[0.2, 0.5) is a boundary band labelled 255 (ignored, as VOC marks its object borders), and a
later digit overwrites an earlier one where they overlap.

Held-out split: the 450 digits of `data.digits_arrays("holdout")` (45 per class, the
classification model's held-out set) on crops of the right quarter of each photo (x >= 480 of
640); training uses the other 1,347 digits on the left three quarters. No training pixel of
either source is in a held-out image. Everything is a function of a seed: training scenes of
epoch e, index i from (seed, e, i), the held-out set from its own fixed seed.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import data as D

__all__ = [
    "SCENE_CLASSES",
    "IGNORE_INDEX",
    "SCENE_SIZE",
    "SCENE_MEAN",
    "SCENE_STD",
    "SCENE_HOLDOUT_SEED",
    "SCENE_HOLDOUT_COUNT",
    "PHOTO_SPLIT_X",
    "VOC_CLASSES",
    "digit_split",
    "photo_regions",
    "compose_scene",
    "scene_arrays",
    "DigitScenes",
    "SegArrayDataset",
    "VOCSegmentation",
    "normalize",
]

SCENE_CLASSES = ["background"] + [f"digit {d}" for d in range(10)]
IGNORE_INDEX = 255
SCENE_SIZE = 64
# The photos' statistics are ImageNet-like; the shipped model's preprocessing uses these.
SCENE_MEAN = D.IMAGENET_MEAN
SCENE_STD = D.IMAGENET_STD
SCENE_HOLDOUT_SEED = 20261205
SCENE_HOLDOUT_COUNT = 200
PHOTO_SPLIT_X = 480  # photos are 640 wide: [0, 480) for training, [480, 640) held out
DIGIT_SIZE_RANGE = (18, 36)  # side of a placed digit, pixels (at SCENE_SIZE 64)
DIGITS_PER_SCENE = (1, 3)
DIGIT_THRESHOLD = 0.5
BOUNDARY_LOW = 0.2

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def _sklearn():
    try:
        from sklearn import datasets
    except ImportError as exc:
        raise ImportError(
            "the digit scenes come from scikit-learn's bundled data "
            "(pip install scikit-learn, or 'qbinfer[tools]')"
        ) from exc
    return datasets


def digit_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits of `split` ("train" or "holdout") as (N x 8 x 8 float32 in 0..1, labels):
    the same partition as `data.digits_arrays` (its held-out 45 per class)."""
    if split not in ("train", "holdout"):
        raise ValueError(f"split must be 'train' or 'holdout', got {split!r}")
    d = _sklearn().load_digits()
    # The classification held-out split (data.digits_arrays): same seed, same draw order.
    rng = np.random.default_rng(20240607)
    holdout = np.zeros(len(d.target), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(d.target == c)
        holdout[rng.permutation(members)[: D.DIGITS_HOLDOUT_PER_CLASS]] = True
    keep = holdout if split == "holdout" else ~holdout
    return (d.images[keep] / 16.0).astype(np.float32), d.target[keep].astype(np.int64)


def photo_regions(split: str) -> List[np.ndarray]:
    """The part of each bundled photo (H x W x 3 uint8) that `split` may crop from."""
    if split not in ("train", "holdout"):
        raise ValueError(f"split must be 'train' or 'holdout', got {split!r}")
    photos = _sklearn().load_sample_images().images
    if split == "train":
        return [np.ascontiguousarray(p[:, :PHOTO_SPLIT_X]) for p in photos]
    return [np.ascontiguousarray(p[:, PHOTO_SPLIT_X:]) for p in photos]


def _resize(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 H x W x 3 image or a float H x W map to (height, width)."""
    Image = D._pil()
    h, w = size
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    out = Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def _overlap(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> float:
    """Intersection of boxes (y, x, h, w) over the smaller box's area."""
    h = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    w = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return 0.0
    return h * w / min(a[2] * a[3], b[2] * b[3])


def compose_scene(
    rng: np.random.Generator,
    digits: np.ndarray,
    labels: np.ndarray,
    regions: Sequence[np.ndarray],
    size: int = SCENE_SIZE,
) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: (size x size x 3 uint8 image, size x size uint8 mask; 255 = ignore)."""
    region = regions[int(rng.integers(len(regions)))]
    rh, rw = region.shape[:2]
    # A square crop between 1x and 2.5x the output size (never larger than the region), resized.
    side = int(rng.integers(size, min(int(size * 2.5), rh, rw) + 1))
    y0 = int(rng.integers(0, rh - side + 1))
    x0 = int(rng.integers(0, rw - side + 1))
    crop = region[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = _resize(np.ascontiguousarray(crop), (size, size)).astype(np.float32)
    # Photo recolouring: per-channel gain and an offset.
    image = image * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-30, 30)
    image = np.clip(image, 0, 255)
    mask = np.zeros((size, size), np.uint8)
    lo, hi = DIGIT_SIZE_RANGE
    scale = size / SCENE_SIZE
    boxes: List[Tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(DIGITS_PER_SCENE[0], DIGITS_PER_SCENE[1] + 1))):
        k = int(rng.integers(len(digits)))
        dh = int(round(rng.integers(lo, hi + 1) * scale))
        dw = int(round(dh * rng.uniform(0.75, 1.25)))
        dw = max(8, min(dw, size))
        alpha = np.clip(_resize(digits[k], (dh, dw)), 0.0, 1.0)
        # A few tries for a place that covers at most a fifth of a digit already placed (an
        # occluded digit cannot be told from another); no place found: one digit fewer.
        for _ in range(8):
            y = int(rng.integers(0, size - dh + 1))
            x = int(rng.integers(0, size - dw + 1))
            if all(_overlap((y, x, dh, dw), box) <= 0.2 for box in boxes):
                break
        else:
            continue
        boxes.append((y, x, dh, dw))
        patch = image[y : y + dh, x : x + dw]
        # A colour that stands out from the photo under the digit: a random hue, light on a dark
        # background and dark on a light one.
        colour = rng.uniform(0, 255, size=3)
        if patch.mean() > 110:
            colour = colour * rng.uniform(0.0, 0.35)
        else:
            colour = 255 - (255 - colour) * rng.uniform(0.0, 0.35)
        a = alpha[..., None]
        image[y : y + dh, x : x + dw] = patch * (1 - a) + colour * a
        sub = mask[y : y + dh, x : x + dw]
        sub[alpha >= BOUNDARY_LOW] = IGNORE_INDEX
        sub[alpha >= DIGIT_THRESHOLD] = labels[k] + 1
    noise = rng.normal(0, 4, size=image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8), mask


def scene_arrays(split: str, count: int, seed: int, size: int = SCENE_SIZE):
    """`count` scenes of `split` from `seed`: (N x size x size x 3 uint8, N x size x size uint8)."""
    digits, labels = digit_split(split)
    regions = photo_regions(split)
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    for i in range(count):
        images[i], masks[i] = compose_scene(rng, digits, labels, regions, size)
    return images, masks


def holdout_arrays(size: int = SCENE_SIZE):
    """The fixed held-out set (what the shipped model is measured on)."""
    return scene_arrays("holdout", SCENE_HOLDOUT_COUNT, SCENE_HOLDOUT_SEED, size)


def normalize(images: np.ndarray, mean=SCENE_MEAN, std=SCENE_STD) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32, (x / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


class DigitScenes(Dataset):
    """Training scenes generated on the fly: item i of epoch e is a function of (seed, e, i), so
    every epoch sees new scenes and a resumed or distributed run sees the same ones."""

    def __init__(self, length: int, seed: int = 0, size: int = SCENE_SIZE, split: str = "train"):
        self.length = int(length)
        self.seed = int(seed)
        self.size = int(size)
        self.epoch = 0
        self.split = split
        self.classes = list(SCENE_CLASSES)
        self._digits, self._labels = digit_split(split)
        self._regions = photo_regions(split)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        img, mask = compose_scene(rng, self._digits, self._labels, self._regions, self.size)
        return normalize(img[None])[0], torch.from_numpy(mask.astype(np.int64))


class SegArrayDataset(Dataset):
    """Fixed images and masks (the held-out set): normalized tensors and int64 masks."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, mean=SCENE_MEAN, std=SCENE_STD):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be N x H x W x 3 uint8, got {images.shape}")
        if masks.shape != images.shape[:3]:
            raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
        self.images = images
        self.masks = masks
        self.mean, self.std = mean, std

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = normalize(self.images[i : i + 1], self.mean, self.std)[0]
        return x, torch.from_numpy(self.masks[i].astype(np.int64))


class VOCSegmentation(Dataset):
    """PASCAL VOC 2012 segmentation in its usual layout, with SBD's extra masks ("train_aug").

        root/JPEGImages/<id>.jpg
        root/SegmentationClass/<id>.png            VOC's palette PNGs (index = class, 255 border)
        root/SegmentationClassAug/<id>.png         SBD converted to the same PNGs (optional)
        root/ImageSets/Segmentation/<split>.txt    train, val, trainval; train_aug.txt for SBD

    Training items: random scale in [0.5, 2.0], random crop `crop` x `crop` (image padded with
    the mean, mask with 255), horizontal flip. Eval items: the whole image padded to
    `crop` x `crop` (VOC images are at most 500 x 500; DeepLabv3 evaluates at 513 x 513).
    Only used when the data is on disk; nothing is downloaded.
    """

    def __init__(
        self,
        root: str,
        split: str = "train_aug",
        train: bool = True,
        crop: int = 513,
        mask_dir: Optional[str] = None,
        seed: int = 0,
    ):
        self.root = os.fspath(root)
        listing = os.path.join(self.root, "ImageSets", "Segmentation", f"{split}.txt")
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"VOC split list not found: {listing!r}")
        with open(listing) as f:
            self.ids = [line.strip().split()[0] for line in f if line.strip()]
        if mask_dir is None:
            aug = os.path.join(self.root, "SegmentationClassAug")
            mask_dir = (
                aug
                if split == "train_aug"
                or not os.path.isdir(os.path.join(self.root, "SegmentationClass"))
                else os.path.join(self.root, "SegmentationClass")
            )
        self.mask_dir = mask_dir
        self.train = train
        self.crop = int(crop)
        self.seed = int(seed)
        self.epoch = 0
        self.classes = list(VOC_CLASSES)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        Image = D._pil()
        name = self.ids[i]
        with Image.open(os.path.join(self.root, "JPEGImages", name + ".jpg")) as im:
            img = np.asarray(im.convert("RGB"))
        with Image.open(os.path.join(self.mask_dir, name + ".png")) as m:
            mask = np.asarray(m)  # palette PNG: the pixel values are the class indices
        if mask.ndim != 2:
            raise ValueError(f"{name}.png is not a class-index (palette) PNG")
        return img, mask

    def __getitem__(self, i: int):
        Image = D._pil()
        img, mask = self._load(i)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            s = rng.uniform(0.5, 2.0)
            h, w = max(1, int(img.shape[0] * s + 0.5)), max(1, int(img.shape[1] * s + 0.5))
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
            if rng.random() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
        x = normalize(np.ascontiguousarray(img)[None], D.IMAGENET_MEAN, D.IMAGENET_STD)[0]
        y = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        h, w = y.shape
        ph, pw = max(0, self.crop - h), max(0, self.crop - w)
        if ph or pw:  # normalized 0 = the mean colour
            x = torch.nn.functional.pad(x, (0, pw, 0, ph))
            y = torch.nn.functional.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)
        h, w = y.shape
        if self.train:
            top = int(rng.integers(0, h - self.crop + 1))
            left = int(rng.integers(0, w - self.crop + 1))
        else:
            top = left = 0
        x = x[:, top : top + self.crop, left : left + self.crop]
        y = y[top : top + self.crop, left : left + self.crop]
        return x.contiguous(), y.contiguous()
