// Pooling, NHWC floats. (Channel concatenation is its own family: kernels/concat.)
#pragma once

#include <cstddef>

#include "qbinfer/isa.h"

namespace qbinfer {

// Average pool, no padding, ceil mode: out_h = ceil((in_h - kernel_h) / stride_h) + 1 (and the
// same for w); every window averages only the input pixels it covers (PyTorch's
// ceil_mode=True, count_include_pad=False). Requires in_h >= kernel_h, in_w >= kernel_w.
struct AvgPoolShape {
  std::size_t in_height, in_width, channels;
  std::size_t kernel_h, kernel_w, stride_h, stride_w;
  std::size_t out_height, out_width;
};
void avgpool_f32_nhwc__reference(const AvgPoolShape& shape, const float* in, float* out);
// The same over output rows [y_begin, y_end) only (in and out the whole image's bases).
void avgpool_f32_nhwc_rows__reference(const AvgPoolShape& shape, const float* in,
                                      std::size_t y_begin, std::size_t y_end, float* out);

// Mean over all pixels: out has `channels` floats.
void global_avgpool_f32_nhwc__reference(const float* in, std::size_t pixels, std::size_t channels,
                                        float* out);

// Numerics: every window sums its pixels rows then columns, in order, in f32, from 0.0f, then
// divides by the pixel count (one rounded division); the global pool sums pixels in order and
// divides by `pixels`. SIMD variants vectorize over channels and keep that order per channel,
// so all pools are bit-identical to the reference.
// Max pool numerics: per channel, starting from −inf, the window's pixels in order (rows, then
// columns) and a pixel replaces the running max when it is greater, or when it is NaN and the
// running max is not. So the result is the window's maximum, ties (+0 / −0 included) keep the
// earlier pixel, and a window with a NaN gives its first NaN, payload and sign kept; every
// variant applies the same rule in the same order, so all are bit-identical to the reference.
// Max pool, floor mode, with padding that never wins (it acts as −inf): window (oy, ox) covers
// input rows [oy·stride_h − pad_top, + kernel_h) and columns [ox·stride_w − pad_left, +
// kernel_w), clipped to the image. The caller guarantees every window holds at least one input
// pixel (ops.cc: pads < kernel, no window starting in the bottom/right padding), so bottom and
// right padding are implied by out_height / out_width (ceil mode is a larger pad there).
struct MaxPoolShape {
  std::size_t in_height, in_width, channels;
  std::size_t kernel_h, kernel_w, stride_h, stride_w;
  std::size_t pad_top, pad_left;
  std::size_t out_height, out_width;
};
void maxpool_f32_nhwc__reference(const MaxPoolShape& shape, const float* in, float* out);
// The same over output rows [y_begin, y_end) only (in and out the whole image's bases).
void maxpool_f32_nhwc_rows__reference(const MaxPoolShape& shape, const float* in,
                                      std::size_t y_begin, std::size_t y_end, float* out);

struct PoolKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*avgpool)(const AvgPoolShape& shape, const float* in, float* out);
  void (*global_avgpool)(const float* in, std::size_t pixels, std::size_t channels, float* out);
  void (*avgpool_rows)(const AvgPoolShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out);
  void (*maxpool)(const MaxPoolShape& shape, const float* in, float* out);
  void (*maxpool_rows)(const MaxPoolShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out);
};

// The pool kernels of `isa` if this build has them and this CPU runs them, else nullptr.
// kScalar is always there (the references).
const PoolKernels* pool_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const PoolKernels* const* pool_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const PoolKernels* const* pool_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
