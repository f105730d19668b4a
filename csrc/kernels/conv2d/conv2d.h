// Dense float convolution (the stem, and 1x1 convs on pooled vectors), NHWC, zero padding.
//   in      in_height * in_width * in_channels floats.
//   weight  out_channels * kernel_h * kernel_w * in_channels floats ([o][ky][kx][c]).
//   bias    out_channels floats (never null; zeros when the model has none).
//   out     out_height * out_width * out_channels floats, then max(0, .) when relu.
//   out_h = (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1.
#pragma once

#include <cstddef>

namespace qbinfer {

struct Conv2DShape {
  std::size_t in_height, in_width, in_channels;
  std::size_t out_channels, kernel_h, kernel_w;
  std::size_t stride_h, stride_w;
  std::size_t pad_top, pad_left, pad_bottom, pad_right;
  std::size_t out_height, out_width;
};

void conv2d_f32_nhwc__reference(const Conv2DShape& shape, const float* in, const float* weight,
                                const float* bias, bool relu, float* out);

}  // namespace qbinfer
