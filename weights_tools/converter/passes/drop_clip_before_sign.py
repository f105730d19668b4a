"""A clip (Hardtanh, Clip) read only by signs whose thresholds lie in its range is dropped.

Pattern: ``sign(clip(x, lo, hi), threshold=t)`` where every reader of the clip is a sign and
``lo < t <= hi`` for every channel's t (Hardtanh's default range [-1, 1] with t = 0, for
example). Rewrite: the signs read x; the clip is left for `remove_dead`.

Exact: for lo < t <= hi, ``clip(x) >= t  <=>  x >= t``. If x >= t, then min(x, hi) >= t
(as hi >= t) and max(lo, .) does not lower it. If x < t, then x < hi, so min(x, hi) = x, and
max(lo, x) < t as both are. Clip does no arithmetic (it selects x, lo or hi), so this holds for
IEEE floats too. PyTorch's sign(0) = 0 is unchanged by the clip as well (clip(0) = 0 when
lo < 0 <= hi).
"""

from __future__ import annotations

import numpy as np

from ..ir import IRGraph


def drop_clip_before_sign(graph: IRGraph) -> None:
    uses = graph.consumers()
    for clip in [n for n in graph.nodes if n.kind == "clip"]:
        readers = uses.get(clip.output, [])
        if not readers or clip.output == graph.output_name:
            continue
        if any(r.kind != "sign" for r in readers):
            continue
        lo, hi = clip.p["lo"], clip.p["hi"]
        if not all(np.all((lo < r.p["threshold"]) & (r.p["threshold"] <= hi)) for r in readers):
            continue
        for r in readers:
            r.inputs = [clip.inputs[0] if i == clip.output else i for i in r.inputs]
