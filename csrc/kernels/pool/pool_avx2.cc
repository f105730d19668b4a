// The avx2 pooling kernels: pool_simd.h instantiated with VecAvx2 (8 channels per vector).
// Bit-identical to the references.
#include "kernels/simd/vec_avx2.h"
#include "kernels/pool/pool_simd.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {

using AvgPoolC8__avx2 = PoolSimd<VecAvx2>;

const PoolKernels kPoolKernels__avx2{
    "avx2",
    &AvgPoolC8__avx2::avgpool,
    &AvgPoolC8__avx2::global_avgpool,
    &AvgPoolC8__avx2::avgpool_rows,
};

}  // namespace qbinfer
