// Vector traits for the AVX2 float kernels (8 f32 lanes, lane masks as __m256i). Include only
// from *_avx2.cc files (compiled with -mavx2 -mfma). Everything here has internal linkage (an
// unnamed namespace), so the same template instantiated from another ISA's file can never be
// merged with this one by the linker. The operations mirror vec_avx512.h one for one.
#pragma once

#if !defined(__AVX2__) || !defined(__FMA__)
#error "vec_avx2.h needs -mavx2 -mfma"
#endif

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace qbinfer {
namespace {

struct VecAvx2 {
  static constexpr std::size_t kLanes = 8;
  using F = __m256;
  using I = __m256i;  // 8 int32 lanes
  using M = __m256i;  // lane i all ones = active

  // Lanes [0, n), n <= 8.
  static M mask(std::size_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), iota);
  }
  static M all() { return _mm256_set1_epi32(-1); }

  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  // VMASKMOVPS: masked-off lanes read as 0 and never fault.
  static F load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, F v, M m) { _mm256_maskstore_ps(p, m, v); }

  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }

  static F prelu(F v, F slope) {
    const F ge = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(slope, v), v, ge);
  }
  static F relu(F y) {
    const F lt = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(y, _mm256_setzero_ps(), lt);
  }
  static std::uint32_t not_ge_bits(F v, F t) {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_NGE_UQ)));
  }
  static F abs(F v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static F max_keep_acc(F x, F acc) { return _mm256_max_ps(x, acc); }
  static float hmax(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static F round_cur(F v) {
    return _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
  }
  static F clamp_nan_to_zero(F v, float lo, float hi) {
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_min_ps(v, _mm256_set1_ps(hi));
    return _mm256_max_ps(v, _mm256_set1_ps(lo));
  }

  static I izero() { return _mm256_setzero_si256(); }
  static I iset1(std::int32_t v) { return _mm256_set1_epi32(v); }
  static I iload(const std::int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I imul16(I a, I b) { return _mm256_madd_epi16(a, b); }
  static F to_float(I v) { return _mm256_cvtepi32_ps(v); }
  static I to_int(F v) { return _mm256_cvtps_epi32(v); }
  static I load_i8(const std::int8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static I load_i8(const std::int8_t* p, std::size_t n) {
    std::int8_t buf[8] = {};
    std::memcpy(buf, p, n);
    return load_i8(buf);
  }
  static __m128i narrow_i8(I v) {
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packs_epi16(w, w);
  }
  static void store_i8(std::int8_t* p, I v) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), narrow_i8(v));
  }
  static void store_i8(std::int8_t* p, I v, std::size_t n) {
    std::int8_t buf[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(buf), narrow_i8(v));
    std::memcpy(p, buf, n);
  }
};

}  // namespace
}  // namespace qbinfer
