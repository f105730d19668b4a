// Fully connected (the classifier head) microkernels: out[o] = sum_c w[o][c] * x[c] + bias[o].
//
// Three weight encodings (docs/format.md):
//   f32        w: out_features x in_features floats.
//   qs8        w: out_features x in_features int8, w = weight_scale[o] * q.
//   bitplane8  planes: 8 x out_features x words_for_channels(in_features) words; plane b holds
//              the ±1 digit 2*bit_b(B) - 1 of the 8-bit code B (bit contract: stored bit 1 = -1),
//              w = weight_scale[o] * sum_b 2^b * plane_b = weight_scale[o] * (2B - 255).
//   binary     signs: out_features x words_for_channels(in_features) words, one bit per weight
//              (bit contract: stored bit 1 = -1, tail bits 0), w = weight_scale[o] * (±1): the
//              compact SE weights (sign times a per-row scale, trained with the STE).
//   bitplane8 packed  (the engine's load-time form of bitplane8, fc_bitplane8_pack): one int8 per
//              weight, q = (w - 1) / 2 in [-128, 127], out_features x in_features row-major:
//              w = weight_scale[o] * (2q + 1). The same bytes as the planes (8 bits a weight), but
//              a weight costs one widening load instead of eight bit extractions, and rows are
//              independent (split by outputs across threads like qs8).
// The reference sums the exact products w * x in double over c in increasing order and rounds
// once to f32 (fc_reference.cc). SIMD variants sum in f32 across vector lanes with FMA, so they
// round differently; every variant is within
//   |got - exact| <= 1e-5 * (|weight_scale[o]| * sum_c |w[o][c] * x[c]| + |bias[o]|)
// of the exact result (w the integer code for qs8 / bitplane8), which the kernel test plan
// (csrc/tests/kernel_test_harness.cc) checks. Each product w * x is exact-input (bitplane8
// rebuilds the integer weight 2B - 255 before multiplying, as the reference does).
//
// Overflow, inf and NaN (docs/format.md, "Float semantics: overflow, inf and NaN"): an output
// is +inf, -inf or NaN on a variant exactly when it is on the reference. A SIMD variant gets
// there without the reference's cost: before finishing output o it bounds the magnitude of
// every partial sum, B = sum_c |w[o][c]| * sum_c |x[c]| (qs8: 127 * sum |x|; bitplane8:
// 255 * sum |x|; binary: sum |x|), and when B, |weight_scale[o]| * B or |bias[o]| is not below
// kFCFiniteBound (NaN included) it computes that output with the reference's per-output function
// below. Under the bound neither path can overflow (every partial sum, the scaled sum and the
// output stay below 2^122 on both, far from FLT_MAX = 2^128 - 2^104; the bound's own f32 rounding
// costs less than a factor 2 while in_features < 2^23), so the fast path only ever produces
// finite outputs where the reference does too.
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

void fc_binary__reference(std::size_t in_features, std::size_t out_features, const float* x,
                          const BitWord* signs, const float* weight_scale, const float* bias,
                          float* out);

// bitplane8 planes (the file layout) -> the packed codes q = (w - 1) / 2, out_features x
// in_features int8 (portable; the engine packs at load).
void fc_bitplane8_pack(std::size_t in_features, std::size_t out_features, const BitWord* planes,
                       std::int8_t* packed);

// The reference over packed codes: the same weights as fc_bitplane8__reference on the planes
// they were packed from, summed in the same order, so the two agree bit for bit.
void fc_bitplane8_packed__reference(std::size_t in_features, std::size_t out_features,
                                    const float* x, const std::int8_t* packed,
                                    const float* weight_scale, const float* bias, float* out);

// The magnitude under which a SIMD variant's f32 sums cannot overflow (see above): 2^120.
constexpr float kFCFiniteBound = 1.329228e36f;

// One output of each reference (the SIMD variants' fallback): weight_row the output's row
// (bitplane8: its words in plane 0, planes plane_stride words apart).
float fc_f32_output__reference(std::size_t in_features, const float* x, const float* weight_row,
                               float bias);
float fc_qs8_output__reference(std::size_t in_features, const float* x,
                               const std::int8_t* weight_row, float weight_scale, float bias);
float fc_bitplane8_output__reference(std::size_t in_features, const float* x,
                                     const BitWord* planes_row, std::size_t plane_stride,
                                     float weight_scale, float bias);
float fc_binary_output__reference(std::size_t in_features, const float* x, const BitWord* signs_row,
                                  float weight_scale, float bias);
float fc_bitplane8_packed_output__reference(std::size_t in_features, const float* x,
                                            const std::int8_t* packed_row, float weight_scale,
                                            float bias);

// One ISA's FC kernels, each with the contract of its reference above (weights in the file
// layout, no repacking). Pure. f32, qs8 and binary may be split by outputs across threads
// (offsetting weight rows, scales, biases and out); bitplane8's plane stride is out_features *
// words, so it runs whole.
struct FCKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*f32)(std::size_t in_features, std::size_t out_features, const float* x,
              const float* weight, const float* bias, float* out);
  void (*qs8)(std::size_t in_features, std::size_t out_features, const float* x,
              const std::int8_t* weight, const float* weight_scale, const float* bias, float* out);
  void (*bitplane8)(std::size_t in_features, std::size_t out_features, const float* x,
                    const BitWord* planes, const float* weight_scale, const float* bias,
                    float* out);
  void (*binary)(std::size_t in_features, std::size_t out_features, const float* x,
                 const BitWord* signs, const float* weight_scale, const float* bias, float* out);
  // bitplane8 on the packed codes (fc_bitplane8_pack); may be split by outputs like qs8.
  void (*bitplane8_packed)(std::size_t in_features, std::size_t out_features, const float* x,
                           const std::int8_t* packed, const float* weight_scale, const float* bias,
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
