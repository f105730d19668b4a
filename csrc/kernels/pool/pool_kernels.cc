// Selector of the pooling variants (pool.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.

#include "kernels/pool/pool.h"
#include "kernels/pool/pool_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

const PoolKernels kReference{"scalar",
                             &avgpool_f32_nhwc__reference,
                             &global_avgpool_f32_nhwc__reference,
                             &avgpool_f32_nhwc_rows__reference,
                             &maxpool_f32_nhwc__reference,
                             &maxpool_f32_nhwc_rows__reference,
                             &avgpool2d_f32_nhwc__reference,
                             &avgpool2d_f32_nhwc_rows__reference};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<PoolKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kPoolKernels__avx2},
    {Isa::kAvx512, &kPoolKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kPoolKernels__neon},
#endif
};

}  // namespace

const PoolKernels* pool_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const PoolKernels* const* pool_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const PoolKernels* const* pool_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
