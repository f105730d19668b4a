// Vector traits for the Advanced SIMD float kernels (4 f32 lanes), on AArch64 and, through
// neon_compat.h, on ARMv7 NEON with the same results. Include only from *_neon*.cc files. The
// operations mirror vec_avx2.h one for one, with the same results lane for lane; everything has
// internal linkage (an unnamed namespace), like the x86 traits.
//
// NEON has no masked loads or stores, and the kernels' only masks are prefixes (lanes [0, n)),
// so a mask here is just n: a tail load copies n floats into a zeroed stack buffer and loads
// that, a tail store writes the buffer and copies n floats out. Nothing past p + n is read or
// written (bit_contract.h: tests allocate exactly).
#pragma once

#if !defined(__aarch64__) && !defined(_M_ARM64) && !defined(__ARM_NEON)
#error "vec_neon.h is for AArch64 or ARMv7 NEON"
#endif

#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace qbinfer {
namespace {

struct VecNeon {
  static constexpr std::size_t kLanes = 4;
  using F = float32x4_t;
  using I = int32x4_t;
  struct M {
    std::size_t n;  // active lanes [0, n), n <= 4
  };

  static M mask(std::size_t n) { return M{n}; }
  static M all() { return M{kLanes}; }

  static F zero() { return vdupq_n_f32(0.0f); }
  static F set1(float v) { return vdupq_n_f32(v); }
  static F load(const float* p) { return vld1q_f32(p); }
  // Masked-off lanes read as 0, as VMASKMOVPS.
  static F load(const float* p, M m) {
    float buf[kLanes] = {};
    std::memcpy(buf, p, m.n * sizeof(float));
    return vld1q_f32(buf);
  }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static void store(float* p, F v, M m) {
    float buf[kLanes];
    vst1q_f32(buf, v);
    std::memcpy(p, buf, m.n * sizeof(float));
  }

  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  // a * b + c with one rounding (FMLA), as the x86 traits' VFMADD; only the FC kernels use it,
  // whose contract is a tolerance (fc.h).
  static F fmadd(F a, F b, F c) { return vfmaq_f32(c, a, b); }

  // v >= 0 ? v : slope * v (NaN takes the slope branch, as the reference).
  static F prelu(F v, F slope) {
    const uint32x4_t ge = vcgeq_f32(v, vdupq_n_f32(0.0f));
    return vbslq_f32(ge, v, vmulq_f32(slope, v));
  }
  // y < 0 ? 0 : y (NaN propagates).
  static F relu(F y) {
    const uint32x4_t lt = vcltq_f32(y, vdupq_n_f32(0.0f));
    return vbslq_f32(lt, vdupq_n_f32(0.0f), y);
  }
  // Bit i = !(v[i] >= t[i]) (the bit contract's packing rule; FCMGE is false for NaN, so NaN
  // on either side gives 1).
  static std::uint32_t not_ge_bits(F v, F t) {
    const uint32x4_t lt = vmvnq_u32(vcgeq_f32(v, t));
    const uint32x4_t weights = {1u, 2u, 4u, 8u};
    return vaddvq_u32(vandq_u32(lt, weights));
  }
  static F abs(F v) { return vabsq_f32(v); }
  // x > acc ? x : acc, i.e. MAXPS(x, acc): a NaN x (or two zeros) leaves acc. FMAX would
  // return the NaN instead.
  static F max_keep_acc(F x, F acc) { return vbslq_f32(vcgtq_f32(x, acc), x, acc); }
  // Only ever reduces max_keep_acc accumulators (no NaN, no -0), where FMAXV is exact.
  static float hmax(F v) { return vmaxvq_f32(v); }
  static float hsum(F v) { return vaddvq_f32(v); }
  // nearbyint in the current rounding mode (FRINTI reads FPCR.RMode), as std::nearbyint and
  // the x86 traits' ROUND with _MM_FROUND_CUR_DIRECTION.
  static F round_cur(F v) { return vrndiq_f32(v); }
  static F clamp_nan_to_zero(F v, float lo, float hi) {
    // Reference order: v > hi ? hi : v; v < lo ? lo : v; NaN -> 0 (zeroed first, so FMIN/FMAX
    // never see a NaN).
    const uint32x4_t ord = vceqq_f32(v, v);
    v = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), ord));
    v = vminq_f32(v, vdupq_n_f32(hi));
    return vmaxq_f32(v, vdupq_n_f32(lo));
  }

  // int32 lanes
  static I izero() { return vdupq_n_s32(0); }
  static I iset1(std::int32_t v) { return vdupq_n_s32(v); }
  static I iload(const std::int32_t* p) { return vld1q_s32(p); }
  static I iadd(I a, I b) { return vaddq_s32(a, b); }
  // VPMADDWD's contract: lane-wise a * b for int32 lanes whose values fit int16, where b holds
  // an int16 in its low half and 0 in its high half (pack_qs8 stores weights that way, so b's
  // int32 value is not the weight). XTN keeps each lane's low 16 bits, SMULL multiplies them
  // exactly into int32: lo(a) * lo(b), as VPMADDWD gives with b's high half 0.
  static I imul16(I a, I b) { return vmull_s16(vmovn_s32(a), vmovn_s32(b)); }
  static F to_float(I v) { return vcvtq_f32_s32(v); }
  // Round to nearest even, CVTPS2DQ's default; only ever applied to integral values.
  static I to_int(F v) { return vcvtnq_s32_f32(v); }
  // 4 int8 codes -> int32 lanes.
  static I load_i8(const std::int8_t* p) {
    std::int32_t word;
    std::memcpy(&word, p, sizeof(word));
    const int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(word));
    return vmovl_s16(vget_low_s16(vmovl_s8(b)));
  }
  // n < 4 codes: lanes past n are 0 and nothing past p + n is read.
  static I load_i8(const std::int8_t* p, std::size_t n) {
    std::int8_t buf[kLanes] = {};
    std::memcpy(buf, p, n);
    return load_i8(buf);
  }
  // Saturating narrowing int32 -> int16 -> int8, as PACKSSDW + PACKSSWB.
  static int8x8_t narrow_i8(I v) {
    const int16x8_t w = vcombine_s16(vqmovn_s32(v), vqmovn_s32(v));
    return vqmovn_s16(w);
  }
  static void store_i8(std::int8_t* p, I v) {
    std::int8_t buf[8];
    vst1_s8(buf, narrow_i8(v));
    std::memcpy(p, buf, kLanes);
  }
  static void store_i8(std::int8_t* p, I v, std::size_t n) {
    std::int8_t buf[8];
    vst1_s8(buf, narrow_i8(v));
    std::memcpy(p, buf, n);
  }
};

}  // namespace
}  // namespace qbinfer
