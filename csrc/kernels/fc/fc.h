// Fully connected (the classifier head) microkernels: out[o] = sum_c w[o][c] * x[c] + bias[o].
//
// Three weight encodings (docs/format.md):
//   f32        w: out_features x in_features floats.
//   qs8        w: out_features x in_features int8, w = weight_scale[o] * q.
//   bitplane8  planes: 8 x out_features x words_for_channels(in_features) words; plane b holds
//              the ±1 digit 2*bit_b(B) - 1 of the 8-bit code B (bit contract: stored bit 1 = -1),
//              w = weight_scale[o] * sum_b 2^b * plane_b = weight_scale[o] * (2B - 255).
// Float sums run over c in increasing order in f32 (reference). SIMD variants split the sum
// across vector lanes (and may use FMA), so they round differently; every variant is within
//   |got - exact| <= 1e-5 * (|weight_scale[o]| * sum_c |w[o][c] * x[c]| + |bias[o]|)
// of the exact result (w the integer code for qs8 / bitplane8), which the kernel test plan
// (csrc/tests/kernel_test_harness.cc) checks. Each product w * x is exact-input (bitplane8
// rebuilds the integer weight 2B - 255 before multiplying, as the reference does).
#pragma once

#include <cstddef>
#include <cstdint>

#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {

void fc_f32__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const float* weight, const float* bias, float* out);

void fc_qs8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const std::int8_t* weight, const float* weight_scale, const float* bias,
                       float* out);

void fc_bitplane8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                             const BitWord* planes, const float* weight_scale, const float* bias,
                             float* out);

// One ISA's FC kernels, each with the contract of its reference above (weights in the file
// layout, no repacking). Pure. f32 and qs8 may be split by outputs across threads (offsetting
// weight rows, scales, biases and out); bitplane8's plane stride is out_features * words, so
// it runs whole.
struct FCKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*f32)(std::size_t in_features, std::size_t out_features, const float* x,
              const float* weight, const float* bias, float* out);
  void (*qs8)(std::size_t in_features, std::size_t out_features, const float* x,
              const std::int8_t* weight, const float* weight_scale, const float* bias, float* out);
  void (*bitplane8)(std::size_t in_features, std::size_t out_features, const float* x,
                    const BitWord* planes, const float* weight_scale, const float* bias,
                    float* out);
};

// The FC kernels of `isa` if this build has them and this CPU runs them, else nullptr.
// kScalar is always there (the references).
const FCKernels* fc_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const FCKernels* const* fc_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const FCKernels* const* fc_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
