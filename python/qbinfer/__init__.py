"""qbinfer: bit-packed inference engine for binarized CNNs.

The runtime depends on numpy and its own extension only; it never imports torch
(the PyTorch side lives in ``weights_tools``).
"""

from ._core import BITS_PER_WORD, __version__, bitpack

__all__ = ["BITS_PER_WORD", "__version__", "bitpack"]
