"""qbinfer: bit-packed inference engine for binarized CNNs (QB-Net / QSB-Net).

    import qbinfer
    model = qbinfer.load("qsb_net_large.qbw")
    model.predict("cat.jpg")            # [(class name, probability), ...]
    model.run(batch_nchw_float32)       # logits

The runtime depends on numpy and its own extension only; it never imports torch (the PyTorch
side lives in ``weights_tools``).
"""

from ._core import BITS_PER_WORD, DtypeError, Error, FormatError, ShapeError, __version__, bitpack
from .model import Model, load

__all__ = [
    "BITS_PER_WORD",
    "DtypeError",
    "Error",
    "FormatError",
    "Model",
    "ShapeError",
    "__version__",
    "bitpack",
    "load",
]
