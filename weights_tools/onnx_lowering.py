"""ONNX -> qbinfer graph: the public names of `weights_tools.converter` (kept for callers).

The converter is a package: translate, rewrite passes (`weights_tools.converter.passes`, in the
order of `weights_tools.converter.pipeline.PASSES`), emit; docs/converter.md has the user's view.
"""

from .converter import ConversionError, fold_onnx_constants, lower_onnx

__all__ = ["ConversionError", "lower_onnx", "fold_onnx_constants"]
