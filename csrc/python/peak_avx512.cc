// AVX-512 ceilings without VPOPCNTDQ: XOR + Harley-Seal popcount, the best-known way to count
// bits with AVX-512 F/BW alone; and 12 independent 16-wide FMA chains.
#include "kernels/simd/avx512_gcc12_warnings.h"  // first: see there
#include <immintrin.h>

#include <cstdint>

#include "python/peak.h"

namespace qbinfer {
namespace peak_detail {
namespace {
alignas(64) std::uint64_t g_buf[512];
volatile std::uint64_t g_sink;
volatile float g_fsink;

// Harley-Seal: 16 XORed vectors go through carry-save adders (VPTERNLOGD: 2 per adder) into
// 1s/2s/4s/8s planes; only the 16s plane is counted (nibble table + VPSADBW), once per 16.
__m512i popcnt_bytes_sum(__m512i v, __m512i lut, __m512i low) {
  const __m512i c =
      _mm512_add_epi8(_mm512_shuffle_epi8(lut, _mm512_and_si512(v, low)),
                      _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
  return _mm512_sad_epu8(c, _mm512_setzero_si512());
}

inline void csa(__m512i& h, __m512i& l, __m512i a, __m512i b, __m512i c) {
  h = _mm512_ternarylogic_epi32(a, b, c, 0xE8);  // majority
  l = _mm512_ternarylogic_epi32(a, b, c, 0x96);  // parity
}

}  // namespace

double popcount_avx512(std::size_t iterations) {
  for (std::size_t i = 0; i < 512; ++i) g_buf[i] = 0x9E3779B97F4A7C15ull * (i + 5);
  const __m512i lut =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i w = _mm512_set1_epi64(0x5555AAAA3333CCCCll);
  __m512i total = _mm512_setzero_si512();
  __m512i ones = _mm512_setzero_si512(), twos = ones, fours = ones, eights = ones;
  for (std::size_t it = 0; it < iterations; ++it) {
    const __m512i* p = reinterpret_cast<const __m512i*>(g_buf);
    for (int i = 0; i < 64; i += 16) {
      auto d = [&](int j) { return _mm512_xor_si512(_mm512_load_si512(p + i + j), w); };
      __m512i twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
      csa(twos_a, ones, ones, d(0), d(1));
      csa(twos_b, ones, ones, d(2), d(3));
      csa(fours_a, twos, twos, twos_a, twos_b);
      csa(twos_a, ones, ones, d(4), d(5));
      csa(twos_b, ones, ones, d(6), d(7));
      csa(fours_b, twos, twos, twos_a, twos_b);
      csa(eights_a, fours, fours, fours_a, fours_b);
      csa(twos_a, ones, ones, d(8), d(9));
      csa(twos_b, ones, ones, d(10), d(11));
      csa(fours_a, twos, twos, twos_a, twos_b);
      csa(twos_a, ones, ones, d(12), d(13));
      csa(twos_b, ones, ones, d(14), d(15));
      csa(fours_b, twos, twos, twos_a, twos_b);
      csa(eights_b, fours, fours, fours_a, fours_b);
      csa(sixteens, eights, eights, eights_a, eights_b);
      total = _mm512_add_epi64(total, popcnt_bytes_sum(sixteens, lut, low));
    }
  }
  g_sink = static_cast<std::uint64_t>(_mm512_reduce_add_epi64(total)) +
           static_cast<std::uint64_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(
               _mm512_add_epi64(popcnt_bytes_sum(ones, lut, low), popcnt_bytes_sum(twos, lut, low)),
               _mm512_add_epi64(popcnt_bytes_sum(fours, lut, low),
                                popcnt_bytes_sum(eights, lut, low)))));
  return static_cast<double>(iterations) * 512.0 * 64.0;
}

double fma_avx512(std::size_t iterations) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (std::size_t it = 0; it < iterations * 64; ++it) {
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  g_fsink = _mm512_reduce_add_ps(s);
  return static_cast<double>(iterations) * 64.0 * 12.0 * 16.0;
}

}  // namespace peak_detail
}  // namespace qbinfer
