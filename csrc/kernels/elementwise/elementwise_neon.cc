// The neon element-wise kernels: elementwise_simd.h instantiated with VecNeon (4 lanes).
// Bit-identical to the references; sigmoid is the reference.
#include "kernels/simd/vec_neon.h"
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {

using ElementwiseF32x4__neon = ElementwiseSimd<VecNeon>;

const ElementwiseKernels kElementwiseKernels__neon{
    "neon",
    &ElementwiseF32x4__neon::affine,
    &ElementwiseF32x4__neon::prelu,
    &ElementwiseF32x4__neon::relu,
    &sigmoid_f32__reference,
    &ElementwiseF32x4__neon::add,
    &ElementwiseF32x4__neon::mul_channel,
};

}  // namespace qbinfer
