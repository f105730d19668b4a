"""The op schema of the `.qbw` format: every op's code, inputs, attributes and tensor slots, once.

This module is the single source of the facts that the C++ loader (csrc/engine/ops.cc), the
Python writer and validator (weights_tools/qbw.py) and the op table of docs/format.md state:
`scripts/gen_op_schema.py` writes csrc/engine/op_schema.inc and the table of docs/format.md from
it, and qbw.py reads it at import. Plain data only (no numpy, no torch), so the generator runs
before anything is built.

Symbols. Shapes and bounds are written with these names, per op:
    H, W, C      the height, width and channels of input 0
    Co           the channels of the output
    <attr name>  the value of one of the op's attributes (e.g. kernel_h, multiplier)
A dim is a product of factors, each an integer, a symbol, or `words(symbol)` = ceil(symbol / 64),
e.g. "multiplier*C" or "words(C)". An attribute bound is an integer, a symbol (H or W, or an
earlier attribute) or "symbol - integer" (e.g. "kernel_h - 1").

Rules that are formulas over several values (output shapes, the int32 dot bound of BCONV2D, the
ceil-mode window rule of AVGPOOL, DWCONV3X3's input_scale) are stated here as `rules` text for
the docs, and implemented once in each of ops.cc and qbw.py; tests/test_op_schema.py checks that
both sides accept and refuse the same graphs.

Adding an op (CONTRIBUTING.md, "Add an op", has the whole list): an OpSchema entry here with the
next code; `python scripts/gen_op_schema.py`; its build function in csrc/engine/ops.cc (kBuilders)
and its shape rules in qbw.py's _validate_op; a base case in tests/test_op_schema.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

F32 = "f32"
I8 = "i8"
BITS = "bits"
DTYPE_CODES: Dict[str, int] = {F32: 0, I8: 1, BITS: 2}

# Symmetric INT8 codes: SIMD kernels negate and widen them assuming |q| <= 127, so -128 is
# refused by both readers (and never written by the quantizers).
INT8_MIN = -127
INT8_MAX = 127

# Sizes and strides in attributes are < 2^31: far beyond any real model, small enough that no
# size arithmetic on them can overflow 64 bits.
MAX_ATTR = 2**31 - 1

Bound = Union[int, str]


@dataclass(frozen=True)
class Input:
    """An input value of the op: its dtype and its shape, as text for the docs."""

    dtype: str
    shape: str


@dataclass(frozen=True)
class Attr:
    """One i64 attribute: allowed range [lo, hi] (bounds may name H, W or an earlier attribute),
    optionally a set of allowed values within it, and the meaning of named values."""

    name: str
    lo: Bound
    hi: Bound
    meaning: str
    allowed: Optional[Tuple[int, ...]] = None
    values: Tuple[Tuple[int, str], ...] = ()  # (value, meaning) for enumerations
    why: str = ""  # why the range is what it is (appended to the error message)
    # An attribute added to an op after files were written: a record may end before it (and
    # before every later one, which must all have defaults), and then it has this value. Writers
    # omit it when it has its default, so files that do not use it stay what they were, and
    # readers that predate it still read them.
    default: Optional[int] = None


@dataclass(frozen=True)
class Form:
    """What a tensor slot holds in one mode of the op (mode None = every mode)."""

    dtype: str
    dims: Tuple[str, ...]
    mode: Optional[str] = None
    tail_bits_of: Optional[str] = None  # bits tensors: bits past this many channels must be 0


REQUIRED = "required"
OPTIONAL = "optional"


@dataclass(frozen=True)
class Slot:
    """A tensor slot. In a mode for which it has no form it must be absent."""

    role: str
    forms: Tuple[Form, ...]
    presence: str = REQUIRED  # in the modes it has a form for

    def form(self, mode: Optional[str]) -> Optional[Form]:
        for f in self.forms:
            if f.mode is None or f.mode == mode:
                return f
        return None


@dataclass(frozen=True)
class ModeByAttr:
    """The op's mode is the meaning of an attribute's value (e.g. FC's encoding)."""

    attr: str
    modes: Tuple[Tuple[int, str], ...]


@dataclass(frozen=True)
class ModeBySlotDtype:
    """The op's mode is the dtype of a tensor slot (e.g. DWCONV3X3's weight: f32 or i8). A dtype
    that names no mode selects the first mode (whose dtype check then fails)."""

    slot: int
    modes: Tuple[Tuple[str, str], ...]  # (dtype, mode)


@dataclass(frozen=True)
class OpSchema:
    code: int
    name: str
    cpp_enum: str  # the C++ enumerator of qbinfer::OpType
    inputs: Tuple[Input, ...]
    output: Input
    computes: str
    attrs: Tuple[Attr, ...] = ()
    slots: Tuple[Slot, ...] = ()
    variadic: bool = False  # inputs[0] repeated, at least once
    mode: Union[ModeByAttr, ModeBySlotDtype, None] = None
    rules: Tuple[str, ...] = field(default=())  # formula rules, implemented in ops.cc and qbw.py

    @property
    def n_inputs(self) -> Optional[int]:
        """The exact input count, or None for "one or more"."""
        return None if self.variadic else len(self.inputs)

    @property
    def n_min_attrs(self) -> int:
        """The fewest attributes a record may hold: the trailing ones with defaults may be
        omitted."""
        n = len(self.attrs)
        while n > 0 and self.attrs[n - 1].default is not None:
            n -= 1
        return n

    def input_dtype(self, k: int) -> str:
        return self.inputs[0 if self.variadic else k].dtype

    def attr_index(self, name: str) -> int:
        return [a.name for a in self.attrs].index(name)

    def mode_names(self) -> Tuple[Optional[str], ...]:
        if self.mode is None:
            return (None,)
        return tuple(m for _, m in self.mode.modes)


def _enum_attr(name: str, meaning: str, values: Tuple[Tuple[int, str], ...]) -> Attr:
    return Attr(name, values[0][0], values[-1][0], meaning, values=values)


_F32_IN = Input(F32, "(H, W, C)")
_PAD_WHY = "pads are in [0, kernel - 1]: a pad of a whole kernel makes windows of padding only"


def _window_attrs(kernel: str, pad: str) -> Tuple[Attr, ...]:
    """kernel_h, kernel_w, stride_h, stride_w and the four pads of a sliding window (CONV2D,
    MAXPOOL, BCONV2D_GENERAL): `kernel` names the window ("kernel", "window"), `pad` what a
    padded row or column holds ("zero", "padding")."""
    return (
        Attr("kernel_h", 1, MAX_ATTR, f"{kernel} height"),
        Attr("kernel_w", 1, MAX_ATTR, f"{kernel} width"),
        Attr("stride_h", 1, MAX_ATTR, "vertical stride"),
        Attr("stride_w", 1, MAX_ATTR, "horizontal stride"),
        Attr("pad_top", 0, "kernel_h - 1", f"{pad} rows above", why=_PAD_WHY),
        Attr("pad_left", 0, "kernel_w - 1", f"{pad} columns left", why=_PAD_WHY),
        Attr("pad_bottom", 0, "kernel_h - 1", f"{pad} rows below", why=_PAD_WHY),
        Attr("pad_right", 0, "kernel_w - 1", f"{pad} columns right", why=_PAD_WHY),
    )


def _per_channel(*roles: str) -> Tuple[Slot, ...]:
    return tuple(Slot(role, (Form(F32, ("C",)),)) for role in roles)


OPS: Tuple[OpSchema, ...] = (
    OpSchema(
        1,
        "CONV2D",
        "kConv2D",
        (_F32_IN,),
        Input(F32, "(Ho, Wo, Co)"),
        "ordinary float conv, zero padding; Ho = (H + pad_top + pad_bottom − kernel_h) / "
        "stride_h + 1",
        attrs=(
            *_window_attrs("kernel", "zero"),
            _enum_attr("activation", "fused activation", ((0, "none"), (1, "relu"))),
        ),
        slots=(
            Slot("weight", (Form(F32, ("Co", "kernel_h", "kernel_w", "C")),)),
            Slot("bias", (Form(F32, ("Co",)),)),
        ),
        rules=("the kernel fits the padded input: H + pad_top + pad_bottom >= kernel_h (and W)",),
    ),
    OpSchema(
        2,
        "DWCONV3X3",
        "kDWConv3x3",
        (_F32_IN,),
        Input(F32, "(Ho, Wo, multiplier·C)"),
        "u = x + pre_bias; zero padding = dilation (1 unless given); tap (ky, kx) of output "
        "(y, x) reads input (y·stride_h + (ky − 1)·dilation, x·stride_w + (kx − 1)·dilation); "
        "output channel j·C + c is conv j of channel c (block j holds conv j of all C "
        "channels); out = conv·scale + bias. Ho = ceil(H / stride_h)",
        attrs=(
            Attr("stride_h", 1, 2, "vertical stride"),
            Attr("stride_w", 1, 2, "horizontal stride"),
            Attr("multiplier", 1, MAX_ATTR, "output channels per input channel"),
            Attr(
                "dilation",
                1,
                MAX_ATTR,
                "spacing of the taps (atrous rate); zero padding = dilation",
                default=1,
            ),
        ),
        slots=(
            Slot("pre_bias", (Form(F32, ("C",)),), presence=OPTIONAL),
            Slot(
                "weight",
                (Form(F32, ("multiplier*C", "9"), "f32"), Form(I8, ("multiplier*C", "9"), "i8")),
            ),
            Slot("weight_scale", (Form(F32, ("multiplier*C",), "i8"),)),
            Slot("scale", (Form(F32, ("multiplier*C",)),)),
            Slot("bias", (Form(F32, ("multiplier*C",)),)),
            Slot("input_scale", (Form(F32, ("1",), "i8"),)),
        ),
        mode=ModeBySlotDtype(1, ((F32, "f32"), (I8, "i8"))),
        rules=(
            "i8 weights: input_scale is finite and >= 0 (0 = dynamic, per image)",
            "dilation > 1: stride 1 x 1 and f32 weights (DeepLab's atrous convs; no kernel "
            "runs a strided or INT8 dilated conv)",
        ),
    ),
    OpSchema(
        3,
        "BITPACK",
        "kBitpack",
        (_F32_IN,),
        Input(BITS, "(H, W, C)"),
        "bit = !(x >= threshold)",
        slots=_per_channel("threshold"),
    ),
    OpSchema(
        4,
        "BCONV2D",
        "kBConv2D",
        (Input(BITS, "(H, W, C)"),),
        Input(F32, "(H, W, Co)"),
        "dot = Σ over taps and channels of a·w (±1), stride 1, 'same' output; for kernel 3 a tap "
        "outside the image contributes 0 (zero padding) or w (one padding: the pad is +1); "
        "out = dot·scale + bias",
        attrs=(
            Attr("kernel", 1, 3, "kernel size k (k x k)", allowed=(1, 3)),
            _enum_attr("pad_mode", "padding of kernel 3", ((0, "zero"), (1, "one"))),
        ),
        slots=(
            Slot("weight", (Form(BITS, ("Co", "kernel", "kernel", "words(C)"), tail_bits_of="C"),)),
            Slot("scale", (Form(F32, ("Co",)),)),
            Slot("bias", (Form(F32, ("Co",)),)),
        ),
        rules=("kernel·kernel·C <= 2^31 − 1 (the dot is an int32)",),
    ),
    OpSchema(
        5,
        "AFFINE",
        "kAffine",
        (_F32_IN,),
        Input(F32, "(H, W, C)"),
        "x·scale + bias",
        slots=_per_channel("scale", "bias"),
    ),
    OpSchema(
        6,
        "PRELU",
        "kPReLU",
        (_F32_IN,),
        Input(F32, "(H, W, C)"),
        "x ≥ 0 ? x : slope·x",
        slots=_per_channel("slope"),
    ),
    OpSchema(7, "RELU", "kReLU", (_F32_IN,), Input(F32, "(H, W, C)"), "max(x, 0)"),
    OpSchema(8, "SIGMOID", "kSigmoid", (_F32_IN,), Input(F32, "(H, W, C)"), "1 / (1 + e^−x)"),
    OpSchema(9, "ADD", "kAdd", (_F32_IN, _F32_IN), Input(F32, "(H, W, C)"), "a + b"),
    OpSchema(
        10,
        "MUL_CHANNEL",
        "kMulChannel",
        (_F32_IN, Input(F32, "(1, 1, C)")),
        Input(F32, "(H, W, C)"),
        "x · s[c] (SE scaling)",
    ),
    OpSchema(
        11,
        "AVGPOOL",
        "kAvgPool",
        (_F32_IN,),
        Input(F32, "(Ho, Wo, C)"),
        "no padding, ceil mode, each window averages the pixels it covers: "
        "Ho = ceil((H − kernel_h) / stride_h) + 1",
        attrs=(
            Attr("kernel_h", 1, "H", "window height"),
            Attr("kernel_w", 1, "W", "window width"),
            Attr("stride_h", 1, MAX_ATTR, "vertical stride"),
            Attr("stride_w", 1, MAX_ATTR, "horizontal stride"),
        ),
        rules=(
            "no window starts past the input: (Ho − 1)·stride_h < H and (Wo − 1)·stride_w < W "
            "(ceil mode could add one when stride > kernel; PyTorch drops it, and it would "
            "average zero pixels)",
        ),
    ),
    OpSchema(
        12, "GLOBAL_AVGPOOL", "kGlobalAvgPool", (_F32_IN,), Input(F32, "(1, 1, C)"), "mean over H·W"
    ),
    OpSchema(
        13,
        "CONCAT",
        "kConcat",
        (Input(F32, "(H, W, Ci)"),),
        Input(F32, "(H, W, ΣCi)"),
        "along channels, in input order; an input may appear several times (a channel repeat)",
        variadic=True,
    ),
    OpSchema(
        14,
        "FC",
        "kFC",
        (_F32_IN,),
        Input(F32, "(1, 1, Co)"),
        "see FC encodings below; the input is read as one vector of H·W·C features in NHWC "
        "order (pixel-major: feature (y·W + x)·C + c), so an FC after a flattened H×W map "
        "needs no reshape op (H = W = 1 is the classic head)",
        attrs=(
            _enum_attr(
                "encoding",
                "weight encoding",
                ((0, "fp32"), (1, "int8"), (2, "bitplane8"), (3, "binary")),
            ),
        ),
        slots=(
            Slot(
                "weight",
                (
                    Form(F32, ("Co", "H*W*C"), "fp32"),
                    Form(I8, ("Co", "H*W*C"), "int8"),
                    Form(BITS, ("8", "Co", "words(C)"), "bitplane8", tail_bits_of="C"),
                    Form(BITS, ("Co", "words(C)"), "binary", tail_bits_of="C"),
                ),
            ),
            Slot(
                "weight_scale",
                (
                    Form(F32, ("Co",), "int8"),
                    Form(F32, ("Co",), "bitplane8"),
                    Form(F32, ("Co",), "binary"),
                ),
            ),
            Slot("bias", (Form(F32, ("Co",)),)),
        ),
        mode=ModeByAttr("encoding", ((0, "fp32"), (1, "int8"), (2, "bitplane8"), (3, "binary"))),
        rules=(
            "bitplane8: the input is (1, 1, C) (its planes pack C features per row)",
            "binary: the input is (1, 1, C) (each weight row packs C signs)",
        ),
    ),
    OpSchema(
        15,
        "MAXPOOL",
        "kMaxPool",
        (_F32_IN,),
        Input(F32, "(Ho, Wo, C)"),
        "max over each window, padding never wins (it acts as −inf); floor mode: Ho = (H + "
        "pad_top + pad_bottom − kernel_h) / stride_h + 1 (ceil mode is written as a larger "
        "pad_bottom / pad_right); a NaN in a window gives NaN (see MAXPOOL below)",
        attrs=(*_window_attrs("window", "padding"),),
        rules=(
            "the window fits the padded input: H + pad_top + pad_bottom >= kernel_h (and W); "
            "with pads < kernel this puts an input pixel in every window",
        ),
    ),
    OpSchema(
        16,
        "CLIP",
        "kClip",
        (_F32_IN,),
        Input(F32, "(H, W, C)"),
        "x < lo ? lo : (x > hi ? hi : x) with bounds = [lo, hi]; NaN stays NaN (ReLU6 is "
        "CLIP(0, 6), Hardtanh CLIP(−1, 1))",
        slots=(Slot("bounds", (Form(F32, ("2",)),)),),
        rules=("bounds: lo <= hi, neither NaN (±inf allowed: a one-sided clip)",),
    ),
    OpSchema(
        17,
        "BCONV2D_GENERAL",
        "kBConv2DGeneral",
        (Input(BITS, "(H, W, C)"),),
        Input(F32, "(Ho, Wo, Co)"),
        "binary conv of any kernel, stride and padding: dot = Σ over taps and channels of a·w "
        "(±1); a tap in the padding contributes 0 (zero padding, PyTorch's conv of a 0-padded "
        "±1 input) or w (one padding: the pad is +1); out = dot·scale + bias. "
        "Ho = (H + pad_top + pad_bottom − kernel_h) / stride_h + 1",
        attrs=(
            *_window_attrs("kernel", "padding"),
            _enum_attr("pad_mode", "value of the padding", ((0, "zero"), (1, "one"))),
        ),
        slots=(
            Slot(
                "weight",
                (Form(BITS, ("Co", "kernel_h", "kernel_w", "words(C)"), tail_bits_of="C"),),
            ),
            Slot("scale", (Form(F32, ("Co",)),)),
            Slot("bias", (Form(F32, ("Co",)),)),
        ),
        rules=(
            "the kernel fits the padded input: H + pad_top + pad_bottom >= kernel_h (and W)",
            "kernel_h·kernel_w·C <= 2^31 − 1 (the dot is an int32)",
        ),
    ),
    OpSchema(
        18,
        "BFC",
        "kBFC",
        (Input(BITS, "(H, W, C)"),),
        Input(F32, "(1, 1, Co)"),
        "binary fully connected (BinaryNet's hidden layers): the packed input read as one vector "
        "of H·W·C signs, each pixel's words(C) words in turn (tail bits 0); dot = Σ over pixels "
        "and channels of a·w (±1) = H·W·C − 2·popcount(a XOR w); out = dot·scale + bias. "
        "Weight row o is packed like the input: H·W pixels of words(C) words",
        slots=(
            Slot("weight", (Form(BITS, ("Co", "H*W*words(C)"), tail_bits_of="C"),)),
            Slot("scale", (Form(F32, ("Co",)),)),
            Slot("bias", (Form(F32, ("Co",)),)),
        ),
        rules=(
            "H·W·C <= 2^31 − 1 (the dot is an int32)",
            "H·W > 1 with C not a multiple of 64: 64·H·W·words(C) <= 2^24 (the engine's "
            "padded-tail path counts in float32; far beyond any real model)",
        ),
    ),
    OpSchema(
        19,
        "SOFTMAX",
        "kSoftmax",
        (_F32_IN,),
        Input(F32, "(H, W, C)"),
        "softmax or log-softmax over the channels of each pixel (a classifier's (1, 1, C) "
        "vector, or every pixel of a dense map): m = max_c x_c, e_c = exp(x_c − m), "
        "s = Σ e_c; out = e_c / s, or (x_c − m) − log(s) (see SOFTMAX below)",
        attrs=(
            _enum_attr(
                "log", "what is written", ((0, "probabilities (softmax)"), (1, "log-softmax"))
            ),
        ),
    ),
    OpSchema(
        20,
        "AVGPOOL2D",
        "kAvgPool2D",
        (_F32_IN,),
        Input(F32, "(Ho, Wo, C)"),
        "PyTorch's avg_pool2d with padding, floor or ceil mode and either divisor: the sum of "
        "the input pixels a window covers (padding adds 0) over the divisor; floor mode: Ho = "
        "(H + pad_top + pad_bottom − kernel_h) / stride_h + 1; ceil mode rounds that division "
        "up, then drops a last window that starts at or past H + pad_top (see AVGPOOL2D below)",
        attrs=(
            *_window_attrs("window", "padding"),
            _enum_attr("ceil_mode", "output size rounding", ((0, "floor"), (1, "ceil"))),
            _enum_attr(
                "count_include_pad",
                "divisor",
                (
                    (0, "the input pixels the window covers"),
                    (1, "the window clipped to the padded input"),
                ),
            ),
        ),
        rules=(
            "the window fits the padded input: H + pad_top + pad_bottom >= kernel_h (and W); "
            "with pads < kernel and the ceil-mode rule this puts an input pixel in every window",
            "kernel_h·kernel_w <= 2^24 (every divisor is exact in f32)",
        ),
    ),
    OpSchema(
        21,
        "RESIZE",
        "kResize",
        (_F32_IN,),
        Input(F32, "(out_height, out_width, C)"),
        "ONNX Resize / PyTorch's F.interpolate, per axis from the f32 ratio r of T0 (input "
        "pixels per output pixel): source coordinate s = r·o (corner) or r·(o + 0.5) − 0.5 "
        "(half_pixel); nearest reads pixel min(floor(r·o), n − 1) (corner) or "
        "min(floor(r·(o + 0.5)), n − 1) (half_pixel, PyTorch's nearest-exact); bilinear: "
        "s clamped to >= 0, i0 = min(floor(s), n − 1), i1 = min(i0 + 1, n − 1), "
        "l1 = min(max(s − i0, 0), 1), l0 = 1 − l1, each axis's pair (a, b) giving a·l0 + b·l1, "
        "or a alone where i1 = i0 (so a 1 x 1 input is broadcast exactly); columns first "
        "(see RESIZE below)",
        attrs=(
            Attr("out_height", 1, MAX_ATTR, "output height"),
            Attr("out_width", 1, MAX_ATTR, "output width"),
            _enum_attr("mode", "interpolation", ((0, "nearest"), (1, "bilinear"))),
            _enum_attr(
                "coordinates",
                "source coordinate of an output pixel",
                ((0, "corner: s = r·o"), (1, "half_pixel: s = r·(o + 0.5) − 0.5")),
            ),
        ),
        slots=(Slot("ratio", (Form(F32, ("2",)),)),),
        rules=("ratio: (r_height, r_width), each finite and >= 0",),
    ),
)

BY_CODE: Dict[int, OpSchema] = {op.code: op for op in OPS}
BY_NAME: Dict[str, OpSchema] = {op.name: op for op in OPS}


def _check_schema() -> None:
    """Internal consistency, so that a typo in this file fails at import, not in a reader."""
    codes = [op.code for op in OPS]
    # Increasing from 1, gaps allowed: codes are assigned up front to ops developed in parallel,
    # so a higher one may land first. An unassigned code is refused by both readers as unknown.
    assert codes[0] == 1 and all(a < b for a, b in zip(codes, codes[1:])), (
        f"op codes must increase from 1: {codes}"
    )
    for op in OPS:
        names = [a.name for a in op.attrs]
        assert len(set(names)) == len(names), op.name
        # only a tail of attributes may have defaults (a record omits a suffix of them)
        assert all(a.default is None for a in op.attrs[: op.n_min_attrs]), op.name
        for a in op.attrs:
            assert a.default is None or (
                isinstance(a.lo, int) and isinstance(a.hi, int) and a.lo <= a.default <= a.hi
            ), (op.name, a.name)
        for i, a in enumerate(op.attrs):
            for b in (a.lo, a.hi):
                if isinstance(b, str):
                    sym = b.split(" - ")[0]
                    assert sym in ("H", "W") or sym in names[:i], f"{op.name}.{a.name}: {b}"
        modes = op.mode_names()
        for s in op.slots:
            for f in s.forms:
                assert f.dtype in DTYPE_CODES and f.mode in modes + (None,), (op.name, s.role)
                assert (f.tail_bits_of is not None) == (f.dtype == BITS), (op.name, s.role)
        if isinstance(op.mode, ModeByAttr):  # every value of the attribute names a mode
            attr = op.attrs[names.index(op.mode.attr)]
            keys = [k for k, _ in op.mode.modes]
            assert isinstance(attr.lo, int) and isinstance(attr.hi, int), op.name
            assert keys == list(range(attr.lo, attr.hi + 1)) and not attr.allowed, op.name
        assert not (op.variadic and len(op.inputs) != 1), op.name


_check_schema()
