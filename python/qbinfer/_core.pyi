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

class Error(Exception):
    """Base of every error qbinfer raises about a file or an input."""

class FormatError(Error):
    """A .qbw file is damaged, hostile, or from an unsupported version."""

class ShapeError(Error, ValueError):
    """An input has the wrong rank or shape."""

class DtypeError(Error, TypeError):
    """An input has the wrong dtype."""

class Model:
    def __init__(self, path: str, threads: int = 1) -> None: ...
    def run(self, x: npt.NDArray[np.float32], layout: str = "nchw") -> npt.NDArray[np.float32]: ...
    def ops(self) -> list[dict[str, object]]:
        """Per op: index, type, name, inputs (shapes), output (shape), output_dtype, params,
        bytes, flops, bops, attrs (dict), tensors (list of {name, dtype, shape} or None)."""
    @property
    def input_shape(self) -> tuple[int, int, int]: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def preprocessing(self) -> dict[str, object]: ...
    @property
    def model_name(self) -> str: ...
    @property
    def producer(self) -> str: ...
    @property
    def metadata_json(self) -> str: ...
    @property
    def format_version(self) -> tuple[int, int]: ...
    @property
    def arena_bytes(self) -> int: ...
    @property
    def weights_bytes(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def mapped(self) -> bool:
        """True when the payload is memory-mapped (False: read into an aligned buffer)."""

def _crc32(data: bytes, value: int = 0) -> int:
    """CRC-32 (IEEE) as the .qbw checksum computes it; equals zlib.crc32. For tests."""
