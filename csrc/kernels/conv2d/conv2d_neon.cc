// The neon dense conv: conv2d_tiled_simd.h instantiated with VecNeon: tiles of 2 blocks of 4
// output channels times 6 output pixels (12 accumulators + 2 weights + a broadcast of the 32 q
// registers), edge pixels 8 blocks at a time. Bit-identical to the reference (tested under
// qemu; not timed on ARM hardware).
#include "kernels/simd/vec_neon.h"
#include "kernels/conv2d/conv2d_tiled_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32Co8x6__neon = Conv2DTiledSimd<VecNeon, 2, 6, 8>;

const Conv2DKernels kConv2DKernels__neon{"neon", &Conv2DF32Co8x6__neon::packed_bytes,
                                         &Conv2DF32Co8x6__neon::pack,
                                         &Conv2DF32Co8x6__neon::run_rows};

}  // namespace qbinfer
