// Selector of the depthwise conv variants (dwconv.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <cstdint>
#include <cstring>

#include "kernels/dwconv/dwconv.h"
#include "kernels/dwconv/dwconv_variants.h"
#include "kernels/isa_variants.h"

namespace qbinfer {
namespace {

// The scalar packed layouts are the file layouts [multiplier * channels][9], rounded up to
// 64 bytes.
std::size_t taps(const DWConvShape& s) { return s.multiplier * s.channels * 9; }

std::size_t reference_packed_f32_bytes(const DWConvShape& s) {
  return (taps(s) * sizeof(float) + 63) / 64 * 64;
}

std::size_t reference_packed_qs8_bytes(const DWConvShape& s) { return (taps(s) + 63) / 64 * 64; }

void copy_padded(const void* weight, std::size_t bytes, std::size_t padded_bytes, void* packed) {
  std::memcpy(packed, weight, bytes);
  std::memset(static_cast<char*>(packed) + bytes, 0, padded_bytes - bytes);
}

void reference_pack_f32(const DWConvShape& s, const float* weight, void* packed) {
  copy_padded(weight, taps(s) * sizeof(float), reference_packed_f32_bytes(s), packed);
}

void reference_pack_qs8(const DWConvShape& s, const std::int8_t* weight, void* packed) {
  copy_padded(weight, taps(s), reference_packed_qs8_bytes(s), packed);
}

void reference_run_rows_f32(const DWConvShape& s, const float* in, const float* pre_bias,
                            const void* packed, const float* scale, const float* bias,
                            std::size_t y_begin, std::size_t y_end, float* out) {
  dwconv3x3_f32_nhwc_rows__reference(s, in, pre_bias, static_cast<const float*>(packed), scale,
                                     bias, y_begin, y_end, out);
}

void reference_run_rows_qs8(const DWConvShape& s, const std::int8_t* q_in, const void* packed,
                            const float* weight_scale, float input_scale, const float* scale,
                            const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
  dwconv3x3_qs8_nhwc_rows__reference(s, q_in, static_cast<const std::int8_t*>(packed), weight_scale,
                                     input_scale, scale, bias, y_begin, y_end, out);
}

const DWConvKernels kReference{"scalar",
                               &reference_packed_f32_bytes,
                               &reference_pack_f32,
                               &reference_run_rows_f32,
                               &dwconv_input_absmax__reference,
                               &dwconv_quantize_input__reference,
                               &reference_packed_qs8_bytes,
                               &reference_pack_qs8,
                               &reference_run_rows_qs8};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<DWConvKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kDWConvKernels__avx2},
    {Isa::kAvx512, &kDWConvKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kDWConvKernels__neon},
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    {Isa::kNeon, &kDWConvKernels__neon_dotprod, &cpu_has_neon_dotprod},
#endif
};

}  // namespace

const DWConvKernels* dwconv_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const DWConvKernels* const* dwconv_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const DWConvKernels* const* dwconv_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
