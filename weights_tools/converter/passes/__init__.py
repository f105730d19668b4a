"""The converter's rewrite passes, one module each; `weights_tools.converter.pipeline.PASSES`
orders them. A pass is a function `(IRGraph) -> None` that edits the graph in place."""

from .depthwise_pre_bias import depthwise_pre_bias
from .fold_affines import fold_affines
from .fuse_relu import fuse_relu
from .group_depthwise import group_depthwise
from .remove_dead import remove_dead
from .sign_to_bitpack import sign_to_bitpack

__all__ = [
    "depthwise_pre_bias",
    "fold_affines",
    "fuse_relu",
    "group_depthwise",
    "remove_dead",
    "sign_to_bitpack",
]
