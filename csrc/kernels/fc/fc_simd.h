// The FC kernels written once over a vector-traits type V (kernels/simd/vec_*.h) and a
// bitplane decoder D (per ISA file), instantiated by fc_avx2.cc and fc_avx512.cc (internal
// linkage throughout).
//
// Tile: kRows (4) outputs at once sharing each x vector, two accumulators per output (even and
// odd vectors of c) for eight independent FMA chains; masked tail; a horizontal sum at the end.
// An output whose sums could come near FLT_MAX (or meet an inf or NaN) is computed by the
// reference instead, so that inf and NaN arise exactly where the reference has them (fc.h).
// qs8 widens 8-bit codes to int32 then float; bitplane8 rebuilds each integer weight 2B - 255
// from its 8 sign planes with D::decode, 64 at a time (as the reference does, per weight)
// before the FMA; binary rebuilds ±1 from one sign word (D::signs). The rounding
// differs from the reference's sequential sum; fc.h states the tolerance.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/fc/fc.h"

namespace qbinfer {
namespace {

template <class V, class D>
struct FCSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;
  static constexpr std::size_t kRows = 4;

  // sum_c |x[c]| in f32: with the weights' magnitude it bounds every partial sum (fc.h). A NaN
  // or an infinity in x makes it NaN or inf, which sends every output to the reference.
  static float abs_sum(std::size_t n, const float* x) {
    float s = 0.0f;
    for (std::size_t c = 0; c < n; ++c) s += std::fabs(x[c]);
    return s;
  }

  // fc.h's overflow rule: the SIMD sum may finish output o only when its partial sums (bounded
  // by `bound`), the scaled sum and the bias stay far below FLT_MAX. Written so that NaN fails.
  static bool fast_path_is_finite(float bound, float weight_scale, float bias) {
    return bound < kFCFiniteBound && std::fabs(weight_scale) * bound < kFCFiniteBound &&
           std::fabs(bias) < kFCFiniteBound;
  }

  // Sums over c of weight(row, c0, m, tail) * x[c] for `rows` rows (<= kRows) into sums[];
  // with kAbsWeights also sum_c |weight| per row into abs_weights[].
  template <std::size_t R, bool kAbsWeights, class W>
  static void dot_rows(std::size_t in_features, const float* x, W weight, float* sums,
                       float* abs_weights) {
    F acc[R][2];
    F mag[R];
    for (std::size_t r = 0; r < R; ++r) acc[r][0] = acc[r][1] = mag[r] = V::zero();
    const std::size_t full = in_features / N * N;
    std::size_t c0 = 0;
    for (; c0 + 2 * N <= full; c0 += 2 * N) {
      const F x0 = V::load(x + c0), x1 = V::load(x + c0 + N);
      for (std::size_t r = 0; r < R; ++r) {
        const F w0 = weight(r, c0, V::all(), false), w1 = weight(r, c0 + N, V::all(), false);
        acc[r][0] = V::fmadd(w0, x0, acc[r][0]);
        acc[r][1] = V::fmadd(w1, x1, acc[r][1]);
        if (kAbsWeights) mag[r] = V::add(mag[r], V::add(V::abs(w0), V::abs(w1)));
      }
    }
    for (; c0 < full; c0 += N) {
      const F x0 = V::load(x + c0);
      for (std::size_t r = 0; r < R; ++r) {
        const F w0 = weight(r, c0, V::all(), false);
        acc[r][0] = V::fmadd(w0, x0, acc[r][0]);
        if (kAbsWeights) mag[r] = V::add(mag[r], V::abs(w0));
      }
    }
    if (c0 < in_features) {
      const M m = V::mask(in_features - c0);
      const F x0 = V::load(x + c0, m);  // masked-off lanes 0: their (finite) weights add 0
      for (std::size_t r = 0; r < R; ++r) {
        const F w0 = weight(r, c0, m, true);
        acc[r][1] = V::fmadd(w0, x0, acc[r][1]);
        if (kAbsWeights) mag[r] = V::add(mag[r], V::abs(w0));
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      sums[r] = V::hsum(V::add(acc[r][0], acc[r][1]));
      if (kAbsWeights) abs_weights[r] = V::hsum(mag[r]);
    }
  }

  // finish(o, sum, abs_weight_sum) for every output (abs_weight_sum 0 without kAbsWeights).
  template <bool kAbsWeights, class W, class Finish>
  static void all_rows(std::size_t in_features, std::size_t out_features, const float* x,
                       W weight_of_row, Finish finish) {
    assert(in_features > 0);
    float sums[kRows], abs_weights[kRows] = {};
    std::size_t o = 0;
    for (; o + kRows <= out_features; o += kRows) {
      dot_rows<kRows, kAbsWeights>(
          in_features, x,
          [&](std::size_t r, std::size_t c0, M m, bool tail) {
            return weight_of_row(o + r, c0, m, tail);
          },
          sums, abs_weights);
      for (std::size_t r = 0; r < kRows; ++r) finish(o + r, sums[r], abs_weights[r]);
    }
    for (; o < out_features; ++o) {
      dot_rows<1, kAbsWeights>(
          in_features, x,
          [&](std::size_t, std::size_t c0, M m, bool tail) {
            return weight_of_row(o, c0, m, tail);
          },
          sums, abs_weights);
      finish(o, sums[0], abs_weights[0]);
    }
  }

  static void f32(std::size_t in_features, std::size_t out_features, const float* x,
                  const float* weight, const float* bias, float* out) {
    const float abs_x = abs_sum(in_features, x);
    all_rows<true>(
        in_features, out_features, x,
        [&](std::size_t o, std::size_t c0, M m, bool tail) {
          const float* w = weight + o * in_features + c0;
          return tail ? V::load(w, m) : V::load(w);
        },
        [&](std::size_t o, float sum, float abs_w) {
          const float* row = weight + o * in_features;
          if (!fast_path_is_finite(abs_w * abs_x, 1.0f, bias[o])) {
            out[o] = fc_f32_output__reference(in_features, x, row, bias[o]);
            return;
          }
          out[o] = sum + bias[o];
        });
  }

  static void qs8(std::size_t in_features, std::size_t out_features, const float* x,
                  const std::int8_t* weight, const float* weight_scale, const float* bias,
                  float* out) {
    const float bound = 127.0f * abs_sum(in_features, x);  // |code| <= 127
    all_rows<false>(
        in_features, out_features, x,
        [&](std::size_t o, std::size_t c0, M, bool tail) {
          const std::int8_t* w = weight + o * in_features + c0;
          return V::to_float(tail ? V::load_i8(w, in_features - c0) : V::load_i8(w));
        },
        [&](std::size_t o, float sum, float) {
          if (!fast_path_is_finite(bound, weight_scale[o], bias[o])) {
            out[o] = fc_qs8_output__reference(in_features, x, weight + o * in_features,
                                              weight_scale[o], bias[o]);
            return;
          }
          const float scaled = weight_scale[o] * sum;
          out[o] = scaled + bias[o];
        });
  }

  // bitplane8 packed: as qs8, with w = 2q + 1 rebuilt in float (exact: |w| <= 255) before the
  // FMA, so each product is the reference's.
  static void bitplane8_packed(std::size_t in_features, std::size_t out_features, const float* x,
                               const std::int8_t* packed, const float* weight_scale,
                               const float* bias, float* out) {
    const float bound = 255.0f * abs_sum(in_features, x);  // |2q + 1| <= 255
    const F two = V::set1(2.0f), one = V::set1(1.0f);
    all_rows<false>(
        in_features, out_features, x,
        [&](std::size_t o, std::size_t c0, M, bool tail) {
          const std::int8_t* w = packed + o * in_features + c0;
          // Tail lanes past in_features load 0 (w = 1) and meet masked x = 0.
          return V::fmadd(V::to_float(tail ? V::load_i8(w, in_features - c0) : V::load_i8(w)), two,
                          one);
        },
        [&](std::size_t o, float sum, float) {
          if (!fast_path_is_finite(bound, weight_scale[o], bias[o])) {
            out[o] = fc_bitplane8_packed_output__reference(in_features, x, packed + o * in_features,
                                                           weight_scale[o], bias[o]);
            return;
          }
          const float scaled = weight_scale[o] * sum;
          out[o] = scaled + bias[o];
        });
  }

  // x . (one row of weights stored as bits), for bitplane8 and binary: `decode(wi, w)` fills
  // the 64 / N float vectors of 64-channel word wi; each is one FMA with x into two alternating
  // accumulators. Tail channels meet masked x = 0.
  template <class Decode>
  static float dot_decoded_row(std::size_t in_features, std::size_t words, const float* x,
                               Decode decode) {
    constexpr std::size_t kVecs = kBitsPerWord / N;
    F acc[2] = {V::zero(), V::zero()};
    for (std::size_t wi = 0; wi < words; ++wi) {
      F w[kVecs];
      decode(wi, w);
      for (std::size_t v = 0; v < kVecs; ++v) {
        const std::size_t c0 = wi * kBitsPerWord + v * N;
        if (c0 >= in_features) break;
        const F xv =
            c0 + N <= in_features ? V::load(x + c0) : V::load(x + c0, V::mask(in_features - c0));
        acc[v & 1] = V::fmadd(w[v], xv, acc[v & 1]);
      }
    }
    return V::hsum(V::add(acc[0], acc[1]));
  }

  // One output at a time: per 64-channel word, D::decode rebuilds the 64 integer weights
  // 2B - 255 from the 8 plane words (exact in float) into 64 / kLanes vectors, each then one FMA
  // with x. Tail channels have stored bits 0 (w = 255) and meet masked x = 0.
  static void bitplane8(std::size_t in_features, std::size_t out_features, const float* x,
                        const BitWord* planes, const float* weight_scale, const float* bias,
                        float* out) {
    assert(in_features > 0);
    const std::size_t words = words_for_channels(in_features);
    const std::size_t plane_stride = out_features * words;
    const float bound = 255.0f * abs_sum(in_features, x);  // |2B - 255| <= 255
    for (std::size_t o = 0; o < out_features; ++o) {
      if (!fast_path_is_finite(bound, weight_scale[o], bias[o])) {
        out[o] = fc_bitplane8_output__reference(in_features, x, planes + o * words, plane_stride,
                                                weight_scale[o], bias[o]);
        continue;
      }
      const float sum = dot_decoded_row(in_features, words, x, [&](std::size_t wi, F* w) {
        D::decode(planes + o * words + wi, plane_stride, w);
      });
      const float scaled = weight_scale[o] * sum;
      out[o] = scaled + bias[o];
    }
  }

  // Binary (±1) weights, one output at a time as bitplane8 with one plane: per 64-channel word,
  // D::signs turns the 64 stored bits into ±1.0f vectors, each one FMA with x (w * x = ±x,
  // exact). Tail channels have stored bits 0 (w = +1) and meet masked x = 0. Rows are
  // independent (row o starts at o * words), so callers may split by outputs.
  static void binary(std::size_t in_features, std::size_t out_features, const float* x,
                     const BitWord* signs, const float* weight_scale, const float* bias,
                     float* out) {
    assert(in_features > 0);
    const std::size_t words = words_for_channels(in_features);
    const float bound = abs_sum(in_features, x);  // |w| = 1
    for (std::size_t o = 0; o < out_features; ++o) {
      const BitWord* row = signs + o * words;
      if (!fast_path_is_finite(bound, weight_scale[o], bias[o])) {
        out[o] = fc_binary_output__reference(in_features, x, row, weight_scale[o], bias[o]);
        continue;
      }
      const float sum = dot_decoded_row(in_features, words, x,
                                        [&](std::size_t wi, F* w) { D::signs(row[wi], w); });
      const float scaled = weight_scale[o] * sum;
      out[o] = scaled + bias[o];
    }
  }
};

}  // namespace
}  // namespace qbinfer
