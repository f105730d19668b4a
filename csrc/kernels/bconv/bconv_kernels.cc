// Selector of the binary conv variants (bconv.h), and the scalar entry: the reference kernel
// with the file layout as its packed layout. Built for the baseline CPU: it only compares
// ISAs and returns pointers; the variants' code runs only when the CPU has it.
#include <cstring>

#include "kernels/bconv/bconv.h"
#include "kernels/bconv/bconv_variants.h"
#include "kernels/isa_variants.h"

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

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<BConvKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kBConvKernels__avx2},
    {Isa::kAvx512, &kBConvKernels__avx512},
    {Isa::kAvx512, &kBConvKernels__avx512_vpopcnt, &cpu_has_avx512_vpopcntdq},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kBConvKernels__neon},
#endif
};

// The general conv's scalar entry: the reference, the file layout as its packed layout.
std::size_t general_weight_words(const BConvGeneralShape& s) {
  return s.out_channels * s.kernel_h * s.kernel_w * words_for_channels(s.in_channels);
}

std::size_t general_packed_weight_bytes(const BConvGeneralShape& s) {
  const std::size_t bytes = general_weight_words(s) * sizeof(BitWord);
  return (bytes + 63) / 64 * 64;
}

void general_pack_weight(const BConvGeneralShape& s, const BitWord* weight, void* packed) {
  const std::size_t bytes = general_weight_words(s) * sizeof(BitWord);
  std::memcpy(packed, weight, bytes);
  std::memset(static_cast<char*>(packed) + bytes, 0, general_packed_weight_bytes(s) - bytes);
}

void general_run_rows(const BConvGeneralShape& s, const BitWord* in, const void* packed,
                      const float* scale, const float* bias, std::size_t y_begin, std::size_t y_end,
                      float* out) {
  bconv2d_general_rows__reference(s, in, static_cast<const BitWord*>(packed), scale, bias, y_begin,
                                  y_end, out);
}

const BConvGeneralKernels kGeneralReference{"scalar", &general_packed_weight_bytes,
                                            &general_pack_weight, &general_run_rows};

const IsaVariant<BConvGeneralKernels> kGeneralVariants[] = {
    {Isa::kScalar, &kGeneralReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kBConvGeneralKernels__avx2},
    {Isa::kAvx512, &kBConvGeneralKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kBConvGeneralKernels__neon},
#endif
};

}  // namespace

const BConvKernels* bconv_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const BConvKernels* const* bconv_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const BConvKernels* const* bconv_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

const BConvGeneralKernels* bconv_general_kernels_for(Isa isa) {
  return best_variant(kGeneralVariants, isa);
}

const BConvGeneralKernels* const* bconv_general_kernel_variants(std::size_t* count) {
  return runnable_variants(kGeneralVariants, count);
}

const BConvGeneralKernels* const* bconv_general_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kGeneralVariants, count);
}

}  // namespace qbinfer
