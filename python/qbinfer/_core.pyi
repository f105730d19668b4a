import os
import sys
from typing import Final, Optional, Tuple

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

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

def build_info() -> dict[str, object]:
    """version, compiler, target_arch, compiled_isas, supported_isas, avx512_vpopcntdq,
    active_isa (or "error: ..." for a bad QBINFER_ISA), kernels (family -> entry), bits_per_word."""

def active_isa() -> str:
    """The ISA models use: QBINFER_ISA if set (ValueError if unsupported), else the best one."""

def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset and container limits count)."""

def supported_isas() -> list[str]:
    """ISAs this build has kernels for and this CPU runs, "scalar" first, best last."""

def _resample_normalize(
    src: npt.NDArray[np.uint8],
    row_first: npt.NDArray[np.int64],
    row_weights: npt.NDArray[np.float32],
    col_first: npt.NDArray[np.int64],
    col_weights: npt.NDArray[np.float32],
    out_channels: int,
    scale: float,
    mean: npt.NDArray[np.float32],
    std: npt.NDArray[np.float32],
    isa: Optional[str] = None,
) -> npt.NDArray[np.float32]:
    """The resize, crop and normalisation of qbinfer.preprocess in one pass (private)."""

def _arrow_pixels(
    schema: object, array: object, height: int, width: int
) -> Optional[npt.NDArray[np.uint8]]:
    """A read-only H x W x C view of an image exported as Arrow capsules, or None (private)."""

def _top_probabilities(
    outputs: npt.NDArray[np.float32], softmax: bool, k: int
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """predict's k best classes per row and their probabilities (private)."""

class Error(Exception):
    """Base of every error qbinfer raises about a file or an input."""

class FormatError(Error):
    """A .qbw file is damaged, hostile, or from an unsupported version."""

class ShapeError(Error, ValueError):
    """An input has the wrong rank or shape."""

class DtypeError(Error, TypeError):
    """An input has the wrong dtype."""

class Model:
    def __init__(
        self,
        path: str | bytes | os.PathLike[str],
        threads: int = 1,
        isa: Optional[str] = None,
        split: str = "work",
        max_memory: Optional[int] = 2 << 30,
    ) -> None:
        """Open and validate a .qbw file. threads (1..1024) is taken as given; split='work'
        splits each step over as many threads as its work pays for, 'always' over all."""
    @staticmethod
    def from_buffer(
        data: Buffer,
        name: str,
        threads: int = 1,
        isa: Optional[str] = None,
        split: str = "work",
        max_memory: Optional[int] = 2 << 30,
    ) -> Model:
        """The same from a file's bytes in a C-contiguous buffer (copied); `name` stands for
        the path in error messages."""
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
    def output_op(self) -> int:
        """Index (into ops()) of the op that writes the output."""
    @property
    def format_version(self) -> tuple[int, int]: ...
    @property
    def arena_bytes(self) -> int: ...
    @property
    def weights_bytes(self) -> int: ...
    @property
    def threads(self) -> int:
        """Threads of the pool (the calling thread included)."""
    @property
    def uses_pool(self) -> bool:
        """Whether some step splits or a batch may run one image per thread."""
    @property
    def workspaces(self) -> int:
        """Arenas made so far: one per call that ran at the same time."""
    @property
    def isa(self) -> str: ...
    @property
    def kernels(self) -> dict[str, str]:
        """Per kernel family, the entry it runs."""
    @property
    def fused(self) -> bool:
        """Whether load-time fusion is on (QBINFER_FUSION=0 turns it off)."""
    @property
    def packed_bytes(self) -> int: ...
    def steps(self) -> list[dict[str, object]]:
        """The steps as they run: label, kind, ops (file op indices), output, packed_bytes,
        inplace, work_us (estimated single-thread time), parts (threads it splits over)."""
    def _profile(
        self,
        x: npt.NDArray[np.float32],
        runs: int = 20,
        layout: str = "nchw",
        thread_cpu: bool = False,
    ) -> list[tuple[str, float]]:
        """Per step, (label, median microseconds) over `runs` runs of x[0]. For profiling."""
