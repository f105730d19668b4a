// Portable oracle for the classifier head: one output at a time, the exact products w * x
// (f32 times f32 is exact in double) summed in double over c in increasing order, rounded to
// f32 once, then the per-output scale and the bias in f32. A double sum of exact f32 products
// cannot overflow (each is below 2^256, and there are fewer than 2^32 of them), so the only
// infinities and NaNs are those of fc.h's rule: a non-finite product (an inf or NaN operand,
// inf * 0), or the final rounding to f32, the scale or the bias. The bitplane8 path rebuilds
// each integer weight 2B - 255 from its 8 sign bits before the product; binary adds x[c] or
// -x[c] (the product with ±1, exact).
#include <cassert>
#include <cstdint>

#include "kernels/fc/fc.h"

namespace qbinfer {

float fc_f32_output__reference(std::size_t in_features, const float* x, const float* weight_row,
                               float bias) {
  assert(in_features > 0);
  double acc = 0.0;
  for (std::size_t c = 0; c < in_features; ++c) {
    acc += static_cast<double>(weight_row[c]) * static_cast<double>(x[c]);
  }
  const float sum = static_cast<float>(acc);
  return sum + bias;
}

float fc_qs8_output__reference(std::size_t in_features, const float* x,
                               const std::int8_t* weight_row, float weight_scale, float bias) {
  assert(in_features > 0);
  double acc = 0.0;
  for (std::size_t c = 0; c < in_features; ++c) {
    acc += static_cast<double>(weight_row[c]) * static_cast<double>(x[c]);
  }
  const float scaled = weight_scale * static_cast<float>(acc);
  return scaled + bias;
}

float fc_bitplane8_output__reference(std::size_t in_features, const float* x,
                                     const BitWord* planes_row, std::size_t plane_stride,
                                     float weight_scale, float bias) {
  assert(in_features > 0);
  double acc = 0.0;
  for (std::size_t c = 0; c < in_features; ++c) {
    const std::size_t word = c / kBitsPerWord;
    const std::size_t bit = c % kBitsPerWord;
    int w = 0;
    for (std::size_t b = 0; b < 8; ++b) {
      const bool minus_one = ((planes_row[b * plane_stride + word] >> bit) & 1U) != 0;
      w += (minus_one ? -1 : 1) * (1 << b);
    }
    assert(w >= -255 && w <= 255 && (w & 1) != 0);
    acc += static_cast<double>(w) * static_cast<double>(x[c]);
  }
  const float scaled = weight_scale * static_cast<float>(acc);
  return scaled + bias;
}

float fc_binary_output__reference(std::size_t in_features, const float* x, const BitWord* signs_row,
                                  float weight_scale, float bias) {
  assert(in_features > 0);
  double acc = 0.0;
  for (std::size_t c = 0; c < in_features; ++c) {
    const bool minus_one = ((signs_row[c / kBitsPerWord] >> (c % kBitsPerWord)) & 1U) != 0;
    const double xc = static_cast<double>(x[c]);
    acc += minus_one ? -xc : xc;
  }
  const float scaled = weight_scale * static_cast<float>(acc);
  return scaled + bias;
}

float fc_bitplane8_packed_output__reference(std::size_t in_features, const float* x,
                                            const std::int8_t* packed_row, float weight_scale,
                                            float bias) {
  assert(in_features > 0);
  double acc = 0.0;
  for (std::size_t c = 0; c < in_features; ++c) {
    const int w = 2 * static_cast<int>(packed_row[c]) + 1;
    acc += static_cast<double>(w) * static_cast<double>(x[c]);
  }
  const float scaled = weight_scale * static_cast<float>(acc);
  return scaled + bias;
}

void fc_bitplane8_pack(std::size_t in_features, std::size_t out_features, const BitWord* planes,
                       std::int8_t* packed) {
  const std::size_t words = words_for_channels(in_features);
  const std::size_t plane_stride = out_features * words;
  for (std::size_t o = 0; o < out_features; ++o) {
    const BitWord* row = planes + o * words;
    for (std::size_t c = 0; c < in_features; ++c) {
      int w = 0;  // as fc_bitplane8_output__reference rebuilds it
      for (std::size_t b = 0; b < 8; ++b) {
        const bool minus_one =
            ((row[b * plane_stride + c / kBitsPerWord] >> (c % kBitsPerWord)) & 1U) != 0;
        w += (minus_one ? -1 : 1) * (1 << b);
      }
      // w is odd in [-255, 255]: (w - 1) / 2 is exact and fits int8.
      packed[o * in_features + c] = static_cast<std::int8_t>((w - 1) / 2);
    }
  }
}

void fc_bitplane8_packed__reference(std::size_t in_features, std::size_t out_features,
                                    const float* x, const std::int8_t* packed,
                                    const float* weight_scale, const float* bias, float* out) {
  for (std::size_t o = 0; o < out_features; ++o) {
    out[o] = fc_bitplane8_packed_output__reference(in_features, x, packed + o * in_features,
                                                   weight_scale[o], bias[o]);
  }
}

void fc_f32__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const float* weight, const float* bias, float* out) {
  for (std::size_t o = 0; o < out_features; ++o) {
    out[o] = fc_f32_output__reference(in_features, x, weight + o * in_features, bias[o]);
  }
}

void fc_qs8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const std::int8_t* weight, const float* weight_scale, const float* bias,
                       float* out) {
  for (std::size_t o = 0; o < out_features; ++o) {
    out[o] = fc_qs8_output__reference(in_features, x, weight + o * in_features, weight_scale[o],
                                      bias[o]);
  }
}

void fc_bitplane8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                             const BitWord* planes, const float* weight_scale, const float* bias,
                             float* out) {
  const std::size_t words = words_for_channels(in_features);
  const std::size_t plane_stride = out_features * words;
  for (std::size_t o = 0; o < out_features; ++o) {
    out[o] = fc_bitplane8_output__reference(in_features, x, planes + o * words, plane_stride,
                                            weight_scale[o], bias[o]);
  }
}

void fc_binary__reference(std::size_t in_features, std::size_t out_features, const float* x,
                          const BitWord* signs, const float* weight_scale, const float* bias,
                          float* out) {
  const std::size_t words = words_for_channels(in_features);
  for (std::size_t o = 0; o < out_features; ++o) {
    out[o] =
        fc_binary_output__reference(in_features, x, signs + o * words, weight_scale[o], bias[o]);
  }
}

}  // namespace qbinfer
