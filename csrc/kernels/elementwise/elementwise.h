// Element-wise and per-channel float microkernels over NHWC rows: `pixels` rows of
// `channels` floats. In-place use (out == in) is allowed for every kernel here.
#pragma once

#include <cstddef>

namespace qbinfer {

// out = in * scale[c] + bias[c]
void affine_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                           const float* scale, const float* bias, float* out);
// out = in >= 0 ? in : slope[c] * in
void prelu_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                          const float* slope, float* out);
// out = max(in, 0) over n floats
void relu_f32__reference(const float* in, std::size_t n, float* out);
// out = 1 / (1 + exp(-in)) over n floats
void sigmoid_f32__reference(const float* in, std::size_t n, float* out);
// out = a + b over n floats
void add_f32__reference(const float* a, const float* b, std::size_t n, float* out);
// out = in * s[c] (SE scaling)
void mul_channel_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                                const float* s, float* out);

}  // namespace qbinfer
