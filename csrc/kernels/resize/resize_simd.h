// RESIZE written once over a vector-traits type V (kernels/simd/vec_*.h), instantiated by
// resize_avx2.cc and resize_neon.cc. Internal linkage: each ISA file gets its own copy.
//
// Tile: one output pixel, V::kLanes channels at a time (a masked load and store for the tail:
// nothing outside the image is read or written). The row's taps are computed once per row and
// the column's once per pixel by resize_axis (scalar, shared with the reference). Nearest, and
// a bilinear pixel whose both axes collapse (every pixel of a 1 x 1 input: the ASPP
// image-pooling broadcast), copy the source pixel with memcpy. Bit-identical to the reference:
// the same rounded products and sums per lane, in its order.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstring>

#include "kernels/resize/resize.h"

namespace qbinfer {
namespace {

template <class V>
struct ResizeSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  // out[k] = a[k] * l0 + b[k] * l1 over `c` channels
  static void lerp(const float* a, const float* b, float l0, float l1, std::size_t c, float* out) {
    const F w0 = V::set1(l0), w1 = V::set1(l1);
    std::size_t k = 0;
    for (; k + N <= c; k += N) {
      V::store(out + k, V::add(V::mul(V::load(a + k), w0), V::mul(V::load(b + k), w1)));
    }
    if (k < c) {
      const M m = V::mask(c - k);
      V::store(out + k, V::add(V::mul(V::load(a + k, m), w0), V::mul(V::load(b + k, m), w1)), m);
    }
  }

  // out = (a * l0x + b * l1x) * l0y + (cc * l0x + e * l1x) * l1y, per channel
  static void bilerp(const float* a, const float* b, const float* cc, const float* e,
                     const ResizeTap& tx, const ResizeTap& ty, std::size_t c, float* out) {
    const F x0 = V::set1(tx.l0), x1 = V::set1(tx.l1);
    const F y0 = V::set1(ty.l0), y1 = V::set1(ty.l1);
    std::size_t k = 0;
    for (; k + N <= c; k += N) {
      const F top = V::add(V::mul(V::load(a + k), x0), V::mul(V::load(b + k), x1));
      const F bot = V::add(V::mul(V::load(cc + k), x0), V::mul(V::load(e + k), x1));
      V::store(out + k, V::add(V::mul(top, y0), V::mul(bot, y1)));
    }
    if (k < c) {
      const M m = V::mask(c - k);
      const F top = V::add(V::mul(V::load(a + k, m), x0), V::mul(V::load(b + k, m), x1));
      const F bot = V::add(V::mul(V::load(cc + k, m), x0), V::mul(V::load(e + k, m), x1));
      V::store(out + k, V::add(V::mul(top, y0), V::mul(bot, y1)), m);
    }
  }

  static void run_rows(const ResizeShape& s, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    const std::size_t c = s.channels;
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const ResizeTap ty = resize_axis(s.ratio_h, oy, s.in_height, s.bilinear, s.half_pixel);
      const float* row0 = in + ty.i0 * s.in_width * c;
      const float* row1 = in + ty.i1 * s.in_width * c;
      float* out_row = out + oy * s.out_width * c;
      for (std::size_t ox = 0; ox < s.out_width; ++ox) {
        const ResizeTap tx = resize_axis(s.ratio_w, ox, s.in_width, s.bilinear, s.half_pixel);
        float* dst = out_row + ox * c;
        if (tx.collapsed && ty.collapsed) {
          std::memcpy(dst, row0 + tx.i0 * c, c * sizeof(float));
        } else if (tx.collapsed) {  // top = a, bot = cc
          lerp(row0 + tx.i0 * c, row1 + tx.i0 * c, ty.l0, ty.l1, c, dst);
        } else if (ty.collapsed) {  // out = top
          lerp(row0 + tx.i0 * c, row0 + tx.i1 * c, tx.l0, tx.l1, c, dst);
        } else {
          bilerp(row0 + tx.i0 * c, row0 + tx.i1 * c, row1 + tx.i0 * c, row1 + tx.i1 * c, tx, ty, c,
                 dst);
        }
      }
    }
  }
};

}  // namespace
}  // namespace qbinfer
