// Portable oracle for the dense float convolution: one output pixel and one output channel
// at a time, an f32 accumulator over taps [ky][kx] and input channels in order, then the
// bias and the optional ReLU. A tap in the padding is skipped (it would multiply a zero).
#include <cassert>
#include <cmath>

#include "kernels/conv2d/conv2d.h"

namespace qbinfer {

void conv2d_f32_nhwc_rows__reference(const Conv2DShape& shape, const float* in, const float* weight,
                                     const float* bias, bool relu, std::size_t y_begin,
                                     std::size_t y_end, float* out) {
  assert(shape.in_channels > 0 && shape.out_channels > 0);
  assert(shape.kernel_h > 0 && shape.kernel_w > 0 && shape.stride_h > 0 && shape.stride_w > 0);
  [[maybe_unused]] const std::size_t padded_h = shape.in_height + shape.pad_top + shape.pad_bottom;
  [[maybe_unused]] const std::size_t padded_w = shape.in_width + shape.pad_left + shape.pad_right;
  assert(padded_h >= shape.kernel_h && padded_w >= shape.kernel_w);
  assert(shape.out_height == (padded_h - shape.kernel_h) / shape.stride_h + 1);
  assert(shape.out_width == (padded_w - shape.kernel_w) / shape.stride_w + 1);

  assert(y_begin <= y_end && y_end <= shape.out_height);

  const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(shape.in_height);
  const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(shape.in_width);
  const std::size_t ci = shape.in_channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      const std::ptrdiff_t y0 = static_cast<std::ptrdiff_t>(oy * shape.stride_h) -
                                static_cast<std::ptrdiff_t>(shape.pad_top);
      const std::ptrdiff_t x0 = static_cast<std::ptrdiff_t>(ox * shape.stride_w) -
                                static_cast<std::ptrdiff_t>(shape.pad_left);
      float* out_px = out + (oy * shape.out_width + ox) * shape.out_channels;
      for (std::size_t o = 0; o < shape.out_channels; ++o) {
        const float* w_o = weight + o * shape.kernel_h * shape.kernel_w * ci;
        float acc = 0.0f;
        for (std::size_t ky = 0; ky < shape.kernel_h; ++ky) {
          const std::ptrdiff_t iy = y0 + static_cast<std::ptrdiff_t>(ky);
          if (iy < 0 || iy >= height) continue;
          for (std::size_t kx = 0; kx < shape.kernel_w; ++kx) {
            const std::ptrdiff_t ix = x0 + static_cast<std::ptrdiff_t>(kx);
            if (ix < 0 || ix >= width) continue;
            const float* a = in + static_cast<std::size_t>(iy * width + ix) * ci;
            const float* w = w_o + (ky * shape.kernel_w + kx) * ci;
            for (std::size_t c = 0; c < ci; ++c) {
              acc = std::fma(a[c], w[c], acc);  // one rounding: the contract's fused MAC
            }
          }
        }
        const float y = acc + bias[o];
        // Written so NaN propagates, as torch.relu does.
        out_px[o] = relu && y < 0.0f ? 0.0f : y;
      }
    }
  }
}

void conv2d_f32_nhwc__reference(const Conv2DShape& shape, const float* in, const float* weight,
                                const float* bias, bool relu, float* out) {
  conv2d_f32_nhwc_rows__reference(shape, in, weight, bias, relu, 0, shape.out_height, out);
}

void conv2d_clip_rows__reference(const Conv2DShape& shape, float lo, float hi, std::size_t y_begin,
                                 std::size_t y_end, float* out) {
  const std::size_t row = shape.out_width * shape.out_channels;
  for (std::size_t i = y_begin * row; i < y_end * row; ++i) {
    const float v = out[i];  // the CLIP op's two tests, both on the input (clip_f32__reference)
    out[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

}  // namespace qbinfer
