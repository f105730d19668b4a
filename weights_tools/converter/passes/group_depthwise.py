"""Depthwise convs of the same input, side by side in a Concat, become one DWCONV3X3 with a
channel multiplier.

Pattern: ``concat(..., dw_1(x), dw_2(x), ..., dw_k(x), ...)`` where the dw_j are adjacent
concat inputs, read the same input with the same pre-bias, stride and dilation, and each is read only by
this concat (once) and is not the graph output. Rewrite: one ``dwconv`` with multiplier
``k = sum of theirs``, weights, scales and biases concatenated in concat order; a concat left
with one input is replaced by it.

Exact: DWCONV3X3 with multiplier k writes channel block j (channels j*C .. j*C + C-1) from
filter block j (docs/format.md, block-major), which is the concat of the k separate convs'
outputs; each output channel's arithmetic is unchanged.
"""

from __future__ import annotations

from typing import List

import numpy as np

from ..ir import IRGraph


def group_depthwise(graph: IRGraph) -> None:
    for concat in [n for n in graph.nodes if n.kind == "concat"]:
        prod = graph.producers()
        uses = graph.consumers()

        def key(name: str, prod=prod, uses=uses, concat=concat):
            d = prod.get(name)
            if (
                d is None
                or d.kind != "dwconv"
                or not graph.single_use(name, uses)
                or concat.inputs.count(name) != 1
            ):
                return None
            pb = d.p["pre_bias"]
            # the dilation too: one DWCONV3X3 has one rate for all its blocks
            return (
                d.inputs[0],
                None if pb is None else pb.tobytes(),
                d.p["stride"],
                d.p.get("dilation", 1),
            )

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
                graph.values[first.output].c = first.p["w"].shape[0]
                for d in run[1:]:
                    graph.remove(d)
                new_inputs.append(first.output)
            else:
                new_inputs.extend(concat.inputs[i:j])
            i = j
        concat.inputs = new_inputs
        if len(new_inputs) == 1:
            graph.remove(concat)
            graph.replace_uses(concat.output, new_inputs[0])
