"""PyTorch model or checkpoint -> ONNX -> lowered graph -> .qbw (SPEC §5, docs/converter.md).

    >>> from weights_tools.convert import to_qbw
    >>> report = to_qbw(model, "model.qbw", input_size=(224, 224), fc="int8")
    >>> print(report)

    python -m weights_tools.convert ckpt.pth --arch qsb_net_large --se se1 -o model.qbw
    python -m weights_tools.convert --random --arch qb_net_small --input-size 32 32 \\
        --num-classes 10 -o demo.qbw
    python -m weights_tools.convert --check --random --arch reactnet_a   # every blocker at once

    >>> from weights_tools.convert import check_model
    >>> print(check_model(model, input_size=(224, 224)))   # empty report: the model converts

The PyTorch model is exported to ONNX (the same file runs on ONNX Runtime as the FP32
reference), then `weights_tools.onnx_lowering` folds and pattern-matches it into the engine's op
set, and the options below choose the encodings.

FC encodings (`fc`), per output row o of the weight w:
- "fp32": as is.
- "int8": symmetric, weight_scale[o] = max|w[o]| / 127, q = clip(rint(w / weight_scale),
  -127, 127).
- "bitplane8" (paper A.2): weight_scale[o] = max|w[o]| / 255,
  B = clip(rint((w / weight_scale + 255) / 2), 0, 255), w ≈ weight_scale · (2B − 255), stored as
  8 sign planes (plane b holds 2·bit_b(B) − 1, packed by the bit contract).
A row of zeros gets weight_scale 0 (so it reconstructs to exactly 0).

Depthwise convs (`depthwise`):
- "fp32": FP32 weights.
- "int8": per-output-channel symmetric weights, weight_scale[o] = max|w[o]| / 127. The conv's
  input u = x + pre_bias is quantized per tensor with scale s:
    * `calibration` given (float32 NCHW images, preprocessed as the model sees them): the
      converter runs the FP32 graph (the numpy reference interpreter) on them and stores
      s = max|u| / 127 over all calibration images, per depthwise op;
    * `calibration=None`: s = 0 is stored, which tells the engine to use a dynamic scale,
      s = max|u| / 127 per image (1 if u is all zero);
    * trained (a model trained with `weights_tools.fake_quant`, or `trained_input_scales=` for
      an ONNX file): the trained s of each depthwise op is stored, nothing is calibrated, and the
      weights are the trained codes (docs/training.md, "INT8").
  qu = clamp(rint(u / s), ±127); the int32 dot is exact; out = acc · (s · weight_scale) ·
  scale + bias (docs/format.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx

from .converter.emit import op_sources
from .converter.errors import Blocker
from .converter.pipeline import check_lowering
from .export_tracing import faithful_tracing
from .onnx_lowering import ConversionError, fold_onnx_constants, lower_onnx
from .qbw import (
    DType,
    FCEncoding,
    Graph,
    OpType,
    Preprocessing,
    Tensor,
    full_attrs,
    pack_signs,
    write_qbw,
)

__all__ = [
    "Blocker",
    "CheckReport",
    "ConversionError",
    "ConversionReport",
    "check_model",
    "check_onnx",
    "module_path",
    "FC_ENCODINGS",
    "DEPTHWISE_MODES",
    "to_qbw",
    "onnx_to_qbw",
    "export_onnx",
    "encode_fc",
    "quantize_depthwise",
    "calibrate_depthwise",
    "trained_depthwise_scales",
    "fc_int8",
    "fc_bitplane8",
    "randomize_bn",
    "main",
]

FC_ENCODINGS = ("fp32", "int8", "bitplane8")
DEPTHWISE_MODES = ("fp32", "int8")
INT8_SCALE_MODES = ("calibrated", "trained")

PathLike = Union[str, "os.PathLike[str]"]


def _producer() -> str:
    try:
        from importlib.metadata import version

        return f"weights_tools {version('qbinfer')}"
    except Exception:
        return "weights_tools"


@dataclass
class ConversionReport:
    path: str
    ops: Dict[str, int]
    bytes: int
    warnings: List[str] = field(default_factory=list)
    onnx_path: Optional[str] = None
    model_name: str = ""

    def __str__(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        lines = [
            f"{self.path}: {self.model_name or 'model'}, {sum(self.ops.values())} ops "
            f"({ops}), {self.bytes / 1e6:.2f} MB"
        ]
        if self.onnx_path:
            lines.append(f"ONNX: {self.onnx_path}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Encodings


def _row_scale(w: np.ndarray, levels: int) -> np.ndarray:
    """Per-row max|w| / levels as float32 (0 for a row of zeros)."""
    return (np.abs(w).max(axis=1) / levels).astype(np.float32)


def fc_int8(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric INT8: returns (q int8 [O, C], weight_scale float32 [O])."""
    w = np.asarray(w, dtype=np.float64)
    scale = _row_scale(w, 127)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
    q = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)
    return q, scale


def fc_bitplane8(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paper A.2: returns (planes u64 [8, O, words(C)], weight_scale float32 [O], B uint8 [O, C])
    with w ≈ weight_scale · (2B − 255)."""
    w = np.asarray(w, dtype=np.float64)
    scale = _row_scale(w, 255)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
    codes = np.clip(np.rint((w / safe + 255) / 2), 0, 255).astype(np.uint8)
    bits = (codes[None, :, :] >> np.arange(8, dtype=np.uint8)[:, None, None]) & 1  # [8, O, C]
    planes = pack_signs(2 * bits.astype(np.int8) - 1)  # stored bit = 1 - bit_b(B)
    return planes, scale, codes


def encode_fc(graph: Graph, encoding: str) -> Graph:
    """Re-encode every FP32 FC op of `graph` (in place) as `encoding`."""
    if encoding not in FC_ENCODINGS:
        raise ValueError(f"fc must be one of {FC_ENCODINGS}, got {encoding!r}")
    if encoding == "fp32":
        return graph
    for op in graph.ops:
        if op.type != OpType.FC or op.attrs[0] != FCEncoding.FP32:
            continue
        t0 = graph.tensors[op.tensors[0]]
        if encoding == "int8":
            q, scale = fc_int8(t0.data)
            graph.tensors[op.tensors[0]] = Tensor(t0.name, DType.I8, q)
            op.attrs = [int(FCEncoding.INT8)]
        else:
            planes, scale, _ = fc_bitplane8(t0.data)
            graph.tensors[op.tensors[0]] = Tensor(t0.name, DType.BITS, planes)
            op.attrs = [int(FCEncoding.BITPLANE8)]
        graph.tensors.append(Tensor(op.name + ".weight_scale", DType.F32, scale))
        op.tensors[1] = len(graph.tensors) - 1
    return graph


def calibrate_depthwise(graph: Graph, images: np.ndarray, batch_size: int = 32) -> Dict[int, float]:
    """Run the FP32 graph (reference interpreter) on `images` (float32 NCHW, preprocessed) and
    return {op index: max|x + pre_bias| / 127} for every depthwise op."""
    from .reference import run_reference

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"calibration images must be a non-empty float32 NCHW array, got shape {images.shape}"
        )
    amax: Dict[int, float] = {}

    def observe(i, op, args):
        if op.type == OpType.DWCONV3X3:
            pre_bias = graph.tensor(op, 0)
            u = args[0] if pre_bias is None else (args[0] + pre_bias).astype(np.float32)
            amax[i] = max(amax.get(i, 0.0), float(np.abs(u).max()))

    for start in range(0, len(images), batch_size):
        run_reference(graph, images[start : start + batch_size], observer=observe)
    return {i: float(np.float32(m) / np.float32(127)) for i, m in amax.items()}


def trained_depthwise_scales(
    model: onnx.ModelProto, graph: Graph, scales_by_module: Dict[str, float]
) -> Dict[int, float]:
    """{op index: s} for every depthwise op of `graph` (lowered from `model`), s the trained
    input scale of the PyTorch depthwise conv(s) the op came from (`scales_by_module`: module
    path -> s, from `fake_quant.dequantized_copy`). The k convs of one op share one scale."""
    sources = op_sources(model, graph, max_bytes=1 << 62) or []
    scales: Dict[int, float] = {}
    for i, op in enumerate(graph.ops):
        if op.type != OpType.DWCONV3X3:
            continue
        modules = sources[i]["modules"] if i < len(sources) else []
        found = {scales_by_module[m] for m in modules if m in scales_by_module}
        if len(found) != 1:
            raise ConversionError(
                f"{op.name}: {'no' if not found else 'more than one'} trained input scale for "
                f"this depthwise op (its modules: {', '.join(modules) or 'unknown'}; trained: "
                f"{', '.join(sorted(scales_by_module)) or 'none'})"
            )
        scales[i] = found.pop()
    return scales


def quantize_depthwise(
    graph: Graph,
    input_scales: Optional[Dict[int, float]] = None,
    warnings: Optional[List[str]] = None,
) -> Graph:
    """Turn every FP32 DWCONV3X3 of `graph` (in place) into INT8: per-output-channel weights,
    input scale from `input_scales` (op index -> s, from `calibrate_depthwise`) or 0 (dynamic
    per image) when None."""
    for i, op in enumerate(graph.ops):
        if op.type != OpType.DWCONV3X3:
            continue
        t1 = graph.tensors[op.tensors[1]]
        if t1.dtype != DType.F32:
            continue
        dilation = full_attrs(op)[3]
        if dilation > 1:
            raise ConversionError(
                f"{op.name}: depthwise='int8' has no dilated kernel (this depthwise conv has "
                f"dilation {dilation}, an atrous conv); convert with depthwise='fp32' "
                f"(--depthwise fp32)"
            )
        q, weight_scale = fc_int8(t1.data)
        graph.tensors[op.tensors[1]] = Tensor(t1.name, DType.I8, q)
        s = 0.0
        if input_scales is not None:
            s = input_scales.get(i, 0.0)
            if not s > 0 and warnings is not None:
                warnings.append(
                    f"{op.name}: its input was 0 on every calibration image; it "
                    f"uses a dynamic input scale"
                )
        graph.tensors.append(Tensor(op.name + ".weight_scale", DType.F32, weight_scale))
        op.tensors[2] = len(graph.tensors) - 1
        graph.tensors.append(
            Tensor(op.name + ".input_scale", DType.F32, np.array([s], dtype=np.float32))
        )
        op.tensors[5] = len(graph.tensors) - 1
    return graph


# ---------------------------------------------------------------------------------------------
# Conversion


def _preprocessing(preprocessing, height: int, width: int) -> Preprocessing:
    if preprocessing is None:
        return Preprocessing.for_input_size(height, width)
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if isinstance(preprocessing, dict):
        base = Preprocessing.for_input_size(height, width)
        fields = {**base.__dict__, **preprocessing}
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return Preprocessing(**fields)
    raise TypeError(
        f"preprocessing must be a Preprocessing, a dict or None, got {type(preprocessing).__name__}"
    )


def onnx_to_qbw(
    onnx_path: PathLike,
    qbw_path: PathLike,
    fc: str = "fp32",
    depthwise: str = "fp32",
    calibration: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    preprocessing=None,
    model_name: Optional[str] = None,
    metadata: Optional[dict] = None,
    verbose: bool = False,
    trained_input_scales: Optional[Dict[str, float]] = None,
) -> ConversionReport:
    """Convert an ONNX file to .qbw. See the module doc for `fc`, `depthwise` and
    `calibration`; `trained_input_scales` (PyTorch module path of each depthwise conv -> its
    trained input scale) stores those scales instead of calibrating; `preprocessing` is a `Preprocessing`, a dict of its fields, or None for
    ImageNet's eval recipe at the model's input size; `class_names` may be empty (the engine then
    reports indices). Raises ConversionError naming the ONNX node of an unsupported op/pattern."""
    if fc not in FC_ENCODINGS:
        raise ValueError(f"fc must be one of {FC_ENCODINGS}, got {fc!r}")
    if depthwise not in DEPTHWISE_MODES:
        raise ValueError(f"depthwise must be one of {DEPTHWISE_MODES}, got {depthwise!r}")
    if calibration is not None and depthwise != "int8":
        raise ValueError("calibration images are used only with depthwise='int8'")
    if trained_input_scales is not None and (depthwise != "int8" or calibration is not None):
        raise ValueError("trained input scales go with depthwise='int8' and no calibration")
    log = print if verbose else (lambda *a, **k: None)
    notes: List[str] = []
    model = onnx.load(os.fspath(onnx_path))
    name = (
        model_name
        or model.graph.name
        or os.path.splitext(os.path.basename(os.fspath(onnx_path)))[0]
    )
    t0 = time.perf_counter()
    graph = lower_onnx(model, name, notes)
    log(
        f"lowered {len(model.graph.node)} ONNX nodes to {len(graph.ops)} ops "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    calibrated = None
    if depthwise == "int8":
        scales = None
        if trained_input_scales is not None:
            scales = trained_depthwise_scales(model, graph, trained_input_scales)
            log(f"stored the trained input scales of {len(scales)} depthwise ops")
        elif calibration is not None:
            t0 = time.perf_counter()
            scales = calibrate_depthwise(graph, calibration)
            calibrated = int(len(calibration))
            log(
                f"calibrated {len(scales)} depthwise inputs on {calibrated} images "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        quantize_depthwise(graph, scales, notes)
    encode_fc(graph, fc)

    inp = graph.values[graph.input_value]
    graph.preprocessing = _preprocessing(preprocessing, inp.height, inp.width)
    graph.class_names = list(class_names or [])
    out_channels = graph.values[graph.output_value].channels
    if graph.class_names and len(graph.class_names) != out_channels:
        raise ValueError(f"{len(graph.class_names)} class names for {out_channels} outputs")
    graph.producer = _producer()
    meta = {
        "converter": "weights_tools.convert",
        "source": os.path.basename(os.fspath(onnx_path)),
        "input_size": [inp.height, inp.width],
        "fc": fc,
        "depthwise": depthwise,
        "depthwise_input_scale": (
            "trained"
            if trained_input_scales is not None
            else "calibrated"
            if calibrated
            else "dynamic"
        )
        if depthwise == "int8"
        else None,
        "calibration_images": calibrated,
        "onnx": onnx.__version__,
        # per op: its ONNX nodes and PyTorch modules, for qbinfer's profiler and summaries
        "op_sources": op_sources(model, graph),
    }
    meta.update(metadata or {})
    graph.metadata_json = json.dumps(meta, sort_keys=True)
    size = write_qbw(qbw_path, graph)
    return ConversionReport(
        path=os.fspath(qbw_path),
        ops=graph.ops_by_type(),
        bytes=size,
        warnings=notes,
        model_name=name,
    )


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Within: what native code writes to file descriptors 1 and 2 is dropped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def export_onnx(
    model,
    path: PathLike,
    input_size: Tuple[int, int] = (224, 224),
    opset: int = 17,
    fold_constants: bool = True,
    in_channels: int = 3,
) -> List[str]:
    """Export `model` (not modified: a deep copy in eval mode on the CPU) to ONNX with a dynamic
    batch axis, input "input" and output "logits". With `fold_constants` the constant
    subgraphs the exporter leaves (the weight binarization Where(W >= 0, 1, -1), the shortcut's
    ConstantOfShape, ...) are evaluated into initializers: the same function, but ONNX Runtime
    no longer spends seconds binarizing weights at every session start."""
    import warnings

    import torch

    model = copy.deepcopy(model).cpu().eval()
    h, w = input_size
    x = torch.zeros(1, int(in_channels), int(h), int(w))
    notes: List[str] = []

    def export(dynamic: bool) -> None:
        with warnings.catch_warnings(), torch.no_grad(), faithful_tracing():
            # The TorchScript exporter is deprecated in favour of dynamo; it is the one that
            # gives plain, foldable graphs for these models. Its warnings are not the user's
            # business. faithful_tracing: `.data` assignments and multi-output autograd
            # Functions traced as eager mode runs them (weights_tools/export_tracing.py).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                os.fspath(path),
                dynamo=False,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=({"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None),
                opset_version=opset,
            )

    try:
        with _quiet_native_output():  # torch prints the whole graph when the export fails
            export(dynamic=True)
    except torch.onnx.errors.SymbolicValueError as e:
        # With a dynamic batch some shapes become values the exporter cannot handle:
        # `bias.view(1, -1).expand_as(out)` (BinaryNet.pytorch's BinarizeLinear) leaves every
        # dimension unknown, and its BatchNorm1d refuses it ("batch_norm for unknown channel
        # size"); `F.avg_pool2d(x, x.size()[2:])` makes the kernel size a tensor. With the
        # batch fixed the shapes are constants. The .qbw does not depend on the exported batch.
        try:
            export(dynamic=False)
        except Exception:
            raise e from None
        notes.append(
            "the ONNX file was exported with a fixed batch of 1 (with a dynamic batch the "
            f"exporter refused the model: {str(e).splitlines()[0]}); the .qbw takes any batch"
        )
    if fold_constants:
        onnx.save(fold_onnx_constants(onnx.load(os.fspath(path))), os.fspath(path))
    return notes


def to_qbw(
    model,
    path: PathLike,
    input_size: Union[int, Tuple[int, int]] = (224, 224),
    fc: str = "fp32",
    depthwise: str = "fp32",
    calibration: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    preprocessing=None,
    onnx_path: Optional[PathLike] = None,
    opset: int = 17,
    in_channels: int = 3,
    verbose: bool = False,
) -> ConversionReport:
    """Convert a PyTorch model to .qbw through ONNX; the user's model is not modified.

    `input_size`: (H, W) or one int; `in_channels`: 3 for image models (another count makes a
    graph the engine runs on arrays, not images). `onnx_path`: keep the exported ONNX file there
    (ONNX Runtime runs it as the FP32 reference); otherwise it goes to a temporary file. The
    other arguments are those of `onnx_to_qbw` (FC encodings, depthwise INT8 and its
    calibration are described in this module's doc).

    A model trained with `weights_tools.fake_quant` converts with its trained INT8 arithmetic:
    its depthwise weight codes and FC codes, and, with depthwise="int8" and no `calibration`,
    its trained input scales; `fc` must then be the encoding it was trained with."""
    import torch

    from .fake_quant import FakeQuantLinear, dequantized_copy, int8_config

    trained_scales = None
    if int8_config(model) is not None:
        trained_fc = {m.encoding for m in model.modules() if isinstance(m, FakeQuantLinear)}
        if trained_fc and trained_fc != {fc}:
            raise ValueError(
                f"the model's FC was trained as {', '.join(sorted(trained_fc))}: convert it "
                f"with fc={sorted(trained_fc)[0]!r}, not {fc!r}"
            )
        model, dw_scales = dequantized_copy(model)
        if depthwise == "int8" and calibration is None and dw_scales:
            trained_scales = dw_scales

    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    name = getattr(model, "name", None)
    name = name if isinstance(name, str) else type(model).__name__
    meta = {"torch": torch.__version__, "opset": opset}
    log = print if verbose else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        target = os.fspath(onnx_path) if onnx_path is not None else os.path.join(tmp, "model.onnx")
        t0 = time.perf_counter()
        export_notes = export_onnx(model, target, input_size, opset, in_channels=in_channels)
        log(f"exported {name} to ONNX ({time.perf_counter() - t0:.1f} s)")
        report = onnx_to_qbw(
            target,
            path,
            fc=fc,
            depthwise=depthwise,
            calibration=calibration,
            class_names=class_names,
            preprocessing=preprocessing,
            model_name=name,
            metadata=meta,
            verbose=verbose,
            trained_input_scales=trained_scales,
        )
    report.onnx_path = os.fspath(onnx_path) if onnx_path is not None else None
    report.warnings.extend(export_notes)
    return report


# ---------------------------------------------------------------------------------------------
# Checking a model: every blocker at once


@dataclass
class CheckReport:
    """The blockers of a model (`Blocker`: ONNX node, op type, PyTorch module and its class,
    what is unsupported, the fix), in graph order. Empty: the model converts. `str()` is the
    table that `python -m weights_tools.convert --check` prints."""

    model_name: str
    blockers: List[Blocker] = field(default_factory=list)

    @property
    def converts(self) -> bool:
        return not self.blockers

    def __bool__(self) -> bool:  # truthy when there is something to report
        return bool(self.blockers)

    def __len__(self) -> int:
        return len(self.blockers)

    def __str__(self) -> str:
        name = self.model_name or "model"
        if not self.blockers:
            return f"{name}: converts (no blockers)"
        rows = [("#", "ONNX node", "op", "PyTorch module (class)")]
        for i, b in enumerate(self.blockers, 1):
            module = b.module or ("<top level>" if b.node.startswith("/") else "?")
            if b.module_class:
                module += f" ({b.module_class})"
            rows.append((str(i), b.node or "<model>", b.op_type or "-", module))
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        count = len(self.blockers)
        lines = [f"{name}: {count} blocker{'s' if count > 1 else ''}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(wd) for c, wd in zip(row, widths)) + "  " + row[3])
            if i:
                b = self.blockers[i - 1]
                indent = " " * (widths[0] + 2)
                where = "" if b.stage == "translate" else f" (found by {b.stage})"
                lines.append(f"{indent}unsupported{where}: {b.problem}")
                lines.append(f"{indent}fix: {b.fix}")
        return "\n".join(lines)


def module_path(node_name: str, module_names: Optional[Sequence[str]] = None) -> str:
    """The PyTorch module an ONNX node came from, from the name torch's exporter gives it.

    The exporter names a node by its module scopes and its op, '/units/units.1/pw.0/Conv'; a
    scope repeats its parent's name before an index ('units' then 'units.1'), so the module is
    'units.1.pw.0'. '' for a node of the top-level module or a name without scopes. With
    `module_names` (those of `model.named_modules()`), a path that is not a module is matched
    to the one module whose name ends with it (a module called from another module's forward
    is scoped under the caller)."""
    if not node_name.startswith("/"):
        return ""
    scopes = [s for s in node_name.split("/") if s][:-1]  # the last part is the op's own name
    parts: List[str] = []
    previous = ""
    for scope in scopes:
        if previous and scope.startswith(previous + "."):
            parts.append(scope[len(previous) + 1 :])
        else:
            parts.append(scope)
        previous = scope
    path = ".".join(parts)
    if module_names is None or not path or path in module_names:
        return path
    matches = [m for m in module_names if m.endswith("." + path)]
    return matches[0] if len(matches) == 1 else path


def check_onnx(
    onnx_model: Union[onnx.ModelProto, PathLike], model=None, model_name: str = ""
) -> CheckReport:
    """Every blocker of an ONNX model (a ModelProto or a file), instead of the first
    ConversionError that `onnx_to_qbw` would raise. `model`: the PyTorch module it was exported
    from, to name each node's module and its class."""
    if not isinstance(onnx_model, onnx.ModelProto):
        path = os.fspath(onnx_model)
        model_name = model_name or os.path.splitext(os.path.basename(path))[0]
        onnx_model = onnx.load(path)
    modules = dict(model.named_modules()) if model is not None else None
    blockers = check_lowering(onnx_model)
    for b in blockers:
        b.module = module_path(b.node, None if modules is None else list(modules))
        if modules is not None and b.module in modules:
            b.module_class = type(modules[b.module]).__name__
    return CheckReport(model_name or onnx_model.graph.name, blockers)


def check_model(
    model,
    input_size: Union[int, Tuple[int, int]] = (224, 224),
    opset: int = 17,
    in_channels: int = 3,
    onnx_path: Optional[PathLike] = None,
) -> CheckReport:
    """Every blocker of a PyTorch model at once: exported to ONNX as `to_qbw` does, then
    translated, rewritten and emitted in check mode (`converter.pipeline.check_lowering`). An
    empty report (`report.converts`) means `to_qbw` converts the model."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    name = getattr(model, "name", None)
    name = name if isinstance(name, str) else type(model).__name__
    with tempfile.TemporaryDirectory() as tmp:
        target = os.fspath(onnx_path) if onnx_path is not None else os.path.join(tmp, "model.onnx")
        export_onnx(model, target, input_size, opset, in_channels=in_channels)
        return check_onnx(onnx.load(target), model, name)


# ---------------------------------------------------------------------------------------------
# Random but plausible parameters (tests and demos)


def randomize_bn(
    model,
    seed: int = 0,
    input_size: Tuple[int, int] = (32, 32),
    batch_size: int = 16,
    in_channels: Optional[int] = None,
):
    """Give `model` (in place) random but plausible inference parameters and return it in eval
    mode. Deterministic for a given seed.

    BN weights (|w| in [0.5, 1.5], 10% negative) and biases, PReLU slopes, learnable biases
    (`LearnableBias` of `layers` and `bnn_zoo`: the thresholds of signs, the pre-biases of
    depthwise convs, ReActNet's `move` shifts) and the alpha of binary convs are drawn at
    random. BN running statistics are then measured, in eval
    mode and in forward order, on random images (each BN sees the output of the already
    calibrated layers before it, as in a trained model) and perturbed a little, so activations
    keep a sensible scale through the whole network and the sign inputs spread around 0.
    `in_channels` of the random images defaults to the input channels of the model's first
    4-D parameter (a conv weight or a learnable bias), else 3. Should the model not run on such
    images, the statistics are drawn without data instead.

    Like a trained BNN, such a model has sign inputs near 0: between two correct
    implementations a few images may flip a sign (SPEC §6); see reference.NearTies."""
    import torch
    from torch import nn

    from . import bnn_zoo
    from .layers import BinaryConv2d, LearnableBias

    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                uniform(m.weight, 0.5, 1.5)
                m.weight[torch.rand(m.weight.shape, generator=g) < 0.1] *= -1
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.PReLU):
                uniform(m.weight, 0.0, 0.5)
            elif isinstance(m, (LearnableBias, bnn_zoo.LearnableBias)):
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, BinaryConv2d):
                uniform(m.alpha, 0.01, 0.1)

        def set_stats(bn, args):
            x = args[0]
            dims = [d for d in range(x.dim()) if d != 1]
            var = x.var(dim=dims, unbiased=False) + 1e-3
            var = var * (0.8 + 0.45 * torch.rand(var.shape, generator=g))
            bn.running_mean.copy_(
                x.mean(dim=dims) + 0.1 * var.sqrt() * torch.randn(var.shape, generator=g)
            )
            bn.running_var.copy_(var)

        bns = [
            m
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        if in_channels is None:
            first = next((p for p in model.parameters() if p.dim() == 4), None)
            in_channels = int(first.shape[1]) if first is not None else 3
        hooks = [m.register_forward_pre_hook(set_stats) for m in bns]
        model.eval()
        try:
            h, w = input_size
            model(torch.randn(batch_size, in_channels, h, w, generator=g))
        except Exception:  # not an image model of that shape: statistics without data
            for m in bns:
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                uniform(m.running_var, 0.5, 2.0)
        finally:
            for hook in hooks:
                hook.remove()
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Command line


def _describe_keys(kind: str, keys: Sequence[str], shown: int = 5) -> str:
    more = f", ... ({len(keys) - shown} more)" if len(keys) > shown else ""
    return f"  {len(keys)} {kind}: {', '.join(keys[:shown])}{more}"


def _arch_match(state: Dict[str, Any], candidate: Dict[str, Any]) -> float:
    """How well a checkpoint's state dict fits a model's (1 = every key, with its shape):
    keys present in both count 1 with the same shape and 1/2 otherwise, over the larger set."""
    score = 0.0
    for key, tensor in state.items():
        if key in candidate:
            score += 1.0 if tuple(candidate[key].shape) == tuple(tensor.shape) else 0.5
    return score / max(len(state), len(candidate), 1)


def suggest_arch(state: Dict[str, Any], top: int = 3) -> List[Tuple[str, float]]:
    """The zoo models (and SE variants) whose state-dict keys and shapes fit `state` best:
    [(the --arch/--se options, match in 0..1)], best first, those above 1/2 only."""
    from .bnn_zoo import BNN_ZOO_NAMES
    from .zoo import ARCHS, build_model

    scores: List[Tuple[str, float]] = []
    for arch in list(ARCHS) + list(BNN_ZOO_NAMES):
        for se in (None, "se1", "se2") if arch in ARCHS else (None,):
            try:
                candidate = build_model(arch, num_classes=1000, se=se).state_dict()
            except Exception:  # a model that cannot be built this way is no candidate
                continue
            options = f"--arch {arch}" + (f" --se {se}" if se else "")
            scores.append((options, _arch_match(state, candidate)))
    scores.sort(key=lambda t: -t[1])
    return [(o, m) for o, m in scores[:top] if m > 0.5]


def state_dict_mismatch(model, state: Dict[str, Any], arch: str, se: Optional[str]) -> str:
    """'' when `state` loads into `model` (same keys and shapes); else a short report: the counts
    and first names of the missing, unexpected and mis-shaped keys, and the zoo models the
    checkpoint fits best (to pass as --arch)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return ""
    name = f"--arch {arch}" + (f" --se {se}" if se else "")
    lines = [f"error: the checkpoint does not fit {name} ({len(expected)} tensors):"]
    if missing:
        lines.append(_describe_keys("missing keys", missing))
    if unexpected:
        lines.append(_describe_keys("unexpected keys", unexpected))
    if shapes:
        lines.append(_describe_keys("keys of another shape (checkpoint vs model)", shapes))
    if not (missing or unexpected):  # the right model, another head or width
        lines.append("  every name fits: check --num-classes (the classifier's size)")
        return "\n".join(lines)
    suggestions = [(o, m) for o, m in suggest_arch(state) if o != name]
    if suggestions:
        best = ", ".join(f"{o} ({100 * m:.0f}% of its tensors fit)" for o, m in suggestions)
        lines.append(f"  it fits best: {best}")
    else:
        lines.append("  no zoo model fits it: is it a checkpoint of this tool set's models?")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .bnn_zoo import BNN_ZOO, BNN_ZOO_NAMES
    from .zoo import ARCHS, build_model

    parser = argparse.ArgumentParser(
        prog="python -m weights_tools.convert",
        description="Convert a zoo checkpoint, random weights or an ONNX file to a .qbw file, "
        "or (--check) list every reason the model does not convert.",
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="state_dict file (or a dict with a 'state_dict' or 'model' key) for the --arch "
        "model, or an .onnx file (then no --arch)",
    )
    parser.add_argument(
        "--random",
        action="store_true",
        help="random weights and BN statistics instead of a checkpoint (demos)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random")
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHS) + sorted(BNN_ZOO_NAMES),
        help="the zoo model (weights_tools.zoo) or published BNN (weights_tools.bnn_zoo)",
    )
    parser.add_argument("-o", "--output", help="the .qbw file to write (not with --check)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing: list every blocker (ONNX node, PyTorch module, what is "
        "unsupported, the fix); exit code 0 when the model converts, 1 otherwise",
    )
    parser.add_argument("--se", choices=("none", "se1", "se2"), default="none")
    parser.add_argument("--padding", choices=("zero", "one"), default="zero")
    parser.add_argument(
        "--num-classes", type=int, help="default: 1000, or the bnn_zoo network's own"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="default: 224 224, or the bnn_zoo network's own",
    )
    parser.add_argument("--fc", choices=FC_ENCODINGS, default="fp32")
    parser.add_argument("--depthwise", choices=DEPTHWISE_MODES, default="fp32")
    parser.add_argument(
        "--calibration",
        help=".npy of float32 NCHW preprocessed images for "
        "the depthwise INT8 input scales (default: dynamic per image)",
    )
    parser.add_argument(
        "--int8-scales",
        choices=INT8_SCALE_MODES,
        help="trained: CHECKPOINT is a weights_tools.train run trained with INT8 (--int8-dw or "
        "--stage int8): store its trained depthwise input scales and weight codes instead of "
        "calibrating (with --depthwise int8; --fc as trained)",
    )
    parser.add_argument("--class-names", help="text file, one class name per line")
    parser.add_argument("--onnx", help="also keep the exported ONNX file here")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)
    from_onnx = bool(args.checkpoint) and args.checkpoint.lower().endswith(".onnx")
    if from_onnx:
        if args.random or args.arch:
            parser.error("an .onnx file is the whole model: no --arch or --random")
    elif bool(args.checkpoint) == bool(args.random):
        parser.error("give either a CHECKPOINT (or an .onnx file) or --random")
    elif not args.arch:
        parser.error("--arch is required with a checkpoint or --random")
    if not args.check and not args.output:
        parser.error("-o/--output is required (or --check)")

    class_names = None
    if args.class_names:
        with open(args.class_names, encoding="utf-8") as f:
            class_names = [line.rstrip("\n") for line in f if line.strip()]
    calibration = None
    if args.calibration:
        calibration = np.load(args.calibration).astype(np.float32)

    if from_onnx:
        if args.check:
            report = check_onnx(args.checkpoint)
            print(report)
            return 0 if report.converts else 1
        try:
            print(
                onnx_to_qbw(
                    args.checkpoint,
                    args.output,
                    fc=args.fc,
                    depthwise=args.depthwise,
                    calibration=calibration,
                    class_names=class_names,
                    verbose=True,
                )
            )
        except ConversionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    import torch

    entry = BNN_ZOO.get(args.arch)
    channels, height, width = entry.input_shape if entry else (3, 224, 224)
    num_classes = args.num_classes or (entry.num_classes if entry else 1000)
    input_size = tuple(args.input_size) if args.input_size else (height, width)
    se = None if args.se == "none" else args.se
    torch.manual_seed(args.seed)
    model = build_model(args.arch, num_classes=num_classes, se=se, padding=args.padding)
    if args.int8_scales == "trained":
        if args.random or args.calibration or args.depthwise != "int8":
            parser.error(
                "--int8-scales trained needs a CHECKPOINT, --depthwise int8 and no --calibration"
            )
        from .checkpoint import read_checkpoint
        from .fake_quant import quantize_model

        saved = read_checkpoint(args.checkpoint)
        trained = (saved.get("meta") or {}).get("int8") if isinstance(saved, dict) else None
        trained = trained or {"dw": True, "fc": None if args.fc == "fp32" else args.fc}
        quantize_model(model, dw=bool(trained.get("dw")), fc=trained.get("fc"))
    if args.random:
        print(f"{model.name}: random weights (seed {args.seed})")
        randomize_bn(model, args.seed, input_size, in_channels=channels)
    else:
        print(f"{model.name}: loading {args.checkpoint}")
        from .checkpoint import read_state_dict

        try:
            state = read_state_dict(args.checkpoint)
        except Exception as e:  # a missing file, not a state dict, not a torch file
            print(f"error: {args.checkpoint}: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        problem = state_dict_mismatch(model, state, args.arch, se)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        model.load_state_dict(state)
    model.eval()
    if args.check:
        report = check_model(
            model, input_size, opset=args.opset, in_channels=channels, onnx_path=args.onnx
        )
        print(report)
        return 0 if report.converts else 1
    try:
        report = to_qbw(
            model,
            args.output,
            input_size=input_size,
            fc=args.fc,
            depthwise=args.depthwise,
            calibration=calibration,
            class_names=class_names,
            onnx_path=args.onnx,
            opset=args.opset,
            in_channels=channels,
            verbose=True,
        )
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
