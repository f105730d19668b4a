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
// Softmax (log_softmax false) or log-softmax (true) over the `channels` floats of each of
// `pixels` rows (channels >= 1), the SOFTMAX op of docs/format.md, in this order per row:
//   m = the maximum (a NaN anywhere makes m NaN), scanning c = 0, 1, ...;
//   e_c = std::exp(x_c - m) in float; s = the e_c summed in double in channel order, rounded to
//   float once (a float sum of 10^4 terms could lose ~1e-6 of s);
//   softmax: out_c = e_c / s;  log-softmax: out_c = (x_c - m) - std::log(s).
// NaN anywhere in a row, or +inf (inf - inf), or a row of -inf only gives a row of NaN; a -inf
// entry (with a finite maximum) gives 0 / -inf. These are PyTorch's results too.
void softmax_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                            bool log_softmax, float* out);

// One ISA's element-wise kernels, each with the contract of its reference above. affine,
// prelu, relu, add and mul_channel are single rounded operations per element (affine: a
// multiply then an add, no FMA), so every variant is bit-identical to the reference (NaN
// payloads aside); sigmoid calls the C library's exp in every variant. clip only selects
// among in, lo and hi, so it is bit-identical NaN payloads included. softmax is off the hot
// path (once per image, on the classifier's output): every variant's table holds the one
// portable function, so every ISA gives the same bits, where a vector exp would differ by ISA.
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
  void (*softmax)(const float* in, std::size_t pixels, std::size_t channels, bool log_softmax,
                  float* out);
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
