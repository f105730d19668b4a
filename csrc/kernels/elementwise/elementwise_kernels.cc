// Selector of the element-wise variants (elementwise.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>

#include "kernels/elementwise/elementwise.h"
#include "kernels/elementwise/elementwise_variants.h"

namespace qbinfer {
namespace {

const ElementwiseKernels kReference{"scalar",
                                    &affine_f32__reference,
                                    &prelu_f32__reference,
                                    &relu_f32__reference,
                                    &sigmoid_f32__reference,
                                    &add_f32__reference,
                                    &mul_channel_f32__reference};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const ElementwiseKernels* elementwise_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kElementwiseKernels__avx2;
    case Isa::kAvx512:
      return &kElementwiseKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kElementwiseKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const ElementwiseKernels* const* elementwise_kernel_variants(std::size_t* count) {
  static const std::vector<const ElementwiseKernels*> variants = [] {
    std::vector<const ElementwiseKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kElementwiseKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kElementwiseKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) v.push_back(&kElementwiseKernels__neon);
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
