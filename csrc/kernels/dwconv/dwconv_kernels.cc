// Selector of the depthwise conv variants (dwconv.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>
#include <cstdint>
#include <cstring>

#include "kernels/dwconv/dwconv.h"
#include "kernels/dwconv/dwconv_variants.h"

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
                            const float* bias, std::size_t y_begin, std::size_t y_end,
                            float* out) {
  dwconv3x3_qs8_nhwc_rows__reference(s, q_in, static_cast<const std::int8_t*>(packed),
                                     weight_scale, input_scale, scale, bias, y_begin, y_end, out);
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

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const DWConvKernels* dwconv_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kDWConvKernels__avx2;
    case Isa::kAvx512:
      return &kDWConvKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return cpu_has_neon_dotprod() ? &kDWConvKernels__neon_dotprod : &kDWConvKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const DWConvKernels* const* dwconv_kernel_variants(std::size_t* count) {
  static const std::vector<const DWConvKernels*> variants = [] {
    std::vector<const DWConvKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kDWConvKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kDWConvKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) {
      v.push_back(&kDWConvKernels__neon);
      if (cpu_has_neon_dotprod()) v.push_back(&kDWConvKernels__neon_dotprod);
    }
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
