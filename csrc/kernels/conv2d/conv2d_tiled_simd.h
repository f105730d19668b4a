// The dense float conv with two-dimensional register tiles, written once over a vector-traits
// type V (kernels/simd/vec_*.h), instantiated by conv2d_avx2.cc and conv2d_neon.cc (internal
// linkage throughout). conv2d_avx512.cc keeps conv2d_simd.h's one-block tiles: this machine has
// no AVX-512 to test or time a change there.
//
// The pointwise shapes (1x1, unpadded) do not come here: conv2d_pointwise_gemm.h runs them.
//
// Same packed layout as conv2d_simd.h ([kh][kw][Ci][Co rounded up to V::kLanes], zero-filled;
// its packed_bytes and pack are reused). What changes is the tile, so that the FMA units, not
// the loads or one FMA's latency, bound the conv:
//   - interior pixels (window inside the image horizontally): kBlocks blocks of kLanes output
//     channels times kPixels neighbouring output pixels, kBlocks * kPixels independent
//     accumulators (AVX2: 2 x 4; NEON: 2 x 6); per tap kBlocks weight loads and kPixels
//     broadcasts feed kBlocks * kPixels FMAs;
//   - every other pixel (window crossing the left/right padding, or the last pixels of a row
//     that fill no tile): one pixel, up to kEdgeBlocks channel blocks at once (kEdgeBlocks
//     accumulators instead of one), skipping the padded taps.
// Output rows whose window crosses the top/bottom padding skip those kernel rows, as before.
// Channel blocks are the outer loop inside a row, so a block pair's weights stay in L1 while
// the row's pixels stream past them.
//
// Bit-exact with the reference: a lane is one output channel of one pixel and sums its taps in
// the reference's order (ky, kx, c) from 0.0f as fmadd(x, w, acc) (std::fma's rounding), then
// adds the bias, whatever the tile; lanes past out_channels (zero weights) are never stored.
//
// RowTaps (void by default: the generic loop above) lets a target run one kernel row of a tile
// with compile-time taps its own way, same sums in the same order: conv2d_neon.cc's AArch64
// stem row loads the row's inputs as vectors and multiplies by lane (FMLA by element) instead
// of a broadcast load per pixel and tap, which the A72's one load port could not keep up with.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <type_traits>

#include "kernels/conv2d/conv2d.h"
#include "kernels/conv2d/conv2d_simd.h"

namespace qbinfer {
namespace {

template <class V, std::size_t kBlocks, std::size_t kPixels, std::size_t kEdgeBlocks,
          class RowTaps = void>
struct Conv2DTiledSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  static std::size_t packed_bytes(const Conv2DShape& s) { return Conv2DSimd<V>::packed_bytes(s); }
  static void pack(const Conv2DShape& s, const float* weight, void* packed) {
    Conv2DSimd<V>::pack(s, weight, packed);
  }

  // One output row: the kernel rows inside the image and what every tile of it shares.
  struct Row {
    const Conv2DShape* s;
    const float* in;
    const float* packed;
    const float* bias;
    std::size_t cop;               // padded output channels: the packed row stride
    std::size_t ky_begin, ky_end;  // kernel rows inside the image
    std::ptrdiff_t iy0;            // input row of ky = 0
    std::size_t tail_block;        // index of a partial last block, or SIZE_MAX
    M tail_mask;
    bool relu;
  };

  // Adds the bias of block `block` (masked for a partial last block, whose bias lanes past
  // out_channels do not exist), applies the ReLU and stores.
  static void finish(const Row& r, std::size_t block, F acc, float* out) {
    const std::size_t o0 = block * N;
    const bool tail = block == r.tail_block;
    F y = V::add(acc, tail ? V::load(r.bias + o0, r.tail_mask) : V::load(r.bias + o0));
    if (r.relu) y = V::relu(y);
    if (tail) {
      V::store(out + o0, y, r.tail_mask);
    } else {
      V::store(out + o0, y);
    }
  }

  static const float* in_row(const Row& r, std::size_t ky) {
    const Conv2DShape& s = *r.s;
    return r.in + static_cast<std::size_t>(r.iy0 + static_cast<std::ptrdiff_t>(ky)) * s.in_width *
                      s.in_channels;
  }

  // Whether RowTaps runs the kernel rows of this tile (never when it is void).
  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static constexpr bool target_row() {
    if constexpr (std::is_void_v<RowTaps>) {
      return false;
    } else {
      return RowTaps::template kTakes<B, P, kRowTaps, kStep>;
    }
  }
  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static constexpr bool kTargetRow = target_row<B, P, kRowTaps, kStep>();

  // B blocks from `block` times P pixels from input column ix0 (every tap of every pixel inside
  // the image horizontally). For one kernel row, a pixel's taps (kx, c) are kernel_w *
  // in_channels consecutive floats in NHWC, and so are their packed weights: one loop over
  // kRowTaps, pixels kStep floats apart. kRowTaps / kStep of 0 mean run-time values; the stems
  // (3x3 and 7x7, 3 channels, stride 2) get compile-time ones.
  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static void tile(const Row& r, std::size_t block, std::size_t ix0, float* out) {
    const Conv2DShape& s = *r.s;
    const std::size_t ci = s.in_channels;
    const std::size_t row_taps = kRowTaps != 0 ? kRowTaps : s.kernel_w * ci;
    const std::size_t step = kStep != 0 ? kStep : s.stride_w * ci;
    const std::size_t cop = r.cop;
    F acc[B][P];
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t p = 0; p < P; ++p) acc[b][p] = V::zero();
    }
    for (std::size_t ky = r.ky_begin; ky < r.ky_end; ++ky) {
      const float* a = in_row(r, ky) + ix0 * ci;
      const float* w = r.packed + ky * row_taps * cop + block * N;
      if constexpr (kTargetRow<B, P, kRowTaps, kStep>) {
        RowTaps::template row<B, P, kRowTaps, kStep>(a, w, cop, acc);
        continue;
      }
      for (std::size_t t = 0; t < row_taps; ++t) {
        F wv[B];
        for (std::size_t b = 0; b < B; ++b) wv[b] = V::load(w + t * cop + b * N);
        for (std::size_t p = 0; p < P; ++p) {
          const F x = V::set1(a[p * step + t]);
          for (std::size_t b = 0; b < B; ++b) acc[b][p] = V::fmadd(x, wv[b], acc[b][p]);
        }
      }
    }
    const std::size_t co = s.out_channels;
    for (std::size_t p = 0; p < P; ++p) {
      for (std::size_t b = 0; b < B; ++b) finish(r, block + b, acc[b][p], out + p * co);
    }
  }

  // One pixel whose window starts at input column ix0 (it may cross the left/right padding:
  // those taps are skipped), blocks [block, block + B).
  template <std::size_t B>
  static void pixel(const Row& r, std::size_t block, std::ptrdiff_t ix0, float* out) {
    const Conv2DShape& s = *r.s;
    const std::size_t ci = s.in_channels;
    const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(s.in_width);
    const std::size_t cop = r.cop;
    F acc[B];
    for (std::size_t b = 0; b < B; ++b) acc[b] = V::zero();
    for (std::size_t ky = r.ky_begin; ky < r.ky_end; ++ky) {
      const float* row = in_row(r, ky);
      for (std::size_t kx = 0; kx < s.kernel_w; ++kx) {
        const std::ptrdiff_t ix = ix0 + static_cast<std::ptrdiff_t>(kx);
        if (ix < 0 || ix >= width) continue;
        const float* a = row + static_cast<std::size_t>(ix) * ci;
        const float* w = r.packed + (ky * s.kernel_w + kx) * ci * cop + block * N;
        for (std::size_t c = 0; c < ci; ++c) {
          const F x = V::set1(a[c]);
          for (std::size_t b = 0; b < B; ++b) {
            acc[b] = V::fmadd(x, V::load(w + c * cop + b * N), acc[b]);
          }
        }
      }
    }
    for (std::size_t b = 0; b < B; ++b) finish(r, block + b, acc[b], out);
  }

  // Every channel block of one pixel, kEdgeBlocks at a time, then the rest one block each.
  static void pixel_all_blocks(const Row& r, std::size_t blocks, std::ptrdiff_t ix0, float* out) {
    std::size_t b = 0;
    for (; b + kEdgeBlocks <= blocks; b += kEdgeBlocks) pixel<kEdgeBlocks>(r, b, ix0, out);
    if constexpr (kEdgeBlocks > 4) {
      for (; b + 4 <= blocks; b += 4) pixel<4>(r, b, ix0, out);
    }
    if constexpr (kEdgeBlocks > 2) {
      for (; b + 2 <= blocks; b += 2) pixel<2>(r, b, ix0, out);
    }
    for (; b < blocks; ++b) pixel<1>(r, b, ix0, out);
  }

  template <std::size_t kRowTaps, std::size_t kStep>
  static void interior(const Row& r, std::size_t blocks, std::size_t ox_lo, std::size_t tiles_end,
                       float* out_row) {
    const Conv2DShape& s = *r.s;
    const std::size_t co = s.out_channels;
    std::size_t b = 0;
    for (; b + kBlocks <= blocks; b += kBlocks) {
      for (std::size_t ox = ox_lo; ox < tiles_end; ox += kPixels) {
        tile<kBlocks, kPixels, kRowTaps, kStep>(r, b, ox * s.stride_w - s.pad_left,
                                                out_row + ox * co);
      }
    }
    for (; b < blocks; ++b) {
      for (std::size_t ox = ox_lo; ox < tiles_end; ox += kPixels) {
        tile<1, kPixels, kRowTaps, kStep>(r, b, ox * s.stride_w - s.pad_left, out_row + ox * co);
      }
    }
  }

  static void run_rows(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                       bool relu, std::size_t y_begin, std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    const std::size_t cop = (s.out_channels + N - 1) / N * N;
    const std::size_t blocks = cop / N;
    const std::size_t co = s.out_channels;
    const bool has_tail = co % N != 0;
    const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(s.in_height);
    const std::ptrdiff_t pl = static_cast<std::ptrdiff_t>(s.pad_left);
    const std::ptrdiff_t sw = static_cast<std::ptrdiff_t>(s.stride_w);
    // Interior pixels: ox * sw - pl >= 0 and ox * sw - pl + kw <= W.
    const std::size_t ox_lo = std::min(s.out_width, (s.pad_left + s.stride_w - 1) / s.stride_w);
    const std::ptrdiff_t last =
        static_cast<std::ptrdiff_t>(s.in_width) + pl - static_cast<std::ptrdiff_t>(s.kernel_w);
    const std::size_t ox_hi =
        last < 0 ? ox_lo
                 : std::max(ox_lo, std::min(s.out_width, static_cast<std::size_t>(last / sw) + 1));
    const std::size_t tiles_end = ox_lo + (ox_hi - ox_lo) / kPixels * kPixels;
    const std::size_t row_taps = s.kernel_w * s.in_channels;
    const std::size_t step = s.stride_w * s.in_channels;
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const std::ptrdiff_t iy0 =
          static_cast<std::ptrdiff_t>(oy * s.stride_h) - static_cast<std::ptrdiff_t>(s.pad_top);
      Row r{&s,
            in,
            static_cast<const float*>(packed),
            bias,
            cop,
            0,
            0,
            iy0,
            has_tail ? blocks - 1 : static_cast<std::size_t>(-1),
            V::mask(co % N),
            relu};
      r.ky_begin = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, -iy0));
      r.ky_end = static_cast<std::size_t>(std::max<std::ptrdiff_t>(
          0, std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(s.kernel_h), height - iy0)));
      r.ky_end = std::max(r.ky_end, r.ky_begin);
      float* out_row = out + oy * s.out_width * co;
      if (row_taps == 9 && step == 6) {  // 3x3 stride 2 on 3 channels (the QB-Net stem)
        interior<9, 6>(r, blocks, ox_lo, tiles_end, out_row);
      } else if (row_taps == 21 && step == 6) {  // 7x7 stride 2 on 3 channels (ResNet stems)
        interior<21, 6>(r, blocks, ox_lo, tiles_end, out_row);
      } else {
        interior<0, 0>(r, blocks, ox_lo, tiles_end, out_row);
      }
      for (std::size_t ox = 0; ox < ox_lo; ++ox) {
        pixel_all_blocks(r, blocks, static_cast<std::ptrdiff_t>(ox) * sw - pl, out_row + ox * co);
      }
      for (std::size_t ox = tiles_end; ox < s.out_width; ++ox) {
        pixel_all_blocks(r, blocks, static_cast<std::ptrdiff_t>(ox) * sw - pl, out_row + ox * co);
      }
    }
  }
};

}  // namespace
}  // namespace qbinfer
