// Selector of the epilogue variants (epilogue.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>

#include "kernels/epilogue/epilogue.h"
#include "kernels/epilogue/epilogue_variants.h"

namespace qbinfer {
namespace {

const EpilogueKernels kReference{"scalar", &epilogue_rows__reference};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const EpilogueKernels* epilogue_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kEpilogueKernels__avx2;
    case Isa::kAvx512:
      return &kEpilogueKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kEpilogueKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const EpilogueKernels* const* epilogue_kernel_variants(std::size_t* count) {
  static const std::vector<const EpilogueKernels*> variants = [] {
    std::vector<const EpilogueKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kEpilogueKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kEpilogueKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) v.push_back(&kEpilogueKernels__neon);
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
