// The neon element-wise kernels: elementwise_simd.h instantiated with VecNeon (4 lanes).
// Bit-identical to the references; sigmoid and softmax are the references.
#include "kernels/simd/vec_neon.h"
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {

using ElementwiseF32x4__neon = ElementwiseSimd<VecNeon>;

namespace {

void clip__neon(const float* in, std::size_t n, float lo, float hi, float* out) {
  const float32x4_t vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
  // The reference's selects, both tested on the input; compares are false for NaN, so NaN
  // passes through.
  ElementwiseF32x4__neon::map(in, n, out, [&](float32x4_t v) {
    const float32x4_t upper = vbslq_f32(vcgtq_f32(v, vhi), vhi, v);
    return vbslq_f32(vcltq_f32(v, vlo), vlo, upper);
  });
}

}  // namespace

const ElementwiseKernels kElementwiseKernels__neon{
    "neon",
    &ElementwiseF32x4__neon::affine,
    &ElementwiseF32x4__neon::prelu,
    &ElementwiseF32x4__neon::relu,
    &sigmoid_f32__reference,
    &ElementwiseF32x4__neon::add,
    &ElementwiseF32x4__neon::mul_channel,
    &clip__neon,
    &softmax_f32__reference,  // the one portable softmax (elementwise.h)
};

}  // namespace qbinfer
