// The avx2 element-wise kernels: elementwise_simd.h instantiated with VecAvx2 (8 lanes).
// Bit-identical to the references; sigmoid and softmax are the references.
#include "kernels/simd/vec_avx2.h"
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {

using ElementwiseF32x8__avx2 = ElementwiseSimd<VecAvx2>;

void clip_f32__avx2(const float* in, std::size_t n, float lo, float hi, float* out) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  // The reference's selects, both tested on the input; ordered compares are false for NaN,
  // so NaN passes through.
  ElementwiseF32x8__avx2::map(in, n, out, [&](__m256 v) {
    const __m256 upper = _mm256_blendv_ps(v, vhi, _mm256_cmp_ps(v, vhi, _CMP_GT_OQ));
    return _mm256_blendv_ps(upper, vlo, _mm256_cmp_ps(v, vlo, _CMP_LT_OQ));
  });
}

const ElementwiseKernels kElementwiseKernels__avx2{
    "avx2",
    &ElementwiseF32x8__avx2::affine,
    &ElementwiseF32x8__avx2::prelu,
    &ElementwiseF32x8__avx2::relu,
    &sigmoid_f32__reference,
    &ElementwiseF32x8__avx2::add,
    &ElementwiseF32x8__avx2::mul_channel,
    &clip_f32__avx2,
    &softmax_f32__reference,  // the one portable softmax (elementwise.h)
};

}  // namespace qbinfer
