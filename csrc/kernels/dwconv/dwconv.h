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
// Strides (1,1), (2,2), (2,1), (1,2); dilation (DWConvShape::dilation) >= 1 with stride (1,1)
// only, f32 only (run_rows_qs8 takes dilation 1).
//
// Exact numerics (what makes every ISA variant bit-identical to the reference):
//   f32   u = in + pre_bias[c] (one rounded add; u = in when pre_bias is null);
//         acc = 0.0f, then for ky = 0..2, kx = 0..2 (ky-major), for each tap inside the image
//         only: acc = fma(u, w[ky*3+kx], acc) (a fused multiply-add: one rounding, as
//         std::fma); a tap in the padding is skipped, not added as 0 * w (which would be NaN
//         for an infinite w). Then out = (acc * scale[oc]) + bias[oc], two rounded operations.
//         (Fused, because every target has an FMA unit (x86-64 with AVX2, AArch64, ARMv7 with
//         VFPv4) and it halves the arithmetic of the sum; std::fma is exact on all of them,
//         scalar included, so the variants stay bit-identical.)
//         Every variant follows this order per output value, so results are bit-identical
//         (NaN payloads aside).
//   INT8  qu = quantize(u) as below; acc = exact int32 sum over the in-image taps of qu * w;
//         out = ((float(acc) * (input_scale * weight_scale[oc])) * scale[oc]) + bias[oc],
//         each a rounded f32 operation in that order. Bit-identical across variants.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qbinfer/isa.h"

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
  // Spacing of the taps (the atrous rate), with zero padding = dilation: tap (ky, kx) of output
  // (y, x) reads input (y * stride_h + (ky - 1) * dilation, x * stride_w + (kx - 1) * dilation).
  // Above 1 only with stride 1 x 1 and f32 (the engine refuses the rest at load).
  std::size_t dilation = 1;
};

// weight: (multiplier * channels) x 9 floats, taps row-major (ky * 3 + kx).
void dwconv3x3_f32_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   const float* weight, const float* scale, const float* bias,
                                   float* out);

// The same oracles over output rows [y_begin, y_end) only (in/q_in and out the whole image's
// bases); the INT8 one reads codes quantized by dwconv_quantize_input__reference.
void dwconv3x3_f32_nhwc_rows__reference(const DWConvShape& shape, const float* in,
                                        const float* pre_bias, const float* weight,
                                        const float* scale, const float* bias, std::size_t y_begin,
                                        std::size_t y_end, float* out);
void dwconv3x3_qs8_nhwc_rows__reference(const DWConvShape& shape, const std::int8_t* q_in,
                                        const std::int8_t* weight, const float* weight_scale,
                                        float input_scale, const float* scale, const float* bias,
                                        std::size_t y_begin, std::size_t y_end, float* out);

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

// u = in + pre_bias quantized: q = clamp(nearbyint(u / input_scale), -127, 127) (f32 division,
// round half to even, clamp in float), a NaN u giving 0. pixels * channels values.
void dwconv_quantize_input__reference(const float* in, const float* pre_bias, std::size_t pixels,
                                      std::size_t channels, float input_scale, std::int8_t* q);

// INT8: u = in + pre_bias is quantized as qu = clamp(nearbyint(u / input_scale), -127, 127)
// (f32 division, round half to even) into `scratch` (in_height * in_width * channels bytes),
// weights are int8 with a per-output-channel scale, the dot is exact in int32 and
// out = (float(acc) * (input_scale * weight_scale[oc])) * scale[oc] + bias[oc].
// input_scale > 0. A NaN u quantizes to 0 (its conversion to int8 would be undefined).
void dwconv3x3_qs8_nhwc__reference(const DWConvShape& shape, const float* in, const float* pre_bias,
                                   float input_scale, const std::int8_t* weight,
                                   const float* weight_scale, const float* scale, const float* bias,
                                   std::int8_t* scratch, float* out);

// One ISA's depthwise convs, as the engine uses them: weights are repacked once at load into
// the layout that ISA's kernels want, then any split of the output rows runs, from any threads.
//
//   packed_f32_bytes(shape) / packed_qs8_bytes(shape)
//        size of the packed weight blob (a multiple of 64, > 0). Depends on channels and
//        multiplier only: one blob serves every input size and stride.
//   pack_f32(shape, weight, packed) / pack_qs8(shape, weight, packed)
//        weight in the file layout [multiplier * channels][9] (f32, or int8 in [-127, 127]);
//        packed is the blob, 64-byte aligned. (SIMD variants store [multiplier][channel
//        block][9][vector width], zero-filled: channel padding lives in the blob, never in the
//        activations.)
//   run_rows_f32(shape, in, pre_bias, packed, scale, bias, y_begin, y_end, out)
//        writes output rows [y_begin, y_end) (0 <= y_begin <= y_end <= out_height): in and out
//        are the whole image's bases; only out rows [y_begin, y_end) are written and only the
//        input rows they need are read, nothing past the image.
//   input_absmax(in, pre_bias, pixels, channels)
//        as dwconv_input_absmax__reference (exact: a max, so bit-identical).
//   quantize_input(in, pre_bias, pixels, channels, input_scale, q)
//        as dwconv_quantize_input__reference, bit-identical. Element-wise: a caller may split
//        the pixels (offsetting in and q by p0 * channels).
//   run_rows_qs8(shape, q_in, packed, weight_scale, input_scale, scale, bias, y_begin, y_end,
//                out)
//        the INT8 conv of the quantized image q_in (in_height * in_width * channels codes),
//        rows as run_rows_f32.
// All functions are pure (no state, no allocation): disjoint row ranges may run concurrently.
struct DWConvKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  std::size_t (*packed_f32_bytes)(const DWConvShape& shape);
  void (*pack_f32)(const DWConvShape& shape, const float* weight, void* packed);
  void (*run_rows_f32)(const DWConvShape& shape, const float* in, const float* pre_bias,
                       const void* packed, const float* scale, const float* bias,
                       std::size_t y_begin, std::size_t y_end, float* out);
  float (*input_absmax)(const float* in, const float* pre_bias, std::size_t pixels,
                        std::size_t channels);
  void (*quantize_input)(const float* in, const float* pre_bias, std::size_t pixels,
                         std::size_t channels, float input_scale, std::int8_t* q);
  std::size_t (*packed_qs8_bytes)(const DWConvShape& shape);
  void (*pack_qs8)(const DWConvShape& shape, const std::int8_t* weight, void* packed);
  void (*run_rows_qs8)(const DWConvShape& shape, const std::int8_t* q_in, const void* packed,
                       const float* weight_scale, float input_scale, const float* scale,
                       const float* bias, std::size_t y_begin, std::size_t y_end, float* out);
};

// The depthwise kernels of `isa` if this build has them and this CPU runs them, else nullptr.
// kScalar is always there: the reference, whose packed layouts are the file layouts
// (pack_f32 / pack_qs8 copy, so passing the file's weights as `packed` also works for it).
const DWConvKernels* dwconv_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested (with DotProd, both neon and
// neon_dotprod, of which dwconv_kernels_for(kNeon) picks the latter).
const DWConvKernels* const* dwconv_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const DWConvKernels* const* dwconv_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
