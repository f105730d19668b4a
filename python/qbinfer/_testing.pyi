"""qbinfer._testing: the test and benchmark drivers, built beside qbinfer._core (CMake option
QBINFER_BUILD_TESTING). Not a public API."""

from typing import Any

def kernel_test_families() -> list[str]:
    """The kernel families the kernel test plan covers."""

def kernel_variants(family: str, runnable_only: bool = True) -> list[str]:
    """A family's variants, scalar first: runnable here, or all compiled (runnable_only=False)."""

def run_kernel_tests(seed: int, family: str, isa: str, scale: float = 1.0) -> dict[str, object]:
    """The kernel test plan for one family and runnable variant: family, variant, seed, cases,
    failures, seconds, messages (the first few failures)."""

def zoo_layers() -> list[tuple[str, str, dict[str, int]]]:
    """(model, family, params) per kernel call of one 224x224 image (csrc/tests/zoo_shapes.inc)."""

def pool_latency(
    threads: int = 2, iterations: int = 10000, cold_iterations: int = 50
) -> dict[str, float]:
    """Median round trip of an empty job on a fresh thread pool (ns): hot_ns, cold_ns."""

def crc32(data: bytes, value: int = 0) -> int:
    """CRC-32 (IEEE) as the .qbw checksum computes it; equals zlib.crc32."""

# Bindings of single kernels in numpy shapes (NHWC without the batch), each with isa=None (the
# portable kernel) or a variant name: bconv2d, bitpack, dwconv3x3_f32, dwconv3x3_qs8, fc_*, ...
# (csrc/python/kernel_testing.cc).
kernels: Any

class bench:
    """Microbenchmark drivers (benchmarks/ only)."""

    class KernelBench:
        def __init__(self, family: str, isa: str, params: dict[str, int]) -> None: ...
        def run(self, n: int = 1) -> None: ...
        @property
        def family(self) -> str: ...
        @property
        def entry(self) -> str: ...
        @property
        def binary_macs(self) -> float: ...
        @property
        def float_macs(self) -> float: ...
        @property
        def elements(self) -> float: ...

    @staticmethod
    def peak(isa: str, seconds: float = 0.3) -> dict[str, float]: ...
    @staticmethod
    def read_bandwidth(isa: str, bytes: int, seconds: float = 0.2) -> float: ...
