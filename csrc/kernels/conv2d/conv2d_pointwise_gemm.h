// The pointwise (1x1, unpadded) float conv as a register-tiled GEMM, written once over a
// vector-traits type V (kernels/simd/vec_*.h), instantiated by conv2d_avx2.cc and
// conv2d_neon.cc (internal linkage throughout); conv2d_avx512.cc points its pointwise shapes at
// the avx2 entry.
//
// In NHWC a 1x1 conv is out[pixel][o] = bias[o] + sum_c in[pixel][c] * w[o][c]: a GEMM with
// M = output pixels (rows of `in`, ci floats apart), N = out_channels, K = in_channels.
//   - Packed weights (at load): panels of kPanel = kVecs * V::kLanes output channels, each
//     panel [K][kPanel] contiguous (zero-filled past out_channels), so the microkernel reads
//     its weights as one sequential stream. (The generic layout [K][Co] strides by a power of
//     two on most networks, which maps a panel's rows onto a few L1 sets and evicts them.)
//   - Microkernel: kRows pixels x one panel, kRows * kVecs accumulators held in registers
//     (AVX2 6 x 2 = 12 of the 16 ymm; AArch64 NEON 6 x 4 = 24 of the 32 q; ARMv7 NEON 4 x 2 of
//     its 16 q); per k, kVecs weight loads and kRows broadcasts feed kRows * kVecs FMAs.
//   - Cache blocking: K in blocks of at most kKBlock (a panel's block, kKBlock * kPanel floats,
//     stays in L1 while the tiles stream past it), pixels in chunks of kChunkRows tiles (the
//     chunk's inputs for one K block stay in L2 while every panel passes over them).
//   - Epilogue on the tile in registers after the last K block: + bias, the optional ReLU,
//     stores (masked for the last panel's channels past out_channels, never stored).
//
// Bit-exact with the reference (conv2d.h): a lane is one output channel of one pixel; it starts
// at 0.0f and takes fmadd(x, w, acc) over c in order, 0..K-1, whatever the blocking: between K
// blocks the partial sums are stored to `out` and loaded back, which rounds nothing; then the
// bias, then the ReLU.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstring>

#include "kernels/conv2d/conv2d.h"

namespace qbinfer {
namespace {

// The shapes the pointwise GEMM runs: a 1x1 kernel with no padding (any stride). pack and
// run_rows of a variant must agree on this, so both ask here.
inline bool conv2d_is_pointwise(const Conv2DShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
         s.pad_bottom == 0 && s.pad_right == 0;
}

// Clip: the ISA's CLIP select, Clip::apply(v, lo, hi) = v < lo ? lo : (v > hi ? hi : v) per
// lane, NaN passing through (the CLIP op's kernel, elementwise.h), given by the ISA's file.
template <class V, std::size_t kVecs, std::size_t kRows, class Clip>
struct Conv2DPointwiseGemm {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;
  static constexpr std::size_t kPanel = kVecs * N;
  // A panel's K block in L1: 256 x 16 floats = 16 KiB (AVX2), 256 x 16 (AArch64), 256 x 8.
  static constexpr std::size_t kKBlock = 256;
  // Pixels per chunk: the chunk's K block (up to 96 x 256 floats = 96 KiB) stays in L2.
  static constexpr std::size_t kChunkRows = 16 * kRows;

  static std::size_t panels(const Conv2DShape& s) { return (s.out_channels + kPanel - 1) / kPanel; }

  static std::size_t packed_bytes(const Conv2DShape& s) {
    const std::size_t floats = panels(s) * kPanel * s.in_channels;
    return (floats * sizeof(float) + 63) / 64 * 64;
  }

  // weight [Co][Ci] (the file layout of a 1x1 kernel) -> [panel][Ci][kPanel].
  static void pack(const Conv2DShape& s, const float* weight, void* packed) {
    std::memset(packed, 0, packed_bytes(s));
    float* p = static_cast<float*>(packed);
    const std::size_t ci = s.in_channels;
    for (std::size_t o = 0; o < s.out_channels; ++o) {
      float* panel = p + (o / kPanel) * ci * kPanel + o % kPanel;
      for (std::size_t c = 0; c < ci; ++c) panel[c * kPanel] = weight[o * ci + c];
    }
  }

  // What every tile of one run shares.
  struct Ctx {
    const float* bias;
    std::size_t co;          // out_channels: the output pixel stride
    std::size_t ci;          // in_channels: the packed panel's K stride is kPanel
    std::size_t last_panel;  // index of the last panel
    std::size_t last_vecs;   // vectors of the last panel holding channels (1..kVecs)
    M last_mask;             // lanes of the last of those vectors holding channels
    bool relu;
    bool clip;  // then CLIP(lo, hi) (run_rows_clip)
    F lo, hi;
  };

  // kRows-or-fewer pixels (P) times B vectors of panel `panel`, K block [k0, k1). a[p] is
  // pixel p's input (its channel 0); out its output (channel 0 of the panel). First: the
  // accumulators start at 0, else at the partial sums in `out`; last: the epilogue, else the
  // partial sums go back to `out`. Tail: the panel's last vector is partial (masked).
  template <std::size_t P, std::size_t B, bool kTail>
  static void tile(const Ctx& c, std::size_t panel, const float* const* a, const float* w,
                   std::size_t k0, std::size_t k1, bool first, bool last, float* out) {
    F acc[P][B];
    const M tail_mask = c.last_mask;
    auto vec_load = [&](const float* src, std::size_t b) {
      return kTail && b == B - 1 ? V::load(src, tail_mask) : V::load(src);
    };
    auto vec_store = [&](float* dst, std::size_t b, F v) {
      if (kTail && b == B - 1) {
        V::store(dst, v, tail_mask);
      } else {
        V::store(dst, v);
      }
    };
    if (first) {
      for (std::size_t p = 0; p < P; ++p) {
        for (std::size_t b = 0; b < B; ++b) acc[p][b] = V::zero();
      }
    } else {
      for (std::size_t p = 0; p < P; ++p) {
        for (std::size_t b = 0; b < B; ++b) acc[p][b] = vec_load(out + p * c.co + b * N, b);
      }
    }
    const float* ap[P];
    for (std::size_t p = 0; p < P; ++p) ap[p] = a[p];
    const float* wk = w + k0 * kPanel;
    for (std::size_t k = k0; k < k1; ++k, wk += kPanel) {
      F wv[B];
      for (std::size_t b = 0; b < B; ++b) wv[b] = V::load(wk + b * N);
      for (std::size_t p = 0; p < P; ++p) {
        const F x = V::set1(ap[p][k]);
        for (std::size_t b = 0; b < B; ++b) acc[p][b] = V::fmadd(x, wv[b], acc[p][b]);
      }
    }
    if (!last) {
      for (std::size_t p = 0; p < P; ++p) {
        for (std::size_t b = 0; b < B; ++b) vec_store(out + p * c.co + b * N, b, acc[p][b]);
      }
      return;
    }
    const float* bias = c.bias + panel * kPanel;
    F bv[B];
    for (std::size_t b = 0; b < B; ++b) bv[b] = vec_load(bias + b * N, b);
    for (std::size_t p = 0; p < P; ++p) {
      for (std::size_t b = 0; b < B; ++b) {
        F y = V::add(acc[p][b], bv[b]);
        if (c.relu) y = V::relu(y);
        if (c.clip) y = Clip::apply(y, c.lo, c.hi);
        vec_store(out + p * c.co + b * N, b, y);
      }
    }
  }

  // One panel over P pixels: the full panel, or the last one with its vector count and mask.
  template <std::size_t P>
  static void panel_tile(const Ctx& c, std::size_t panel, const float* const* a, const float* w,
                         std::size_t k0, std::size_t k1, bool first, bool last, float* out) {
    if (panel != c.last_panel || (c.last_vecs == kVecs && c.co % N == 0)) {
      tile<P, kVecs, false>(c, panel, a, w, k0, k1, first, last, out);
      return;
    }
    const bool partial = c.co % N != 0;
    // The last panel: 1..kVecs vectors, the last of them partial or not.
    dispatch_vecs<P, 1>(c, panel, a, w, k0, k1, first, last, out, partial);
  }

  template <std::size_t P, std::size_t B>
  static void dispatch_vecs(const Ctx& c, std::size_t panel, const float* const* a, const float* w,
                            std::size_t k0, std::size_t k1, bool first, bool last, float* out,
                            bool partial) {
    if constexpr (B < kVecs) {
      if (c.last_vecs != B) {
        dispatch_vecs<P, B + 1>(c, panel, a, w, k0, k1, first, last, out, partial);
        return;
      }
    }
    if (partial) {
      tile<P, B, true>(c, panel, a, w, k0, k1, first, last, out);
    } else {
      tile<P, B, false>(c, panel, a, w, k0, k1, first, last, out);
    }
  }

  // The pixel tail of a chunk: fewer than kRows pixels.
  template <std::size_t P>
  static void tail_tile(std::size_t n, const Ctx& c, std::size_t panel, const float* const* a,
                        const float* w, std::size_t k0, std::size_t k1, bool first, bool last,
                        float* out) {
    if constexpr (P > 0) {
      if (n == P) {
        panel_tile<P>(c, panel, a, w, k0, k1, first, last, out);
        return;
      }
      tail_tile<P - 1>(n, c, panel, a, w, k0, k1, first, last, out);
    }
  }

  static void run_rows(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                       bool relu, std::size_t y_begin, std::size_t y_end, float* out) {
    run(s, in, packed, bias, relu, false, 0.0f, 0.0f, y_begin, y_end, out);
  }

  static void run_rows_clip(const Conv2DShape& s, const float* in, const void* packed,
                            const float* bias, bool relu, float lo, float hi, std::size_t y_begin,
                            std::size_t y_end, float* out) {
    run(s, in, packed, bias, relu, true, lo, hi, y_begin, y_end, out);
  }

  static void run(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                  bool relu, bool clip, float lo, float hi, std::size_t y_begin, std::size_t y_end,
                  float* out) {
    assert(conv2d_is_pointwise(s) && y_begin <= y_end && y_end <= s.out_height);
    const std::size_t ci = s.in_channels, co = s.out_channels;
    const std::size_t n_panels = panels(s);
    const std::size_t last_channels = co - (n_panels - 1) * kPanel;  // 1..kPanel
    Ctx c{bias,
          co,
          ci,
          n_panels - 1,
          (last_channels + N - 1) / N,
          V::mask(last_channels % N == 0 ? N : last_channels % N),
          relu,
          clip,
          V::set1(lo),
          V::set1(hi)};
    const float* w0 = static_cast<const float*>(packed);
    const std::size_t ow = s.out_width;
    const std::size_t q_begin = y_begin * ow, q_end = y_end * ow;
    const bool dense = s.stride_h == 1 && s.stride_w == 1;
    auto pixel_in = [&](std::size_t q) {
      if (dense) return in + q * ci;
      return in + ((q / ow) * s.stride_h * s.in_width + (q % ow) * s.stride_w) * ci;
    };
    // K blocks of equal size (at most kKBlock), so no block is a sliver.
    const std::size_t k_blocks = std::max<std::size_t>(1, (ci + kKBlock - 1) / kKBlock);
    const std::size_t k_step = (ci + k_blocks - 1) / k_blocks;
    // Chunks of equal size (whole tiles), so that no chunk is a few pixels that stream every
    // weight again for little work.
    const std::size_t n_chunks = (q_end - q_begin + kChunkRows - 1) / kChunkRows;
    const std::size_t chunk =
        n_chunks == 0 ? 0
                      : ((q_end - q_begin + n_chunks - 1) / n_chunks + kRows - 1) / kRows * kRows;
    for (std::size_t q0 = q_begin; q0 < q_end; q0 += chunk) {
      const std::size_t q1 = std::min(q_end, q0 + chunk);
      for (std::size_t k0 = 0; k0 < ci; k0 += k_step) {
        const std::size_t k1 = std::min(ci, k0 + k_step);
        const bool first = k0 == 0, last = k1 == ci;
        for (std::size_t panel = 0; panel < n_panels; ++panel) {
          const float* w = w0 + panel * ci * kPanel;
          float* out_panel = out + panel * kPanel;
          std::size_t q = q0;
          for (; q + kRows <= q1; q += kRows) {
            const float* a[kRows];
            for (std::size_t p = 0; p < kRows; ++p) a[p] = pixel_in(q + p);
            panel_tile<kRows>(c, panel, a, w, k0, k1, first, last, out_panel + q * co);
          }
          if (q < q1) {
            const float* a[kRows];
            for (std::size_t p = 0; p < q1 - q; ++p) a[p] = pixel_in(q + p);
            tail_tile<kRows - 1>(q1 - q, c, panel, a, w, k0, k1, first, last, out_panel + q * co);
          }
        }
      }
    }
  }
};

// One ISA's dense conv entry points: pointwise shapes (conv2d_is_pointwise) through the GEMM
// `Pointwise`, every other shape through `General`, each with its own packed layout. V and
// Clip: the ISA's traits and CLIP select, for the clip pass after General's rows.
template <class Pointwise, class General, class V, class Clip>
struct Conv2DWithPointwise {
  static std::size_t packed_bytes(const Conv2DShape& s) {
    return conv2d_is_pointwise(s) ? Pointwise::packed_bytes(s) : General::packed_bytes(s);
  }
  static void pack(const Conv2DShape& s, const float* weight, void* packed) {
    if (conv2d_is_pointwise(s)) {
      Pointwise::pack(s, weight, packed);
    } else {
      General::pack(s, weight, packed);
    }
  }
  static void run_rows(const Conv2DShape& s, const float* in, const void* packed, const float* bias,
                       bool relu, std::size_t y_begin, std::size_t y_end, float* out) {
    if (conv2d_is_pointwise(s)) {
      Pointwise::run_rows(s, in, packed, bias, relu, y_begin, y_end, out);
    } else {
      General::run_rows(s, in, packed, bias, relu, y_begin, y_end, out);
    }
  }

  static void run_rows_clip(const Conv2DShape& s, const float* in, const void* packed,
                            const float* bias, bool relu, float lo, float hi, std::size_t y_begin,
                            std::size_t y_end, float* out) {
    if (conv2d_is_pointwise(s)) {
      Pointwise::run_rows_clip(s, in, packed, bias, relu, lo, hi, y_begin, y_end, out);
      return;
    }
    General::run_rows(s, in, packed, bias, relu, y_begin, y_end, out);
    // The clip over the rows just written, while they are in cache.
    const std::size_t n = (y_end - y_begin) * s.out_width * s.out_channels;
    float* p = out + y_begin * s.out_width * s.out_channels;
    const typename V::F vlo = V::set1(lo), vhi = V::set1(hi);
    std::size_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes)
      V::store(p + i, Clip::apply(V::load(p + i), vlo, vhi));
    if (i < n) {
      const typename V::M m = V::mask(n - i);
      V::store(p + i, Clip::apply(V::load(p + i, m), vlo, vhi), m);
    }
  }
};

}  // namespace
}  // namespace qbinfer
