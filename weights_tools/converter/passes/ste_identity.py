"""A straight-through estimator's detach arithmetic is its forward value (ONNX-level pass).

Pattern (on the ONNX graph, before constant folding): ``Add(Sub(a, b), b)`` or
``Add(b, Sub(a, b))`` where the Sub's output is read only by that Add: what
``a.detach() - b.detach() + b`` exports to (detach exports to nothing). ReActNet's and
Bi-Real Net's approximate-sign STE (a = sign(x), b = a polynomial of x) and weight STEs
(a = sign(W), b = clamp(W)) are written this way. Rewrite: the Add becomes ``Identity(a)``.

Exact in eval mode: ``(a - b) + b = a`` in real arithmetic, which is the value the estimator
means (its forward pass); float32 evaluation of the unrewritten form can differ from a by one
rounding, which would make sign(W) weights not exactly ±1. The nodes computing b are then dead
for the output (liveness drops them unless something else reads b).
"""

from __future__ import annotations

from typing import Dict, List

import onnx


def ste_identity(graph: onnx.GraphProto) -> None:
    readers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output if o}
    for node in list(graph.node):
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        for j in (0, 1):
            sub = producer.get(node.input[j])
            other = node.input[1 - j]
            if (
                sub is not None
                and sub.op_type == "Sub"
                and sub.domain in ("", "ai.onnx")
                and sub.input[1] == other
                and len(readers.get(sub.output[0], [])) == 1
                and sub.output[0] not in outputs
            ):
                identity = onnx.helper.make_node(
                    "Identity", [sub.input[0]], [node.output[0]], name=node.name
                )
                node.CopyFrom(identity)
                break
