"""Translation: ONNX nodes -> the intermediate graph (`ir.py`), one function per ONNX op type.

`translate(model)` infers shapes (a cross-check of the shapes computed here), folds constants
and drops dead nodes (`constants.py`), then translates the live nodes in graph order. Every ONNX
node is either translated, folded into a pattern, or rejected with a `ConversionError` naming
it. A translation function is registered for its op type with `@translates("OpType")` in
`TRANSLATORS`; it reads its inputs through the `Translator` (which resolves aliases and checks
activation vs constant), and either emits nodes, records an alias (ops that do not change the
data: Identity, Dropout, Flatten, ...), or records a pattern part for a later node (the
GreaterOrEqual of a sign).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx

from ..qbw import DW_STRIDES, avgpool2d_out_size
from .constants import attrs, default_opset, fold_constants, initializers, live_nodes
from .errors import NO_OP_FIX, Blocker, ConversionError, fail, fix_for, node_label
from .ir import IRGraph, Node, ValueInfo
from .passes import ONNX_PASSES
from .se_weights import compact_encoding

__all__ = [
    "PLACEHOLDER",
    "TRANSLATORS",
    "Translator",
    "translate",
    "translate_collecting",
    "translates",
]

# The IR node kind that stands, in a check (`Translator(collect=True)`), for an ONNX node whose
# translation failed: it gives the node's outputs their ONNX-inferred shapes so that the nodes
# after it are still checked. Never emitted (`pipeline.check_lowering` replaces it).
PLACEHOLDER = "unsupported"

_SIGN_HINT = (
    "binarize with where(x >= 0, 1, -1) (weights_tools.layers.binary_sign): "
    "torch.sign gives 0 at 0, which a bit cannot hold"
)

TranslateFn = Callable[["Translator", onnx.NodeProto], None]

# ONNX op type -> its translation function
TRANSLATORS: Dict[str, TranslateFn] = {}


def translates(op_type: str) -> Callable[[TranslateFn], TranslateFn]:
    def register(fn: TranslateFn) -> TranslateFn:
        if op_type in TRANSLATORS:
            raise AssertionError(f"two translations for {op_type}")
        TRANSLATORS[op_type] = fn
        return fn

    return register


@dataclass
class Indicator:
    """A pending sign pattern: the value ``scale * [x >= threshold] + offset`` (a bool when
    `is_bool`), computed by GreaterOrEqual and scalar Cast/Mul/Add/Sub on it. It becomes a sign
    once it is ``Where(., 1, -1)`` or reaches scale 2, offset -1 (``(x >= t).float() * 2 - 1``);
    anything else reading it is refused."""

    x: str
    threshold: np.ndarray
    node: onnx.NodeProto
    scale: float = 1.0
    offset: float = 0.0
    is_bool: bool = True


# Ops whose output is a float activation of a kind and shape that do not depend on what their
# input was, once they accept it: in a check, values after them no longer follow from an earlier
# failure (see `Translator.tainted`).
_TAINT_BARRIERS = (
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "ReduceMean",
    "Sign",
    "Where",
)

# Outputs beyond the first that a translation may leave unused.
_EXTRA_OUTPUTS_OK = ("Dropout",)


class Translator:
    """The state of one translation: constants, values, aliases, pending patterns, nodes."""

    def __init__(self, model: onnx.ModelProto, collect: bool = False):
        """`collect`: check mode. A node whose translation fails is recorded in `blockers` and
        replaced by a `PLACEHOLDER` node, and translation goes on (see `translate_node`)."""
        self.model = model
        self.collect = collect
        self.blockers: List[Blocker] = []
        # values computed from a failed node's output (check mode): a refusal of a node reading
        # one is a consequence of that failure, not a blocker of its own. The placeholder of a
        # failed node has the right shape but maybe not the right kind (a float where a sign's
        # ±1 would be), so what follows it is suspect up to an op whose output kind does not
        # depend on its input's (`_TAINT_BARRIERS`): the blockers after that are the model's own.
        self.tainted: Set[str] = set()
        self.opset = default_opset(model)
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        for rewrite in ONNX_PASSES:  # on a copy: the caller's model is not changed
            rewrite(self.model.graph)
        self.graph = self.model.graph
        self.onnx_producer: Dict[str, onnx.NodeProto] = {
            o: n for n in self.graph.node for o in n.output if o
        }
        # constants that stand for a tensor of an activation's shape (ones_like, expand_as):
        # name -> that activation
        self.broadcast_to: Dict[str, str] = {}
        self.consts: Dict[str, np.ndarray] = {}
        self.values: Dict[str, ValueInfo] = {}
        self.aliases: Dict[str, str] = {}
        self.rank_aliases: Dict[str, str] = {}  # a rank-changing alias (Flatten, Squeeze, ...)
        # a flattened map -> its features as a plain vector in PyTorch's order (`feature_vector`)
        self.feature_vectors: Dict[str, str] = {}
        # pending sign patterns (GreaterOrEqual and arithmetic on it): name -> Indicator
        self.ge: Dict[str, Indicator] = {}
        # the output of `x.mean(3)`, read only by the mean over H after it: name -> (x, keepdims)
        self.row_means: Dict[str, Tuple[str, bool]] = {}
        self.nodes: List[Node] = []
        self.inferred: Dict[str, Tuple] = {}
        # the model shapes are re-inferred on after a ceil-mode AveragePool whose last window
        # ONNX shape inference keeps and PyTorch drops (`_reinfer_dropping_last_window`)
        self.stand_in_shape_model: Optional[onnx.ModelProto] = None
        self.input_name = ""
        self.warnings: List[str] = []

    # -- the whole translation -------------------------------------------------------------------

    def run(self) -> IRGraph:
        self._infer_shapes()
        self.consts.update(initializers(self.graph))
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
        fold_constants(self.graph, self.consts, self.opset)
        for node in live_nodes(self.graph, self.consts):
            self.translate_node(node)
        return self._finish()

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
        self.values[vi.name] = ValueInfo(vi.name, dims[1], dims[2], dims[3])

    def translate_node(self, node: onnx.NodeProto) -> None:
        """Translate one ONNX node. In check mode (`collect`) a failure is recorded as a blocker
        unless it is a consequence of an earlier one (the node reads a value computed from a
        failed node, and its op type is one the engine has: an op type it lacks is a blocker
        wherever it is), the node's partial output is dropped, a placeholder stands for it,
        and translation goes on."""
        if not self.collect:
            self._translate_node(node)
            return
        reads_failure = any(
            i in self.tainted or self.resolve(i) in self.tainted for i in node.input if i
        )
        emitted = len(self.nodes)
        try:
            self._translate_node(node)
        except Exception as e:
            if not isinstance(e, ConversionError) and not reads_failure:
                raise  # a converter bug, not a property of the model: do not hide it
            lacks_op = node.op_type not in TRANSLATORS or node.domain not in ("", "ai.onnx")
            if isinstance(e, ConversionError) and (lacks_op or not reads_failure):
                self.blockers.append(
                    Blocker(node.name, node.op_type, "", e.problem, fix_for(e), stage="translate")
                )
            del self.nodes[emitted:]
            self._placeholder(node)
            return
        if reads_failure and node.op_type not in _TAINT_BARRIERS:
            self.tainted.update(o for o in node.output if o)

    def _placeholder(self, node: onnx.NodeProto) -> None:
        """Check mode: the outputs of failed `node` become values of their ONNX-inferred shapes
        (when ONNX knows a (N, C, H, W) or (N, C) shape), written by a `PLACEHOLDER` node that
        reads the node's activation inputs; all are marked as computed from a failure."""
        inputs = [self.resolve(i) for i in node.input if i and self.resolve(i) in self.values]
        for name in node.output:
            if not name:
                continue
            self.tainted.add(name)
            for table in (self.values, self.aliases, self.rank_aliases, self.ge, self.consts):
                table.pop(name, None)  # what the failed translation left half done
            shape = self.inferred.get(name)
            if shape is None or len(shape) not in (2, 4) or None in shape[1:]:
                continue  # no usable shape: readers fail, as consequences
            c, h, w = (shape[1], 1, 1) if len(shape) == 2 else shape[1:]
            self.values[name] = ValueInfo(name, c, h, w, len(shape))
            self.nodes.append(Node(PLACEHOLDER, inputs or [self.input_name], name, node))

    def _translate_node(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            fail(node, f"ops of domain {node.domain!r} are not supported", NO_OP_FIX)
        if self._late_constant(node):
            return
        handler = TRANSLATORS.get(node.op_type)
        if handler is None:
            problem = f"op {node.op_type} is not supported by the engine"
            raise ConversionError(
                f"{node_label(node)}: {problem} (supported: Conv, "
                f"BatchNormalization, Add, Sub, Mul, Div, GreaterOrEqual+Where (sign), Sign, "
                f"Clip, "
                f"PRelu, LeakyRelu, Relu, Sigmoid, Concat, Tile, Expand, AveragePool, MaxPool, "
                f"GlobalAveragePool, ReduceMean, Flatten, Reshape, Squeeze, Unsqueeze, "
                f"Gemm, MatMul, Pad (+1 padding of binary activations, zero channels), "
                f"Slice (channels, strided rows and columns), Round (a binarizer), "
                f"Identity, Dropout, Cast, Softmax, LogSoftmax, Resize (nearest, linear))",
                node,
                problem,
                self._rewrite_for(node) or NO_OP_FIX,
            )
        for extra in node.output[1:]:
            if extra and node.op_type not in _EXTRA_OUTPUTS_OK:
                fail(node, f"output {extra!r} beyond the first is not supported")
        handler(self, node)

    def _rewrite_for(self, node: onnx.NodeProto) -> Optional[str]:
        """A rewrite of the model that removes unsupported op `node`, only where it applies.
        None known today (Softmax and LogSoftmax, which a final one used to be dropped for,
        are engine ops now); a fix of another op type goes here, tested where it applies and
        where it does not."""
        return None

    def _shape_source(self, name: str) -> Optional[str]:
        """The activation whose shape `name` is, when `name` is the output of Shape(activation)."""
        shape = self.onnx_producer.get(name)
        if shape is None or shape.op_type != "Shape" or attrs(shape):
            return None
        source = self.resolve(shape.input[0])
        return source if source in self.values else None

    def _late_constant(self, node: onnx.NodeProto) -> bool:
        """Constants that depend on an activation's shape only: `ConstantOfShape(Shape(v))`
        (ones_like(v)) and `Expand(c, Shape(v))` (c.expand_as(v)) become the constant fill
        value or c, remembered as broadcast to v's shape (the reader checks that it broadcasts
        to that shape anyway); a node whose inputs are all such constants is evaluated (the Neg
        of -ones_like(v)). Returns whether `node` was handled so."""
        if node.op_type == "ConstantOfShape":
            source = self._shape_source(node.input[0])
            if source is None:
                return False
            value = attrs(node).get("value")
            fill = np.zeros(1, np.float32) if value is None else onnx.numpy_helper.to_array(value)
            self.consts[node.output[0]] = fill.reshape(1)
            self.broadcast_to[node.output[0]] = source
            return True
        if node.op_type == "Expand" and node.input[0] in self.consts:
            source = self._shape_source(node.input[1])
            if source is None:
                return False
            self.consts[node.output[0]] = self.consts[node.input[0]]
            self.broadcast_to[node.output[0]] = source
            return True
        ins = [i for i in node.input if i]
        if ins and all(i in self.broadcast_to for i in ins) and node.op_type in ("Neg", "Cast"):
            from onnx.reference import ReferenceEvaluator

            out = ReferenceEvaluator(node, opsets={"": self.opset}).run(
                None, {i: self.consts[i] for i in ins}
            )[0]
            self.consts[node.output[0]] = np.asarray(out)
            self.broadcast_to[node.output[0]] = self.broadcast_to[ins[0]]
            return True
        return False

    def check_broadcast(self, node: onnx.NodeProto, const_name: str, x: ValueInfo) -> None:
        """A constant standing for a tensor of activation v's shape, combined with x: the
        elementwise result has x's shape only when v's shape is x's."""
        source = self.broadcast_to.get(const_name)
        if source is None:
            return
        v = self.values[source]
        if (v.c, v.h, v.w, v.rank) != (x.c, x.h, x.w, x.rank):
            fail(
                node,
                f"{const_name!r} has the shape of {source!r} {(v.c, v.h, v.w)}, which is not "
                f"the shape of the activation it is combined with {(x.c, x.h, x.w)}",
            )

    def _finish(self) -> IRGraph:
        name = self.graph.output[0].name
        if self.collect and (name in self.tainted or self.resolve(name) in self.tainted):
            pass  # a check: the output's own problems are those of the failures before it
        elif name in self.consts:
            raise ConversionError(f"the output {name!r} is a constant")
        elif name in self.ge or self.resolve(name) not in self.values:
            raise ConversionError(f"the output {name!r} is not produced by a supported op")
        elif self.values[self.resolve(name)].flat_map:
            v = self.values[self.resolve(name)]
            raise ConversionError(
                f"the output {name!r} is a flattened {v.c}x{v.h}x{v.w} map; the engine keeps "
                f"maps in NHWC order, so it would not be PyTorch's (N, C*H*W) order"
            )
        elif self.values[self.resolve(name)].kind != "f32":
            raise ConversionError(
                f"the output {name!r} is a sign's ±1 output; the engine's output must be float"
            )
        # Rank aliases (Flatten, Reshape, Squeeze...) are the same data: resolve everything to
        # the original value names.
        for n in self.nodes:
            n.inputs = [self.canonical(i) for i in n.inputs]
        return IRGraph(
            nodes=self.nodes,
            values=self.values,
            input_name=self.input_name,
            output_name=self.canonical(name),
            warnings=self.warnings,
        )

    # -- helpers for translation functions -------------------------------------------------------

    def resolve(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def canonical(self, name: str) -> str:
        """The value `name` stands for, through aliases and rank aliases."""
        while True:
            name = self.resolve(name)
            if name in self.rank_aliases:
                name = self.rank_aliases[name]
            else:
                return name

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def value(self, node: onnx.NodeProto, name: str, allow_pm1: bool = False) -> ValueInfo:
        """The activation `name` read by `node`; fails on a constant, an unknown value, or
        (unless `allow_pm1`) a sign's ±1 output."""
        if name in self.row_means:
            fail(
                node,
                f"reads {name!r}, the mean over the last axis of a map; only the mean over H "
                f"after it (x.mean(3).mean(2), the mean over H and W) is supported",
            )
        if name in self.ge:
            fail(
                node,
                f"reads the result of a comparison ({self.ge[name].node.op_type} "
                f"{self.ge[name].node.name!r}); only sign patterns such as "
                f"Where(x >= t, 1, -1) are supported",
            )
        name = self.resolve(name)
        if name not in self.values:
            if name in self.consts:
                fail(node, f"input {name!r} is a constant where an activation is expected")
            fail(node, f"input {name!r} is produced by an unsupported or unknown node")
        v = self.values[name]
        if v.kind != "f32" and not allow_pm1:
            fail(
                node,
                f"reads the ±1 output of a sign ({name!r}); the engine keeps sign "
                f"outputs as packed bits, which only a binary convolution (a Conv with "
                f"±1 weights, stride 1, 1x1 or 3x3) or a binary fully connected layer (a "
                f"Gemm or MatMul with ±1 weights) can read",
            )
        return v

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            fail(node, f"missing {what}")
        name = node.input[index]
        if name not in self.consts:
            fail(node, f"{what} ({name!r}) must be a constant (an initializer or foldable)")
        return self.consts[name]

    def opt_const(self, node: onnx.NodeProto, index: int, what: str) -> Optional[np.ndarray]:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.const(node, index, what)

    def per_channel(
        self, node: onnx.NodeProto, c: np.ndarray, v: ValueInfo, what: str
    ) -> np.ndarray:
        """A constant that broadcasts per channel against v -> float32 [C]."""
        c = np.asarray(c)
        if c.dtype.kind != "f":
            fail(node, f"{what} must be a float constant, got {c.dtype}")
        if v.flat_map and c.size != 1:
            fail(node, _flat_map_problem(v, f"{what} of shape {c.shape} (one value per feature)"))
        if c.ndim > v.rank:
            fail(node, f"{what} of shape {c.shape} has more dims than the activation")
        shape = (1,) * (v.rank - c.ndim) + c.shape
        ok = shape[0] == 1 and shape[1] in (1, v.c) and all(d == 1 for d in shape[2:])
        if not ok:
            fail(
                node,
                f"{what} of shape {c.shape} is not per-channel for an activation of "
                f"{v.c} channels (only a scalar, (C,1,1) or (1,C,1,1) broadcasts per "
                f"channel)",
            )
        return np.broadcast_to(c.reshape(-1).astype(np.float32), (v.c,)).copy()

    def feature_vector(self, node: onnx.NodeProto, x: ValueInfo, c: np.ndarray) -> ValueInfo:
        """The activation a per-feature op of `node` with constant `c` reads in place of x.

        A flattened H x W map (H*W > 1) is the map's NHWC data in the engine, features in
        another order than PyTorch's c*H*W + y*W + x, and every engine op with parameters is
        per channel of an (H, W, C) value: a constant with one value per feature (BatchNorm1d,
        a per-feature Mul/Add/Sub/Div, threshold or slope) fits no op there. The engine has no
        reshape op either, so the features are laid out as a (1, 1, C*H*W) vector by an FC
        whose weight is the identity in PyTorch's column order (emission permutes the columns
        to the map's NHWC order, as for any FC after a flattening): channel j of the vector is
        PyTorch's feature j, so the op is per channel there with its constants unchanged, and a
        BatchNorm1d or affine after it folds into that FC (`passes.fold_affines`). One such FC
        per flattened map, shared by all its per-feature readers. A scalar constant needs none."""
        if not x.flat_map or np.size(c) == 1:
            return x
        key = self.canonical(x.name)
        if key not in self.feature_vectors:
            n = x.features
            name = f"{x.name}:features"
            out = ValueInfo(name, n, 1, 1, rank=2)
            self.values[name] = out
            self.nodes.append(
                Node("fc", [x.name], name, node, {"w": np.eye(n), "b": np.zeros(n)}, ":features")
            )
            self.feature_vectors[key] = name
            self.warnings.append(
                f"{node_label(node)} applies one constant per feature to {x.name!r}, a "
                f"{x.c}x{x.h}x{x.w} map flattened to (N, {n}): the engine keeps the map in NHWC "
                f"order and has no reshape op, so the converter adds an FC of {n}x{n} weights "
                f"(the feature permutation, with the per-feature scale folded in) before it"
            )
        return self.values[self.feature_vectors[key]]

    def new_value(
        self,
        node: onnx.NodeProto,
        c: int,
        h: int,
        w: int,
        rank: int = 4,
        kind: str = "f32",
        index: int = 0,
    ) -> ValueInfo:
        """Declare output `index` of `node`, checked against ONNX shape inference."""
        name = node.output[index]
        v = ValueInfo(name, c, h, w, rank, kind)
        inferred = self.inferred.get(name)
        if inferred is not None and len(inferred) == rank and None not in inferred[1:]:
            mine = (c, h, w) if rank == 4 else (c * h * w,)
            if tuple(inferred[1:]) != mine:
                fail(
                    node,
                    f"output shape {mine} computed for the engine differs from ONNX "
                    f"shape inference {tuple(inferred[1:])}: this configuration of the "
                    f"op is not supported",
                )
        self.values[name] = v
        return v

    def emit(
        self, kind: str, node: onnx.NodeProto, inputs: Sequence[str], out: ValueInfo, **p
    ) -> Node:
        n = Node(kind, [self.resolve(i) for i in inputs], out.name, node, dict(p))
        self.nodes.append(n)
        return n

    def alias(self, node: onnx.NodeProto, src: ValueInfo, rank: Optional[int] = None) -> None:
        """The output of `node` is the same data as `src` (with another ONNX rank if given)."""
        out = node.output[0]
        if rank is None or rank == src.rank:
            self.aliases[out] = src.name
        else:  # same data, another ONNX rank ((N, C) <-> (N, C, 1, 1)): a new name for it
            self.values[out] = ValueInfo(
                out, src.c, src.h, src.w, rank, src.kind, src.source, src.pm1_scale
            )
            self.rank_aliases[out] = src.name


def translate(model: onnx.ModelProto) -> IRGraph:
    """The intermediate graph of an ONNX model (before any rewrite pass)."""
    return Translator(model).run()


def translate_collecting(model: onnx.ModelProto) -> Tuple[Optional[IRGraph], List[Blocker]]:
    """Check mode: the intermediate graph with a `PLACEHOLDER` node for each node that failed
    (None when the whole model is refused: its input or output), and the blockers found."""
    tr = Translator(model, collect=True)
    try:
        graph: Optional[IRGraph] = tr.run()
    except ConversionError as e:  # a problem of the whole model: nothing more to check
        node = e.node
        tr.blockers.append(
            Blocker(
                node.name if node is not None else "",
                node.op_type if node is not None else "",
                "",
                e.problem,
                fix_for(e),
            )
        )
        graph = None
    return graph, tr.blockers


# -- translation functions, by ONNX op type ----------------------------------------------------


@translates("Identity")
def _identity(tr: Translator, node: onnx.NodeProto) -> None:
    tr.alias(node, tr.value(node, node.input[0], allow_pm1=True))


@translates("Dropout")
def _dropout(tr: Translator, node: onnx.NodeProto) -> None:
    tr.alias(node, tr.value(node, node.input[0]))


@translates("Cast")
def _cast(tr: Translator, node: onnx.NodeProto) -> None:
    if attrs(node).get("to") != onnx.TensorProto.FLOAT:
        fail(node, "only a Cast to float32 is supported")
    pending = tr.ge.get(node.input[0])
    if pending is not None:  # (x >= t).float(): the indicator as 0.0 / 1.0
        tr.ge[node.output[0]] = Indicator(
            pending.x, pending.threshold, pending.node, pending.scale, pending.offset, False
        )
        return
    # a float activation, or the ±1 of a sign (torch.where(x >= 0, 1, -1) is int64 ±1)
    tr.alias(node, tr.value(node, node.input[0], allow_pm1=True))


@translates("Conv")
def _conv(tr: Translator, node: onnx.NodeProto) -> None:
    a = attrs(node)
    x = tr.value(node, node.input[0], allow_pm1=True)
    w = tr.const(node, 1, "the weight")
    b = tr.opt_const(node, 2, "the bias")
    if x.rank != 4 or w.ndim != 4:
        fail(node, "only 2-D convolutions (NCHW) are supported")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        fail(node, "auto_pad is not supported; export with explicit pads")
    dilations = tuple(a.get("dilations", [1, 1]))
    group = a.get("group", 1)
    co, ci_g, kh, kw = w.shape
    if dilations != (1, 1) and not (x.kind == "f32" and group == x.c and ci_g == 1):
        fail(
            node,
            f"dilations {list(dilations)} are supported on float depthwise 3x3 convs only "
            f"(DeepLab's atrous separable convs); this conv is "
            f"{'binary' if x.kind != 'f32' else f'a group={group} float conv'}",
        )
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    bias = np.zeros(co) if b is None else b.astype(np.float64)
    if x.kind != "f32":
        _binary_conv(tr, node, x, w, bias, group, (sh, sw), (pt, pl, pb, pr))
    elif group == 1:
        if _compact_pointwise(tr, node, x, w, bias, (pt, pl, pb, pr)):
            return
        if not (0 <= pt < kh and 0 <= pb < kh and 0 <= pl < kw and 0 <= pr < kw):
            fail(node, f"pads {[pt, pl, pb, pr]} must each be smaller than the kernel {kh}x{kw}")
        ho = (x.h + pt + pb - kh) // sh + 1
        wo = (x.w + pl + pr - kw) // sw + 1
        if ci_g != x.c or ho < 1 or wo < 1:
            fail(node, f"weight {w.shape} does not fit the input {(x.c, x.h, x.w)}")
        out = tr.new_value(node, co, ho, wo)
        tr.emit(
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
            fail(
                node,
                f"a depthwise conv with channel multiplier {co // x.c} in one Conv "
                f"orders its outputs channel-interleaved; the engine's DWCONV3X3 is "
                f"block-major: use {co // x.c} separate depthwise convs and a Concat",
            )
        dh, dw = dilations
        if dh != dw or dh < 1:
            fail(
                node, f"depthwise dilations {list(dilations)} must be one rate d >= 1 for both axes"
            )
        d = dh
        if d > 1 and ((kh, kw) != (3, 3) or (pt, pl, pb, pr) != (d, d, d, d) or (sh, sw) != (1, 1)):
            fail(
                node,
                f"dilated depthwise convs must be 3x3 with padding = dilation ({d}) and stride "
                f"1 (DeepLab's atrous convs); got kernel {kh}x{kw}, pads {[pt, pl, pb, pr]}, "
                f"stride {(sh, sw)}",
            )
        if d == 1 and (
            (kh, kw) != (3, 3) or (pt, pl, pb, pr) != (1, 1, 1, 1) or (sh, sw) not in DW_STRIDES
        ):
            fail(
                node,
                f"depthwise convs must be 3x3 with padding 1 and stride in "
                f"{DW_STRIDES}; got kernel {kh}x{kw}, pads {[pt, pl, pb, pr]}, "
                f"stride {(sh, sw)}",
            )
        out = tr.new_value(node, co, -(-x.h // sh), -(-x.w // sw))
        tr.emit(
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
            dilation=d,
        )
    else:
        fail(
            node,
            f"grouped convolution (group={group}) is not supported; only group=1 "
            f"and depthwise (group=C_in=C_out)",
        )


def _compact_pointwise(tr: Translator, node, x: ValueInfo, w, bias, pads) -> bool:
    """A float 1x1 conv on a 1x1 map (an SE layer's squeeze or excite) whose weights are
    sign x per-row scale or on a per-row INT8 grid (`converter.se_weights`: an SE trained with
    compact weights) becomes an ``fc`` node that emission writes in FC mode binary or int8.
    True when emitted; other convs stay ``conv`` (CONV2D)."""
    co, ci, kh, kw = w.shape
    if (kh, kw) != (1, 1) or (x.h, x.w) != (1, 1) or tuple(pads) != (0, 0, 0, 0) or ci != x.c:
        return False
    w2 = w.reshape(co, ci).astype(np.float64)
    encoding = compact_encoding(w2)
    if encoding is None:
        return False
    out = tr.new_value(node, co, 1, 1)
    tr.emit("fc", node, [x.name], out, w=w2, b=bias, encoding=encoding)
    return True


@dataclass
class BinaryWeights:
    """The weights of a binary conv or FC as the engine runs them: w = alpha_o * t with t in
    {-1, 0, +1} (PyTorch's sign(0) = 0 keeps exact zeros). `pm1` is t with +1 at its zeros
    (exactly t where there are none); where `zeros` is not None (the bool mask of t's zeros),
    `pm1_low` is t with -1 there, and t = (pm1 + pm1_low) / 2 is the sum of two binary
    layers."""

    pm1: np.ndarray  # int8 ±1, the shape of w
    alpha: np.ndarray  # float64 [Co], > 0
    zeros: Optional[np.ndarray] = None
    pm1_low: Optional[np.ndarray] = None


def _binary_weights(tr: Translator, node, w: np.ndarray) -> BinaryWeights:
    """Weights in {-alpha_o, 0, +alpha_o} per output channel o (alpha_o > 0; 1 for plain ±1
    weights, the mean |W| of XNOR-Net or ReActNet's scaled sign(W) once folded; 0 where
    torch.sign(W) met an exact 0.0 weight) -> `BinaryWeights`. An output channel of zeros
    only gets alpha 1 (its two halves cancel)."""
    co = w.shape[0]
    flat = np.asarray(w, dtype=np.float64).reshape(co, -1)
    if not np.all(np.isfinite(flat)):
        fail(
            node,
            "its input is a sign (±1), so it must be a binary layer, but a weight is NaN or inf",
        )
    magnitude = np.abs(flat)
    nonzero = magnitude != 0
    # alpha_o: the magnitude of the first nonzero weight of row o (1 for a row of zeros)
    first = np.argmax(nonzero, axis=1)
    alpha = np.where(nonzero.any(axis=1), magnitude[np.arange(co), first], 1.0)
    mixed = np.flatnonzero(np.any(nonzero & (magnitude != alpha[:, None]), axis=1))
    if mixed.size:
        o = int(mixed[0])
        values = np.unique(magnitude[o][nonzero[o]])
        fail(
            node,
            f"its input is a sign (±1), so it must be a binary layer, but its weights are not "
            f"of one magnitude per output channel (±alpha_o, or 0 where torch.sign(W) met an "
            f"exact 0): output channel {o} holds {values.size} different magnitudes "
            f"({', '.join(f'{v:.6g}' for v in values[:3])}{', ...' if values.size > 3 else ''}) "
            f"in {mixed.size} of {co} channels. Binary weights (sign(W), or alpha_o * sign(W) "
            f"with one alpha_o per channel such as XNOR-Net's mean|W|) convert; float weights "
            f"on binary activations (e.g. the zoo's training stage 1) cannot run on the engine",
        )
    pm1 = np.where(w >= 0, 1, -1).astype(np.int8)  # +1 at the zeros (and at -0.0)
    zeros = w == 0
    if not zeros.any():
        return BinaryWeights(pm1, alpha)
    return BinaryWeights(pm1, alpha, zeros, np.where(w > 0, 1, -1).astype(np.int8))


def _emit_binary(
    tr: Translator,
    kind: str,
    node,
    source: ValueInfo,
    out: ValueInfo,
    bw: BinaryWeights,
    bias: np.ndarray,
    what: str,
    **p,
) -> None:
    """A binary layer (`kind` 'bconv' or 'bfc') with weights `bw`, writing `out`.

    Without zero weights, one node: the integer dot, then alpha_o (`scale`) and the bias. With
    zeros, t = (pm1 + pm1_low) / 2: two binary layers on the same bits and padding (the
    halves read the same pad taps, so each pad tap adds w1 + w2 = 2 t, as PyTorch's conv of the
    padded input with ternary weights adds t), each with scale 1 and bias 0 (the float of an
    integer dot, exact), an ADD (an exact integer: |dot1 + dot2| <= 2 * fan-in <= 2^24), then
    one affine (sum * alpha_o / 2 + bias) that later BNs fold into: exact in the integer dots
    up to that one float scale and bias, as a binary layer without zeros is."""
    if bw.zeros is None:
        tr.emit(kind, node, [source.name], out, w=bw.pm1, scale=bw.alpha, bias=bias, **p)
        return
    assert bw.pm1_low is not None
    fan_in = bw.pm1[0].size
    if fan_in > 2**23:
        fail(
            node,
            f"its weights hold exact zeros and its fan-in {fan_in} is above 2^23, where the "
            f"sum of two binary dots is no longer exact in float32; make the zero weights ±1",
        )
    count = int(np.count_nonzero(bw.zeros))
    channels = int(np.count_nonzero(bw.zeros.reshape(bw.zeros.shape[0], -1).any(axis=1)))
    tr.warnings.append(
        f"{node_label(node)}: {count} of the {bw.zeros.size} weights of this binary {what} "
        f"are exactly 0 (torch.sign(W) of a 0.0 weight, in {channels} of its "
        f"{bw.zeros.shape[0]} output channels), which one bit cannot hold: it runs exactly, "
        f"as two binary {what}s on the same bits summed, at 2x the cost of this layer"
    )
    co = out.c
    ones, nothing = np.ones(co), np.zeros(co)
    halves = []
    for j, weights in enumerate((bw.pm1, bw.pm1_low)):
        half = ValueInfo(f"{out.name}.ternary_half{j}", out.c, out.h, out.w, out.rank)
        tr.values[half.name] = half
        n = tr.emit(kind, node, [source.name], half, w=weights, scale=ones, bias=nothing, **p)
        n.suffix = f".ternary_half{j}"
        halves.append(half.name)
    total = ValueInfo(f"{out.name}.ternary_sum", out.c, out.h, out.w, out.rank)
    tr.values[total.name] = total
    tr.emit("add", node, halves, total).suffix = ".ternary_sum"
    tr.emit(
        "affine", node, [total.name], out, scale=bw.alpha / 2, bias=bias, pure_add=False
    ).suffix = ".ternary_scale"


def _binary_conv(tr: Translator, node, x: ValueInfo, w, bias, group, stride, pads):
    """A conv of a sign's ±1: BCONV2D for the 'same' stride-1 1x1 and 3x3 (its fast kernels),
    BCONV2D_GENERAL (emitted from the same IR node, with `general` set) for any other kernel,
    stride or padding; two of them summed where the weights hold exact zeros (`_emit_binary`)."""
    co, ci, kh, kw = w.shape
    if group != 1:
        fail(node, f"grouped binary convs are not supported (group {group}); only group 1")
    bw = _binary_weights(tr, node, w * x.pm1_scale if x.kind == "pm1" else w)
    if x.kind == "pm1pad":
        # Pad(value=1, one pixel per side) then the conv: the engine's one padding. The conv's
        # own pads would be zeros around the ones, which no engine op computes.
        if pads != (0, 0, 0, 0):
            fail(node, f"a +1-padded binary input needs a conv with pads 0, got {list(pads)}")
        source, pad_mode, pads = tr.values[x.source], 1, (1, 1, 1, 1)
    else:
        source, pad_mode = x, 0
    pt, pl, pb, pr = pads
    if not (pt < kh and pb < kh and pl < kw and pr < kw):
        fail(node, f"pads {list(pads)} must each be smaller than the kernel {kh}x{kw}")
    ho = (source.h + pt + pb - kh) // stride[0] + 1
    wo = (source.w + pl + pr - kw) // stride[1] + 1
    if ci != source.c or ho < 1 or wo < 1:
        fail(node, f"weight {w.shape} does not fit the input {(source.c, source.h, source.w)}")
    same = stride == (1, 1) and kh == kw and kh in (1, 3) and pads == (kh // 2,) * 4
    out = tr.new_value(node, co, ho, wo)
    # conv(a, alpha*s) = alpha*conv(a, s): the integer dot, then the scale
    _emit_binary(
        tr,
        "bconv",
        node,
        source,
        out,
        bw,
        bias,
        "conv",
        k=kh,
        pad_mode=pad_mode,
        general=not same,
        stride=tuple(stride),
        pads=tuple(pads),
    )


@translates("Pad")
def _pad(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0], allow_pm1=True)
    a = attrs(node)
    mode = a.get("mode", b"constant")
    pads = a.get("pads") if tr.opset < 11 else tr.const(node, 1, "pads")
    value = a.get("value", 0.0) if tr.opset < 11 else tr.opt_const(node, 2, "value")
    value = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
    axes = tr.opt_const(node, 3, "axes")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if axes is not None:
        full = [0] * 8
        for j, ax in enumerate(np.asarray(axes).reshape(-1)):
            ax = int(ax) % 4
            full[ax], full[ax + 4] = pads[j], pads[j + len(axes)]
        pads = full
    if (
        x.kind == "f32"
        and x.rank == 4
        and mode in (b"constant", "constant")
        and value == 0.0
        and pads[0] == pads[4] == 0
        and pads[2:4] == pads[6:8] == [0, 0]
        and min(pads) >= 0
    ):
        # Zero channels before and after (ResNet-20's option-A shortcut,
        # F.pad(x, (0, 0, 0, 0, p, p))): a selection conv (`_selection_conv`).
        before, after = pads[1], pads[5]
        source = np.concatenate([np.full(before, -1), np.arange(x.c), np.full(after, -1)])
        _selection_conv(tr, node, x, source, (1, 1))
        return
    if x.kind == "pm1" and x.pm1_scale != 1.0:
        fail(node, "pads a scaled sign output (sign(x) * alpha); only an unscaled one")
    if (
        x.kind != "pm1"
        or mode not in (b"constant", "constant")
        or value != 1.0
        or pads != [0, 0, 1, 1, 0, 0, 1, 1]
    ):
        fail(
            node,
            "Pad is supported only as the +1 padding (constant 1, one pixel on each "
            "side of H and W) of a sign's ±1 output before a 3x3 binary conv "
            "(one padding), or as zero channels added before and after a float map "
            "(constant 0 on the channel axis only)",
        )
    out = tr.new_value(node, x.c, x.h + 2, x.w + 2, kind="pm1pad")
    out.source = x.name


def _selection_conv(
    tr: Translator,
    node: onnx.NodeProto,
    x: ValueInfo,
    source: np.ndarray,
    stride: Tuple[int, int],
) -> None:
    """Output channel o is input channel source[o] (0 where source[o] < 0), sampled every
    stride[0] rows and stride[1] columns from the first: a float 1x1 conv with one-hot (or
    zero) weights. Exact: each output is x * 1 plus products with 0 (a finite input)."""
    w = np.zeros((len(source), x.c, 1, 1))
    rows = np.flatnonzero(source >= 0)
    w[rows, source[rows], 0, 0] = 1.0
    sh, sw = stride
    out = tr.new_value(node, len(source), -(-x.h // sh), -(-x.w // sw))
    tr.emit(
        "conv",
        node,
        [x.name],
        out,
        w=w,
        b=np.zeros(len(source)),
        stride=(sh, sw),
        pads=(0, 0, 0, 0),
        relu=False,
    )


@translates("Slice")
def _slice(tr: Translator, node: onnx.NodeProto) -> None:
    """``x[:, c0:c1:cs, ::sh, ::sw]`` of a float map (ResNet-20's option-A shortcut): channels
    any range and step, rows and columns from the first to the end with a step; a selection
    conv (`_selection_conv`)."""
    x = tr.value(node, node.input[0])
    if tr.opset < 10:
        fail(node, "Slice before opset 10 is not supported; export with opset >= 10")
    starts = [int(v) for v in np.asarray(tr.const(node, 1, "starts")).reshape(-1)]
    ends = [int(v) for v in np.asarray(tr.const(node, 2, "ends")).reshape(-1)]
    axes_c = tr.opt_const(node, 3, "axes")
    steps_c = tr.opt_const(node, 4, "steps")
    axes = list(range(len(starts))) if axes_c is None else [int(v) for v in axes_c.reshape(-1)]
    steps = [1] * len(starts) if steps_c is None else [int(v) for v in steps_c.reshape(-1)]
    if x.rank != 4:
        fail(node, "Slice is supported on (N, C, H, W) maps only")
    dims = {1: x.c, 2: x.h, 3: x.w}
    channels = np.arange(x.c)
    stride = [1, 1]
    for ax, start, end, step in zip(axes, starts, ends, steps):
        ax = ax % 4
        if ax == 0:
            fail(node, "slicing the batch axis is not supported")
        if step < 1:
            fail(node, f"a negative or zero step ({step}) is not supported")
        n = dims[ax]
        start = min(max(start + n if start < 0 else start, 0), n)
        end = min(max(end + n if end < 0 else end, 0), n)
        if ax == 1:
            channels = channels[start:end:step]
        elif start != 0 or end != n:
            fail(
                node,
                f"slicing axis {ax} from {start} to {end} (of {n}) is not supported: only "
                f"rows and columns from the first to the last, with a step (x[:, :, ::2, ::2])",
            )
        else:
            stride[ax - 2] = step
    if channels.size == 0:
        fail(node, "the slice is empty")
    _selection_conv(tr, node, x, channels, (stride[0], stride[1]))


@translates("BatchNormalization")
def _batchnormalization(tr: Translator, node: onnx.NodeProto) -> None:
    a = attrs(node)
    if a.get("training_mode", 0):
        fail(node, "training_mode=1 is not supported; export the model in eval mode")
    x = tr.value(node, node.input[0])
    gamma, beta, mean, var = (
        tr.const(node, i, n).astype(np.float64)
        for i, n in enumerate(("scale", "bias", "mean", "var"), start=1)
    )
    # BatchNorm1d over a flattened map's C*H*W features: per channel of the feature vector
    x = tr.feature_vector(node, x, gamma)
    eps = float(a.get("epsilon", 1e-5))
    if any(np.shape(t) != (x.c,) for t in (gamma, beta, mean, var)):
        fail(node, f"parameters must be per-channel ({x.c},)")
    scale = gamma / np.sqrt(var + eps)
    out = tr.new_value(node, x.c, x.h, x.w, x.rank)
    tr.emit("affine", node, [x.name], out, scale=scale, bias=beta - mean * scale, pure_add=False)


def _indicator_arithmetic(tr: Translator, node: onnx.NodeProto) -> bool:
    """Mul/Add/Sub of a float indicator (see `Indicator`) by a scalar constant: a new indicator,
    or the sign it has become. Returns whether `node` was such."""
    a, b = node.input[0], node.input[1]
    ind_name, const_name = (a, b) if a in tr.ge else (b, a) if b in tr.ge else (None, None)
    if ind_name is None:
        return False
    ind = tr.ge[ind_name]
    if ind.is_bool or not tr.is_const(const_name) or np.size(tr.consts[const_name]) != 1:
        fail(
            node,
            f"reads the result of a comparison ({ind.node.op_type} {ind.node.name!r}); "
            f"supported are the sign patterns "
            f"Where(x >= t, 1, -1) and (x >= t).float() * 2 - 1; {_SIGN_HINT}",
        )
    c = float(np.asarray(tr.consts[const_name]).reshape(-1)[0])
    scale, offset = ind.scale, ind.offset
    if node.op_type == "Mul":
        scale, offset = scale * c, offset * c
    elif node.op_type == "Add":
        offset = offset + c
    elif const_name == node.input[1]:  # indicator - c
        offset = offset - c
    else:  # c - indicator
        scale, offset = -scale, c - offset
    if (scale, offset) == (2.0, -1.0):
        # 2 * [x >= t] - 1 is exactly +1 or -1: the sign of x at threshold t
        x = tr.values[ind.x]
        out = tr.new_value(node, x.c, x.h, x.w, x.rank, kind="pm1")
        tr.emit("sign", node, [ind.x], out, threshold=ind.threshold)
    else:
        tr.ge[node.output[0]] = Indicator(ind.x, ind.threshold, ind.node, scale, offset, False)
    return True


def _binary_operands(tr: Translator, node):
    a, b = node.input[0], node.input[1]
    if tr.is_const(a) and tr.is_const(b):
        fail(node, "both operands constant (should have been folded)")
    return a, b


@translates("Add")
def _add(tr: Translator, node: onnx.NodeProto) -> None:
    if _indicator_arithmetic(tr, node):
        return
    a, b = _binary_operands(tr, node)
    if tr.is_const(a) or tr.is_const(b):
        x_name, c = (b, tr.consts[a]) if tr.is_const(a) else (a, tr.consts[b])
        x = tr.value(node, x_name)
        tr.check_broadcast(node, a if x_name == b else b, x)
        x = tr.feature_vector(node, x, c)
        c = tr.per_channel(node, c, x, "the added constant")
        out = tr.new_value(node, x.c, x.h, x.w, x.rank)
        tr.emit("affine", node, [x.name], out, scale=np.ones(x.c), bias=c, pure_add=True)
        return
    x, y = tr.value(node, a), tr.value(node, b)
    if (x.flat_map or y.flat_map) and x.rank != y.rank:
        fail(node, _flat_map_problem(x if x.flat_map else y, "an Add with a 4-D activation"))
    if (x.c, x.h, x.w) != (y.c, y.h, y.w):
        fail(
            node,
            f"adds activations of different shapes {(x.c, x.h, x.w)} and "
            f"{(y.c, y.h, y.w)}; only same-shape Add is supported",
        )
    out = tr.new_value(node, x.c, x.h, x.w, max(x.rank, y.rank))
    tr.emit("add", node, [x.name, y.name], out)


@translates("Sub")
def _sub(tr: Translator, node: onnx.NodeProto) -> None:
    if _indicator_arithmetic(tr, node):
        return
    a, b = _binary_operands(tr, node)
    if tr.is_const(b):
        x = tr.value(node, a)
        tr.check_broadcast(node, b, x)
        x = tr.feature_vector(node, x, tr.consts[b])
        c = tr.per_channel(node, tr.consts[b], x, "the subtracted constant")
        out = tr.new_value(node, x.c, x.h, x.w, x.rank)
        tr.emit("affine", node, [x.name], out, scale=np.ones(x.c), bias=-c, pure_add=True)
    elif tr.is_const(a):
        x = tr.value(node, b)
        tr.check_broadcast(node, a, x)
        x = tr.feature_vector(node, x, tr.consts[a])
        c = tr.per_channel(node, tr.consts[a], x, "the constant")
        out = tr.new_value(node, x.c, x.h, x.w, x.rank)
        tr.emit(
            "affine",
            node,
            [x.name],
            out,
            scale=-np.ones(x.c),
            bias=c.astype(np.float64),
            pure_add=False,
        )
    else:
        fail(node, "subtracting one activation from another is not supported")


@translates("Mul")
def _mul(tr: Translator, node: onnx.NodeProto) -> None:
    if _indicator_arithmetic(tr, node):
        return
    a, b = _binary_operands(tr, node)
    if tr.is_const(a) or tr.is_const(b):
        x_name, c = (b, tr.consts[a]) if tr.is_const(a) else (a, tr.consts[b])
        signs = tr.values.get(tr.resolve(x_name))
        if signs is not None and signs.kind == "pm1" and np.size(c) == 1:
            # sign(x) * alpha, a scaled binary activation: conv(alpha * s, W) is
            # conv(s, alpha * W), so the reader takes alpha into its (still binary) weights
            factor = float(np.asarray(c).reshape(-1)[0])
            if not (np.isfinite(factor) and factor != 0):
                fail(node, f"scales a sign's ±1 by {factor}; only a finite nonzero factor")
            out_name = node.output[0]
            tr.values[out_name] = ValueInfo(
                out_name, signs.c, signs.h, signs.w, signs.rank, "pm1", None,
                signs.pm1_scale * factor,
            )  # fmt: skip
            tr.rank_aliases[out_name] = signs.name
            return
        x = tr.value(node, x_name)
        tr.check_broadcast(node, a if x_name == b else b, x)
        x = tr.feature_vector(node, x, c)
        c = tr.per_channel(node, c, x, "the constant factor")
        out = tr.new_value(node, x.c, x.h, x.w, x.rank)
        tr.emit(
            "affine",
            node,
            [x.name],
            out,
            scale=c.astype(np.float64),
            bias=np.zeros(x.c),
            pure_add=False,
        )
        return
    x, s = tr.value(node, a), tr.value(node, b)
    if x.flat_map or s.flat_map:
        fail(node, _flat_map_problem(x if x.flat_map else s, "a product of two activations"))
    if (s.h, s.w) != (1, 1) and (x.h, x.w) == (1, 1):
        x, s = s, x
    if s.c != x.c or (s.h, s.w) != (1, 1):
        fail(
            node,
            f"multiplies activations of shapes {(x.c, x.h, x.w)} and "
            f"{(s.c, s.h, s.w)}; only a per-channel scaling by a (C, 1, 1) "
            f"activation (SE) is supported",
        )
    out = tr.new_value(node, x.c, x.h, x.w, x.rank)
    tr.emit("mul_channel", node, [x.name, s.name], out)


@translates("Div")
def _div(tr: Translator, node: onnx.NodeProto) -> None:
    a, b = _binary_operands(tr, node)
    if not tr.is_const(b):
        fail(node, "only division by a per-channel constant is supported")
    x = tr.feature_vector(node, tr.value(node, a), tr.consts[b])
    c = tr.per_channel(node, tr.consts[b], x, "the divisor")
    out = tr.new_value(node, x.c, x.h, x.w, x.rank)
    tr.emit(
        "affine",
        node,
        [x.name],
        out,
        scale=1.0 / c.astype(np.float64),
        bias=np.zeros(x.c),
        pure_add=False,
    )


@translates("GreaterOrEqual")
def _greaterorequal(tr: Translator, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    if not tr.is_const(b) or tr.is_const(a):
        fail(
            node,
            f"only GreaterOrEqual(activation, constant) is supported, as the sign "
            f"pattern; {_SIGN_HINT}",
        )
    x = tr.feature_vector(node, tr.value(node, a), tr.consts[b])
    threshold = tr.per_channel(node, tr.consts[b], x, "the threshold")
    tr.ge[node.output[0]] = Indicator(x.name, threshold, node)


def _comparison(tr: Translator, node: onnx.NodeProto, op: str) -> None:
    """Greater / Less / LessOrEqual of an activation and a constant (either order), as the
    indicator [x >= t'] of GreaterOrEqual or its negation, with an exact float32 t':
    x > t is x >= nextafter(t, +inf); x < t is not x >= t; x <= t is not x > t."""
    a, b = node.input[0], node.input[1]
    if tr.is_const(a) and not tr.is_const(b):  # t > x is x < t, ...
        a, b = b, a
        op = {"Greater": "Less", "Less": "Greater", "LessOrEqual": "GreaterOrEqual"}[op]
        if op == "GreaterOrEqual":
            _indicator_of(tr, node, a, b, strict=False, negated=False)
            return
    if not tr.is_const(b) or tr.is_const(a):
        fail(
            node,
            f"only {node.op_type}(activation, constant) is supported, as part of a sign "
            f"pattern; {_SIGN_HINT}",
        )
    strict = op in ("Greater", "LessOrEqual")
    _indicator_of(tr, node, a, b, strict=strict, negated=op in ("Less", "LessOrEqual"))


def _indicator_of(
    tr: Translator, node: onnx.NodeProto, a: str, b: str, strict: bool, negated: bool
) -> None:
    x = tr.feature_vector(node, tr.value(node, a), tr.consts[b])
    threshold = tr.per_channel(node, tr.consts[b], x, "the threshold")
    if strict:
        threshold = np.nextafter(threshold, np.float32(np.inf)).astype(np.float32)
    # a negated indicator is 1 - [x >= t]: scale -1, offset 1, still a bool
    scale, offset = (-1.0, 1.0) if negated else (1.0, 0.0)
    tr.ge[node.output[0]] = Indicator(x.name, threshold, node, scale, offset, True)


@translates("Greater")
def _greater(tr: Translator, node: onnx.NodeProto) -> None:
    _comparison(tr, node, "Greater")


@translates("Less")
def _less(tr: Translator, node: onnx.NodeProto) -> None:
    _comparison(tr, node, "Less")


@translates("LessOrEqual")
def _lessorequal(tr: Translator, node: onnx.NodeProto) -> None:
    _comparison(tr, node, "LessOrEqual")


@translates("Not")
def _not(tr: Translator, node: onnx.NodeProto) -> None:
    """~mask of a comparison: the negated indicator."""
    ind = tr.ge.get(node.input[0])
    if ind is None or not ind.is_bool:
        fail(node, "Not is supported only of a comparison with a constant (a sign pattern)")
    tr.ge[node.output[0]] = Indicator(
        ind.x, ind.threshold, ind.node, -ind.scale, 1.0 - ind.offset, True
    )


@translates("Where")
def _where(tr: Translator, node: onnx.NodeProto) -> None:
    cond = node.input[0]
    hi, lo = node.input[1], node.input[2]
    if cond in tr.ge and tr.ge[cond].is_bool and tr.ge[cond].scale == -1.0:
        hi, lo = lo, hi  # Where(not [x >= t], a, b) is Where([x >= t], b, a)
    ok = (
        cond in tr.ge
        and tr.ge[cond].is_bool
        and tr.is_const(hi)
        and tr.is_const(lo)
        and np.all(tr.consts[hi] == 1)
        and np.all(tr.consts[lo] == -1)
        and np.size(tr.consts[hi]) == 1
        and np.size(tr.consts[lo]) == 1
    )
    if not ok:
        fail(
            node,
            f"Where is supported only as the sign pattern Where(x >= t, 1, -1); {_SIGN_HINT}",
        )
    x_name, threshold = tr.ge[cond].x, tr.ge[cond].threshold
    x = tr.values[x_name]
    tr.check_broadcast(node, hi, x)  # torch.where(x >= 0, ones_like(x), -ones_like(x))
    tr.check_broadcast(node, lo, x)
    out = tr.new_value(node, x.c, x.h, x.w, x.rank, kind="pm1")
    tr.emit("sign", node, [x_name], out, threshold=threshold)


# IR node kinds, and ONNX op types, whose output can be exactly 0 for ordinary inputs
# ONNX ops whose output is exactly 0 for a whole range of inputs (a max pool is when its window
# holds only zeros, e.g. after a ReLU); a clip with a lower bound >= 0 is checked apart.
_EXACT_ZEROS = ("Relu", "MaxPool", "Abs")


@translates("Sign")
def _sign(tr: Translator, node: onnx.NodeProto) -> None:
    """torch.sign: +1, 0, -1. The engine's sign is x >= 0 (a bit holds no 0), so it gives +1
    at exactly 0 where PyTorch gives 0; exact for every other input (docs/converter.md)."""
    x = tr.value(node, node.input[0])
    producer = tr.onnx_producer.get(x.name)
    clip = next((n for n in reversed(tr.nodes) if n.output == x.name and n.kind == "clip"), None)
    if (producer is not None and producer.op_type in _EXACT_ZEROS) or (
        clip is not None and clip.p["lo"] >= 0
    ):
        tr.warnings.append(
            f"{node_label(node)} takes the sign of {x.name!r}, which can be exactly 0 (the "
            f"output of a ReLU, a clip at 0, an Abs or a max pool): PyTorch's sign gives 0 "
            f"there, the engine +1 (sign(x) = x >= 0), so outputs differ wherever that input "
            f"is exactly 0"
        )
    out = tr.new_value(node, x.c, x.h, x.w, x.rank, kind="pm1")
    tr.emit("sign", node, [x.name], out, threshold=np.zeros(x.c, np.float32))


# Elementwise ops with a constant that a Round binarizer may apply before its Clip, each
# nondecreasing in the activation (a Mul or Div only by a positive constant).
_MONOTONE_STEPS = ("Add", "Sub", "Mul", "Div")


def _float32_keys_to_floats(keys: np.ndarray) -> np.ndarray:
    """Order-preserving int64 keys -> float32: key k >= 0 is the float of bits k, key -k is
    the negative of that float."""
    bits = np.abs(keys).astype(np.uint32).view(np.float32)
    return np.where(keys < 0, -bits, bits).astype(np.float32)


@translates("Round")
def _round(tr: Translator, node: onnx.NodeProto) -> None:
    """``x.add(1).div(2).clamp(0, 1).round().mul(2).add(-1)`` (the deterministic rounding
    binarizer of BinaryNet-style code): Round of a Clip whose range holds one rounding
    boundary, of a chain of Add/Sub/Mul/Div by constants (nondecreasing) of an activation x.
    Then round(...) is q0 + [x >= t] per channel for the exact float32 threshold t, found by
    bisection over the float32 numbers with the chain evaluated in float32 as ONNX and
    PyTorch evaluate it; the result is an indicator (`Indicator`) that the Mul/Add after it
    turn into a sign. Exact for every non-NaN input."""
    clip = tr.onnx_producer.get(node.input[0])
    if clip is None or clip.op_type != "Clip" or tr.opset < 11:
        fail(node, "Round is supported only as a binarizer: Round(Clip(...)) of an activation")
    lo_c, hi_c = tr.opt_const(clip, 1, "min"), tr.opt_const(clip, 2, "max")
    if lo_c is None or hi_c is None or np.size(lo_c) != 1 or np.size(hi_c) != 1:
        fail(node, "a Round binarizer needs a Clip with scalar min and max")
    lo = np.float32(np.asarray(lo_c).reshape(-1)[0])
    hi = np.float32(np.asarray(hi_c).reshape(-1)[0])
    q_lo, q_hi = float(np.round(lo)), float(np.round(hi))
    if not q_hi - q_lo == 1.0:
        fail(
            node,
            f"Round of a Clip to [{lo}, {hi}] takes {q_hi - q_lo + 1:g} values, not two: "
            f"only a binarizer (two values) is supported",
        )
    # the chain, from the Clip's input back to the activation it starts from
    steps: List[Tuple[str, np.ndarray, bool]] = []  # (op, constant, constant is the 1st input)
    name = clip.input[0]
    while True:
        producer = tr.onnx_producer.get(name)
        if (
            producer is None
            or producer.op_type not in _MONOTONE_STEPS
            or len(producer.input) != 2
            or producer.input[0] in tr.ge
            or producer.input[1] in tr.ge
        ):
            break
        a, b = producer.input[0], producer.input[1]
        if tr.is_const(a) == tr.is_const(b):
            break
        const_first = tr.is_const(a)
        c = np.asarray(tr.consts[a if const_first else b])
        positive = np.all(c > 0)
        if (
            (producer.op_type == "Sub" and const_first)
            or (producer.op_type == "Mul" and not positive)
            or (producer.op_type == "Div" and (const_first or not positive))
        ):
            fail(node, f"the Round binarizer's {producer.op_type} is not nondecreasing in x")
        steps.append((producer.op_type, c, const_first))
        name = b if const_first else a
    x = tr.value(node, name)
    consts = [(op, tr.per_channel(node, c, x, f"the {op} constant"), f) for op, c, f in steps]

    def f(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float32)
        for op, c, first in reversed(consts):
            if op == "Add":
                v = (c + v) if first else (v + c)
            elif op == "Sub":
                v = v - c
            elif op == "Mul":
                v = (c * v) if first else (v * c)
            else:
                v = v / c
            v = v.astype(np.float32)
        return np.round(np.minimum(np.maximum(v, lo), hi))

    # smallest float32 t (per channel) with f(t) == q_hi, over keys of the ordered floats
    top = int(np.array(np.finfo(np.float32).max, np.float32).view(np.uint32))
    low_k = np.full(x.c, -top, np.int64)  # f(low) == q_lo is checked below
    high_k = np.full(x.c, top, np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        if not (np.all(f(_float32_keys_to_floats(low_k)) == q_lo)):
            fail(node, "the Round binarizer is not q_lo at the lowest input")
        if not (np.all(f(_float32_keys_to_floats(high_k)) == q_hi)):
            fail(node, "the Round binarizer is not q_hi at the highest input")
        while np.any(high_k - low_k > 1):
            mid = (low_k + high_k) // 2
            up = f(_float32_keys_to_floats(mid)) == q_hi
            high_k = np.where(up, mid, high_k)
            low_k = np.where(up, low_k, mid)
    threshold = _float32_keys_to_floats(high_k)
    tr.ge[node.output[0]] = Indicator(x.name, threshold, node, q_hi - q_lo, q_lo, False)


@translates("Clip")
def _clip(tr: Translator, node: onnx.NodeProto) -> None:
    """Hardtanh / clamp / ReLU6: a `clip` node, which `drop_clip_before_sign` removes before a
    sign where it changes nothing; anywhere else it becomes CLIP."""
    x = tr.value(node, node.input[0])
    a = attrs(node)
    if tr.opset < 11:
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
    else:
        lo_c, hi_c = tr.opt_const(node, 1, "min"), tr.opt_const(node, 2, "max")
        lo = -np.inf if lo_c is None else float(np.asarray(lo_c).reshape(-1)[0])
        hi = np.inf if hi_c is None else float(np.asarray(hi_c).reshape(-1)[0])
    if np.isnan(lo) or np.isnan(hi) or lo > hi:
        fail(node, f"Clip bounds [{lo}, {hi}] must be two numbers with min <= max")
    out = tr.new_value(node, x.c, x.h, x.w, x.rank)
    tr.emit("clip", node, [x.name], out, lo=float(lo), hi=float(hi))


@translates("MaxPool")
def _maxpool(tr: Translator, node: onnx.NodeProto) -> None:
    """MaxPool -> MAXPOOL. The engine pools in floor mode over -inf padding; ceil mode is
    written as the bottom/right pad that makes floor mode give the same windows. A ceil-mode
    last window that would start in the padding is refused: ONNX keeps it (a window of padding
    only), PyTorch drops it, so the two disagree on the output shape."""
    x = tr.value(node, node.input[0])
    a = attrs(node)
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        fail(node, "MaxPool with auto_pad is not supported: export with explicit pads")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        fail(node, f"MaxPool with dilations {list(a['dilations'])} is not supported (only 1)")
    if len(node.output) > 1 and node.output[1]:
        fail(node, "MaxPool's Indices output (return_indices=True) is not supported")
    if pt >= kh or pb >= kh or pl >= kw or pr >= kw:
        fail(node, f"MaxPool pads {[pt, pl, pb, pr]} must be smaller than the kernel {kh}x{kw}")
    if x.h + pt + pb < kh or x.w + pl + pr < kw:
        fail(node, f"MaxPool kernel {kh}x{kw} is larger than the padded input")

    def out_size(n: int, k: int, s: int, p0: int, p1: int) -> int:
        span = n + p0 + p1 - k
        if not a.get("ceil_mode", 0):
            return span // s + 1
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p0:
            fail(
                node,
                f"MaxPool in ceil mode adds a last window (kernel {k}, stride {s}) that starts "
                f"in the padding: ONNX keeps it, PyTorch drops it; use ceil_mode=False or "
                f"pads that end the input on a window",
            )
        return out

    ho, wo = out_size(x.h, kh, sh, pt, pb), out_size(x.w, kw, sw, pl, pr)
    # The end pads for which floor mode gives exactly ho x wo windows; always in [0, k - 1]
    # since the last window starts before the input ends.
    pads = (pt, pl, max(0, (ho - 1) * sh + kh - x.h - pt), max(0, (wo - 1) * sw + kw - x.w - pl))
    out = tr.new_value(node, x.c, ho, wo)
    tr.emit("maxpool", node, [x.name], out, kernel=(kh, kw), stride=(sh, sw), pads=pads)


@translates("Relu")
def _relu(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    tr.emit("relu", node, [x.name], tr.new_value(node, x.c, x.h, x.w, x.rank))


@translates("Sigmoid")
def _sigmoid(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    tr.emit("sigmoid", node, [x.name], tr.new_value(node, x.c, x.h, x.w, x.rank))


@translates("PRelu")
def _prelu(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    x = tr.feature_vector(node, x, tr.const(node, 1, "the slope"))
    slope = tr.per_channel(node, tr.const(node, 1, "the slope"), x, "the slope")
    tr.emit("prelu", node, [x.name], tr.new_value(node, x.c, x.h, x.w, x.rank), slope=slope)


@translates("LeakyRelu")
def _leakyrelu(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    slope = np.full(x.c, attrs(node).get("alpha", 0.01), dtype=np.float32)
    tr.emit("prelu", node, [x.name], tr.new_value(node, x.c, x.h, x.w, x.rank), slope=slope)


@translates("Concat")
def _concat(tr: Translator, node: onnx.NodeProto) -> None:
    xs = [tr.value(node, i) for i in node.input]
    for x in xs:
        if x.flat_map:
            fail(node, _flat_map_problem(x, "a Concat"))
    rank = xs[0].rank
    axis = attrs(node).get("axis")
    if axis is None or axis % rank != 1 or any(x.rank != rank for x in xs):
        fail(node, f"only a Concat along channels (axis 1) is supported, got axis {axis}")
    if any((x.h, x.w) != (xs[0].h, xs[0].w) for x in xs):
        fail(node, "concatenated activations differ in height or width")
    out = tr.new_value(node, sum(x.c for x in xs), xs[0].h, xs[0].w, rank)
    tr.emit("concat", node, [x.name for x in xs], out)


@translates("Tile")
def _tile(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    reps = [int(r) for r in tr.const(node, 1, "repeats").reshape(-1)]
    if x.flat_map:
        fail(node, _flat_map_problem(x, "a Tile"))
    if len(reps) != x.rank or any(r != 1 for j, r in enumerate(reps) if j != 1) or reps[1] < 1:
        fail(
            node,
            f"only a repeat along channels is supported (repeats [1, k, 1, 1]), got {reps}",
        )
    if reps[1] == 1:
        tr.alias(node, x)
        return
    out = tr.new_value(node, x.c * reps[1], x.h, x.w, x.rank)
    tr.emit("concat", node, [x.name] * reps[1], out)


@translates("Expand")
def _expand(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    shape = tr.opt_const(node, 1, "the shape") if node.input[1] in tr.consts else None
    dims = (None, x.c, x.h, x.w) if x.rank == 4 else (None, x.features)
    if shape is not None:
        shape = [int(s) for s in shape.reshape(-1)]
        aligned = [1] * (len(dims) - len(shape)) + shape
        ok = len(shape) <= len(dims) and all(
            s == 1 or (j > 0 and s == dims[j]) for j, s in enumerate(aligned)
        )
    else:
        inferred = tr.inferred.get(node.output[0])
        ok = inferred is not None and tuple(inferred[1:]) == tuple(dims[1:])
    if not ok:
        fail(node, f"only an Expand that leaves the shape unchanged is supported (shape {shape})")
    tr.alias(node, x)


def _onnx_ceil_size(n: int, k: int, s: int, p0: int, p1: int) -> int:
    """The ceil-mode output size of ONNX's shape inference, which keeps a last window that
    starts in the end padding (PyTorch and ONNX Runtime drop it)."""
    return -(-(n + p0 + p1 - k) // s) + 1


def _reinfer_dropping_last_window(
    tr: Translator, node: onnx.NodeProto, stand_in_kernel: Tuple[int, int]
) -> None:
    """ONNX shape inference gives a ceil-mode AveragePool one window more than PyTorch and ONNX
    Runtime compute when the last window would start in the padding, and so does every shape
    after it (the exporter even declares the output that way). Infer the shapes again with a
    stand-in kernel for which ONNX's formula gives the size that is computed (a window span of
    exactly (out - 1) * stride), without the exporter's declared shapes, so that the shape
    cross-check of the nodes after this one compares with what the graph computes."""
    # One copy per translation, kept so that the stand-ins of several such pools add up.
    model = tr.stand_in_shape_model
    if model is None:
        model = onnx.ModelProto()
        model.CopyFrom(tr.model)
        del model.graph.value_info[:]
        for vi in model.graph.output:
            vi.type.tensor_type.ClearField("shape")
        tr.stand_in_shape_model = model
    for n in model.graph.node:
        if list(n.output) == list(node.output):
            for a in n.attribute:
                if a.name == "kernel_shape":
                    a.ints[:] = list(stand_in_kernel)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # the shape checks after this node then rely on ours alone
        tr.warnings.append(f"ONNX shape inference failed ({e}); continuing without it")
        tr.inferred.clear()
        return
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            tr.inferred[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim
            )


@translates("AveragePool")
def _averagepool(tr: Translator, node: onnx.NodeProto) -> None:
    """AveragePool (nn.AvgPool2d, F.avg_pool2d, and nn.AdaptiveAvgPool2d, which PyTorch exports
    as an AveragePool when the input size is a multiple of the output size) -> AVGPOOL where it
    computes exactly the same, else AVGPOOL2D, which is PyTorch's avg_pool2d in every
    combination of padding, ceil_mode and count_include_pad (ONNX Runtime agrees with it on
    every one of them, the ceil-mode output size and divisor included)."""
    x = tr.value(node, node.input[0])
    a = attrs(node)
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    ceil_mode = bool(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    auto_pad = a.get("auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        fail(node, "AveragePool with auto_pad SAME is not supported: export with explicit pads")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        fail(node, f"AveragePool with dilations {list(a['dilations'])} is not supported (only 1)")
    if pt >= kh or pb >= kh or pl >= kw or pr >= kw:
        fail(
            node,
            f"AveragePool pads {[pt, pl, pb, pr]} must be smaller than the kernel {kh}x{kw} "
            f"(PyTorch allows at most half the kernel)",
        )
    ho = avgpool2d_out_size(x.h, pt, pb, kh, sh, ceil_mode)
    wo = avgpool2d_out_size(x.w, pl, pr, kw, sw, ceil_mode)
    if ho is None or wo is None:
        fail(node, f"AveragePool kernel {kh}x{kw} is larger than the padded input")
    if ceil_mode and (ho, wo) != (
        _onnx_ceil_size(x.h, kh, sh, pt, pb),
        _onnx_ceil_size(x.w, kw, sw, pl, pr),
    ):
        _reinfer_dropping_last_window(
            tr, node, (x.h + pt + pb - (ho - 1) * sh, x.w + pl + pr - (wo - 1) * sw)
        )
    out = tr.new_value(node, x.c, ho, wo)
    # AVGPOOL (ceil mode, no padding, the covered pixels as divisor) gives the same windows and
    # divisors when there is no padding and its ceil-mode size is this size: without padding
    # both divisors are the covered pixel count. Such pools were AVGPOOL before AVGPOOL2D
    # existed, so their files stay byte-identical.
    old_ho, old_wo = -(-(x.h - kh) // sh) + 1, -(-(x.w - kw) // sw) + 1
    if (pt, pl, pb, pr) == (0, 0, 0, 0) and (old_ho, old_wo) == (ho, wo):
        tr.emit("avgpool", node, [x.name], out, kernel=(kh, kw), stride=(sh, sw))
        return
    tr.emit(
        "avgpool2d",
        node,
        [x.name],
        out,
        kernel=(kh, kw),
        stride=(sh, sw),
        pads=(pt, pl, pb, pr),
        ceil_mode=ceil_mode,
        count_include_pad=include_pad,
    )


@translates("GlobalAveragePool")
def _globalaveragepool(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0])
    tr.emit("gap", node, [x.name], tr.new_value(node, x.c, 1, 1))


@translates("ReduceMean")
def _reducemean(tr: Translator, node: onnx.NodeProto) -> None:
    a = attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = tr.const(node, 1, "axes").reshape(-1).tolist()
    keep = bool(a.get("keepdims", 1))
    pending = tr.row_means.get(node.input[0])
    if pending is not None:
        # the second mean of `x.mean(3).mean(2)`: over the rows of the row means, which is
        # the mean over H and W (the same up to rounding: PyTorch sums in two steps)
        source, source_keep = pending
        rank_before = 4 if source_keep else 3
        if axes is None or [int(ax) % rank_before for ax in axes] != [2] or keep != source_keep:
            fail(node, f"only the mean over H of the row means is supported, got {axes}")
        tr.emit(
            "gap", node, [source], tr.new_value(node, tr.values[source].c, 1, 1, 4 if keep else 2)
        )
        return
    x = tr.value(node, node.input[0])
    if x.rank == 4 and axes is not None and [int(ax) % 4 for ax in axes] == [3]:
        # `x.mean(3)` (or mean(-1)): the row means, taken by the GAP of the mean over H that
        # must follow (recorded here, refused if anything else reads it)
        tr.row_means[node.output[0]] = (x.name, keep)
        return
    if x.rank != 4 or axes is None or sorted(int(ax) % 4 for ax in axes) != [2, 3]:
        fail(node, f"only a mean over H and W (axes (2, 3)) is supported, got {axes}")
    rank = 4 if keep else 2
    tr.emit("gap", node, [x.name], tr.new_value(node, x.c, 1, 1, rank))


def _flat_map_problem(v: ValueInfo, what: str) -> str:
    return (
        f"{what} reads {v.name!r}, a {v.c}x{v.h}x{v.w} map flattened to (N, {v.features}); the "
        f"engine keeps the map's NHWC data (its features in another order than PyTorch's "
        f"c*H*W + y*W + x), so only element-wise ops (with scalar constants), signs and a "
        f"fully connected layer may read it"
    )


def _flatten_to(tr: Translator, node, x: ValueInfo, rest: List[int]) -> None:
    """`node` reshapes x to (N, *rest): record it as the same data, or fail. Supported: the
    flattening of a map to (N, C*H*W) (a rank-2 alias that keeps the map's c, h, w: an FC reading
    it gets its weight columns permuted at emission), its inverse back to (N, C, H, W), a
    (N, C) <-> (N, C, 1, 1) change, and reshapes that change nothing."""
    if x.kind == "pm1pad":
        fail(node, "reshapes a +1-padded sign output; only a binary conv can read that")
    if rest == [x.features] or (x.rank == 4 and (x.h, x.w) == (1, 1) and rest == [x.c, 1, 1]):
        tr.alias(node, x, rank=len(rest) + 1)
        return
    if rest == [x.c, x.h, x.w]:  # a map, or a flattened map back to its own shape
        tr.alias(node, x, rank=4)
        return
    shape = f"(N, {', '.join(str(d) for d in rest)})"
    have = f"(N, {x.c}, {x.h}, {x.w})" if x.rank == 4 else f"(N, {x.features})"
    fail(
        node,
        f"reshaping {have} to {shape} is not supported: only a flattening of (N, C, H, W) to "
        f"(N, C*H*W) (before an FC), its inverse, and (N, C) <-> (N, C, 1, 1) are (the engine "
        f"keeps maps in NHWC order)",
    )


@translates("Flatten")
def _flatten(tr: Translator, node: onnx.NodeProto) -> None:
    """torch.flatten(x, 1), nn.Flatten(): (N, C, H, W) -> (N, C*H*W)."""
    x = tr.value(node, node.input[0], allow_pm1=True)
    if attrs(node).get("axis", 1) != 1:
        fail(node, "only Flatten(axis=1) is supported")
    _flatten_to(tr, node, x, [x.features])


@translates("Reshape")
def _reshape(tr: Translator, node: onnx.NodeProto) -> None:
    """x.view(x.size(0), -1), x.reshape(N, -1), x.view(-1, C*H*W), ...: the target shape from
    the constant (0 copies the input's dim, one -1 is inferred), or from ONNX shape inference
    when the shape is computed (x.size(0) exports as Shape -> Gather -> Concat). The batch dim
    is not checked: the engine runs one image at a time."""
    x = tr.value(node, node.input[0], allow_pm1=True)
    if attrs(node).get("allowzero", 0):
        fail(node, "Reshape with allowzero=1 is not supported")
    in_dims = [None, x.c, x.h, x.w] if x.rank == 4 else [None, x.features]
    if node.input[1] in tr.consts:
        shape = [int(s) for s in tr.consts[node.input[1]].reshape(-1)]
        dims = [in_dims[j] if s == 0 and j < len(in_dims) else s for j, s in enumerate(shape)]
        rest = dims[1:]
        if -1 in rest and rest.count(-1) == 1 and shape[0] != -1:
            known = int(np.prod([d for d in rest if d != -1]))
            if known and x.features % known == 0:
                rest = [x.features // known if d == -1 else d for d in rest]
        if any(d is None or d < 0 for d in rest):
            fail(node, f"cannot resolve the target shape {shape} of a Reshape")
        _flatten_to(tr, node, x, [int(d) for d in rest])
        return
    shapes = [_computed_shape(tr, node, node.input[1], batch) for batch in (2, 3)]
    if shapes[0] is None or shapes[1] is None or shapes[0][1:] != shapes[1][1:]:
        inferred = tr.inferred.get(node.output[0])
        if inferred is None or len(inferred) not in (2, 4) or None in inferred[1:]:
            fail(
                node,
                "a Reshape whose computed shape is not the batch size and constants (such as "
                "x.view(x.size(0), -1)) is not supported, unless ONNX shape inference knows its "
                "output shape",
            )
        _flatten_to(tr, node, x, [int(d) for d in inferred[1:]])
        return
    shape = shapes[0]
    dims = [in_dims[j] if s == 0 and j < len(in_dims) else s for j, s in enumerate(shape)]
    rest = dims[1:]
    if -1 in rest and rest.count(-1) == 1:
        known = int(np.prod([d for d in rest if d != -1]))
        if known and x.features % known == 0:
            rest = [x.features // known if d == -1 else d for d in rest]
    if any(d is None or d < 0 for d in rest):
        fail(node, f"cannot resolve the target shape {shape} of a Reshape")
    _flatten_to(tr, node, x, [int(d) for d in rest])


def _computed_shape(tr: Translator, node, name: str, batch: int) -> Optional[List[int]]:
    """The value of shape tensor `name` when it is computed from activations' shapes and
    constants only (x.size(0) exports as Shape -> Gather -> Unsqueeze -> Concat), evaluated with
    batch size `batch` (a dim that follows the batch size shows by differing between two
    batches); None when it depends on anything else."""
    from onnx.reference import ReferenceEvaluator

    known: Dict[str, np.ndarray] = {}
    order: List[onnx.NodeProto] = []
    stack, seen = [name], set()
    while stack:  # the nodes computing `name`, back to Shape nodes and constants
        v = stack.pop()
        if v in tr.consts or v in seen:
            continue
        seen.add(v)
        producer = tr.onnx_producer.get(v)
        if producer is None or producer.domain not in ("", "ai.onnx") or len(order) > 64:
            return None
        if producer.op_type == "Shape":
            source = tr.resolve(producer.input[0])
            if source not in tr.values:
                return None
            val = tr.values[source]
            full = [batch, val.c, val.h, val.w] if val.rank == 4 else [batch, val.features]
            a = attrs(producer)
            start, end = a.get("start", 0), a.get("end", len(full))
            known[v] = np.array(full[start:end] if end != 0 else [], dtype=np.int64)
            continue
        order.append(producer)
        stack.extend(i for i in producer.input if i)
    position = {id(n): j for j, n in enumerate(tr.graph.node)}
    try:
        for n in sorted({id(n): n for n in order}.values(), key=lambda n: position[id(n)]):
            ins = {i: known[i] if i in known else tr.consts[i] for i in n.input if i}
            outs = ReferenceEvaluator(n, opsets={"": tr.opset}).run(None, ins)
            known.update({o: np.asarray(r) for o, r in zip(n.output, outs) if o})
        return [int(d) for d in known[name].reshape(-1)]
    except Exception:  # not a computation of shapes the reference evaluator can do: refused
        return None


def _axes(tr: Translator, node) -> List[int]:
    axes = attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = tr.const(node, 1, "axes").reshape(-1).tolist()
    return [int(a) for a in (axes or [])]


@translates("Squeeze")
def _squeeze(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0], allow_pm1=True)
    axes = sorted(a % 4 for a in _axes(tr, node))
    if not axes and x.rank == 4 and (x.h, x.w) == (1, 1) and x.c > 1:
        # `x.squeeze()` of a pooled (N, C, 1, 1) map: every axis of size 1, which is H and W
        # (and N when the batch is 1, where PyTorch's result has no batch axis: the engine
        # always keeps it, the values are the same)
        axes = [2, 3]
    if x.rank != 4 or (x.h, x.w) != (1, 1) or axes != [2, 3]:
        fail(
            node,
            f"only Squeeze of axes (2, 3) of a (N, C, 1, 1) activation is supported (got a "
            f"{x.c}x{x.h}x{x.w} activation of rank {x.rank}; flatten a map with Flatten or "
            f"Reshape before an FC)",
        )
    tr.alias(node, x, rank=2)


@translates("Unsqueeze")
def _unsqueeze(tr: Translator, node: onnx.NodeProto) -> None:
    x = tr.value(node, node.input[0], allow_pm1=True)
    if x.flat_map:
        fail(node, _flat_map_problem(x, "an Unsqueeze"))
    if x.rank != 2 or sorted(a % 4 for a in _axes(tr, node)) != [2, 3]:
        fail(node, "only Unsqueeze of axes (2, 3) of a (N, C) activation is supported")
    tr.alias(node, x, rank=4)


def _fc_input(tr: Translator, node) -> ValueInfo:
    """The (N, C) input of a Gemm or MatMul: a float activation, or a sign's ±1 (a binary FC);
    a flattened H x W map is (N, C*H*W) (`x.features`)."""
    x = tr.value(node, node.input[0], allow_pm1=True)
    if x.rank != 2:
        fail(node, "the input of a fully connected layer must be (N, C) (Flatten first)")
    if x.kind == "pm1pad":
        fail(node, "reads a +1-padded sign output; only a binary conv can read that")
    return x


def _emit_fc(tr: Translator, node, x: ValueInfo, w: np.ndarray, bias: np.ndarray) -> None:
    """w [O, C] float64 (alpha and any Gemm scale applied), bias [O]: a float FC, or a binary FC
    (`bfc`) when x is a sign's ±1, whose weights must then be in {-alpha_o, 0, +alpha_o} per
    output row (two BFCs summed where they hold zeros, `_emit_binary`)."""
    out = tr.new_value(node, w.shape[0], 1, 1, rank=2)
    if x.kind == "f32":
        tr.emit("fc", node, [x.name], out, w=w, b=bias)
        return
    # A Linear weight [O, C] is a 1x1 conv's [Co, Ci, 1, 1]: the same ±alpha_o check.
    bw = _binary_weights(tr, node, w * x.pm1_scale)
    # fc(a, alpha*s) = alpha*fc(a, s): the integer dot, then the scale (as for bconv).
    _emit_binary(tr, "bfc", node, x, out, bw, bias, "FC")


@translates("Gemm")
def _gemm(tr: Translator, node: onnx.NodeProto) -> None:
    x = _fc_input(tr, node)
    a = attrs(node)
    if a.get("transA", 0):
        fail(node, "transA=1 is not supported")
    w = tr.const(node, 1, "the weight").astype(np.float64)
    w = w if a.get("transB", 0) else w.T
    c = tr.opt_const(node, 2, "the bias")
    o = w.shape[0]
    if w.ndim != 2 or w.shape[1] != x.features:
        fail(node, f"weight {w.shape} does not fit an input of {x.features} features")
    if c is None:
        bias = np.zeros(o)
    elif c.size in (1, o):
        bias = np.broadcast_to(c.astype(np.float64).reshape(-1), (o,)) * a.get("beta", 1.0)
    else:
        fail(node, f"bias of shape {c.shape} is not one value per output ({o})")
    _emit_fc(tr, node, x, w * a.get("alpha", 1.0), bias)


@translates("MatMul")
def _matmul(tr: Translator, node: onnx.NodeProto) -> None:
    x = _fc_input(tr, node)
    w = tr.const(node, 1, "the weight").astype(np.float64)
    if w.ndim != 2 or w.shape[0] != x.features:
        fail(node, f"weight {w.shape} does not fit an input of {x.features} features")
    _emit_fc(tr, node, x, w.T.copy(), np.zeros(w.shape[1]))


@translates("Softmax")
@translates("LogSoftmax")
def _softmax(tr: Translator, node: onnx.NodeProto) -> None:
    """Softmax / LogSoftmax over the channels -> SOFTMAX (log = 1 for LogSoftmax), anywhere in
    the graph: the (N, C) vector of a classifier (axis 1 or -1), or every pixel of an (N, C, H,
    W) map (axis 1 or -3). Opset 13 normalizes along that one axis; before 13 the input is
    flattened to 2-D from the axis on, which is the channels only for an (N, C) value or a
    (N, C, 1, 1) one, so an older opset's softmax of a map is refused."""
    x = tr.value(node, node.input[0])
    axis = int(attrs(node).get("axis", -1 if tr.opset >= 13 else 1))
    if not -x.rank <= axis < x.rank or axis % x.rank != 1:
        fail(
            node,
            f"{node.op_type} over axis {axis} of a rank-{x.rank} value is not supported: the "
            f"engine normalizes over the channels (axis 1)",
        )
    if tr.opset < 13 and (x.h, x.w) != (1, 1):
        fail(
            node,
            f"{node.op_type} of opset {tr.opset} on a {x.c}x{x.h}x{x.w} map normalizes over "
            f"C, H and W together, which the engine does not do (it normalizes each pixel over "
            f"its channels, as opset 13's axis=1 does); export with opset >= 13",
        )
    out = tr.new_value(node, x.c, x.h, x.w, x.rank)
    tr.emit("softmax", node, [x.name], out, log=node.op_type == "LogSoftmax")


_RESIZE_BILINEAR_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def _resize_input_array(tr: Translator, node, index: int, what: str) -> Optional[np.ndarray]:
    """Input `index` of a Resize (its scales or sizes): a constant, or a computation of the
    activations' shapes and constants (``F.interpolate(x, size=y.shape[-2:])`` exports
    Shape -> Slice -> Concat), folded here since every shape is known at conversion. None when
    absent or empty."""
    if len(node.input) <= index or not node.input[index]:
        return None
    name = node.input[index]
    if name in tr.consts:
        arr = np.asarray(tr.consts[name])
        return None if arr.size == 0 else arr
    values = [_computed_shape(tr, node, name, batch) for batch in (1, 2)]
    if values[0] is None or values[1] is None:
        fail(
            node,
            f"its {what} ({name!r}) is neither a constant nor computed from the input's shape "
            f"and constants only",
        )
    if len(values[0]) != 4 or values[0][1:] != values[1][1:]:
        fail(node, f"its {what} {values[0]} depend on the batch size beyond the batch axis")
    return np.array(values[0], dtype=np.int64)


@translates("Resize")
def _resize(tr: Translator, node: onnx.NodeProto) -> None:
    """ONNX Resize (what F.interpolate exports) -> RESIZE: nearest (coordinate mode asymmetric
    with nearest_mode floor: PyTorch's "nearest"; half_pixel with round_prefer_ceil:
    "nearest-exact") or linear over H and W (coordinate modes half_pixel, pytorch_half_pixel,
    align_corners, asymmetric). The output size comes from `sizes` or `scales` (constants or
    shape computations, folded); the engine's ratio (input pixels per output pixel) is the one
    PyTorch computes: (n - 1) / (m - 1) with align_corners, else 1 / scale when the model gave
    scales, n / m when it gave sizes."""
    a = attrs(node)

    def text(key: str, default: str) -> str:
        v = a.get(key, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    x = tr.value(node, node.input[0])
    if x.rank != 4:
        fail(node, f"Resize of a rank-{x.rank} value is not supported (only N x C x H x W maps)")
    mode = text("mode", "nearest")
    coords = text(
        "coordinate_transformation_mode", "half_pixel" if tr.opset >= 11 else "asymmetric"
    )
    nearest_mode = text("nearest_mode", "round_prefer_floor")
    for key, default in (("antialias", 0), ("exclude_outside", 0)):
        if int(a.get(key, default)) != default:
            fail(node, f"Resize with {key}={a[key]} is not supported")
    if "axes" in a:
        fail(node, "Resize with axes is not supported: export resizing N, C, H and W")
    if text("keep_aspect_ratio_policy", "stretch") != "stretch":
        fail(node, "Resize with keep_aspect_ratio_policy other than stretch is not supported")
    if mode == "linear":
        if coords not in _RESIZE_BILINEAR_COORDS:
            fail(
                node,
                f"linear Resize with coordinate_transformation_mode {coords!r} is not "
                f"supported (only {', '.join(_RESIZE_BILINEAR_COORDS)})",
            )
    elif mode == "nearest":
        if (coords, nearest_mode) not in (
            ("asymmetric", "floor"),
            ("half_pixel", "round_prefer_ceil"),
        ):
            fail(
                node,
                f"nearest Resize with coordinate_transformation_mode {coords!r} and nearest_mode "
                f"{nearest_mode!r} is not supported (only asymmetric + floor, PyTorch's "
                f"'nearest', and half_pixel + round_prefer_ceil, its 'nearest-exact')",
            )
    else:
        fail(node, f"Resize mode {mode!r} is not supported (only nearest and linear)")

    scales_at, sizes_at = (1, 2) if tr.opset < 11 else (2, 3)
    scales = _resize_input_array(tr, node, scales_at, "scales")
    sizes = _resize_input_array(tr, node, sizes_at, "sizes")
    if sizes is not None:
        sizes = sizes.reshape(-1).astype(np.int64)
        if sizes.size != 4 or int(sizes[1]) != x.c:
            fail(node, f"sizes {sizes.tolist()} must be (N, {x.c}, H, W): only H and W resize")
        oh, ow = int(sizes[2]), int(sizes[3])
        axis_scale: Tuple[Optional[float], Optional[float]] = (None, None)
    elif scales is not None:
        scales = scales.reshape(-1).astype(np.float64)
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            fail(node, f"scales {scales.tolist()} must be (1, 1, s_h, s_w): only H and W resize")
        if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
            fail(node, f"scales {scales.tolist()} must be finite and > 0")
        # PyTorch's (and ONNX's) output size: floor(n * scale)
        oh, ow = int(np.floor(x.h * scales[2])), int(np.floor(x.w * scales[3]))
        axis_scale = (float(scales[2]), float(scales[3]))
    else:
        fail(node, "Resize has neither scales nor sizes")
    if oh < 1 or ow < 1:
        fail(node, f"Resize to {oh}x{ow} is empty")

    def ratio(n: int, m: int, scale: Optional[float]) -> np.float32:
        # PyTorch's area_pixel_compute_scale in f32 (upsample kernels' opmath for float)
        if coords == "align_corners":
            return np.float32(n - 1) / np.float32(m - 1) if m > 1 else np.float32(0)
        if coords == "pytorch_half_pixel" and m == 1:
            return np.float32(0)  # its source coordinate -0.5, clamped to pixel 0
        if scale is not None:
            return np.float32(1.0 / scale)
        return np.float32(n) / np.float32(m)

    r = np.array([ratio(x.h, oh, axis_scale[0]), ratio(x.w, ow, axis_scale[1])], np.float32)
    out = tr.new_value(node, x.c, oh, ow)
    tr.emit(
        "resize",
        node,
        [x.name],
        out,
        out_size=(oh, ow),
        bilinear=mode == "linear",
        half_pixel=coords in ("half_pixel", "pytorch_half_pixel"),
        ratio=r,
    )
