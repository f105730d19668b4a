"""qbinfer segment: class masks and overlays of a segmentation model; the segmentation metrics.

    qbinfer segment model.qbw street.jpg photos/ -o out/

For each image: OUT/NAME.mask.png, the class map at the image's own size as a palette PNG (pixel
value = class index, colours = the PASCAL VOC colour map; 255 = void: pixels outside the centre
crop the model saw), and OUT/NAME.overlay.png, the image with every non-background class
blended in at half opacity. numpy, Pillow and the extension only (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .text import printable

__all__ = [
    "VOID",
    "voc_palette",
    "colorize",
    "overlay",
    "save_mask_png",
    "save_overlay_png",
    "confusion_matrix",
    "mean_iou",
    "run_segment",
    "add_parser",
]

VOID = 255  # mask value of pixels without a class (VOC's "void"; the ignore index in training)
OVERLAY_ALPHA = 0.5


def voc_palette(n: int = 256) -> np.ndarray:
    """n x 3 uint8: PASCAL VOC's colour map. Colour of index i: the bits of i, taken three at a
    time from the lowest, set red, green and blue bits from the highest down (class 0 black, 1
    dark red, 2 dark green, ..., 255 the pale void colour)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        code = i
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        out[i] = (r, g, b)
    return out


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("writing masks and overlays needs Pillow: pip install pillow") from None
    return Image


def _as_mask(class_map: np.ndarray) -> np.ndarray:
    """An H x W class map (ints; -1 = no class, as `Model.predict` marks pixels outside the
    crop) -> H x W uint8 with VOID for those."""
    cmap = np.asarray(class_map)
    if cmap.ndim != 2:
        raise ValueError(f"a class map is H x W, got shape {cmap.shape}")
    if cmap.size and (cmap.max() >= VOID or cmap.min() < -1):
        raise ValueError(
            f"class indices must lie in 0..{VOID - 1} (or -1 for no class) to fit a palette PNG; "
            f"got {int(cmap.min())}..{int(cmap.max())}"
        )
    return np.where(cmap < 0, VOID, cmap).astype(np.uint8)


def colorize(class_map: np.ndarray) -> np.ndarray:
    """H x W class map -> H x W x 3 uint8 picture in the VOC colours."""
    return voc_palette()[_as_mask(class_map)]


def overlay(image: np.ndarray, class_map: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image (H x W x 3 uint8) with each pixel of a class other than background (0) and void
    blended with its class colour: (1 - alpha) * image + alpha * colour, rounded."""
    img = np.asarray(image)
    mask = _as_mask(class_map)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"the image must be H x W x 3 uint8, got {img.shape} {img.dtype}")
    if img.shape[:2] != mask.shape:
        raise ValueError(f"image {img.shape[:2]} and class map {mask.shape} differ in size")
    colours = voc_palette()[mask].astype(np.float32)
    blended = np.rint((1.0 - alpha) * img.astype(np.float32) + alpha * colours)
    out = img.copy()
    sel = (mask != 0) & (mask != VOID)
    out[sel] = blended[sel].astype(np.uint8)
    return out


def save_mask_png(class_map: np.ndarray, path: str) -> None:
    """A palette PNG whose pixel values are the class indices (VOID where no class)."""
    Image = _pil()
    img = Image.fromarray(_as_mask(class_map), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    img.save(path, format="PNG")


def save_overlay_png(image: np.ndarray, class_map: np.ndarray, path: str) -> None:
    _pil().fromarray(overlay(image, class_map)).save(path, format="PNG")


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = VOID
) -> np.ndarray:
    """K x K int64 counts (rows: true class, columns: predicted) over the pixels whose truth is
    not `ignore`."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    keep = truth != ignore
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    for what, v in (("truth", t), ("prediction", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{what} holds a class outside 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def mean_iou(conf: np.ndarray) -> Tuple[float, List[Optional[float]]]:
    """(mean IoU in percent, per-class IoU in percent) of a confusion matrix. IoU_c = TP / (TP +
    FP + FN); a class absent from both truth and prediction has no IoU (None) and is left out of
    the mean, as VOC's evaluation does."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    per_class: List[Optional[float]] = [
        float(100.0 * tp[k] / union[k]) if union[k] > 0 else None for k in range(len(tp))
    ]
    present = [v for v in per_class if v is not None]
    return (float(np.mean(present)) if present else float("nan")), per_class


# -- the command ----------------------------------------------------------------------------


def _read_rgb(path: str) -> np.ndarray:
    Image = _pil()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _out_names(images: Sequence[str], folder: str) -> List[Tuple[str, str]]:
    """(mask path, overlay path) per image: DIR/NAME.mask.png and DIR/NAME.overlay.png, with a
    counter when two images share a name."""
    used: set = set()
    out = []
    for image in images:
        stem = os.path.splitext(os.path.basename(image))[0] or "image"
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}.{k}"
        used.add(name)
        out.append(
            (os.path.join(folder, name + ".mask.png"), os.path.join(folder, name + ".overlay.png"))
        )
    return out


def run_segment(args: argparse.Namespace) -> int:
    from . import cli_predict

    images = cli_predict.find_images(args.paths)
    model = cli_predict.load_model(args.model, args.threads)
    os.makedirs(args.output, exist_ok=True)
    names = model.class_names
    failed = 0
    for image, (mask_path, overlay_path) in zip(images, _out_names(images, args.output)):
        try:
            rgb = _read_rgb(image)
            class_map = model.predict(rgb)
            if not isinstance(class_map, np.ndarray) or class_map.ndim != 2:
                raise ValueError(
                    f"{args.model} is a classifier (its output is N x classes), not a "
                    "segmentation model: use 'qbinfer predict'"
                )
            save_mask_png(class_map, mask_path)
            save_overlay_png(rgb, class_map, overlay_path)
        except (MemoryError, RecursionError):
            raise
        except ImportError:
            raise  # Pillow missing: the same for every image
        except Exception as exc:
            if isinstance(exc, ValueError) and "not a segmentation model" in str(exc):
                raise
            failed += 1
            message = cli_predict.one_line(exc)
            if args.json:
                print(json.dumps({"image": image, "error": message}))
            else:
                print(f"qbinfer segment: error: {printable(image)}: {message}", file=sys.stderr)
            continue
        counts = np.bincount(_as_mask(class_map).reshape(-1), minlength=256)
        shares: Dict[str, float] = {
            (names[i] if i < len(names) else ("void" if i == VOID else str(i))): round(
                float(counts[i]) / class_map.size, 5
            )
            for i in np.argsort(-counts, kind="stable")[:5]
            if counts[i] > 0
        }
        if args.json:
            print(
                json.dumps(
                    {
                        "image": image,
                        "mask": mask_path,
                        "overlay": overlay_path,
                        "height": int(class_map.shape[0]),
                        "width": int(class_map.shape[1]),
                        "classes": shares,
                    }
                )
            )
        else:
            share = ", ".join(f"{printable(k)} {v:.1%}" for k, v in shares.items())
            print(
                f"{printable(image)}: {class_map.shape[1]}x{class_map.shape[0]} -> "
                f"{printable(mask_path)}, {printable(overlay_path)} ({share})"
            )
    if failed:
        print(f"qbinfer segment: {failed} of {len(images)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from . import cli_predict

    p = sub.add_parser(
        "segment",
        parents=[common],
        help="write the class mask and an overlay of each image with a segmentation model",
        description=__doc__.split("\n\n")[0]
        + " For each image, OUT/NAME.mask.png (a palette PNG: pixel value = class index, VOC "
        "colours, 255 = void outside the model's centre crop) and OUT/NAME.overlay.png (the "
        "image with the classes other than background blended in). Needs Pillow.",
    )
    p.add_argument("model", help="the .qbw segmentation model")
    p.add_argument(
        "paths", nargs="+", metavar="IMAGE", help="image files, or directories searched for them"
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where the PNGs go")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    cli_predict.add_threads_option(p)
    p.set_defaults(func=run_segment)
