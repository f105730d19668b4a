// The ISA variants of the binary conv, one entry per file (bconv_<isa>.cc), for the selector
// in bconv_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/bconv/bconv.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const BConvKernels kBConvKernels__avx2;
extern const BConvKernels kBConvKernels__avx512;
extern const BConvKernels kBConvKernels__avx512_vpopcnt;
// In bconv_avx2.cc: the AVX-512 entry is the AVX2 code under the avx512 name.
extern const BConvGeneralKernels kBConvGeneralKernels__avx2;
extern const BConvGeneralKernels kBConvGeneralKernels__avx512;
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const BConvKernels kBConvKernels__neon;
extern const BConvGeneralKernels kBConvGeneralKernels__neon;
#endif

}  // namespace qbinfer
