// RESIZE (docs/format.md): nearest or bilinear resampling of an NHWC float map to another
// height and width, as ONNX Resize / PyTorch's F.interpolate compute it. Separable: each output
// row reads one (nearest) or two (bilinear) input rows, each output column one or two input
// columns, with weights that depend on the axis only.
//
// Source coordinates, per axis (ratio r = input pixels per output pixel, an f32 computed by
// the converter as PyTorch does: align_corners (n - 1) / (m - 1), else 1 / scale_factor or
// n / m), for output pixel o of an axis of n input pixels, in f32 (-ffp-contract=off: every
// multiply and add rounds):
//   nearest   i = min(floor(r * o), n - 1)              (corner: PyTorch's "nearest")
//             i = min(floor(r * (o + 0.5)), n - 1)      (half_pixel: "nearest-exact")
//   bilinear  s = r * o                                 (corner: align_corners=True)
//             s = max(r * (o + 0.5) - 0.5, 0)           (half_pixel: align_corners=False)
//             i0 = min(floor(s), n - 1); i1 = min(i0 + 1, n - 1);
//             l1 = min(max(s - i0, 0), 1); l0 = 1 - l1
// resize_axis() below computes these once for every variant (a scalar inline function, so all
// ISAs get the same indices and weights).
//
// Exact numerics (every variant bit-identical to the reference): bilinear, per output value,
// with a = x[i0y][i0x], b = x[i0y][i1x], c = x[i1y][i0x], e = x[i1y][i1x]:
//   top = a * l0x + b * l1x     (or a alone when i1x == i0x)
//   bot = c * l0x + e * l1x     (or c alone when i1x == i0x)
//   out = top * l0y + bot * l1y (or top alone when i1y == i0y)
// each product and sum rounded once, in that order. A collapsed pair reads its one pixel
// unweighted, so a 1 x 1 input is broadcast exactly (the ASPP image-pooling branch). Nearest
// copies input values.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qbinfer/isa.h"

namespace qbinfer {

struct ResizeShape {
  std::size_t in_height;
  std::size_t in_width;
  std::size_t channels;
  std::size_t out_height;
  std::size_t out_width;
  bool bilinear;    // else nearest
  bool half_pixel;  // else corner
  float ratio_h;    // input pixels per output pixel, finite and >= 0
  float ratio_w;
};

// One output pixel's source along one axis: input pixels i0 and i1 with weights l0 and l1
// (nearest: i1 = i0, l0 = 1, l1 = 0). `collapsed`: i1 == i0, read i0 alone.
struct ResizeTap {
  std::size_t i0;
  std::size_t i1;
  float l0;
  float l1;
  bool collapsed;
};

inline ResizeTap resize_axis(float ratio, std::size_t o, std::size_t n, bool bilinear,
                             bool half_pixel) {
  const float of = static_cast<float>(o);
  const std::size_t last = n - 1;
  if (!bilinear) {
    const float s = half_pixel ? ratio * (of + 0.5f) : ratio * of;
    // s >= 0 and finite; compared in float before the conversion so a huge s cannot overflow
    const float fl = std::floor(s);
    const std::size_t i = fl >= static_cast<float>(last) ? last : static_cast<std::size_t>(fl);
    return {i, i, 1.0f, 0.0f, true};
  }
  float s = half_pixel ? ratio * (of + 0.5f) - 0.5f : ratio * of;
  if (!(s > 0.0f)) s = 0.0f;
  const float fl = std::floor(s);
  const std::size_t i0 = fl >= static_cast<float>(last) ? last : static_cast<std::size_t>(fl);
  const std::size_t i1 = i0 < last ? i0 + 1 : last;
  float l1 = s - static_cast<float>(i0);
  l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  return {i0, i1, 1.0f - l1, l1, i1 == i0};
}

// The oracle: output rows [y_begin, y_end) of the whole image `out` from the whole image `in`.
void resize_rows__reference(const ResizeShape& shape, const float* in, std::size_t y_begin,
                            std::size_t y_end, float* out);

// One ISA's resize. run_rows(shape, in, y_begin, y_end, out): output rows [y_begin, y_end)
// (in and out the whole images' bases); pure, so disjoint row ranges may run concurrently.
struct ResizeKernels {
  const char* isa;
  void (*run_rows)(const ResizeShape& shape, const float* in, std::size_t y_begin,
                   std::size_t y_end, float* out);
};

// The resize kernels of `isa` if this build has them and this CPU runs them, else nullptr
// (kScalar: always the reference).
const ResizeKernels* resize_kernels_for(Isa isa);
// Every variant this build has and this CPU runs, scalar first.
const ResizeKernels* const* resize_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not.
const ResizeKernels* const* resize_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
