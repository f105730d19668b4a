// Binary FC for AArch64 NEON (bfc.h). Tile: kRows = 4 weight rows per pass over the input, so
// each 128-bit input load serves four XORs. Per row, VCNT gives byte popcounts (0..8) that
// UADALP adds pairwise into eight 16-bit lanes; a lane gains at most 16 per vector, so after
// kFlush = 4095 vectors (65520 <= 65535) they are added pairwise into 32-bit lanes. Registers:
// 4 + 4 accumulators and the input, well inside the 32 vector registers. An odd last word is
// counted with the 64-bit VCNT; rows past the last full tile run the same loop one at a time.
#include <arm_neon.h>

#include "kernels/simd/neon_compat.h"

#include <cstdint>

#include "kernels/bfc/bfc.h"
#include "kernels/bfc/bfc_variants.h"

namespace qbinfer {
namespace {

constexpr std::size_t kRows = 4;
constexpr std::size_t kFlush = 4095;

inline uint8x16_t load2(const BitWord* p) {
  return vreinterpretq_u8_u64(vld1q_u64(reinterpret_cast<const std::uint64_t*>(p)));
}

template <std::size_t R>
inline void count_rows(const BitWord* in, const BitWord* weight, std::size_t words,
                       std::int64_t* count) {
  uint32x4_t sum[R];
  for (std::size_t r = 0; r < R; ++r) sum[r] = vdupq_n_u32(0);
  const std::size_t vectors = words / 2;
  for (std::size_t v0 = 0; v0 < vectors; v0 += kFlush) {
    const std::size_t v1 = v0 + kFlush < vectors ? v0 + kFlush : vectors;
    uint16x8_t acc[R];
    for (std::size_t r = 0; r < R; ++r) acc[r] = vdupq_n_u16(0);
    for (std::size_t v = v0; v < v1; ++v) {
      const uint8x16_t a = load2(in + 2 * v);
      for (std::size_t r = 0; r < R; ++r) {
        const uint8x16_t x = veorq_u8(a, load2(weight + r * words + 2 * v));
        acc[r] = vpadalq_u8(acc[r], vcntq_u8(x));
      }
    }
    for (std::size_t r = 0; r < R; ++r) sum[r] = vpadalq_u16(sum[r], acc[r]);
  }
  for (std::size_t r = 0; r < R; ++r) {
    std::int64_t n = static_cast<std::int64_t>(vaddlvq_u32(sum[r]));
    if (words % 2 != 0) {
      const std::size_t w = words - 1;
      const uint8x8_t x = vcnt_u8(vcreate_u8(in[w] ^ weight[r * words + w]));
      n += vaddlv_u8(x);
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

void bfc__neon(std::size_t in_channels, std::size_t out_features, const BitWord* in,
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

}  // namespace

const BFCKernels kBFCKernels__neon{"neon", &bfc__neon};

}  // namespace qbinfer
