// The loop every ISA's bitpacking shares, written once: pixels, then the 64-bit words of a
// pixel, then blocks of `Block` channels, each packed by the ISA's `pack_block(x, t, n)` (the
// packed bits of channels [0, n), n in 1..Block, tail bits 0; t == nullptr: thresholds 0).
// Included only by bitpack_<isa>.cc files; internal linkage, so each ISA's copy stays its own.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

#include "qbinfer/bit_contract.h"

namespace qbinfer {
namespace {

template <unsigned Block, std::uint64_t (*PackBlock)(const float*, const float*, unsigned)>
void bitpack_f32_nhwc_blocks(const float* x, std::size_t pixels, std::size_t channels,
                             const float* thresholds, BitWord* out) {
  static_assert(kBitsPerWord % Block == 0, "a block may not straddle two words");
  assert(channels > 0);
  const std::size_t words = words_for_channels(channels);
  for (std::size_t p = 0; p < pixels; ++p) {
    const float* row = x + p * channels;
    BitWord* out_row = out + p * words;
    for (std::size_t w = 0; w < words; ++w) {
      const std::size_t c0 = w * kBitsPerWord;
      const std::size_t n = channels - c0 < kBitsPerWord ? channels - c0 : kBitsPerWord;
      BitWord word = 0;
      for (std::size_t b = 0; b * Block < n; ++b) {
        const std::size_t c = c0 + Block * b;
        const auto left = static_cast<unsigned>(n - Block * b);
        word |= PackBlock(row + c, thresholds != nullptr ? thresholds + c : nullptr, left)
                << (Block * b);
      }
      out_row[w] = word;
    }
  }
}

}  // namespace
}  // namespace qbinfer
