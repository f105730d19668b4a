// Portable oracle for the binary FC (bfc.h): per output, the XOR popcount of each word in
// increasing order, then dot = C - 2 * count and the float epilogue (multiply, then add).
#include <cassert>
#include <cstdint>

#include "kernels/bfc/bfc.h"

namespace qbinfer {
namespace {

int popcount64(BitWord x) {
  int n = 0;
  for (; x != 0; x &= x - 1) ++n;  // plain loop: the oracle uses no builtin
  return n;
}

}  // namespace

void bfc__reference(std::size_t in_channels, std::size_t out_features, const BitWord* in,
                    const BitWord* weight, const float* scale, const float* bias, float* out) {
  assert(in_channels > 0);
  const std::size_t words = words_for_channels(in_channels);
  for (std::size_t o = 0; o < out_features; ++o) {
    std::int64_t count = 0;
    for (std::size_t w = 0; w < words; ++w) count += popcount64(in[w] ^ weight[o * words + w]);
    const auto dot = static_cast<std::int32_t>(static_cast<std::int64_t>(in_channels) - 2 * count);
    const float scaled = static_cast<float>(dot) * scale[o];
    out[o] = scaled + bias[o];
  }
}

}  // namespace qbinfer
