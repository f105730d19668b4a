// Vector traits for the AVX-512 float kernels (16 f32 lanes, __mmask16 tails). Include only
// from *_avx512.cc files (compiled with the AVX-512 flags). Everything here has internal
// linkage (an unnamed namespace), so the same template instantiated from another ISA's file
// can never be merged with this one by the linker (which would run AVX-512 code on an AVX2
// CPU).
#pragma once

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512DQ__) || \
    !defined(__AVX512VL__)
#error "vec_avx512.h needs -mavx512f -mavx512bw -mavx512dq -mavx512vl"
#endif

#include "kernels/simd/avx512_gcc12_warnings.h"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace qbinfer {
namespace {

struct VecAvx512 {
  static constexpr std::size_t kLanes = 16;
  using F = __m512;
  using I = __m512i;  // 16 int32 lanes
  using M = __mmask16;

  // Lanes [0, n), n <= 16.
  static M mask(std::size_t n) { return static_cast<M>(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
  static M all() { return static_cast<M>(0xFFFF); }

  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, F v, M m) { _mm512_mask_storeu_ps(p, m, v); }

  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  // a * b + c with one rounding. Also used as "0 + a * b" where that equals add(0, mul(a, b))
  // bit for bit (see dwconv_simd.h).
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }

  // v >= 0 ? v : slope * v (NaN takes the slope branch, as the reference). A masked multiply
  // rather than multiply + blend: one vector operation fewer, the same lanes.
  static F prelu(F v, F slope) {
    const M neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NGE_UQ);
    return _mm512_mask_mul_ps(v, neg, slope, v);
  }
  // y < 0 ? 0 : y (NaN propagates).
  static F relu(F y) {
    const M lt = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(lt, y, _mm512_setzero_ps());
  }
  // Bit i = !(v[i] >= t[i]) (the bit contract's packing rule; NaN gives 1).
  static std::uint32_t not_ge_bits(F v, F t) {
    return static_cast<std::uint32_t>(_mm512_cmp_ps_mask(v, t, _CMP_NGE_UQ));
  }
  static F abs(F v) { return _mm512_abs_ps(v); }
  // max(x, acc) where a NaN x leaves acc (MAXPS returns its second operand on NaN).
  static F max_keep_acc(F x, F acc) { return _mm512_max_ps(x, acc); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  // nearbyint in the current rounding mode, as std::nearbyint.
  static F round_cur(F v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
  }
  static F clamp_nan_to_zero(F v, float lo, float hi) {
    // Reference order: v > hi ? hi : v; v < lo ? lo : v; NaN -> 0.
    const M ord = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
    v = _mm512_maskz_mov_ps(ord, v);
    v = _mm512_min_ps(v, _mm512_set1_ps(hi));
    return _mm512_max_ps(v, _mm512_set1_ps(lo));
  }

  // int32 lanes
  static I izero() { return _mm512_setzero_si512(); }
  static I iset1(std::int32_t v) { return _mm512_set1_epi32(v); }
  static I iload(const std::int32_t* p) { return _mm512_loadu_si512(p); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  // Lane-wise a * b for int32 lanes whose values fit int16 and where b's high halves are 0:
  // VPMADDWD gives lo(a) * lo(b) + hi(a) * 0, exact.
  static I imul16(I a, I b) { return _mm512_madd_epi16(a, b); }
  static F to_float(I v) { return _mm512_cvtepi32_ps(v); }
  static I to_int(F v) { return _mm512_cvtps_epi32(v); }
  // 16 int8 codes -> int32 lanes (n < 16: lanes past n are 0 and nothing past p + n is read).
  static I load_i8(const std::int8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I load_i8(const std::int8_t* p, std::size_t n) {
    return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask(n), p));
  }
  // int32 lanes already in [-127, 127] -> int8 codes.
  static void store_i8(std::int8_t* p, I v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
  }
  static void store_i8(std::int8_t* p, I v, std::size_t n) {
    _mm_mask_storeu_epi8(p, mask(n), _mm512_cvtepi32_epi8(v));
  }
};

}  // namespace
}  // namespace qbinfer
