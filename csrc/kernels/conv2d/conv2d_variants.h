// The ISA variants of the dense conv kernels, one entry per file (conv2d_<isa>.cc), for the
// selector in conv2d_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined
// by CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/conv2d/conv2d.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const Conv2DKernels kConv2DKernels__avx2;
extern const Conv2DKernels kConv2DKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const Conv2DKernels kConv2DKernels__neon;
#endif

}  // namespace qbinfer
