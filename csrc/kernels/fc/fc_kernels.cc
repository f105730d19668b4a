// Selector of the FC variants (fc.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>

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
    default:
      return nullptr;
  }
}

}  // namespace qbinfer
