// The ISA variants of the element-wise kernels, one entry per file (elementwise_<isa>.cc), for the
// selector in elementwise_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are
// defined by CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/elementwise/elementwise.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const ElementwiseKernels kElementwiseKernels__avx2;
extern const ElementwiseKernels kElementwiseKernels__avx512;
// The AVX2 clip, which the AVX-512 table reuses (elementwise_avx2.cc).
void clip_f32__avx2(const float* in, std::size_t n, float lo, float hi, float* out);
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const ElementwiseKernels kElementwiseKernels__neon;
#endif

}  // namespace qbinfer
