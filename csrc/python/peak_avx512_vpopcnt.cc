// AVX-512 VPOPCNTDQ ceiling: XOR + vpopcntq, 64-bit counters.
#include "kernels/simd/avx512_gcc12_warnings.h"  // first: see there
#include <immintrin.h>

#include <cstdint>

#include "python/peak.h"

namespace qbinfer {
namespace peak_detail {
namespace {
alignas(64) std::uint64_t g_buf[512];
volatile std::uint64_t g_sink;
}  // namespace

double popcount_avx512_vpopcnt(std::size_t iterations) {
  for (std::size_t i = 0; i < 512; ++i) g_buf[i] = 0x9E3779B97F4A7C15ull * (i + 7);
  const __m512i w = _mm512_set1_epi64(0x5555AAAA3333CCCCll);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t it = 0; it < iterations; ++it) {
    const __m512i* p = reinterpret_cast<const __m512i*>(g_buf);
    for (int j = 0; j < 64; j += 4) {
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_load_si512(p + j), w)));
      a1 = _mm512_add_epi64(a1,
                            _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_load_si512(p + j + 1), w)));
      a2 = _mm512_add_epi64(a2,
                            _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_load_si512(p + j + 2), w)));
      a3 = _mm512_add_epi64(a3,
                            _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_load_si512(p + j + 3), w)));
    }
  }
  g_sink = static_cast<std::uint64_t>(_mm512_reduce_add_epi64(
      _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3))));
  return static_cast<double>(iterations) * 512.0 * 64.0;
}

}  // namespace peak_detail
}  // namespace qbinfer
