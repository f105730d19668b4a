"""The converter's rewrite passes, one module each; `weights_tools.converter.pipeline.PASSES`
orders them. A pass is a function `(IRGraph) -> None` that edits the graph in place; the ONNX-level passes
of `ONNX_PASSES` are functions `(onnx.GraphProto) -> None` run before constant folding."""

from .depthwise_pre_bias import depthwise_pre_bias
from .drop_clip_before_sign import drop_clip_before_sign
from .fold_affines import fold_affines
from .fuse_relu import fuse_relu
from .group_depthwise import group_depthwise
from .merge_parallel_bconvs import merge_parallel_bconvs
from .remove_dead import remove_dead
from .sign_to_bitpack import sign_to_bitpack
from .ste_identity import ste_identity

# Passes on the ONNX graph itself, before constant folding and translation.
ONNX_PASSES = [ste_identity]

__all__ = [
    "ONNX_PASSES",
    "drop_clip_before_sign",
    "ste_identity",
    "depthwise_pre_bias",
    "fold_affines",
    "fuse_relu",
    "group_depthwise",
    "merge_parallel_bconvs",
    "remove_dead",
    "sign_to_bitpack",
]
