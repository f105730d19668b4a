// Selector of the bitpacking variants (bitpack.h). Built for the baseline CPU: it only
// compares ISAs and returns pointers; the variants' code runs only when the CPU has it.
#include "kernels/bitpack/bitpack.h"
#include "kernels/bitpack/bitpack_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const BitpackKernels kReference{"scalar", &bitpack_f32_nhwc__reference};

const IsaVariant<BitpackKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kBitpackKernels__avx2},
    {Isa::kAvx512, &kBitpackKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kBitpackKernels__neon},
#endif
};

}  // namespace

const BitpackKernels* bitpack_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const BitpackKernels* const* bitpack_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const BitpackKernels* const* bitpack_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
