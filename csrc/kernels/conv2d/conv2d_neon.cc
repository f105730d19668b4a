// The neon dense conv: conv2d_simd.h instantiated with VecNeon (4 output channels per vector,
// 8 output pixels per tile: 8 accumulators + a weight + a broadcast fit the 32 q registers).
// Bit-identical to the reference.
#include "kernels/simd/vec_neon.h"
#include "kernels/conv2d/conv2d_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32Co4x8__neon = Conv2DSimd<VecNeon>;

const Conv2DKernels kConv2DKernels__neon{"neon", &Conv2DF32Co4x8__neon::packed_bytes,
                                         &Conv2DF32Co4x8__neon::pack,
                                         &Conv2DF32Co4x8__neon::run_rows};

}  // namespace qbinfer
