// Bitpacking for Advanced SIMD (AArch64, and ARMv7 through neon_compat.h), 64 channels per
// block (bitpack_blocks_inl.h): sixteen FCMGE (ordered: false for NaN on either side; IEEE:
// -0.0 >= 0.0 true, which is exactly pack_bit in bit_contract.h) give the "x >= t" lanes, and
// neon_pack.h turns their complement into the word (UZP1 narrowing, BIC with the bit weights,
// ADDP sums: no ADDV per vector). A channel tail (< 64 channels) goes through zeroed stack
// buffers (NEON has no masked load, and nothing past the row may be read) and the word is
// masked to the valid channels, so tail bits stay 0.
#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"
#include "kernels/simd/neon_pack.h"

#include <cstdint>
#include <cstring>

#include "kernels/bitpack/bitpack_blocks_inl.h"
#include "kernels/bitpack/bitpack_variants.h"

namespace qbinfer {
namespace {

// "not x >= t" bytes of 16 channels (t == nullptr: thresholds 0).
QBINFER_NEON_PACK_INLINE uint8x16_t not_ge_bytes16(const float* x, const float* t) {
  uint32x4_t m[4];
  for (unsigned q = 0; q < 4; ++q) {
    const float32x4_t xv = vld1q_f32(x + 4 * q);
    const float32x4_t tv = t != nullptr ? vld1q_f32(t + 4 * q) : vdupq_n_f32(0.0f);
    m[q] = vcgeq_f32(xv, tv);
  }
  return neon_not_ge_bytes(m[0], m[1], m[2], m[3]);
}

// The packed bits of 64 whole channels.
inline std::uint64_t not_ge64(const float* x, const float* t) {
  const auto at = [t](unsigned c) { return t != nullptr ? t + c : nullptr; };
  const uint8x16_t b0 = not_ge_bytes16(x, at(0));
  const uint8x16_t b1 = not_ge_bytes16(x + 16, at(16));
  const uint8x16_t b2 = not_ge_bytes16(x + 32, at(32));
  const uint8x16_t b3 = not_ge_bytes16(x + 48, at(48));
  return neon_word_of_bytes(b0, b1, b2, b3);
}

// Bits for channels [0, n) of one 64-channel block, n in 1..64.
std::uint64_t pack64(const float* x, const float* t, unsigned n) {
  if (n >= 64) return not_ge64(x, t);
  float xb[64] = {}, tb[64] = {};
  std::memcpy(xb, x, n * sizeof(float));
  if (t != nullptr) std::memcpy(tb, t, n * sizeof(float));
  return not_ge64(xb, tb) & ((std::uint64_t{1} << n) - 1);
}

}  // namespace

const BitpackKernels kBitpackKernels__neon{"neon", &bitpack_f32_nhwc_blocks<64, &pack64>};

}  // namespace qbinfer
