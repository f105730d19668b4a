// Selector of the pooling variants (pool.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>

#include "kernels/pool/pool.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {
namespace {

const PoolKernels kReference{"scalar", &avgpool_f32_nhwc__reference,
                             &global_avgpool_f32_nhwc__reference, &concat_channels_f32__reference,
                             &avgpool_f32_nhwc_rows__reference};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const PoolKernels* pool_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kPoolKernels__avx2;
    case Isa::kAvx512:
      return &kPoolKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kPoolKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const PoolKernels* const* pool_kernel_variants(std::size_t* count) {
  static const std::vector<const PoolKernels*> variants = [] {
    std::vector<const PoolKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kPoolKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kPoolKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) v.push_back(&kPoolKernels__neon);
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
