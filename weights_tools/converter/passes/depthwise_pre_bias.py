"""A constant add before a depthwise conv becomes the conv's pre-bias.

Pattern: ``dwconv(x + c)`` where ``x + c`` is a pure per-channel add (one ONNX Add or Sub of a
constant: an ``affine`` with ``pure_add``). Rewrite: ``dwconv(x, pre_bias=c)``.

Exact: DWCONV3X3 adds its pre_bias to each input element in float32 before the taps, which is
the same float32 addition the Add did; the zero padding is applied after the pre-bias in both
(the ONNX Conv pads the sum ``x + c``, and the engine pads the biased input with 0, see
docs/format.md). The add stays for other readers; `remove_dead` drops it otherwise.
"""

from __future__ import annotations

import numpy as np

from ..ir import IRGraph


def depthwise_pre_bias(graph: IRGraph) -> None:
    prod = graph.producers()
    for n in graph.nodes:
        if n.kind != "dwconv":
            continue
        before = prod.get(n.inputs[0])
        if before is not None and before.kind == "affine" and before.p["pure_add"]:
            n.p["pre_bias"] = before.p["bias"].astype(np.float32)
            n.inputs = [before.inputs[0]]
