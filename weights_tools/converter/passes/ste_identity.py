"""A straight-through estimator's detach arithmetic is its forward value (ONNX-level pass).

``x.detach()`` exports to nothing, so an estimator whose forward value is ``a`` and whose
gradient is that of ``b`` reaches ONNX as arithmetic that cancels ``b`` in real numbers. The
three ways public BNN code writes it:

- ``a.detach() - b.detach() + b``: ``Add(Sub(a, b), b)`` or ``Add(b, Sub(a, b))`` (ReActNet's
  and Bi-Real Net's approximate sign, a = sign(x), b = a polynomial of x; weight STEs with
  a = sign(W) or alpha * sign(W), b = W);
- ``a.detach() + b - b.detach()``: ``Sub(Add(a, b), b)`` or ``Sub(Add(b, a), b)`` (the
  Hardtanh-gradient sign of BinaryNet-style code);
- ``a + (b - b.detach())``: ``Add(a, Sub(b, b))`` or ``Add(Sub(b, b), a)``.

Rewrite: the outer node becomes ``Identity(a)``, where the inner node's output is read only by
the outer one (and is not a graph output).

Exact in eval mode: the cancelled terms are ``b - b = 0`` in real arithmetic, and the forward
value the estimator means is ``a``; float32 evaluation of the unrewritten form can differ from
``a`` by one rounding (|b| <= 1 around a = ±1: ``(a + b) - b`` is within one ulp of ±1), which
would make sign(W) weights not exactly ±1. The nodes computing b are then dead for the output
(liveness drops them unless something else reads b).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import onnx


def _is(node: Optional[onnx.NodeProto], op_type: str) -> bool:
    return (
        node is not None
        and node.op_type == op_type
        and node.domain in ("", "ai.onnx")
        and len(node.input) == 2
    )


def ste_identity(graph: onnx.GraphProto) -> None:
    readers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output if o}

    def private(inner: onnx.NodeProto) -> bool:
        """`inner`'s output is read by one node only (the outer one) and is not an output."""
        out = inner.output[0]
        return len(readers.get(out, [])) == 1 and out not in outputs

    for node in list(graph.node):
        forward = None
        if _is(node, "Add"):
            for j in (0, 1):
                sub, other = producer.get(node.input[j]), node.input[1 - j]
                if not (_is(sub, "Sub") and private(sub)):
                    continue
                if sub.input[1] == other:  # (a - b) + b
                    forward = sub.input[0]
                elif sub.input[0] == sub.input[1]:  # a + (b - b)
                    forward = other
                if forward is not None:
                    break
        elif _is(node, "Sub"):
            add, b = producer.get(node.input[0]), node.input[1]
            if _is(add, "Add") and private(add) and b in add.input:  # (a + b) - b
                forward = add.input[1] if add.input[0] == b else add.input[0]
        if forward is not None:
            node.CopyFrom(
                onnx.helper.make_node("Identity", [forward], [node.output[0]], name=node.name)
            )
