// The avx2 element-wise kernels: elementwise_simd.h instantiated with VecAvx2 (8 lanes).
// Bit-identical to the references; sigmoid is the reference.
#include "kernels/simd/vec_avx2.h"
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {

using ElementwiseF32x8__avx2 = ElementwiseSimd<VecAvx2>;

const ElementwiseKernels kElementwiseKernels__avx2{
    "avx2",
    &ElementwiseF32x8__avx2::affine,
    &ElementwiseF32x8__avx2::prelu,
    &ElementwiseF32x8__avx2::relu,
    &sigmoid_f32__reference,
    &ElementwiseF32x8__avx2::add,
    &ElementwiseF32x8__avx2::mul_channel,
};

}  // namespace qbinfer
