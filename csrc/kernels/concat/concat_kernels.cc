// Selector of the concat variants (concat.h) and its scalar entry. Built for the baseline CPU.

#include "kernels/concat/concat.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const ConcatKernels kReference{"scalar", &concat_channels_f32__reference};

// Only the portable entry (concat.h says why); an ISA variant would be listed after it.
const IsaVariant<ConcatKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
};

}  // namespace

const ConcatKernels* concat_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const ConcatKernels* const* concat_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const ConcatKernels* const* concat_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
