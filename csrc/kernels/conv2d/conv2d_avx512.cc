// The avx512 dense conv: conv2d_simd.h instantiated with VecAvx512 (16 output channels per vector,
// 8 output pixels per tile), except the pointwise shapes (1x1, unpadded), which run the avx2
// entry's GEMM (conv2d_pointwise_gemm.h; this machine has no AVX-512 to test or time a 512-bit
// one), and the CLIP pass of run_rows_clip uses the avx2 select. Bit-identical to the reference.
#include "kernels/simd/vec_avx2.h"
#include "kernels/simd/vec_avx512.h"
#include "kernels/conv2d/conv2d_clip_avx2.h"
#include "kernels/conv2d/conv2d_pointwise_gemm.h"
#include "kernels/conv2d/conv2d_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {
namespace {

// The avx2 entry's pointwise GEMM, through its table (an AVX-512 CPU runs AVX2 code).
struct Conv2DPointwiseFromAvx2 {
  static std::size_t packed_bytes(const Conv2DShape& s) {
    return kConv2DKernels__avx2.packed_bytes(s);
  }
  static void pack(const Conv2DShape& s, const float* weight, void* packed) {
    kConv2DKernels__avx2.pack(s, weight, packed);
  }
  static void run_rows(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                       bool relu, std::size_t y_begin, std::size_t y_end, float* out) {
    kConv2DKernels__avx2.run_rows(s, in, packed, bias, relu, y_begin, y_end, out);
  }
  static void run_rows_clip(const Conv2DShape& s, const float* in, const void* packed,
                            const float* bias, bool relu, float lo, float hi, std::size_t y_begin,
                            std::size_t y_end, float* out) {
    kConv2DKernels__avx2.run_rows_clip(s, in, packed, bias, relu, lo, hi, y_begin, y_end, out);
  }
};

}  // namespace

// The clip pass after the 512-bit rows uses the avx2 select (no AVX-512 code written untested).
using Conv2DF32__avx512 =
    Conv2DWithPointwise<Conv2DPointwiseFromAvx2, Conv2DSimd<VecAvx512>, VecAvx2, Conv2DClipAvx2>;

const Conv2DKernels kConv2DKernels__avx512{"avx512", &Conv2DF32__avx512::packed_bytes,
                                           &Conv2DF32__avx512::pack, &Conv2DF32__avx512::run_rows,
                                           &Conv2DF32__avx512::run_rows_clip};

}  // namespace qbinfer
