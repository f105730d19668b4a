// Selector of the epilogue variants (epilogue.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.

#include "kernels/epilogue/epilogue.h"
#include "kernels/epilogue/epilogue_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const EpilogueKernels kReference{"scalar", &epilogue_rows__reference};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<EpilogueKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kEpilogueKernels__avx2},
    {Isa::kAvx512, &kEpilogueKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kEpilogueKernels__neon},
#endif
};

}  // namespace

const EpilogueKernels* epilogue_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const EpilogueKernels* const* epilogue_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const EpilogueKernels* const* epilogue_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
