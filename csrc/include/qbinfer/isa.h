// Instruction sets qbinfer has kernels for, and the run-time choice among them.
//
// Only files named *_avx2.cc / *_avx512*.cc / *_neon.cc are compiled with ISA flags
// (CMakeLists.txt); everything else targets the baseline CPU, so one build runs anywhere and
// picks its kernels here: CPUID + XGETBV on x86 (the OS must save the wider registers),
// HWCAP on Linux/ARM. Resolved once per process; QBINFER_ISA=scalar|avx2|avx512|neon overrides
// it for tests and bug reports (an ISA the CPU lacks is an error, never a crash).
#pragma once

#include <string>
#include <vector>

namespace qbinfer {

enum class Isa : int {
  kScalar = 0,  // the portable reference kernels
  kAvx2 = 1,    // AVX2 + FMA + POPCNT (Haswell and newer)
  kAvx512 = 2,  // AVX-512 F/BW/DQ/VL (Skylake-SP and newer); VPOPCNTDQ used when present
  kNeon = 3,    // Advanced SIMD: AArch64, or 32-bit ARMv7 with NEON + VFPv4
};

const char* isa_name(Isa isa);

// The supported ISA called `name` (an isa_name() spelling). Throws std::invalid_argument (a
// ValueError through pybind11) saying whether `name` is no ISA name at all or one this build or
// CPU cannot run, and listing the ISA names and the supported ones.
Isa isa_from_name(const std::string& name);

// ISAs this build has kernels for AND this CPU/OS can run, best last (kScalar first).
const std::vector<Isa>& supported_isas();

// Whether this CPU has AVX-512 VPOPCNTDQ (a faster popcount for the AVX-512 binary kernels).
bool cpu_has_avx512_vpopcntdq();

// Whether this CPU has the AArch64 dot-product instructions (HWCAP_ASIMDDP: SDOT/UDOT, for the
// INT8 depthwise conv), and the build has kernels for them. QBINFER_NEON_DOTPROD=0 turns them
// off (to run the plain NEON kernels on such a CPU); nothing turns them on where HWCAP says no.
bool cpu_has_neon_dotprod();

// The ISA the engine uses: the best supported one, or QBINFER_ISA if set (throws
// std::runtime_error naming the variable and the supported ISAs if it asks for an ISA that is
// not supported). Fixed after the first call.
Isa active_isa();

}  // namespace qbinfer
