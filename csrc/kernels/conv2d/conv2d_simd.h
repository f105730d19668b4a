// The dense float conv (the stem) written once over a vector-traits type V
// (kernels/simd/vec_*.h), instantiated by conv2d_avx2.cc and conv2d_avx512.cc (internal
// linkage throughout).
//
// Layout: packed weights [kh][kw][Ci][Co rounded up to V::kLanes], zero-filled, so one vector
// load gives a tap's weights for kLanes output channels. Tile: one output row, one block of
// kLanes output channels, kPixels (8) neighbouring output pixels: 8 accumulators, each tap one
// weight load and 8 multiply-adds with the input broadcast from memory. Pixels whose window
// crosses the left/right padding run one at a time, skipping the padded taps; rows in the
// padding are skipped for the whole row.
//
// Bit-exact with the reference: a lane is one output channel and sums its taps in the
// reference's order (ky, kx, c) from 0.0f as fmadd(x, w, acc) (std::fma's rounding), then adds the
// bias, so the stem's output does not depend on the ISA (a rounding difference here could flip a
// sign further down the network).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstring>

#include "kernels/conv2d/conv2d.h"

namespace qbinfer {
namespace {

template <class V>
struct Conv2DSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;
  static constexpr std::size_t kPixels = 8;

  static std::size_t padded_out(std::size_t co) { return (co + N - 1) / N * N; }

  static std::size_t packed_bytes(const Conv2DShape& s) {
    const std::size_t floats = s.kernel_h * s.kernel_w * s.in_channels * padded_out(s.out_channels);
    return (floats * sizeof(float) + 63) / 64 * 64;
  }

  static void pack(const Conv2DShape& s, const float* weight, void* packed) {
    std::memset(packed, 0, packed_bytes(s));
    float* p = static_cast<float*>(packed);
    const std::size_t cop = padded_out(s.out_channels);
    const std::size_t taps = s.kernel_h * s.kernel_w * s.in_channels;  // [ky][kx][ci]
    for (std::size_t o = 0; o < s.out_channels; ++o) {
      for (std::size_t t = 0; t < taps; ++t) p[t * cop + o] = weight[o * taps + t];
    }
  }

  struct Row {
    const Conv2DShape* s;
    const float* in;
    const float* w;  // packed + block start
    std::size_t cop;
    std::size_t ky_begin, ky_end;
    std::ptrdiff_t iy0;  // input row of ky = 0
    F bias;
    bool relu;
  };

  template <bool Tail>
  static void store(const Row& r, F acc, float* out, M m) {
    F y = V::add(acc, r.bias);
    if (r.relu) y = V::relu(y);
    if constexpr (Tail) {
      V::store(out, y, m);
    } else {
      V::store(out, y);
    }
  }

  // kPixels pixels starting at input column ix0 (every tap of every pixel inside the image).
  // For one kernel row, a pixel's taps (kx, c) are kernel_w * in_channels consecutive floats in
  // NHWC, and so are their packed weights: one loop over kRowTaps, pixels kStep floats apart.
  // kRowTaps / kStep of 0 mean run-time values; the stem (3x3, 3 channels, stride 2) gets
  // compile-time ones, so every broadcast is one base register plus a constant offset.
  template <bool Tail, std::size_t kRowTaps, std::size_t kStep>
  static void pixels_block(const Row& r, std::size_t ix0, float* out, std::size_t out_stride, M m) {
    const Conv2DShape& s = *r.s;
    const std::size_t ci = s.in_channels;
    const std::size_t row_taps = kRowTaps != 0 ? kRowTaps : s.kernel_w * ci;
    const std::size_t step = kStep != 0 ? kStep : s.stride_w * ci;
    F acc[kPixels];
    for (std::size_t p = 0; p < kPixels; ++p) acc[p] = V::zero();
    for (std::size_t ky = r.ky_begin; ky < r.ky_end; ++ky) {
      const float* a =
          r.in +
          static_cast<std::size_t>(r.iy0 + static_cast<std::ptrdiff_t>(ky)) * s.in_width * ci +
          ix0 * ci;
      const float* w = r.w + ky * row_taps * r.cop;
      for (std::size_t t = 0; t < row_taps; ++t) {
        const F wv = V::load(w + t * r.cop);
        for (std::size_t p = 0; p < kPixels; ++p) {
          acc[p] = V::fmadd(V::set1(a[p * step + t]), wv, acc[p]);
        }
      }
    }
    for (std::size_t p = 0; p < kPixels; ++p) store<Tail>(r, acc[p], out + p * out_stride, m);
  }

  // One pixel whose window may cross the left/right padding.
  template <bool Tail>
  static void pixel_edge(const Row& r, std::ptrdiff_t ix0, float* out, M m) {
    const Conv2DShape& s = *r.s;
    const std::size_t ci = s.in_channels;
    const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(s.in_width);
    F acc = V::zero();
    for (std::size_t ky = r.ky_begin; ky < r.ky_end; ++ky) {
      const float* in_row =
          r.in +
          static_cast<std::size_t>(r.iy0 + static_cast<std::ptrdiff_t>(ky)) * s.in_width * ci;
      for (std::size_t kx = 0; kx < s.kernel_w; ++kx) {
        const std::ptrdiff_t ix = ix0 + static_cast<std::ptrdiff_t>(kx);
        if (ix < 0 || ix >= width) continue;
        const float* a = in_row + static_cast<std::size_t>(ix) * ci;
        const float* w = r.w + (ky * s.kernel_w + kx) * ci * r.cop;
        for (std::size_t c = 0; c < ci; ++c) {
          acc = V::fmadd(V::set1(a[c]), V::load(w + c * r.cop), acc);
        }
      }
    }
    store<Tail>(r, acc, out, m);
  }

  template <bool Tail>
  static void row_block(const Row& r, float* out_row, M m) {
    const Conv2DShape& s = *r.s;
    const std::size_t co = s.out_channels;
    const std::ptrdiff_t pl = static_cast<std::ptrdiff_t>(s.pad_left);
    const std::ptrdiff_t sw = static_cast<std::ptrdiff_t>(s.stride_w);
    // Interior pixels: ox * sw - pl >= 0 and ox * sw - pl + kw <= W.
    const std::size_t ox_lo = std::min(s.out_width, (s.pad_left + s.stride_w - 1) / s.stride_w);
    const std::ptrdiff_t last =
        static_cast<std::ptrdiff_t>(s.in_width) + pl - static_cast<std::ptrdiff_t>(s.kernel_w);
    const std::size_t ox_hi =
        last < 0 ? ox_lo
                 : std::max(ox_lo, std::min(s.out_width, static_cast<std::size_t>(last / sw) + 1));
    std::size_t ox = 0;
    for (; ox < ox_lo; ++ox) {
      pixel_edge<Tail>(r, static_cast<std::ptrdiff_t>(ox) * sw - pl, out_row + ox * co, m);
    }
    const bool stem = s.kernel_w * s.in_channels == 9 && s.stride_w * s.in_channels == 6;
    for (; ox + kPixels <= ox_hi; ox += kPixels) {
      const std::size_t ix0 = ox * s.stride_w - s.pad_left;
      if (stem) {
        pixels_block<Tail, 9, 6>(r, ix0, out_row + ox * co, co, m);
      } else {
        pixels_block<Tail, 0, 0>(r, ix0, out_row + ox * co, co, m);
      }
    }
    for (; ox < s.out_width; ++ox) {
      pixel_edge<Tail>(r, static_cast<std::ptrdiff_t>(ox) * sw - pl, out_row + ox * co, m);
    }
  }

  static void run_rows(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                       bool relu, std::size_t y_begin, std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    const std::size_t cop = padded_out(s.out_channels);
    const std::size_t full = s.out_channels / N * N;
    const M tail_m = V::mask(s.out_channels - full);
    const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(s.in_height);
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const std::ptrdiff_t iy0 =
          static_cast<std::ptrdiff_t>(oy * s.stride_h) - static_cast<std::ptrdiff_t>(s.pad_top);
      Row r{&s, in, nullptr, cop, 0, 0, iy0, V::zero(), relu};
      r.ky_begin = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, -iy0));
      r.ky_end = static_cast<std::size_t>(std::max<std::ptrdiff_t>(
          0, std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(s.kernel_h), height - iy0)));
      r.ky_end = std::max(r.ky_end, r.ky_begin);
      float* out_row = out + oy * s.out_width * s.out_channels;
      for (std::size_t o0 = 0; o0 < s.out_channels; o0 += N) {
        r.w = static_cast<const float*>(packed) + o0;
        if (o0 < full) {
          r.bias = V::load(bias + o0);
          row_block<false>(r, out_row + o0, tail_m);
        } else {
          r.bias = V::load(bias + o0, tail_m);
          row_block<true>(r, out_row + o0, tail_m);
        }
      }
    }
  }
};

}  // namespace
}  // namespace qbinfer
