"""The converter's one ordered pass list and `lower_onnx`, which runs translate, the passes and
emit.

Order matters (`passes.ONNX_PASSES` run earlier, inside `translate`, on the ONNX graph):
drop_clip_before_sign makes signs read past a clip before sign_to_bitpack looks for an add
before them; sign_to_bitpack and depthwise_pre_bias read through pure constant adds before
fold_affines would merge those adds into the op before them; the first remove_dead drops the adds
they made unread, so group_depthwise sees single-use depthwise convs; fold_affines runs before
fuse_relu (a ReLU fuses into a conv only once the BN between them is folded into the conv); the
last remove_dead drops what the later passes left unread.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import onnx

from ..qbw import Graph
from .emit import emit
from .ir import IRGraph
from .passes import (
    depthwise_pre_bias,
    drop_clip_before_sign,
    fold_affines,
    fuse_relu,
    group_depthwise,
    remove_dead,
    sign_to_bitpack,
)
from .translate import translate

__all__ = ["PASSES", "lower_onnx", "run_passes"]

Pass = Callable[[IRGraph], None]

PASSES: List[Pass] = [
    drop_clip_before_sign,
    sign_to_bitpack,
    depthwise_pre_bias,
    remove_dead,
    group_depthwise,
    fold_affines,
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
