// Selector of the bitpacking variants (bitpack.h). Built for the baseline CPU: it only
// compares ISAs and returns pointers; the variants' code runs only when the CPU has it.
#include <algorithm>
#include <vector>

#include "kernels/bitpack/bitpack.h"
#include "kernels/bitpack/bitpack_variants.h"

namespace qbinfer {

const BitpackKernels* bitpack_kernels_for(Isa isa) {
  static const BitpackKernels reference{"scalar", &bitpack_f32_nhwc__reference};
  const auto& supported = supported_isas();
  if (std::find(supported.begin(), supported.end(), isa) == supported.end()) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &reference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kBitpackKernels__avx2;
    case Isa::kAvx512:
      return &kBitpackKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kBitpackKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const BitpackKernels* const* bitpack_kernel_variants(std::size_t* count) {
  // One variant per supported ISA: bitpacking has no sub-variants.
  static const std::vector<const BitpackKernels*> variants = [] {
    std::vector<const BitpackKernels*> v;
    for (Isa isa : supported_isas()) {
      if (const BitpackKernels* k = bitpack_kernels_for(isa)) v.push_back(k);
    }
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
