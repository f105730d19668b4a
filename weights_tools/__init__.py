"""qbinfer's PyTorch tool set: the QB-Net/QSB-Net model zoo, operation counts, and (in later
modules) training, ONNX export and conversion to .qbw. Needs the `tools` extra (torch)."""

from .zoo import ARCHS, MODEL_NAMES, build_model, set_training_stage

__all__ = ["ARCHS", "MODEL_NAMES", "build_model", "set_training_stage"]
