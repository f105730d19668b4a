// Dense float convolution (the stems, the pointwise and expansion 1x1 convs of FP32 networks,
// 1x1 shortcuts), NHWC, zero padding.
//   in      in_height * in_width * in_channels floats.
//   weight  out_channels * kernel_h * kernel_w * in_channels floats ([o][ky][kx][c]).
//   bias    out_channels floats (never null; zeros when the model has none).
//   out     out_height * out_width * out_channels floats, then max(0, .) when relu.
//   out_h = (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1.
//
// Exact numerics (shared by every variant, so all are bit-identical to the reference): per
// output value, acc = 0.0f, then for ky, kx, c in that order, over the taps inside the image only
// (a tap in the padding is skipped, not added as 0 * w): acc = fma(in, w, acc), one fused
// multiply-add with a single rounding (std::fma; every target has the instruction, and the
// scalar path calls std::fma, so all variants agree); then y = acc + bias[o]; out = relu && y < 0 ?
// 0 : y (NaN propagates). SIMD variants vectorize over output channels, one lane per channel, which
// keeps that order whatever the vector width. (The stem feeds every sign in the network: an ISA
// dependent rounding here could flip one.)
#pragma once

#include <cstddef>

#include "qbinfer/isa.h"

namespace qbinfer {

struct Conv2DShape {
  std::size_t in_height, in_width, in_channels;
  std::size_t out_channels, kernel_h, kernel_w;
  std::size_t stride_h, stride_w;
  std::size_t pad_top, pad_left, pad_bottom, pad_right;
  std::size_t out_height, out_width;
};

void conv2d_f32_nhwc__reference(const Conv2DShape& shape, const float* in, const float* weight,
                                const float* bias, bool relu, float* out);

// The same oracle over output rows [y_begin, y_end) only.
void conv2d_f32_nhwc_rows__reference(const Conv2DShape& shape, const float* in, const float* weight,
                                     const float* bias, bool relu, std::size_t y_begin,
                                     std::size_t y_end, float* out);

// CLIP(lo, hi) in place over output rows [y_begin, y_end) (run_rows_clip below), portable.
void conv2d_clip_rows__reference(const Conv2DShape& shape, float lo, float hi, std::size_t y_begin,
                                 std::size_t y_end, float* out);

// One ISA's dense conv: weights repacked once at load, then any split of output rows.
//   packed_bytes(shape)          size of the packed blob (a multiple of 64, > 0); depends on
//                                out_channels, kernel and in_channels only.
//   pack(shape, weight, packed)  weight in the file layout [Co][kh][kw][Ci]; packed 64-byte
//                                aligned. (SIMD variants store [kh][kw][Ci][Co rounded up to
//                                their vector width], zero-filled.) Bit-identical to the
//                                reference.
//   run_rows(shape, in, packed, bias, relu, y_begin, y_end, out)
//                                writes output rows [y_begin, y_end) of the image (in and out
//                                are the whole image's bases); reads nothing past the input.
//                                Pure: disjoint row ranges may run concurrently.
//   run_rows_clip(..., relu, lo, hi, ...)
//                                run_rows, then CLIP(lo, hi) on every value it wrote, as
//                                elementwise.h's clip: v < lo ? lo : (v > hi ? hi : v), NaN
//                                passing through (lo <= hi, neither NaN). The engine's
//                                CONV2D -> CLIP chain (ReLU6): bit-identical to run_rows and
//                                then the CLIP op, without the second pass over the output.
struct Conv2DKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  std::size_t (*packed_bytes)(const Conv2DShape& shape);
  void (*pack)(const Conv2DShape& shape, const float* weight, void* packed);
  void (*run_rows)(const Conv2DShape& shape, const float* in, const void* packed, const float* bias,
                   bool relu, std::size_t y_begin, std::size_t y_end, float* out);
  void (*run_rows_clip)(const Conv2DShape& shape, const float* in, const void* packed,
                        const float* bias, bool relu, float lo, float hi, std::size_t y_begin,
                        std::size_t y_end, float* out);
};

// The dense conv of `isa` if this build has it and this CPU runs it, else nullptr. kScalar is
// always there: the reference with the file layout as its packed layout (pack copies).
const Conv2DKernels* conv2d_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const Conv2DKernels* const* conv2d_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const Conv2DKernels* const* conv2d_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
