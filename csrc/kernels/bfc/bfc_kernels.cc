// Selector of the binary FC variants (bfc.h) and its scalar entry. Built for the baseline CPU:
// it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.

#include "kernels/bfc/bfc.h"
#include "kernels/bfc/bfc_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const BFCKernels kReference{"scalar", &bfc__reference};

#if defined(QBINFER_X86_64_KERNELS)
// bfc_variants.h: the AVX2 code under the AVX-512 name (only its address is taken here).
const BFCKernels kAvx512{"avx512", &bfc__avx2};
#endif

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<BFCKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kBFCKernels__avx2},
    {Isa::kAvx512, &kAvx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kBFCKernels__neon},
#endif
};

}  // namespace

const BFCKernels* bfc_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const BFCKernels* const* bfc_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const BFCKernels* const* bfc_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
