// Pooling and channel concatenation, NHWC floats.
#pragma once

#include <cstddef>

namespace qbinfer {

// Average pool, no padding, ceil mode: out_h = ceil((in_h - kernel_h) / stride_h) + 1 (and the
// same for w); every window averages only the input pixels it covers (PyTorch's
// ceil_mode=True, count_include_pad=False). Requires in_h >= kernel_h, in_w >= kernel_w.
struct AvgPoolShape {
  std::size_t in_height, in_width, channels;
  std::size_t kernel_h, kernel_w, stride_h, stride_w;
  std::size_t out_height, out_width;
};
void avgpool_f32_nhwc__reference(const AvgPoolShape& shape, const float* in, float* out);

// Mean over all pixels: out has `channels` floats.
void global_avgpool_f32_nhwc__reference(const float* in, std::size_t pixels, std::size_t channels,
                                        float* out);

// Writes `pixels` rows of sum(channels[i]) floats: row p is the concatenation of row p of
// every input, in order. The inputs may alias each other (a channel repeat), never `out`.
void concat_channels_f32__reference(const float* const* inputs, const std::size_t* channels,
                                    std::size_t n_inputs, std::size_t pixels, float* out);

}  // namespace qbinfer
