// The neon dense conv: pointwise shapes (1x1, unpadded) through conv2d_pointwise_gemm.h with
// VecNeon, 6 pixels x 16 output channels on AArch64 (24 accumulators + 4 weights + a broadcast
// of its 32 q registers) and 4 pixels x 8 channels on ARMv7 (8 + 2 + 1 of its 16); every other
// shape through conv2d_tiled_simd.h (tiles of 2 blocks of 4 output channels times 6 output
// pixels, edge pixels 8 blocks at a time). Bit-identical to the reference (tested under qemu;
// not timed on ARM hardware).
#include "kernels/simd/vec_neon.h"
#include "kernels/conv2d/conv2d_pointwise_gemm.h"
#include "kernels/conv2d/conv2d_tiled_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

#if defined(__aarch64__) || defined(_M_ARM64)
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 4, 6>;
#else
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 2, 4>;
#endif
using Conv2DF32__neon =
    Conv2DWithPointwise<Conv2DPointwise__neon, Conv2DTiledSimd<VecNeon, 2, 6, 8>>;

const Conv2DKernels kConv2DKernels__neon{"neon", &Conv2DF32__neon::packed_bytes,
                                         &Conv2DF32__neon::pack, &Conv2DF32__neon::run_rows};

}  // namespace qbinfer
