// Portable oracle for the fused epilogue: one value at a time, the steps of epilogue.h in
// order, one rounded operation per statement (no FMA under any compiler).
#include <cassert>
#include <cstring>

#include "kernels/epilogue/epilogue.h"

namespace qbinfer {

void epilogue_rows__reference(const Epilogue& ep, std::size_t channels, std::size_t pixel_begin,
                              std::size_t pixel_end, float* out) {
  assert(channels > 0 && pixel_begin <= pixel_end);
  assert(ep.residual == nullptr ||
         (ep.residual_channels > 0 && channels % ep.residual_channels == 0));
  assert((ep.pre_scale == nullptr) == (ep.pre_bias == nullptr));
  assert((ep.mid_scale == nullptr) == (ep.mid_bias == nullptr));
  assert((ep.post_scale == nullptr) == (ep.post_bias == nullptr));
  assert((ep.threshold == nullptr) == (ep.bits == nullptr));
  assert(!ep.clip || ep.clip_lo <= ep.clip_hi);
  const std::size_t words = words_for_channels(channels);
  for (std::size_t p = pixel_begin; p < pixel_end; ++p) {
    float* row = out + p * channels;
    BitWord* bits = ep.threshold != nullptr ? ep.bits + p * words : nullptr;
    if (bits != nullptr) std::memset(bits, 0, words * sizeof(BitWord));
    for (std::size_t c = 0; c < channels; ++c) {
      float v = row[c];
      if (ep.relu) v = v < 0.0f ? 0.0f : v;  // as relu_f32__reference: NaN and -0.0f stay
      if (ep.pre_scale != nullptr) {
        const float scaled = v * ep.pre_scale[c];
        v = scaled + ep.pre_bias[c];
      }
      if (ep.channel_scale != nullptr) v = v * ep.channel_scale[c];
      if (ep.residual != nullptr) {
        const std::size_t rc = ep.residual_channels;
        v = v + ep.residual[p * rc + c % rc];
      }
      if (ep.mid_scale != nullptr) {
        const float scaled = v * ep.mid_scale[c];
        v = scaled + ep.mid_bias[c];
      }
      if (ep.prelu_slope != nullptr) v = v >= 0.0f ? v : ep.prelu_slope[c] * v;
      if (ep.post_scale != nullptr) {
        const float scaled = v * ep.post_scale[c];
        v = scaled + ep.post_bias[c];
      }
      // As clip_f32__reference: two selects tested on v itself, so NaN passes through.
      if (ep.clip) v = v < ep.clip_lo ? ep.clip_lo : (v > ep.clip_hi ? ep.clip_hi : v);
      if (ep.write_float) row[c] = v;
      if (bits != nullptr)
        bits[c / kBitsPerWord] |= pack_bit(v, ep.threshold[c]) << (c % kBitsPerWord);
    }
  }
}

}  // namespace qbinfer
