// Element-wise and per-channel float microkernels over NHWC rows: `pixels` rows of
// `channels` floats. In-place use (out == in) is allowed for every kernel here.
#pragma once

#include <cstddef>

#include "qbinfer/isa.h"

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
// out = in < lo ? lo : (in > hi ? hi : in) over n floats (lo <= hi). NaN compares false both
// times, so it passes through unchanged (payload kept), as torch.clamp / hardtanh propagate it.
void clip_f32__reference(const float* in, std::size_t n, float lo, float hi, float* out);

// One ISA's element-wise kernels, each with the contract of its reference above. affine,
// prelu, relu, add and mul_channel are single rounded operations per element (affine: a
// multiply then an add, no FMA), so every variant is bit-identical to the reference (NaN
// payloads aside); sigmoid calls the C library's exp in every variant. clip only selects
// among in, lo and hi, so it is bit-identical NaN payloads included.
struct ElementwiseKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*affine)(const float* in, std::size_t pixels, std::size_t channels, const float* scale,
                 const float* bias, float* out);
  void (*prelu)(const float* in, std::size_t pixels, std::size_t channels, const float* slope,
                float* out);
  void (*relu)(const float* in, std::size_t n, float* out);
  void (*sigmoid)(const float* in, std::size_t n, float* out);
  void (*add)(const float* a, const float* b, std::size_t n, float* out);
  void (*mul_channel)(const float* in, std::size_t pixels, std::size_t channels, const float* s,
                      float* out);
  void (*clip)(const float* in, std::size_t n, float lo, float hi, float* out);
};

// The element-wise kernels of `isa` if this build has them and this CPU runs them, else
// nullptr. kScalar is always there (the references).
const ElementwiseKernels* elementwise_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const ElementwiseKernels* const* elementwise_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const ElementwiseKernels* const* elementwise_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
