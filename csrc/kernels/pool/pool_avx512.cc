// The avx512 pooling kernels: pool_simd.h instantiated with VecAvx512 (16 channels per vector).
// Bit-identical to the references. The max pool and AVGPOOL2D entries are the AVX2 kernels.
#include "kernels/simd/vec_avx512.h"
#include "kernels/pool/pool_simd.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {

using AvgPoolC16__avx512 = PoolSimd<VecAvx512>;

const PoolKernels kPoolKernels__avx512{
    "avx512",
    &AvgPoolC16__avx512::avgpool,
    &AvgPoolC16__avx512::global_avgpool,
    &AvgPoolC16__avx512::avgpool_rows,
    // No AVX-512 max pool yet: an AVX-512 CPU runs the AVX2 one (bit-identical anyway).
    &maxpool_f32_nhwc__avx2,
    &maxpool_f32_nhwc_rows__avx2,
    // AVGPOOL2D likewise: the AVX2 kernel (bit-identical; no AVX-512 code without an AVX-512
    // machine to test it on).
    &avgpool2d_f32_nhwc__avx2,
    &avgpool2d_f32_nhwc_rows__avx2,
};

}  // namespace qbinfer
