// The ISA variants of RESIZE, one entry per file (resize_<isa>.cc), for the selector in
// resize_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/resize/resize.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const ResizeKernels kResizeKernels__avx2;
// The AVX-512 entry runs the AVX2 code (an AVX-512 CPU runs AVX2 code): there is no AVX-512
// resize, and the selector needs an entry per ISA so that QBINFER_ISA=avx512 still gets SIMD.
void resize_rows__avx2(const ResizeShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out);
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const ResizeKernels kResizeKernels__neon;
#endif

}  // namespace qbinfer
