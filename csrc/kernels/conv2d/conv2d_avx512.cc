// The avx512 dense conv: conv2d_simd.h instantiated with VecAvx512 (16 output channels per vector,
// 8 output pixels per tile). Bit-identical to the reference.
#include "kernels/simd/vec_avx512.h"
#include "kernels/conv2d/conv2d_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32Co16x8__avx512 = Conv2DSimd<VecAvx512>;

const Conv2DKernels kConv2DKernels__avx512{"avx512", &Conv2DF32Co16x8__avx512::packed_bytes,
                                           &Conv2DF32Co16x8__avx512::pack,
                                           &Conv2DF32Co16x8__avx512::run_rows};

}  // namespace qbinfer
