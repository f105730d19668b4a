// The neon pooling kernels: pool_simd.h instantiated with VecNeon (4 channels per vector).
// Bit-identical to the references.
#include "kernels/simd/vec_neon.h"
#include "kernels/pool/pool_simd.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {

using AvgPoolC4__neon = PoolSimd<VecNeon>;

const PoolKernels kPoolKernels__neon{
    "neon",
    &AvgPoolC4__neon::avgpool,
    &AvgPoolC4__neon::global_avgpool,
    &AvgPoolC4__neon::avgpool_rows,
};

}  // namespace qbinfer
