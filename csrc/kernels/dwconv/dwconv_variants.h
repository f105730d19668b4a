// The ISA variants of the depthwise conv kernels, one entry per file (dwconv_<isa>.cc), for the
// selector in dwconv_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined
// by CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/dwconv/dwconv.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const DWConvKernels kDWConvKernels__avx2;
extern const DWConvKernels kDWConvKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const DWConvKernels kDWConvKernels__neon;
#endif
#if defined(QBINFER_AARCH64_KERNELS)  // SDOT/UDOT: AArch64 only
extern const DWConvKernels kDWConvKernels__neon_dotprod;
#endif

}  // namespace qbinfer
