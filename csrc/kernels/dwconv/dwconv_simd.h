// The depthwise 3x3 kernels written once over a vector-traits type V (kernels/simd/vec_*.h)
// and instantiated by dwconv_avx2.cc, dwconv_avx512.cc and dwconv_neon.cc (the dilated f32 path,
// run_rows_f32_dilated, has its own tile: see there). Internal linkage throughout (an
// unnamed namespace): each ISA file gets its own copy, compiled with its own flags.
//
// Tile: one output row, one block of V::kLanes input channels, and kP1 (stride_w 1) or kP2
// (stride_w 2) neighbouring output pixels per step: one independent accumulator chain per pixel
// (the fixed tap order makes each chain a 9-add dependency, so the chains must interleave to
// fill the FP ports), each weight vector loaded once per step and shared by its pixels, the
// biased inputs u loaded one tap row at a time (SW * (P - 1) + 3 columns, pre_bias added once
// per loaded column). A row's first and last pixels join the first and last steps; the last step
// takes the 1..P remaining pixels as its own instantiation. Channel tails use masked
// loads/stores (nothing outside the image is read or written); the packed weights are
// zero-padded to a whole vector. Rows outer, channel blocks inner: the next block's inputs are
// the next cache lines of the same rows.
//
// Bit-exactness with the reference: per output lane the taps are summed in ky-major, kx order
// from 0.0f, as fmadd(u, w, acc) (one rounding, as the reference's std::fma), skipping taps in
// the padding (rows by a null row pointer, the first pixel's left and the last pixel's right
// column by run-time flags: never a multiply by 0, which would give NaN for an infinite
// weight), then add(mul(acc, scale), bias). The first tap is fmadd(u, w, 0) rather than mul
// alone: it turns a -0 product into +0 as the reference does.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/dwconv/dwconv.h"

namespace qbinfer {
namespace {

template <class V>
struct DWConvSimd {
  using F = typename V::F;
  using I = typename V::I;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  static std::size_t padded_channels(std::size_t c) { return (c + N - 1) / N * N; }
  static std::size_t round64(std::size_t bytes) { return (bytes + 63) / 64 * 64; }

  // ---- packing: [multiplier][channel block][9][kLanes] of float (f32) or int32 (qs8),
  // zero-filled. A block's 9 taps are contiguous (576 bytes on AVX-512): laid out as
  // [9][channels] instead, taps 4*channels bytes apart would share one L1 set for large channel
  // counts (a multiple of 4 KiB apart) and evict each other.
  static std::size_t packed_f32_bytes(const DWConvShape& s) {
    return round64(s.multiplier * 9 * padded_channels(s.channels) * sizeof(float));
  }
  static std::size_t packed_qs8_bytes(const DWConvShape& s) {
    return round64(s.multiplier * 9 * padded_channels(s.channels) * sizeof(std::int32_t));
  }
  // Index of (multiplier j, channel c, tap t) in the packed blob.
  static std::size_t packed_index(const DWConvShape& s, std::size_t j, std::size_t c,
                                  std::size_t t) {
    return j * 9 * padded_channels(s.channels) + (c / N * 9 + t) * N + c % N;
  }
  static void pack_f32(const DWConvShape& s, const float* weight, void* packed) {
    std::memset(packed, 0, packed_f32_bytes(s));
    float* p = static_cast<float*>(packed);
    for (std::size_t j = 0; j < s.multiplier; ++j) {
      for (std::size_t c = 0; c < s.channels; ++c) {
        for (std::size_t t = 0; t < 9; ++t) {
          p[packed_index(s, j, c, t)] = weight[(j * s.channels + c) * 9 + t];
        }
      }
    }
  }
  // An int8 weight as an int32 lane whose high 16 bits are 0, for V::imul16 (VPMADDWD).
  static void pack_qs8(const DWConvShape& s, const std::int8_t* weight, void* packed) {
    std::memset(packed, 0, packed_qs8_bytes(s));
    std::int32_t* p = static_cast<std::int32_t*>(packed);
    for (std::size_t j = 0; j < s.multiplier; ++j) {
      for (std::size_t c = 0; c < s.channels; ++c) {
        for (std::size_t t = 0; t < 9; ++t) {
          const auto w16 = static_cast<std::uint16_t>(
              static_cast<std::int16_t>(weight[(j * s.channels + c) * 9 + t]));
          p[packed_index(s, j, c, t)] = static_cast<std::int32_t>(w16);
        }
      }
    }
  }

  // ---- the row sweep, shared by both datatypes.
  // Output pixels per step: P independent accumulator chains per multiplier sharing each weight
  // load; inputs are loaded one tap row at a time (SW * (P - 1) + 3 columns), so the live
  // registers are P accumulators + one row of columns.
#if defined(__aarch64__)
  static constexpr bool kAArch64 = true;
#else
  static constexpr bool kAArch64 = false;
#endif
  // 32 vector registers: AVX-512 (zmm) and AArch64 NEON (v0-v31); 16 on AVX2 (ymm) and ARMv7
  // NEON (q0-q15). With 32, a step of 8 pixels loads each weight vector for 8 outputs and each
  // input column for up to 3 (10 columns per tap row instead of 6 for 4 pixels): on the
  // Cortex-A72, with one load pipe and FMLA and FADD sharing two FP pipes, that is 30% fewer
  // loads and 17% fewer pre_bias adds per output than the 4-pixel step (the A72 latency model:
  // QB-Net-Small 37.7 -> 37.3 ms, QB-Net-Large 46.2 -> 45.8 ms predicted).
  static constexpr bool k32Regs = N == 16 || (N == 4 && kAArch64);
  static constexpr std::size_t kP1 = k32Regs ? 8 : 4;  // stride_w 1
  static constexpr std::size_t kP2 = k32Regs ? 6 : 3;  // stride_w 2
  // Vector registers a step may fill, leaving room for a weight, the pre_bias and a temporary.
  static constexpr std::size_t kRegs = k32Regs ? 28 : 14;

  // Pixels per f32 step with a compile-time multiplier K: the inputs of a tap row are loaded
  // (and biased) once and serve all K outputs, so a step keeps K * P accumulators plus one row
  // of SW * (P - 1) + 3 columns live: the most pixels (up to kP1 / kP2) that fit kRegs.
  static constexpr std::size_t f32_step(std::size_t sw, std::size_t k) {
    const std::size_t cap = sw == 1 ? kP1 : kP2;
    std::size_t p = 1;
    while (p < cap && k * (p + 1) + sw * p + 3 <= kRegs) ++p;
    return p;
  }

  // One output row of one channel block: blocks of kStep pixels (P::kStep<SW>), the last block
  // taking the remaining 1..kStep. Pixel 0's left column and the last pixel's right column may
  // lie in the padding; P::run<Pixels, SW>(cx0, left_in, right_in, out, out_stride) skips those
  // taps.
  template <std::size_t SW, class P>
  static void sweep_row(const P& p, std::size_t width, std::size_t out_width, float* out,
                        std::size_t out_stride) {
    constexpr std::size_t kStep = P::template kStep<SW>;
    const bool right_in = (out_width - 1) * SW + 1 < width;
    std::size_t ox = 0;
    for (; out_width - ox > kStep; ox += kStep) {
      p.template run<kStep, SW>(ox * SW, ox > 0, true, out + ox * out_stride, out_stride);
    }
    last_block<SW>(p, out_width - ox, ox * SW, ox > 0, right_in, out + ox * out_stride, out_stride,
                   std::make_index_sequence<kStep + 1>{});
  }

  // sweep_row with the shape's horizontal stride.
  template <class P>
  static void sweep_row(const P& p, const DWConvShape& s, float* out, std::size_t out_stride) {
    if (s.stride_w == 1) {
      sweep_row<1>(p, s.in_width, s.out_width, out, out_stride);
    } else {
      sweep_row<2>(p, s.in_width, s.out_width, out, out_stride);
    }
  }

  // run<count> for a run-time count in 1..kStep.
  template <std::size_t SW, class P, std::size_t... Is>
  static void last_block(const P& p, std::size_t count, std::size_t cx0, bool left_in,
                         bool right_in, float* out, std::size_t out_stride,
                         std::index_sequence<Is...>) {
    ((Is > 0 && count == Is
          ? (p.template run<(Is > 0 ? Is : 1), SW>(cx0, left_in, right_in, out, out_stride), 0)
          : 0),
     ...);
  }

  // ---- f32
  template <bool Tail, bool Pre, std::size_t K>
  struct F32Pixels {
    const float* rows[3];   // input rows above, centre, below, offset to the block (nullptr in
                            // the padding)
    std::size_t in_stride;  // floats from one input pixel to the next in `rows`
    std::size_t channels;   // output block j starts at channel j * channels
    std::size_t multiplier;
    M m;
    F pre;
    const float* w;        // the block's taps of multiplier 0: [9][kLanes]
    std::size_t w_stride;  // from multiplier j to j + 1
    const float* scale;    // + block start
    const float* bias;

    // A run-time multiplier (K == 0) runs one output block after the other, re-loading the
    // inputs for each; a compile-time one shares each loaded tap row among its K outputs.
    template <std::size_t SW>
    static constexpr std::size_t kStep = K == 0 ? (SW == 1 ? kP1 : kP2) : f32_step(SW, K);

    F u(const float* x) const {
      const F v = Tail ? V::load(x, m) : V::load(x);
      return Pre ? V::add(v, pre) : v;
    }

    // The kCols biased input columns cx0 - 1 + i of one tap row (zero where in the padding).
    template <std::size_t kCols>
    void load_row(const float* row, std::size_t cx0, bool left_in, bool right_in,
                  F (&col)[kCols]) const {
      for (std::size_t i = 0; i < kCols; ++i) {
        const bool outside = (i == 0 && !left_in) || (i == kCols - 1 && !right_in);
        col[i] = outside ? V::zero() : u(row + (cx0 + i - 1) * in_stride);
      }
    }

    // acc[q] += the three taps of one row (weights wrow[kx * N]) for Pixels pixels. Taps in
    // the padding are skipped, never added as 0 * w.
    template <std::size_t Pixels, std::size_t SW, std::size_t kCols>
    static void add_row(const F (&col)[kCols], const float* wrow, bool left_in, bool right_in,
                        F* acc) {
      for (std::size_t kx = 0; kx < 3; ++kx) {
        const F wv = V::load(wrow + kx * N);
        for (std::size_t q = 0; q < Pixels; ++q) {
          if (kx == 0 && q == 0 && !left_in) continue;
          if (kx == 2 && q == Pixels - 1 && !right_in) continue;
          acc[q] = V::fmadd(col[q * SW + kx], wv, acc[q]);
        }
      }
    }

    template <std::size_t Pixels, std::size_t SW>
    void run(std::size_t cx0, bool left_in, bool right_in, float* out,
             std::size_t out_stride) const {
      if constexpr (K != 0) {
        run_shared<Pixels, SW>(cx0, left_in, right_in, out, out_stride);
        return;
      }
      constexpr std::size_t kCols = SW * (Pixels - 1) + 3;  // input columns cx0 - 1 + i
      for (std::size_t j = 0; j < multiplier; ++j) {
        F acc[Pixels];
        for (std::size_t q = 0; q < Pixels; ++q) acc[q] = V::zero();
        for (std::size_t ky = 0; ky < 3; ++ky) {
          if (rows[ky] == nullptr) continue;
          F col[kCols];
          load_row(rows[ky], cx0, left_in, right_in, col);
          add_row<Pixels, SW>(col, w + j * w_stride + ky * 3 * N, left_in, right_in, acc);
        }
        store_block<Pixels>(acc, j, out, out_stride);
      }
    }

    // The same sums for all K outputs of the multiplier at once, each tap row loaded once.
    // Per output lane the taps still add in ky, kx order, so the result is unchanged.
    template <std::size_t Pixels, std::size_t SW>
    void run_shared(std::size_t cx0, bool left_in, bool right_in, float* out,
                    std::size_t out_stride) const {
      constexpr std::size_t kCols = SW * (Pixels - 1) + 3;
      F acc[K][Pixels];
      for (std::size_t j = 0; j < K; ++j) {
        for (std::size_t q = 0; q < Pixels; ++q) acc[j][q] = V::zero();
      }
      for (std::size_t ky = 0; ky < 3; ++ky) {
        if (rows[ky] == nullptr) continue;
        F col[kCols];
        load_row(rows[ky], cx0, left_in, right_in, col);
        for (std::size_t j = 0; j < K; ++j) {
          add_row<Pixels, SW>(col, w + j * w_stride + ky * 3 * N, left_in, right_in, acc[j]);
        }
      }
      for (std::size_t j = 0; j < K; ++j) store_block<Pixels>(acc[j], j, out, out_stride);
    }

    // out = acc * scale + bias for output block j of Pixels pixels.
    template <std::size_t Pixels>
    void store_block(const F* acc, std::size_t j, float* out, std::size_t out_stride) const {
      const std::size_t o = j * channels;
      const F sc = Tail ? V::load(scale + o, m) : V::load(scale + o);
      const F bi = Tail ? V::load(bias + o, m) : V::load(bias + o);
      for (std::size_t q = 0; q < Pixels; ++q) {
        const F y = V::add(V::mul(acc[q], sc), bi);
        if constexpr (Tail) {
          V::store(out + q * out_stride + o, y, m);
        } else {
          V::store(out + q * out_stride + o, y);
        }
      }
    }
  };

  // Output row `out_row` for channel blocks [c_begin, c_end) (whole blocks, or the one tail).
  // Pixel blocks outer, channel blocks inner: each step reads its input pixels' channels in
  // address order. (Channel-block-outer order walked a row at a stride of `channels` floats, a
  // power of two in these networks, so the tap loads of a layer of 512 or more channels fell in
  // the same few cache sets and ran at a quarter of the speed of a narrow layer.)
  // rows: the three input rows at channel c_begin (nullptr in the padding), one pixel every
  // in_stride floats (the image itself, or a chunk of it copied by copy_rows).
  template <std::size_t SW, bool Tail, bool Pre, std::size_t K>
  static void f32_sweep(const DWConvShape& s, const float* const* rows, std::size_t in_stride,
                        const float* pre_bias, const float* w, const float* scale,
                        const float* bias, std::size_t c_begin, std::size_t c_end, float* out_row) {
    using P = F32Pixels<Tail, Pre, K>;
    constexpr std::size_t kStep = P::template kStep<SW>;
    const M m = V::mask(c_end - c_begin < N ? c_end - c_begin : N);
    const std::size_t stride = s.multiplier * s.channels;
    const auto block = [&](std::size_t c0) {
      F pre = V::zero();
      if constexpr (Pre) pre = Tail ? V::load(pre_bias + c0, m) : V::load(pre_bias + c0);
      const std::size_t ic = c0 - c_begin;
      return P{{rows[0] != nullptr ? rows[0] + ic : nullptr, rows[1] + ic,
                rows[2] != nullptr ? rows[2] + ic : nullptr},
               in_stride,
               s.channels,
               s.multiplier,
               m,
               pre,
               w + c0 * 9,
               9 * padded_channels(s.channels),
               scale + c0,
               bias + c0};
    };
    const bool right_in = (s.out_width - 1) * SW + 1 < s.in_width;
    std::size_t ox = 0;
    for (; s.out_width - ox > kStep; ox += kStep) {
      for (std::size_t c0 = c_begin; c0 < c_end; c0 += N) {
        block(c0).template run<kStep, SW>(ox * SW, ox > 0, true, out_row + c0 + ox * stride,
                                          stride);
      }
    }
    for (std::size_t c0 = c_begin; c0 < c_end; c0 += N) {
      last_block<SW>(block(c0), s.out_width - ox, ox * SW, ox > 0, right_in,
                     out_row + c0 + ox * stride, stride, std::make_index_sequence<kStep + 1>{});
    }
  }

  template <bool Tail, bool Pre, std::size_t K>
  static void f32_blocks(const DWConvShape& s, const float* const* rows, std::size_t in_stride,
                         const float* pre_bias, const float* w, const float* scale,
                         const float* bias, std::size_t c_begin, std::size_t c_end,
                         float* out_row) {
    if (s.stride_w == 1) {
      f32_sweep<1, Tail, Pre, K>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin, c_end,
                                 out_row);
    } else {
      f32_sweep<2, Tail, Pre, K>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin, c_end,
                                 out_row);
    }
  }

  template <bool Tail, bool Pre>
  static auto f32_blocks_for(std::size_t k) {
    switch (k) {
      case 1:
        return &f32_blocks<Tail, Pre, 1>;
      case 2:
        return &f32_blocks<Tail, Pre, 2>;
      case 4:
        return &f32_blocks<Tail, Pre, 4>;
      default:
        return &f32_blocks<Tail, Pre, 0>;
    }
  }

  // Input row pointers of output row oy: above, centre, below (nullptr in the padding).
  template <typename T>
  static void input_rows(const DWConvShape& s, const T* in, std::size_t oy, const T** rows) {
    const std::size_t row_elems = s.in_width * s.channels;
    const std::size_t cy = oy * s.stride_h;
    rows[0] = cy >= 1 ? in + (cy - 1) * row_elems : nullptr;
    rows[1] = in + cy * row_elems;
    rows[2] = cy + 1 < s.in_height ? in + (cy + 1) * row_elems : nullptr;
  }

  // ---- f32 with dilation d > 1 (stride 1: DeepLab's atrous convs). The taps of output pixel x
  // read columns x - d, x, x + d. Per output row and channel block, the pixels whose three
  // columns all lie in the image (x in [d, width - d)) run kPD at a time, one accumulator chain
  // each, with no border test; the others (the first and last d of the row, or all of a row no
  // wider than 2d) run one at a time and skip the taps outside the image, as the reference does.
  // Rows above or below the image are skipped by a null row pointer. Same order of operations
  // per output lane as the reference: bit-identical.
  static constexpr std::size_t kPD = k32Regs ? 8 : 4;

  template <bool Tail, bool Pre>
  struct DilatedRow {
    const float* rows[3];   // input rows oy - d, oy, oy + d offset to the block, or nullptr
    std::size_t in_stride;  // floats from one input pixel to the next in `rows`
    std::size_t width;
    std::size_t d;
    M m;
    F pre;

    F u(const float* x) const {
      const F v = Tail ? V::load(x, m) : V::load(x);
      return Pre ? V::add(v, pre) : v;
    }

    // acc[q] for output pixels x0 .. x0 + P - 1 of one multiplier's taps w ([9][kLanes]);
    // Check: skip the columns outside the image.
    template <std::size_t P, bool Check>
    void sums(std::size_t x0, const float* w, F* acc) const {
      for (std::size_t q = 0; q < P; ++q) acc[q] = V::zero();
      for (std::size_t ky = 0; ky < 3; ++ky) {
        const float* row = rows[ky];
        if (row == nullptr) continue;
        for (std::size_t kx = 0; kx < 3; ++kx) {
          const F wv = V::load(w + (ky * 3 + kx) * N);
          for (std::size_t q = 0; q < P; ++q) {
            // x0 + q + (kx - 1) * d, as an unsigned column that is >= width when left of 0
            const std::size_t ix = x0 + q + kx * d - d;
            if (Check && (x0 + q + kx * d < d || ix >= width)) continue;
            acc[q] = V::fmadd(u(row + ix * in_stride), wv, acc[q]);
          }
        }
      }
    }
  };

  template <bool Tail, bool Pre, std::size_t P, bool Check>
  static void dilated_step(const DilatedRow<Tail, Pre>& r, const DWConvShape& s, std::size_t x0,
                           const float* w, const float* scale, const float* bias, float* out) {
    const std::size_t out_stride = s.multiplier * s.channels;
    for (std::size_t j = 0; j < s.multiplier; ++j) {
      F acc[P];
      r.template sums<P, Check>(x0, w + j * 9 * padded_channels(s.channels), acc);
      const std::size_t o = j * s.channels;
      const F sc = Tail ? V::load(scale + o, r.m) : V::load(scale + o);
      const F bi = Tail ? V::load(bias + o, r.m) : V::load(bias + o);
      for (std::size_t q = 0; q < P; ++q) {
        const F y = V::add(V::mul(acc[q], sc), bi);
        float* dst = out + (x0 + q) * out_stride + o;
        if constexpr (Tail) {
          V::store(dst, y, r.m);
        } else {
          V::store(dst, y);
        }
      }
    }
  }

  // One pixel group [x, x + P) over every channel block of [c_begin, c_end): the inner loop walks
  // each input pixel's channels in address order. (Block-outer order walked the row at a stride
  // of `channels` floats, a power of two in these networks, so every tap load of a wide layer
  // fell in the same few cache sets: 2048-channel layers ran at a third of the speed.)
  template <bool Tail, bool Pre, std::size_t P, bool Check>
  static void dilated_pixels(const DWConvShape& s, const float* const* rows, std::size_t in_stride,
                             const float* pre_bias, const float* w, const float* scale,
                             const float* bias, std::size_t c_begin, std::size_t c_end,
                             std::size_t x, float* out_row) {
    const M m = V::mask(c_end - c_begin < N ? c_end - c_begin : N);
    for (std::size_t c0 = c_begin; c0 < c_end; c0 += N) {
      F pre = V::zero();
      if constexpr (Pre) pre = Tail ? V::load(pre_bias + c0, m) : V::load(pre_bias + c0);
      const std::size_t ic = c0 - c_begin;
      const DilatedRow<Tail, Pre> r{{rows[0] != nullptr ? rows[0] + ic : nullptr, rows[1] + ic,
                                     rows[2] != nullptr ? rows[2] + ic : nullptr},
                                    in_stride,
                                    s.in_width,
                                    s.dilation,
                                    m,
                                    pre};
      dilated_step<Tail, Pre, P, Check>(r, s, x, w + c0 * 9, scale + c0, bias + c0, out_row + c0);
    }
  }

  template <bool Tail, bool Pre>
  static void dilated_blocks(const DWConvShape& s, const float* const* rows, std::size_t in_stride,
                             const float* pre_bias, const float* w, const float* scale,
                             const float* bias, std::size_t c_begin, std::size_t c_end,
                             float* out_row) {
    const std::size_t d = s.dilation, width = s.in_width;
    // interior pixels: [d, width - d), empty when the row is no wider than 2d
    const std::size_t lo = std::min(d, width);
    const std::size_t hi = width > 2 * d ? width - d : lo;
    std::size_t x = 0;
    for (; x < lo; ++x)
      dilated_pixels<Tail, Pre, 1, true>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin,
                                         c_end, x, out_row);
    for (; x + kPD <= hi; x += kPD)
      dilated_pixels<Tail, Pre, kPD, false>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin,
                                            c_end, x, out_row);
    for (; x < hi; ++x)
      dilated_pixels<Tail, Pre, 1, false>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin,
                                          c_end, x, out_row);
    for (; x < width; ++x)
      dilated_pixels<Tail, Pre, 1, true>(s, rows, in_stride, pre_bias, w, scale, bias, c_begin,
                                         c_end, x, out_row);
  }

  // ---- wide layers: channel chunks copied to a contiguous scratch.
  // A pixel of C floats is C * 4 bytes; at C = 1024 or 2048 that is a multiple of 4 KiB, so the
  // 3 input rows, every column a step reads and the output row all sit at one address modulo
  // 4 KiB and compete for the same few L1 sets (8 ways on Zen 3, 2 on the Cortex-A72), and the
  // columns shared by neighbouring steps are evicted before they are used again (2048 channels
  // ran at a fifth of the speed of 256). So for wide layers each output row runs chunk by
  // chunk: the chunk's channels of the three input rows are copied, with the pre_bias added
  // (the same single rounded add u = in + pre_bias the tap loop would do, so the conv's
  // arithmetic is unchanged: bit-identical), into a small scratch where a pixel is `chunk`
  // floats; the conv then reads only the scratch, which stays in L1 without set conflicts.
  // Channel tails (a last block of fewer than N channels) run on the image directly.
  static constexpr std::size_t kScratchFloats = 5120;  // 20 KiB on the stack, < a 32 KiB L1D
  static constexpr std::size_t kScratchSkew = 16;      // 64 bytes between the scratch rows
  static constexpr std::size_t kChunkGrain = N > 16 ? N : 16;  // whole 64-byte lines

  // Channels per chunk for rows `width` pixels wide, or 0 when the scratch cannot hold even one
  // line-sized chunk of three rows (the layer then runs on the image directly).
  static std::size_t chunk_channels(std::size_t width, std::size_t full_end) {
    const std::size_t per_channel = 3 * width;
    if (3 * kScratchSkew + per_channel * kChunkGrain > kScratchFloats) return 0;
    std::size_t chunk =
        (kScratchFloats - 3 * kScratchSkew) / per_channel / kChunkGrain * kChunkGrain;
    return std::min(chunk, full_end);
  }

  // Copies channels [c0, c0 + chunk) of the non-null rows (u = in + pre_bias when Pre) to
  // scratch rows `scratch_row` floats apart; dst[i] is that row or nullptr like rows[i].
  template <bool Pre>
  static void copy_rows(const float* const* rows, std::size_t width, std::size_t channels,
                        const float* pre_bias, std::size_t c0, std::size_t chunk, float* scratch,
                        std::size_t scratch_row, const float** dst) {
    for (std::size_t r = 0; r < 3; ++r) {
      if (rows[r] == nullptr) {
        dst[r] = nullptr;
        continue;
      }
      float* to = scratch + r * scratch_row;
      dst[r] = to;
      const float* from = rows[r] + c0;
      for (std::size_t x = 0; x < width; ++x, from += channels, to += chunk) {
        for (std::size_t c = 0; c < chunk; c += N) {
          F v = V::load(from + c);
          if constexpr (Pre) v = V::add(v, V::load(pre_bias + c0 + c));
          V::store(to + c, v);
        }
      }
    }
  }

  // Whether a layer runs on the scratch, by the kernel's measured throughput (AVX2, Zen 3,
  // KernelBench "dwconv_f32", 7x7 to 56x56): from 1024 channels it gains at every size (2.3-2.9x
  // from 7x7 to 33x33, 1.1-1.2x at 56x56 where the scratch holds only 16 channels of a row), at 512
  // channels only while a chunk is at least 64 channels wide (rows of up to 26 pixels; 56x56x512
  // ran at half speed on 16-channel chunks). The dilated path also needs taps that mostly fall
  // inside the image (dilation under a quarter of the width): at a rate of 12 or 18 on a 33-pixel
  // row most taps are padding, there is little to reuse and the copy of whole rows costs more than
  // it saves. AVX2 only (N == 8): the gain above is a measurement of Zen 3's L1. AVX-512 (N == 16)
  // keeps the direct path until it is measured, and tested, on a CPU that has AVX-512 (the
  // machine that made this change had none). No ARM core was at hand either, and the A72 latency
  // model (benchmarks/a72_latency.py) does not simulate caches, so there it sees only the copy's
  // cost (+1.1 ms predicted on QB-Net-Small). The Cortex-A72's 2-way L1 likely suffers the same
  // conflicts: measure on a Pi before enabling it for NEON.
  static constexpr bool kScratchPath = N == 8;

  static std::size_t scratch_chunk(const DWConvShape& s) {
    const std::size_t full_end = s.channels / N * N;
    if (!kScratchPath || s.channels < 512) return 0;
    if (s.dilation > 1 && 4 * s.dilation >= s.in_width) return 0;
    const std::size_t chunk = chunk_channels(s.in_width, full_end);
    return s.channels >= 1024 || chunk >= 64 ? chunk : 0;
  }

  static void run_rows_f32_dilated(const DWConvShape& s, const float* in, const float* pre_bias,
                                   const float* w, const float* scale, const float* bias,
                                   std::size_t y_begin, std::size_t y_end, float* out) {
    assert(s.stride_h == 1 && s.stride_w == 1);
    const std::size_t row_elems = s.in_width * s.channels;
    const std::size_t full_end = s.channels / N * N;
    const std::size_t out_row_elems = s.out_width * s.multiplier * s.channels;
    const std::size_t d = s.dilation;
    const std::size_t chunk = scratch_chunk(s);
    alignas(64) float scratch[kScratchFloats];
    const std::size_t scratch_row = s.in_width * chunk + kScratchSkew;
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const float* rows[3] = {oy >= d ? in + (oy - d) * row_elems : nullptr, in + oy * row_elems,
                              oy + d < s.in_height ? in + (oy + d) * row_elems : nullptr};
      float* out_row = out + oy * out_row_elems;
      std::size_t done = 0;  // channels [0, done) written
      if (chunk > 0) {
        for (; done < full_end; done += chunk) {
          const std::size_t n = std::min(chunk, full_end - done);
          const float* srows[3];
          if (pre_bias != nullptr) {
            copy_rows<true>(rows, s.in_width, s.channels, pre_bias, done, n, scratch, scratch_row,
                            srows);
          } else {
            copy_rows<false>(rows, s.in_width, s.channels, pre_bias, done, n, scratch, scratch_row,
                             srows);
          }
          dilated_blocks<false, false>(s, srows, n, nullptr, w, scale, bias, done, done + n,
                                       out_row);
        }
      }
      const float* at[3] = {rows[0] != nullptr ? rows[0] + done : nullptr, rows[1] + done,
                            rows[2] != nullptr ? rows[2] + done : nullptr};
      if (pre_bias != nullptr) {
        if (done < full_end) {
          dilated_blocks<false, true>(s, at, s.channels, pre_bias, w, scale, bias, done, full_end,
                                      out_row);
        }
        if (full_end < s.channels) {
          const float* tail[3] = {at[0] != nullptr ? at[0] + (full_end - done) : nullptr,
                                  at[1] + (full_end - done),
                                  at[2] != nullptr ? at[2] + (full_end - done) : nullptr};
          dilated_blocks<true, true>(s, tail, s.channels, pre_bias, w, scale, bias, full_end,
                                     s.channels, out_row);
        }
      } else {
        if (done < full_end) {
          dilated_blocks<false, false>(s, at, s.channels, pre_bias, w, scale, bias, done, full_end,
                                       out_row);
        }
        if (full_end < s.channels) {
          const float* tail[3] = {at[0] != nullptr ? at[0] + (full_end - done) : nullptr,
                                  at[1] + (full_end - done),
                                  at[2] != nullptr ? at[2] + (full_end - done) : nullptr};
          dilated_blocks<true, false>(s, tail, s.channels, pre_bias, w, scale, bias, full_end,
                                      s.channels, out_row);
        }
      }
    }
  }

  static void run_rows_f32(const DWConvShape& s, const float* in, const float* pre_bias,
                           const void* packed, const float* scale, const float* bias,
                           std::size_t y_begin, std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    if (s.dilation > 1) {
      run_rows_f32_dilated(s, in, pre_bias, static_cast<const float*>(packed), scale, bias, y_begin,
                           y_end, out);
      return;
    }
    assert(s.out_width == (s.in_width + s.stride_w - 1) / s.stride_w);
    const float* w = static_cast<const float*>(packed);
    const bool pre = pre_bias != nullptr;
    const auto full = pre ? f32_blocks_for<false, true>(s.multiplier)
                          : f32_blocks_for<false, false>(s.multiplier);
    const auto tail =
        pre ? f32_blocks_for<true, true>(s.multiplier) : f32_blocks_for<true, false>(s.multiplier);
    const std::size_t full_end = s.channels / N * N;
    const std::size_t out_row_elems = s.out_width * s.multiplier * s.channels;
    const std::size_t chunk = scratch_chunk(s);
    const auto on_scratch = f32_blocks_for<false, false>(s.multiplier);
    alignas(64) float scratch[kScratchFloats];
    const std::size_t scratch_row = s.in_width * chunk + kScratchSkew;
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const float* rows[3];
      input_rows(s, in, oy, rows);
      float* out_row = out + oy * out_row_elems;
      std::size_t done = 0;  // channels [0, done) written
      if (chunk > 0) {
        for (; done < full_end; done += chunk) {
          const std::size_t n = std::min(chunk, full_end - done);
          const float* srows[3];
          if (pre) {
            copy_rows<true>(rows, s.in_width, s.channels, pre_bias, done, n, scratch, scratch_row,
                            srows);
          } else {
            copy_rows<false>(rows, s.in_width, s.channels, pre_bias, done, n, scratch, scratch_row,
                             srows);
          }
          on_scratch(s, srows, n, nullptr, w, scale, bias, done, done + n, out_row);
        }
      }
      if (done < full_end) {
        const float* at[3] = {rows[0] != nullptr ? rows[0] + done : nullptr, rows[1] + done,
                              rows[2] != nullptr ? rows[2] + done : nullptr};
        full(s, at, s.channels, pre_bias, w, scale, bias, done, full_end, out_row);
      }
      if (full_end < s.channels) {
        const float* at[3] = {rows[0] != nullptr ? rows[0] + full_end : nullptr, rows[1] + full_end,
                              rows[2] != nullptr ? rows[2] + full_end : nullptr};
        tail(s, at, s.channels, pre_bias, w, scale, bias, full_end, s.channels, out_row);
      }
    }
  }

  // ---- INT8: exact int32 sums of code * weight (VPMADDWD on int16 halves), then the
  // reference's dequantization expression lane by lane.
  template <bool Tail, std::size_t K>
  struct QS8Pixels {
    const std::int8_t* rows[3];
    std::size_t channels;
    std::size_t multiplier;
    std::size_t n;
    M m;
    const std::int32_t* w;
    std::size_t w_stride;
    F input_scale;
    const float* weight_scale;
    const float* scale;
    const float* bias;

    template <std::size_t SW>
    static constexpr std::size_t kStep = SW == 1 ? kP1 : kP2;

    I q(const std::int8_t* x) const { return Tail ? V::load_i8(x, n) : V::load_i8(x); }
    F ld(const float* x) const { return Tail ? V::load(x, m) : V::load(x); }

    template <std::size_t Pixels, std::size_t SW>
    void run(std::size_t cx0, bool left_in, bool right_in, float* out,
             std::size_t out_stride) const {
      constexpr std::size_t kCols = SW * (Pixels - 1) + 3;
      const std::size_t k = K != 0 ? K : multiplier;
      for (std::size_t j = 0; j < k; ++j) {
        const std::int32_t* wj = w + j * w_stride;
        I acc[Pixels];
        for (std::size_t q = 0; q < Pixels; ++q) acc[q] = V::izero();
        for (std::size_t ky = 0; ky < 3; ++ky) {
          const std::int8_t* row = rows[ky];
          if (row == nullptr) continue;
          I col[kCols];
          for (std::size_t i = 0; i < kCols; ++i) {
            const bool outside = (i == 0 && !left_in) || (i == kCols - 1 && !right_in);
            col[i] = outside ? V::izero() : q(row + (cx0 + i - 1) * channels);
          }
          for (std::size_t kx = 0; kx < 3; ++kx) {
            const I wv = V::iload(wj + (ky * 3 + kx) * N);
            for (std::size_t p = 0; p < Pixels; ++p) {
              // A padded column holds code 0, so its taps add exactly 0: no skip needed.
              acc[p] = V::iadd(acc[p], V::imul16(col[p * SW + kx], wv));
            }
          }
        }
        const std::size_t o = j * channels;
        const F requant = V::mul(input_scale, ld(weight_scale + o));
        const F sc = ld(scale + o);
        const F bi = ld(bias + o);
        for (std::size_t p = 0; p < Pixels; ++p) {
          const F dequant = V::mul(V::to_float(acc[p]), requant);
          const F y = V::add(V::mul(dequant, sc), bi);
          if constexpr (Tail) {
            V::store(out + p * out_stride + o, y, m);
          } else {
            V::store(out + p * out_stride + o, y);
          }
        }
      }
    }
  };

  template <bool Tail, std::size_t K>
  static void qs8_blocks(const DWConvShape& s, const std::int8_t* const* rows,
                         const std::int32_t* w, const float* weight_scale, float input_scale,
                         const float* scale, const float* bias, std::size_t c_begin,
                         std::size_t c_end, float* out_row) {
    const std::size_t n = c_end - c_begin < N ? c_end - c_begin : N;
    const std::size_t stride = s.multiplier * s.channels;
    for (std::size_t c0 = c_begin; c0 < c_end; c0 += N) {
      const QS8Pixels<Tail, K> p{{rows[0] != nullptr ? rows[0] + c0 : nullptr, rows[1] + c0,
                                  rows[2] != nullptr ? rows[2] + c0 : nullptr},
                                 s.channels,
                                 s.multiplier,
                                 n,
                                 V::mask(n),
                                 w + c0 * 9,
                                 9 * padded_channels(s.channels),
                                 V::set1(input_scale),
                                 weight_scale + c0,
                                 scale + c0,
                                 bias + c0};
      sweep_row(p, s, out_row + c0, stride);
    }
  }

  template <bool Tail>
  static auto qs8_blocks_for(std::size_t k) {
    switch (k) {
      case 1:
        return &qs8_blocks<Tail, 1>;
      case 2:
        return &qs8_blocks<Tail, 2>;
      case 4:
        return &qs8_blocks<Tail, 4>;
      default:
        return &qs8_blocks<Tail, 0>;
    }
  }

  static void run_rows_qs8(const DWConvShape& s, const std::int8_t* q_in, const void* packed,
                           const float* weight_scale, float input_scale, const float* scale,
                           const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    assert(input_scale > 0.0f);
    const std::int32_t* w = static_cast<const std::int32_t*>(packed);
    const auto full = qs8_blocks_for<false>(s.multiplier);
    const auto tail = qs8_blocks_for<true>(s.multiplier);
    const std::size_t full_end = s.channels / N * N;
    const std::size_t out_row_elems = s.out_width * s.multiplier * s.channels;
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const std::int8_t* rows[3];
      input_rows(s, q_in, oy, rows);
      float* out_row = out + oy * out_row_elems;
      if (full_end > 0) {
        full(s, rows, w, weight_scale, input_scale, scale, bias, 0, full_end, out_row);
      }
      if (full_end < s.channels) {
        tail(s, rows, w, weight_scale, input_scale, scale, bias, full_end, s.channels, out_row);
      }
    }
  }

  // ---- input statistics and quantization, element-wise over channel vectors.
  static float input_absmax(const float* in, const float* pre_bias, std::size_t pixels,
                            std::size_t channels) {
    F acc = V::zero();
    for (std::size_t p = 0; p < pixels; ++p) {
      for (std::size_t c0 = 0; c0 < channels; c0 += N) {
        const std::size_t n = std::min(N, channels - c0);
        const M m = V::mask(n);
        F u = V::load(in + p * channels + c0, m);  // masked-off lanes: |0 + 0| = 0
        if (pre_bias != nullptr) u = V::add(u, V::load(pre_bias + c0, m));
        acc = V::max_keep_acc(V::abs(u), acc);
      }
    }
    return V::hmax(acc);
  }

  static void quantize_input(const float* in, const float* pre_bias, std::size_t pixels,
                             std::size_t channels, float input_scale, std::int8_t* q) {
    assert(input_scale > 0.0f);
    const F s = V::set1(input_scale);
    for (std::size_t p = 0; p < pixels; ++p) {
      for (std::size_t c0 = 0; c0 < channels; c0 += N) {
        const std::size_t n = std::min(N, channels - c0);
        const M m = V::mask(n);
        const std::size_t i = p * channels + c0;
        F u = V::load(in + i, m);
        if (pre_bias != nullptr) u = V::add(u, V::load(pre_bias + c0, m));
        // The reference's nearbyint(u / s) (a true division, never a reciprocal), clamp in
        // float, NaN -> 0.
        const F r = V::clamp_nan_to_zero(V::round_cur(V::div(u, s)), -127.0f, 127.0f);
        if (n == N) {
          V::store_i8(q + i, V::to_int(r));
        } else {
          V::store_i8(q + i, V::to_int(r), n);
        }
      }
    }
  }
};

}  // namespace
}  // namespace qbinfer
