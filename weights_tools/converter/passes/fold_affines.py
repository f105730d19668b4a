"""Per-channel affines fold into the op before them.

Pattern: ``affine(p(...))`` (BatchNormalization, or Mul/Add/Sub/Div by a per-channel
constant) where p is a float ``conv`` or ``fc``, a ``dwconv``, a ``bconv``, a ``bfc`` or
another ``affine``, and p's output is read only by the affine and is not the graph output.
Rewrite: p absorbs ``y = s*x + t``: a float conv/FC scales its weights and bias (w' = s*w,
b' = s*b + t); a depthwise or binary conv, a binary FC, or an affine, composes its output affine (scale' = s*scale,
bias' = s*bias + t). Repeated until nothing folds; whatever affine is left is an AFFINE op.

Exact in real arithmetic; in float32 the rounding differs (the composed constants are computed
in float64 and rounded once, where ONNX rounds after each op), within the converter's stated
tolerance. A binary conv's (or binary FC's) output affine is the same float32 ``acc*scale + bias`` the engine
applies (docs/format.md), so composing there changes only where the rounding happens.
"""

from __future__ import annotations

import numpy as np

from ..ir import IRGraph


def fold_affines(graph: IRGraph) -> None:
    changed = True
    while changed:
        changed = False
        prod = graph.producers()
        uses = graph.consumers()
        for a in [n for n in graph.nodes if n.kind == "affine"]:
            x = a.inputs[0]
            p = prod.get(x)
            if p is None or not graph.single_use(x, uses):
                continue
            s, t = a.p["scale"].astype(np.float64), a.p["bias"].astype(np.float64)
            if p.kind in ("conv", "fc"):
                shape = (-1,) + (1,) * (p.p["w"].ndim - 1)
                p.p["w"] = p.p["w"] * s.reshape(shape)
                p.p["b"] = p.p["b"] * s + t
            elif p.kind in ("dwconv", "bconv", "bfc"):
                p.p["scale"] = p.p["scale"] * s
                p.p["bias"] = p.p["bias"] * s + t
            elif p.kind == "affine":
                p.p["scale"] = p.p["scale"] * s
                p.p["bias"] = p.p["bias"] * s + t
                p.p["pure_add"] = False
            else:
                continue
            p.output = a.output
            graph.remove(a)
            changed = True
            break
