// The ISA variants of the FC kernels, one entry per file (fc_<isa>.cc), for the
// selector in fc_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/fc/fc.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const FCKernels kFCKernels__avx2;
extern const FCKernels kFCKernels__avx512;
// The AVX-512 entry's binary kernel is the AVX2 one (an AVX-512 CPU runs AVX2 code): there is
// no AVX-512 binary FC yet.
void fc_binary__avx2(std::size_t in_features, std::size_t out_features, const float* x,
                     const BitWord* signs, const float* weight_scale, const float* bias,
                     float* out);
// Likewise bitplane8 on packed codes: an AVX-512 version would only widen the vectors of a loop
// that is bound by its loads, and this project's machines test no new AVX-512 code.
void fc_bitplane8_packed__avx2(std::size_t in_features, std::size_t out_features, const float* x,
                               const std::int8_t* packed, const float* weight_scale,
                               const float* bias, float* out);
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const FCKernels kFCKernels__neon;
#endif

}  // namespace qbinfer
