// The fused epilogue written once over a vector-traits type V (kernels/simd/vec_*.h),
// instantiated by epilogue_avx2.cc and epilogue_avx512.cc (internal linkage throughout).
//
// Tile: one pixel row, V::kLanes channels at a time, one instantiation per set of steps (no
// step tests in the loop); every step of epilogue.h is one vector operation per lane in the
// reference's order (prelu as compare + blend, bits as a compare
// mask), so the results are bit-identical. Bits: a compare gives one bit per lane (kmask on
// AVX-512, movemask on AVX2); kLanes divides 64, so a vector's bits never straddle a word, and
// each word is written once, whole (tail lanes masked to 0). The residual's channel index
// c % residual_channels runs as a counter; a vector crossing a repeat boundary (only when
// residual_channels is not a multiple of kLanes) is gathered through a small buffer.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/epilogue/epilogue.h"

namespace qbinfer {
namespace {

template <class V>
struct EpilogueSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  // Which steps run: one instantiation per combination, so the inner loop has no step tests.
  enum : unsigned {
    kScale = 1,
    kResidual = 2,
    kPrelu = 4,
    kPost = 8,
    kWrite = 16,
    kBits = 32,
    kMid = 64,
    kAllSteps = 128,
  };

  // The epilogue's pointers as locals: stores through float* / BitWord* could otherwise alias
  // the struct's fields and force reloads every vector.
  struct Args {
    const float* channel_scale;
    const float* residual;
    std::size_t rc;
    const float* mid_scale;
    const float* mid_bias;
    const float* slope;
    const float* post_scale;
    const float* post_bias;
    const float* threshold;
    BitWord* bits;
  };

  // Residual lanes c0 .. c0 + n - 1 of a pixel row `res` of rc channels; r = c0 % rc.
  static F residual(const float* res, std::size_t rc, std::size_t r, std::size_t n, M m) {
    if (r + n <= rc) return n == N ? V::load(res + r) : V::load(res + r, m);
    alignas(64) float buf[N] = {};
    for (std::size_t i = 0; i < n; ++i) {
      buf[i] = res[r];
      if (++r == rc) r = 0;
    }
    return V::load(buf);
  }

  // One vector of channels [c0, c0 + n) of pixel p; n < N only for the tail.
  template <unsigned kSteps, bool Tail>
  static void vec(const Args& a, float* row, const float* res, std::size_t r, std::size_t c0,
                  std::size_t n, M m, BitWord* word) {
    auto ld = [&](const float* q) { return Tail ? V::load(q + c0, m) : V::load(q + c0); };
    F v = ld(row);
    if constexpr ((kSteps & kScale) != 0) v = V::mul(v, ld(a.channel_scale));
    if constexpr ((kSteps & kResidual) != 0) v = V::add(v, residual(res, a.rc, r, n, m));
    if constexpr ((kSteps & kMid) != 0) v = V::add(V::mul(v, ld(a.mid_scale)), ld(a.mid_bias));
    if constexpr ((kSteps & kPrelu) != 0) v = V::prelu(v, ld(a.slope));
    if constexpr ((kSteps & kPost) != 0) v = V::add(V::mul(v, ld(a.post_scale)), ld(a.post_bias));
    if constexpr ((kSteps & kWrite) != 0) {
      if constexpr (Tail) {
        V::store(row + c0, v, m);
      } else {
        V::store(row + c0, v);
      }
    }
    if constexpr ((kSteps & kBits) != 0) {
      std::uint32_t b = V::not_ge_bits(v, ld(a.threshold));
      if constexpr (Tail) b &= (std::uint32_t{1} << n) - 1;  // tail bits 0 (n < N <= 16)
      *word |= static_cast<BitWord>(b) << (c0 % kBitsPerWord);
    }
  }

  template <unsigned kSteps>
  static void rows_with(const Args& args, std::size_t channels, std::size_t pixel_begin,
                        std::size_t pixel_end, float* out) {
    const Args a = args;  // a local copy: nothing the loop stores can alias it
    const std::size_t words = words_for_channels(channels);
    const std::size_t full = channels / N * N;
    const std::size_t tail_n = channels - full;
    const M tail_m = V::mask(tail_n);
    const std::size_t rc = a.rc;
    for (std::size_t p = pixel_begin; p < pixel_end; ++p) {
      float* row = out + p * channels;
      const float* res = (kSteps & kResidual) != 0 ? a.residual + p * rc : nullptr;
      BitWord* bits = (kSteps & kBits) != 0 ? a.bits + p * words : nullptr;
      BitWord word = 0;
      std::size_t r = 0;  // c0 % rc
      for (std::size_t c0 = 0; c0 < full; c0 += N) {
        vec<kSteps, false>(a, row, res, r, c0, N, tail_m, &word);
        if constexpr ((kSteps & kBits) != 0) {
          // kLanes divides 64: a word is complete after its last vector.
          if ((c0 + N) % kBitsPerWord == 0) {
            bits[c0 / kBitsPerWord] = word;
            word = 0;
          }
        }
        if constexpr ((kSteps & kResidual) != 0) {
          r += N;
          if (r >= rc) r = rc >= N ? r - rc : r % rc;
        }
      }
      if (tail_n != 0) vec<kSteps, true>(a, row, res, r, full, tail_n, tail_m, &word);
      if constexpr ((kSteps & kBits) != 0) {
        if (channels % kBitsPerWord != 0) bits[words - 1] = word;
      }
    }
  }

  template <unsigned... kAll>
  static constexpr auto table(std::integer_sequence<unsigned, kAll...>) {
    using Fn = void (*)(const Args&, std::size_t, std::size_t, std::size_t, float*);
    return std::array<Fn, sizeof...(kAll)>{&rows_with<kAll>...};
  }

  static void rows(const Epilogue& ep, std::size_t channels, std::size_t pixel_begin,
                   std::size_t pixel_end, float* out) {
    assert(channels > 0 && pixel_begin <= pixel_end);
    assert(ep.residual == nullptr ||
           (ep.residual_channels > 0 && channels % ep.residual_channels == 0));
    assert((ep.mid_scale == nullptr) == (ep.mid_bias == nullptr));
    assert((ep.post_scale == nullptr) == (ep.post_bias == nullptr));
    assert((ep.threshold == nullptr) == (ep.bits == nullptr));
    static constexpr auto kTable = table(std::make_integer_sequence<unsigned, kAllSteps>{});
    const unsigned steps =
        (ep.channel_scale != nullptr ? kScale : 0u) | (ep.residual != nullptr ? kResidual : 0u) |
        (ep.prelu_slope != nullptr ? kPrelu : 0u) | (ep.post_scale != nullptr ? kPost : 0u) |
        (ep.write_float ? kWrite : 0u) | (ep.threshold != nullptr ? kBits : 0u) |
        (ep.mid_scale != nullptr ? kMid : 0u);
    const Args a{ep.channel_scale, ep.residual,   ep.residual_channels, ep.mid_scale, ep.mid_bias,
                 ep.prelu_slope,   ep.post_scale, ep.post_bias,         ep.threshold, ep.bits};
    kTable[steps](a, channels, pixel_begin, pixel_end, out);
  }
};

}  // namespace
}  // namespace qbinfer
