// Portable oracle for the classifier head: one output at a time, a single f32 accumulator
// over c in increasing order, then the per-output scale and the bias. The bitplane8 path
// rebuilds each integer weight 2B - 255 from its 8 sign bits before the product, so its
// float error is that of an ordinary dot product with exact integer weights (summing the
// 8 planes separately would round 8 partial sums of up to 255x the result's magnitude).
#include <cassert>
#include <cstdint>

#include "kernels/fc/fc.h"

namespace qbinfer {

void fc_f32__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const float* weight, const float* bias, float* out) {
  assert(in_features > 0);
  for (std::size_t o = 0; o < out_features; ++o) {
    const float* w = weight + o * in_features;
    float acc = 0.0f;
    for (std::size_t c = 0; c < in_features; ++c) {
      // One operation per statement: no FMA contraction under clang either.
      const float product = w[c] * x[c];
      acc += product;
    }
    out[o] = acc + bias[o];
  }
}

void fc_qs8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const std::int8_t* weight, const float* weight_scale, const float* bias,
                       float* out) {
  assert(in_features > 0);
  for (std::size_t o = 0; o < out_features; ++o) {
    const std::int8_t* q = weight + o * in_features;
    float acc = 0.0f;
    for (std::size_t c = 0; c < in_features; ++c) {
      const float product = static_cast<float>(q[c]) * x[c];
      acc += product;
    }
    const float scaled = weight_scale[o] * acc;
    out[o] = scaled + bias[o];
  }
}

void fc_bitplane8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                             const BitWord* planes, const float* weight_scale, const float* bias,
                             float* out) {
  assert(in_features > 0);
  const std::size_t words = words_for_channels(in_features);
  const std::size_t plane_stride = out_features * words;
  for (std::size_t o = 0; o < out_features; ++o) {
    float acc = 0.0f;
    for (std::size_t c = 0; c < in_features; ++c) {
      const std::size_t word = o * words + c / kBitsPerWord;
      const std::size_t bit = c % kBitsPerWord;
      int w = 0;
      for (std::size_t b = 0; b < 8; ++b) {
        const bool minus_one = ((planes[b * plane_stride + word] >> bit) & 1U) != 0;
        w += (minus_one ? -1 : 1) * (1 << b);
      }
      assert(w >= -255 && w <= 255 && (w & 1) != 0);
      const float product = static_cast<float>(w) * x[c];
      acc += product;
    }
    const float scaled = weight_scale[o] * acc;
    out[o] = scaled + bias[o];
  }
}

}  // namespace qbinfer
