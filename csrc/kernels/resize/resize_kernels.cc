// Selector of the RESIZE variants (resize.h) and its scalar entry. Built for the baseline CPU:
// it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include "kernels/isa_variants.h"
#include "kernels/resize/resize.h"
#include "kernels/resize/resize_variants.h"

namespace qbinfer {
namespace {

const ResizeKernels kReference{"scalar", &resize_rows__reference};

#if defined(QBINFER_X86_64_KERNELS)
// resize_variants.h: the AVX2 code under the AVX-512 name.
const ResizeKernels kAvx512{"avx512", &resize_rows__avx2};
#endif

// Scalar first (isa_variants.h).
const IsaVariant<ResizeKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kResizeKernels__avx2},
    {Isa::kAvx512, &kAvx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kResizeKernels__neon},
#endif
};

}  // namespace

const ResizeKernels* resize_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const ResizeKernels* const* resize_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const ResizeKernels* const* resize_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
