"""Emission: the intermediate graph -> a `weights_tools.qbw.Graph`, in NHWC.

Conv weights become [Co, kh, kw, Ci], binary weights are packed by the bit contract
(`pack_signs`, [Co, k, k, words]; a binary FC's [O, words]), depthwise weights [k*C, 9] (tap dy*3 + dx). Values are
numbered in order of first appearance (the input first), tensors in op order; FC and depthwise
convs are FP32 here (`weights_tools.convert` encodes them afterwards).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ..qbw import DType, FCEncoding, Graph, Op, OpType, Preprocessing, Tensor, Value, pack_signs
from .errors import ConversionError
from .ir import IRGraph, ValueInfo

__all__ = ["emit"]


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
                    [*p["stride"], p["k"]],
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
            ops.append(
                Op(
                    OpType.FC,
                    name,
                    ins,
                    [out],
                    [
                        f32(name + ".weight", fc_weight.reshape(len(fc_weight), -1)),
                        None,
                        f32(name + ".bias", p["b"]),
                    ],
                    [int(FCEncoding.FP32)],
                )
            )
        elif n.kind == "clip":
            # The bounds as f32: ONNX Clip compares in the input's type, f32 here, so a
            # float64 bound rounds the same way either side.
            bounds = np.array([p["lo"], p["hi"]], dtype=np.float32)
            ops.append(Op(OpType.CLIP, name, ins, [out], [f32(name + ".bounds", bounds)]))
        elif n.kind == "maxpool":
            attrs = [*p["kernel"], *p["stride"], *p["pads"]]
            ops.append(Op(OpType.MAXPOOL, name, ins, [out], [], attrs))
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
