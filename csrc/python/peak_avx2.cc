// AVX2 ceilings: XOR + Harley-Seal popcount (carry-save adders, the nibble table only for the
// 16s plane); and 10 independent 8-wide FMA chains.
#include <immintrin.h>

#include <cstdint>

#include "python/peak.h"

namespace qbinfer {
namespace peak_detail {
namespace {
alignas(64) std::uint64_t g_buf[512];
volatile std::uint64_t g_sink;
volatile float g_fsink;

// Harley-Seal with AVX2: carry-save adders of and/or/xor (5 per adder), 16 vectors per round.
__m256i popcnt_bytes_sum(__m256i v, __m256i lut, __m256i low) {
  const __m256i c =
      _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                      _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
  return _mm256_sad_epu8(c, _mm256_setzero_si256());
}

inline void csa(__m256i& h, __m256i& l, __m256i a, __m256i b, __m256i c) {
  const __m256i u = _mm256_xor_si256(a, b);
  h = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u, c));
  l = _mm256_xor_si256(u, c);
}

}  // namespace

double popcount_avx2(std::size_t iterations) {
  for (std::size_t i = 0; i < 512; ++i) g_buf[i] = 0x9E3779B97F4A7C15ull * (i + 3);
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i w = _mm256_set1_epi64x(0x5555AAAA3333CCCCll);
  __m256i total = _mm256_setzero_si256();
  __m256i ones = _mm256_setzero_si256(), twos = ones, fours = ones, eights = ones;
  for (std::size_t it = 0; it < iterations; ++it) {
    const __m256i* p = reinterpret_cast<const __m256i*>(g_buf);
    for (int i = 0; i < 128; i += 16) {
      auto d = [&](int j) { return _mm256_xor_si256(_mm256_load_si256(p + i + j), w); };
      __m256i twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
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
      total = _mm256_add_epi64(total, popcnt_bytes_sum(sixteens, lut, low));
    }
  }
  const __m256i rest = _mm256_add_epi64(
      _mm256_add_epi64(popcnt_bytes_sum(ones, lut, low), popcnt_bytes_sum(twos, lut, low)),
      _mm256_add_epi64(popcnt_bytes_sum(fours, lut, low), popcnt_bytes_sum(eights, lut, low)));
  total = _mm256_add_epi64(total, rest);
  g_sink =
      static_cast<std::uint64_t>(_mm256_extract_epi64(total, 0) + _mm256_extract_epi64(total, 3));
  return static_cast<double>(iterations) * 512.0 * 64.0;
}

double fma_avx2(std::size_t iterations) {
  __m256 a[10];
  for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps(1.0f + static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (std::size_t it = 0; it < iterations * 64; ++it) {
    for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, a[i]);
  g_fsink = _mm256_cvtss_f32(s);
  return static_cast<double>(iterations) * 64.0 * 10.0 * 8.0;
}

double read_avx2(const void* buf, std::size_t bytes, std::size_t iterations) {
  // Eight 32-byte loads per 256-byte block into four independent adders: the adds cost less
  // than the loads, so the loop runs at the rate the memory level delivers.
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  const auto* p = static_cast<const __m256i*>(buf);
  const std::size_t blocks = bytes / 256;
  for (std::size_t it = 0; it < iterations; ++it) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const __m256i* q = p + 8 * b;
      s0 = _mm256_add_epi64(s0, _mm256_load_si256(q + 0));
      s1 = _mm256_add_epi64(s1, _mm256_load_si256(q + 1));
      s2 = _mm256_add_epi64(s2, _mm256_load_si256(q + 2));
      s3 = _mm256_add_epi64(s3, _mm256_load_si256(q + 3));
      s0 = _mm256_add_epi64(s0, _mm256_load_si256(q + 4));
      s1 = _mm256_add_epi64(s1, _mm256_load_si256(q + 5));
      s2 = _mm256_add_epi64(s2, _mm256_load_si256(q + 6));
      s3 = _mm256_add_epi64(s3, _mm256_load_si256(q + 7));
    }
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  g_sink = static_cast<std::uint64_t>(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 3));
  return static_cast<double>(iterations) * static_cast<double>(blocks) * 256.0;
}

}  // namespace peak_detail
}  // namespace qbinfer
