// The avx2 dense conv: pointwise shapes (1x1, unpadded) through conv2d_pointwise_gemm.h with
// VecAvx2 (6 pixels x 16 output channels, 12 ymm accumulators); every other shape through
// conv2d_tiled_simd.h (tiles of 2 blocks of 8 output channels times 4 output pixels, edge pixels
// 8 blocks at a time). Bit-identical to the reference. (2 x 4 measured best on the 7x7 stem: 2 x 5
// and 2 x 6 made GCC 12 spill an accumulator there, where the tile's window offsets take
// registers; the pointwise tile needs only its 6 input pointers.)
#include "kernels/simd/vec_avx2.h"
#include "kernels/conv2d/conv2d_clip_avx2.h"
#include "kernels/conv2d/conv2d_pointwise_gemm.h"
#include "kernels/conv2d/conv2d_tiled_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {

using Conv2DF32__avx2 =
    Conv2DWithPointwise<Conv2DPointwiseGemm<VecAvx2, 2, 6, Conv2DClipAvx2>,
                        Conv2DTiledSimd<VecAvx2, 2, 4, 8>, VecAvx2, Conv2DClipAvx2>;

const Conv2DKernels kConv2DKernels__avx2{"avx2", &Conv2DF32__avx2::packed_bytes,
                                         &Conv2DF32__avx2::pack, &Conv2DF32__avx2::run_rows,
                                         &Conv2DF32__avx2::run_rows_clip};

}  // namespace qbinfer
