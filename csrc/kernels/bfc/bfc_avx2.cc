// Binary FC for AVX2 (bfc.h). Tile: kRows = 4 weight rows per pass over the input, so each
// 256-bit input load serves four XORs. Per row, the popcount of each XORed vector is the
// nibble table (VPSHUFB on the low and high nibbles) added into a byte accumulator; a byte
// gains at most 8 per vector, so after kFlush = 31 vectors (248 <= 255) the bytes are summed
// into 64-bit lanes with VPSADBW. Registers: 4 byte accumulators + 4 64-bit sums + the input,
// the table and the nibble mask = 11 of 16 ymm, no spills. The last words % 4 words of a row
// are counted with scalar POPCNT; rows past the last full tile of four run the same loop one
// row at a time. Loads are unaligned (rows are words long, any count), and nothing past a
// row's last word or the input's last word is read.
//
// Why not Harley-Seal here: bconv amortises its carry-save tree over long per-pixel streams
// and many pixels per weight load; an FC reads each weight once, so the kernel is bound by
// the weight stream from cache/memory at the sizes that matter (measured in the report of
// the change that added it), and the simple table count keeps up with it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/bfc/bfc.h"
#include "kernels/bfc/bfc_variants.h"

namespace qbinfer {
namespace {

constexpr std::size_t kRows = 4;
constexpr std::size_t kFlush = 31;

inline __m256i load4(const BitWord* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Byte-wise popcount of x (each byte 0..8).
inline __m256i byte_popcount(__m256i x, __m256i table, __m256i nibble) {
  const __m256i lo = _mm256_and_si256(x, nibble);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
  return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

inline std::int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

// popcount(in XOR w_r) for R rows starting at `weight`, rows `words` apart, into count[r].
template <std::size_t R>
inline void count_rows(const BitWord* in, const BitWord* weight, std::size_t words,
                       std::int64_t* count) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i sum[R];
  for (std::size_t r = 0; r < R; ++r) sum[r] = zero;
  const std::size_t vectors = words / 4;
  for (std::size_t v0 = 0; v0 < vectors; v0 += kFlush) {
    const std::size_t v1 = v0 + kFlush < vectors ? v0 + kFlush : vectors;
    __m256i bytes[R];
    for (std::size_t r = 0; r < R; ++r) bytes[r] = zero;
    for (std::size_t v = v0; v < v1; ++v) {
      const __m256i a = load4(in + 4 * v);
      for (std::size_t r = 0; r < R; ++r) {
        const __m256i x = _mm256_xor_si256(a, load4(weight + r * words + 4 * v));
        bytes[r] = _mm256_add_epi8(bytes[r], byte_popcount(x, table, nibble));
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      sum[r] = _mm256_add_epi64(sum[r], _mm256_sad_epu8(bytes[r], zero));
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    std::int64_t n = hsum64(sum[r]);
    for (std::size_t w = 4 * vectors; w < words; ++w) {
      n += _mm_popcnt_u64(in[w] ^ weight[r * words + w]);
    }
    count[r] = n;
  }
}

inline void epilogue(std::size_t in_channels, std::int64_t count, float scale, float bias,
                     float* out) {
  const auto dot = static_cast<std::int32_t>(static_cast<std::int64_t>(in_channels) - 2 * count);
  const float scaled = static_cast<float>(dot) * scale;  // -ffp-contract=off: no FMA
  *out = scaled + bias;
}

}  // namespace

void bfc__avx2(std::size_t in_channels, std::size_t out_features, const BitWord* in,
               const BitWord* weight, const float* scale, const float* bias, float* out) {
  const std::size_t words = words_for_channels(in_channels);
  std::size_t o = 0;
  std::int64_t count[kRows];
  for (; o + kRows <= out_features; o += kRows) {
    count_rows<kRows>(in, weight + o * words, words, count);
    for (std::size_t r = 0; r < kRows; ++r) {
      epilogue(in_channels, count[r], scale[o + r], bias[o + r], out + o + r);
    }
  }
  for (; o < out_features; ++o) {
    count_rows<1>(in, weight + o * words, words, count);
    epilogue(in_channels, count[0], scale[o], bias[o], out + o);
  }
}

const BFCKernels kBFCKernels__avx2{"avx2", &bfc__avx2};

}  // namespace qbinfer
