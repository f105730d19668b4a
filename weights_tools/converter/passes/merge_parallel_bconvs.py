"""Binary convs of one input whose shortcut sums are concatenated become one binary conv.

Pattern (ReActNet's reduction blocks, ``torch.cat([bn2_1(pw_down1(x)) + out1,
bn2_2(pw_down2(x)) + out1], 1)`` once the BNs are folded into the convs):
``concat(add(bconv_1(x), r), ..., add(bconv_k(x), r))`` where every bconv reads the same bits x
with the same kernel, padding and stride, every add reads the same r, and each conv and add
output is read only by the next op. Rewrite: one bconv with the k weight blocks, scales and
biases stacked on the output channels, and ``add(bconv, concat(r, ..., r))``, which writes the
concat's output.

Exact: each output channel is the same integer dot times the same scale plus the same bias, and
the add sees the same two float32 operands (IEEE addition commutes), so every value is
bit-identical. Why: the engine runs one conv instead of k, writes no per-half result and no
concat copy, and its fusion planner reads a concat of copies as a repeated shortcut, so the add
and the element-wise ops after it run in the conv's epilogue while its output is in cache.
"""

from __future__ import annotations

from typing import List

import numpy as np

from ..ir import IRGraph, Node, ValueInfo

_STACKED = ("w", "scale", "bias")


def _same_params(a: Node, b: Node) -> bool:
    if a.p.keys() != b.p.keys():
        return False
    for key in a.p:
        if key in _STACKED:
            continue
        if np.any(np.asarray(a.p[key]) != np.asarray(b.p[key])):
            return False
    return a.p["w"].shape[1:] == b.p["w"].shape[1:]


def merge_parallel_bconvs(graph: IRGraph) -> None:
    for cat in [n for n in graph.nodes if n.kind == "concat"]:
        if len(cat.inputs) < 2 or cat not in graph.nodes:
            continue
        prod = graph.producers()
        uses = graph.consumers()
        adds: List[Node] = []
        convs: List[Node] = []
        residual = None
        for v in cat.inputs:
            add = prod.get(v)
            if add is None or add.kind != "add" or not graph.single_use(v, uses):
                break
            if len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
                break
            conv_side = [i for i in add.inputs if i in prod and prod[i].kind == "bconv"]
            if len(conv_side) != 1 or not graph.single_use(conv_side[0], uses):
                break
            other = add.inputs[1] if add.inputs[0] == conv_side[0] else add.inputs[0]
            if residual is None:
                residual = other
            if other != residual:
                break
            adds.append(add)
            convs.append(prod[conv_side[0]])
        else:
            first = convs[0]
            if len({id(c) for c in convs}) != len(convs) or residual is None:
                continue
            if not all(
                c.inputs == first.inputs and not c.suffix and _same_params(first, c) for c in convs
            ):
                continue
            rv = graph.values[residual]
            if any(graph.values[c.output].c != rv.c for c in convs):
                continue
            k = len(convs)
            for key in _STACKED:
                first.p[key] = np.concatenate([c.p[key] for c in convs], axis=0)
            fv = graph.values[first.output]
            graph.values[first.output] = ValueInfo(
                first.output, fv.c * k, fv.h, fv.w, fv.rank, fv.kind, fv.source
            )
            copies_name = f"{cat.output}:shortcut_copies"
            graph.values[copies_name] = ValueInfo(
                copies_name, rv.c * k, rv.h, rv.w, rv.rank, rv.kind, rv.source
            )
            copies = Node("concat", [residual] * k, copies_name, cat.src, suffix=":shortcut_copies")
            add = adds[0]
            add.inputs = [first.output, copies_name]
            add.output = cat.output
            for dead in convs[1:] + adds[1:] + [cat]:
                graph.remove(dead)
            graph.nodes.insert(graph.nodes.index(add), copies)
