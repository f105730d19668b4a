"""Remove nodes whose output nothing reads.

Pattern: a node whose output is neither read by another node nor the graph output (after
earlier passes made their readers read something else). Rewrite: the node is dropped, repeatedly
until none is left. Exact: every op is free of side effects, so an unread result changes nothing.
"""

from __future__ import annotations

from ..ir import IRGraph


def remove_dead(graph: IRGraph) -> None:
    while True:
        uses = graph.consumers()
        dead = [n for n in graph.nodes if n.output not in uses and n.output != graph.output_name]
        if not dead:
            return
        for n in dead:
            graph.remove(n)
