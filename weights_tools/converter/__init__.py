"""ONNX -> qbinfer graph, as translate, rewrite passes and emit (docs/converter.md).

- `constants.py`: constant folding and liveness on the ONNX graph.
- `translate.py`: ONNX node -> intermediate node (`ir.py`), one function per ONNX op type.
- `passes/`: one module per rewrite, each exact; `pipeline.PASSES` is their order.
- `emit.py`: intermediate graph -> `weights_tools.qbw.Graph` in NHWC.

`lower_onnx(model)` returns a graph with FP32 FC and FP32 depthwise convs;
`weights_tools.convert` then applies the requested FC encoding and depthwise quantization.
"""

from .constants import fold_onnx_constants
from .errors import ConversionError
from .pipeline import PASSES, lower_onnx

__all__ = ["PASSES", "ConversionError", "fold_onnx_constants", "lower_onnx"]
