// The element-wise kernels written once over a vector-traits type V (kernels/simd/vec_*.h),
// instantiated by elementwise_avx2.cc and elementwise_avx512.cc (internal linkage throughout).
//
// Each output lane is the reference's single rounded operation (affine: a multiply, then an
// add), so results are bit-identical; masked tails; out == in is safe (each vector is read
// before it is written). sigmoid stays the reference (it calls the C library's exp).
#pragma once

#include <cassert>
#include <cstddef>

#include "kernels/elementwise/elementwise.h"

namespace qbinfer {
namespace {

template <class V>
struct ElementwiseSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  // op(x, c0, m) over `pixels` rows of `channels` floats, per-channel operands at c0.
  template <class Op>
  static void per_channel(const float* in, std::size_t pixels, std::size_t channels, float* out,
                          Op op) {
    assert(channels > 0);
    const std::size_t full = channels / N * N;
    const M tail_m = V::mask(channels - full);
    for (std::size_t p = 0; p < pixels; ++p) {
      const float* x = in + p * channels;
      float* y = out + p * channels;
      std::size_t c0 = 0;
      for (; c0 < full; c0 += N) V::store(y + c0, op(V::load(x + c0), c0, V::all(), false));
      if (c0 < channels) {
        V::store(y + c0, op(V::load(x + c0, tail_m), c0, tail_m, true), tail_m);
      }
    }
  }

  static F ld(const float* p, M m, bool tail) { return tail ? V::load(p, m) : V::load(p); }

  static void affine(const float* in, std::size_t pixels, std::size_t channels, const float* scale,
                     const float* bias, float* out) {
    per_channel(in, pixels, channels, out, [&](F x, std::size_t c0, M m, bool tail) {
      return V::add(V::mul(x, ld(scale + c0, m, tail)), ld(bias + c0, m, tail));
    });
  }
  static void prelu(const float* in, std::size_t pixels, std::size_t channels, const float* slope,
                    float* out) {
    per_channel(in, pixels, channels, out, [&](F x, std::size_t c0, M m, bool tail) {
      return V::prelu(x, ld(slope + c0, m, tail));
    });
  }
  static void mul_channel(const float* in, std::size_t pixels, std::size_t channels, const float* s,
                          float* out) {
    per_channel(in, pixels, channels, out, [&](F x, std::size_t c0, M m, bool tail) {
      return V::mul(x, ld(s + c0, m, tail));
    });
  }
  static void relu(const float* in, std::size_t n, float* out) {
    std::size_t i = 0;
    for (; i + N <= n; i += N) V::store(out + i, V::relu(V::load(in + i)));
    if (i < n) {
      const M m = V::mask(n - i);
      V::store(out + i, V::relu(V::load(in + i, m)), m);
    }
  }
  // out[i] = fn(in[i]) over n floats, a vector at a time, masked tail (the ISA file supplies
  // fn where it needs a compare-and-select the traits do not have, e.g. clip).
  template <class Fn>
  static void map(const float* in, std::size_t n, float* out, Fn fn) {
    std::size_t i = 0;
    for (; i + N <= n; i += N) V::store(out + i, fn(V::load(in + i)));
    if (i < n) {
      const M m = V::mask(n - i);
      V::store(out + i, fn(V::load(in + i, m)), m);
    }
  }
  static void add(const float* a, const float* b, std::size_t n, float* out) {
    std::size_t i = 0;
    for (; i + N <= n; i += N) V::store(out + i, V::add(V::load(a + i), V::load(b + i)));
    if (i < n) {
      const M m = V::mask(n - i);
      V::store(out + i, V::add(V::load(a + i, m), V::load(b + i, m)), m);
    }
  }
};

}  // namespace
}  // namespace qbinfer
