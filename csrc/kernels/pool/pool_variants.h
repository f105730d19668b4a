// The ISA variants of the pooling kernels, one entry per file (pool_<isa>.cc), for the
// selector in pool_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_AARCH64_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / AArch64 files.
#pragma once

#include "kernels/pool/pool.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const PoolKernels kPoolKernels__avx2;
extern const PoolKernels kPoolKernels__avx512;
#endif

#if defined(QBINFER_AARCH64_KERNELS)
extern const PoolKernels kPoolKernels__neon;
#endif

}  // namespace qbinfer
