// Selector of the FC variants (fc.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.

#include "kernels/fc/fc.h"
#include "kernels/fc/fc_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const FCKernels kReference{"scalar",
                           &fc_f32__reference,
                           &fc_qs8__reference,
                           &fc_bitplane8__reference,
                           &fc_binary__reference,
                           &fc_bitplane8_packed__reference};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<FCKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kFCKernels__avx2},
    {Isa::kAvx512, &kFCKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kFCKernels__neon},
#endif
};

}  // namespace

const FCKernels* fc_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const FCKernels* const* fc_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const FCKernels* const* fc_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
