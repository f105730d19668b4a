"""A ReLU after a float conv becomes the conv's activation.

Pattern: ``relu(conv(...))`` where the conv is a float ``conv`` without a fused activation
whose output is read only by the relu and is not the graph output. Rewrite: the conv with
``relu=True`` writes the relu's output.

Exact: CONV2D's activation is ``max(y, 0)`` on the same float32 result y the ReLU op would
read (docs/format.md).
"""

from __future__ import annotations

from ..ir import IRGraph


def fuse_relu(graph: IRGraph) -> None:
    prod = graph.producers()
    uses = graph.consumers()
    for r in [n for n in graph.nodes if n.kind == "relu"]:
        p = prod.get(r.inputs[0])
        if (
            p is not None
            and p.kind == "conv"
            and not p.p["relu"]
            and graph.single_use(r.inputs[0], uses)
        ):
            p.p["relu"] = True
            p.output = r.output
            graph.remove(r)
