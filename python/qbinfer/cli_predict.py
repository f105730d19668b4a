"""`qbinfer predict MODEL PATH...`: classify image files, or write class masks for dense models.

Paths are files (any name) and directories (searched recursively for image files). Images go
to the model in chunks from a pool of worker threads: while one chunk runs, the next is read
and preprocessed, and a model that serves concurrent calls runs several chunks at once.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import sys
import time
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .text import printable

__all__ = ["IMAGE_EXTENSIONS", "ProgressBar", "add_parser", "find_images"]

# What a directory is searched for (a file named on the command line is read whatever its name).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy"}
)
# More images than this get a progress bar (on a terminal, or with --progress).
PROGRESS_MIN_IMAGES = 3


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def find_images(paths: Sequence[str]) -> List[str]:
    """The files to predict: each file path as given, each directory's image files (by
    extension, recursively, sorted). Raises FileNotFoundError for a path that does not exist
    and ValueError when a directory holds no image."""
    found: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            inside = []
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        inside.append(os.path.join(folder, name))
            if not inside:
                raise ValueError(
                    f"{printable(path)}: no image files in this directory (looked for "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            found += inside
        elif os.path.exists(path):
            found.append(path)
        else:
            raise FileNotFoundError(2, "no such file or directory", path)
    return found


class ProgressBar:
    """A one-line progress bar on a text stream (stderr): '[#####-----] 12/40 3.1 images/s
    ETA 9s', redrawn in place at most every 0.1 s; `close()` ends the line."""

    def __init__(self, total: int, stream: Any = None, width: int = 30, unit: str = "images"):
        self.total, self.width, self.unit = total, width, unit
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last_draw >= 0.1 or self.done >= self.total:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"\r[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} "
            f"{rate:.1f} {self.unit}/s ETA {eta:.0f}s "
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _threads_arg(text: str) -> Any:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads as every command that runs a model takes it."""
    parser.add_argument(
        "--threads",
        type=_threads_arg,
        default=None,
        metavar="N",
        help="engine threads per run, a positive integer or 'auto' (default: the library's "
        "default)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def load_model(path: str, threads: Any) -> Any:
    """`qbinfer.load` with the command's --threads (not given: the library's default)."""
    from .model import load

    return load(path) if threads is None else load(path, threads=threads)


# -- masks of dense models ------------------------------------------------------------------


def _palette() -> List[int]:
    """256 distinct colours (class 0 black), so that a mask is both the class indices (the
    PNG's palette indices) and a picture."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(256, 3))
    colours[0] = 0
    return [int(v) for v in colours.reshape(-1)]


def save_mask(mask: np.ndarray, path: str) -> None:
    """Write a class map (H x W ints) as a PNG: palette indices = class indices up to 256
    classes, else 16-bit grey levels = class indices."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "writing the class mask of a dense model needs Pillow: pip install pillow"
        ) from None
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 65535:
        raise ValueError(f"class indices out of 0..65535 in the class map of {path}")
    if mask.max(initial=0) < 256:
        img = Image.fromarray(mask.astype(np.uint8), mode="P")
        img.putpalette(_palette())
    else:
        img = Image.fromarray(mask.astype(np.uint16))
    img.save(path, format="PNG")


class _MaskNamer:
    """Where each image's mask goes: DIR/<name without extension>.mask.png, made unique."""

    def __init__(self, folder: str):
        self.folder = folder
        self.used: set = set()

    def __call__(self, image: str) -> str:
        stem = os.path.splitext(os.path.basename(image))[0] or "image"
        candidate, k = f"{stem}.mask.png", 1
        while candidate in self.used:
            k += 1
            candidate = f"{stem}.{k}.mask.png"
        self.used.add(candidate)
        return os.path.join(self.folder, candidate)


# -- running --------------------------------------------------------------------------------


def _predict_chunk(model: Any, chunk: List[str], top_k: int) -> List[Tuple[Any, Optional[str]]]:
    """(result, None) or (None, error message) per image of `chunk`. The chunk goes to
    `predict` as one list (a model may batch it); when that fails, image by image, so one bad
    file does not take the others with it."""
    try:
        results = model.predict(list(chunk), top_k=top_k)
        if isinstance(results, list) and len(results) == len(chunk):
            return [(r, None) for r in results]
    except Exception:  # one of them is bad: find which below
        pass
    out: List[Tuple[Any, Optional[str]]] = []
    for image in chunk:
        try:
            out.append((model.predict(image, top_k=top_k), None))
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:
            out.append((None, one_line(exc)))
    return out


def one_line(exc: BaseException) -> str:
    """An exception as one printable line: its message with newlines folded."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return printable(text)


def _results(
    model: Any, images: List[str], top_k: int, jobs: int, chunk: int
) -> Iterator[Tuple[str, Any, Optional[str]]]:
    """(image, result, error) in the order of `images`, computed `jobs` chunks at a time."""
    chunks = [images[i : i + chunk] for i in range(0, len(images), chunk)]
    if jobs <= 1 or len(chunks) == 1:
        for c in chunks:
            for image, (result, error) in zip(c, _predict_chunk(model, c, top_k)):
                yield image, result, error
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: Deque[Tuple[List[str], concurrent.futures.Future]] = collections.deque()
        it = iter(chunks)
        # At most 2 chunks per worker in flight: enough to keep every worker busy, and the
        # memory of the results held stays bounded for a directory of any size.
        for c in it:
            pending.append((c, pool.submit(_predict_chunk, model, c, top_k)))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            c, future = pending.popleft()
            for image, (result, error) in zip(c, future.result()):
                yield image, result, error
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_predict_chunk, model, nxt, top_k)))


def _format_classes(result: Sequence[Tuple[str, float]]) -> str:
    return ", ".join(f"{printable(name)} {p:.3f}" for name, p in result)


def run_predict(args: argparse.Namespace) -> int:
    images = find_images(args.paths)
    model = load_model(args.model, args.threads)
    jobs = args.jobs or min(usable_cpus(), max(1, len(images)))
    show_progress = not args.quiet and (
        args.progress or (sys.stderr.isatty() and len(images) > PROGRESS_MIN_IMAGES)
    )
    bar = ProgressBar(len(images)) if show_progress else None
    namer = _MaskNamer(args.mask_dir)
    failed = 0
    try:
        for image, result, error in _results(model, images, args.top_k, jobs, args.chunk):
            record: Dict[str, Any] = {"image": image}
            if error is None and isinstance(result, np.ndarray) and result.ndim == 2:
                try:  # a dense model: a class per pixel
                    os.makedirs(args.mask_dir, exist_ok=True)
                    mask_path = namer(image)
                    save_mask(result, mask_path)
                    record.update(mask=mask_path, height=result.shape[0], width=result.shape[1])
                    counts = np.bincount(result.reshape(-1).astype(np.int64))
                    names = model.class_names
                    record["classes"] = {
                        (names[i] if i < len(names) else str(i)): round(
                            float(counts[i]) / result.size, 5
                        )
                        for i in np.argsort(-counts, kind="stable")[: args.top_k]
                        if counts[i] > 0
                    }
                except ImportError:
                    raise  # Pillow missing: the same for every image
                except Exception as exc:
                    error = one_line(exc)
            elif error is None:
                record["predictions"] = [{"class": n, "probability": p} for n, p in result]
            if error is not None:
                failed += 1
                record = {"image": image, "error": error}
            if bar is not None and sys.stderr.isatty():
                sys.stderr.write("\r\x1b[K")  # the bar shares the terminal: clear its line
            if args.json:
                print(json.dumps(record), flush=bar is not None)
            elif error is not None:
                print(f"qbinfer predict: error: {printable(image)}: {error}", file=sys.stderr)
            elif "mask" in record:
                share = ", ".join(f"{printable(k)} {v:.1%}" for k, v in record["classes"].items())
                print(
                    f"{printable(image)}: class mask {record['width']}x{record['height']} -> "
                    f"{printable(record['mask'])} ({share})",
                    flush=bar is not None,
                )
            else:
                print(f"{printable(image)}: {_format_classes(result)}", flush=bar is not None)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    if failed:
        print(f"qbinfer predict: {failed} of {len(images)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="classify image files (or write class masks) with a .qbw model",
        description="Classify image files with a .qbw model: the top classes and their "
        "probabilities, one line per image. A model with a dense output (a class per pixel) "
        "writes a PNG class mask per image instead (palette index = class index). Image files "
        "other than .npy need Pillow.",
    )
    p.add_argument("model", help="the .qbw model file")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files, or directories searched recursively for image files "
        f"({', '.join(sorted(IMAGE_EXTENSIONS))})",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=5,
        metavar="K",
        help="how many classes to print per image, most probable first (default 5)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object per image instead of text: {"image", "predictions": '
        '[{"class", "probability"}]} ({"image", "mask", "classes"} for a dense model; '
        '{"image", "error"} for an image that failed)',
    )
    add_threads_option(p)
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="J",
        help="images read, preprocessed and run at the same time by J worker threads "
        "(default: the CPUs this process may use)",
    )
    p.add_argument(
        "--chunk",
        type=positive_int,
        default=8,
        metavar="B",
        help="images per predict call of a worker (default 8)",
    )
    p.add_argument(
        "--mask-dir",
        default=".",
        metavar="DIR",
        help="dense models: where the masks go, as NAME.mask.png (default: the current directory)",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="always show the progress bar on stderr (default: on a terminal, for more than "
        f"{PROGRESS_MIN_IMAGES} images)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)
