"""`qbinfer.load(path)` and the `Model` it returns: a thin, typed layer over `_core.Model`."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .preprocess import preprocess

if TYPE_CHECKING:
    from .profile import Profile

__all__ = ["Model", "load"]

ImageLike = Any  # a path, a PIL image, or an H x W x 3 uint8 array


def load(path: "str | os.PathLike[str]", threads: int = 1, isa: Optional[str] = None) -> "Model":
    """Load a .qbw file. Everything in it is validated before use; a damaged or hostile file
    raises `qbinfer.FormatError` saying what is wrong and where. `isa` picks the kernels (one of
    `qbinfer._core.supported_isas()`); None means `QBINFER_ISA`, else the best this CPU runs."""
    return Model(path, threads=threads, isa=isa)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _probabilities(outputs: np.ndarray, kind: str) -> np.ndarray:
    """Class probabilities of a model's outputs of `kind` (`Model.output_kind`). Log-probabilities
    are logits shifted by a constant per image, so their softmax is the probabilities (and
    renormalizes their rounding); probabilities are already that: a softmax of them would
    flatten them towards uniform."""
    if kind == "probabilities":
        return outputs.astype(np.float64)
    return _softmax(outputs)


class Model:
    """A loaded network. `run` takes preprocessed float32 batches; `predict` takes images."""

    def __init__(self, path: "str | os.PathLike[str]", threads: int = 1, isa: Optional[str] = None):
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"threads must be an int, got {type(threads).__name__}")
        self.path = os.fspath(path)
        self._core = _core.Model(self.path, int(threads), isa)

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
    ) -> Union[List[Tuple[str, float]], List[List[Tuple[str, float]]]]:
        """Top-k (class name, probability) of an image: a path, a PIL image or an H x W x 3
        uint8 array, preprocessed as stored in the file. A list of images gives a list of
        results."""
        if isinstance(img, (list, tuple)):
            return [self._predict_one(one, top_k) for one in img]
        return self._predict_one(img, top_k)

    def _predict_one(self, img: ImageLike, top_k: int) -> List[Tuple[str, float]]:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        x = preprocess(img, self.preprocessing)
        probs = _probabilities(self.run(x, layout="nhwc"), self.output_kind)[0]
        k = min(int(top_k), probs.shape[0])
        order = np.argsort(-probs, kind="stable")[:k]
        names = self.class_names
        return [(names[i], float(probs[i])) for i in order]

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
            x, layout = preprocess(x, self.preprocessing), "nhwc"
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
        """A table of the ops with shapes, parameters, storage and operation counts."""
        ops = self.ops()
        lines = [
            f"{self.name}  ({self.path})",
            f"input {'x'.join(map(str, self.input_shape))} (HxWxC), {self.num_classes} classes, "
            f"threads {self.threads}",
            f"{'#':>3} {'op':<15} {'name':<34} {'output':<14} {'params':>10} {'bytes':>10} "
            f"{'FLOPs':>12} {'BOPs':>13}",
        ]
        for op in ops:
            out = "x".join(map(str, op["output"]))
            lines.append(
                f"{op['index']:>3} {op['type']:<15} {op['name'][-34:]:<34} {out:<14} "
                f"{op['params']:>10,} {op['bytes']:>10,} {op['flops']:>12,} {op['bops']:>13,}"
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
