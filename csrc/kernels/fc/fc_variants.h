// The ISA variants of the FC kernels, one entry per file (fc_<isa>.cc), for the
// selector in fc_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/fc/fc.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const FCKernels kFCKernels__avx2;
extern const FCKernels kFCKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const FCKernels kFCKernels__neon;
#endif

}  // namespace qbinfer
