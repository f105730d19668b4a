// The neon FC kernels: fc_simd.h instantiated with VecNeon (4 lanes, 4 outputs x 2
// accumulators: 8 FMLA chains, enough to cover its latency on a Cortex-A72). Bitplane weights are
// rebuilt 64 at a time by BitplaneDecoderNeon.
#include "kernels/simd/vec_neon.h"
#include "kernels/fc/fc_simd.h"
#include "kernels/fc/fc_variants.h"

namespace qbinfer {
namespace {

struct BitplaneDecoderNeon {
  // The 64 weights of one word position, 16 channels (one uint8x16) at a time: for each plane,
  // TBL spreads byte 2k of the plane word over lanes 0-7 and byte 2k + 1 over lanes 8-15, CMTST
  // against {1, 2, ..., 128} turns each lane's own bit into 0 / 0xFF, and the plane's weight 2^b
  // is ORed into the code. Then w = 255 - 2 * code in int16 (exact), widened to float.
  static void decode(const BitWord* word, std::size_t plane_stride, float32x4_t w[16]) {
    const uint8x16_t select = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t planes[8];
    for (unsigned b = 0; b < 8; ++b) {
      planes[b] = vreinterpretq_u8_u64(vdupq_n_u64(word[b * plane_stride]));
    }
    for (unsigned k = 0; k < 4; ++k) {
      const uint8x16_t idx = vcombine_u8(vdup_n_u8(static_cast<std::uint8_t>(2 * k)),
                                         vdup_n_u8(static_cast<std::uint8_t>(2 * k + 1)));
      uint8x16_t code = vdupq_n_u8(0);
      for (unsigned b = 0; b < 8; ++b) {
        const uint8x16_t set = vtstq_u8(vqtbl1q_u8(planes[b], idx), select);
        code = vorrq_u8(code, vandq_u8(set, vdupq_n_u8(static_cast<std::uint8_t>(1u << b))));
      }
      const int16x8_t c255 = vdupq_n_s16(255);
      const int16x8_t lo =
          vsubq_s16(c255, vshlq_n_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(code))), 1));
      const int16x8_t hi =
          vsubq_s16(c255, vshlq_n_s16(vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(code))), 1));
      w[4 * k + 0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
      w[4 * k + 1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
      w[4 * k + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
      w[4 * k + 3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
    }
  }
  // The 64 binary weights of one sign word as ±1.0f, 4 lanes at a time: lane i of vector v
  // tests bit 4v + i of the word (CMTST against {1, 2, 4, 8}), and a set bit (-1 by the bit
  // contract) puts the sign bit into 1.0f.
  static void signs(BitWord word, float32x4_t w[16]) {
    const uint32x4_t select = {1, 2, 4, 8};
    const uint32x4_t one = vreinterpretq_u32_f32(vdupq_n_f32(1.0f));
    const uint32x4_t sign = vdupq_n_u32(0x80000000u);
    for (unsigned v = 0; v < 16; ++v) {
      const auto nibble = static_cast<std::uint32_t>((word >> (4 * v)) & 0xFu);
      const uint32x4_t set = vtstq_u32(vdupq_n_u32(nibble), select);
      w[v] = vreinterpretq_f32_u32(vorrq_u32(one, vandq_u32(set, sign)));
    }
  }
};

}  // namespace

using FCF32x4R__neon = FCSimd<VecNeon, BitplaneDecoderNeon>;

const FCKernels kFCKernels__neon{"neon",
                                 &FCF32x4R__neon::f32,
                                 &FCF32x4R__neon::qs8,
                                 &FCF32x4R__neon::bitplane8,
                                 &FCF32x4R__neon::binary,
                                 &FCF32x4R__neon::bitplane8_packed};

}  // namespace qbinfer
