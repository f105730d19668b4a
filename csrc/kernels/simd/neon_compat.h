// Lets the AArch64 NEON kernels (*_neon.cc) compile for 32-bit ARMv7-A NEON (armhf, built with
// -mfpu=neon-vfpv4) with the same results, bit for bit. Include it after <arm_neon.h> (or
// vec_neon.h) in every *_neon.cc file; on AArch64 it is empty.
//
// Two kinds of differences are bridged, each by a function of the intrinsic's own name declared
// in namespace qbinfer: the kernels call the intrinsics unqualified from inside that namespace,
// so there these declarations hide the global <arm_neon.h> ones (NEON vector types have no
// associated namespace, so argument-dependent lookup cannot pick the global ones instead).
//   1. Intrinsics AArch64 has and ARMv7 lacks (across-lane sums and maxima, ZIP1/ZIP2, TBL of a
//      q register, FRINTI, FCVTNS, FDIV): rebuilt from ARMv7 instructions or, where ARMv7 NEON
//      has nothing exact, from scalar VFP per lane.
//   2. Float arithmetic and compares. ARMv7 Advanced SIMD ignores the FPSCR: it always flushes
//      denormal inputs and results to zero and returns the default NaN. AArch64 NEON follows
//      FPCR (IEEE by default), as does the portable reference. The compares are done on the
//      integer images of the floats instead (exact for every input); add, sub, mul and fused
//      multiply-add run on NEON and redo on scalar VFP (IEEE under Linux's default FPSCR) every
//      lane where NEON may have differed: a denormal input, or a result that is zero, denormal,
//      infinite or NaN (a flushed result reads as zero). A lane without any of those never met
//      a denormal and NEON rounds it to nearest-even as IEEE does.
#pragma once

#include <arm_neon.h>

#if defined(__arm__) && !defined(__aarch64__)

#if !defined(__ARM_NEON) || !defined(__ARM_FEATURE_FMA)
#error "neon_compat.h: compile the ARMv7 NEON kernels with -mfpu=neon-vfpv4 (CMakeLists.txt)"
#endif

#include <cmath>
#include <cstdint>

namespace qbinfer {
namespace neon_compat {

// ---- exact float compares on integer images -------------------------------------------------
// Key of a float: its bits as int32 for +x, minus its magnitude bits for -x. The keys of two
// non-NaN floats compare as the floats do (-0 and +0 both key 0), denormals included.
inline int32x4_t key(float32x4_t x) {
  const int32x4_t bits = vreinterpretq_s32_f32(x);
  const int32x4_t sign = vshrq_n_s32(bits, 31);  // all ones for negative
  const int32x4_t mag = vandq_s32(bits, vdupq_n_s32(0x7fffffff));
  return vsubq_s32(veorq_s32(mag, sign), sign);
}
// All ones where x is not NaN.
inline uint32x4_t ordered(float32x4_t x) {
  const int32x4_t mag = vandq_s32(vreinterpretq_s32_f32(x), vdupq_n_s32(0x7fffffff));
  return vcleq_s32(mag, vdupq_n_s32(0x7f800000));
}
inline uint32x4_t both_ordered(float32x4_t a, float32x4_t b) {
  return vandq_u32(ordered(a), ordered(b));
}

// ---- fix-up of NEON float arithmetic ---------------------------------------------------------
inline uint32x4_t exponent_is(float32x4_t x, std::uint32_t e) {
  const uint32x4_t bits = vreinterpretq_u32_f32(x);
  return vceqq_u32(vandq_u32(bits, vdupq_n_u32(0x7f800000u)), vdupq_n_u32(e));
}
// Denormal: exponent 0 and a nonzero fraction.
inline uint32x4_t denormal(float32x4_t x) {
  const uint32x4_t frac = vandq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x007fffffu));
  return vandq_u32(exponent_is(x, 0), vmvnq_u32(vceqq_u32(frac, vdupq_n_u32(0))));
}
// Lanes of r (computed by NEON) that may differ from IEEE: see the header comment.
inline uint32x4_t suspect(float32x4_t r, uint32x4_t inputs_denormal) {
  return vorrq_u32(inputs_denormal, vorrq_u32(exponent_is(r, 0), exponent_is(r, 0x7f800000u)));
}
inline bool any(uint32x4_t m) {
  const uint32x2_t h = vorr_u32(vget_low_u32(m), vget_high_u32(m));
  return (vget_lane_u32(h, 0) | vget_lane_u32(h, 1)) != 0;
}

// Redoes the lanes of r that `redo` marks with op on scalar VFP.
template <class Op>
inline float32x4_t redo_lanes(float32x4_t r, uint32x4_t redo, Op op) {
  if (!any(redo)) return r;
  float out[4];
  std::uint32_t m[4];
  vst1q_f32(out, r);
  vst1q_u32(m, redo);
  for (int i = 0; i < 4; ++i) {
    if (m[i] != 0) out[i] = op(i);
  }
  return vld1q_f32(out);
}

// Scalar IEEE max/min as FMAX/FMIN: NaN in -> that NaN (quieted), -0 < +0.
inline bool is_nan(float x) { return x != x; }
inline float quiet(float x) {
  std::uint32_t b;
  __builtin_memcpy(&b, &x, 4);
  b |= 0x00400000u;
  __builtin_memcpy(&x, &b, 4);
  return x;
}
inline float fmax_ieee(float a, float b) {
  if (is_nan(a)) return quiet(a);
  if (is_nan(b)) return quiet(b);
  if (a == 0.0f && b == 0.0f) return std::signbit(a) ? b : a;
  return a > b ? a : b;
}

}  // namespace neon_compat

// ---- 1. AArch64-only intrinsics --------------------------------------------------------------

// ADDV / ADDLV (integers: any order is exact).
inline std::uint32_t vaddvq_u32(uint32x4_t v) {
  const uint32x2_t s = ::vadd_u32(vget_low_u32(v), vget_high_u32(v));
  return vget_lane_u32(::vpadd_u32(s, s), 0);
}
inline std::uint64_t vaddlvq_u32(uint32x4_t v) {
  const uint64x2_t s = vpaddlq_u32(v);
  return vgetq_lane_u64(s, 0) + vgetq_lane_u64(s, 1);
}
inline std::uint16_t vaddlv_u8(uint8x8_t v) {
  const uint64x1_t s = vpaddl_u32(vpaddl_u16(vpaddl_u8(v)));
  return static_cast<std::uint16_t>(vget_lane_u64(s, 0));
}

// FADDP, FADDP: (v0 + v1) + (v2 + v3), each add rounded (IEEE, on VFP).
inline float vaddvq_f32(float32x4_t v) {
  float x[4];
  vst1q_f32(x, v);
  const float lo = x[0] + x[1];
  const float hi = x[2] + x[3];
  return lo + hi;
}
// FMAXV: max(max(v0, v1), max(v2, v3)) with FMAX's rules.
inline float vmaxvq_f32(float32x4_t v) {
  float x[4];
  vst1q_f32(x, v);
  return neon_compat::fmax_ieee(neon_compat::fmax_ieee(x[0], x[1]),
                                neon_compat::fmax_ieee(x[2], x[3]));
}

// ZIP1 / ZIP2: the two halves of ARMv7's VZIP.
inline uint16x8_t vzip1q_u16(uint16x8_t a, uint16x8_t b) { return ::vzipq_u16(a, b).val[0]; }
inline uint16x8_t vzip2q_u16(uint16x8_t a, uint16x8_t b) { return ::vzipq_u16(a, b).val[1]; }
inline uint16x4_t vzip1_u16(uint16x4_t a, uint16x4_t b) { return ::vzip_u16(a, b).val[0]; }
inline uint16x4_t vzip2_u16(uint16x4_t a, uint16x4_t b) { return ::vzip_u16(a, b).val[1]; }

// TBL with one 16-byte table: two VTBL of the table as a pair of d registers (an index >= 16
// gives 0 in both).
inline uint8x16_t vqtbl1q_u8(uint8x16_t table, uint8x16_t idx) {
  uint8x8x2_t t;
  t.val[0] = vget_low_u8(table);
  t.val[1] = vget_high_u8(table);
  return vcombine_u8(::vtbl2_u8(t, vget_low_u8(idx)), ::vtbl2_u8(t, vget_high_u8(idx)));
}

// FDIV: per lane on VFP (ARMv7 NEON has only a reciprocal estimate).
inline float32x4_t vdivq_f32(float32x4_t a, float32x4_t b) {
  float x[4], y[4];
  vst1q_f32(x, a);
  vst1q_f32(y, b);
  for (int i = 0; i < 4; ++i) x[i] /= y[i];
  return vld1q_f32(x);
}

// FRINTI: round to integral in the current rounding mode (VFP's FPSCR; NEON has no such read).
inline float32x4_t vrndiq_f32(float32x4_t v) {
  float x[4];
  vst1q_f32(x, v);
  for (int i = 0; i < 4; ++i) x[i] = std::nearbyint(x[i]);
  return vld1q_f32(x);
}

// FCVTNS: to int32, rounding to nearest with ties to even whatever the rounding mode;
// saturating, NaN -> 0. |v| < 2^23 is rounded by adding and subtracting 2^23 (NEON always
// rounds to nearest-even; the sum lies in [2^23, 2^24), where the spacing is 1, and a denormal
// flushed to 0 rounds to 0 either way); larger |v| are integers already. VCVT then truncates
// an integer (exact) and saturates, as FCVTNS.
inline int32x4_t vcvtnq_s32_f32(float32x4_t v) {
  const float32x4_t two23 = vdupq_n_f32(8388608.0f);
  const uint32x4_t sign_bit = vdupq_n_u32(0x80000000u);
  const float32x4_t mag = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v), sign_bit));
  const float32x4_t rounded_mag = ::vsubq_f32(::vaddq_f32(mag, two23), two23);
  const uint32x4_t rounded_bits =
      vorrq_u32(vreinterpretq_u32_f32(rounded_mag), vandq_u32(vreinterpretq_u32_f32(v), sign_bit));
  // The integer-image compare: mag < 2^23, false for NaN, which VCVT turns into 0 anyway.
  const uint32x4_t small = vcltq_u32(vreinterpretq_u32_f32(mag), vreinterpretq_u32_f32(two23));
  return ::vcvtq_s32_f32(vbslq_f32(small, vreinterpretq_f32_u32(rounded_bits), v));
}

// ---- 2. IEEE float compares and arithmetic ---------------------------------------------------

inline uint32x4_t vcgeq_f32(float32x4_t a, float32x4_t b) {
  return vandq_u32(neon_compat::both_ordered(a, b),
                   vcgeq_s32(neon_compat::key(a), neon_compat::key(b)));
}
inline uint32x4_t vcgtq_f32(float32x4_t a, float32x4_t b) {
  return vandq_u32(neon_compat::both_ordered(a, b),
                   vcgtq_s32(neon_compat::key(a), neon_compat::key(b)));
}
inline uint32x4_t vcleq_f32(float32x4_t a, float32x4_t b) { return vcgeq_f32(b, a); }
inline uint32x4_t vcltq_f32(float32x4_t a, float32x4_t b) { return vcgtq_f32(b, a); }
inline uint32x4_t vceqq_f32(float32x4_t a, float32x4_t b) {
  return vandq_u32(neon_compat::both_ordered(a, b),
                   vceqq_s32(neon_compat::key(a), neon_compat::key(b)));
}

// FABS: clears the sign bit, NaNs included (ARMv7's VABS does too; spelled out to be sure it
// is never flushed).
inline float32x4_t vabsq_f32(float32x4_t v) {
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v), vdupq_n_u32(0x80000000u)));
}

// FMAX / FMIN: NaN in -> a quiet NaN out; max(-0, +0) = +0, min(-0, +0) = -0.
inline float32x4_t vmaxq_f32(float32x4_t a, float32x4_t b) {
  const float32x4_t r = vbslq_f32(vcgtq_f32(a, b), a, b);
  // Ties of -0 and +0 (keys equal) and NaNs go to the scalar rule.
  const uint32x4_t redo =
      vorrq_u32(vmvnq_u32(neon_compat::both_ordered(a, b)),
                vandq_u32(neon_compat::exponent_is(a, 0), neon_compat::exponent_is(b, 0)));
  return neon_compat::redo_lanes(r, redo, [&](int i) {
    float x[4], y[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    return neon_compat::fmax_ieee(x[i], y[i]);
  });
}
inline float32x4_t vminq_f32(float32x4_t a, float32x4_t b) {
  // min(a, b) = -max(-a, -b) for every input under FMAX/FMIN's rules (NaNs stay NaN).
  const uint32x4_t sign_bit = vdupq_n_u32(0x80000000u);
  const auto neg = [&](float32x4_t v) {
    return vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), sign_bit));
  };
  return neg(vmaxq_f32(neg(a), neg(b)));
}

inline float32x4_t vaddq_f32(float32x4_t a, float32x4_t b) {
  const float32x4_t r = ::vaddq_f32(a, b);
  const uint32x4_t redo =
      neon_compat::suspect(r, vorrq_u32(neon_compat::denormal(a), neon_compat::denormal(b)));
  return neon_compat::redo_lanes(r, redo, [&](int i) {
    float x[4], y[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    return x[i] + y[i];
  });
}
inline float32x4_t vsubq_f32(float32x4_t a, float32x4_t b) {
  const float32x4_t r = ::vsubq_f32(a, b);
  const uint32x4_t redo =
      neon_compat::suspect(r, vorrq_u32(neon_compat::denormal(a), neon_compat::denormal(b)));
  return neon_compat::redo_lanes(r, redo, [&](int i) {
    float x[4], y[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    return x[i] - y[i];
  });
}
inline float32x4_t vmulq_f32(float32x4_t a, float32x4_t b) {
  const float32x4_t r = ::vmulq_f32(a, b);
  const uint32x4_t redo =
      neon_compat::suspect(r, vorrq_u32(neon_compat::denormal(a), neon_compat::denormal(b)));
  return neon_compat::redo_lanes(r, redo, [&](int i) {
    float x[4], y[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    return x[i] * y[i];
  });
}
// FMLA: c + a * b with one rounding.
inline float32x4_t vfmaq_f32(float32x4_t c, float32x4_t a, float32x4_t b) {
  const float32x4_t r = ::vfmaq_f32(c, a, b);
  const uint32x4_t redo = neon_compat::suspect(
      r, vorrq_u32(neon_compat::denormal(c),
                   vorrq_u32(neon_compat::denormal(a), neon_compat::denormal(b))));
  return neon_compat::redo_lanes(r, redo, [&](int i) {
    float x[4], y[4], z[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    vst1q_f32(z, c);
    return std::fma(x[i], y[i], z[i]);
  });
}

}  // namespace qbinfer

#endif  // 32-bit ARM
