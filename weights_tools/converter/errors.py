"""The converter's error type, the helpers that name the ONNX node in a message, and `Blocker`,
one entry of a conversion check (`pipeline.check_lowering`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Optional

import onnx

__all__ = [
    "Blocker",
    "ConversionError",
    "ISSUE_12_FIX",
    "NO_FIX",
    "NO_OP_FIX",
    "fail",
    "fix_for",
    "node_label",
]

# The fix column of ops the engine is getting under issue 12 (max pooling, strided and k x k
# binary convs, binary FC, ReLU6/clip): nothing to rewrite in the model, the engine lacks them.
ISSUE_12_FIX = "none: not supported by the engine yet (issue 12)"
# The fix column of an op type the engine has no op for (GELU's Erf, Floor, Softplus...) and no
# rewrite into engine ops is known.
NO_OP_FIX = "none: the engine has no such op"
# The fix column of any other refusal for which no rewrite is known to apply.
NO_FIX = "none known"


class ConversionError(ValueError):
    """The model uses an op or a pattern the engine cannot run; the message names the ONNX node
    (name and op_type) and what is not supported. `node` is that ONNX node (None for a problem
    of the whole model), `problem` the message without the node's label, `fix` the rewrite of the
    model that removes the problem when one is known to apply, else None."""

    def __init__(
        self,
        message: str,
        node: Optional[onnx.NodeProto] = None,
        problem: Optional[str] = None,
        fix: Optional[str] = None,
    ):
        super().__init__(message)
        self.node = node
        self.problem = message if problem is None else problem
        self.fix = fix


def node_label(node: onnx.NodeProto) -> str:
    return f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type})"


def fail(node: Optional[onnx.NodeProto], message: str, fix: Optional[str] = None) -> NoReturn:
    if node is None:
        raise ConversionError(message, fix=fix)
    raise ConversionError(f"{node_label(node)}: {message}", node, message, fix)


# Ops refused inside a translation (or at emission) whose message says the engine lacks them
# "yet": these are the engine ops issue 12 adds. Another reader of a sign (a Relu, say) gets the
# same "not an engine op yet" words about the binary FC but is not one of them.
_ISSUE_12_OPS = ("MaxPool", "Conv", "Gemm", "MatMul", "Clip")


def fix_for(error: ConversionError) -> str:
    """The fix column of a check entry: the error's own rewrite when it carries one, the issue
    12 note for the ops the engine is getting, else `NO_FIX` (never a guess)."""
    if error.fix:
        return error.fix
    op_type = error.node.op_type if error.node is not None else ""
    text = error.problem
    if op_type in _ISSUE_12_OPS and ("engine op yet" in text or "engine ops yet" in text):
        return ISSUE_12_FIX
    return NO_FIX


@dataclass
class Blocker:
    """One reason a model does not convert: the ONNX node (name, op type; empty for a problem
    of the whole model), the PyTorch module it came from (dotted path as in
    `model.named_modules()`, '' for the top level or when unknown) and that module's class name
    when the model is known, what is unsupported, and the fix (see `fix_for`)."""

    node: str
    op_type: str
    module: str
    problem: str
    fix: str
    module_class: str = ""
    stage: str = "translate"  # where it was found: translate, a pass's name, or emit
