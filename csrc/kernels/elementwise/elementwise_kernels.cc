// Selector of the element-wise variants (elementwise.h) and its scalar entry. Built for the
// baseline CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU
// has it.

#include "kernels/elementwise/elementwise.h"
#include "kernels/elementwise/elementwise_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const ElementwiseKernels kReference{"scalar",
                                    &affine_f32__reference,
                                    &prelu_f32__reference,
                                    &relu_f32__reference,
                                    &sigmoid_f32__reference,
                                    &add_f32__reference,
                                    &mul_channel_f32__reference,
                                    &clip_f32__reference,
                                    &softmax_f32__reference};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<ElementwiseKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kElementwiseKernels__avx2},
    {Isa::kAvx512, &kElementwiseKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kElementwiseKernels__neon},
#endif
};

}  // namespace

const ElementwiseKernels* elementwise_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const ElementwiseKernels* const* elementwise_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const ElementwiseKernels* const* elementwise_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
