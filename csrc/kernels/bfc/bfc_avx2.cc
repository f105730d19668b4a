// Binary FC for AVX2 (bfc.h). Tile: kRows = 4 weight rows per pass over the input, so each
// 256-bit input load serves four XORs. Per row, the popcount of each XORed vector is the
// nibble table (VPSHUFB on the low and high nibbles) added into a byte accumulator; a byte
// gains at most 8 per vector, so after kFlush = 31 vectors (248 <= 255) the bytes are summed
// into 64-bit lanes with VPSADBW. Registers: 4 byte accumulators + 4 64-bit sums + the input,
// the table and the nibble mask = 11 of 16 ymm, no spills. The last words % 4 words of a row
// are counted with scalar POPCNT; rows past the last full tile of four run the same loop one
// row at a time. Loads are unaligned (rows are words long, any count), and nothing past a
// row's last word or the input's last word is read (the software prefetch of the next tile's
// rows is issued only when that tile exists).
//
// The four counts are gathered into one vector (gather4) for a 4-lane epilogue. Tried and not
// kept (Zen 2, 2048-8192 channels): scalar POPCNT on 64-bit words (~35% slower: 3 uops per
// word and row); Harley-Seal carry-save trees as in bconv (depth 3: 15-30% slower, since a row
// of 4096 channels is only 16 vectors and flushing three planes per row costs as much as the
// tree saves; depth 1: within noise); 2, 6 or 8 rows per tile (8 spills, 2 reloads the input).
#include <immintrin.h>

#include <cstdint>

#include "kernels/bfc/bfc.h"
#include "kernels/bfc/bfc_variants.h"

namespace qbinfer {
namespace {

constexpr std::size_t kRows = 4;  // a multiple of 4 (the epilogue's vector)
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

// The four rows' counts as int32 lanes 0..3 of one vector, from each row's four 64-bit partial
// sums (every partial < 2^31: a count is at most C): each row's partials go to 32-bit halves,
// unpack gathers lane j of rows 0..3 side by side, and two adds finish the sums.
inline __m128i gather4(const __m256i* sum) {
  const __m256i u01 = _mm256_blend_epi32(sum[0], _mm256_slli_epi64(sum[1], 32), 0xaa);
  const __m256i u23 = _mm256_blend_epi32(sum[2], _mm256_slli_epi64(sum[3], 32), 0xaa);
  const __m256i z =
      _mm256_add_epi32(_mm256_unpacklo_epi64(u01, u23), _mm256_unpackhi_epi64(u01, u23));
  return _mm_add_epi32(_mm256_castsi256_si128(z), _mm256_extracti128_si256(z, 1));
}

inline std::int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

// Each of R rows starting at `weight` (rows `words` apart): the 64-bit partial sums of
// popcount(in XOR row) over the whole 4-word vectors, into sum[r]; the last words % 4 words
// are left to the caller. `prefetch`: the next R rows exist, and are fetched into L1 while
// these are counted (measured on Zen: +15-20% once the weights outgrow L2, 4096 x 4096; the
// hardware prefetcher alone does not keep up with four interleaved row streams).
template <std::size_t R>
inline void count_rows(const BitWord* in, const BitWord* weight, std::size_t words, bool prefetch,
                       __m256i (&sum)[R]) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  for (std::size_t r = 0; r < R; ++r) sum[r] = zero;
  const std::size_t vectors = words / 4;
  for (std::size_t v0 = 0; v0 < vectors; v0 += kFlush) {
    const std::size_t v1 = v0 + kFlush < vectors ? v0 + kFlush : vectors;
    __m256i bytes[R];
    for (std::size_t r = 0; r < R; ++r) bytes[r] = zero;
    for (std::size_t v = v0; v < v1; ++v) {
      const __m256i a = load4(in + 4 * v);
      if (prefetch && v % 2 == 0) {  // one 64-byte line of each next row per two vectors
        for (std::size_t r = 0; r < R; ++r) {
          _mm_prefetch(reinterpret_cast<const char*>(weight + (R + r) * words + 4 * v),
                       _MM_HINT_T0);
        }
      }
      for (std::size_t r = 0; r < R; ++r) {
        const __m256i x = _mm256_xor_si256(a, load4(weight + r * words + 4 * v));
        bytes[r] = _mm256_add_epi8(bytes[r], byte_popcount(x, table, nibble));
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      sum[r] = _mm256_add_epi64(sum[r], _mm256_sad_epu8(bytes[r], zero));
    }
  }
}

std::int64_t tail_count(const BitWord* in, const BitWord* row, std::size_t words) {
  std::int64_t n = 0;
  for (std::size_t w = words / 4 * 4; w < words; ++w) {
    n += static_cast<std::int64_t>(_mm_popcnt_u64(in[w] ^ row[w]));
  }
  return n;
}

}  // namespace

void bfc__avx2(std::size_t in_channels, std::size_t out_features, const BitWord* in,
               const BitWord* weight, const float* scale, const float* bias, float* out) {
  const std::size_t words = words_for_channels(in_channels);
  const bool tail = words % 4 != 0;
  // dot = C - 2 * count in int32 lanes (C <= 2^31 - 1 and count <= C: no overflow), then the
  // float epilogue: one rounded multiply, then one rounded add, as the reference.
  const __m128i c = _mm_set1_epi32(static_cast<int>(in_channels));
  std::size_t o = 0;
  for (; o + kRows <= out_features; o += kRows) {
    const BitWord* w = weight + o * words;
    __m256i sum[kRows];
    count_rows<kRows>(in, w, words, o + 2 * kRows <= out_features, sum);
    for (std::size_t g = 0; g < kRows; g += 4) {
      __m128i count = gather4(sum + g);
      if (tail) {
        const BitWord* wg = w + g * words;
        count = _mm_add_epi32(
            count, _mm_setr_epi32(static_cast<int>(tail_count(in, wg, words)),
                                  static_cast<int>(tail_count(in, wg + words, words)),
                                  static_cast<int>(tail_count(in, wg + 2 * words, words)),
                                  static_cast<int>(tail_count(in, wg + 3 * words, words))));
      }
      const __m128 dot = _mm_cvtepi32_ps(_mm_sub_epi32(c, _mm_slli_epi32(count, 1)));
      const __m128 scaled = _mm_mul_ps(dot, _mm_loadu_ps(scale + o + g));
      _mm_storeu_ps(out + o + g, _mm_add_ps(scaled, _mm_loadu_ps(bias + o + g)));
    }
  }
  for (; o < out_features; ++o) {
    const BitWord* w = weight + o * words;
    __m256i sum[1];
    count_rows<1>(in, w, words, false, sum);
    const std::int64_t count = hsum64(sum[0]) + tail_count(in, w, words);
    const auto dot = static_cast<std::int32_t>(static_cast<std::int64_t>(in_channels) - 2 * count);
    const float scaled = static_cast<float>(dot) * scale[o];  // -ffp-contract=off: no FMA
    out[o] = scaled + bias[o];
  }
}

const BFCKernels kBFCKernels__avx2{"avx2", &bfc__avx2};

}  // namespace qbinfer
