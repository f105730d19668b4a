// Binary conv for Advanced SIMD (AArch64, Cortex-A72 and newer; ARMv7 NEON through
// neon_compat.h). Two families of kernels:
//   broadcast streams (below, run_rows_broadcast): kernel 1 and 3 with Co > 4 and
//       k*k*Ci <= 65535, any Ci: 8 output channels per q register (16-bit lanes), every 16-bit
//       chunk of a pixel's stream pre-broadcast by the gather, 4 pixels x 2 groups per tile;
//   the kernels of bconv_simd_inl.h (Kernel = BConv<Neon>) for the rest: 4 channels per q
//       register (32-bit lanes) when Co <= 4 or k*k*Ci > 65535, BCONV2D_GENERAL's strided 3x3.
// Counting. NEON has a byte popcount (CNT), so every XORed vector is counted directly (no
// Harley-Seal: without a three-input logic instruction a carry-save adder costs 3 ops per input,
// more than the count it saves): EOR + CNT + UADALP per 128 bits, UADALP adding the byte counts
// pairwise into 16-bit lanes. A 16-bit lane gains <= 16 per vector and its total is bounded by
// k*k*Ci <= 65535 (the condition for 16-bit lanes: 2048 in-channels x 9 taps = 18432 fits), so
// it never overflows; for 32-bit lanes the 16-bit halves are widened into the 32-bit totals
// every 4095 vectors (4095 * 16 < 2^16), exact for any |dot| < 2^31.
#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"

#include "kernels/bconv/bconv_simd_inl.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

struct Neon {
  using V = uint32x4_t;
  static constexpr std::size_t kLanes = 4;
  static constexpr int kPixels = 4;
  static constexpr int kMaxLg = 0;  // no adder tree (see Counting)
  static constexpr bool kHas16BitLanes = true;
  static constexpr int kLongStreamLg = 0;  // counts with VCNT: no adder blocks

  template <int N, int LB>
  struct Counter {
    static constexpr std::size_t kFlush = 4095;  // vectors between 16 -> 32-bit widenings
    uint16x8_t acc16[N];
    uint32x4_t acc32[N];
    std::size_t pending = 0;  // vectors in acc16 since the last widening (LB == 32)

    QBINFER_INLINE Counter() {
      for (int n = 0; n < N; ++n) {
        acc16[n] = vdupq_n_u16(0);
        acc32[n] = vdupq_n_u32(0);
      }
    }
    template <class Fetch>
    QBINFER_INLINE void add_stream(Fetch& fetch, std::size_t count) {
      while (count > 0) {
        const std::size_t m = LB == 16 ? count : std::min(count, kFlush - pending);
        for (std::size_t i = 0; i < m; ++i) {
          V x[N];
          fetch(x);
          for (int n = 0; n < N; ++n)
            acc16[n] = vpadalq_u8(acc16[n], vcntq_u8(vreinterpretq_u8_u32(x[n])));
        }
        count -= m;
        if constexpr (LB == 32) {
          pending += m;
          if (pending == kFlush) {
            for (int n = 0; n < N; ++n) {
              acc32[n] = vpadalq_u16(acc32[n], acc16[n]);
              acc16[n] = vdupq_n_u16(0);
            }
            pending = 0;
          }
        }
      }
    }
    QBINFER_INLINE void total(V (&count)[N]) const {
      for (int n = 0; n < N; ++n) {
        count[n] = LB == 16 ? vreinterpretq_u32_u16(acc16[n]) : vpadalq_u16(acc32[n], acc16[n]);
      }
    }
  };

  static QBINFER_INLINE V zero() { return vdupq_n_u32(0); }
  static QBINFER_INLINE V load(const void* p) {
    return vld1q_u32(static_cast<const std::uint32_t*>(p));
  }
  static QBINFER_INLINE V set32(std::int32_t v) {
    return vdupq_n_u32(static_cast<std::uint32_t>(v));
  }
  // LD1R: the 32-bit chunk broadcast straight from memory.
  static QBINFER_INLINE V xor_bcast(V w, const std::uint32_t* a) {
    return veorq_u32(w, vld1q_dup_u32(a));
  }
  static QBINFER_INLINE V add32(V a, V b) { return vaddq_u32(a, b); }
  static QBINFER_INLINE V sub32(V a, V b) { return vsubq_u32(a, b); }
  static QBINFER_INLINE V low16(V a) { return vandq_u32(a, vdupq_n_u32(0xffff)); }
  static QBINFER_INLINE V high16(V a) { return vshrq_n_u32(a, 16); }

  // Nine (five) inputs: byte counts <= 72 (40), summed directly, then widened once.
  static QBINFER_INLINE V count9(const V* x) {
    uint8x16_t b = vcntq_u8(vreinterpretq_u8_u32(x[0]));
    for (int i = 1; i < 9; ++i) b = vaddq_u8(b, vcntq_u8(vreinterpretq_u8_u32(x[i])));
    return vpaddlq_u16(vpaddlq_u8(b));
  }
  static QBINFER_INLINE V count5(const V* x) {
    uint8x16_t b = vcntq_u8(vreinterpretq_u8_u32(x[0]));
    for (int i = 1; i < 5; ++i) b = vaddq_u8(b, vcntq_u8(vreinterpretq_u8_u32(x[i])));
    return vpaddlq_u16(vpaddlq_u8(b));
  }

  // 16-bit chunk q of word w -> both halves of dst[4w + q] (ZIP of the chunks with themselves).
  static QBINFER_INLINE void replicate16(const BitWord* src, std::size_t words,
                                         std::uint32_t* dst) {
    std::size_t w = 0;
    for (; w + 2 <= words; w += 2) {
      uint16x8_t d;
      std::memcpy(&d, src + w, sizeof(d));
      vst1q_u16(reinterpret_cast<std::uint16_t*>(dst + 4 * w), vzip1q_u16(d, d));
      vst1q_u16(reinterpret_cast<std::uint16_t*>(dst + 4 * w + 4), vzip2q_u16(d, d));
    }
    for (; w < words; ++w) {
      uint16x4_t d;
      std::memcpy(&d, src + w, sizeof(d));
      vst1q_u16(reinterpret_cast<std::uint16_t*>(dst + 4 * w),
                vcombine_u16(vzip1_u16(d, d), vzip2_u16(d, d)));
    }
  }

  static QBINFER_INLINE void epilogue(V dot, const float* scale, const float* bias, float* out,
                                      std::size_t n) {
    const float32x4_t f = vcvtq_f32_s32(vreinterpretq_s32_u32(dot));
    if (n == kLanes) {
      // Two operations: the contract is a rounded multiply, then a rounded add (never FMLA).
      const float32x4_t scaled = vmulq_f32(f, vld1q_f32(scale));
      vst1q_f32(out, vaddq_f32(scaled, vld1q_f32(bias)));
    } else {
      // NEON has no masked loads: the n < 4 channels go through stack buffers.
      float s[kLanes] = {}, b[kLanes] = {}, o[kLanes];
      std::memcpy(s, scale, n * sizeof(float));
      std::memcpy(b, bias, n * sizeof(float));
      const float32x4_t scaled = vmulq_f32(f, vld1q_f32(s));
      vst1q_f32(o, vaddq_f32(scaled, vld1q_f32(b)));
      std::memcpy(out, o, n * sizeof(float));
    }
  }
};

using Kernel = BConv<Neon>;

// ---- 16-bit-lane streams with pre-broadcast units (kernel 1 and 3, Co > 4, k*k*Ci <= 65535) ----
// Kernel::run_pixels broadcasts each 32-bit unit of a pixel's stream inside its inner loop
// (LDR S + DUP, or LD1R: on the A72 either costs a NEON slot as well as a load), so per unit a
// 4-pixel tile spends 16 NEON operations (4 DUP, 4 EOR, 4 CNT, 4 UADALP) on 512 binary MACs.
// Here the gather writes every 16-bit chunk already broadcast to the eight 16-bit lanes, so the
// inner loop loads its operands with plain LDR Q (load pipe only) and spends exactly EOR + CNT +
// UADALP per (pixel, group): 3 NEON operations per 128 MACs, the floor without a popcount-
// accumulate instruction. The tile is kTilePixels pixels x kTileGroups groups (AArch64: 8
// accumulators, 6 loads per unit, 24 NEON operations; ARMv7 has 16 q registers: one group).
// The lanes are those of Kernel's 16-bit plan (lane 2i + h of group g holds channel 8g + 4h + i;
// the broadcast chunk is the same 16 bits in every lane) and the blob is bconv_pack's for
// broadcast_plan (only the chunks that hold channels).
// Gather per pixel once, count against every group: the broadcast costs the gather 8x the bytes
// of the pixel's words, paid once per pixel against Co / 8 groups of counting.
#if defined(__aarch64__)
constexpr int kTileGroups = 2;
#else
constexpr int kTileGroups = 1;
#endif
constexpr int kTilePixels = 4;
// Units per pixel at most on this path: the buffer is [unit][pixel] 16-byte vectors, 32 KiB at
// this bound (3x3 over 896 channels, 1x1 over 8192); longer streams take Kernel's pieces.
constexpr std::size_t kMaxBroadcastUnits = 512;

// Broadcasts the stream of output pixel (y, x) into buf[unit * kTilePixels] (chunk j of a tap:
// bits 16j..16j+15 of the pixel's words, j < p.chunks); taps outside the image are zero bits
// (a +1 pad, corrected for zero padding by the caller).
QBINFER_INLINE void gather_broadcast(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                                     std::size_t y, std::size_t x, uint16x8_t* buf) {
  const std::size_t words = words_for_channels(s.in_channels);
  const std::size_t pad = s.kernel / 2;
  const std::size_t full_words = p.chunks / 4, tail_chunks = p.chunks % 4;
  uint16x8_t* dst = buf;
  for (std::size_t ky = 0; ky < s.kernel; ++ky) {
    const std::size_t iy = y + ky;  // + pad
    for (std::size_t kx = 0; kx < s.kernel; ++kx) {
      const std::size_t ix = x + kx;  // + pad
      if (iy < pad || iy >= s.height + pad || ix < pad || ix >= s.width + pad) {
        for (std::size_t j = 0; j < p.chunks; ++j, dst += kTilePixels) *dst = vdupq_n_u16(0);
        continue;
      }
      const BitWord* px = in + ((iy - pad) * s.width + (ix - pad)) * words;
      for (std::size_t w = 0; w < full_words; ++w, dst += 4 * kTilePixels) {
        uint16x4_t d;
        std::memcpy(&d, px + w, sizeof(d));
        dst[0] = vdupq_lane_u16(d, 0);
        dst[kTilePixels] = vdupq_lane_u16(d, 1);
        dst[2 * kTilePixels] = vdupq_lane_u16(d, 2);
        dst[3 * kTilePixels] = vdupq_lane_u16(d, 3);
      }
      for (std::size_t j = 0; j < tail_chunks; ++j, dst += kTilePixels) {
        *dst = vdupq_n_u16(static_cast<std::uint16_t>(px[full_words] >> (16 * j)));
      }
    }
  }
}

template <class T>
QBINFER_INLINE void hide_pointer(T*& p) {
#if defined(__GNUC__) || defined(__clang__)
  asm("" : "+r"(p));
#else
  (void)p;
#endif
}

// Counts groups g0..g0+G-1 against the first P (<= kTilePixels) broadcast streams of a tile and
// writes their outputs for the first n_px <= P pixels (out_px[n]: the pixel's output row).
// Epilogue modes: kPlain when n_px == P == kTilePixels, every group has all 2 * kLanes channels
// and no pixel misses a tap (straight-line code); kPlainCorrected the same with the zero-padding
// correction of the pixels that miss taps (3x3 border tiles); kGeneric for the rest.
//
// Chunks > 0 (p.chunks, kernel 3): src[ky] is the broadcast input row y - 1 + ky (run_rows_ring)
// at the column of the tile's first tap, pixel n's units Chunks * n vectors further, the units
// of a tap row consecutive; Chunks = 0: src[0] is the tile's gathered streams ([unit][pixel]
// vectors).
enum EpilogueMode : int { kGeneric = 0, kPlain = 1, kPlainCorrected = 2 };

template <int G, int P, int Mode, int Chunks>
QBINFER_INLINE void count_groups(const BConvPlan& p, const uint16x8_t* const* src,
                                 const std::uint32_t* weights, const std::int32_t* wsum,
                                 std::size_t g0, std::size_t co, uint32x4_t k_total,
                                 const unsigned* missing, const float* scale, const float* bias,
                                 int n_px, float* const* out_px) {
  const std::size_t gs = p.stream * Neon::kLanes;  // 32-bit units per group
  const std::uint32_t* w[G];
  for (int g = 0; g < G; ++g) w[g] = weights + (g0 + g) * gs;
  uint16x8_t acc[G][P];
  for (int g = 0; g < G; ++g) {
    for (int n = 0; n < P; ++n) acc[g][n] = vdupq_n_u16(0);
  }
  // Two units per iteration: the loop's pointer updates and branch are paid once per 48 NEON
  // operations (AArch64); an odd stream's (tap row's) last unit follows.
  if constexpr (Chunks == 0) {
    const uint16x8_t* a = src[0];
    const uint16x8_t* const a_end = a + p.stream / 2 * 2 * kTilePixels;
    for (; a != a_end; a += 2 * kTilePixels) {
      for (int u = 0; u < 2; ++u) {
        uint8x16_t x[P];
        for (int n = 0; n < P; ++n) x[n] = vreinterpretq_u8_u16(a[u * kTilePixels + n]);
        for (int g = 0; g < G; ++g) {
          const uint8x16_t wv = vreinterpretq_u8_u32(vld1q_u32(w[g] + u * Neon::kLanes));
          for (int n = 0; n < P; ++n)
            acc[g][n] = vpadalq_u8(acc[g][n], vcntq_u8(veorq_u8(wv, x[n])));
        }
      }
      for (int g = 0; g < G; ++g) w[g] += 2 * Neon::kLanes;
    }
    if (p.stream % 2 != 0) {  // a = the last unit
      for (int g = 0; g < G; ++g) {
        const uint8x16_t wv = vreinterpretq_u8_u32(vld1q_u32(w[g]));
        for (int n = 0; n < P; ++n)
          acc[g][n] = vpadalq_u8(acc[g][n], vcntq_u8(veorq_u8(wv, vreinterpretq_u8_u16(a[n]))));
      }
    }
  } else {
    // Chunks known at compile time: every load's offset is an immediate, one pointer per
    // tap row, so the loop spends no integer operations per pixel.
    constexpr int kUnits = 3 * Chunks;  // units of a tap row
    for (int ky = 0; ky < 3; ++ky) {
      const uint16x8_t* a = src[ky];
      for (int u = 0; u < kUnits; ++u, ++a) {
        // With Chunks = 1 pixel n + 1's unit u is pixel n's unit u + 1: GCC then carries loads
        // across iterations in register copies (MOV, a NEON operation each, the scarce kind).
        // The empty asm hides that the pointers are related.
        hide_pointer(a);
        uint8x16_t x[P];
        for (int n = 0; n < P; ++n) x[n] = vreinterpretq_u8_u16(a[n * Chunks]);
        for (int g = 0; g < G; ++g) {
          const uint8x16_t wv = vreinterpretq_u8_u32(vld1q_u32(w[g]));
          for (int n = 0; n < P; ++n)
            acc[g][n] = vpadalq_u8(acc[g][n], vcntq_u8(veorq_u8(wv, x[n])));
          w[g] += Neon::kLanes;
        }
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const std::size_t gi = g0 + g;
    const std::size_t o0 = gi * 2 * Neon::kLanes, o1 = o0 + Neon::kLanes;
    if constexpr (Mode != kGeneric) {
      // dot = K - 2 * count per channel: 2 * low half = (c << 16) >> 15, 2 * high half =
      // (c >> 15) with the low half's top bit cleared; then the contract's rounded multiply
      // and rounded add (vmulq_f32, vaddq_f32: the build forbids contracting them to FMLA).
      const float32x4_t s0 = vld1q_f32(scale + o0), s1 = vld1q_f32(scale + o1);
      const float32x4_t b0 = vld1q_f32(bias + o0), b1 = vld1q_f32(bias + o1);
      const uint32x4_t high_mask = vdupq_n_u32(0x1fffe);
      const std::int32_t* wsum_g = wsum + gi * p.taps * p.per_vec;
      for (int n = 0; n < P; ++n) {
        const uint32x4_t c = vreinterpretq_u32_u16(acc[g][n]);
        const uint32x4_t low2 = vshrq_n_u32(vshlq_n_u32(c, 16), 15);
        const uint32x4_t high2 = vandq_u32(vshrq_n_u32(c, 15), high_mask);
        uint32x4_t d0 = vsubq_u32(k_total, low2);
        uint32x4_t d1 = vsubq_u32(k_total, high2);
        if (Mode == kPlainCorrected && missing[n] != 0) {
          d0 = vsubq_u32(d0, Kernel::correction(wsum_g, p.per_vec, missing[n]));
          d1 = vsubq_u32(d1, Kernel::correction(wsum_g + Neon::kLanes, p.per_vec, missing[n]));
        }
        const float32x4_t f0 = vcvtq_f32_s32(vreinterpretq_s32_u32(d0));
        const float32x4_t f1 = vcvtq_f32_s32(vreinterpretq_s32_u32(d1));
        vst1q_f32(out_px[n] + o0, vaddq_f32(vmulq_f32(f0, s0), b0));
        vst1q_f32(out_px[n] + o1, vaddq_f32(vmulq_f32(f1, s1), b1));
      }
    } else {
      const std::int32_t* wsum_g = wsum + gi * p.taps * p.per_vec;
      const std::size_t n0 = std::min(Neon::kLanes, co - o0);
      for (int n = 0; n < n_px; ++n) {
        const uint32x4_t count = vreinterpretq_u32_u16(acc[g][n]);
        uint32x4_t corr = vdupq_n_u32(0);
        if (missing[n] != 0) corr = Kernel::correction(wsum_g, p.per_vec, missing[n]);
        Kernel::finish(k_total, Neon::low16(count), missing[n] != 0 ? &corr : nullptr, o0, n0,
                       scale, bias, out_px[n]);
        if (o1 < co) {
          if (missing[n] != 0)
            corr = Kernel::correction(wsum_g + Neon::kLanes, p.per_vec, missing[n]);
          Kernel::finish(k_total, Neon::high16(count), missing[n] != 0 ? &corr : nullptr, o1,
                         std::min(Neon::kLanes, co - o1), scale, bias, out_px[n]);
        }
      }
    }
  }
}

// Groups [g_begin, g_end) of one tile, kTileGroups at a time.
template <int P, int Mode, int Chunks>
void count_tile(const BConvPlan& p, const uint16x8_t* const* src, const std::uint32_t* weights,
                const std::int32_t* wsum, std::size_t g_begin, std::size_t g_end, std::size_t co,
                uint32x4_t k_total, const unsigned* missing, const float* scale, const float* bias,
                int n_px, float* const* out_px) {
  std::size_t g = g_begin;
  for (; g + kTileGroups <= g_end; g += kTileGroups) {
    count_groups<kTileGroups, P, Mode, Chunks>(p, src, weights, wsum, g, co, k_total, missing,
                                               scale, bias, n_px, out_px);
  }
  if constexpr (kTileGroups > 1) {
    if (g < g_end) {
      count_groups<1, P, Mode, Chunks>(p, src, weights, wsum, g, co, k_total, missing, scale, bias,
                                       n_px, out_px);
    }
  }
}

// All groups of one tile of P streams (n_px of them written): a plain epilogue for the full
// groups of a full tile.
template <int P, int Chunks>
void count_all_groups(const BConvPlan& p, const uint16x8_t* const* src,
                      const std::uint32_t* weights, const std::int32_t* wsum, std::size_t co,
                      uint32x4_t k_total, const unsigned* missing, const float* scale,
                      const float* bias, int n_px, float* const* out_px) {
  if constexpr (P == kTilePixels) {
    if (n_px == P) {
      bool any_missing = false;
      for (int n = 0; n < P; ++n) any_missing = any_missing || missing[n] != 0;
      // The groups whose 2 * kLanes channels all exist (co % 8 == 0: every group).
      const std::size_t full_groups = co / (2 * Neon::kLanes);
      if (any_missing) {
        count_tile<P, kPlainCorrected, Chunks>(p, src, weights, wsum, 0, full_groups, co, k_total,
                                               missing, scale, bias, n_px, out_px);
      } else {
        count_tile<P, kPlain, Chunks>(p, src, weights, wsum, 0, full_groups, co, k_total, missing,
                                      scale, bias, n_px, out_px);
      }
      count_tile<P, kGeneric, Chunks>(p, src, weights, wsum, full_groups, p.groups, co, k_total,
                                      missing, scale, bias, n_px, out_px);
      return;
    }
  }
  count_tile<P, kGeneric, Chunks>(p, src, weights, wsum, 0, p.groups, co, k_total, missing, scale,
                                  bias, n_px, out_px);
}

void run_rows_broadcast(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                        const std::uint32_t* weights, const std::int32_t* wsum, const float* scale,
                        const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
  alignas(64) uint16x8_t buf[kMaxBroadcastUnits * kTilePixels];
  const std::size_t W = s.width, co = s.out_channels;
  const std::size_t end = y_end * W;
  const uint32x4_t k_total =
      vdupq_n_u32(static_cast<std::uint32_t>(p.taps) * static_cast<std::uint32_t>(s.in_channels));
  const bool zero_pad = s.padding == BinaryPadding::kZero;
  for (std::size_t p0 = y_begin * W; p0 < end; p0 += kTilePixels) {
    const int n_px = static_cast<int>(std::min<std::size_t>(kTilePixels, end - p0));
    unsigned missing[kTilePixels] = {};
    float* out_px[kTilePixels] = {};
    for (int n = 0; n < n_px; ++n) {
      const std::size_t px = p0 + static_cast<std::size_t>(n);
      const std::size_t y = px / W, x = px % W;
      gather_broadcast(s, p, in, y, x, buf + n);
      missing[n] = zero_pad ? Kernel::missing_taps(s, y, x) : 0;
      out_px[n] = out + px * co;
    }
    // A short last tile counts only its own streams (a 7x7 image is 12 tiles of 4 and one of 1).
    const uint16x8_t* src[1] = {buf};
    switch (n_px) {
      case 1:
        count_all_groups<1, 0>(p, src, weights, wsum, co, k_total, missing, scale, bias, n_px,
                               out_px);
        break;
      case 2:
        count_all_groups<2, 0>(p, src, weights, wsum, co, k_total, missing, scale, bias, n_px,
                               out_px);
        break;
      case 3:
        count_all_groups<3, 0>(p, src, weights, wsum, co, k_total, missing, scale, bias, n_px,
                               out_px);
        break;
      default:
        count_all_groups<kTilePixels, 0>(p, src, weights, wsum, co, k_total, missing, scale, bias,
                                         n_px, out_px);
        break;
    }
  }
}

// ---- kernel 3: each input row broadcast once ----
// A pixel of a 3x3 is in the streams of nine output pixels: gathering per output pixel
// broadcasts (and stores: 2 cycles per q register on the A72) every unit nine times. Here the
// input rows y - 1, y, y + 1 are broadcast once into a ring of three rows of W + 5 columns
// (column -1 and those past the image zero, so taps outside the image and the spare pixels of
// a short last tile read zeros), each row once per image, and a tile of 4 pixels of one output
// row reads its units straight from the rows: for a tap row, pixel n's units are the
// 3 * chunks consecutive vectors from column x + n - 1.
// 24 KiB: the three rows stay in the 32 KiB L1 beside the weights in flight (a 56x56 3x3 over
// 128 channels needs 22.9 KiB); wider rows take the per-pixel gather.
constexpr std::size_t kMaxRingVectors = 1536;

std::size_t ring_row_vectors(const BConvShape& s, const BConvPlan& p) {
  return (s.width + 1 + kTilePixels) * p.chunks;
}

// Input row r (-1 <= r <= H) broadcast into dst: column c at (c + 1) * chunks.
void broadcast_row(const BConvShape& s, const BConvPlan& p, const BitWord* in, std::ptrdiff_t r,
                   uint16x8_t* dst) {
  const std::size_t W = s.width, cs = p.chunks, vectors = ring_row_vectors(s, p);
  const std::size_t words = words_for_channels(s.in_channels);
  if (r < 0 || static_cast<std::size_t>(r) >= s.height) {
    for (std::size_t i = 0; i < vectors; ++i) dst[i] = vdupq_n_u16(0);
    return;
  }
  for (std::size_t i = 0; i < cs; ++i) dst[i] = vdupq_n_u16(0);
  for (std::size_t i = (W + 1) * cs; i < vectors; ++i) dst[i] = vdupq_n_u16(0);
  const std::size_t full_words = cs / 4, tail_chunks = cs % 4;
  const BitWord* px = in + static_cast<std::size_t>(r) * W * words;
  uint16x8_t* d = dst + cs;
  for (std::size_t x = 0; x < W; ++x, px += words) {
    for (std::size_t w = 0; w < full_words; ++w, d += 4) {
      uint16x4_t v;
      std::memcpy(&v, px + w, sizeof(v));
      d[0] = vdupq_lane_u16(v, 0);
      d[1] = vdupq_lane_u16(v, 1);
      d[2] = vdupq_lane_u16(v, 2);
      d[3] = vdupq_lane_u16(v, 3);
    }
    for (std::size_t j = 0; j < tail_chunks; ++j, ++d) {
      *d = vdupq_n_u16(static_cast<std::uint16_t>(px[full_words] >> (16 * j)));
    }
  }
}

constexpr std::size_t kMaxRingChunks = 8;  // Ci <= 128; instantiated for each chunk count

bool ring_fits(const BConvShape& s, const BConvPlan& p) {
  return s.kernel == 3 && p.chunks <= kMaxRingChunks &&
         3 * ring_row_vectors(s, p) <= kMaxRingVectors;
}

template <int Chunks>
void run_rows_ring(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                   const std::uint32_t* weights, const std::int32_t* wsum, const float* scale,
                   const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
  alignas(64) uint16x8_t ring[kMaxRingVectors];
  const std::size_t W = s.width, co = s.out_channels, row_vectors = ring_row_vectors(s, p);
  const uint32x4_t k_total =
      vdupq_n_u32(static_cast<std::uint32_t>(p.taps) * static_cast<std::uint32_t>(s.in_channels));
  const bool zero_pad = s.padding == BinaryPadding::kZero;
  std::ptrdiff_t held[3] = {-2, -2, -2};  // the input row in each slot (-2: none)
  for (std::size_t y = y_begin; y < y_end; ++y) {
    const uint16x8_t* row[3];
    for (int ky = 0; ky < 3; ++ky) {
      const std::ptrdiff_t r = static_cast<std::ptrdiff_t>(y) - 1 + ky;
      const std::size_t slot = static_cast<std::size_t>(r + 3) % 3;
      if (held[slot] != r) {
        broadcast_row(s, p, in, r, ring + slot * row_vectors);
        held[slot] = r;
      }
      row[ky] = ring + slot * row_vectors;
    }
    for (std::size_t x = 0; x < W; x += kTilePixels) {
      const int n_px = static_cast<int>(std::min<std::size_t>(kTilePixels, W - x));
      unsigned missing[kTilePixels];
      float* out_px[kTilePixels];
      for (int n = 0; n < kTilePixels; ++n) {
        missing[n] = zero_pad && n < n_px ? Kernel::missing_taps(s, y, x + n) : 0;
        out_px[n] = out + (y * W + x + static_cast<std::size_t>(std::min(n, n_px - 1))) * co;
      }
      const uint16x8_t* src[3] = {row[0] + x * p.chunks, row[1] + x * p.chunks,
                                  row[2] + x * p.chunks};
      count_all_groups<kTilePixels, Chunks>(p, src, weights, wsum, co, k_total, missing, scale,
                                            bias, n_px, out_px);
    }
  }
}

void run_rows_ring_any(const BConvShape& s, const BConvPlan& p, const BitWord* in,
                       const std::uint32_t* weights, const std::int32_t* wsum, const float* scale,
                       const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
  switch (p.chunks) {
    case 1:
      return run_rows_ring<1>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 2:
      return run_rows_ring<2>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 3:
      return run_rows_ring<3>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 4:
      return run_rows_ring<4>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 5:
      return run_rows_ring<5>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 6:
      return run_rows_ring<6>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    case 7:
      return run_rows_ring<7>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    default:
      return run_rows_ring<8>(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
  }
}

// The broadcast path's plan: 16-bit lanes, 8 channels per group, and only the chunks that hold
// channels (ceil(Ci / 16) per tap: a 3x3 over 16 channels streams 9 units, not the 36 of four
// chunks per word). Kernel 3 with Ci <= 32 runs here too, instead of Kernel's pair and nine-tap
// paths (their one vector per 4 channels and per-pixel adder trees cost 2-3x more per MAC). The
// blob is bconv_pack's 16-bit layout for this plan: [G][tap][chunk] vectors, then wsum.
bool broadcast_eligible(const BConvShape& s) {
  const std::size_t taps = s.kernel * s.kernel;
  return (s.kernel == 1 || s.kernel == 3) && s.out_channels > Neon::kLanes &&
         taps * s.in_channels <= 65535 && taps * ((s.in_channels + 15) / 16) <= kMaxBroadcastUnits;
}

BConvPlan broadcast_plan(const BConvShape& s) {
  BConvPlan p{};
  p.lane_bits = 16;
  p.lanes = Neon::kLanes;
  p.per_vec = 2 * Neon::kLanes;
  p.groups = (s.out_channels + p.per_vec - 1) / p.per_vec;
  p.taps = s.kernel * s.kernel;
  p.chunks = (s.in_channels + 15) / 16;
  p.stream = p.taps * p.chunks;
  const std::size_t weight_bytes = p.groups * p.stream * p.lanes * 4;
  p.wsum_offset = (weight_bytes + 63) / 64 * 64;
  const std::size_t wsum_bytes = s.kernel == 3 ? p.groups * p.taps * p.per_vec * 4 : 0;
  p.bytes = std::max<std::size_t>(64, (p.wsum_offset + wsum_bytes + 63) / 64 * 64);
  return p;
}

std::size_t packed_weight_bytes(const BConvShape& s) {
  return broadcast_eligible(s) ? broadcast_plan(s).bytes : Kernel::packed_weight_bytes(s);
}

void pack_weight(const BConvShape& s, const BitWord* weight, void* packed) {
  if (broadcast_eligible(s)) {
    bconv_pack(s, broadcast_plan(s), weight, packed);
  } else {
    Kernel::pack_weight(s, weight, packed);
  }
}

void run_rows(const BConvShape& s, const BitWord* in, const void* packed, const float* scale,
              const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
  if (broadcast_eligible(s)) {
    assert(s.kernel == 1 || s.kernel == 3);
    assert(y_begin <= y_end && y_end <= s.height);
    assert(reinterpret_cast<std::uintptr_t>(packed) % 64 == 0);
    const BConvPlan p = broadcast_plan(s);
    const auto* weights = static_cast<const std::uint32_t*>(packed);
    const auto* wsum =
        reinterpret_cast<const std::int32_t*>(static_cast<const char*>(packed) + p.wsum_offset);
    if (ring_fits(s, p)) {
      run_rows_ring_any(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    } else {
      run_rows_broadcast(s, p, in, weights, wsum, scale, bias, y_begin, y_end, out);
    }
    return;
  }
  Kernel::run_rows(s, in, packed, scale, bias, y_begin, y_end, out);
}

}  // namespace

const BConvKernels kBConvKernels__neon{"neon", &packed_weight_bytes, &pack_weight, &run_rows};

// BCONV2D_GENERAL: the strided 3x3 on the tiles above, the rest on the reference.
const BConvGeneralKernels kBConvGeneralKernels__neon{"neon", &Kernel::general_packed_weight_bytes,
                                                     &Kernel::general_pack_weight,
                                                     &Kernel::general_run_rows};

}  // namespace qbinfer
