"""Image preprocessing stored in a .qbw file, in numpy only.

The pipeline is the usual ImageNet evaluation one: RGB, resize the shorter side to
`resize_short` with an antialiased bilinear (triangle) filter, centre crop to `crop`, scale the
0..255 pixels by `pixel_scale`, then `(x - mean) / std` per channel. The resize follows PIL's
BILINEAR resampling (a triangle filter whose support widens with the downscale factor), so images
read here and images resized by PIL/torchvision agree to rounding.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import numpy as np

from ._core import DtypeError, Error, ShapeError

__all__ = ["load_image", "to_rgb_array", "resize_shorter", "center_crop", "preprocess"]


def load_image(path: "str | os.PathLike[str]") -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array (needs Pillow; .npy needs nothing)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        return to_rgb_array(np.load(path, allow_pickle=False))
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - exercised only without Pillow
        raise Error(
            f"reading {path!r} needs Pillow (pip install pillow); or pass an H x W x 3 uint8 array"
        ) from None
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    with Image.open(path) as img:
        return to_rgb_array(np.asarray(img.convert("RGB")))


def to_rgb_array(img: Any) -> np.ndarray:
    """A PIL image or an H x W (x 1|3|4) uint8 array as a contiguous H x W x 3 uint8 array."""
    if not isinstance(img, np.ndarray):
        if hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image, without importing PIL
            img = np.asarray(img.convert("RGB"))
        else:
            raise DtypeError(
                f"an image must be a path, a PIL image or a numpy uint8 array, "
                f"got {type(img).__name__}"
            )
    if img.dtype != np.uint8:
        raise DtypeError(
            f"an image array must have dtype uint8 (0..255), got {img.dtype}; "
            f"for float input already preprocessed use Model.run"
        )
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ShapeError(
            f"an image array must be H x W x 3 (or H x W, H x W x 1, H x W x 4), "
            f"got shape {img.shape}"
        )
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Weights (out_size x in_size) of PIL's bilinear filter along one axis."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size) + 0.5) * scale
    j = np.arange(in_size) + 0.5
    w = np.clip(1.0 - np.abs(j[None, :] - centers[:, None]) / support, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    return w


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (float32 output) so that the shorter side is `size`, keeping the aspect ratio."""
    h, w = img.shape[:2]
    if min(h, w) == size:
        return img.astype(np.float32)
    if h <= w:
        nh, nw = size, max(1, int(round(w * size / h)))
    else:
        nh, nw = max(1, int(round(h * size / w))), size
    x = img.astype(np.float64)
    x = np.einsum("oh,hwc->owc", _resample_matrix(h, nh), x)
    x = np.einsum("pw,owc->opc", _resample_matrix(w, nw), x)
    return x.astype(np.float32)


def center_crop(img: np.ndarray, crop: Tuple[int, int]) -> np.ndarray:
    ch, cw = crop
    h, w = img.shape[:2]
    if h < ch or w < cw:
        raise ShapeError(f"image of {h}x{w} after resizing is smaller than the {ch}x{cw} crop")
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img[top : top + ch, left : left + cw]


def preprocess(img: Any, spec: Dict[str, Any]) -> np.ndarray:
    """One image (path, PIL image or uint8 array) -> float32 1 x H x W x 3 (NHWC) engine input."""
    if isinstance(img, (str, os.PathLike)):
        arr = load_image(img)
    else:
        arr = to_rgb_array(img)
    crop_h, crop_w = (int(c) for c in spec["crop"])
    crop = (crop_h, crop_w)
    resize = int(spec["resize_short"])
    x = resize_shorter(arr, resize) if resize > 0 else arr.astype(np.float32)
    x = center_crop(x, crop)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (x * np.float32(spec["pixel_scale"]) - mean) / std
    return np.ascontiguousarray(x[None], dtype=np.float32)
