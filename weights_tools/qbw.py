"""Reader and writer of the `.qbw` file, version 1.0 (docs/format.md), in numpy only.

This module must not import torch: the runtime tests and tools use it without the `tools` extra.

    >>> from weights_tools.qbw import read_qbw, write_qbw
    >>> graph = read_qbw("model.qbw")
    >>> write_qbw("copy.qbw", graph)

A `Graph` is the file's content as plain Python: tensors (numpy arrays with a dtype code),
values (per-image NHWC activation shapes), ops (type, name, value and tensor indices, i64
attributes), the preprocessing, the class names and free-form metadata. `validate_graph` checks
every rule of docs/format.md (the same checks the engine makes at load); `write_qbw` calls it
before writing and `read_qbw` after parsing, so neither side produces or accepts a graph the
engine would refuse. The op rules that are facts (codes, counts, dtypes, attribute ranges, tensor
slots, the INT8 range) come from the op schema, weights_tools/op_schema.py, as the engine's do;
tests/test_op_schema.py checks that both accept and refuse the same graphs.

The bit contract (csrc/include/qbinfer/bit_contract.h) is encoded here once for Python:
`pack_signs` / `unpack_signs` and `pack_threshold`.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import op_schema

__all__ = [
    "MAGIC",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "HEADER_SIZE",
    "ALIGNMENT",
    "ABSENT",
    "DType",
    "OpType",
    "FCEncoding",
    "Tensor",
    "Value",
    "Op",
    "Preprocessing",
    "Graph",
    "QbwFormatError",
    "write_qbw",
    "read_qbw",
    "serialize_qbw",
    "parse_qbw",
    "validate_graph",
    "words_for_channels",
    "pack_signs",
    "unpack_signs",
    "pack_threshold",
    "avgpool2d_out_size",
]

MAGIC = b"\x89QBW\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 0
HEADER_SIZE = 64
ALIGNMENT = 64
ABSENT = 0xFFFFFFFF  # an absent optional tensor in an op's tensor list
MAX_COUNT = 1_000_000
MAX_STRING = 65535
MAX_VALUE_BYTES = 2**32  # one value of one image
MAX_METADATA_DEPTH = 64  # nesting of [ and { in metadata_json (a JSON parser recurses per level)
MAX_SIZE = op_schema.MAX_ATTR + 1  # sizes and strides in attributes are < 2^31
BITS_PER_WORD = 64

_HEADER = struct.Struct("<8sHHIQQQQQII")
assert _HEADER.size == HEADER_SIZE


class DType(IntEnum):
    F32 = 0
    I8 = 1
    BITS = 2


DTYPE_SIZE = {DType.F32: 4, DType.I8: 1, DType.BITS: 8}
DTYPE_NUMPY = {DType.F32: np.dtype("<f4"), DType.I8: np.dtype("i1"), DType.BITS: np.dtype("<u8")}


# The op codes and FC encodings of docs/format.md, from the op schema (weights_tools/op_schema.py).
OpType = IntEnum(  # type: ignore[misc]
    "OpType", [(op.name, op.code) for op in op_schema.OPS], module=__name__
)
OpType.__doc__ = 'Op codes of docs/format.md, table "Ops" (from weights_tools/op_schema.py).'
_FC = op_schema.BY_NAME["FC"]
assert isinstance(_FC.mode, op_schema.ModeByAttr)
FCEncoding = IntEnum(  # type: ignore[misc]
    "FCEncoding", [(name.upper(), value) for value, name in _FC.mode.modes], module=__name__
)
_SCHEMA_DTYPE = {op_schema.F32: DType.F32, op_schema.I8: DType.I8, op_schema.BITS: DType.BITS}


class QbwFormatError(ValueError):
    """A .qbw file or graph breaks a rule of docs/format.md; the message names the rule."""


# ---------------------------------------------------------------------------------------------
# The graph model


@dataclass
class Tensor:
    """A constant tensor. `data` has the numpy dtype of `dtype` (f32, i8, or u64 words for bits)
    and the tensor's dims as its shape."""

    name: str
    dtype: DType
    data: np.ndarray

    def __post_init__(self) -> None:
        self.dtype = DType(self.dtype)
        self.data = np.ascontiguousarray(self.data, dtype=DTYPE_NUMPY[self.dtype])

    @property
    def dims(self) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.data.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.size) * DTYPE_SIZE[self.dtype]


@dataclass
class Value:
    """An activation of one image, NHWC: (height, width, channels), f32 or bits."""

    name: str
    dtype: DType
    height: int
    width: int
    channels: int

    def __post_init__(self) -> None:
        self.dtype = DType(self.dtype)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass
class Op:
    """One op: `inputs`/`outputs` are value indices, `tensors` tensor indices (None = absent
    optional tensor), `attrs` the i64 attributes in the order of the op table."""

    type: OpType
    name: str
    inputs: List[int]
    outputs: List[int]
    tensors: List[Optional[int]] = field(default_factory=list)
    attrs: List[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.type = OpType(self.type)
        self.inputs = [int(i) for i in self.inputs]
        self.outputs = [int(i) for i in self.outputs]
        self.tensors = [None if t is None else int(t) for t in self.tensors]
        self.attrs = [int(a) for a in self.attrs]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """What the engine does to an image before the graph: resize the short side to
    `resize_short` (0 = no resize), center-crop to (crop_height, crop_width), then
    (pixel * pixel_scale - mean) / std per RGB channel."""

    resize_short: int = 256
    crop_height: int = 224
    crop_width: int = 224
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    pixel_scale: float = 1.0 / 255.0

    @classmethod
    def for_input_size(cls, height: int, width: int) -> "Preprocessing":
        """ImageNet's eval recipe scaled to the input: resize 256/224 of the crop, center crop."""
        return cls(
            resize_short=int(round(min(height, width) * 256 / 224)),
            crop_height=int(height),
            crop_width=int(width),
        )


@dataclass
class Graph:
    tensors: List[Tensor]
    values: List[Value]
    ops: List[Op]
    input_value: int
    output_value: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: List[str] = field(default_factory=list)
    producer: str = "weights_tools"
    model_name: str = ""
    metadata_json: str = ""

    def ops_by_type(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for op in self.ops:
            counts[op.type.name] = counts.get(op.type.name, 0) + 1
        return counts

    def tensor(self, op: Op, i: int) -> Optional[np.ndarray]:
        """The data of the op's i-th tensor, or None when absent."""
        t = op.tensors[i] if i < len(op.tensors) else None
        return None if t is None else self.tensors[t].data


# ---------------------------------------------------------------------------------------------
# Bit contract helpers


def words_for_channels(channels: int) -> int:
    return (int(channels) + BITS_PER_WORD - 1) // BITS_PER_WORD


def _pack_minus_one_mask(minus_one: np.ndarray) -> np.ndarray:
    """bool [..., C] (True = -1) -> u64 [..., words(C)], tail bits 0, channel c in word c//64 bit
    c%64."""
    channels = minus_one.shape[-1]
    words = words_for_channels(channels)
    padded = np.zeros(minus_one.shape[:-1] + (words * BITS_PER_WORD,), dtype=bool)
    padded[..., :channels] = minus_one
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def pack_signs(pm1: np.ndarray) -> np.ndarray:
    """Pack an array of ±1 along its last axis (bit 1 = -1). Anything but exactly ±1 is an
    error: the caller decides how it binarizes."""
    pm1 = np.asarray(pm1)
    if not np.all((pm1 == 1) | (pm1 == -1)):
        raise ValueError("pack_signs: values must be exactly +1 or -1")
    return _pack_minus_one_mask(pm1 == -1)


def pack_threshold(x: np.ndarray, threshold: Union[np.ndarray, float] = 0.0) -> np.ndarray:
    """The BITPACK rule on f32: bit = !(x >= threshold), along the last axis."""
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(threshold, dtype=np.float32)
    return _pack_minus_one_mask(~(x >= t))


def unpack_signs(words: np.ndarray, channels: int, dtype=np.float32) -> np.ndarray:
    """u64 [..., words] -> ±1 [..., channels] (bit 1 = -1)."""
    words = np.ascontiguousarray(words, dtype="<u8")
    if words.shape[-1] != words_for_channels(channels):
        raise ValueError(f"unpack_signs: {words.shape[-1]} words cannot hold {channels} channels")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :channels]
    return (1 - 2 * bits.astype(np.int8)).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Validation (docs/format.md, "Tensor rules", "Graph rules" and the op table)


def _fail(msg: str) -> None:
    raise QbwFormatError(msg)


def _op_label(index: int, op: Op) -> str:
    return f"op {index} ({op.type.name} {op.name!r})"


# (n_inputs or None for >= 1, n_tensors, n_attrs), from the schema.
_ARITY: Dict[OpType, Tuple[Optional[int], int, int]] = {
    OpType(op.code): (op.n_inputs, len(op.slots), len(op.attrs)) for op in op_schema.OPS
}


def full_attrs(op: "Op") -> List[int]:
    """The op's attributes with the defaults of those its record omits (an attribute added to
    the op after files were written, such as DWCONV3X3's dilation, may be left out: see
    op_schema.Attr.default)."""
    spec = op_schema.BY_CODE[int(op.type)]
    tail = [a.default for a in spec.attrs[len(op.attrs) :]]
    assert all(d is not None for d in tail), (spec.name, len(op.attrs))
    return list(op.attrs) + [int(d) for d in tail if d is not None]


def _attr_range(op_name: str, attr: str) -> range:
    a = op_schema.BY_NAME[op_name].attrs[op_schema.BY_NAME[op_name].attr_index(attr)]
    assert isinstance(a.lo, int) and isinstance(a.hi, int)
    return range(a.lo, a.hi + 1)


# The (stride_h, stride_w) pairs DWCONV3X3 takes.
DW_STRIDES = tuple(
    (sh, sw)
    for sh in _attr_range("DWCONV3X3", "stride_h")
    for sw in _attr_range("DWCONV3X3", "stride_w")
)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def avgpool2d_out_size(
    size: int, pad_a: int, pad_b: int, kernel: int, stride: int, ceil: bool
) -> Optional[int]:
    """AVGPOOL2D's output size along one axis (docs/format.md), PyTorch's rule: the window count
    rounded down (floor mode) or up (ceil mode), and in ceil mode no last window that starts at
    or past the input's end (it would cover padding only). None if the window does not fit."""
    span = size + pad_a + pad_b - kernel
    if span < 0:
        return None
    out = (_ceil_div(span, stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad_a:
        out -= 1
    return out


def validate_graph(graph: Graph) -> None:
    """Check every rule of docs/format.md; raise QbwFormatError naming the first violation."""
    if len(graph.producer.encode()) > MAX_STRING or len(graph.model_name.encode()) > MAX_STRING:
        _fail("producer or model_name longer than 65535 bytes")
    for counted, what in ((graph.tensors, "tensors"), (graph.values, "values")):
        if len(counted) > MAX_COUNT:
            _fail(f"too many {what}: {len(counted)} > {MAX_COUNT}")
    if not 1 <= len(graph.ops) <= MAX_COUNT:
        _fail(f"n_ops must be in [1, {MAX_COUNT}], got {len(graph.ops)}")

    for i, t in enumerate(graph.tensors):
        if not 1 <= len(t.dims) <= 4:
            _fail(f"tensor {i} ({t.name!r}): ndim {len(t.dims)} not in 1..4")
        if any(d < 1 for d in t.dims):
            _fail(f"tensor {i} ({t.name!r}): dims {t.dims} must each be >= 1")
    for i, v in enumerate(graph.values):
        if v.dtype not in (DType.F32, DType.BITS):
            _fail(f"value {i} ({v.name!r}): dtype {v.dtype.name} must be f32 or bits")
        if min(v.height, v.width, v.channels) < 1:
            _fail(f"value {i} ({v.name!r}): shape {v.shape} must be >= 1 everywhere")

    n_values = len(graph.values)
    for which, idx in (("input_value", graph.input_value), ("output_value", graph.output_value)):
        if not 0 <= idx < n_values:
            _fail(f"{which} {idx} out of range (n_values {n_values})")
    inp, out = graph.values[graph.input_value], graph.values[graph.output_value]
    if inp.dtype != DType.F32:
        _fail(f"input value {inp.name!r} must be f32")
    if out.dtype != DType.F32:
        _fail(f"output value {out.name!r} must be f32, got {out.dtype.name} {out.shape}")

    produced = [False] * n_values
    produced[graph.input_value] = True
    for index, op in enumerate(graph.ops):
        label = _op_label(index, op)
        for v in op.inputs + op.outputs:
            if not 0 <= v < n_values:
                _fail(f"{label}: value index {v} out of range (n_values {n_values})")
        for t in op.tensors:
            if t is not None and not 0 <= t < len(graph.tensors):
                _fail(f"{label}: tensor index {t} out of range (n_tensors {len(graph.tensors)})")
        for v in op.inputs:
            if not produced[v]:
                _fail(f"{label}: reads value {v} ({graph.values[v].name!r}) before it is produced")
        for v in op.outputs:
            if produced[v]:
                _fail(
                    f"{label}: value {v} ({graph.values[v].name!r}) is produced twice "
                    f"(or is the input)"
                )
            produced[v] = True
        _validate_op(graph, index, op)
    if not produced[graph.output_value] or graph.output_value == graph.input_value:
        _fail(f"output value {out.name!r} is never produced")

    for i, v in enumerate(graph.values):
        per_image = (
            v.height
            * v.width
            * (v.channels * 4 if v.dtype == DType.F32 else words_for_channels(v.channels) * 8)
        )
        if per_image > MAX_VALUE_BYTES:
            _fail(f"value {i} ({v.name!r}): {per_image} bytes per image exceeds 2^32")
    if graph.class_names and len(graph.class_names) != out.channels:
        _fail(f"n_classes {len(graph.class_names)} must be 0 or the output channels {out.channels}")
    for name in graph.class_names:
        if len(name.encode()) > MAX_STRING:
            _fail("a class name is longer than 65535 bytes")
    too_deep = _nesting_exceeds(graph.metadata_json, MAX_METADATA_DEPTH)
    if too_deep is not None:
        _fail(
            f"metadata_json nests [ and {{ deeper than the limit of {MAX_METADATA_DEPTH} levels "
            f"(level {MAX_METADATA_DEPTH + 1} opens at character {too_deep} of the metadata)"
        )
    p = graph.preprocessing
    if (p.crop_height, p.crop_width) != (inp.height, inp.width):
        _fail(
            f"preprocessing crop {p.crop_height}x{p.crop_width} must equal the input value's "
            f"height x width {inp.height}x{inp.width}"
        )
    if p.resize_short != 0 and p.resize_short < min(p.crop_height, p.crop_width):
        _fail(
            f"preprocessing resize_short {p.resize_short} must be 0 or >= the crop's short "
            f"side {min(p.crop_height, p.crop_width)}"
        )
    if len(p.mean) != 3 or len(p.std) != 3:
        _fail(f"preprocessing needs 3 means and 3 stds, got mean {p.mean} std {p.std}")
    mean, std, scale = (np.asarray(v, dtype=np.float32) for v in (p.mean, p.std, p.pixel_scale))
    if not (
        np.all(np.isfinite(mean))
        and np.all(np.isfinite(std))
        and np.all(std > 0)
        and np.isfinite(scale)
        and scale > 0
    ):
        _fail(
            f"preprocessing: mean must be finite, std and pixel_scale finite and > 0; got "
            f"mean {p.mean}, std {p.std}, pixel_scale {p.pixel_scale}"
        )


def _nesting_exceeds(text: str, limit: int) -> Optional[int]:
    """Where the nesting of [ and { in `text` first exceeds `limit` (None if never), brackets
    inside JSON strings not counted: the engine's rule (csrc/format/qbw_file.cc), on text that
    need not be valid JSON."""
    depth = 0
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return i
        elif ch in "]}" and depth > 0:
            depth -= 1
    return None


def _eval_dim(expr: str, env: Dict[str, int]) -> int:
    """A dim of the schema ("multiplier*C", "words(C)", "9") with the op's symbols bound."""
    product = 1
    for factor in expr.split("*"):
        if factor.isdigit():
            product *= int(factor)
        elif factor.startswith("words("):
            product *= words_for_channels(env[factor[len("words(") : -1]])
        else:
            product *= env[factor]
    return product


def _eval_bound(bound: op_schema.Bound, env: Dict[str, int]) -> int:
    if isinstance(bound, int):
        return bound
    symbol, _, minus = bound.partition(" - ")
    return env[symbol] - (int(minus) if minus else 0)


def _mode_phrase(spec: op_schema.OpSchema, mode: Optional[str]) -> str:
    """Why a slot must be absent: "with fp32 encoding", "with f32 weights"."""
    if isinstance(spec.mode, op_schema.ModeByAttr):
        return f"with {mode} {spec.mode.attr}"
    if isinstance(spec.mode, op_schema.ModeBySlotDtype):
        return f"with {mode} {spec.slots[spec.mode.slot].role}s"
    return ""


def _select_mode(graph: Graph, spec: op_schema.OpSchema, op: Op) -> Optional[str]:
    """The op's mode (None for an op without modes). A slot dtype that names no mode selects the
    first mode, whose form then reports the mismatch (as the engine does)."""
    if isinstance(spec.mode, op_schema.ModeByAttr):
        value = op.attrs[spec.attr_index(spec.mode.attr)]
        return dict(spec.mode.modes)[value]  # the attribute is range-checked first
    if isinstance(spec.mode, op_schema.ModeBySlotDtype):
        t = op.tensors[spec.mode.slot]
        by_dtype = {_SCHEMA_DTYPE[d]: m for d, m in spec.mode.modes}
        first = spec.mode.modes[0][1]
        return first if t is None else by_dtype.get(graph.tensors[t].dtype, first)
    return None


def _validate_op(graph: Graph, index: int, op: Op) -> None:
    """The schema's rules (counts, dtypes, attribute ranges, tensor slots), then the shape
    formulas of docs/format.md, in the engine's order (csrc/engine/ops.cc)."""
    label = _op_label(index, op)
    spec = op_schema.BY_CODE[int(op.type)]
    n_in, n_t, n_a = _ARITY[op.type]
    if n_in is None:
        if len(op.inputs) < 1:
            _fail(f"{label}: needs at least one input")
    elif len(op.inputs) != n_in:
        _fail(f"{label}: needs {n_in} input(s), has {len(op.inputs)}")
    if len(op.outputs) != 1:
        _fail(f"{label}: needs 1 output, has {len(op.outputs)}")
    if len(op.tensors) != n_t:
        _fail(f"{label}: needs {n_t} tensor slot(s), has {len(op.tensors)}")
    if not spec.n_min_attrs <= len(op.attrs) <= n_a:
        want = str(n_a) if spec.n_min_attrs == n_a else f"{spec.n_min_attrs} to {n_a}"
        _fail(f"{label}: needs {want} attribute(s), has {len(op.attrs)}")

    vals = graph.values
    ins = [vals[i] for i in op.inputs]
    out = vals[op.outputs[0]]
    for k, v in enumerate(ins):
        want = _SCHEMA_DTYPE[spec.input_dtype(k)]
        if v.dtype != want:
            _fail(f"{label}: input {k} {v.name!r} is {v.dtype.name}, expected {want.name}")
    want = _SCHEMA_DTYPE[spec.output.dtype]
    if out.dtype != want:
        _fail(f"{label}: output {out.name!r} is {out.dtype.name}, expected {want.name}")

    x = ins[0]
    H, W, C = x.shape
    env: Dict[str, int] = {"H": H, "W": W, "C": C, "Co": out.channels}
    attrs = full_attrs(op)
    for attr, v in zip(spec.attrs, attrs):
        lo, hi = _eval_bound(attr.lo, env), _eval_bound(attr.hi, env)
        why = f" ({attr.why})" if attr.why else ""
        if not lo <= v <= hi:
            _fail(f"{label}: attribute {attr.name} {v} is not in [{lo}, {hi}]{why}")
        if attr.allowed is not None and v not in attr.allowed:
            _fail(f"{label}: attribute {attr.name} {v} is not one of {attr.allowed}{why}")
        env[attr.name] = v
    mode = _select_mode(graph, spec, op)

    def value_is(v: Value, what: str, shape: Tuple[int, int, int]) -> None:
        if v.shape != tuple(shape):
            _fail(f"{label}: {what} {v.name!r} must be {tuple(shape)}, got {v.shape}")

    a = attrs
    t = op.type
    if t == OpType.CONV2D:
        kh, kw, sh, sw, pt, pl, pb, pr, _ = a
        if H + pt + pb < kh or W + pl + pr < kw:
            _fail(f"{label}: kernel {kh}x{kw} larger than the padded input {x.shape}")
        ho, wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
        value_is(out, "output", (ho, wo, out.channels))
    elif t == OpType.DWCONV3X3:
        sh, sw, k, d = a
        if d > 1 and (sh, sw) != (1, 1):
            _fail(f"{label}: dilation {d} needs stride 1x1, got {sh}x{sw}")
        value_is(out, "output", (_ceil_div(H, sh), _ceil_div(W, sw), k * C))
    elif t == OpType.BITPACK:
        value_is(out, "output", x.shape)
    elif t == OpType.BCONV2D:
        k, _ = a
        value_is(out, "output", (H, W, out.channels))
        if k * k * C > 2**31 - 1:
            _fail(f"{label}: k*k*Ci = {k * k * C} overflows the int32 dot")
    elif t in (OpType.AFFINE, OpType.PRELU, OpType.RELU, OpType.SIGMOID):
        value_is(out, "output", x.shape)
    elif t == OpType.ADD:
        value_is(ins[1], "input b", x.shape)
        value_is(out, "output", x.shape)
    elif t == OpType.MUL_CHANNEL:
        value_is(ins[1], "scale input", (1, 1, C))
        value_is(out, "output", x.shape)
    elif t == OpType.AVGPOOL:
        kh, kw, sh, sw = a
        ho, wo = _ceil_div(H - kh, sh) + 1, _ceil_div(W - kw, sw) + 1
        if (ho - 1) * sh >= H or (wo - 1) * sw >= W:
            _fail(f"{label}: stride {sh}x{sw} > kernel {kh}x{kw} leaves an empty last window")
        value_is(out, "output", (ho, wo, C))
    elif t == OpType.GLOBAL_AVGPOOL:
        value_is(out, "output", (1, 1, C))
    elif t == OpType.CONCAT:
        for j, v in enumerate(ins):
            value_is(v, f"input {j}", (H, W, v.channels))
        value_is(out, "output", (H, W, sum(v.channels for v in ins)))
    elif t == OpType.FC:
        # (H, W, C) read as one vector of H*W*C features; bitplane8 packs C per plane row,
        # binary C signs per weight row
        value_is(out, "output", (1, 1, out.channels))
        if mode in ("bitplane8", "binary") and (H, W) != (1, 1):
            _fail(
                f"{label}: input {x.name!r} has shape {x.shape}, but {mode} weights need a "
                f"(1, 1, C) input"
            )
        if H * W * C > 2**31 - 1:
            _fail(f"{label}: input {x.name!r} of shape {x.shape} has more than 2^31 - 1 features")
    elif t == OpType.MAXPOOL:
        kh, kw, sh, sw, pt, pl, pb, pr = a
        if H + pt + pb < kh or W + pl + pr < kw:
            _fail(f"{label}: window {kh}x{kw} larger than the padded input {x.shape}")
        ho, wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
        value_is(out, "output", (ho, wo, C))
    elif t == OpType.CLIP:
        value_is(out, "output", x.shape)
    elif t == OpType.BFC:
        # (H, W, C) bits read as one vector of H*W pixels of words(C) words
        value_is(out, "output", (1, 1, out.channels))
        if H * W * C > 2**31 - 1:
            _fail(f"{label}: H*W*C = {H * W * C} overflows the int32 dot")
        if H * W > 1 and C % BITS_PER_WORD and H * W * words_for_channels(C) * 64 > 2**24:
            _fail(
                f"{label}: input {x.name!r} of shape {x.shape}: an H x W map whose channels are "
                f"not a multiple of 64 may hold at most 2^24 bit positions (64*H*W*words(C))"
            )
    elif t == OpType.BCONV2D_GENERAL:
        kh, kw, sh, sw, pt, pl, pb, pr, _ = a
        if H + pt + pb < kh or W + pl + pr < kw:
            _fail(f"{label}: kernel {kh}x{kw} larger than the padded input {x.shape}")
        ho, wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
        value_is(out, "output", (ho, wo, out.channels))
        if kh * kw * C > 2**31 - 1:
            _fail(f"{label}: kh*kw*Ci = {kh * kw * C} overflows the int32 dot")
    elif t == OpType.SOFTMAX:
        value_is(out, "output", x.shape)
    elif t == OpType.RESIZE:
        oh, ow, _, _ = a
        value_is(out, "output", (oh, ow, C))
    elif t == OpType.AVGPOOL2D:
        kh, kw, sh, sw, pt, pl, pb, pr, ceil, _ = a
        ho = avgpool2d_out_size(H, pt, pb, kh, sh, ceil == 1)
        wo = avgpool2d_out_size(W, pl, pr, kw, sw, ceil == 1)
        if ho is None or wo is None:
            _fail(f"{label}: window {kh}x{kw} larger than the padded input {x.shape}")
        value_is(out, "output", (ho, wo, C))
        if kh * kw > 2**24:
            _fail(f"{label}: window {kh}x{kw} has more than 2^24 pixels (divisor not exact)")
    _validate_slots(graph, label, spec, op, mode, env)
    if t == OpType.CLIP:
        lo, hi = (float(v) for v in graph.tensors[op.tensors[0]].data)
        if np.isnan(lo) or np.isnan(hi) or lo > hi:
            _fail(f"{label}: bounds [{lo}, {hi}] must be two numbers with lo <= hi")
    if t == OpType.DWCONV3X3 and mode == "i8":
        s_in = graph.tensors[op.tensors[5]].data[0]
        if not (np.isfinite(s_in) and s_in >= 0):
            _fail(f"{label}: input_scale {s_in} must be finite and >= 0")
        if a[3] > 1:
            _fail(f"{label}: dilation {a[3]} needs f32 weights (no INT8 dilated kernel)")
    if t == OpType.RESIZE:
        ratio = graph.tensors[op.tensors[0]].data
        for axis, r in zip(("height", "width"), ratio):
            if not (np.isfinite(r) and r >= 0):
                _fail(f"{label}: ratio {axis} {r} must be finite and >= 0")


def _validate_slots(
    graph: Graph,
    label: str,
    spec: op_schema.OpSchema,
    op: Op,
    mode: Optional[str],
    env: Dict[str, int],
) -> None:
    """Each tensor slot against its form in the op's mode (docs/format.md, the op table)."""
    for i, slot in enumerate(spec.slots):
        form = slot.form(mode)
        t = op.tensors[i]
        if form is None:
            if t is not None:
                _fail(
                    f"{label}: tensor T{i} ({slot.role}) must be absent {_mode_phrase(spec, mode)}"
                )
            continue
        if t is None:
            if slot.presence != op_schema.OPTIONAL:
                _fail(f"{label}: tensor T{i} ({slot.role}) is required")
            continue
        tensor = graph.tensors[t]
        dtype = _SCHEMA_DTYPE[form.dtype]
        dims = tuple(_eval_dim(d, env) for d in form.dims)
        if tensor.dtype != dtype or tensor.dims != dims:
            _fail(
                f"{label}: tensor T{i} ({slot.role}) {tensor.name!r} must be {dtype.name} {dims}, "
                f"got {tensor.dtype.name} {tensor.dims}"
            )
        if dtype == DType.I8:
            lo, hi = op_schema.INT8_MIN, op_schema.INT8_MAX
            bad = np.flatnonzero((tensor.data < lo) | (tensor.data > hi))
            if bad.size:
                _fail(
                    f"{label}: tensor T{i} ({slot.role}) {tensor.name!r} holds "
                    f"{int(tensor.data.flat[bad[0]])} at element {int(bad[0])} (symmetric INT8 "
                    f"codes are in [{lo}, {hi}])"
                )
        if form.tail_bits_of is not None:
            channels = _eval_dim(form.tail_bits_of, env)
            tail = channels % BITS_PER_WORD
            # rows of words(channels) words (a BFC weight row holds H*W of them)
            rows = tensor.data.reshape(-1, words_for_channels(channels))
            if tail and np.any(rows[:, -1] >> np.uint64(tail)):
                _fail(
                    f"{label}: tensor T{i} ({slot.role}) tail bits past channel {channels} must be 0"
                )


# ---------------------------------------------------------------------------------------------
# Writer


class _Writer:
    def __init__(self) -> None:
        self.parts: List[bytes] = []

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def u64(self, v: int) -> None:
        self.parts.append(struct.pack("<Q", v))

    def i64s(self, vs: Sequence[int]) -> None:
        self.parts.append(struct.pack(f"<{len(vs)}q", *vs))

    def u32s(self, vs: Sequence[int]) -> None:
        self.u32(len(vs))
        self.parts.append(struct.pack(f"<{len(vs)}I", *vs))

    def f32s(self, vs: Sequence[float]) -> None:
        self.parts.append(struct.pack(f"<{len(vs)}f", *vs))

    def string(self, s: str) -> None:
        b = s.encode("utf-8")
        if len(b) > MAX_STRING:
            raise QbwFormatError(f"string of {len(b)} bytes is longer than {MAX_STRING}")
        self.u32(len(b))
        self.parts.append(b)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def serialize_qbw(graph: Graph, validate: bool = True) -> bytes:
    """The file's bytes for `graph`, validated first unless `validate` is False (tests write
    graphs that break the rules with it, to see that the engine refuses them)."""
    if validate:
        validate_graph(graph)
    offsets = []
    data_size = 0
    for t in graph.tensors:
        data_size = _align(data_size)
        offsets.append(data_size)
        data_size += t.nbytes

    w = _Writer()
    w.string(graph.producer)
    w.string(graph.model_name)
    w.u32(len(graph.tensors))
    for t, off in zip(graph.tensors, offsets):
        w.string(t.name)
        w.u32(int(t.dtype))
        w.u32(len(t.dims))
        for d in t.dims:
            w.u64(d)
        w.u64(off)
        w.u64(t.nbytes)
    w.u32(len(graph.values))
    for v in graph.values:
        w.string(v.name)
        w.u32(int(v.dtype))
        w.u32(v.height)
        w.u32(v.width)
        w.u32(v.channels)
    w.u32(graph.input_value)
    w.u32(graph.output_value)
    w.u32(len(graph.ops))
    for op in graph.ops:
        w.u32(int(op.type))
        w.string(op.name)
        w.u32s(op.inputs)
        w.u32s(op.outputs)
        w.u32s([ABSENT if t is None else t for t in op.tensors])
        w.u32(len(op.attrs))
        w.i64s(op.attrs)
    p = graph.preprocessing
    w.u32(p.resize_short)
    w.u32(p.crop_height)
    w.u32(p.crop_width)
    w.f32s(p.mean)
    w.f32s(p.std)
    w.f32s([p.pixel_scale])
    w.u32(len(graph.class_names))
    for name in graph.class_names:
        w.string(name)
    w.string(graph.metadata_json)
    meta = w.bytes()

    data_offset = _align(HEADER_SIZE + len(meta))
    file_size = data_offset + data_size
    body = bytearray(file_size - HEADER_SIZE)
    body[: len(meta)] = meta
    for t, off in zip(graph.tensors, offsets):
        start = data_offset - HEADER_SIZE + off
        body[start : start + t.nbytes] = t.data.tobytes()

    header = _HEADER.pack(
        MAGIC,
        VERSION_MAJOR,
        VERSION_MINOR,
        HEADER_SIZE,
        file_size,
        HEADER_SIZE,
        len(meta),
        data_offset,
        data_size,
        0,
        0,
    )
    crc = zlib.crc32(bytes(body), zlib.crc32(header[:56])) & 0xFFFFFFFF
    header = header[:56] + struct.pack("<II", crc, 0)
    return header + bytes(body)


def write_qbw(path: Union[str, os.PathLike], graph: Graph, validate: bool = True) -> int:
    """Write `graph` to `path` (atomically: a temporary file then a rename); returns the size.
    `validate=False` skips validate_graph (see serialize_qbw)."""
    blob = serialize_qbw(graph, validate=validate)
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return len(blob)


# ---------------------------------------------------------------------------------------------
# Reader


class _Cursor:
    """Bounds-checked reads over the meta section."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            _fail(
                f"meta section truncated reading {what}: need {n} bytes, {self.remaining()} remain"
            )
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def f32s(self, n: int, what: str) -> Tuple[float, ...]:
        return struct.unpack(f"<{n}f", self.take(4 * n, what))

    def count(self, what: str, item_min_bytes: int, limit: int = MAX_COUNT) -> int:
        n = self.u32(what)
        if n > limit:
            _fail(f"{what} = {n} exceeds the limit {limit}")
        if n * item_min_bytes > self.remaining():
            _fail(f"{what} = {n} cannot fit in the {self.remaining()} bytes that remain")
        return n

    def string(self, what: str) -> str:
        n = self.u32(what + " length")
        if n > MAX_STRING:
            _fail(f"{what}: string length {n} exceeds {MAX_STRING}")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise QbwFormatError(f"{what}: not UTF-8 ({e})") from None


def parse_qbw(blob: bytes) -> Graph:
    """Parse and validate the bytes of a .qbw file."""
    if len(blob) < HEADER_SIZE:
        _fail(f"file of {len(blob)} bytes is shorter than the {HEADER_SIZE}-byte header")
    (
        magic,
        major,
        minor,
        header_size,
        file_size,
        meta_offset,
        meta_size,
        data_offset,
        data_size,
        checksum,
        reserved,
    ) = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        _fail(f"not a .qbw file (magic {magic!r})")
    if major != VERSION_MAJOR:
        newer = "newer than" if major > VERSION_MAJOR else "not a version"
        _fail(f"file format {major}.{minor} is {newer} this qbinfer reads ({VERSION_MAJOR}.x)")
    if header_size != HEADER_SIZE:
        _fail(f"header_size {header_size} != {HEADER_SIZE}")
    if file_size != len(blob):
        _fail(f"file_size field {file_size} != real size {len(blob)} (truncated or padded file)")
    if meta_offset != HEADER_SIZE:
        _fail(f"meta_offset {meta_offset} != {HEADER_SIZE}")
    if data_offset % ALIGNMENT:
        _fail(f"data_offset {data_offset} is not a multiple of {ALIGNMENT}")
    # Python integers do not overflow; the limits below are what the u64 sums must satisfy.
    if meta_offset + meta_size > data_offset:
        _fail(f"meta section [{meta_offset}, +{meta_size}) overlaps data_offset {data_offset}")
    if data_offset + data_size != file_size:
        _fail(f"data_offset {data_offset} + data_size {data_size} != file_size {file_size}")
    if reserved != 0:
        _fail(f"reserved header field is {reserved}, must be 0")
    crc = zlib.crc32(blob[HEADER_SIZE:], zlib.crc32(blob[:56])) & 0xFFFFFFFF
    if crc != checksum:
        _fail(
            f"checksum mismatch: header says {checksum:#010x}, content has {crc:#010x} "
            f"(damaged file)"
        )

    cur = _Cursor(blob[meta_offset : meta_offset + meta_size])
    producer = cur.string("producer")
    model_name = cur.string("model_name")

    data = memoryview(blob)[data_offset : data_offset + data_size]
    tensors: List[Tensor] = []
    spans: List[Tuple[int, int, int]] = []
    n_tensors = cur.count("n_tensors", 4 + 4 + 4 + 8 + 8 + 8)
    for i in range(n_tensors):
        name = cur.string(f"tensor {i} name")
        dtype_code = cur.u32(f"tensor {i} dtype")
        if dtype_code not in DTYPE_SIZE.keys():
            _fail(f"tensor {i} ({name!r}): unknown dtype {dtype_code}")
        dtype = DType(dtype_code)
        ndim = cur.u32(f"tensor {i} ndim")
        if not 1 <= ndim <= 4:
            _fail(f"tensor {i} ({name!r}): ndim {ndim} not in 1..4")
        dims = tuple(cur.u64(f"tensor {i} dims") for _ in range(ndim))
        offset = cur.u64(f"tensor {i} offset")
        nbytes = cur.u64(f"tensor {i} nbytes")
        if any(d < 1 for d in dims):
            _fail(f"tensor {i} ({name!r}): dims {dims} must each be >= 1")
        expect = int(np.prod(dims, dtype=object)) * DTYPE_SIZE[dtype]
        if nbytes != expect:
            _fail(f"tensor {i} ({name!r}): nbytes {nbytes} != product{dims} * {DTYPE_SIZE[dtype]}")
        if offset % ALIGNMENT:
            _fail(f"tensor {i} ({name!r}): offset {offset} is not a multiple of {ALIGNMENT}")
        if offset + nbytes > data_size:
            _fail(f"tensor {i} ({name!r}): [{offset}, +{nbytes}) runs past data_size {data_size}")
        spans.append((offset, offset + nbytes, i))
        arr = np.frombuffer(data[offset : offset + nbytes], dtype=DTYPE_NUMPY[dtype]).reshape(dims)
        tensors.append(Tensor(name, dtype, arr.copy()))
    spans.sort()
    for (_, e0, i0), (s1, _, i1) in zip(spans, spans[1:]):
        if s1 < e0:
            _fail(f"tensors {i0} and {i1} overlap in the data section")

    values: List[Value] = []
    n_values = cur.count("n_values", 4 + 4 * 4)
    for i in range(n_values):
        name = cur.string(f"value {i} name")
        dtype_code = cur.u32(f"value {i} dtype")
        h, w, c = (
            cur.u32(f"value {i} height"),
            cur.u32(f"value {i} width"),
            cur.u32(f"value {i} channels"),
        )
        if dtype_code not in (DType.F32, DType.BITS):
            _fail(f"value {i} ({name!r}): dtype {dtype_code} must be 0 (f32) or 2 (bits)")
        values.append(Value(name, DType(dtype_code), h, w, c))
    input_value = cur.u32("input_value")
    output_value = cur.u32("output_value")

    ops: List[Op] = []
    n_ops = cur.count("n_ops", 4 + 4 + 4 * 4)
    if n_ops < 1:
        _fail("n_ops must be >= 1")
    for i in range(n_ops):
        code = cur.u32(f"op {i} type")
        name = cur.string(f"op {i} name")
        if code not in OpType._value2member_map_:
            _fail(f"op {i} ({name!r}): unknown op code {code}")
        lists = []
        for what in ("inputs", "outputs", "tensors"):
            n = cur.count(f"op {i} n_{what}", 4)
            lists.append(list(struct.unpack(f"<{n}I", cur.take(4 * n, f"op {i} {what}"))))
        n_attrs = cur.count(f"op {i} n_attrs", 8)
        attrs = list(struct.unpack(f"<{n_attrs}q", cur.take(8 * n_attrs, f"op {i} attrs")))
        tensor_ids = [None if t == ABSENT else t for t in lists[2]]
        ops.append(Op(OpType(code), name, lists[0], lists[1], tensor_ids, attrs))

    resize_short = cur.u32("resize_short")
    crop_h = cur.u32("crop_height")
    crop_w = cur.u32("crop_width")
    mean = cur.f32s(3, "mean")
    std = cur.f32s(3, "std")
    (pixel_scale,) = cur.f32s(1, "pixel_scale")
    n_classes = cur.count("n_classes", 4)
    class_names = [cur.string(f"class name {i}") for i in range(n_classes)]
    metadata_json = cur.string("metadata_json")
    if cur.remaining() and minor == 0:
        _fail(f"{cur.remaining()} unexpected bytes after the meta section's last field")

    graph = Graph(
        tensors=tensors,
        values=values,
        ops=ops,
        input_value=input_value,
        output_value=output_value,
        preprocessing=Preprocessing(
            resize_short, crop_h, crop_w, tuple(mean), tuple(std), pixel_scale
        ),
        class_names=class_names,
        producer=producer,
        model_name=model_name,
        metadata_json=metadata_json,
    )
    validate_graph(graph)
    return graph


def read_qbw(path: Union[str, os.PathLike]) -> Graph:
    """Read and validate a .qbw file; QbwFormatError names what is wrong."""
    with open(path, "rb") as f:
        return parse_qbw(f.read())
