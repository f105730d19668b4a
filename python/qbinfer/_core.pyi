from typing import Final, Optional

import numpy as np
import numpy.typing as npt

__version__: Final[str]
BITS_PER_WORD: Final[int]

def bitpack(
    x: npt.NDArray[np.float32],
    thresholds: Optional[npt.NDArray[np.float32]] = None,
) -> npt.NDArray[np.uint64]:
    """Pack float32 values into sign bits along the last axis (channels).

    Returns shape ``x.shape[:-1] + ((C + 63) // 64,)``; bit 1 means -1, i.e.
    ``not (x >= threshold)``. Raises TypeError for a non-float32 input and
    ValueError for a bad rank, zero channels or a threshold shape mismatch.
    """

def build_info() -> dict[str, object]: ...
