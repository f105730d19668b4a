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
namespace {

// The CLIP select (v < lo ? lo : (v > hi ? hi : v), both tests on v; NaN compares false and
// passes through), for the fused CONV2D -> CLIP.
struct Conv2DClipNeon {
  static float32x4_t apply(float32x4_t v, float32x4_t lo, float32x4_t hi) {
    const float32x4_t upper = vbslq_f32(vcgtq_f32(v, hi), hi, v);
    return vbslq_f32(vcltq_f32(v, lo), lo, upper);
  }
};

}  // namespace

#if defined(__aarch64__) || defined(_M_ARM64)
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 4, 6, Conv2DClipNeon>;
#else
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 2, 4, Conv2DClipNeon>;
#endif
using Conv2DF32__neon =
    Conv2DWithPointwise<Conv2DPointwise__neon, Conv2DTiledSimd<VecNeon, 2, 6, 8>, VecNeon,
                        Conv2DClipNeon>;

const Conv2DKernels kConv2DKernels__neon{"neon", &Conv2DF32__neon::packed_bytes,
                                         &Conv2DF32__neon::pack, &Conv2DF32__neon::run_rows,
                                         &Conv2DF32__neon::run_rows_clip};

}  // namespace qbinfer
