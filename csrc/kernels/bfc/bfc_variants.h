// The ISA variants of the binary FC, one entry per file (bfc_<isa>.cc), for the selector in
// bfc_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/bfc/bfc.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const BFCKernels kBFCKernels__avx2;
// The AVX-512 entry runs the AVX2 kernel (an AVX-512 CPU runs AVX2 code): there is no
// AVX-512 binary FC yet, and the selector needs an entry per ISA so that QBINFER_ISA=avx512
// still gets the SIMD kernel rather than the reference.
void bfc__avx2(std::size_t in_channels, std::size_t out_features, const BitWord* in,
               const BitWord* weight, const float* scale, const float* bias, float* out);
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const BFCKernels kBFCKernels__neon;
#endif

}  // namespace qbinfer
