// Fully connected (the classifier head) microkernels: out[o] = sum_c w[o][c] * x[c] + bias[o].
//
// Three weight encodings (docs/format.md):
//   f32        w: out_features x in_features floats.
//   qs8        w: out_features x in_features int8, w = weight_scale[o] * q.
//   bitplane8  planes: 8 x out_features x words_for_channels(in_features) words; plane b holds
//              the ±1 digit 2*bit_b(B) - 1 of the 8-bit code B (bit contract: stored bit 1 = -1),
//              w = weight_scale[o] * sum_b 2^b * plane_b = weight_scale[o] * (2B - 255).
// Float sums run over c in increasing order in f32 (reference); faster variants agree within
// the tolerance stated in their tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qbinfer/bit_contract.h"

namespace qbinfer {

void fc_f32__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const float* weight, const float* bias, float* out);

void fc_qs8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                       const std::int8_t* weight, const float* weight_scale, const float* bias,
                       float* out);

void fc_bitplane8__reference(std::size_t in_features, std::size_t out_features, const float* x,
                             const BitWord* planes, const float* weight_scale, const float* bias,
                             float* out);

}  // namespace qbinfer
