// Depthwise 3x3 convolution microkernels with a channel multiplier, NHWC, zero padding 1.
//
// Contract shared by every variant:
//   in        in_height * in_width * channels floats.
//   pre_bias  `channels` floats added to the input before the conv (the learnable bias of a
//             DS half), or nullptr. Padding is applied after the bias: padded taps are 0.
//   out       out_height * out_width * (multiplier * channels) floats; output channel
//             j * channels + c is conv j of input channel c (block j holds conv j of all
//             channels, the order of the model's concat). out_h = ceil(in_h / stride_h).
//   epilogue  out = conv * scale[oc] + bias[oc] (BN folded), in that order.
// Strides (1,1), (2,2), (2,1), (1,2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace qbinfer {

struct DWConvShape {
  std::size_t in_height;
  std::size_t in_width;
  std::size_t channels;
  std::size_t multiplier;
  std::size_t stride_h;
  std::size_t stride_w;
  std::size_t out_height;
  std::size_t out_width;
};

// weight: (multiplier * channels) x 9 floats, taps row-major (ky * 3 + kx).
void dwconv3x3_f32_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   const float* weight, const float* scale, const float* bias,
                                   float* out);

// Largest |in + pre_bias| over the image (NaN values are ignored): the dynamic INT8 input
// scale is that / 127, see dwconv_dynamic_input_scale.
float dwconv_input_absmax__reference(const float* in, const float* pre_bias, std::size_t pixels,
                                     std::size_t channels);

// The dynamic INT8 input scale from an absmax: absmax / 127 in f32, or 1 when that is not > 0
// (an all-zero input, or one so small that the quotient underflows to 0), where every u then
// quantizes to 0.
inline float dwconv_dynamic_input_scale(float absmax) {
  const float s = absmax / 127.0f;
  return s > 0.0f ? s : 1.0f;
}

// INT8: u = in + pre_bias is quantized as qu = clamp(nearbyint(u / input_scale), -127, 127)
// (f32 division, round half to even) into `scratch` (in_height * in_width * channels bytes),
// weights are int8 with a per-output-channel scale, the dot is exact in int32 and
// out = (float(acc) * (input_scale * weight_scale[oc])) * scale[oc] + bias[oc].
// input_scale > 0. A NaN u quantizes to 0 (its conversion to int8 would be undefined).
void dwconv3x3_qs8_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   float input_scale, const std::int8_t* weight,
                                   const float* weight_scale, const float* scale, const float* bias,
                                   std::int8_t* scratch, float* out);

}  // namespace qbinfer
