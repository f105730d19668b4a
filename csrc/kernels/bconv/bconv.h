// Binary convolution microkernels (XNOR-popcount), NHWC, stride 1, 'same' output size.
//
// Contract shared by every variant (tests and dispatch treat them alike):
//   in      height * width * words_for_channels(in_channels) words (bit contract).
//   weight  out_channels * kernel * kernel * words_for_channels(in_channels) words,
//           [o][ky][kx][word], packed like the activations (tail bits 0).
//   out     height * width * out_channels floats:
//           out[p][o] = float(dot[p][o]) * scale[o] + bias[o]
//   dot is the exact integer sum over taps and channels of a * w (each ±1). For kernel 3,
//   a tap outside the image contributes 0 (kZero, PyTorch's zero padding) or +1 * w
//   (kOne). kernel 1 has no padding.
// dot is computed exactly in integers; the float epilogue is one multiply and one add in
// that order, so every variant gives bit-identical floats.
#pragma once

#include <cstddef>

#include "qbinfer/bit_contract.h"

namespace qbinfer {

enum class BinaryPadding : int { kZero = 0, kOne = 1 };

struct BConvShape {
  std::size_t height;
  std::size_t width;
  std::size_t in_channels;
  std::size_t out_channels;
  std::size_t kernel;  // 1 or 3
  BinaryPadding padding;
};

void bconv2d_nhwc__reference(const BConvShape& shape, const BitWord* in, const BitWord* weight,
                             const float* scale, const float* bias, float* out);

}  // namespace qbinfer
