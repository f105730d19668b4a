// Pooling, NHWC floats. (Channel concatenation is its own family: kernels/concat.)
#pragma once

#include <algorithm>
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

// Average pool with padding, floor or ceil mode and PyTorch's two divisors (AVGPOOL2D,
// docs/format.md). Window (oy, ox) starts at padded row ys = oy·stride_h (input row ys −
// pad_top) and covers kernel_h rows, clipped to the input for the sum; the columns likewise.
// Divisor: count_include_pad false, the input pixels covered; true, the window clipped to the
// padded input, (min(ys + kernel_h, pad_top + in_height + pad_bottom) − ys) times the same for
// columns. The caller guarantees every window covers an input pixel (ops.cc: pads < kernel,
// no window starting past the input), so no divisor is 0.
// Numerics as the average pool above: per channel an f32 sum from +0.0 of the covered input
// pixels, rows then columns, then one rounded division by float(divisor); the padding is not
// added (+0.0 added to a sum that starts at +0.0 changes nothing). Bit-identical across variants.
struct AvgPool2DShape {
  std::size_t in_height, in_width, channels;
  std::size_t kernel_h, kernel_w, stride_h, stride_w;
  std::size_t pad_top, pad_left, pad_bottom, pad_right;
  std::size_t out_height, out_width;
  bool count_include_pad;
};
void avgpool2d_f32_nhwc__reference(const AvgPool2DShape& shape, const float* in, float* out);
// The same over output rows [y_begin, y_end) only (in and out the whole image's bases).
void avgpool2d_f32_nhwc_rows__reference(const AvgPool2DShape& shape, const float* in,
                                        std::size_t y_begin, std::size_t y_end, float* out);

// One window's input rows [y0, y1) (or columns) and divisor factor, shared by every variant so
// that they agree on the windows: `o` the output index, `size` the input size, `pad_a` /
// `pad_b` the pads before / after, `kernel`, `stride`.
struct PoolSpan {
  std::size_t begin, end, divisor;
};
// Output index o's window [o·stride − pad_a, + kernel) clipped to the input's [0, size), in
// unsigned-safe arithmetic (the window's start is computed in padded coordinates). The one
// place both pools (and every ISA's variant) take their window bounds from.
inline PoolSpan pool_window(std::size_t o, std::size_t size, std::size_t pad_a, std::size_t kernel,
                            std::size_t stride) {
  const std::size_t start = o * stride;
  const std::size_t stop = start + kernel;
  const std::size_t begin = start > pad_a ? start - pad_a : 0;
  const std::size_t end = std::min(stop > pad_a ? stop - pad_a : 0, size);
  return PoolSpan{begin, end, end - begin};
}
inline PoolSpan avgpool2d_span(std::size_t o, std::size_t size, std::size_t pad_a,
                               std::size_t pad_b, std::size_t kernel, std::size_t stride,
                               bool count_include_pad) {
  PoolSpan span = pool_window(o, size, pad_a, kernel, stride);
  if (count_include_pad) {
    const std::size_t start = o * stride;
    span.divisor = std::min(start + kernel, pad_a + size + pad_b) - start;
  }
  return span;
}

struct PoolKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*avgpool)(const AvgPoolShape& shape, const float* in, float* out);
  void (*global_avgpool)(const float* in, std::size_t pixels, std::size_t channels, float* out);
  void (*avgpool_rows)(const AvgPoolShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out);
  void (*maxpool)(const MaxPoolShape& shape, const float* in, float* out);
  void (*maxpool_rows)(const MaxPoolShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out);
  void (*avgpool2d)(const AvgPool2DShape& shape, const float* in, float* out);
  void (*avgpool2d_rows)(const AvgPool2DShape& shape, const float* in, std::size_t y_begin,
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
