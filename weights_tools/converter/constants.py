"""Constant folding and liveness on the ONNX graph, before translation.

Every node whose inputs are all constants is evaluated (numpy for Constant/Identity and the
weight binarization GreaterOrEqual/Where the exporter leaves, `onnx.reference.ReferenceEvaluator`
otherwise). Exact: the evaluation is that of ONNX itself. Other constants the exporter leaves
this way: the `ConstantOfShape` feeding a shortcut's `Expand`, the `Reshape`/`Transpose`/`Cast`
chain of a `Pad`'s pads.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ConversionError, fail

__all__ = [
    "DATA_INPUTS",
    "attrs",
    "default_opset",
    "fold_constants",
    "fold_onnx_constants",
    "live_nodes",
]

# Inputs that only carry shapes (never activations) for these op types: liveness does not follow
# them, so a shape computed at run time (Shape -> Gather -> ...) does not need to be supported.
DATA_INPUTS = {
    "ConstantOfShape": 0,
    "Reshape": 1,
    "Expand": 1,
    "Tile": 1,
    "Pad": 1,
    "ReduceMean": 1,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Resize": 1,  # roi, scales, sizes: constants, or shapes folded at conversion
}

# Never evaluated even on constant inputs: random, or with subgraphs.
_NOT_FOLDED = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "If",
    "Loop",
    "Scan",
)


def attrs(node: onnx.NodeProto) -> Dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def default_opset(model: onnx.ModelProto) -> int:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ConversionError("the ONNX model imports no default-domain opset")
    return opset


def initializers(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def fold_constants(graph: onnx.GraphProto, consts: Dict[str, np.ndarray], opset: int) -> None:
    """Add to `consts` (name -> array; the initializers on entry) every output of a node whose
    inputs are all in `consts`, in graph order."""
    from onnx.reference import ReferenceEvaluator

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        ins = [i for i in node.input if i]
        if not all(i in consts for i in ins):
            continue
        if node.op_type in _NOT_FOLDED:
            continue
        # numpy for the ops the exporter leaves most (the weight binarization), the
        # reference evaluator of onnx for everything else
        if node.op_type == "Identity":
            outs = [consts[node.input[0]]]
        elif node.op_type == "GreaterOrEqual":
            outs = [np.greater_equal(consts[node.input[0]], consts[node.input[1]])]
        elif node.op_type == "Where":
            c, a, b = (consts[i] for i in node.input)
            outs = [np.where(c, a, b).astype(np.result_type(a, b))]
        elif node.op_type == "Constant" and attrs(node).keys() == {"value"}:
            outs = [numpy_helper.to_array(node.attribute[0].t)]
        else:
            try:
                outs = ReferenceEvaluator(node, opsets={"": opset}).run(
                    None, {i: consts[i] for i in ins}
                )
            except Exception as e:
                fail(node, f"cannot evaluate this node on its constant inputs: {e}")
        for name, value in zip(node.output, outs):
            if name:
                consts[name] = np.asarray(value)


def live_nodes(graph: onnx.GraphProto, consts: Dict[str, np.ndarray]) -> List[onnx.NodeProto]:
    """The nodes the graph output depends on through data inputs (not through `DATA_INPUTS`'
    shape inputs, so the `Shape -> Gather -> Reshape` of `x.view(x.size(0), -1)` is not live),
    stopping at constants; in graph order."""
    producer = {}
    for node in graph.node:
        for o in node.output:
            if o:
                producer[o] = node
    live = set()
    stack = [graph.output[0].name]
    while stack:
        name = stack.pop()
        if name in consts or name not in producer:
            continue
        node = producer[name]
        if id(node) in live:
            continue
        live.add(id(node))
        n_data = DATA_INPUTS.get(node.op_type, len(node.input))
        stack.extend(i for i in list(node.input)[:n_data] if i)
    return [n for n in graph.node if id(n) in live]


def fold_onnx_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every constant subgraph evaluated into an initializer. Exact; ONNX
    Runtime then no longer binarizes the weights (GreaterOrEqual/Where on initializers) at every
    session start or run. The ONNX-level passes (`passes.ONNX_PASSES`: a straight-through
    estimator's `a - b + b` is `a`) run first, as in the conversion, so that a weight binarized
    with an STE folds to exactly ±1."""
    from .passes import ONNX_PASSES

    opset = default_opset(model)
    model = _copy(model)
    for rewrite in ONNX_PASSES:
        rewrite(model.graph)
    consts = initializers(model.graph)
    inputs = [i for i in model.graph.input if i.name not in consts]
    fold_constants(model.graph, consts, opset)
    nodes = [n for n in model.graph.node if not all(o in consts for o in n.output if o)]
    needed = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    inits = [
        numpy_helper.from_array(np.asarray(consts[name]), name)
        for name in sorted(needed)
        if name in consts
    ]
    graph = onnx.helper.make_graph(
        nodes, model.graph.name, inputs, list(model.graph.output), initializer=inits
    )
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    folded.graph.CopyFrom(graph)
    return folded


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied
