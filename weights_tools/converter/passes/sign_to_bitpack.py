"""sign -> BITPACK, reading through a constant add, and merging identical BITPACKs.

Pattern: ``sign(x, threshold=t)`` (the ±1 of ``x >= t``), optionally after a pure per-channel
add ``y = x + c`` (one ONNX Add or Sub of a constant: the ``affine`` with ``pure_add``) when
t = 0. Rewrite: ``bitpack(x, threshold=-c)``; without the add, ``bitpack(x, threshold=t)``.

Exact: ``x + c >= 0  <=>  x >= -c`` for IEEE float32 (bit_contract.h: round-to-nearest
addition is monotonic and x + c is 0 exactly when x = -c, so comparing the sum with 0 or x with
-c gives the same bit), and the thresholds are float32 on both sides. Two BITPACKs of the same
input and thresholds compute the same bits, so the later one's readers read the first. The add
itself is left for `remove_dead` when nothing else reads it.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..ir import IRGraph


def sign_to_bitpack(graph: IRGraph) -> None:
    prod = graph.producers()
    seen: Dict[Tuple[str, bytes], str] = {}
    for n in list(graph.nodes):
        if n.kind != "sign":
            continue
        t = n.p.pop("threshold").astype(np.float32)
        before = prod.get(n.inputs[0])
        if (
            before is not None
            and before.kind == "affine"
            and before.p["pure_add"]
            and np.all(t == 0)
        ):
            # x + c >= 0  <=>  x >= -c, exactly (bit_contract.h)
            t = (-before.p["bias"].astype(np.float32)).astype(np.float32)
            n.inputs = [before.inputs[0]]
        n.kind = "bitpack"
        n.p["threshold"] = t
        key = (n.inputs[0], t.tobytes())
        if key in seen:
            graph.remove(n)
            graph.replace_uses(n.output, seen[key])
        else:
            seen[key] = n.output
