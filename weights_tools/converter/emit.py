"""Emission: the intermediate graph -> a `weights_tools.qbw.Graph`, in NHWC.

Conv weights become [Co, kh, kw, Ci], binary weights are packed by the bit contract
(`pack_signs`, [Co, k, k, words]; a binary FC's [O, words]), depthwise weights [k*C, 9] (tap dy*3 + dx). Values are
numbered in order of first appearance (the input first), tensors in op order; FC and depthwise
convs are FP32 here (`weights_tools.convert` encodes them afterwards).

`op_sources` records, per emitted op, the ONNX nodes it came from and their PyTorch modules (the
converter writes it into the file's metadata as "op_sources", for `qbinfer.Model.profile`).
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Set

import numpy as np
import onnx

from ..qbw import DType, FCEncoding, Graph, Op, OpType, Preprocessing, Tensor, Value, pack_signs
from .errors import ConversionError
from .ir import IRGraph, ValueInfo
from .se_weights import binary_rows, int8_rows

__all__ = ["emit", "op_sources"]


def _nhwc_columns(w: np.ndarray, x: ValueInfo) -> np.ndarray:
    """An FC's weights [O, C*H*W], columns in PyTorch's order c*H*W + y*W + x (the flattening
    of an NCHW map; H = W = 1 for a plain vector), as [O, H, W, C]: the engine's input is the
    map's NHWC data, feature (y*W + x)*C + c. The caller flattens (float) or packs C (bits)."""
    return w.reshape(w.shape[0], x.c, x.h, x.w).transpose(0, 2, 3, 1)


def emit(graph: IRGraph, model_name: str = "") -> Graph:
    """The engine graph (NHWC) of the intermediate graph after the passes."""
    tensors: List[Tensor] = []
    values: List[Value] = []
    index: Dict[str, int] = {}
    ops: List[Op] = []

    def value(name: str, dtype: DType = DType.F32) -> int:
        if name not in index:
            v = graph.values[name]
            index[name] = len(values)
            values.append(Value(name, dtype, v.h, v.w, v.c))
        return index[name]

    def tensor(name: str, dtype: DType, data: Optional[np.ndarray]) -> Optional[int]:
        if data is None:
            return None
        tensors.append(Tensor(name, dtype, data))
        return len(tensors) - 1

    def f32(name: str, data) -> Optional[int]:
        return None if data is None else tensor(name, DType.F32, np.asarray(data, dtype=np.float32))

    value(graph.input_name)
    for n in graph.nodes:
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
                    # dilation only when > 1: a file without dilated convs stays what it was
                    # (and readable by a qbinfer that predates the attribute)
                    [*p["stride"], p["k"]] + ([p["dilation"]] if p.get("dilation", 1) > 1 else []),
                )
            )
        elif n.kind == "resize":
            ops.append(
                Op(
                    OpType.RESIZE,
                    name,
                    ins,
                    [out],
                    [f32(name + ".ratio", p["ratio"])],
                    [*p["out_size"], int(p["bilinear"]), int(p["half_pixel"])],
                )
            )
        elif n.kind == "bitpack":
            ops.append(
                Op(OpType.BITPACK, name, ins, [out], [f32(name + ".threshold", p["threshold"])])
            )
        elif n.kind == "bconv":
            packed = pack_signs(p["w"].transpose(0, 2, 3, 1))  # [Co, kh, kw, words]
            slots = [
                tensor(name + ".weight", DType.BITS, packed),
                f32(name + ".scale", p["scale"]),
                f32(name + ".bias", p["bias"]),
            ]
            if p.get("general", False):  # any kernel, stride or padding
                kh, kw = packed.shape[1:3]
                attrs = [kh, kw, *p["stride"], *p["pads"], p["pad_mode"]]
                ops.append(Op(OpType.BCONV2D_GENERAL, name, ins, [out], slots, attrs))
            else:
                ops.append(Op(OpType.BCONV2D, name, ins, [out], slots, [p["k"], p["pad_mode"]]))
        elif n.kind == "bfc":
            # [O, H, W, words(C)] -> [O, H*W*words(C)]: each pixel's words, as the input's
            packed = pack_signs(_nhwc_columns(p["w"], graph.values[n.inputs[0]]))
            ops.append(
                Op(
                    OpType.BFC,
                    name,
                    ins,
                    [out],
                    [
                        tensor(name + ".weight", DType.BITS, packed.reshape(len(packed), -1)),
                        f32(name + ".scale", p["scale"]),
                        f32(name + ".bias", p["bias"]),
                    ],
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
            fc_weight = _nhwc_columns(p["w"], graph.values[n.inputs[0]])  # [O, H, W, C]
            fc_weight = fc_weight.reshape(len(fc_weight), -1)
            ops.append(_fc_op(name, ins, out, fc_weight, p, tensor, f32))
        elif n.kind == "clip":
            # The bounds as f32: ONNX Clip compares in the input's type, f32 here, so a
            # float64 bound rounds the same way either side.
            bounds = np.array([p["lo"], p["hi"]], dtype=np.float32)
            ops.append(Op(OpType.CLIP, name, ins, [out], [f32(name + ".bounds", bounds)]))
        elif n.kind == "maxpool":
            attrs = [*p["kernel"], *p["stride"], *p["pads"]]
            ops.append(Op(OpType.MAXPOOL, name, ins, [out], [], attrs))
        elif n.kind == "softmax":
            ops.append(Op(OpType.SOFTMAX, name, ins, [out], [], [int(p["log"])]))
        elif n.kind == "avgpool2d":
            flags = [int(bool(p["ceil_mode"])), int(bool(p["count_include_pad"]))]
            attrs = [*p["kernel"], *p["stride"], *p["pads"], *flags]
            ops.append(Op(OpType.AVGPOOL2D, name, ins, [out], [], attrs))
        else:  # pragma: no cover - every kind is emitted above
            raise AssertionError(n.kind)
    if not ops:
        raise ConversionError("the model lowers to no op at all")
    inp = graph.values[graph.input_name]
    return Graph(
        tensors=tensors,
        values=values,
        ops=ops,
        input_value=0,
        output_value=index[graph.output_name],
        preprocessing=Preprocessing.for_input_size(inp.h, inp.w),
        model_name=model_name,
    )


def _fc_op(name: str, ins, out: int, weight: np.ndarray, p: dict, tensor, f32) -> Op:
    """A float FC: FP32, or (an SE layer trained with compact weights, `encoding` set by the
    translation) binary signs + per-row scale (FC binary) or INT8 codes + per-row scale (FC
    int8). The encoding is found again from the weights as they are now (a folded affine scales
    rows, which keeps either grid); should they have left it, the FC stays FP32."""
    encoding = p.get("encoding")
    bias = f32(name + ".bias", p["b"])
    if encoding == "binary":
        found = binary_rows(weight)
        if found is not None:
            pm1, scale = found
            signs = tensor(name + ".weight", DType.BITS, pack_signs(pm1))
            slots = [signs, f32(name + ".weight_scale", scale), bias]
            return Op(OpType.FC, name, ins, [out], slots, [int(FCEncoding.BINARY)])
    elif encoding == "int8":
        found8 = int8_rows(weight)
        if found8 is not None:
            q, scale = found8
            codes = tensor(name + ".weight", DType.I8, q)
            slots = [codes, f32(name + ".weight_scale", scale), bias]
            return Op(OpType.FC, name, ins, [out], slots, [int(FCEncoding.INT8)])
    slots = [f32(name + ".weight", weight), None, bias]
    return Op(OpType.FC, name, ins, [out], slots, [int(FCEncoding.FP32)])


# A walk back from an op's output that visits more ONNX nodes than this has escaped its own op
# (a value the translator renamed): the op then names only the node it was emitted from.
_MAX_SOURCES = 64


# The record's budget in the file's metadata string (at most 65535 bytes, docs/format.md), leaving
# room for the converter's other fields and the caller's metadata.
MAX_SOURCES_BYTES = 40_000


def op_sources(
    model: onnx.ModelProto, graph: Graph, max_bytes: int = MAX_SOURCES_BYTES
) -> Optional[List[Dict[str, List[str]]]]:
    """Per op of `graph` (emitted from `model`), in op order: {"onnx": the ONNX node names it
    came from, in graph order; "modules": their PyTorch module paths, distinct, the module of the
    node the op was emitted from first}.

    The rewrite passes merge nodes into the one an op is emitted from (a BatchNormalization
    into its Conv, a ReLU into the conv, a Clip and an Add into a sign) and keep the ONNX names
    of the values at the op's boundary, so the nodes of an op are those between its input values
    and its output value: found by walking back from the output's producer and stopping at the
    inputs. Constant nodes are left out (they compute nothing at run time).

    A record longer than `max_bytes` as JSON is shortened until it fits: first without the ONNX
    names (an op's own name is in the file anyway), then with the main module of each op only;
    None when even that does not fit (a model of thousands of ops: the profiler then names
    steps by their op types)."""
    from ..convert import module_path  # a function of names only; convert imports this package

    nodes = list(model.graph.node)
    producer: Dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
    by_name = {node.name: i for i, node in enumerate(nodes) if node.name}
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = {v.name for v in model.graph.input} - initializers
    sources: List[Dict[str, List[str]]] = []
    for op in graph.ops:
        stop = {graph.values[v].name for v in op.inputs}
        found: Set[int] = set()
        stack = [graph.values[v].name for v in op.outputs]
        seen: Set[str] = set()
        escaped = False
        while stack and not escaped:
            name = stack.pop()
            if name in stop or name in seen:
                continue
            seen.add(name)
            if name in graph_inputs:  # past the op's inputs: the walk left the op
                escaped = True
            elif name in producer:
                found.add(producer[name])
                stack.extend(nodes[producer[name]].input)
                escaped = len(found) > _MAX_SOURCES
        if escaped:
            found = set()
        if op.name in by_name:
            found.add(by_name[op.name])
        names = [nodes[i].name for i in sorted(found) if nodes[i].op_type != "Constant"]
        if not names:
            names = [op.name]
        # The module of the node the op was emitted from first: the op's main layer (the conv,
        # not the BatchNormalization folded into it).
        modules: List[str] = []
        for name in [op.name, *names]:
            module = module_path(name)
            if module and module not in modules:
                modules.append(module)
        sources.append({"onnx": names, "modules": modules})
    shorter = [
        sources,
        [{"modules": src["modules"]} for src in sources],
        [{"modules": src["modules"][:1]} for src in sources],
    ]
    for record in shorter:
        if len(json.dumps(record)) <= max_bytes:
            return record
    return None
