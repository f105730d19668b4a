"""ONNX -> qbinfer graph: constant folding, pattern matching and folding, NCHW -> NHWC.

`lower_onnx(model)` returns a `weights_tools.qbw.Graph` with FP32 FC and FP32 depthwise convs;
`weights_tools.convert` then applies the requested FC encoding and depthwise quantization.

The pipeline (docs/converter.md has the user's view):

1. Shape inference (`onnx.shape_inference`), used as a cross-check of the shapes computed here.
2. Constant folding: every node whose inputs are all constants is evaluated (numpy for
   Constant/Identity, `onnx.reference.ReferenceEvaluator` otherwise). The exporter leaves, e.g.,
   the weight binarization `Where(GreaterOrEqual(W, 0), 1, -1)`, the `ConstantOfShape` feeding
   the shortcut's `Expand`, and the `Reshape`/`Transpose`/`Cast` chain of a `Pad`'s pads.
3. Dead nodes are dropped (walking back from the graph output through data inputs only, so the
   `Shape -> Gather -> Reshape` of `x.view(x.size(0), -1)` does not count).
4. Translation, node by node in graph order, into a small NCHW intermediate form (`_Node`)
   whose kinds are close to the engine's ops. Every ONNX node is either translated, folded into a
   pattern, or rejected with a `ConversionError` naming it.
5. Rewrites on that form, in this order (each is exact unless said otherwise):
   a. sign -> BITPACK. A sign whose input is `x + c` (one Add or Sub of a per-channel constant)
      reads x with threshold -c: `(x + c >= 0) <=> (x >= -c)` in IEEE arithmetic
      (bit_contract.h). Identical BITPACKs are merged.
   b. An Add/Sub of a per-channel constant before a depthwise conv becomes its pre_bias.
   c. Depthwise convs that read the same input (and pre_bias, stride) and sit next to each other
      in a Concat become one DWCONV3X3 with multiplier k (concat input j = channel block j).
   d. Per-channel affines (BatchNormalization, Mul/Add/Sub/Div by a per-channel constant) fold
      into the single-consumer op before them: a float conv's or FC's weights and bias (rounding
      differs), a depthwise or binary conv's scale and bias, or the previous affine.
   e. A Relu after a float conv becomes the conv's activation.
   Whatever affine is left is an AFFINE op.
6. Emission in NHWC: conv weights [Co, kh, kw, Ci], binary weights packed by the bit contract,
   depthwise weights [k*C, 9] (tap dy*3 + dx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from .qbw import (
    DW_STRIDES,
    DType,
    FCEncoding,
    Graph,
    Op,
    OpType,
    Preprocessing,
    Tensor,
    Value,
    pack_signs,
)

__all__ = ["ConversionError", "lower_onnx", "fold_onnx_constants"]


class ConversionError(ValueError):
    """The model uses an op or a pattern the engine cannot run; the message names the ONNX node
    (name and op_type) and what is not supported."""


def _node_label(node: onnx.NodeProto) -> str:
    return f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type})"


def _fail(node: Optional[onnx.NodeProto], message: str) -> None:
    if node is None:
        raise ConversionError(message)
    raise ConversionError(f"{_node_label(node)}: {message}")


# Inputs that only carry shapes (never activations) for these op types: liveness does not follow
# them, so a shape computed at run time (Shape -> Gather -> ...) does not need to be supported.
_DATA_INPUTS = {
    "Reshape": 1,
    "Expand": 1,
    "Tile": 1,
    "Pad": 1,
    "ReduceMean": 1,
    "Squeeze": 1,
    "Unsqueeze": 1,
}

_SIGN_HINT = (
    "binarize with where(x >= 0, 1, -1) (weights_tools.layers.binary_sign): "
    "torch.sign gives 0 at 0, which a bit cannot hold"
)


@dataclass
class _Val:
    """A dynamic ONNX tensor, per image: channels, height, width, its ONNX rank (4, or 2 for a
    (N, C) vector), and what it holds: 'f32', 'pm1' (the ±1 output of a sign) or 'pm1pad'
    (that output padded with +1 by a Pad)."""

    name: str
    c: int
    h: int
    w: int
    rank: int = 4
    kind: str = "f32"
    source: Optional[str] = None  # for 'pm1pad': the padded sign value


@dataclass(eq=False)
class _Node:
    kind: str
    inputs: List[str]
    output: str
    src: onnx.NodeProto
    p: Dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.src.name or f"{self.src.op_type}:{self.src.output[0]}"


def _attrs(node: onnx.NodeProto) -> Dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Lowering:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
        )
        if self.opset is None:
            raise ConversionError("the ONNX model imports no default-domain opset")
        self.graph = model.graph
        self.consts: Dict[str, np.ndarray] = {}
        self.vals: Dict[str, _Val] = {}
        self.alias: Dict[str, str] = {}
        self.alias_rank: Dict[str, str] = {}  # a rank-changing alias (Flatten, Squeeze, ...)
        self.ge: Dict[str, Tuple[str, np.ndarray, onnx.NodeProto]] = {}
        self.nodes: List[_Node] = []
        self.inferred: Dict[str, Tuple] = {}
        self.output_name = ""
        self.input_name = ""
        self.warnings: List[str] = []

    # -- setup ---------------------------------------------------------------------------------

    def run(self) -> "_Lowering":
        self._infer_shapes()
        for init in self.graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ConversionError(
                f"the model must have exactly one (image) input, has {[i.name for i in inputs]}"
            )
        self._add_input(inputs[0])
        if len(self.graph.output) != 1:
            raise ConversionError(
                f"the model must have exactly one output, has {[o.name for o in self.graph.output]}"
            )
        self._fold_constants()
        for node in self._live_nodes():
            self._translate(node)
        self._finish_output()
        self._sign_to_bitpack()
        self._depthwise_pre_bias()
        self._remove_dead()
        self._group_depthwise()
        self._fold_affines()
        self._fuse_relu()
        self._remove_dead()
        return self

    def _infer_shapes(self) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception as e:  # a broken model still gets our own shape checks
            self.warnings.append(f"ONNX shape inference failed ({e}); continuing without it")
            return
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.inferred[vi.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim
                )

    def _add_input(self, vi: onnx.ValueInfoProto) -> None:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or None in dims[1:]:
            raise ConversionError(
                f"input {vi.name!r} must be float32 NCHW with static C, H, W; got elem_type "
                f"{t.elem_type}, dims {dims}"
            )
        self.input_name = vi.name
        self.vals[vi.name] = _Val(vi.name, dims[1], dims[2], dims[3])

    def _fold_constants(self) -> None:
        from onnx.reference import ReferenceEvaluator

        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            ins = [i for i in node.input if i]
            if not all(i in self.consts for i in ins):
                continue
            if node.op_type in (
                "RandomNormal",
                "RandomUniform",
                "RandomNormalLike",
                "RandomUniformLike",
                "Multinomial",
                "If",
                "Loop",
                "Scan",
            ):
                continue
            # numpy for the ops the exporter leaves most (the weight binarization), the
            # reference evaluator of onnx for everything else
            if node.op_type == "Identity":
                outs = [self.consts[node.input[0]]]
            elif node.op_type == "GreaterOrEqual":
                outs = [np.greater_equal(self.consts[node.input[0]], self.consts[node.input[1]])]
            elif node.op_type == "Where":
                c, a, b = (self.consts[i] for i in node.input)
                outs = [np.where(c, a, b).astype(np.result_type(a, b))]
            elif node.op_type == "Constant" and _attrs(node).keys() == {"value"}:
                outs = [numpy_helper.to_array(node.attribute[0].t)]
            else:
                try:
                    outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(
                        None, {i: self.consts[i] for i in ins}
                    )
                except Exception as e:
                    _fail(node, f"cannot evaluate this node on its constant inputs: {e}")
            for name, value in zip(node.output, outs):
                if name:
                    self.consts[name] = np.asarray(value)

    def _live_nodes(self) -> List[onnx.NodeProto]:
        producer = {}
        for node in self.graph.node:
            for o in node.output:
                if o:
                    producer[o] = node
        live = set()
        stack = [self.graph.output[0].name]
        while stack:
            name = stack.pop()
            if name in self.consts or name not in producer:
                continue
            node = producer[name]
            if id(node) in live:
                continue
            live.add(id(node))
            n_data = _DATA_INPUTS.get(node.op_type, len(node.input))
            stack.extend(i for i in list(node.input)[:n_data] if i)
        return [n for n in self.graph.node if id(n) in live]

    # -- helpers for translation -----------------------------------------------------------------

    def _resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def _is_const(self, name: str) -> bool:
        return name in self.consts

    def _value(self, node: onnx.NodeProto, name: str, allow_pm1: bool = False) -> _Val:
        if name in self.ge:
            _fail(
                node,
                "reads a GreaterOrEqual result; only the sign pattern "
                "Where(x >= t, 1, -1) is supported",
            )
        name = self._resolve(name)
        if name not in self.vals:
            if name in self.consts:
                _fail(node, f"input {name!r} is a constant where an activation is expected")
            _fail(node, f"input {name!r} is produced by an unsupported or unknown node")
        v = self.vals[name]
        if v.kind != "f32" and not allow_pm1:
            _fail(
                node,
                f"reads the ±1 output of a sign ({name!r}); the engine keeps sign "
                f"outputs as packed bits, which only a binary convolution (a Conv with "
                f"±1 weights, stride 1, 1x1 or 3x3) can read",
            )
        return v

    def _const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            _fail(node, f"missing {what}")
        name = node.input[index]
        if name not in self.consts:
            _fail(node, f"{what} ({name!r}) must be a constant (an initializer or foldable)")
        return self.consts[name]

    def _opt_const(self, node: onnx.NodeProto, index: int, what: str) -> Optional[np.ndarray]:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self._const(node, index, what)

    def _per_channel(self, node: onnx.NodeProto, c: np.ndarray, v: _Val, what: str) -> np.ndarray:
        """A constant that broadcasts per channel against v -> float32 [C]."""
        c = np.asarray(c)
        if c.dtype.kind != "f":
            _fail(node, f"{what} must be a float constant, got {c.dtype}")
        if c.ndim > v.rank:
            _fail(node, f"{what} of shape {c.shape} has more dims than the activation")
        shape = (1,) * (v.rank - c.ndim) + c.shape
        ok = shape[0] == 1 and shape[1] in (1, v.c) and all(d == 1 for d in shape[2:])
        if not ok:
            _fail(
                node,
                f"{what} of shape {c.shape} is not per-channel for an activation of "
                f"{v.c} channels (only a scalar, (C,1,1) or (1,C,1,1) broadcasts per "
                f"channel)",
            )
        return np.broadcast_to(c.reshape(-1).astype(np.float32), (v.c,)).copy()

    def _new_value(
        self,
        node: onnx.NodeProto,
        c: int,
        h: int,
        w: int,
        rank: int = 4,
        kind: str = "f32",
        index: int = 0,
    ) -> _Val:
        name = node.output[index]
        v = _Val(name, c, h, w, rank, kind)
        inferred = self.inferred.get(name)
        if inferred is not None and len(inferred) == rank and None not in inferred[1:]:
            mine = (c, h, w)[: rank - 1] if rank == 4 else (c,)
            if tuple(inferred[1:]) != mine:
                _fail(
                    node,
                    f"output shape {mine} computed for the engine differs from ONNX "
                    f"shape inference {tuple(inferred[1:])}: this configuration of the "
                    f"op is not supported",
                )
        self.vals[name] = v
        return v

    def _emit(
        self, kind: str, node: onnx.NodeProto, inputs: Sequence[str], out: _Val, **p
    ) -> _Node:
        n = _Node(kind, [self._resolve(i) for i in inputs], out.name, node, dict(p))
        self.nodes.append(n)
        return n

    def _alias(self, node: onnx.NodeProto, src: _Val, rank: Optional[int] = None) -> None:
        out = node.output[0]
        if rank is None or rank == src.rank:
            self.alias[out] = src.name
        else:  # same data, another ONNX rank ((N, C) <-> (N, C, 1, 1)): a new name for it
            self.vals[out] = _Val(out, src.c, src.h, src.w, rank, src.kind, src.source)
            self.alias_rank[out] = src.name

    # -- translation -----------------------------------------------------------------------------

    def _translate(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            _fail(node, f"ops of domain {node.domain!r} are not supported")
        handler = getattr(self, f"_op_{node.op_type}", None)
        if handler is None:
            _fail(
                node,
                f"op {node.op_type} is not supported by the engine (supported: Conv, "
                f"BatchNormalization, Add, Sub, Mul, Div, GreaterOrEqual+Where (sign), "
                f"PRelu, LeakyRelu, Relu, Sigmoid, Concat, Tile, Expand, AveragePool, "
                f"GlobalAveragePool, ReduceMean, Flatten, Reshape, Squeeze, Unsqueeze, "
                f"Gemm, MatMul, Pad (+1 padding of binary activations), Identity, "
                f"Dropout, Cast)",
            )
        for extra in node.output[1:]:
            if extra and node.op_type not in ("Dropout",):
                _fail(node, f"output {extra!r} beyond the first is not supported")
        handler(node)

    def _op_Identity(self, node):
        self._alias(node, self._value(node, node.input[0], allow_pm1=True))

    def _op_Dropout(self, node):
        self._alias(node, self._value(node, node.input[0]))

    def _op_Cast(self, node):
        if _attrs(node).get("to") != onnx.TensorProto.FLOAT:
            _fail(node, "only a Cast to float32 of a float32 activation is supported")
        self._alias(node, self._value(node, node.input[0]))

    def _op_Conv(self, node):
        a = _attrs(node)
        x = self._value(node, node.input[0], allow_pm1=True)
        w = self._const(node, 1, "the weight")
        b = self._opt_const(node, 2, "the bias")
        if x.rank != 4 or w.ndim != 4:
            _fail(node, "only 2-D convolutions (NCHW) are supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            _fail(node, "auto_pad is not supported; export with explicit pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            _fail(node, f"dilations {a['dilations']} are not supported")
        group = a.get("group", 1)
        co, ci_g, kh, kw = w.shape
        sh, sw = a.get("strides", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        bias = np.zeros(co) if b is None else b.astype(np.float64)
        if x.kind != "f32":
            self._binary_conv(node, x, w, bias, group, (sh, sw), (pt, pl, pb, pr))
        elif group == 1:
            if not (0 <= pt < kh and 0 <= pb < kh and 0 <= pl < kw and 0 <= pr < kw):
                _fail(
                    node, f"pads {[pt, pl, pb, pr]} must each be smaller than the kernel {kh}x{kw}"
                )
            ho = (x.h + pt + pb - kh) // sh + 1
            wo = (x.w + pl + pr - kw) // sw + 1
            if ci_g != x.c or ho < 1 or wo < 1:
                _fail(node, f"weight {w.shape} does not fit the input {(x.c, x.h, x.w)}")
            out = self._new_value(node, co, ho, wo)
            self._emit(
                "conv",
                node,
                [x.name],
                out,
                w=w.astype(np.float64),
                b=bias,
                stride=(sh, sw),
                pads=(pt, pl, pb, pr),
                relu=False,
            )
        elif group == x.c and ci_g == 1:
            if co != x.c:
                _fail(
                    node,
                    f"a depthwise conv with channel multiplier {co // x.c} in one Conv "
                    f"orders its outputs channel-interleaved; the engine's DWCONV3X3 is "
                    f"block-major: use {co // x.c} separate depthwise convs and a Concat",
                )
            if (kh, kw) != (3, 3) or (pt, pl, pb, pr) != (1, 1, 1, 1) or (sh, sw) not in DW_STRIDES:
                _fail(
                    node,
                    f"depthwise convs must be 3x3 with padding 1 and stride in "
                    f"{DW_STRIDES}; got kernel {kh}x{kw}, pads {[pt, pl, pb, pr]}, "
                    f"stride {(sh, sw)}",
                )
            out = self._new_value(node, co, -(-x.h // sh), -(-x.w // sw))
            self._emit(
                "dwconv",
                node,
                [x.name],
                out,
                w=w.reshape(co, 9).astype(np.float32),
                scale=np.ones(co),
                bias=bias,
                pre_bias=None,
                stride=(sh, sw),
                k=1,
            )
        else:
            _fail(
                node,
                f"grouped convolution (group={group}) is not supported; only group=1 "
                f"and depthwise (group=C_in=C_out)",
            )

    def _binary_conv(self, node, x: _Val, w, bias, group, stride, pads):
        if not np.all((w == 1) | (w == -1)):
            _fail(
                node,
                "its input is a sign (±1), so it must be a binary conv, but its weights "
                "are not all exactly ±1: a model with float weights on binary "
                "activations (training stage 1) cannot run on the engine; convert the "
                "stage-2 model (binary weights, weights_tools.zoo.set_training_stage)",
            )
        co, ci, kh, kw = w.shape
        if group != 1 or stride != (1, 1) or kh != kw or kh not in (1, 3):
            _fail(
                node,
                f"binary convs must be 1x1 or 3x3, stride 1, group 1; got kernel "
                f"{kh}x{kw}, stride {stride}, group {group}",
            )
        if x.kind == "pm1pad":
            if kh != 3 or pads != (0, 0, 0, 0):
                _fail(node, "a +1-padded binary input needs a 3x3 conv with pads 0")
            source, pad_mode = self.vals[x.source], 1
        else:
            if pads != ((1,) * 4 if kh == 3 else (0,) * 4):
                _fail(
                    node,
                    f"a {kh}x{kh} binary conv needs pads {1 if kh == 3 else 0} on every "
                    f"side ('same' output), got {list(pads)}",
                )
            source, pad_mode = x, 0
        if ci != source.c:
            _fail(node, f"weight {w.shape} does not fit the input of {source.c} channels")
        out = self._new_value(node, co, source.h, source.w)
        self._emit(
            "bconv",
            node,
            [source.name],
            out,
            w=w.astype(np.int8),
            k=kh,
            pad_mode=pad_mode,
            scale=np.ones(co),
            bias=bias,
        )

    def _op_Pad(self, node):
        x = self._value(node, node.input[0], allow_pm1=True)
        a = _attrs(node)
        mode = a.get("mode", b"constant")
        pads = a.get("pads") if self.opset < 11 else self._const(node, 1, "pads")
        value = a.get("value", 0.0) if self.opset < 11 else self._opt_const(node, 2, "value")
        value = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
        axes = self._opt_const(node, 3, "axes")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        if axes is not None:
            full = [0] * 8
            for j, ax in enumerate(np.asarray(axes).reshape(-1)):
                ax = int(ax) % 4
                full[ax], full[ax + 4] = pads[j], pads[j + len(axes)]
            pads = full
        if (
            x.kind != "pm1"
            or mode not in (b"constant", "constant")
            or value != 1.0
            or pads != [0, 0, 1, 1, 0, 0, 1, 1]
        ):
            _fail(
                node,
                "Pad is supported only as the +1 padding (constant 1, one pixel on each "
                "side of H and W) of a sign's ±1 output before a 3x3 binary conv "
                "(one padding)",
            )
        out = self._new_value(node, x.c, x.h + 2, x.w + 2, kind="pm1pad")
        out.source = x.name

    def _op_BatchNormalization(self, node):
        a = _attrs(node)
        if a.get("training_mode", 0):
            _fail(node, "training_mode=1 is not supported; export the model in eval mode")
        x = self._value(node, node.input[0])
        gamma, beta, mean, var = (
            self._const(node, i, n).astype(np.float64)
            for i, n in enumerate(("scale", "bias", "mean", "var"), start=1)
        )
        eps = float(a.get("epsilon", 1e-5))
        if any(np.shape(t) != (x.c,) for t in (gamma, beta, mean, var)):
            _fail(node, f"parameters must be per-channel ({x.c},)")
        scale = gamma / np.sqrt(var + eps)
        out = self._new_value(node, x.c, x.h, x.w, x.rank)
        self._emit(
            "affine", node, [x.name], out, scale=scale, bias=beta - mean * scale, pure_add=False
        )

    def _binary_operands(self, node):
        a, b = node.input[0], node.input[1]
        if self._is_const(a) and self._is_const(b):
            _fail(node, "both operands constant (should have been folded)")
        return a, b

    def _op_Add(self, node):
        a, b = self._binary_operands(node)
        if self._is_const(a) or self._is_const(b):
            x_name, c = (b, self.consts[a]) if self._is_const(a) else (a, self.consts[b])
            x = self._value(node, x_name)
            c = self._per_channel(node, c, x, "the added constant")
            out = self._new_value(node, x.c, x.h, x.w, x.rank)
            self._emit("affine", node, [x.name], out, scale=np.ones(x.c), bias=c, pure_add=True)
            return
        x, y = self._value(node, a), self._value(node, b)
        if (x.c, x.h, x.w) != (y.c, y.h, y.w):
            _fail(
                node,
                f"adds activations of different shapes {(x.c, x.h, x.w)} and "
                f"{(y.c, y.h, y.w)}; only same-shape Add is supported",
            )
        out = self._new_value(node, x.c, x.h, x.w, max(x.rank, y.rank))
        self._emit("add", node, [x.name, y.name], out)

    def _op_Sub(self, node):
        a, b = self._binary_operands(node)
        if self._is_const(b):
            x = self._value(node, a)
            c = self._per_channel(node, self.consts[b], x, "the subtracted constant")
            out = self._new_value(node, x.c, x.h, x.w, x.rank)
            self._emit("affine", node, [x.name], out, scale=np.ones(x.c), bias=-c, pure_add=True)
        elif self._is_const(a):
            x = self._value(node, b)
            c = self._per_channel(node, self.consts[a], x, "the constant")
            out = self._new_value(node, x.c, x.h, x.w, x.rank)
            self._emit(
                "affine",
                node,
                [x.name],
                out,
                scale=-np.ones(x.c),
                bias=c.astype(np.float64),
                pure_add=False,
            )
        else:
            _fail(node, "subtracting one activation from another is not supported")

    def _op_Mul(self, node):
        a, b = self._binary_operands(node)
        if self._is_const(a) or self._is_const(b):
            x_name, c = (b, self.consts[a]) if self._is_const(a) else (a, self.consts[b])
            x = self._value(node, x_name)
            c = self._per_channel(node, c, x, "the constant factor")
            out = self._new_value(node, x.c, x.h, x.w, x.rank)
            self._emit(
                "affine",
                node,
                [x.name],
                out,
                scale=c.astype(np.float64),
                bias=np.zeros(x.c),
                pure_add=False,
            )
            return
        x, s = self._value(node, a), self._value(node, b)
        if (s.h, s.w) != (1, 1) and (x.h, x.w) == (1, 1):
            x, s = s, x
        if s.c != x.c or (s.h, s.w) != (1, 1):
            _fail(
                node,
                f"multiplies activations of shapes {(x.c, x.h, x.w)} and "
                f"{(s.c, s.h, s.w)}; only a per-channel scaling by a (C, 1, 1) "
                f"activation (SE) is supported",
            )
        out = self._new_value(node, x.c, x.h, x.w, x.rank)
        self._emit("mul_channel", node, [x.name, s.name], out)

    def _op_Div(self, node):
        a, b = self._binary_operands(node)
        if not self._is_const(b):
            _fail(node, "only division by a per-channel constant is supported")
        x = self._value(node, a)
        c = self._per_channel(node, self.consts[b], x, "the divisor")
        out = self._new_value(node, x.c, x.h, x.w, x.rank)
        self._emit(
            "affine",
            node,
            [x.name],
            out,
            scale=1.0 / c.astype(np.float64),
            bias=np.zeros(x.c),
            pure_add=False,
        )

    def _op_GreaterOrEqual(self, node):
        a, b = node.input[0], node.input[1]
        if not self._is_const(b) or self._is_const(a):
            _fail(
                node,
                f"only GreaterOrEqual(activation, constant) is supported, as the sign "
                f"pattern; {_SIGN_HINT}",
            )
        x = self._value(node, a)
        t = self._per_channel(node, self.consts[b], x, "the threshold")
        self.ge[node.output[0]] = (x.name, t, node)

    def _op_Where(self, node):
        cond = node.input[0]
        hi, lo = node.input[1], node.input[2]
        ok = (
            cond in self.ge
            and self._is_const(hi)
            and self._is_const(lo)
            and np.all(self.consts[hi] == 1)
            and np.all(self.consts[lo] == -1)
            and np.size(self.consts[hi]) == 1
            and np.size(self.consts[lo]) == 1
        )
        if not ok:
            _fail(
                node,
                f"Where is supported only as the sign pattern Where(x >= t, 1, -1); {_SIGN_HINT}",
            )
        x_name, t, _ = self.ge[cond]
        x = self.vals[x_name]
        out = self._new_value(node, x.c, x.h, x.w, x.rank, kind="pm1")
        self._emit("sign", node, [x_name], out, threshold=t)

    def _op_Sign(self, node):
        _fail(node, f"Sign is not supported: {_SIGN_HINT}")

    def _op_Relu(self, node):
        x = self._value(node, node.input[0])
        self._emit("relu", node, [x.name], self._new_value(node, x.c, x.h, x.w, x.rank))

    def _op_Sigmoid(self, node):
        x = self._value(node, node.input[0])
        self._emit("sigmoid", node, [x.name], self._new_value(node, x.c, x.h, x.w, x.rank))

    def _op_PRelu(self, node):
        x = self._value(node, node.input[0])
        slope = self._per_channel(node, self._const(node, 1, "the slope"), x, "the slope")
        self._emit(
            "prelu", node, [x.name], self._new_value(node, x.c, x.h, x.w, x.rank), slope=slope
        )

    def _op_LeakyRelu(self, node):
        x = self._value(node, node.input[0])
        slope = np.full(x.c, _attrs(node).get("alpha", 0.01), dtype=np.float32)
        self._emit(
            "prelu", node, [x.name], self._new_value(node, x.c, x.h, x.w, x.rank), slope=slope
        )

    def _op_Concat(self, node):
        xs = [self._value(node, i) for i in node.input]
        rank = xs[0].rank
        axis = _attrs(node).get("axis")
        if axis is None or axis % rank != 1 or any(x.rank != rank for x in xs):
            _fail(node, f"only a Concat along channels (axis 1) is supported, got axis {axis}")
        if any((x.h, x.w) != (xs[0].h, xs[0].w) for x in xs):
            _fail(node, "concatenated activations differ in height or width")
        out = self._new_value(node, sum(x.c for x in xs), xs[0].h, xs[0].w, rank)
        self._emit("concat", node, [x.name for x in xs], out)

    def _op_Tile(self, node):
        x = self._value(node, node.input[0])
        reps = [int(r) for r in self._const(node, 1, "repeats").reshape(-1)]
        if len(reps) != x.rank or any(r != 1 for j, r in enumerate(reps) if j != 1) or reps[1] < 1:
            _fail(
                node,
                f"only a repeat along channels is supported (repeats [1, k, 1, 1]), got {reps}",
            )
        if reps[1] == 1:
            self._alias(node, x)
            return
        out = self._new_value(node, x.c * reps[1], x.h, x.w, x.rank)
        self._emit("concat", node, [x.name] * reps[1], out)

    def _op_Expand(self, node):
        x = self._value(node, node.input[0])
        shape = self._opt_const(node, 1, "the shape") if node.input[1] in self.consts else None
        dims = (None, x.c, x.h, x.w) if x.rank == 4 else (None, x.c)
        if shape is not None:
            shape = [int(s) for s in shape.reshape(-1)]
            aligned = [1] * (len(dims) - len(shape)) + shape
            ok = len(shape) <= len(dims) and all(
                s == 1 or (j > 0 and s == dims[j]) for j, s in enumerate(aligned)
            )
        else:
            inferred = self.inferred.get(node.output[0])
            ok = inferred is not None and tuple(inferred[1:]) == tuple(dims[1:])
        if not ok:
            _fail(
                node, f"only an Expand that leaves the shape unchanged is supported (shape {shape})"
            )
        self._alias(node, x)

    def _op_AveragePool(self, node):
        x = self._value(node, node.input[0])
        a = _attrs(node)
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        ceil_mode = a.get("ceil_mode", 0)
        include_pad = a.get("count_include_pad", 0)
        if (
            a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(pads)
            or any(d != 1 for d in a.get("dilations", [1, 1]))
            or kh > x.h
            or kw > x.w
        ):
            _fail(node, "AveragePool must have no padding, no dilation and fit the input")
        ho, wo = -(-(x.h - kh) // sh) + 1, -(-(x.w - kw) // sw) + 1
        if (ho - 1) * sh >= x.h or (wo - 1) * sw >= x.w:
            _fail(
                node,
                f"stride {sh}x{sw} larger than the kernel {kh}x{kw} leaves an empty "
                f"last window in ceil mode",
            )
        partial = (x.h - kh) % sh != 0 or (x.w - kw) % sw != 0
        if partial and not ceil_mode:
            _fail(
                node,
                "floor-mode pooling that drops the last row/column is not supported "
                "(the engine pools in ceil mode): use ceil_mode=True",
            )
        if partial and include_pad:
            _fail(
                node,
                "ceil-mode windows that cross the edge must average only the pixels "
                "they cover: use count_include_pad=False",
            )
        out = self._new_value(node, x.c, ho, wo)
        self._emit("avgpool", node, [x.name], out, kernel=(kh, kw), stride=(sh, sw))

    def _op_GlobalAveragePool(self, node):
        x = self._value(node, node.input[0])
        self._emit("gap", node, [x.name], self._new_value(node, x.c, 1, 1))

    def _op_ReduceMean(self, node):
        x = self._value(node, node.input[0])
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._const(node, 1, "axes").reshape(-1).tolist()
        if x.rank != 4 or axes is None or sorted(int(ax) % 4 for ax in axes) != [2, 3]:
            _fail(node, f"only a mean over H and W (axes (2, 3)) is supported, got {axes}")
        rank = 4 if a.get("keepdims", 1) else 2
        self._emit("gap", node, [x.name], self._new_value(node, x.c, 1, 1, rank))

    def _vector(self, node, x: _Val) -> None:
        if (x.h, x.w) != (1, 1):
            _fail(
                node,
                f"reshaping a {x.c}x{x.h}x{x.w} activation is not supported (the "
                f"engine is NHWC, so the element order would change); pool to 1x1 "
                f"first",
            )

    def _op_Flatten(self, node):
        x = self._value(node, node.input[0])
        if _attrs(node).get("axis", 1) != 1:
            _fail(node, "only Flatten(axis=1) is supported")
        self._vector(node, x)
        self._alias(node, x, rank=2)

    def _op_Reshape(self, node):
        x = self._value(node, node.input[0])
        self._vector(node, x)
        if node.input[1] in self.consts:
            shape = [int(s) for s in self.consts[node.input[1]].reshape(-1)]
            in_dims = [None, x.c] + ([1, 1] if x.rank == 4 else [])
            dims = [in_dims[j] if s == 0 and j < len(in_dims) else s for j, s in enumerate(shape)]
            rest = dims[1:]
            if -1 in rest and rest.count(-1) == 1:
                known = int(np.prod([d for d in rest if d != -1]))
                rest = [x.c // known if d == -1 and known and x.c % known == 0 else d for d in rest]
            if rest in ([x.c], [x.c, 1, 1]):
                self._alias(node, x, rank=len(shape))
                return
            _fail(node, f"only a Reshape to (N, C) or (N, C, 1, 1) is supported, got {shape}")
        inferred = self.inferred.get(node.output[0])
        if inferred is not None and len(inferred) in (2, 4):
            self._alias(node, x, rank=len(inferred))
        else:
            _fail(
                node,
                "a Reshape with a computed shape is supported only when its output "
                "rank is known (2 or 4)",
            )

    def _axes(self, node) -> List[int]:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._const(node, 1, "axes").reshape(-1).tolist()
        return [int(a) for a in (axes or [])]

    def _op_Squeeze(self, node):
        x = self._value(node, node.input[0])
        self._vector(node, x)
        if x.rank != 4 or sorted(a % 4 for a in self._axes(node)) != [2, 3]:
            _fail(node, "only Squeeze of axes (2, 3) of a (N, C, 1, 1) activation is supported")
        self._alias(node, x, rank=2)

    def _op_Unsqueeze(self, node):
        x = self._value(node, node.input[0])
        if x.rank != 2 or sorted(a % 4 for a in self._axes(node)) != [2, 3]:
            _fail(node, "only Unsqueeze of axes (2, 3) of a (N, C) activation is supported")
        self._alias(node, x, rank=4)

    def _fc_input(self, node) -> _Val:
        x = self._value(node, node.input[0])
        if x.rank != 2:
            _fail(node, "the input of a fully connected layer must be (N, C) (Flatten first)")
        return x

    def _op_Gemm(self, node):
        x = self._fc_input(node)
        a = _attrs(node)
        if a.get("transA", 0):
            _fail(node, "transA=1 is not supported")
        w = self._const(node, 1, "the weight").astype(np.float64)
        w = w if a.get("transB", 0) else w.T
        c = self._opt_const(node, 2, "the bias")
        o = w.shape[0]
        if w.ndim != 2 or w.shape[1] != x.c:
            _fail(node, f"weight {w.shape} does not fit an input of {x.c} features")
        if c is None:
            bias = np.zeros(o)
        elif c.size in (1, o):
            bias = np.broadcast_to(c.astype(np.float64).reshape(-1), (o,)) * a.get("beta", 1.0)
        else:
            _fail(node, f"bias of shape {c.shape} is not one value per output ({o})")
        out = self._new_value(node, o, 1, 1, rank=2)
        self._emit("fc", node, [x.name], out, w=w * a.get("alpha", 1.0), b=bias)

    def _op_MatMul(self, node):
        x = self._fc_input(node)
        w = self._const(node, 1, "the weight").astype(np.float64)
        if w.ndim != 2 or w.shape[0] != x.c:
            _fail(node, f"weight {w.shape} does not fit an input of {x.c} features")
        out = self._new_value(node, w.shape[1], 1, 1, rank=2)
        self._emit("fc", node, [x.name], out, w=w.T.copy(), b=np.zeros(w.shape[1]))

    # -- output ---------------------------------------------------------------------------------

    def _finish_output(self) -> None:
        name = self.graph.output[0].name
        if name in self.consts:
            raise ConversionError(f"the output {name!r} is a constant")
        if name in self.ge or self._resolve(name) not in self.vals:
            raise ConversionError(f"the output {name!r} is not produced by a supported op")
        v = self.vals[self._resolve(name)]
        if v.kind != "f32":
            raise ConversionError(
                f"the output {name!r} is a sign's ±1 output; the engine's output must be float"
            )
        self.output_name = self._canonical(name)
        # Rank aliases (Flatten, Reshape, Squeeze...) are the same data: resolve everything to
        # the original value names.
        for n in self.nodes:
            n.inputs = [self._canonical(i) for i in n.inputs]

    def _canonical(self, name: str) -> str:
        while True:
            name = self._resolve(name)
            if name in self.alias_rank:
                name = self.alias_rank[name]
            else:
                return name

    # -- rewrites -----------------------------------------------------------------------------

    def _producers(self) -> Dict[str, _Node]:
        return {n.output: n for n in self.nodes}

    def _consumers(self) -> Dict[str, List[_Node]]:
        uses: Dict[str, List[_Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                uses.setdefault(i, []).append(n)
        return uses

    def _replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        if self.output_name == old:
            self.output_name = new

    def _sign_to_bitpack(self) -> None:
        prod = self._producers()
        seen: Dict[Tuple[str, bytes], str] = {}
        for n in list(self.nodes):
            if n.kind != "sign":
                continue
            t = n.p.pop("threshold").astype(np.float32)
            before = prod.get(n.inputs[0])
            if (
                before is not None
                and before.kind == "affine"
                and before.p["pure_add"]
                and np.all(t == 0)
            ):
                # x + c >= 0  <=>  x >= -c, exactly (bit_contract.h)
                t = (-before.p["bias"].astype(np.float32)).astype(np.float32)
                n.inputs = [before.inputs[0]]
            n.kind = "bitpack"
            n.p["threshold"] = t
            key = (n.inputs[0], t.tobytes())
            if key in seen:
                self.nodes.remove(n)
                self._replace_uses(n.output, seen[key])
            else:
                seen[key] = n.output

    def _depthwise_pre_bias(self) -> None:
        prod = self._producers()
        for n in self.nodes:
            if n.kind != "dwconv":
                continue
            before = prod.get(n.inputs[0])
            if before is not None and before.kind == "affine" and before.p["pure_add"]:
                n.p["pre_bias"] = before.p["bias"].astype(np.float32)
                n.inputs = [before.inputs[0]]

    def _remove_dead(self) -> None:
        while True:
            uses = self._consumers()
            dead = [n for n in self.nodes if n.output not in uses and n.output != self.output_name]
            if not dead:
                return
            for n in dead:
                self.nodes.remove(n)

    def _group_depthwise(self) -> None:
        for concat in [n for n in self.nodes if n.kind == "concat"]:
            prod = self._producers()
            uses = self._consumers()

            def key(name: str, prod=prod, uses=uses, concat=concat):
                d = prod.get(name)
                if (
                    d is None
                    or d.kind != "dwconv"
                    or len(uses.get(name, [])) != 1
                    or concat.inputs.count(name) != 1
                    or name == self.output_name
                ):
                    return None
                pb = d.p["pre_bias"]
                return (d.inputs[0], None if pb is None else pb.tobytes(), d.p["stride"])

            new_inputs: List[str] = []
            i = 0
            while i < len(concat.inputs):
                k0 = key(concat.inputs[i])
                j = i + 1
                while k0 is not None and j < len(concat.inputs) and key(concat.inputs[j]) == k0:
                    j += 1
                if j - i >= 2:
                    run = [prod[name] for name in concat.inputs[i:j]]
                    first = run[0]
                    first.p["w"] = np.concatenate([d.p["w"] for d in run])
                    first.p["scale"] = np.concatenate([d.p["scale"] for d in run])
                    first.p["bias"] = np.concatenate([d.p["bias"] for d in run])
                    first.p["k"] = sum(d.p["k"] for d in run)
                    v = self.vals[first.output]
                    v.c = first.p["w"].shape[0]
                    for d in run[1:]:
                        self.nodes.remove(d)
                    new_inputs.append(first.output)
                else:
                    new_inputs.extend(concat.inputs[i:j])
                i = j
            concat.inputs = new_inputs
            if len(new_inputs) == 1:
                self.nodes.remove(concat)
                self._replace_uses(concat.output, new_inputs[0])

    def _fold_affines(self) -> None:
        changed = True
        while changed:
            changed = False
            prod = self._producers()
            uses = self._consumers()
            for a in [n for n in self.nodes if n.kind == "affine"]:
                x = a.inputs[0]
                p = prod.get(x)
                if p is None or len(uses.get(x, [])) != 1 or x == self.output_name:
                    continue
                s, t = a.p["scale"].astype(np.float64), a.p["bias"].astype(np.float64)
                if p.kind in ("conv", "fc"):
                    shape = (-1,) + (1,) * (p.p["w"].ndim - 1)
                    p.p["w"] = p.p["w"] * s.reshape(shape)
                    p.p["b"] = p.p["b"] * s + t
                elif p.kind in ("dwconv", "bconv"):
                    p.p["scale"] = p.p["scale"] * s
                    p.p["bias"] = p.p["bias"] * s + t
                elif p.kind == "affine":
                    p.p["scale"] = p.p["scale"] * s
                    p.p["bias"] = p.p["bias"] * s + t
                    p.p["pure_add"] = False
                else:
                    continue
                p.output = a.output
                self.nodes.remove(a)
                changed = True
                break

    def _fuse_relu(self) -> None:
        prod = self._producers()
        uses = self._consumers()
        for r in [n for n in self.nodes if n.kind == "relu"]:
            p = prod.get(r.inputs[0])
            if (
                p is not None
                and p.kind == "conv"
                and not p.p["relu"]
                and len(uses[r.inputs[0]]) == 1
                and r.inputs[0] != self.output_name
            ):
                p.p["relu"] = True
                p.output = r.output
                self.nodes.remove(r)

    # -- emission ------------------------------------------------------------------------------

    def to_graph(self, model_name: str = "") -> Graph:
        tensors: List[Tensor] = []
        values: List[Value] = []
        index: Dict[str, int] = {}
        ops: List[Op] = []

        def value(name: str, dtype: DType = DType.F32) -> int:
            if name not in index:
                v = self.vals[name]
                index[name] = len(values)
                values.append(Value(name, dtype, v.h, v.w, v.c))
            return index[name]

        def tensor(name: str, dtype: DType, data: Optional[np.ndarray]) -> Optional[int]:
            if data is None:
                return None
            tensors.append(Tensor(name, dtype, data))
            return len(tensors) - 1

        def f32(name: str, data) -> Optional[int]:
            return (
                None
                if data is None
                else tensor(name, DType.F32, np.asarray(data, dtype=np.float32))
            )

        value(self.input_name)
        for n in self.nodes:
            name = n.name
            ins = [index[i] for i in n.inputs]
            p = n.p
            out_dtype = DType.BITS if n.kind == "bitpack" else DType.F32
            out = value(n.output, out_dtype)
            if n.kind == "conv":
                w = p["w"].transpose(0, 2, 3, 1)  # [Co, kh, kw, Ci]
                kh, kw = w.shape[1:3]
                ops.append(
                    Op(
                        OpType.CONV2D,
                        name,
                        ins,
                        [out],
                        [f32(name + ".weight", w), f32(name + ".bias", p["b"])],
                        [kh, kw, *p["stride"], *p["pads"], int(p["relu"])],
                    )
                )
            elif n.kind == "dwconv":
                ops.append(
                    Op(
                        OpType.DWCONV3X3,
                        name,
                        ins,
                        [out],
                        [
                            f32(name + ".pre_bias", p["pre_bias"]),
                            f32(name + ".weight", p["w"]),
                            None,
                            f32(name + ".scale", p["scale"]),
                            f32(name + ".bias", p["bias"]),
                            None,
                        ],
                        [*p["stride"], p["k"]],
                    )
                )
            elif n.kind == "bitpack":
                ops.append(
                    Op(OpType.BITPACK, name, ins, [out], [f32(name + ".threshold", p["threshold"])])
                )
            elif n.kind == "bconv":
                packed = pack_signs(p["w"].transpose(0, 2, 3, 1))  # [Co, k, k, words]
                ops.append(
                    Op(
                        OpType.BCONV2D,
                        name,
                        ins,
                        [out],
                        [
                            tensor(name + ".weight", DType.BITS, packed),
                            f32(name + ".scale", p["scale"]),
                            f32(name + ".bias", p["bias"]),
                        ],
                        [p["k"], p["pad_mode"]],
                    )
                )
            elif n.kind == "affine":
                ops.append(
                    Op(
                        OpType.AFFINE,
                        name,
                        ins,
                        [out],
                        [f32(name + ".scale", p["scale"]), f32(name + ".bias", p["bias"])],
                    )
                )
            elif n.kind == "prelu":
                ops.append(Op(OpType.PRELU, name, ins, [out], [f32(name + ".slope", p["slope"])]))
            elif n.kind in ("relu", "sigmoid", "add", "mul_channel", "gap", "concat"):
                op_type = {
                    "relu": OpType.RELU,
                    "sigmoid": OpType.SIGMOID,
                    "add": OpType.ADD,
                    "mul_channel": OpType.MUL_CHANNEL,
                    "gap": OpType.GLOBAL_AVGPOOL,
                    "concat": OpType.CONCAT,
                }[n.kind]
                ops.append(Op(op_type, name, ins, [out]))
            elif n.kind == "avgpool":
                ops.append(Op(OpType.AVGPOOL, name, ins, [out], [], [*p["kernel"], *p["stride"]]))
            elif n.kind == "fc":
                ops.append(
                    Op(
                        OpType.FC,
                        name,
                        ins,
                        [out],
                        [f32(name + ".weight", p["w"]), None, f32(name + ".bias", p["b"])],
                        [int(FCEncoding.FP32)],
                    )
                )
            else:  # pragma: no cover - every kind is emitted above
                raise AssertionError(n.kind)
        if not ops:
            raise ConversionError("the model lowers to no op at all")
        inp = self.vals[self.input_name]
        return Graph(
            tensors=tensors,
            values=values,
            ops=ops,
            input_value=0,
            output_value=index[self.output_name],
            preprocessing=Preprocessing.for_input_size(inp.h, inp.w),
            model_name=model_name,
        )


def fold_onnx_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every constant subgraph evaluated into an initializer (step 2 of
    the module doc). Exact; ONNX Runtime then no longer binarizes the weights (GreaterOrEqual/
    Where on initializers) at every session start or run."""
    low = _Lowering(model)
    for init in model.graph.initializer:
        low.consts[init.name] = numpy_helper.to_array(init)
    inputs = [i for i in model.graph.input if i.name not in low.consts]
    low._fold_constants()
    nodes = [n for n in model.graph.node if not all(o in low.consts for o in n.output if o)]
    needed = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    inits = [
        numpy_helper.from_array(np.asarray(low.consts[name]), name)
        for name in sorted(needed)
        if name in low.consts
    ]
    graph = onnx.helper.make_graph(
        nodes, model.graph.name, inputs, list(model.graph.output), initializer=inits
    )
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    folded.graph.CopyFrom(graph)
    return folded


def lower_onnx(
    model: onnx.ModelProto, model_name: str = "", warnings: Optional[List[str]] = None
) -> Graph:
    """Lower an ONNX model to the engine's graph (FP32 FC and depthwise); see the module doc.
    Notes for the user (not errors) are appended to `warnings` when given."""
    lowering = _Lowering(model).run()
    if warnings is not None:
        warnings.extend(lowering.warnings)
    return lowering.to_graph(model_name)
