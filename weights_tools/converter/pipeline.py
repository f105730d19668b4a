"""The converter's one ordered pass list and `lower_onnx`, which runs translate, the passes and
emit.

Order matters (`passes.ONNX_PASSES` run earlier, inside `translate`, on the ONNX graph):
drop_clip_before_sign makes signs read past a clip before sign_to_bitpack looks for an add
before them; sign_to_bitpack and depthwise_pre_bias read through pure constant adds before
fold_affines would merge those adds into the op before them; the first remove_dead drops the adds
they made unread, so group_depthwise sees single-use depthwise convs; fold_affines runs before
fuse_relu (a ReLU fuses into a conv only once the BN between them is folded into the conv);
merge_parallel_bconvs runs after fold_affines too (a conv's BN must be folded for the conv to
feed the shortcut add directly); the last remove_dead drops what the later passes left unread.

`check_lowering` runs the same stages in check mode: every blocker at once instead of the first
`ConversionError` (`weights_tools.convert.check_model`, docs/converter.md).
"""

from __future__ import annotations

from typing import Callable, List, Optional

import onnx

from ..qbw import Graph
from .emit import emit
from .errors import Blocker, ConversionError, fix_for
from .ir import IRGraph
from .passes import (
    depthwise_pre_bias,
    drop_clip_before_sign,
    fold_affines,
    fuse_relu,
    group_depthwise,
    merge_parallel_bconvs,
    remove_dead,
    sign_to_bitpack,
)
from .translate import PLACEHOLDER, translate, translate_collecting

__all__ = ["PASSES", "check_lowering", "lower_onnx", "run_passes"]

Pass = Callable[[IRGraph], None]

PASSES: List[Pass] = [
    drop_clip_before_sign,
    sign_to_bitpack,
    depthwise_pre_bias,
    remove_dead,
    group_depthwise,
    fold_affines,
    merge_parallel_bconvs,
    fuse_relu,
    remove_dead,
]


def run_passes(graph: IRGraph, passes: Optional[List[Pass]] = None) -> IRGraph:
    for rewrite in PASSES if passes is None else passes:
        rewrite(graph)
    return graph


def lower_onnx(
    model: onnx.ModelProto, model_name: str = "", warnings: Optional[List[str]] = None
) -> Graph:
    """Lower an ONNX model to the engine's graph (FP32 FC and depthwise): translate, run
    `PASSES`, emit (docs/converter.md). Notes for the user (not errors) are appended to
    `warnings` when given."""
    graph = run_passes(translate(model))
    if warnings is not None:
        warnings.extend(graph.warnings)
    return emit(graph, model_name)


def _blocker(error: ConversionError, stage: str) -> Blocker:
    node = error.node
    if node is None:
        return Blocker("", "", "", error.problem, fix_for(error), stage=stage)
    return Blocker(node.name, node.op_type, "", error.problem, fix_for(error), stage=stage)


def check_lowering(model: onnx.ModelProto) -> List[Blocker]:
    """Every reason `lower_onnx(model)` would fail, at once (empty: the model converts).

    Translation runs in check mode (`translate_collecting`: a failed node gets a placeholder
    and the rest is still translated), then each pass and emission; a pass or emission that
    refuses is recorded and the check goes on: after a pass, with the next pass; at emission,
    with the refused node taken out (its input read in its place) until emission succeeds.
    Failures that only follow from the translation's blockers (a pass or emission tripping over
    a placeholder) are not reported."""
    graph, blockers = translate_collecting(model)
    if graph is None:
        return blockers
    had_blockers = bool(blockers)
    for rewrite in PASSES:
        try:
            rewrite(graph)
        except ConversionError as e:
            blockers.append(_blocker(e, rewrite.__name__))
        except Exception:
            if not had_blockers:
                raise  # a converter bug on a graph without placeholders: do not hide it
    # Emission cannot write a placeholder: a ReLU of its first input stands in for it (emission
    # reads only names and shapes), so the ops after it are still emitted and checked.
    for n in graph.nodes:
        if n.kind == PLACEHOLDER:
            n.kind, n.p = "relu", {}
            n.inputs = n.inputs[:1]
    for _ in range(len(graph.nodes) + 1):
        try:
            emit(graph)
            break
        except ConversionError as e:
            refused = next((n for n in graph.nodes if n.src is e.node), None)
            if refused is None:  # emission names the node in its message only
                refused = next((n for n in graph.nodes if repr(n.src.name) in str(e)), None)
                if refused is not None:
                    e.node, e.problem = refused.src, str(e).split(": ", 1)[-1]
            blockers.append(_blocker(e, "emit"))
            if refused is None or not refused.inputs:
                break
            graph.replace_uses(refused.output, refused.inputs[0])
            graph.remove(refused)
        except Exception:
            if not had_blockers:
                raise
            break
    # In graph order (the problems of the whole model, with no node, first), whatever stage
    # found them.
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    blockers.sort(key=lambda b: order.get(b.node, -1 if not b.node else len(order)))
    return blockers
