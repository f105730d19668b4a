"""Image preprocessing stored in a .qbw file: the recipe, and the engine, Pillow and numpy
implementations of it.

The recipe (the usual ImageNet evaluation one; fields from `Model.preprocessing`):

1. Pixels. 8-bit images are used as they are; 16-bit ones (uint16 arrays, Pillow's "I;16" and
   "I" modes) are reduced to 8 bits, ``round(v * 255 / 65535)``. A 3-channel model takes RGB:
   grayscale is repeated, an alpha channel dropped (as ``Image.convert("RGB")``), a palette
   expanded. A 1-channel model takes grayscale: RGB becomes luma by ITU-R BT.601,
   ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16`` (Pillow's ``convert("L")``, exactly).
2. Resize so that the shorter side is `resize_short` (0: no resize), keeping the aspect ratio:
   the longer side becomes ``round(long * resize_short / short)`` (Python's round). The filter is
   Pillow's BILINEAR: a triangle whose support widens with the downscale factor. Output pixel
   ``i`` of an axis of ``n -> m`` pixels has its centre at ``c = (i + 0.5) * n / m`` and takes
   input pixel ``j`` with weight ``max(0, 1 - |j + 0.5 - c| / max(n / m, 1))``, normalised to
   sum 1; the two axes are filtered one after the other.
3. Centre crop to (`crop_height`, `crop_width`), the model's input size: top
   ``round((resized_height - crop_height) / 2)``, left likewise.
4. ``(pixel * pixel_scale - mean[c]) / std[c]`` per channel, in float32 (a 1-channel model uses
   ``mean[0]`` and ``std[0]``).

Steps 2 and 3 are computed together, for the crop's pixels only, so the work is linear in the
pixels of the image and of the crop whatever `resize_short` a file holds. Three
implementations, chosen by `backend`:

* the engine (``"auto"``, the default; ``"engine"``): ``_core._resample_normalize``
  (csrc/engine/resample.cc, with an AVX2 + FMA version in resample_avx2.cc chosen at run time)
  runs the recipe in float32, never rounded to 8 bits, with step 4 in the same pass, one output
  row at a time. The filters (which input pixels each output pixel reads, with what weights)
  are computed here, by `_filter_band`, and cached per image size. It needs neither Pillow nor
  BLAS: several times faster than Pillow's resize, and what keeps ``predict`` within a few ms
  of ``run`` (docs/benchmarks.md, "predict against run"). Its ISAs differ by float rounding
  only (about 1e-5 of a level); within one process a picture gives the same bits whatever its
  memory layout (RGB, RGBX, a gray image or the same repeated into RGB).
* Pillow (``"pillow"``): ``Image.resize(..., BILINEAR, box=...)`` over the crop's region.
  Pillow uses fixed-point weights and rounds to 8 bits after each axis, so its pixels are within
  1 level of the recipe's exact values (tests/test_preprocess.py checks this on photos). It is
  also what weights_tools' training and evaluation transforms run (a full resize, then the crop:
  the same pixels but where an exact value is a tie, x.5 levels, which the two break apart).
* numpy (``"numpy"``): the recipe in float32 with BLAS, separable and banded (blocks of output
  pixels, each a small matrix product over the input pixels under their filters), so the cost
  is linear in pixels and the memory bounded.

Files are decoded by Pillow (needed only to read image files); an array goes to the engine
with no Pillow call, and a decoded PIL image is read in place, in Pillow's own memory (through
the Arrow C data interface, Pillow 11.2 and later; RGB is kept there as 4 bytes a pixel, which
the engine reads as they are), or where that is not possible, its crop window copied out.

Images are capped at `MAX_IMAGE_PIXELS` pixels (checked before a file is decoded).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from . import _core
from ._core import DtypeError, Error, ShapeError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "CropGeometry",
    "load_image",
    "to_rgb_array",
    "to_pixels",
    "resized_size",
    "crop_origin",
    "resize_crop",
    "resize_shorter",
    "center_crop",
    "normalize",
    "prepare",
    "preprocess",
]

# 2^28 pixels (16384 x 16384): far beyond a camera frame, and it keeps one uint8 RGB image under
# 1 GiB. Pillow refuses files above its own `Image.MAX_IMAGE_PIXELS` * 2 (about 179 M) first.
MAX_IMAGE_PIXELS = 1 << 28

_BACKENDS = ("auto", "engine", "pillow", "numpy")


def _pillow() -> Any:
    """The PIL.Image module, or None when Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - exercised only without Pillow
        return None
    return Image


def _check_pixel_count(height: int, width: int, what: str) -> None:
    if height < 1 or width < 1:
        raise ShapeError(f"{what} is empty ({height}x{width})")
    if height * width > MAX_IMAGE_PIXELS:
        raise ShapeError(
            f"{what} of {height}x{width} = {height * width:,} pixels exceeds the limit of "
            f"{MAX_IMAGE_PIXELS:,} (qbinfer.preprocess.MAX_IMAGE_PIXELS)"
        )


# -- step 1: pixels -----------------------------------------------------------------------------


def _sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    """0..65535 to 0..255, rounded to nearest: round(v * 255 / 65535)."""
    v = arr.astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an H x W x 3 uint8 array with Pillow's integer weights and rounding
    (the same bytes as ``Image.convert("L")``)."""
    r, g, b = (rgb[:, :, k].astype(np.uint32) for k in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)


def _array_pixels(img: np.ndarray, channels: int) -> np.ndarray:
    """A numpy image as H x W x 1 or H x W x 3 uint8: 3 only when `channels` is 3 and the image
    has colour (grayscale stays 1 channel here and is repeated after the resize: same pixels,
    a third of the work)."""
    if img.dtype == np.uint16:
        img = _sixteen_to_eight(img)
    elif img.dtype != np.uint8:
        raise DtypeError(
            f"an image array must have dtype uint8 (0..255) or uint16 (0..65535), got "
            f"{img.dtype}; for float input already preprocessed use Model.run"
        )
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ShapeError(
            f"an image array must be H x W x 3 (or H x W, H x W x 1, H x W x 4), "
            f"got shape {img.shape}"
        )
    _check_pixel_count(img.shape[0], img.shape[1], "an image")
    if img.shape[2] == 4:
        img = img[:, :, :3]  # alpha dropped, as Image.convert("RGB") does
    if channels == 1 and img.shape[2] == 3:
        img = _luma(img)[:, :, None]
    return img


def _pil_pixels(img: Any, channels: int) -> Any:
    """A PIL image as one whose mode is "L" or "RGB" ("RGB" only for a 3-channel model and a
    colour image), or as a uint8 array for 16-bit modes. Checks the size before decoding."""
    width, height = img.size
    _check_pixel_count(height, width, "an image")
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DtypeError(
                f"a 32-bit integer image must hold 0..65535 (16-bit pixels), got values "
                f"{arr.min()}..{arr.max()}"
            )
        return _array_pixels(arr.astype(np.uint16), channels)
    if mode == "F":
        raise DtypeError(
            "a floating-point (mode 'F') image has no pixel range; for float input already "
            "preprocessed use Model.run"
        )
    if mode == "L":
        return img
    if mode in ("1", "LA", "La") or channels == 1:
        # Through RGB so that every colour mode reaches L by the same luma rule.
        return (
            img.convert("L")
            if mode in ("1", "LA", "La", "RGB")
            else img.convert("RGB").convert("L")
        )
    return img if mode == "RGB" else img.convert("RGB")


def to_pixels(img: Any, channels: int = 3) -> np.ndarray:
    """A PIL image or a uint8/uint16 array as an H x W x `channels` uint8 array (step 1)."""
    if channels not in (1, 3):
        raise ShapeError(f"images have 1 or 3 channels, not {channels}")
    if isinstance(img, np.ndarray):
        px = _array_pixels(img, channels)
    elif hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image, without importing PIL
        found = _pil_pixels(img, channels)
        px = found if isinstance(found, np.ndarray) else np.asarray(found)
        if px.ndim == 2:
            px = px[:, :, None]
    else:
        raise DtypeError(
            f"an image must be a path, a PIL image or a numpy uint8 array, got {type(img).__name__}"
        )
    if px.shape[2] != channels:
        px = np.repeat(px, channels, axis=2)
    return np.ascontiguousarray(px)


def to_rgb_array(img: Any) -> np.ndarray:
    """A PIL image or an H x W (x 1|3|4) uint8 array as a contiguous H x W x 3 uint8 array."""
    return to_pixels(img, 3)


def load_image(path: "str | os.PathLike[str]", channels: int = 3) -> np.ndarray:
    """Read an image file as an H x W x `channels` uint8 array (needs Pillow; .npy needs nothing)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        return to_pixels(np.load(path, allow_pickle=False), channels)
    Image = _pillow()
    if Image is None:  # pragma: no cover - exercised only without Pillow
        raise Error(
            f"reading {path!r} needs Pillow (pip install pillow); or pass an H x W x 3 uint8 array"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    with Image.open(path) as img:
        return to_pixels(img, channels)


# -- steps 2 and 3: geometry ------------------------------------------------------------------


def resized_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(height, width) after resizing the shorter side to `size` (0: unchanged)."""
    if size == 0 or min(height, width) == size:
        return height, width
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def crop_origin(height: int, width: int, crop: Tuple[int, int]) -> Tuple[int, int]:
    """(top, left) of the centre crop of a `height` x `width` image."""
    ch, cw = crop
    if height < ch or width < cw:
        raise ShapeError(
            f"image of {height}x{width} after resizing is smaller than the {ch}x{cw} crop"
        )
    return int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))


@dataclass(frozen=True)
class CropGeometry:
    """Where the crop a model saw lies in the original image: the image's (height, width), its
    size after the resize, and the crop's origin and size in the resized image."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    crop_height: int
    crop_width: int

    @classmethod
    def of(cls, height: int, width: int, spec: Dict[str, Any]) -> "CropGeometry":
        ch, cw = (int(c) for c in spec["crop"])
        nh, nw = resized_size(height, width, int(spec["resize_short"]))
        top, left = crop_origin(nh, nw, (ch, cw))
        return cls(height, width, nh, nw, top, left, ch, cw)

    def to_frame(self, grid: np.ndarray, fill: int = -1) -> np.ndarray:
        """Place a map over the crop (`grid`: G_h x G_w, any resolution; cell (r, c) covers the
        crop's rows [r * crop_height / G_h, (r + 1) * crop_height / G_h) and the columns
        likewise) into the original frame: each image pixel takes the cell its centre falls in
        once mapped through the resize (nearest cell, no interpolation); pixels whose centre lies
        outside the crop get `fill`. Returns height x width of grid's dtype."""
        rows = _cells_of_pixels(
            self.height, self.resized_height, self.top, self.crop_height, grid.shape[0]
        )
        cols = _cells_of_pixels(
            self.width, self.resized_width, self.left, self.crop_width, grid.shape[1]
        )
        out = np.full((self.height, self.width) + grid.shape[2:], fill, dtype=grid.dtype)
        in_rows, in_cols = rows >= 0, cols >= 0
        out[np.ix_(in_rows, in_cols)] = grid[np.ix_(rows[in_rows], cols[in_cols])]
        return out


def _cells_of_pixels(
    n_in: int, n_resized: int, first: int, n_crop: int, n_cells: int
) -> np.ndarray:
    """For each of `n_in` image pixels along an axis, the grid cell (0..n_cells-1) its centre
    falls in, or -1 outside the crop. The centre of pixel y lies at (y + 0.5) * n_resized / n_in
    in the resized image; all in integers, so a centre on a cell boundary goes to the cell that
    starts there whatever the sizes."""
    two_in = 2 * n_in
    # numerator of (position in the crop) * n_cells / n_crop, over the denominator 2 n_in n_crop
    bound = (two_in + 1) * n_resized * n_cells + two_in * first * n_cells
    dtype: Any = np.int64 if bound < (1 << 62) else object
    y = np.arange(n_in, dtype=np.int64).astype(dtype)
    num = ((2 * y + 1) * n_resized - two_in * first) * n_cells
    cell = num // (two_in * n_crop)
    inside = (num >= 0) & (cell < n_cells)
    return np.where(inside, cell, -1).astype(np.int64)


# -- the resize: numpy ------------------------------------------------------------------------


def _filter_band(n_in: int, n_out: int, first: int, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """The triangle filter of output pixels first .. first+count-1 of an n_in -> n_out resize:
    (lo, weights) where output i reads input pixels lo[i] .. lo[i] + taps - 1 with weights[i]
    (count x taps float32, zero past the filter's end). The band's limits are Pillow's."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(first, first + count, dtype=np.float64) + 0.5) * scale
    lo = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    taps = int((hi - lo).max())
    j = lo[:, None] + np.arange(taps)[None, :]
    w = np.clip(1.0 - np.abs(j + 0.5 - centers[:, None]) / support, 0.0, None)
    w[j >= hi[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w /= np.where(total > 0, total, 1.0)
    return lo, w.astype(np.float32)


def _input_range(n_in: int, n_out: int, first: int, count: int) -> Tuple[int, int]:
    """The input pixels [start, stop) that output pixels first .. first+count-1 read."""
    if n_in == n_out:
        return first, first + count
    lo, w = _filter_band(n_in, n_out, first, count)
    return int(lo[0]), min(int(lo[-1]) + w.shape[1], n_in)


# Each matrix product of the banded resize stays below m * n * k = 2^18, where OpenBLAS (numpy's
# usual BLAS) runs a product on the calling thread: bigger ones go to its thread pool, which for
# products this small costs more than it saves (10x slower on a loaded machine).
_PRODUCT_LIMIT = 1 << 18


def _band_matrix(lo: np.ndarray, w: np.ndarray, b0: int, b1: int, r0: int, r1: int) -> np.ndarray:
    """Rows b0..b1-1 of the resize as a dense (b1 - b0) x (r1 - r0) matrix over input r0..r1-1."""
    taps = w.shape[1]
    width = int(lo[b1 - 1]) - r0 + taps
    m = np.zeros((b1 - b0, width), np.float32)
    m[np.arange(b1 - b0)[:, None], (lo[b0:b1] - r0)[:, None] + np.arange(taps)] = w[b0:b1]
    return m[:, : r1 - r0]  # the columns cut hold zero weights (past the image's end)


def _blocks(n_in: int, n_out: int, first: int, count: int, offset: int, avail: int) -> Any:
    """(b0, b1, r0, r1, matrix) per block of output pixels: about 32 input pixels of fresh work
    per block (more output pixels per block when each reads few input pixels); input indices
    relative to `offset`, the first of the `avail` input pixels at hand."""
    lo, w = _filter_band(n_in, n_out, first, count)
    lo = lo - offset
    taps = w.shape[1]
    block = int(min(count, max(1, 32 // max(n_in / n_out, 1.0))))
    for b0 in range(0, count, block):
        b1 = min(b0 + block, count)
        r0, r1 = int(lo[b0]), min(int(lo[b1 - 1]) + taps, avail)
        yield b0, b1, r0, r1, _band_matrix(lo, w, b0, b1, r0, r1)


def _resize_rows(
    x: np.ndarray, n_in: int, offset: int, n_out: int, first: int, count: int
) -> np.ndarray:
    """Filter axis 0 of `x` (input rows offset .. offset + len(x) - 1 of n_in; H x W x C, any
    real dtype) to output rows first .. first+count-1 of n_in -> n_out: count x W x C float32.
    Each block of output rows is a product (block x its input rows) @ (those rows x a slice of
    W * C), so the work is linear in the input and BLAS does the sums."""
    h, w, c = x.shape
    if n_in == n_out:  # an axis that is not resized: the recipe's filter is the identity there
        return x[first - offset : first - offset + count].astype(np.float32)
    out = np.empty((count, w * c), np.float32)
    for b0, b1, r0, r1, m in _blocks(n_in, n_out, first, count, offset, h):
        rows = x[r0:r1].reshape(r1 - r0, w * c)  # a copy only for a window of a wider image
        step = max(1, _PRODUCT_LIMIT // m.size)
        for c0 in range(0, w * c, step):
            c1 = min(c0 + step, w * c)
            np.matmul(m, rows[:, c0:c1].astype(np.float32), out=out[b0:b1, c0:c1])
    return out.reshape(count, w, c)


def _resize_cols(
    x: np.ndarray, n_in: int, offset: int, n_out: int, first: int, count: int
) -> np.ndarray:
    """Filter the last axis of planar `x` (C x H x W float32, input columns offset ..) to output
    columns first .. first+count-1 of n_in -> n_out: C x H x count float32, each block of output
    columns a product (those input columns) @ (block matrix)^T per channel."""
    c, h, w = x.shape
    if n_in == n_out:
        return x[:, :, first - offset : first - offset + count]
    out = np.empty((c, h, count), np.float32)
    for b0, b1, r0, r1, m in _blocks(n_in, n_out, first, count, offset, w):
        step = max(1, _PRODUCT_LIMIT // m.size)
        for y0 in range(0, h, step):
            y1 = min(y0 + step, h)
            np.matmul(x[:, y0:y1, r0:r1], m.T, out=out[:, y0:y1, b0:b1])
    return out


def _resize_crop_numpy(px: np.ndarray, geo: CropGeometry) -> np.ndarray:
    """The recipe's resize and crop of an H x W x C uint8 array, in float32: crop_h x crop_w x C.
    Reads only the window of the image under the crop's filters: rows first, on the 8-bit
    pixels, then columns on channel planes (so every product reads memory in order)."""
    h, w, c = px.shape
    nh, nw = geo.resized_height, geo.resized_width
    ch, cw = geo.crop_height, geo.crop_width
    r0, r1 = _input_range(h, nh, geo.top, ch)
    c0, c1 = _input_range(w, nw, geo.left, cw)
    rows = _resize_rows(px[r0:r1, c0:c1], h, r0, nh, geo.top, ch)  # ch x (c1 - c0) x C
    planes = np.ascontiguousarray(rows.transpose(2, 0, 1))  # C x ch x (c1 - c0)
    out = _resize_cols(planes, w, c0, nw, geo.left, cw)  # C x ch x cw
    return np.ascontiguousarray(out.transpose(1, 2, 0))


# -- the resize: the engine ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _axis_filter(n_in: int, n_out: int, first: int, count: int) -> Tuple[int, int, Any, Any]:
    """The filter of output pixels first .. first+count-1 of an n_in -> n_out axis for the
    engine: (start, stop, lo, weights), the input pixels [start, stop) they read and, per
    output pixel, its first input pixel relative to `start` and its weights. Cached (read-only
    arrays): a stream of frames of one size reuses them, and computing them costs a tenth of
    the resize itself."""
    if n_in == n_out:  # not resized: the filter is the identity
        lo = np.arange(count, dtype=np.int64)
        w = np.ones((count, 1), np.float32)
        start, stop = first, first + count
    else:
        lo, w = _filter_band(n_in, n_out, first, count)
        start, stop = int(lo[0]), min(int(lo[-1]) + w.shape[1], n_in)
        lo = lo - start
    lo.flags.writeable = False
    w.flags.writeable = False
    return start, stop, lo, w


def _pillow_memory(img: Any) -> "np.ndarray | None":
    """A read-only view of the memory of a PIL image of mode "L" (H x W x 1) or "RGB" (H x W x 4:
    Pillow keeps RGB as RGBX), exported through the Arrow C data interface (Pillow 11.2 and
    later; decodes a file not yet decoded). None where Pillow cannot export it: an older Pillow,
    or an image whose rows do not lie in one block of memory (Pillow allocates in blocks of
    16 MiB by default, so a 2000 x 2000 RGB image and larger may not). Reading Pillow's memory
    in place saves copying the window out, a tenth of a millisecond at 640 x 480."""
    export = getattr(img, "__arrow_c_array__", None)
    if export is None:  # pragma: no cover - Pillow before 11.2
        return None
    try:
        schema, array = export()
    except ValueError:  # "Image rows are not contiguous in memory"
        return None
    width, height = img.size
    view: "np.ndarray | None" = _core._arrow_pixels(schema, array, height, width)
    return view


def _crop_window(src: Any, geo: CropGeometry) -> np.ndarray:
    """The part of an image (an H x W x C uint8 array, or a PIL image of mode "L" or "RGB")
    that the crop's filters read, as a uint8 array the engine reads in place: channels packed,
    pixels packed or, for RGB, 4 bytes apart. A view of an array or of a PIL image's memory
    (`_pillow_memory`); where that memory cannot be read in place, only the window is copied
    out of Pillow."""
    r0, r1 = _axis_filter(geo.height, geo.resized_height, geo.top, geo.crop_height)[:2]
    c0, c1 = _axis_filter(geo.width, geo.resized_width, geo.left, geo.crop_width)[:2]
    if not isinstance(src, np.ndarray):
        memory = _pillow_memory(src)
        if memory is None:
            copied = np.asarray(src.crop((c0, r0, c1, r1)))
            return copied[:, :, None] if copied.ndim == 2 else copied
        src = memory[:, :, :3] if memory.shape[2] == 4 else memory  # RGBX: X is padding
    window = src[r0:r1, c0:c1]
    h, w, c = window.shape
    # Strides of axes of length 1 are never used (and numpy leaves them arbitrary).
    pixel = window.strides[1]
    readable = (
        (c == 1 or window.strides[2] == 1)
        and (w == 1 or pixel == c or (c == 3 and pixel == 4))
        and (h == 1 or window.strides[0] >= w * (c if w == 1 else pixel))
    )
    return window if readable else np.ascontiguousarray(window)  # e.g. a flipped image


@functools.lru_cache(maxsize=16)
def _normalization(
    scale: float, mean: Tuple[float, ...], std: Tuple[float, ...], channels: int
) -> Tuple[float, np.ndarray, np.ndarray]:
    """Step 4's constants for the engine, as float32: (scale, mean, std), cached per file."""
    mean32 = np.asarray(mean, dtype=np.float32)[:channels]
    std32 = np.asarray(std, dtype=np.float32)[:channels]
    mean32.flags.writeable = False
    std32.flags.writeable = False
    return float(np.float32(scale)), mean32, std32


def _resize_crop_engine(
    window: np.ndarray, geo: CropGeometry, spec: "Dict[str, Any] | None", channels: int
) -> np.ndarray:
    """The recipe's resize and crop in the engine (`_core._resample_normalize`,
    csrc/engine/resample.cc), in float32 and never rounded, of the `_crop_window` of an image:
    crop_h x crop_w x C pixels, or, given `spec`, normalised to crop_h x crop_w x `channels`
    (one channel repeated) in the same pass."""
    row_lo, row_w = _axis_filter(geo.height, geo.resized_height, geo.top, geo.crop_height)[2:]
    col_lo, col_w = _axis_filter(geo.width, geo.resized_width, geo.left, geo.crop_width)[2:]
    c = window.shape[2]
    if spec is None:  # the pixels themselves: (v * 1 - 0) / 1 is v exactly
        out_channels = c
        scale, mean, std = _normalization(1.0, (0.0,) * c, (1.0,) * c, c)
    else:
        out_channels = channels
        scale, mean, std = _normalization(
            float(spec["pixel_scale"]), tuple(spec["mean"]), tuple(spec["std"]), channels
        )
    out: np.ndarray = _core._resample_normalize(
        window, row_lo, row_w, col_lo, col_w, out_channels, scale, mean, std
    )
    return out


# -- the resize: Pillow -----------------------------------------------------------------------


def _resize_crop_pillow(Image: Any, img: Any, geo: CropGeometry) -> np.ndarray:
    """Pillow's BILINEAR resize of the crop's region only: crop_h x crop_w x C uint8."""
    ch, cw = geo.crop_height, geo.crop_width
    if (geo.resized_height, geo.resized_width) == (geo.height, geo.width):
        out = img.crop((geo.left, geo.top, geo.left + cw, geo.top + ch))
    else:
        sx, sy = geo.width / geo.resized_width, geo.height / geo.resized_height
        # The crop's region in input coordinates: Pillow then places its filters at the same
        # centres as a full resize would (clamped: the far edge may round past the image).
        box = (
            geo.left * sx,
            geo.top * sy,
            min((geo.left + cw) * sx, float(geo.width)),
            min((geo.top + ch) * sy, float(geo.height)),
        )
        bilinear = getattr(Image, "Resampling", Image).BILINEAR
        out = img.resize((cw, ch), bilinear, box=box)
    arr = np.asarray(out)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _source(img: Any, channels: int, backend: str) -> Tuple[Any, str]:
    """Step 1 for the resize: (the image as a uint8 array or a PIL image of mode "L" or "RGB",
    the implementation that resizes it)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if channels not in (1, 3):
        raise ShapeError(
            f"predict handles models of 1 or 3 input channels, not {channels}; "
            f"preprocess the input yourself and call Model.run"
        )
    if backend == "pillow" and _pillow() is None:
        raise Error("backend='pillow' needs Pillow (pip install pillow)")
    if not isinstance(img, np.ndarray) and hasattr(img, "convert") and hasattr(img, "size"):
        src: Any = _pil_pixels(img, channels)
    elif isinstance(img, np.ndarray):
        src = _array_pixels(img, channels)
    else:
        raise DtypeError(
            f"an image must be a path, a PIL image or a numpy uint8 array, got {type(img).__name__}"
        )
    return src, ("engine" if backend == "auto" else backend)


def _geometry(src: Any, spec: Dict[str, Any]) -> CropGeometry:
    if isinstance(src, np.ndarray):
        h, w = src.shape[:2]
    else:
        w, h = src.size
    return CropGeometry.of(h, w, spec)


def resize_crop(
    img: Any, spec: Dict[str, Any], channels: int = 3, backend: str = "auto"
) -> Tuple[np.ndarray, CropGeometry]:
    """Steps 1-3 of the recipe: (crop_h x crop_w x C0 pixels, the crop's geometry), where C0 is
    `channels` or 1 for a grayscale image (repeated by `normalize`). The pixels are float32 from
    the engine (the default, "auto") and numpy, uint8 from Pillow. `img`: a PIL image or a
    uint8/uint16 array (not a path)."""
    src, method = _source(img, channels, backend)
    geo = _geometry(src, spec)
    if method == "engine":
        return _resize_crop_engine(_crop_window(src, geo), geo, None, channels), geo
    if method == "numpy":
        px = src if isinstance(src, np.ndarray) else np.asarray(src)
        px = px[:, :, None] if px.ndim == 2 else px
        return _resize_crop_numpy(px, geo), geo
    Image = _pillow()
    if not isinstance(src, np.ndarray):
        return _resize_crop_pillow(Image, src, geo), geo
    # The whole array, not the window under the crop: Pillow's rounding ties would then break
    # differently from those of the same picture given as a PIL image or a file.
    pil = Image.fromarray(src[:, :, 0] if src.shape[2] == 1 else np.ascontiguousarray(src))
    return _resize_crop_pillow(Image, pil, geo), geo


# -- step 4 ------------------------------------------------------------------------------------


def normalize(pixels: np.ndarray, spec: Dict[str, Any], channels: int = 3) -> np.ndarray:
    """(pixel * pixel_scale - mean) / std per channel, in float32: H x W x C0 (C0 = 1 or
    `channels`; one channel is repeated) to H x W x `channels`."""
    mean = np.asarray(spec["mean"], dtype=np.float32)[:channels]
    std = np.asarray(spec["std"], dtype=np.float32)[:channels]
    h, w, c = pixels.shape[0], pixels.shape[1], mean.shape[0]
    if pixels.shape[2] != c:  # one channel repeated into `channels`
        pixels = np.repeat(pixels, c, axis=2)
    # Rows of W * C values against rows of the per-channel constants repeated W times: each
    # step is one contiguous pass (a (C,) vector broadcast over H x W x C makes numpy loop C
    # elements at a time, 3x slower), and the steps are the recipe's, in its order, so the
    # values are its float32 ones exactly. astype makes the new array the steps write into.
    x = pixels.reshape(h, w * c).astype(np.float32)
    x *= np.float32(spec["pixel_scale"])
    x -= np.tile(mean, w)
    x /= np.tile(std, w)
    return x.reshape(h, w, c)


# -- the whole recipe ------------------------------------------------------------------------


def prepare(
    img: Any, spec: Dict[str, Any], channels: int = 3, backend: str = "auto"
) -> Tuple[np.ndarray, CropGeometry]:
    """One image (path, PIL image or uint8/uint16 array) -> (float32 1 x H x W x C NHWC engine
    input, the crop's geometry in the image)."""
    if isinstance(img, (str, os.PathLike)):
        path = os.fspath(img)
        if path.endswith(".npy"):
            return prepare(np.load(path, allow_pickle=False), spec, channels, backend)
        Image = _pillow()
        if Image is None:  # pragma: no cover - exercised only without Pillow
            raise Error(
                f"reading {path!r} needs Pillow (pip install pillow); or pass an H x W x 3 "
                f"uint8 array"
            )
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path!r}")
        with Image.open(path) as opened:  # decoded only by the resize, after the size check
            return prepare(opened, spec, channels, backend)
    src, method = _source(img, channels, backend)
    geo = _geometry(src, spec)
    if method == "engine":  # resize, crop and normalisation in one pass
        return _resize_crop_engine(_crop_window(src, geo), geo, spec, channels)[None], geo
    pixels, geo = resize_crop(src, spec, channels, backend)
    return normalize(pixels, spec, channels)[None], geo


def preprocess(
    img: Any, spec: Dict[str, Any], channels: int = 3, backend: str = "auto"
) -> np.ndarray:
    """One image (path, PIL image or uint8/uint16 array) -> float32 1 x H x W x C (NHWC) engine
    input."""
    return prepare(img, spec, channels, backend)[0]


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """The recipe's resize of a whole uint8 H x W x C array in numpy (float32), shorter side to
    `size`."""
    px = img[:, :, None] if img.ndim == 2 else img
    h, w = px.shape[:2]
    nh, nw = resized_size(h, w, size)
    geo = CropGeometry(h, w, nh, nw, 0, 0, nh, nw)
    out = _resize_crop_numpy(px, geo)
    return out[:, :, 0] if img.ndim == 2 else out


def center_crop(img: np.ndarray, crop: Tuple[int, int]) -> np.ndarray:
    top, left = crop_origin(img.shape[0], img.shape[1], crop)
    return img[top : top + crop[0], left : left + crop[1]]
