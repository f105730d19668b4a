// The ISA variants of bitpacking, one entry per file (bitpack_<isa>.cc), for the selector in
// bitpack_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/bitpack/bitpack.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const BitpackKernels kBitpackKernels__avx2;
extern const BitpackKernels kBitpackKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const BitpackKernels kBitpackKernels__neon;
#endif

}  // namespace qbinfer
