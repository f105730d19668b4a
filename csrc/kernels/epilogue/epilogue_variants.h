// The ISA variants of the epilogue kernels, one entry per file (epilogue_<isa>.cc), for the
// selector in epilogue_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are
// defined by CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/epilogue/epilogue.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const EpilogueKernels kEpilogueKernels__avx2;
extern const EpilogueKernels kEpilogueKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const EpilogueKernels kEpilogueKernels__neon;
#endif

}  // namespace qbinfer
