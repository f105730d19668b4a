// The avx512 pooling kernels: pool_simd.h instantiated with VecAvx512 (16 channels per vector).
// Bit-identical to the references.
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
};

}  // namespace qbinfer
