// What the two AVX-512 binary convs share (bconv_avx512.cc: Harley-Seal counting;
// bconv_avx512_vpopcnt.cc: VPOPCNTD): zmm vectors of 16 32-bit lanes, the broadcast-XOR and the
// float epilogue. Each file derives its traits from Avx512Common and adds its counter; included
// only by those two files, after avx512_gcc12_warnings.h and <immintrin.h> (internal linkage,
// so the two copies built with different -m flags stay apart).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/bconv/bconv_simd_inl.h"

namespace qbinfer {
namespace {

struct Avx512Common {
  using V = __m512i;
  static constexpr std::size_t kLanes = 16;

  static QBINFER_INLINE V zero() { return _mm512_setzero_si512(); }
  static QBINFER_INLINE V load(const void* p) { return _mm512_load_si512(p); }
  static QBINFER_INLINE V set32(std::int32_t v) { return _mm512_set1_epi32(v); }
  static QBINFER_INLINE V xor_bcast(V w, const std::uint32_t* a) {
    return _mm512_xor_si512(w, _mm512_set1_epi32(static_cast<int>(*a)));
  }
  static QBINFER_INLINE V add32(V a, V b) { return _mm512_add_epi32(a, b); }
  static QBINFER_INLINE V sub32(V a, V b) { return _mm512_sub_epi32(a, b); }

  static QBINFER_INLINE void epilogue(V dot, const float* scale, const float* bias, float* out,
                                      std::size_t n) {
    const __m512 f = _mm512_cvtepi32_ps(dot);
    if (n == kLanes) {
      // Two statements: the contract is a rounded multiply, then a rounded add.
      const __m512 scaled = _mm512_mul_ps(f, _mm512_loadu_ps(scale));
      _mm512_storeu_ps(out, _mm512_add_ps(scaled, _mm512_loadu_ps(bias)));
    } else {
      const auto m = static_cast<__mmask16>((1u << n) - 1);
      const __m512 scaled = _mm512_mul_ps(f, _mm512_maskz_loadu_ps(m, scale));
      _mm512_mask_storeu_ps(out, m, _mm512_add_ps(scaled, _mm512_maskz_loadu_ps(m, bias)));
    }
  }
};

}  // namespace
}  // namespace qbinfer
