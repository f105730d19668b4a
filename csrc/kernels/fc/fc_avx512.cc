// The AVX-512 FC kernels: fc_simd.h instantiated with VecAvx512 (16 lanes, 4 outputs x 2
// accumulators). Bitplane weights are rebuilt 64 at a time from mask registers (see
// BitplaneDecoderAvx512).
#include "kernels/simd/vec_avx512.h"
#include "kernels/fc/fc_simd.h"
#include "kernels/fc/fc_variants.h"

namespace qbinfer {
namespace {

struct BitplaneDecoderAvx512 {
  // The 64 weights of one word position: code = sum_b 2^b * stored_bit_b built bytewise (each
  // plane word expanded to 64 bytes of 0 / 0xFF by VPMOVM2B, merged with VPTERNLOGD), then
  // w = 255 - 2 * code in float (exact), 16 lanes at a time.
  static void decode(const BitWord* word, std::size_t plane_stride, __m512 w[4]) {
    __m512i code = _mm512_and_si512(_mm512_movm_epi8(_cvtu64_mask64(word[0])), _mm512_set1_epi8(1));
    for (unsigned b = 1; b < 8; ++b) {
      const __m512i set = _mm512_movm_epi8(_cvtu64_mask64(word[b * plane_stride]));
      // code | (set & 2^b)
      code =
          _mm512_ternarylogic_epi32(code, set, _mm512_set1_epi8(static_cast<char>(1u << b)), 0xF8);
    }
    const __m512 two = _mm512_set1_ps(2.0f), w255 = _mm512_set1_ps(255.0f);
    w[0] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(code))),
                            two, w255);
    w[1] = _mm512_fnmadd_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(code, 1))), two, w255);
    w[2] = _mm512_fnmadd_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(code, 2))), two, w255);
    w[3] = _mm512_fnmadd_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(code, 3))), two, w255);
  }
};

}  // namespace

using FCF32x4R__avx512 = FCSimd<VecAvx512, BitplaneDecoderAvx512>;

// binary and bitplane8 packed: the AVX2 kernels (fc_variants.h).
const FCKernels kFCKernels__avx512{"avx512",
                                   &FCF32x4R__avx512::f32,
                                   &FCF32x4R__avx512::qs8,
                                   &FCF32x4R__avx512::bitplane8,
                                   &fc_binary__avx2,
                                   &fc_bitplane8_packed__avx2};

}  // namespace qbinfer
