// The AVX2 FC kernels: fc_simd.h instantiated with VecAvx2 (8 lanes, 4 outputs x 2
// accumulators). Bitplane weights are rebuilt 64 at a time: each plane's bits expanded to
// bytes (see BitplaneDecoderAvx2), merged into the 8-bit code, w = 255 - 2 * code.
#include "kernels/simd/vec_avx2.h"
#include <cstring>

#include "kernels/fc/fc_simd.h"
#include "kernels/fc/fc_variants.h"

namespace qbinfer {
namespace {

struct BitplaneDecoderAvx2 {
  // 32 bits -> 32 bytes of 0 / 0xFF: broadcast, replicate byte k over bytes 8k..8k+7 (PSHUFB
  // within each 128-bit half), keep each byte's own bit, compare.
  static __m256i expand(const std::uint32_t* bits) {
    const __m256i shuffle = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                             2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
    std::int32_t v;
    std::memcpy(&v, bits, sizeof(v));
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(v), shuffle);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
  }
  // 8 code bytes -> 8 weights 255 - 2 * code.
  static __m256 weights8(__m128i code8) {
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(code8)), _mm256_set1_ps(2.0f),
                            _mm256_set1_ps(255.0f));
  }
  // The 64 weights of one word position, 32 channels (one 32-bit half of the words) at a time.
  static void decode(const BitWord* word, std::size_t plane_stride, __m256 w[8]) {
    for (std::size_t half = 0; half < 2; ++half) {
      __m256i code = _mm256_setzero_si256();
      for (unsigned b = 0; b < 8; ++b) {
        const auto* bits = reinterpret_cast<const std::uint32_t*>(word + b * plane_stride) + half;
        code = _mm256_or_si256(
            code, _mm256_and_si256(expand(bits), _mm256_set1_epi8(static_cast<char>(1u << b))));
      }
      const __m128i lo = _mm256_castsi256_si128(code), hi = _mm256_extracti128_si256(code, 1);
      w[half * 4 + 0] = weights8(lo);
      w[half * 4 + 1] = weights8(_mm_srli_si128(lo, 8));
      w[half * 4 + 2] = weights8(hi);
      w[half * 4 + 3] = weights8(_mm_srli_si128(hi, 8));
    }
  }
  // The 64 binary weights of one sign word as ±1.0f, 8 lanes at a time: lane i of vector v keeps
  // bit 8v + i of the word (broadcast byte v, AND with its own bit, compare), and a set bit
  // (-1 by the bit contract) puts the sign bit into 1.0f.
  static void signs(BitWord word, __m256 w[8]) {
    const __m256i select = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (unsigned v = 0; v < 8; ++v) {
      const int byte = static_cast<int>((word >> (8 * v)) & 0xFFu);
      const __m256i set =
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(byte), select), select);
      w[v] = _mm256_or_ps(one, _mm256_and_ps(_mm256_castsi256_ps(set), sign));
    }
  }
};

}  // namespace

using FCF32x4R__avx2 = FCSimd<VecAvx2, BitplaneDecoderAvx2>;

void fc_binary__avx2(std::size_t in_features, std::size_t out_features, const float* x,
                     const BitWord* signs, const float* weight_scale, const float* bias,
                     float* out) {
  FCF32x4R__avx2::binary(in_features, out_features, x, signs, weight_scale, bias, out);
}

void fc_bitplane8_packed__avx2(std::size_t in_features, std::size_t out_features, const float* x,
                               const std::int8_t* packed, const float* weight_scale,
                               const float* bias, float* out) {
  FCF32x4R__avx2::bitplane8_packed(in_features, out_features, x, packed, weight_scale, bias, out);
}

const FCKernels kFCKernels__avx2{
    "avx2",           &FCF32x4R__avx2::f32,      &FCF32x4R__avx2::qs8, &FCF32x4R__avx2::bitplane8,
    &fc_binary__avx2, &fc_bitplane8_packed__avx2};

}  // namespace qbinfer
