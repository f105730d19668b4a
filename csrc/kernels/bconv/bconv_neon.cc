// Binary conv for AArch64 Advanced SIMD (Cortex-A72 and newer): the kernels of
// bconv_simd_inl.h with 128-bit vectors, four pixels per weight load:
//   bconv2d_8oc_16bit_4px__neon    8 output channels per q register (16-bit lanes), the default;
//   bconv2d_4oc_32bit_4px__neon    4 per q register (32-bit lanes) when Co <= 4 or k*k*Ci > 65535;
//   bconv2d_3x3_4oc_9tap__neon     3x3 with 16 < Ci <= 32;
//   bconv2d_3x3_4oc_5pair__neon    3x3 with Ci <= 16 (two taps per 32-bit lane).
// Counting. NEON has a byte popcount (CNT), so every XORed vector is counted directly (no
// Harley-Seal: without a three-input logic instruction a carry-save adder costs 3 ops per input,
// more than the count it saves): EOR + CNT + UADALP per 128 bits, UADALP adding the byte counts
// pairwise into 16-bit lanes. A 16-bit lane gains <= 16 per vector and its total is bounded by
// k*k*Ci <= 65535 (the plan's condition for 16-bit lanes: 2048 in-channels x 9 taps = 18432
// fits), so it never overflows; for 32-bit lanes the 16-bit halves are widened into the 32-bit
// totals every 4095 vectors (4095 * 16 < 2^16), exact for any |dot| < 2^31.
// Registers. Per pixel the counter holds 1 q register (2 for 32-bit lanes), so four pixels use 4
// to 8, plus the weight vector, four broadcasts and four XOR results: well within the 32 q
// registers, no spills; the four independent UADALP chains (latency 4 on the A72) keep both
// NEON pipes busy. The inner loop has no branch besides its own (the flush sits outside it).
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

}  // namespace

const BConvKernels kBConvKernels__neon{"neon", &Kernel::packed_weight_bytes, &Kernel::pack_weight,
                                       &Kernel::run_rows};

// BCONV2D_GENERAL: the strided 3x3 on the tiles above, the rest on the reference.
const BConvGeneralKernels kBConvGeneralKernels__neon{"neon", &Kernel::general_packed_weight_bytes,
                                                     &Kernel::general_pack_weight,
                                                     &Kernel::general_run_rows};

}  // namespace qbinfer
