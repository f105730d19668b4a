// The avx512 element-wise kernels: elementwise_simd.h instantiated with VecAvx512 (16 lanes).
// Bit-identical to the references; sigmoid and softmax are the references, clip the AVX2 kernel.
#include "kernels/simd/vec_avx512.h"
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {

using ElementwiseF32x16__avx512 = ElementwiseSimd<VecAvx512>;

const ElementwiseKernels kElementwiseKernels__avx512{
    "avx512",
    &ElementwiseF32x16__avx512::affine,
    &ElementwiseF32x16__avx512::prelu,
    &ElementwiseF32x16__avx512::relu,
    &sigmoid_f32__reference,
    &ElementwiseF32x16__avx512::add,
    &ElementwiseF32x16__avx512::mul_channel,
    &clip_f32__avx2,          // no AVX-512 clip yet: an AVX-512 CPU runs the AVX2 one
    &softmax_f32__reference,  // the one portable softmax (elementwise.h)
};

}  // namespace qbinfer
