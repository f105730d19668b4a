// Selector of the dense conv variants (conv2d.h) and its scalar entry. Built for the baseline
// CPU: it only compares ISAs and returns pointers; a variant's code runs only when the CPU has it.
#include <cstring>

#include "kernels/conv2d/conv2d.h"
#include "kernels/conv2d/conv2d_variants.h"
#include "kernels/isa_variants.h"

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

void reference_run_rows_clip(const Conv2DShape& s, const float* in, const void* packed,
                             const float* bias, bool relu, float lo, float hi, std::size_t y_begin,
                             std::size_t y_end, float* out) {
  reference_run_rows(s, in, packed, bias, relu, y_begin, y_end, out);
  conv2d_clip_rows__reference(s, lo, hi, y_begin, y_end, out);
}

const Conv2DKernels kReference{"scalar", &reference_packed_bytes, &reference_pack,
                               &reference_run_rows, &reference_run_rows_clip};

// Scalar first; an ISA's faster sub-variant after its plain one (isa_variants.h).
const IsaVariant<Conv2DKernels> kVariants[] = {
    {Isa::kScalar, &kReference},
#if defined(QBINFER_X86_64_KERNELS)
    {Isa::kAvx2, &kConv2DKernels__avx2},
    {Isa::kAvx512, &kConv2DKernels__avx512},
#endif
#if defined(QBINFER_NEON_KERNELS)
    {Isa::kNeon, &kConv2DKernels__neon},
#endif
};

}  // namespace

const Conv2DKernels* conv2d_kernels_for(Isa isa) { return best_variant(kVariants, isa); }

const Conv2DKernels* const* conv2d_kernel_variants(std::size_t* count) {
  return runnable_variants(kVariants, count);
}

const Conv2DKernels* const* conv2d_compiled_kernel_variants(std::size_t* count) {
  return compiled_variants(kVariants, count);
}

}  // namespace qbinfer
