// Selector of the binary conv variants (bconv.h), and the scalar entry: the reference kernel
// with the file layout as its packed layout. Built for the baseline CPU: it only compares
// ISAs and returns pointers; the variants' code runs only when the CPU has it.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/bconv/bconv.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

std::size_t reference_weight_words(const BConvShape& s) {
  return s.out_channels * s.kernel * s.kernel * words_for_channels(s.in_channels);
}

std::size_t reference_packed_weight_bytes(const BConvShape& s) {
  const std::size_t bytes = reference_weight_words(s) * sizeof(BitWord);
  return (bytes + 63) / 64 * 64;
}

void reference_pack_weight(const BConvShape& s, const BitWord* weight, void* packed) {
  const std::size_t bytes = reference_weight_words(s) * sizeof(BitWord);
  std::memcpy(packed, weight, bytes);
  std::memset(static_cast<char*>(packed) + bytes, 0, reference_packed_weight_bytes(s) - bytes);
}

void reference_run_rows(const BConvShape& s, const BitWord* in, const void* packed,
                        const float* scale, const float* bias, std::size_t y_begin,
                        std::size_t y_end, float* out) {
  bconv2d_nhwc_rows__reference(s, in, static_cast<const BitWord*>(packed), scale, bias, y_begin,
                               y_end, out);
}

const BConvKernels kReference{"scalar", &reference_packed_weight_bytes, &reference_pack_weight,
                              &reference_run_rows};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

std::vector<const BConvKernels*> runnable_variants() {
  std::vector<const BConvKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
  if (supported(Isa::kAvx2)) v.push_back(&kBConvKernels__avx2);
  if (supported(Isa::kAvx512)) {
    v.push_back(&kBConvKernels__avx512);
    if (cpu_has_avx512_vpopcntdq()) v.push_back(&kBConvKernels__avx512_vpopcnt);
  }
#endif
#if defined(QBINFER_AARCH64_KERNELS)
  if (supported(Isa::kNeon)) v.push_back(&kBConvKernels__neon);
#endif
  return v;
}

}  // namespace

const BConvKernels* bconv_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kBConvKernels__avx2;
    case Isa::kAvx512:
      return cpu_has_avx512_vpopcntdq() ? &kBConvKernels__avx512_vpopcnt
                                        : &kBConvKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kBConvKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const BConvKernels* const* bconv_kernel_variants(std::size_t* count) {
  static const std::vector<const BConvKernels*> variants = runnable_variants();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
