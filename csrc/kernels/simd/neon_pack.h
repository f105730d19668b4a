// Packing compare bits into 64-bit words on NEON (AArch64, and ARMv7 through neon_compat.h)
// without a per-vector ADDV + move + shift: four 4-lane "x >= t" masks narrow to 16 bytes
// (UZP1 twice over u16 lanes, once over u8: each lane is all ones or all zeros, so any half of
// it is the whole), BIC keeps the bit weight 1 << (i % 8) of each byte whose lane is not >=,
// and pairwise adds (ADDP) sum 8 neighbouring bytes into one byte of the word (the weights are
// disjoint, so the sums are ORs). Per 64 lanes: 12 UZP1, 4 BIC, 4 ADDP and one move, against 16
// ADDV + 16 moves + 16 shifts + 16 ORs. Include only from *_neon*.cc files, after vec_neon.h.
#pragma once

#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"
#include "kernels/simd/vec_neon.h"

#include <cstddef>
#include <cstdint>

// The packer's callbacks must melt into the caller's unrolled word (GCC otherwise keeps a
// 16-times-called lambda out of line).
#if defined(_MSC_VER) && !defined(__clang__)
#define QBINFER_NEON_PACK_INLINE __forceinline
#define QBINFER_NEON_PACK_LAMBDA_INLINE
#else
#define QBINFER_NEON_PACK_INLINE inline __attribute__((always_inline))
#define QBINFER_NEON_PACK_LAMBDA_INLINE __attribute__((always_inline))
#endif

namespace qbinfer {

#if defined(__arm__) && !defined(__aarch64__)
// ARMv7 lacks these AArch64 intrinsics; as in neon_compat.h, functions of their names in
// namespace qbinfer hide the global ones from the code below.
// UZP1: the first half of ARMv7's VUZP (the even-numbered lanes of a, then of b).
inline uint16x8_t vuzp1q_u16(uint16x8_t a, uint16x8_t b) { return ::vuzpq_u16(a, b).val[0]; }
inline uint8x16_t vuzp1q_u8(uint8x16_t a, uint8x16_t b) { return ::vuzpq_u8(a, b).val[0]; }
// ADDP of q registers: the pairwise sums of a, then of b (ARMv7's VPADD takes d registers).
inline uint8x16_t vpaddq_u8(uint8x16_t a, uint8x16_t b) {
  return vcombine_u8(::vpadd_u8(vget_low_u8(a), vget_high_u8(a)),
                     ::vpadd_u8(vget_low_u8(b), vget_high_u8(b)));
}
#endif

namespace {

// 16 lanes' masks (lanes 0-3 in m0, ... 12-15 in m3) -> their "not >=" bits as bytes: byte i
// holds bit i % 8 when lane i is not >=, else 0.
QBINFER_NEON_PACK_INLINE uint8x16_t neon_not_ge_bytes(uint32x4_t m0, uint32x4_t m1, uint32x4_t m2,
                                                      uint32x4_t m3) {
  const uint8x16_t weights = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint16x8_t lo = vuzp1q_u16(vreinterpretq_u16_u32(m0), vreinterpretq_u16_u32(m1));
  const uint16x8_t hi = vuzp1q_u16(vreinterpretq_u16_u32(m2), vreinterpretq_u16_u32(m3));
  return vbicq_u8(weights, vuzp1q_u8(vreinterpretq_u8_u16(lo), vreinterpretq_u8_u16(hi)));
}

// Bytes of lanes 0-15, 16-31, 32-47, 48-63 -> the 64-bit word: [pairs] -> [quads] -> [octets],
// bytes 0..7 are the word's bytes in order.
QBINFER_NEON_PACK_INLINE std::uint64_t neon_word_of_bytes(uint8x16_t b0, uint8x16_t b1,
                                                          uint8x16_t b2, uint8x16_t b3) {
  const uint8x16_t quads = vpaddq_u8(vpaddq_u8(b0, b1), vpaddq_u8(b2, b3));
  return vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(quads, quads)), 0);
}
// The same for 32 lanes (bits 32..63 are 0).
QBINFER_NEON_PACK_INLINE std::uint64_t neon_word_of_bytes(uint8x16_t b0, uint8x16_t b1) {
  const uint8x16_t pairs = vpaddq_u8(b0, b1);
  const uint8x16_t quads = vpaddq_u8(pairs, pairs);
  return vgetq_lane_u32(vreinterpretq_u32_u8(vpaddq_u8(quads, quads)), 0);
}

// VecNeon plus whole-word packing, for epilogue_simd.h (its PacksWords hook): ge_of(k), called
// once for each vector k = 0 .. kVecs - 1 in order, gives vector k's "v >= t" mask; the result
// has bit 4k + i set where lane i of vector k is not >= (NaN: set), the bits
// VecNeon::not_ge_bits gives one vector at a time.
struct VecNeonWordPack : VecNeon {
  static constexpr bool kPacksWords = true;
  using GeMask = uint32x4_t;
  static QBINFER_NEON_PACK_INLINE GeMask ge_mask(F v, F t) { return vcgeq_f32(v, t); }

  template <class GeOf>
  static QBINFER_NEON_PACK_INLINE uint8x16_t group(GeOf& ge_of, std::size_t k0) {
    const GeMask m0 = ge_of(k0);
    const GeMask m1 = ge_of(k0 + 1);
    const GeMask m2 = ge_of(k0 + 2);
    const GeMask m3 = ge_of(k0 + 3);
    return neon_not_ge_bytes(m0, m1, m2, m3);
  }

  template <std::size_t kVecs, class GeOf>
  static QBINFER_NEON_PACK_INLINE std::uint64_t not_ge_word(GeOf&& ge_of) {
    static_assert(kVecs == 8 || kVecs == 16, "a word of 64 or 32 lanes");
    const uint8x16_t b0 = group(ge_of, 0);
    const uint8x16_t b1 = group(ge_of, 4);
    if constexpr (kVecs == 16) {
      const uint8x16_t b2 = group(ge_of, 8);
      const uint8x16_t b3 = group(ge_of, 12);
      return neon_word_of_bytes(b0, b1, b2, b3);
    } else {
      return neon_word_of_bytes(b0, b1);
    }
  }
};

}  // namespace
}  // namespace qbinfer
