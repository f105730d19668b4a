// The ISA variants of the pooling kernels, one entry per file (pool_<isa>.cc), for the
// selector in pool_kernels.cc only. QBINFER_X86_64_KERNELS / QBINFER_NEON_KERNELS are defined by
// CMakeLists.txt exactly when it compiles the x86-64 / NEON files.
#pragma once

#include "kernels/pool/pool.h"

namespace qbinfer {

#if defined(QBINFER_X86_64_KERNELS)
extern const PoolKernels kPoolKernels__avx2;
extern const PoolKernels kPoolKernels__avx512;
// The AVX2 max pool, which the AVX-512 table reuses (pool_avx2.cc).
void maxpool_f32_nhwc__avx2(const MaxPoolShape& s, const float* in, float* out);
void maxpool_f32_nhwc_rows__avx2(const MaxPoolShape& s, const float* in, std::size_t y_begin,
                                 std::size_t y_end, float* out);
// The AVX2 AVGPOOL2D, which the AVX-512 table reuses too (pool_avx2.cc).
void avgpool2d_f32_nhwc__avx2(const AvgPool2DShape& s, const float* in, float* out);
void avgpool2d_f32_nhwc_rows__avx2(const AvgPool2DShape& s, const float* in, std::size_t y_begin,
                                   std::size_t y_end, float* out);
#endif

#if defined(QBINFER_NEON_KERNELS)
extern const PoolKernels kPoolKernels__neon;
#endif

}  // namespace qbinfer
