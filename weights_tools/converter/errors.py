"""The converter's error type and the helpers that name the ONNX node in a message."""

from __future__ import annotations

from typing import NoReturn, Optional

import onnx

__all__ = ["ConversionError", "fail", "node_label"]


class ConversionError(ValueError):
    """The model uses an op or a pattern the engine cannot run; the message names the ONNX node
    (name and op_type) and what is not supported."""


def node_label(node: onnx.NodeProto) -> str:
    return f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type})"


def fail(node: Optional[onnx.NodeProto], message: str) -> NoReturn:
    if node is None:
        raise ConversionError(message)
    raise ConversionError(f"{node_label(node)}: {message}")
