"""The op schema (weights_tools/op_schema.py) and the two validators that follow it.

1. The files generated from the schema (csrc/engine/op_schema.inc, the op table of
   docs/format.md) are up to date.
2. Differential: many small graphs, built from the schema (a valid one per op and mode, then one
   mutation per rule: every attribute at min - 1, min, max, max + 1, wrong input, output and
   tensor dtypes, wrong dims, missing and extra slots, absent required tensors, present unused
   ones, INT8 -128 and -127, tail bits, wrong arity), each written with validation off and
   judged by both weights_tools.qbw.validate_graph and the engine's loader (qbinfer.load): both
   must accept, or both refuse, every graph. A disagreement means ops.cc and qbw.py have drifted.

The tensors' data is random; the seed is printed and can be set with QBINFER_SCHEMA_SEED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

from weights_tools import op_schema as S
from weights_tools.qbw import (
    DType,
    Graph,
    Op,
    OpType,
    Preprocessing,
    QbwFormatError,
    Tensor,
    Value,
    serialize_qbw,
    validate_graph,
    words_for_channels,
    write_qbw,
)

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("QBINFER_SCHEMA_SEED", "20261204"))
DTYPE = {S.F32: DType.F32, S.I8: DType.I8, S.BITS: DType.BITS}


def test_generated_files_are_up_to_date():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_op_schema.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_qbw_constants_come_from_the_schema():
    assert [(t.name, int(t)) for t in OpType] == [(op.name, op.code) for op in S.OPS]


# ---------------------------------------------------------------------------------------------
# Graph construction from the schema


def _pool_out(size: int, pad_a: int, pad_b: int, k: int, stride: int, ceil: int) -> int:
    """PyTorch's avg_pool2d output size (AVGPOOL2D): floor or ceil, and in ceil mode no window
    starting past the input. 0 when the window does not fit (an invalid case)."""
    span = size + pad_a + pad_b - k
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil else span // stride) + 1
    return out - 1 if ceil and (out - 1) * stride >= size + pad_a else out


@dataclass
class Case:
    """One op under test: its inputs' shapes (and dtypes), attributes, output channels and mode.
    `graph()` builds a graph that is valid whenever the case is."""

    spec: S.OpSchema
    in_shapes: List[Tuple[int, int, int]]
    attrs: List[int]
    co: int  # output channels where the schema leaves them free (Co)
    mode: Optional[str] = None
    drop_optional: bool = False
    edits: List[Callable[[Graph, Op], None]] = field(default_factory=list)

    def out_shape(self) -> Tuple[int, int, int]:
        """The output shape by the formulas of docs/format.md (the test's own copy); (0, 0, 0)
        where they divide by a zero stride."""
        try:
            return self._out_shape()
        except ZeroDivisionError:
            return (0, 0, 0)

    def _out_shape(self) -> Tuple[int, int, int]:
        name, a = self.spec.name, self.attrs
        H, W, C = self.in_shapes[0]
        if name == "CONV2D":
            kh, kw, sh, sw, pt, pl, pb, pr, _ = a
            return ((H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1, self.co)
        if name == "DWCONV3X3":
            return (-(-H // a[0]), -(-W // a[1]), a[2] * C)
        if name == "BCONV2D":
            return (H, W, self.co)
        if name == "BCONV2D_GENERAL":
            kh, kw, sh, sw, pt, pl, pb, pr, _ = a
            return ((H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1, self.co)
        if name == "AVGPOOL":
            kh, kw, sh, sw = a
            return (-(-(H - kh) // sh) + 1, -(-(W - kw) // sw) + 1, C)
        if name == "GLOBAL_AVGPOOL":
            return (1, 1, C)
        if name == "CONCAT":
            return (H, W, sum(s[2] for s in self.in_shapes))
        if name in ("FC", "BFC"):
            return (1, 1, self.co)
        if name == "MAXPOOL":
            kh, kw, sh, sw, pt, pl, pb, pr = a
            return ((H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1, C)
        if name == "AVGPOOL2D":
            kh, kw, sh, sw, pt, pl, pb, pr, ceil, _ = a
            return (_pool_out(H, pt, pb, kh, sh, ceil), _pool_out(W, pl, pr, kw, sw, ceil), C)
        if name == "RESIZE":
            return (a[0], a[1], C)
        return (H, W, C)

    def env(self) -> Dict[str, int]:
        H, W, C = self.in_shapes[0]
        env = {"H": H, "W": W, "C": C, "Co": self.out_shape()[2]}
        env.update({a.name: v for a, v in zip(self.spec.attrs, self.attrs)})
        return env

    def current_mode(self) -> Optional[str]:
        if isinstance(self.spec.mode, S.ModeByAttr):
            modes = dict(self.spec.mode.modes)
            return modes.get(self.attrs[self.spec.attr_index(self.spec.mode.attr)])
        return self.mode

    def graph(self, rng: np.random.Generator) -> Graph:
        g = Graph(tensors=[], values=[], ops=[], input_value=0, output_value=0)
        x_shape = self.in_shapes[0]
        g.values.append(Value("x", DType.F32, *x_shape))
        g.preprocessing = Preprocessing(0, x_shape[0], x_shape[1])
        inputs = []
        for k, shape in enumerate(self.in_shapes):
            dtype = DTYPE[self.spec.input_dtype(k)]
            if k == 0 and dtype == DType.F32:
                inputs.append(0)
                continue
            # Another input: made from x by an op whose own rules are met.
            g.values.append(Value(f"in{k}", dtype, *shape))
            if dtype == DType.BITS:
                thr = _add_tensor(g, "pre.thr", DType.F32, (x_shape[2],), rng)
                g.ops.append(Op(OpType.BITPACK, f"pre{k}", [0], [len(g.values) - 1], [thr]))
            elif shape[:2] == (1, 1) and x_shape[:2] != (1, 1):
                g.ops.append(Op(OpType.GLOBAL_AVGPOOL, f"pre{k}", [0], [len(g.values) - 1]))
            else:
                g.ops.append(Op(OpType.RELU, f"pre{k}", [0], [len(g.values) - 1]))
            inputs.append(len(g.values) - 1)

        out_shape = self.out_shape()
        if min(out_shape) < 1 or max(out_shape) > 2**16:
            out_shape = (1, 1, 1)  # an invalid case: any shape will be refused
        g.values.append(Value("y", DTYPE[self.spec.output.dtype], *out_shape))
        y = len(g.values) - 1
        env = self.env()
        mode = self.current_mode()
        tensors: List[Optional[int]] = []
        for slot in self.spec.slots:
            form = slot.form(mode)
            if form is None or (slot.presence == S.OPTIONAL and self.drop_optional):
                tensors.append(None)
                continue
            dims = tuple(_dim(d, env) for d in form.dims)
            if min(dims) < 1 or np.prod(dims, dtype=object) > 10**6:  # an attribute at a bound
                dims = (1,)
            tail = _dim(form.tail_bits_of, env) if form.tail_bits_of else None
            tensors.append(_add_tensor(g, slot.role, DTYPE[form.dtype], dims, rng, tail))
        op = Op(OpType(self.spec.code), "under_test", inputs, [y], tensors, list(self.attrs))
        g.ops.append(op)
        g.output_value = y
        if g.values[y].dtype == DType.BITS:
            # The graph's output must be f32: a 1x1 binary conv after the op under test.
            c = g.values[y].channels
            w = _add_tensor(g, "post.w", DType.BITS, (1, 1, 1, words_for_channels(c)), rng, c)
            s = _add_tensor(g, "post.s", DType.F32, (1,), rng)
            b = _add_tensor(g, "post.b", DType.F32, (1,), rng)
            g.values.append(Value("post", DType.F32, *g.values[y].shape[:2], 1))
            g.ops.append(Op(OpType.BCONV2D, "post", [y], [len(g.values) - 1], [w, s, b], [1, 0]))
            g.output_value = len(g.values) - 1
        for edit in self.edits:
            edit(g, op)
        return g


def _dim(expr: str, env: Dict[str, int]) -> int:
    product = 1
    for factor in expr.split("*"):
        if factor.isdigit():
            product *= int(factor)
        elif factor.startswith("words("):
            product *= words_for_channels(env[factor[6:-1]])
        else:
            product *= env[factor]
    return product


def _bound(bound: S.Bound, env: Dict[str, int]) -> int:
    if isinstance(bound, int):
        return bound
    symbol, _, minus = bound.partition(" - ")
    return env[symbol] - (int(minus) if minus else 0)


def _add_tensor(g, name, dtype, dims, rng, tail_of: Optional[int] = None) -> int:
    if dtype == DType.F32:  # positive: valid as a scale, a bias, a threshold or an input_scale
        data = rng.uniform(0.5, 1.5, dims).astype(np.float32)
    elif dtype == DType.I8:
        data = rng.integers(-127, 128, dims).astype(np.int8)
    else:
        data = rng.integers(0, 2**63, dims, dtype=np.uint64)
        if tail_of is not None and tail_of % 64:
            # every row of words(tail_of) words (a BFC weight row holds H*W of them)
            words = words_for_channels(tail_of)
            rows = data.reshape(-1, words) if data.size % words == 0 else data.reshape(-1, 1)
            rows[:, -1] &= np.uint64((1 << (tail_of % 64)) - 1)
    g.tensors.append(Tensor(name, dtype, data))
    return len(g.tensors) - 1


def _clip_bounds(lo: float, hi: float) -> Callable[[Graph, Op], None]:
    """Sets CLIP's bounds tensor (random tensor data would have lo > hi half the time)."""

    def edit(g: Graph, op: Op) -> None:
        g.tensors[op.tensors[0]].data[:] = (lo, hi)

    return edit


# The valid starting points: every op, every mode, odd channel counts (tail bits), both
# paddings and kernels of BCONV2D.
def base_cases() -> List[Tuple[str, Case]]:
    B = S.BY_NAME
    relu6 = Case(B["CLIP"], [(3, 4, 6)], [], 0, edits=[_clip_bounds(0.0, 6.0)])
    cases = [
        ("conv 3x3 s2", Case(B["CONV2D"], [(7, 9, 3)], [3, 3, 2, 2, 1, 1, 1, 1, 1], 4)),
        ("conv 1x1", Case(B["CONV2D"], [(4, 5, 3)], [1, 1, 1, 1, 0, 0, 0, 0, 0], 2)),
        ("dw f32", Case(B["DWCONV3X3"], [(5, 6, 4)], [2, 1, 2], 0, mode="f32")),
        ("dw i8", Case(B["DWCONV3X3"], [(5, 6, 4)], [1, 2, 1], 0, mode="i8")),
        ("dw f32 no pre_bias", Case(B["DWCONV3X3"], [(5, 6, 4)], [1, 1, 1], 0, "f32", True)),
        ("bitpack", Case(B["BITPACK"], [(3, 4, 70)], [], 0)),
        ("bconv 3 zero", Case(B["BCONV2D"], [(3, 4, 70)], [3, 0], 5)),
        ("bconv 1 one", Case(B["BCONV2D"], [(3, 4, 64)], [1, 1], 3)),
        ("affine", Case(B["AFFINE"], [(3, 4, 6)], [], 0)),
        ("prelu", Case(B["PRELU"], [(3, 4, 6)], [], 0)),
        ("relu", Case(B["RELU"], [(3, 4, 6)], [], 0)),
        ("sigmoid", Case(B["SIGMOID"], [(3, 4, 6)], [], 0)),
        ("add", Case(B["ADD"], [(3, 4, 6), (3, 4, 6)], [], 0)),
        ("mul_channel", Case(B["MUL_CHANNEL"], [(3, 4, 6), (1, 1, 6)], [], 0)),
        ("avgpool 2/2", Case(B["AVGPOOL"], [(5, 6, 3)], [2, 2, 2, 2], 0)),
        ("avgpool 3/1", Case(B["AVGPOOL"], [(5, 6, 3)], [3, 2, 1, 1], 0)),
        ("gap", Case(B["GLOBAL_AVGPOOL"], [(3, 4, 6)], [], 0)),
        ("concat 2", Case(B["CONCAT"], [(3, 4, 6), (3, 4, 6)], [], 0)),
        ("concat 1", Case(B["CONCAT"], [(3, 4, 5)], [], 0)),
        ("fc fp32", Case(B["FC"], [(1, 1, 70)], [0], 5)),
        ("fc int8", Case(B["FC"], [(1, 1, 70)], [1], 5)),
        ("fc bitplane8", Case(B["FC"], [(1, 1, 70)], [2], 5)),
        ("maxpool 3/2 pad 1", Case(B["MAXPOOL"], [(7, 8, 5)], [3, 3, 2, 2, 1, 1, 1, 1], 0)),
        ("maxpool 2/2 ceil", Case(B["MAXPOOL"], [(5, 6, 3)], [2, 2, 2, 2, 0, 0, 1, 1], 0)),
        ("maxpool 3x2/1x3", Case(B["MAXPOOL"], [(4, 9, 3)], [3, 2, 1, 3, 2, 0, 0, 1], 0)),
        ("clip relu6", relu6),
        ("bfc 70", Case(B["BFC"], [(1, 1, 70)], [], 5)),
        ("bfc 64", Case(B["BFC"], [(1, 1, 64)], [], 3)),
        ("bfc map 70", Case(B["BFC"], [(2, 3, 70)], [], 4)),
        ("fc fp32 map", Case(B["FC"], [(2, 3, 5)], [0], 4)),
        (
            "bconv general 3x3 s2 one",
            Case(B["BCONV2D_GENERAL"], [(7, 6, 70)], [3, 3, 2, 2, 1, 1, 1, 1, 1], 5),
        ),
        (
            "bconv general 5x3 asym zero",
            Case(B["BCONV2D_GENERAL"], [(6, 5, 64)], [5, 3, 3, 1, 2, 0, 1, 2, 0], 3),
        ),
        ("softmax vector", Case(B["SOFTMAX"], [(1, 1, 10)], [0], 0)),
        ("log-softmax per pixel", Case(B["SOFTMAX"], [(3, 4, 6)], [1], 0)),
        (
            "avgpool2d 3/2 pad 1",
            Case(B["AVGPOOL2D"], [(7, 8, 5)], [3, 3, 2, 2, 1, 1, 1, 1, 0, 1], 0),
        ),
        (
            "avgpool2d 2/2 ceil asym",
            Case(B["AVGPOOL2D"], [(5, 6, 3)], [2, 3, 2, 1, 1, 0, 0, 2, 1, 0], 0),
        ),
        ("fc binary", Case(B["FC"], [(1, 1, 70)], [3], 5)),
        ("fc binary 64", Case(B["FC"], [(1, 1, 64)], [3], 3)),
        ("dw f32 dilated", Case(B["DWCONV3X3"], [(9, 7, 4)], [1, 1, 2, 3], 0, mode="f32")),
        ("resize bilinear", Case(B["RESIZE"], [(3, 4, 5)], [7, 9, 1, 1], 0)),
        ("resize nearest from 1x1", Case(B["RESIZE"], [(1, 1, 6)], [5, 4, 0, 0], 0)),
    ]
    covered = {c.spec.name for _, c in cases}
    assert covered == set(B), f"add base cases for {set(B) - covered}"
    return cases


def _with(case: Case, **changes) -> Case:
    fields = dict(case.__dict__)
    fields.update(changes)
    fields["edits"] = list(case.edits) + list(changes.get("edits", []))
    return Case(**fields)


def _edit(fn: Callable[[Graph, Op], None]) -> List[Callable[[Graph, Op], None]]:
    return [fn]


def mutations(name: str, case: Case) -> List[Tuple[str, Case]]:
    """The base case and one mutation per rule of the schema that applies to it."""
    spec = case.spec
    out: List[Tuple[str, Case]] = [(name, case)]
    env = case.env()

    # Attributes at their bounds and one past, and every value around an allowed set.
    for i, attr in enumerate(spec.attrs):
        lo, hi = _bound(attr.lo, env), _bound(attr.hi, env)
        values = {lo - 1, lo, hi, hi + 1}
        if attr.allowed:
            values |= set(range(lo, hi + 1))
        values |= {v for v, _ in attr.values}
        for v in sorted(values):
            # an attribute the case omits (one with a default) is written to mutate it
            attrs = list(case.attrs) + [a.default for a in spec.attrs[len(case.attrs) :]]
            attrs[i] = v
            out.append((f"{name}: {attr.name} = {v}", _with(case, attrs=attrs)))

    # Modes chosen by a slot's dtype: every dtype in that slot.
    if isinstance(spec.mode, S.ModeBySlotDtype):
        for _, mode in spec.mode.modes:
            if mode != case.mode:
                out.append((f"{name}: mode {mode}", _with(case, mode=mode)))

    # Arity.
    def grow(field_name, extra):
        return lambda g, op: getattr(op, field_name).append(extra(g, op))

    def shrink(field_name):
        return lambda g, op: getattr(op, field_name).pop()

    out += [
        (f"{name}: extra input", _with(case, edits=_edit(grow("inputs", lambda g, op: 0)))),
        (f"{name}: one input fewer", _with(case, edits=_edit(shrink("inputs")))),
        (f"{name}: extra attr", _with(case, edits=_edit(grow("attrs", lambda g, op: 1)))),
        (
            f"{name}: extra tensor slot",
            _with(case, edits=_edit(grow("tensors", lambda g, op: None))),
        ),
    ]
    if spec.attrs:
        out.append((f"{name}: one attr fewer", _with(case, edits=_edit(shrink("attrs")))))
    if spec.slots:
        out.append((f"{name}: one slot fewer", _with(case, edits=_edit(shrink("tensors")))))

    # Input and output dtypes and shapes.
    def flip_value(which):
        def edit(g, op):
            v = g.values[op.inputs[which] if which >= 0 else op.outputs[0]]
            v.dtype = DType.BITS if v.dtype == DType.F32 else DType.F32

        return edit

    for k in range(len(case.in_shapes)):
        out.append((f"{name}: input {k} dtype", _with(case, edits=_edit(flip_value(k)))))
    out.append((f"{name}: output dtype", _with(case, edits=_edit(flip_value(-1)))))

    def reshape_output(dh, dc):
        def edit(g, op):
            v = g.values[op.outputs[0]]
            v.height += dh
            v.channels += dc

        return edit

    out.append((f"{name}: output channels + 1", _with(case, edits=_edit(reshape_output(0, 1)))))
    out.append((f"{name}: output height + 1", _with(case, edits=_edit(reshape_output(1, 0)))))

    # Tensor slots.
    mode = case.current_mode()
    for i, slot in enumerate(spec.slots):
        form = slot.form(mode)
        tag = f"{name}: T{i} {slot.role}"
        if form is None:
            out.append(
                (
                    f"{tag} present but unused",
                    _with(case, edits=_edit(_set_slot(i, DType.F32, (1,)))),
                )
            )
            continue
        out.append((f"{tag} absent", _with(case, edits=_edit(_absent(i)))))
        dims = tuple(_dim(d, env) for d in form.dims)
        for dtype in DType:
            if dtype != DTYPE[form.dtype]:
                out.append(
                    (f"{tag} as {dtype.name}", _with(case, edits=_edit(_set_slot(i, dtype, dims))))
                )
        wrong_dims = [(dims[0] + 1,) + dims[1:], dims + (1,), dims[:-1] or (dims[0] + 2,)]
        for d in wrong_dims:
            out.append(
                (
                    f"{tag} dims {d}",
                    _with(case, edits=_edit(_set_slot(i, DTYPE[form.dtype], d))),
                )
            )
        if form.dtype == S.I8:
            for v in (-128, -127, 127):
                for where in (0, -1):
                    out.append(
                        (
                            f"{tag} holds {v} at {where}",
                            _with(case, edits=_edit(_poke(i, where, v))),
                        )
                    )
        if form.tail_bits_of is not None:
            channels = _dim(form.tail_bits_of, env)
            out.append((f"{tag} tail bit 63", _with(case, edits=_edit(_set_bit(i, 63)))))
            out.append((f"{tag} bit 0", _with(case, edits=_edit(_set_bit(i, 0)))))
            if channels % 64:
                bit = channels % 64
                out.append((f"{tag} first tail bit", _with(case, edits=_edit(_set_bit(i, bit)))))
                out.append(
                    (f"{tag} last channel bit", _with(case, edits=_edit(_set_bit(i, bit - 1))))
                )
    return out


def _absent(i):
    def edit(g, op):
        op.tensors[i] = None

    return edit


def _set_slot(i, dtype, dims):
    def edit(g, op):
        rng = np.random.default_rng(SEED + i)
        op.tensors[i] = _add_tensor(g, f"mut{i}", dtype, dims, rng)

    return edit


def _poke(i, where, value):
    def edit(g, op):
        g.tensors[op.tensors[i]].data.reshape(-1)[where] = value

    return edit


def _set_bit(i, bit):
    def edit(g, op):
        data = g.tensors[op.tensors[i]].data
        data[..., -1] |= np.uint64(1) << np.uint64(bit)

    return edit


# Special rules of single ops that the generic mutations do not reach.
def special_cases() -> List[Tuple[str, Case]]:
    B = S.BY_NAME

    def input_scale(v):
        def edit(g, op):
            g.tensors[op.tensors[5]].data[0] = v

        return edit

    dw = Case(B["DWCONV3X3"], [(5, 6, 4)], [1, 1, 1], 0, mode="i8")
    concat = dict(base_cases())["concat 2"]
    clip = Case(B["CLIP"], [(3, 4, 6)], [], 0)
    resize = Case(B["RESIZE"], [(3, 4, 5)], [7, 9, 1, 1], 0)
    return [
        ("dw i8 input_scale -1", _with(dw, edits=_edit(input_scale(-1.0)))),
        ("dw i8 input_scale nan", _with(dw, edits=_edit(input_scale(np.nan)))),
        ("dw i8 input_scale 0", _with(dw, edits=_edit(input_scale(0.0)))),
        ("concat no input", _with(concat, edits=_edit(lambda g, op: op.inputs.clear()))),
        ("concat 3 inputs", _with(concat, edits=_edit(lambda g, op: op.inputs.append(0)))),
        (
            "conv kernel > padded input",
            Case(B["CONV2D"], [(2, 2, 3)], [5, 5, 1, 1, 1, 1, 1, 1, 0], 2),
        ),
        (
            "bconv general kernel > padded input",
            Case(B["BCONV2D_GENERAL"], [(2, 2, 70)], [5, 5, 1, 1, 1, 1, 1, 1, 0], 2),
        ),
        (
            "bconv general kernel = padded input",
            Case(B["BCONV2D_GENERAL"], [(2, 3, 70)], [4, 5, 1, 1, 1, 1, 1, 1, 1], 2),
        ),
        ("avgpool stride past end", Case(B["AVGPOOL"], [(4, 4, 3)], [1, 1, 3, 3], 0)),
        ("avgpool stride fits", Case(B["AVGPOOL"], [(4, 4, 3)], [1, 1, 3, 3][:2] + [2, 2], 0)),
        ("fc on pixels", Case(B["FC"], [(2, 1, 70)], [0], 5)),
        (
            "maxpool window > padded input",
            Case(B["MAXPOOL"], [(2, 2, 3)], [5, 5, 1, 1, 1, 1, 1, 1], 0),
        ),
        (
            "maxpool window = padded input",
            Case(B["MAXPOOL"], [(2, 2, 3)], [4, 4, 1, 1, 1, 1, 1, 1], 0),
        ),
        ("maxpool stride > kernel", Case(B["MAXPOOL"], [(7, 7, 3)], [2, 2, 3, 3, 1, 1, 1, 1], 0)),
        ("clip lo > hi", _with(clip, edits=_edit(_clip_bounds(1.0, -1.0)))),
        ("clip lo = hi", _with(clip, edits=_edit(_clip_bounds(2.0, 2.0)))),
        ("clip lo nan", _with(clip, edits=_edit(_clip_bounds(np.nan, 1.0)))),
        ("clip hi nan", _with(clip, edits=_edit(_clip_bounds(0.0, np.nan)))),
        ("clip one-sided", _with(clip, edits=_edit(_clip_bounds(-np.inf, 0.5)))),
        ("clip everything", _with(clip, edits=_edit(_clip_bounds(-np.inf, np.inf)))),
        ("bfc on pixels", Case(B["BFC"], [(1, 2, 70)], [], 5)),
        (
            "avgpool2d window > padded input",
            Case(B["AVGPOOL2D"], [(2, 2, 3)], [5, 5, 1, 1, 1, 1, 1, 1, 0, 1], 0),
        ),
        (
            "avgpool2d window = padded input",
            Case(B["AVGPOOL2D"], [(2, 2, 3)], [4, 4, 1, 1, 1, 1, 1, 1, 1, 0], 0),
        ),
        (
            # ceil mode would add a window starting past the input: PyTorch drops it
            "avgpool2d ceil drops a window",
            Case(B["AVGPOOL2D"], [(7, 7, 3)], [2, 2, 3, 3, 0, 0, 0, 0, 1, 1], 0),
        ),
        (
            "avgpool2d ceil window past the padding",
            Case(B["AVGPOOL2D"], [(8, 8, 3)], [3, 3, 2, 2, 1, 1, 1, 1, 1, 1], 0),
        ),
        (  # 4097·4096 > 2^24 pixels: the divisor would not be exact in f32
            "avgpool2d window over 2^24 pixels",
            Case(B["AVGPOOL2D"], [(1, 1, 1)], [4097, 4096, 1, 1, 4096, 4095, 0, 0, 0, 1], 0),
        ),
        (
            "avgpool2d window of 2^24 pixels",
            Case(B["AVGPOOL2D"], [(1, 1, 1)], [4096, 4096, 1, 1, 4095, 4095, 0, 0, 0, 1], 0),
        ),
        # FC and BFC read an (H, W, C) map as one vector; bitplane8 needs (1, 1, C)
        ("fc int8 on a map", Case(B["FC"], [(3, 2, 5)], [1], 4)),
        ("fc bitplane8 on a map", Case(B["FC"], [(2, 1, 70)], [2], 5)),
        ("bfc on a map 64", Case(B["BFC"], [(2, 3, 64)], [], 3)),
        ("bfc on a map 5", Case(B["BFC"], [(3, 3, 5)], [], 6)),
        ("fc binary on a map", Case(B["FC"], [(2, 1, 70)], [3], 5)),
        # dilation > 1 needs stride 1 x 1 and f32 weights
        ("dw i8 dilated", Case(B["DWCONV3X3"], [(5, 6, 4)], [1, 1, 1, 2], 0, mode="i8")),
        ("dw f32 dilated stride 2", Case(B["DWCONV3X3"], [(5, 6, 4)], [2, 2, 1, 2], 0, "f32")),
        ("dw f32 dilated stride 1x2", Case(B["DWCONV3X3"], [(5, 6, 4)], [1, 2, 1, 4], 0, "f32")),
        (
            "dw f32 dilated past the image",
            Case(B["DWCONV3X3"], [(2, 3, 4)], [1, 1, 1, 9], 0, "f32"),
        ),
        ("resize ratio -1", _with(resize, edits=_edit(_poke(0, 0, -1.0)))),
        ("resize ratio nan", _with(resize, edits=_edit(_poke(0, 1, np.nan)))),
        ("resize ratio inf", _with(resize, edits=_edit(_poke(0, 0, np.inf)))),
        ("resize ratio 0", _with(resize, edits=_edit(_poke(0, 1, 0.0)))),
    ]


# ---------------------------------------------------------------------------------------------
# The differential test

LOAD_MANY = r"""
import json, sys
import qbinfer
for path in sys.argv[1:]:
    try:
        qbinfer.load(path)
        res = {"path": path, "ok": True}
    except qbinfer.FormatError as e:
        res = {"path": path, "ok": False, "msg": str(e)}
    except BaseException as e:
        res = {"path": path, "ok": None, "msg": type(e).__name__ + ": " + str(e)}
    print(json.dumps(res), flush=True)
"""


def engine_verdicts(paths: List[str]) -> Dict[str, dict]:
    """Loads every file in one subprocess (a crash is a failure, not the end of the run)."""
    r = subprocess.run(
        [sys.executable, "-c", LOAD_MANY, *paths], capture_output=True, text=True, timeout=600
    )
    results = {}
    for line in r.stdout.splitlines():
        res = json.loads(line)
        results[res["path"]] = res
    if r.returncode != 0:
        crashed = paths[len(results)] if len(results) < len(paths) else "?"
        pytest.fail(f"the loader died with rc {r.returncode} on {crashed}\n{r.stderr[-3000:]}")
    return results


def python_verdict(graph: Graph) -> Tuple[bool, str]:
    try:
        validate_graph(graph)
    except QbwFormatError as e:
        return False, str(e)
    return True, ""


def all_cases() -> List[Tuple[str, Case]]:
    cases = []
    for name, case in base_cases():
        cases += mutations(name, case)
    return cases + special_cases()


def test_python_and_engine_accept_and_refuse_the_same_graphs(tmp_path):
    print(f"seed {SEED} (set QBINFER_SCHEMA_SEED to repeat another)")
    rng = np.random.default_rng(SEED)
    cases = all_cases()
    paths, verdicts = [], {}
    for i, (name, case) in enumerate(cases):
        graph = case.graph(rng)
        path = str(tmp_path / f"case{i}.qbw")
        try:
            write_qbw(path, graph, validate=False)
        except (OverflowError, ValueError) as e:  # struct cannot hold it: not a file at all
            pytest.fail(f"{name}: cannot serialize the case ({e})")
        paths.append(path)
        verdicts[path] = (name, *python_verdict(graph))
    engine = engine_verdicts(paths)

    disagreements, n_accepted = [], 0
    for path in paths:
        name, py_ok, py_msg = verdicts[path]
        res = engine[path]
        if res["ok"] is None:
            disagreements.append(f"{name}: the engine raised a non-FormatError: {res['msg']}")
        elif res["ok"] != py_ok:
            disagreements.append(
                f"{name}: python {'accepts' if py_ok else 'refuses'} ({py_msg or '-'}), engine "
                f"{'accepts' if res['ok'] else 'refuses'} ({res.get('msg', '-')})"
            )
        n_accepted += bool(py_ok)
    print(f"{len(paths)} graphs, {n_accepted} accepted by python")
    assert not disagreements, f"seed {SEED}:\n" + "\n".join(disagreements)
    # Guard against a test that only builds broken graphs: every valid base case is accepted
    # and so are the in-range attribute values, which are many.
    assert n_accepted >= len(base_cases()) + 20, n_accepted


def test_every_base_case_is_valid():
    rng = np.random.default_rng(SEED)
    for name, case in base_cases():
        ok, msg = python_verdict(case.graph(rng))
        assert ok, f"{name}: {msg}"


def test_int8_minus_128_is_refused_by_python():
    """The format's choice (docs/format.md): symmetric INT8 codes, -128 refused on write and
    read as the engine refuses it."""
    rng = np.random.default_rng(SEED)
    case = dict(base_cases())["fc int8"]
    graph = _with(case, edits=_edit(_poke(0, 3, -128))).graph(rng)
    with pytest.raises(QbwFormatError, match=r"holds -128 at element 3 .*\[-127, 127\]"):
        validate_graph(graph)
    with pytest.raises(QbwFormatError, match="-128"):
        serialize_qbw(graph)
