"""`qbinfer.load(path)` and the `Model` it returns: a thin, typed layer over `_core.Model`."""

from __future__ import annotations

import json
import os
import warnings
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from . import _core
from .preprocess import prepare
from .text import printable

if TYPE_CHECKING:
    from .profile import Profile

__all__ = ["Model", "load"]

ImageLike = Any  # a path, a PIL image, or an H x W x 3 uint8 array
# What predict gives for one image: top-k (class name, probability) pairs for a classifier, an
# H x W int32 class map for a dense output.
Prediction = Union[List[Tuple[str, float]], np.ndarray]

# Images per engine call when predict is given a list: one batch keeps the engine's threads busy
# while the memory of the preprocessed inputs stays bounded.
PREDICT_BATCH = 32


# What `load` reads: a path, a file's bytes in any buffer, or a binary file object.
ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]
Threads = Union[int, str]


# The default of `load(..., max_memory=)`: what one load may commit for its activation arena and
# repacked weights (the engine's kDefaultMaxMemory).
DEFAULT_MAX_MEMORY = 2 << 30


def load(
    source: ModelSource,
    threads: Threads = "auto",
    isa: Optional[str] = None,
    max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
) -> "Model":
    """Load a .qbw model.

    `source` is a path (str or os.PathLike; a regular file, checked without blocking, so a FIFO
    or a device raises FormatError instead of hanging; a NUL byte raises ValueError as open()
    does), the file's contents (bytes, bytearray, memoryview or any buffer-protocol object) or
    a binary file object (read from its current position to the end). Every source is
    validated the same way, before anything is used: a damaged or hostile file raises
    `qbinfer.FormatError` saying what is wrong and where, prefixed with the path, the file
    object's name, or ``<bytes>`` for contents in memory.

    `threads`: "auto" (the default) uses every CPU this process may use, and each step of the
    network is split over as many of them as its work pays for; a step too small to split runs
    on one thread, so no thread count is slower than one thread. An int N asks for N threads
    with the same per-step choice; N above the usable CPUs (os.sched_getaffinity) is capped to
    them with a RuntimeWarning. Results never depend on it.

    `isa` picks the kernels (one of `qbinfer._core.supported_isas()`); None means
    `QBINFER_ISA`, else the best this CPU runs.

    `max_memory` (bytes; default 2 GiB) bounds what the load commits in proportion to the graph
    rather than to the file: one activation arena (`arena_bytes`) plus the weights repacked for
    the kernels (`packed_bytes`). A file that needs more (a few hundred KB can plan gigabytes of
    activations) raises `qbinfer.FormatError` with the figures and the op whose buffer pushes
    the total over, before anything that large is allocated. Pass a larger number for a trusted
    model that needs it, or None for no limit; 0 or a negative number raises ValueError. Each
    call running concurrently with others takes one more arena of `arena_bytes` (see `Model`),
    which the limit does not cover.

    The model may be shared by several Python threads: `run` and `predict` release the GIL
    and each concurrent call runs in an activation arena of its own (see `Model`)."""
    return Model(source, threads=threads, isa=isa, max_memory=max_memory, _stacklevel=3)


def _resolve_threads(threads: Threads, stacklevel: int) -> int:
    """The pool size for `threads`: "auto" is the usable CPUs; an int above them is capped."""
    usable = min(int(_core.usable_cpus()), _MAX_THREADS)
    if isinstance(threads, str):
        if threads != "auto":
            raise ValueError(f"threads must be 'auto' or an int >= 1, got {threads!r}")
        return usable
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or 'auto', got {type(threads).__name__}")
    n = int(threads)
    if n < 1:
        raise ValueError(f"threads must be 'auto' or an int >= 1, got {n}")
    if n > usable:
        warnings.warn(
            f"threads={n} is more than the {usable} CPU(s) this process may use "
            f"(os.sched_getaffinity); using {usable}: threads beyond the CPUs only wait for "
            "each other",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
        n = usable
    return n


_MAX_THREADS = 1024
_HEADER_BYTES = 64  # a .qbw header; shorter contents cannot be a model


def _open_core(
    source: ModelSource, threads: int, isa: Optional[str], max_memory: Optional[int]
) -> Tuple[_core.Model, str]:
    """(_core.Model, the name its messages use) for any source `load` takes."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return _core.Model(path, threads, isa, max_memory=max_memory), os.fsdecode(path)
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise TypeError(
                "load: the file object is in text mode; open the model with open(path, 'rb')"
            )
        if data is None:  # a non-blocking stream with nothing to read yet
            raise TypeError("load: the file object's read() returned None (a non-blocking stream)")
        name = getattr(source, "name", None)
        label = name if isinstance(name, str) else "<file>"
        return (
            _core.Model.from_buffer(_byte_view(data), label, threads, isa, max_memory=max_memory),
            label,
        )
    try:
        view = _byte_view(source)
    except TypeError:
        raise TypeError(
            "load takes a path (str or os.PathLike), the file's contents (bytes or a buffer) or a "
            f"binary file object, got {type(source).__name__}"
        ) from None
    if (
        isinstance(source, bytes)
        and len(source) < _HEADER_BYTES
        and b"\0" not in source
        and os.path.exists(source)
    ):
        # Earlier versions took a bytes path here; now bytes are the contents. Say so.
        raise TypeError(
            f"load(bytes) reads the bytes as the model itself, and {source!r} is a file name: "
            "pass the path as a str or pathlib.Path"
        )
    return (
        _core.Model.from_buffer(view, "<bytes>", threads, isa, max_memory=max_memory),
        "<bytes>",
    )


def _byte_view(data: Any) -> memoryview:
    """A C-contiguous byte view of a buffer-protocol object (copied only when strided)."""
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class _PredictSetup(NamedTuple):
    """A model's preprocessing, input channels, class names and output kind, as predict uses
    them (`Model._predict_setup`)."""

    spec: Dict[str, Any]
    channels: int
    class_names: List[str]
    output_kind: str


class Model:
    """A loaded network. `run` takes preprocessed float32 batches; `predict` takes images.

    `Model(source, threads="auto", isa=None, max_memory=2 GiB)` is `load` (see there for every
    argument).

    Threads and concurrency. `threads` sizes one pool of engine threads that splits the steps
    of a call (or runs the images of a batch side by side). Separately, one Model may serve
    calls from several Python threads at the same time: `run` and `predict` release the GIL,
    and each call that runs while others do takes an activation arena of its own from the
    model's free list (one more arena, `arena_bytes`, per call running at the same time; kept
    for reuse, and not counted by `max_memory`: a server bounds them by bounding its worker
    threads), while the weights and the plan are shared read-only. The engine pool serves one
    call at a time; a call that finds it busy runs on its own thread. Results are the same
    bits as serial calls. A server with several worker threads gets the most throughput from
    `threads=1` (each call on its own core), a single caller from `threads="auto"`.
    """

    # predict's view of the file (`_predict_setup`), built by its first call.
    _predict_cache: Optional[_PredictSetup] = None

    def __init__(
        self,
        source: ModelSource,
        threads: Threads = "auto",
        isa: Optional[str] = None,
        max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
        *,
        _stacklevel: int = 2,
    ):
        n = _resolve_threads(threads, _stacklevel)
        self._core, self.path = _open_core(source, n, isa, max_memory)

    # -- properties ---------------------------------------------------------------------
    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(H, W, C) of one input image."""
        return tuple(self._core.input_shape)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self._core.num_classes)

    @property
    def class_names(self) -> List[str]:
        names = list(self._core.class_names)
        return names if names else [str(i) for i in range(self.num_classes)]

    @property
    def preprocessing(self) -> Dict[str, Any]:
        return dict(self._core.preprocessing)

    @property
    def name(self) -> str:
        return str(self._core.model_name)

    @property
    def metadata(self) -> Dict[str, Any]:
        """The converter's provenance record (options, source, recorded accuracy), if any."""
        text = self._core.metadata_json
        if not text:
            return {}
        try:
            return dict(json.loads(text))
        except (ValueError, TypeError):
            return {"raw": text}

    @property
    def output_kind(self) -> str:
        """What `run` returns, from the op that writes the output: "probabilities" after a
        SOFTMAX, "log_probabilities" after a log-softmax (SOFTMAX with log = 1), else
        "logits". `predict` turns each into probabilities."""
        index = self._core.output_op
        op = next(op for op in self.ops() if op["index"] == index)
        if op["type"] != "SOFTMAX":
            return "logits"
        attrs = op["attrs"]
        assert isinstance(attrs, dict)
        return "log_probabilities" if attrs["log"] else "probabilities"

    @property
    def threads(self) -> int:
        """Threads of the engine pool, as resolved ("auto": the usable CPUs; capped to them)."""
        return int(self._core.threads)

    @property
    def isa(self) -> str:
        """The ISA whose kernels this model runs ("scalar", "avx2", "avx512", "neon")."""
        return str(self._core.isa)

    # -- inference ----------------------------------------------------------------------
    def run(self, x: np.ndarray, layout: str = "nchw") -> np.ndarray:
        """Outputs (N x classes, float32) of a float32 batch, NCHW (default) or NHWC: logits,
        or the probabilities or log-probabilities of a model that ends in one (`output_kind`).

        The batch must already be preprocessed (see `preprocessing`); `predict` does that.
        Thread-safe: releases the GIL, and concurrent calls run in parallel, each in an arena
        of its own, giving the same results as one after the other.
        """
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        if isinstance(x, np.ndarray) and x.ndim == 3:
            raise _core.ShapeError(
                f"run() takes a batch (rank 4, {layout.upper()}): got one image "
                f"of shape {x.shape}; pass x[None] for a batch of one"
            )
        return self._core.run(x, layout)

    __call__ = run

    def predict(
        self, img: Union[ImageLike, Sequence[ImageLike]], top_k: int = 5
    ) -> Union[Prediction, List[Prediction]]:
        """Run the model on an image, preprocessed as stored in the file (`preprocessing`).

        `img`: a path (an image file, or a .npy array), a PIL image, or a uint8 (or uint16)
        H x W, H x W x 1, H x W x 3 or H x W x 4 array. A 3-channel model takes RGB (grayscale
        repeated, alpha dropped); a 1-channel model takes grayscale (RGB becomes ITU-R BT.601
        luma, as Pillow's ``convert("L")``). The recipe, and the engine (the default), Pillow and
        numpy implementations of it: `qbinfer.preprocess`.

        What comes back depends on the model's output:

        * a classifier (output N x classes): the `top_k` (class name, probability) pairs, best
          first;
        * a dense output (N x C x H x W, e.g. segmentation): an int32 class map of the image's
          own height x width, the argmax over C. The output grid covers the centre crop the
          model saw; each image pixel takes the cell its centre falls in once mapped through
          the resize (nearest cell: class maps are not interpolated). Pixels outside the crop
          (the sides the centre crop cut off) are -1. `top_k` is not used.

        A list or tuple of images gives a list of results: each image is preprocessed once and
        they run as batches (`PREDICT_BATCH` images per `run` call).
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        if isinstance(img, (list, tuple)):
            results: List[Prediction] = []
            for start in range(0, len(img), PREDICT_BATCH):
                results.extend(self._predict_batch(img[start : start + PREDICT_BATCH], int(top_k)))
            return results
        return self._predict_batch([img], int(top_k))[0]

    def _predict_setup(self) -> "_PredictSetup":
        """What every predict call reads from the file, built on the first call and kept: the
        properties rebuild it from the engine on every access (`output_kind` lists every op),
        which cost about 1 ms of a 640x480 predict. A model never changes after loading, so a
        race between two first calls only builds equal copies."""
        setup = self._predict_cache
        if setup is None:
            setup = _PredictSetup(
                self.preprocessing, self.input_shape[2], self.class_names, self.output_kind
            )
            self._predict_cache = setup
        return setup

    def _predict_batch(self, images: Sequence[ImageLike], top_k: int) -> List[Prediction]:
        setup = self._predict_setup()
        prepared = [prepare(one, setup.spec, channels=setup.channels) for one in images]
        x = prepared[0][0] if len(prepared) == 1 else np.concatenate([p[0] for p in prepared])
        out = self.run(x, layout="nhwc")
        if out.ndim == 2:
            # Class probabilities: the softmax of logits and of log-probabilities (logits shifted
            # by a constant per image, so their softmax renormalises their rounding); a model's
            # probabilities as they are (a softmax of them would flatten them towards uniform).
            # One engine call: Python run after the model finds every cache cold.
            softmax = setup.output_kind != "probabilities"
            best, probs = _core._top_probabilities(out, softmax, top_k)
            names = setup.class_names
            return [
                [(names[i], p) for i, p in zip(row, row_probs)]
                for row, row_probs in zip(best.tolist(), probs.tolist())
            ]
        class_maps = out.argmax(axis=3).astype(np.int32)  # N x H_out x W_out (out is NHWC)
        return [geo.to_frame(cmap) for (_, geo), cmap in zip(prepared, class_maps)]

    # -- profiling ----------------------------------------------------------------------
    def profile(self, x: Any = None, runs: int = 20, layout: str = "nchw") -> "Profile":
        """Time every step of a run of one image: a `qbinfer.profile.Profile` whose steps give
        their median time over `runs` runs, share of the run, the ONNX nodes and PyTorch
        modules they came from (recorded by the converter; op types for older files), bytes
        moved and float/binary MACs with the rate achieved. `str()` of it is a table;
        `save_chrome_trace(path)` and `plot(path)` (matplotlib) write a trace and a chart.

        `x`: a preprocessed float32 batch as `run` takes (its first image is timed), an image
        as `predict` takes (a path, a PIL image, an H x W x C uint8 array), or None for a
        fixed random input (the timing of these models hardly depends on the values)."""
        from .profile import build_profile

        if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
            raise ValueError(f"runs must be an int >= 1, got {runs!r}")
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        if x is None:
            h, w, c = self.input_shape
            rng = np.random.default_rng(0)
            x, layout = rng.standard_normal((1, h, w, c)).astype(np.float32), "nhwc"
        elif not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 4):
            x, layout = prepare(x, self.preprocessing, channels=self.input_shape[2])[0], "nhwc"
        timings = self._core._profile(np.ascontiguousarray(x[:1]), int(runs), layout)
        return build_profile(
            self.name,
            timings,
            self._core.steps(),
            self.ops(),
            self.metadata,
            runs=int(runs),
            threads=self.threads,
            isa=self.isa,
        )

    # -- introspection ------------------------------------------------------------------
    def ops(self) -> List[Dict[str, Any]]:
        """One dict per op: index, type, name, input and output shapes, params, bytes, FLOPs, BOPs."""
        return list(self._core.ops())

    def summary(self) -> str:
        """A table of the ops with shapes, parameters, storage and operation counts; the last
        column is each op's whole name (escaped: names come from the file), then the totals.
        `qbinfer summary MODEL` prints it."""
        ops = self.ops()
        h, w, c = self.input_shape
        lines = [
            f"{printable(self.name)}  ({printable(self.path)})",
            f"input {h}x{w}x{c} (HxWxC), {self.num_classes} classes, threads {self.threads}, "
            f"isa {self.isa}",
            f"{'#':>4} {'op':<15} {'output':<14} {'params':>11} {'bytes':>11} {'FLOPs':>14} "
            f"{'BOPs':>15}  name",
        ]
        for op in ops:
            out = "x".join(map(str, op["output"]))
            lines.append(
                f"{op['index']:>4} {printable(op['type']):<15} {out:<14} {op['params']:>11,} "
                f"{op['bytes']:>11,} {op['flops']:>14,} {op['bops']:>15,}  {printable(op['name'])}"
            )
        flops = sum(op["flops"] for op in ops)
        bops = sum(op["bops"] for op in ops)
        params = sum(op["params"] for op in ops)
        size = sum(op["bytes"] for op in ops)
        lines.append(
            f"total: {len(ops)} ops, {params:,} parameters, {size / 1e6:.2f} MB of weights, "
            f"FLOPs {flops / 1e6:.1f} M, BOPs {bops / 1e6:.1f} M, "
            f"OPs {(flops + bops / 64) / 1e6:.1f} M; activation arena "
            f"{self._core.arena_bytes / 1e6:.2f} MB"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        h, w, c = self.input_shape
        return (
            f"<qbinfer.Model {self.name!r} input {h}x{w}x{c} classes {self.num_classes} "
            f"threads {self.threads} isa {self.isa}>"
        )
