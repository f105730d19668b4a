// The avx2 dense conv: conv2d_simd.h instantiated with VecAvx2 (8 output channels per vector,
// 8 output pixels per tile). Bit-identical to the reference.
#include "kernels/simd/vec_avx2.h"
#include "kernels/conv2d/conv2d_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32Co8x8__avx2 = Conv2DSimd<VecAvx2>;

const Conv2DKernels kConv2DKernels__avx2{"avx2", &Conv2DF32Co8x8__avx2::packed_bytes,
                                         &Conv2DF32Co8x8__avx2::pack,
                                         &Conv2DF32Co8x8__avx2::run_rows};

}  // namespace qbinfer
