// Portable oracle for the depthwise 3x3 convolutions: one output pixel at a time, then
// every output channel oc = j * channels + c, taps in ky * 3 + kx order (dilation apart). A tap
// outside the image is skipped (zero padding applied after pre_bias, so it contributes exactly 0).
// The INT8 path first quantizes the whole biased input into `scratch`, so every output channel of
// the multiplier reads the same codes, as a faster variant will.
#include <cassert>
#include <cmath>
#include <cstdint>

#include "kernels/dwconv/dwconv.h"

namespace qbinfer {
namespace {

void assert_shape([[maybe_unused]] const DWConvShape& s) {
  assert(s.channels > 0 && s.multiplier > 0);
  assert((s.stride_h == 1 || s.stride_h == 2) && (s.stride_w == 1 || s.stride_w == 2));
  assert(s.dilation >= 1 && (s.dilation == 1 || (s.stride_h == 1 && s.stride_w == 1)));
  assert(s.out_height == (s.in_height + s.stride_h - 1) / s.stride_h);
  assert(s.out_width == (s.in_width + s.stride_w - 1) / s.stride_w);
}

// Calls tap(input_pixel_offset, tap_index) for every in-image tap of output pixel
// (oy, ox); shared by both datatypes so the border logic exists once.
template <typename Tap>
void for_each_tap(const DWConvShape& s, std::size_t oy, std::size_t ox, Tap&& tap) {
  const std::ptrdiff_t cy = static_cast<std::ptrdiff_t>(oy * s.stride_h);
  const std::ptrdiff_t cx = static_cast<std::ptrdiff_t>(ox * s.stride_w);
  const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(s.in_height);
  const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(s.in_width);
  const std::ptrdiff_t d = static_cast<std::ptrdiff_t>(s.dilation);
  for (std::ptrdiff_t ky = 0; ky < 3; ++ky) {
    const std::ptrdiff_t iy = cy + (ky - 1) * d;
    if (iy < 0 || iy >= height) continue;
    for (std::ptrdiff_t kx = 0; kx < 3; ++kx) {
      const std::ptrdiff_t ix = cx + (kx - 1) * d;
      if (ix < 0 || ix >= width) continue;
      tap(static_cast<std::size_t>(iy * width + ix) * s.channels,
          static_cast<std::size_t>(ky * 3 + kx));
    }
  }
}

}  // namespace

void dwconv3x3_f32_nhwc_rows__reference(const DWConvShape& shape, const float* in,
                                        const float* pre_bias, const float* weight,
                                        const float* scale, const float* bias, std::size_t y_begin,
                                        std::size_t y_end, float* out) {
  assert_shape(shape);
  assert(y_begin <= y_end && y_end <= shape.out_height);
  const std::size_t channels = shape.channels;
  const std::size_t out_channels = shape.multiplier * channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      float* out_px = out + (oy * shape.out_width + ox) * out_channels;
      for (std::size_t oc = 0; oc < out_channels; ++oc) {
        const std::size_t c = oc % channels;
        const float* w = weight + oc * 9;
        const float b = pre_bias != nullptr ? pre_bias[c] : 0.0f;
        float acc = 0.0f;
        for_each_tap(shape, oy, ox, [&](std::size_t offset, std::size_t t) {
          // u is rounded before the product, as the model materialises x + beta; the
          // product and the sum round once (the contract's fused multiply-add).
          const float u = pre_bias != nullptr ? in[offset + c] + b : in[offset + c];
          acc = std::fma(u, w[t], acc);
        });
        // Separate statements keep the rounded multiply and add of the contract (no FMA).
        const float scaled = acc * scale[oc];
        out_px[oc] = scaled + bias[oc];
      }
    }
  }
}

void dwconv3x3_f32_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   const float* weight, const float* scale, const float* bias,
                                   float* out) {
  dwconv3x3_f32_nhwc_rows__reference(shape, in, pre_bias, weight, scale, bias, 0, shape.out_height,
                                     out);
}

float dwconv_input_absmax__reference(const float* in, const float* pre_bias, std::size_t pixels,
                                     std::size_t channels) {
  assert(channels > 0);
  float absmax = 0.0f;
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t c = 0; c < channels; ++c) {
      const float u = in[p * channels + c] + (pre_bias != nullptr ? pre_bias[c] : 0.0f);
      // Written so a NaN never wins: it fails the comparison.
      if (std::fabs(u) > absmax) absmax = std::fabs(u);
    }
  }
  return absmax;
}

void dwconv_quantize_input__reference(const float* in, const float* pre_bias, std::size_t pixels,
                                      std::size_t channels, float input_scale, std::int8_t* q) {
  assert(channels > 0 && input_scale > 0.0f);
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t c = 0; c < channels; ++c) {
      const float u = in[p * channels + c] + (pre_bias != nullptr ? pre_bias[c] : 0.0f);
      // nearbyint honours the current rounding mode, which is round-half-to-even unless
      // someone changed it; the clamp runs in float so huge quotients saturate.
      float v = std::nearbyint(u / input_scale);
      v = v > 127.0f ? 127.0f : v;
      v = v < -127.0f ? -127.0f : v;
      // NaN passes both clamps and its conversion to int8 would be undefined behaviour.
      if (std::isnan(v)) v = 0.0f;
      q[p * channels + c] = static_cast<std::int8_t>(v);
    }
  }
}

void dwconv3x3_qs8_nhwc_rows__reference(const DWConvShape& shape, const std::int8_t* q_in,
                                        const std::int8_t* weight, const float* weight_scale,
                                        float input_scale, const float* scale, const float* bias,
                                        std::size_t y_begin, std::size_t y_end, float* out) {
  assert_shape(shape);
  assert(input_scale > 0.0f);
  assert(y_begin <= y_end && y_end <= shape.out_height);
  const std::size_t channels = shape.channels;
  const std::size_t out_channels = shape.multiplier * channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      float* out_px = out + (oy * shape.out_width + ox) * out_channels;
      for (std::size_t oc = 0; oc < out_channels; ++oc) {
        const std::size_t c = oc % channels;
        const std::int8_t* w = weight + oc * 9;
        std::int32_t acc = 0;
        for_each_tap(shape, oy, ox, [&](std::size_t offset, std::size_t t) {
          acc += static_cast<std::int32_t>(q_in[offset + c]) * static_cast<std::int32_t>(w[t]);
        });
        const float requant = input_scale * weight_scale[oc];
        const float dequant = static_cast<float>(acc) * requant;
        const float scaled = dequant * scale[oc];
        out_px[oc] = scaled + bias[oc];
      }
    }
  }
}

void dwconv3x3_qs8_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   float input_scale, const std::int8_t* weight,
                                   const float* weight_scale, const float* scale, const float* bias,
                                   std::int8_t* scratch, float* out) {
  dwconv_quantize_input__reference(in, pre_bias, shape.in_height * shape.in_width, shape.channels,
                                   input_scale, scratch);
  dwconv3x3_qs8_nhwc_rows__reference(shape, scratch, weight, weight_scale, input_scale, scale, bias,
                                     0, shape.out_height, out);
}

}  // namespace qbinfer
