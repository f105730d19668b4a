// Selector of the dense conv variants (conv2d.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <algorithm>
#include <vector>
#include <cstring>

#include "kernels/conv2d/conv2d.h"
#include "kernels/conv2d/conv2d_variants.h"

namespace qbinfer {
namespace {

// The scalar packed layout is the file layout [Co][kh][kw][Ci], rounded up to 64 bytes.
std::size_t weight_floats(const Conv2DShape& s) {
  return s.out_channels * s.kernel_h * s.kernel_w * s.in_channels;
}

std::size_t reference_packed_bytes(const Conv2DShape& s) {
  return (weight_floats(s) * sizeof(float) + 63) / 64 * 64;
}

void reference_pack(const Conv2DShape& s, const float* weight, void* packed) {
  const std::size_t bytes = weight_floats(s) * sizeof(float);
  std::memcpy(packed, weight, bytes);
  std::memset(static_cast<char*>(packed) + bytes, 0, reference_packed_bytes(s) - bytes);
}

void reference_run_rows(const Conv2DShape& s, const float* in, const void* packed,
                        const float* bias, bool relu, std::size_t y_begin, std::size_t y_end,
                        float* out) {
  conv2d_f32_nhwc_rows__reference(s, in, static_cast<const float*>(packed), bias, relu, y_begin,
                                  y_end, out);
}

const Conv2DKernels kReference{"scalar", &reference_packed_bytes, &reference_pack,
                               &reference_run_rows};

bool supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

}  // namespace

const Conv2DKernels* conv2d_kernels_for(Isa isa) {
  if (!supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kReference;
#if defined(QBINFER_X86_64_KERNELS)
    case Isa::kAvx2:
      return &kConv2DKernels__avx2;
    case Isa::kAvx512:
      return &kConv2DKernels__avx512;
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    case Isa::kNeon:
      return &kConv2DKernels__neon;
#endif
    default:
      return nullptr;
  }
}

const Conv2DKernels* const* conv2d_kernel_variants(std::size_t* count) {
  static const std::vector<const Conv2DKernels*> variants = [] {
    std::vector<const Conv2DKernels*> v{&kReference};
#if defined(QBINFER_X86_64_KERNELS)
    if (supported(Isa::kAvx2)) v.push_back(&kConv2DKernels__avx2);
    if (supported(Isa::kAvx512)) v.push_back(&kConv2DKernels__avx512);
#endif
#if defined(QBINFER_AARCH64_KERNELS)
    if (supported(Isa::kNeon)) v.push_back(&kConv2DKernels__neon);
#endif
    return v;
  }();
  *count = variants.size();
  return variants.data();
}

}  // namespace qbinfer
