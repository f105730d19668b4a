// Selector of the bitpacking variants (bitpack.h). Built for the baseline CPU: it only
// compares ISAs and returns pointers; the variants' code runs only when the CPU has it.
#include <algorithm>

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
    default:
      return nullptr;
  }
}

}  // namespace qbinfer
