// The FC kernels written once over a vector-traits type V (kernels/simd/vec_*.h) and a
// bitplane decoder D (per ISA file), instantiated by fc_avx2.cc and fc_avx512.cc (internal
// linkage throughout).
//
// Tile: kRows (4) outputs at once sharing each x vector, two accumulators per output (even and
// odd vectors of c) for eight independent FMA chains; masked tail; a horizontal sum at the end.
// qs8 widens 8-bit codes to int32 then float; bitplane8 rebuilds each integer weight 2B - 255
// from its 8 sign planes with D::decode, 64 at a time (as the reference does, per weight)
// before the FMA. The rounding
// differs from the reference's sequential sum; fc.h states the tolerance.
#pragma once

#include <algorithm>
#include <cassert>
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

  // Sums over c of weight(row, c0, m, tail) * x[c] for `rows` rows (<= kRows) into sums[].
  template <std::size_t R, class W>
  static void dot_rows(std::size_t in_features, const float* x, W weight, float* sums) {
    F acc[R][2];
    for (std::size_t r = 0; r < R; ++r) acc[r][0] = acc[r][1] = V::zero();
    const std::size_t full = in_features / N * N;
    std::size_t c0 = 0;
    for (; c0 + 2 * N <= full; c0 += 2 * N) {
      const F x0 = V::load(x + c0), x1 = V::load(x + c0 + N);
      for (std::size_t r = 0; r < R; ++r) {
        acc[r][0] = V::fmadd(weight(r, c0, V::all(), false), x0, acc[r][0]);
        acc[r][1] = V::fmadd(weight(r, c0 + N, V::all(), false), x1, acc[r][1]);
      }
    }
    for (; c0 < full; c0 += N) {
      const F x0 = V::load(x + c0);
      for (std::size_t r = 0; r < R; ++r) {
        acc[r][0] = V::fmadd(weight(r, c0, V::all(), false), x0, acc[r][0]);
      }
    }
    if (c0 < in_features) {
      const M m = V::mask(in_features - c0);
      const F x0 = V::load(x + c0, m);  // masked-off lanes 0: their (finite) weights add 0
      for (std::size_t r = 0; r < R; ++r)
        acc[r][1] = V::fmadd(weight(r, c0, m, true), x0, acc[r][1]);
    }
    for (std::size_t r = 0; r < R; ++r) sums[r] = V::hsum(V::add(acc[r][0], acc[r][1]));
  }

  template <class W, class Finish>
  static void all_rows(std::size_t in_features, std::size_t out_features, const float* x,
                       W weight_of_row, Finish finish) {
    assert(in_features > 0);
    float sums[kRows];
    std::size_t o = 0;
    for (; o + kRows <= out_features; o += kRows) {
      dot_rows<kRows>(
          in_features, x,
          [&](std::size_t r, std::size_t c0, M m, bool tail) {
            return weight_of_row(o + r, c0, m, tail);
          },
          sums);
      for (std::size_t r = 0; r < kRows; ++r) finish(o + r, sums[r]);
    }
    for (; o < out_features; ++o) {
      dot_rows<1>(
          in_features, x,
          [&](std::size_t, std::size_t c0, M m, bool tail) {
            return weight_of_row(o, c0, m, tail);
          },
          sums);
      finish(o, sums[0]);
    }
  }

  static void f32(std::size_t in_features, std::size_t out_features, const float* x,
                  const float* weight, const float* bias, float* out) {
    all_rows(
        in_features, out_features, x,
        [&](std::size_t o, std::size_t c0, M m, bool tail) {
          const float* w = weight + o * in_features + c0;
          return tail ? V::load(w, m) : V::load(w);
        },
        [&](std::size_t o, float sum) { out[o] = sum + bias[o]; });
  }

  static void qs8(std::size_t in_features, std::size_t out_features, const float* x,
                  const std::int8_t* weight, const float* weight_scale, const float* bias,
                  float* out) {
    all_rows(
        in_features, out_features, x,
        [&](std::size_t o, std::size_t c0, M, bool tail) {
          const std::int8_t* w = weight + o * in_features + c0;
          return V::to_float(tail ? V::load_i8(w, in_features - c0) : V::load_i8(w));
        },
        [&](std::size_t o, float sum) {
          const float scaled = weight_scale[o] * sum;
          out[o] = scaled + bias[o];
        });
  }

  // One output at a time: per 64-channel word, D::decode rebuilds the 64 integer weights
  // 2B - 255 from the 8 plane words (exact in float) into 64 / kLanes vectors, each then one FMA
  // with x. Tail channels have stored bits 0 (w = 255) and meet masked x = 0.
  static void bitplane8(std::size_t in_features, std::size_t out_features, const float* x,
                        const BitWord* planes, const float* weight_scale, const float* bias,
                        float* out) {
    assert(in_features > 0);
    constexpr std::size_t kVecs = kBitsPerWord / N;
    const std::size_t words = words_for_channels(in_features);
    const std::size_t plane_stride = out_features * words;
    for (std::size_t o = 0; o < out_features; ++o) {
      F acc[2] = {V::zero(), V::zero()};
      for (std::size_t wi = 0; wi < words; ++wi) {
        F w[kVecs];
        D::decode(planes + o * words + wi, plane_stride, w);
        for (std::size_t v = 0; v < kVecs; ++v) {
          const std::size_t c0 = wi * kBitsPerWord + v * N;
          if (c0 >= in_features) break;
          const F xv =
              c0 + N <= in_features ? V::load(x + c0) : V::load(x + c0, V::mask(in_features - c0));
          acc[v & 1] = V::fmadd(w[v], xv, acc[v & 1]);
        }
      }
      const float sum = V::hsum(V::add(acc[0], acc[1]));
      const float scaled = weight_scale[o] * sum;
      out[o] = scaled + bias[o];
    }
  }
};

}  // namespace
}  // namespace qbinfer
