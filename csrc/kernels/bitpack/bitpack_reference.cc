#include <algorithm>
#include <cassert>

#include "kernels/bitpack/bitpack.h"

namespace qbinfer {

// Builds each word in a register and stores it once, so the tail bits are 0 by
// construction rather than by a separate masking pass.
void bitpack_f32_nhwc__reference(const float* x, std::size_t pixels, std::size_t channels,
                                 const float* thresholds, BitWord* out) {
  assert(channels > 0);
  assert(pixels == 0 || (x != nullptr && out != nullptr));

  const std::size_t words = words_for_channels(channels);
  for (std::size_t p = 0; p < pixels; ++p) {
    const float* row = x + p * channels;
    BitWord* out_row = out + p * words;
    for (std::size_t w = 0; w < words; ++w) {
      const std::size_t c0 = w * kBitsPerWord;
      const std::size_t n = std::min(kBitsPerWord, channels - c0);
      BitWord word = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const float t = thresholds != nullptr ? thresholds[c0 + j] : 0.0f;
        word |= pack_bit(row[c0 + j], t) << j;
      }
      out_row[w] = word;
    }
  }
}

}  // namespace qbinfer
