"""qbinfer's PyTorch tool set: the QB-Net/QSB-Net model zoo, operation counts, the converter to
.qbw, the .qbw reader/writer and a numpy reference interpreter of .qbw graphs.

The zoo, the op counter and the converter need the `tools` extra (torch, onnx); `qbw` and
`reference` are numpy-only, so every name here is imported on first use.
"""

import importlib

_LAZY = {
    "ARCHS": "zoo",
    "MODEL_NAMES": "zoo",
    "build_model": "zoo",
    "set_training_stage": "zoo",
    "to_qbw": "convert",
    "onnx_to_qbw": "convert",
    "ConversionError": "convert",
    "ConversionReport": "convert",
    "randomize_bn": "convert",
    "read_qbw": "qbw",
    "write_qbw": "qbw",
    "run_reference": "reference",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
