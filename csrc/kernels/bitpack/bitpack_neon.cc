// Bitpacking for AArch64 Advanced SIMD, 16 channels per block (bitpack_blocks_inl.h): four FCMGE
// (ordered: false for NaN on either side; IEEE: -0.0 >= 0.0 true, which is exactly pack_bit in
// bit_contract.h) give the "x >= t" lanes; each is ANDed with its lane's bit weight and the
// four summed across lanes (ADDV) into 16 bits, whose complement is the packed bits. A channel
// tail (< 16 channels) goes through a zeroed stack buffer (NEON has no masked load, and nothing
// past the row may be read) and the complement is masked to the valid channels, so tail bits
// stay 0.
#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"

#include <cstdint>
#include <cstring>

#include "kernels/bitpack/bitpack_blocks_inl.h"
#include "kernels/bitpack/bitpack_variants.h"

namespace qbinfer {
namespace {

// "x >= t" bits of 16 channels (t == nullptr: thresholds 0).
inline std::uint32_t ge16(const float* x, const float* t) {
  const uint32x4_t w0 = {1u, 2u, 4u, 8u};
  uint32x4_t acc = vdupq_n_u32(0);
  for (unsigned q = 0; q < 4; ++q) {
    const float32x4_t xv = vld1q_f32(x + 4 * q);
    const float32x4_t tv = t != nullptr ? vld1q_f32(t + 4 * q) : vdupq_n_f32(0.0f);
    // Lane bits of quarter q are w0 << 4q: disjoint, so the sum below is an OR.
    acc = vorrq_u32(
        acc, vandq_u32(vcgeq_f32(xv, tv), vshlq_u32(w0, vdupq_n_s32(4 * static_cast<int>(q)))));
  }
  return vaddvq_u32(acc);
}

// Bits for channels [0, n) of one 16-channel block, n in 1..16.
inline std::uint64_t pack16(const float* x, const float* t, unsigned n) {
  if (n >= 16) return ~ge16(x, t) & 0xffffu;
  float xb[16] = {}, tb[16] = {};
  std::memcpy(xb, x, n * sizeof(float));
  if (t != nullptr) std::memcpy(tb, t, n * sizeof(float));
  return ~ge16(xb, tb) & ((1u << n) - 1);
}

}  // namespace

const BitpackKernels kBitpackKernels__neon{"neon", &bitpack_f32_nhwc_blocks<16, &pack16>};

}  // namespace qbinfer
