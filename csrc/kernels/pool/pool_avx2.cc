// The avx2 pooling kernels: pool_simd.h instantiated with VecAvx2 (8 channels per vector).
// Bit-identical to the references.
#include "kernels/simd/vec_avx2.h"
#include "kernels/pool/pool_simd.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {

using AvgPoolC8__avx2 = PoolSimd<VecAvx2>;

namespace {

// v replaces acc where v > acc or v is NaN (NLE_UQ), unless acc is already NaN (ORD_Q false):
// the reference's rule, lane by lane.
__m256 max_nan_first_step(__m256 acc, __m256 v) {
  const __m256 take =
      _mm256_and_ps(_mm256_cmp_ps(v, acc, _CMP_NLE_UQ), _mm256_cmp_ps(acc, acc, _CMP_ORD_Q));
  return _mm256_blendv_ps(acc, v, take);
}

}  // namespace

void maxpool_f32_nhwc_rows__avx2(const MaxPoolShape& s, const float* in, std::size_t y_begin,
                                 std::size_t y_end, float* out) {
  AvgPoolC8__avx2::maxpool_rows(s, in, y_begin, y_end, out,
                                [](auto acc, auto v) { return max_nan_first_step(acc, v); });
}

void maxpool_f32_nhwc__avx2(const MaxPoolShape& s, const float* in, float* out) {
  maxpool_f32_nhwc_rows__avx2(s, in, 0, s.out_height, out);
}

void avgpool2d_f32_nhwc__avx2(const AvgPool2DShape& s, const float* in, float* out) {
  AvgPoolC8__avx2::avgpool2d(s, in, out);
}

void avgpool2d_f32_nhwc_rows__avx2(const AvgPool2DShape& s, const float* in, std::size_t y_begin,
                                   std::size_t y_end, float* out) {
  AvgPoolC8__avx2::avgpool2d_rows(s, in, y_begin, y_end, out);
}

const PoolKernels kPoolKernels__avx2{
    "avx2",
    &AvgPoolC8__avx2::avgpool,
    &AvgPoolC8__avx2::global_avgpool,
    &AvgPoolC8__avx2::avgpool_rows,
    &maxpool_f32_nhwc__avx2,
    &maxpool_f32_nhwc_rows__avx2,
    &avgpool2d_f32_nhwc__avx2,
    &avgpool2d_f32_nhwc_rows__avx2,
};

}  // namespace qbinfer
