// Selector of the FC variants (fc.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>

#include "kernels/fc/fc.h"
#include "kernels/fc/fc_variants.h"

namespace qbinfer {
namespace {

const FCKernels kReference{"scalar", &fc_f32__reference, &fc_qs8__reference,
                           &fc_bitplane8__reference};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const FCKernels* fc_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kFCKernels__avx2;
    case Isa::kAvx512:
      return &kFCKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kFCKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const FCKernels* const* fc_kernel_variants(std::size_t* count) {
  static const std::vector<const FCKernels*> variants = [] {
    std::vector<const FCKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kFCKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kFCKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) v.push_back(&kFCKernels__neon);
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
