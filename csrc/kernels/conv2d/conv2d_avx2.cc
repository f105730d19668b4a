// The avx2 dense conv: conv2d_tiled_simd.h instantiated with VecAvx2: tiles of 2 blocks of 8
// output channels times 4 output pixels, edge pixels 8 blocks at a time. Bit-identical to the
// reference. (2 x 4 measured best on the 7x7 stem and the 1x1 convs: 2 x 5 and 2 x 6, which the
// 16 ymm registers would hold, made GCC 12 spill an accumulator and ran slower than 1 x 8.)
#include "kernels/simd/vec_avx2.h"
#include "kernels/conv2d/conv2d_tiled_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32Co16x4__avx2 = Conv2DTiledSimd<VecAvx2, 2, 4, 8>;

const Conv2DKernels kConv2DKernels__avx2{"avx2", &Conv2DF32Co16x4__avx2::packed_bytes,
                                         &Conv2DF32Co16x4__avx2::pack,
                                         &Conv2DF32Co16x4__avx2::run_rows};

}  // namespace qbinfer
