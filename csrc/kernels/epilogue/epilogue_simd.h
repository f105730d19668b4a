// The fused epilogue written once over a vector-traits type V (kernels/simd/vec_*.h),
// instantiated by epilogue_avx2.cc and epilogue_avx512.cc (internal linkage throughout).
//
// Tile: one pixel row, V::kLanes channels at a time, one instantiation per set of steps (no
// step tests in the loop); every step of epilogue.h is one vector operation per lane in the
// reference's order (relu and prelu as compare + blend, bits as a compare
// mask), so the results are bit-identical. Bits: a compare gives one bit per lane (kmask on
// AVX-512, movemask on AVX2); kLanes divides 64, so a vector's bits never straddle a word, and
// each word is written once, whole (tail lanes masked to 0). The residual's channel index
// c % residual_channels runs as a counter; a vector crossing a repeat boundary (only when
// residual_channels is not a multiple of kLanes) is gathered through a small buffer.
// Fast path (channels and residual_channels multiples of kLanes, every ReActNet / QB-Net
// chain): words_for_channels(channels) words per pixel, each assembled from its vectors in a
// register and stored once, the residual a plain load, no tail. Unit scales: when every
// mid_scale and post_scale is exactly 1.0f (ReActNet's learnable biases, x + b), the multiply is
// skipped; v * 1.0f is v exactly in IEEE arithmetic (a NaN stays NaN), so the results are the
// same bits. Clip (step 5b) through the traits' max_keep_acc alone, see clip().
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/epilogue/epilogue.h"

// The per-vector helpers must melt into the unrolled word loops.
#if defined(_MSC_VER) && !defined(__clang__)
#define QBINFER_EPILOGUE_INLINE __forceinline
#define QBINFER_EPILOGUE_LAMBDA_INLINE
#else
#define QBINFER_EPILOGUE_INLINE inline __attribute__((always_inline))
#define QBINFER_EPILOGUE_LAMBDA_INLINE __attribute__((always_inline))
#endif

namespace qbinfer {
namespace {

// Whether V packs whole words of compare bits itself (V::kPacksWords, V::ge_mask,
// V::not_ge_word: VecNeonWordPack in neon_pack.h, where a per-vector ADDV + move + shift is the
// epilogue's largest cost); the x86 traits have none and keep the per-vector movemask below.
template <class V, class = void>
struct PacksWords {
  static constexpr bool value = false;
};
template <class V>
struct PacksWords<V, std::void_t<decltype(V::kPacksWords)>> {
  static constexpr bool value = V::kPacksWords;
};

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
    kPre = 128,         // steps 0a / 0b / 5b (ReLU, pre affine, clip): tested per call inside,
                        // see pre() and clip()
    kUnitScales = 256,  // with kMid / kPost: their scales are all 1.0f (no multiply)
  };

  // The epilogue's pointers as locals: stores through float* / BitWord* could otherwise alias
  // the struct's fields and force reloads every vector.
  struct Args {
    bool relu;
    const float* pre_scale;
    const float* pre_bias;
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
    bool clip;
    float clip_lo;
    float clip_hi;
  };

  // Steps 0a and 0b. One instantiation (kPre) covers both and tests which run: a loop-invariant
  // branch the compiler hoists, where a flag each would double the instantiations again.
  template <class Load>
  static QBINFER_EPILOGUE_INLINE F pre(const Args& a, F v, Load&& ld) {
    if (a.relu) v = V::relu(v);
    if (a.pre_scale != nullptr) v = V::add(V::mul(v, ld(a.pre_scale)), ld(a.pre_bias));
    return v;
  }

  // Step 5b, under kPre as 0a / 0b (one loop-invariant test). The CLIP op's selects,
  // v < lo ? lo : (v > hi ? hi : v), from max_keep_acc(x, acc) = x > acc ? x : acc alone:
  // v > hi ? hi : v is -max_keep_acc(-hi, -v) (a product with -1.0f is an exact negation, and a
  // NaN v is the NaN acc), and with lo <= hi the lower select may test that result instead of
  // v (it is v, or hi when v > hi >= lo, where neither form takes lo), which is
  // max_keep_acc(lo, upper). Same compares as the reference: bit-identical, -0.0f included.
  static QBINFER_EPILOGUE_INLINE F clip(const Args& a, F v) {
    if (!a.clip) return v;
    const F minus_one = V::set1(-1.0f);
    const F upper = V::mul(V::max_keep_acc(V::set1(-a.clip_hi), V::mul(v, minus_one)), minus_one);
    return V::max_keep_acc(V::set1(a.clip_lo), upper);
  }

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
    if constexpr ((kSteps & kPre) != 0) v = pre(a, v, ld);
    if constexpr ((kSteps & kScale) != 0) v = V::mul(v, ld(a.channel_scale));
    if constexpr ((kSteps & kResidual) != 0) v = V::add(v, residual(res, a.rc, r, n, m));
    constexpr bool unit = (kSteps & kUnitScales) != 0;
    if constexpr ((kSteps & kMid) != 0) {
      v = V::add(unit ? v : V::mul(v, ld(a.mid_scale)), ld(a.mid_bias));
    }
    if constexpr ((kSteps & kPrelu) != 0) v = V::prelu(v, ld(a.slope));
    if constexpr ((kSteps & kPost) != 0) {
      v = V::add(unit ? v : V::mul(v, ld(a.post_scale)), ld(a.post_bias));
    }
    if constexpr ((kSteps & kPre) != 0) v = clip(a, v);
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

  // One whole vector at channel c0 whose residual lanes start at res_c0 (a plain load): steps
  // 0a-6 of epilogue.h, returns v for the bits.
  template <unsigned kSteps>
  static QBINFER_EPILOGUE_INLINE F whole(const Args& a, float* row, const float* res_c0,
                                         std::size_t c0) {
    F v = V::load(row + c0);
    if constexpr ((kSteps & kPre) != 0) {
      v = pre(a, v, [c0](const float* q) { return V::load(q + c0); });
    }
    if constexpr ((kSteps & kScale) != 0) v = V::mul(v, V::load(a.channel_scale + c0));
    if constexpr ((kSteps & kResidual) != 0) v = V::add(v, V::load(res_c0));
    constexpr bool unit = (kSteps & kUnitScales) != 0;
    if constexpr ((kSteps & kMid) != 0) {
      v = V::add(unit ? v : V::mul(v, V::load(a.mid_scale + c0)), V::load(a.mid_bias + c0));
    }
    if constexpr ((kSteps & kPrelu) != 0) v = V::prelu(v, V::load(a.slope + c0));
    if constexpr ((kSteps & kPost) != 0) {
      v = V::add(unit ? v : V::mul(v, V::load(a.post_scale + c0)), V::load(a.post_bias + c0));
    }
    if constexpr ((kSteps & kPre) != 0) v = clip(a, v);
    if constexpr ((kSteps & kWrite) != 0) V::store(row + c0, v);
    return v;
  }

  // kVecs vectors from channel c0 (a word's, c0 % 64 == 0), unrolled; res_off[k]: the residual
  // offset of vector k from res_base. Returns the word of their bits.
  // kContiguousResidual: res_off[k] is k * N (rc a multiple of 64), a constant offset.
  template <unsigned kSteps, std::size_t kVecs, bool kContiguousResidual = false>
  static QBINFER_EPILOGUE_INLINE BitWord word_of(const Args& a, float* row, const float* res_base,
                                                 const std::size_t* res_off, std::size_t c0) {
    if constexpr ((kSteps & kBits) != 0 && PacksWords<V>::value) {
      return V::template not_ge_word<kVecs>([&](std::size_t k) QBINFER_EPILOGUE_LAMBDA_INLINE {
        const std::size_t c = c0 + k * N;
        const float* res = nullptr;
        if constexpr ((kSteps & kResidual) != 0) {
          res = res_base + (kContiguousResidual ? k * N : res_off[k]);
        }
        return V::ge_mask(whole<kSteps>(a, row, res, c), V::load(a.threshold + c));
      });
    }
    BitWord word = 0;
    for (std::size_t k = 0; k < kVecs; ++k) {
      const std::size_t c = c0 + k * N;
      const F v =
          whole<kSteps>(a, row, (kSteps & kResidual) != 0 ? res_base + res_off[k] : nullptr, c);
      if constexpr ((kSteps & kBits) != 0) {
        word |= static_cast<BitWord>(V::not_ge_bits(v, V::load(a.threshold + c))) << (k * N);
      }
    }
    return word;
  }

  // The fast path: channels % N == 0 and, with a residual, rc % N == 0. With bits, a word's
  // vectors run unrolled when the residual offsets repeat per word (rc a multiple of 64, or a
  // divisor of 64), each word assembled in a register and stored once.
  template <unsigned kSteps>
  static void rows_whole(const Args& a, std::size_t channels, std::size_t pixel_begin,
                         std::size_t pixel_end, float* out) {
    constexpr std::size_t kPerWord = kBitsPerWord / N;
    const std::size_t words = words_for_channels(channels);
    const std::size_t rc = (kSteps & kResidual) != 0 ? a.rc : kBitsPerWord;
    const bool rc_whole_words = rc % kBitsPerWord == 0;
    const bool rc_in_word = kBitsPerWord % rc == 0;
    const std::size_t full_words = channels / kBitsPerWord;
    const std::size_t rest = (channels % kBitsPerWord) / N;  // vectors of the last, partial word
    if ((kSteps & kBits) != 0 && (rc_whole_words || rc_in_word) &&
        (rest == 0 || rest == kPerWord / 2)) {
      std::size_t res_off[kPerWord];
      for (std::size_t k = 0; k < kPerWord; ++k) res_off[k] = rc_in_word ? k * N % rc : k * N;
      for (std::size_t p = pixel_begin; p < pixel_end; ++p) {
        float* row = out + p * channels;
        const float* res = (kSteps & kResidual) != 0 ? a.residual + p * a.rc : nullptr;
        BitWord* bits = a.bits + p * words;
        std::size_t r = 0;  // (64 * wd) % rc
        for (std::size_t wd = 0; wd < full_words; ++wd) {
          if constexpr (PacksWords<V>::value) {
            // The residual offsets as constants (no per-vector load of res_off[k]).
            if (rc_whole_words) {
              bits[wd] =
                  word_of<kSteps, kPerWord, true>(a, row, res + r, res_off, wd * kBitsPerWord);
              r += kBitsPerWord;
              if (r == rc) r = 0;
              continue;
            }
          }
          bits[wd] = word_of<kSteps, kPerWord>(a, row, res + r, res_off, wd * kBitsPerWord);
          if (rc_whole_words) {
            r += kBitsPerWord;
            if (r == rc) r = 0;
          }
        }
        if constexpr (kPerWord >= 2) {
          if (rest != 0) {
            bits[full_words] =
                word_of<kSteps, kPerWord / 2>(a, row, res + r, res_off, full_words * kBitsPerWord);
          }
        }
      }
      return;
    }
    const M no_mask = V::mask(N);
    for (std::size_t p = pixel_begin; p < pixel_end; ++p) {
      float* row = out + p * channels;
      const float* res = (kSteps & kResidual) != 0 ? a.residual + p * rc : nullptr;
      std::size_t r = 0;  // c0 % rc
      if constexpr ((kSteps & kBits) != 0) {
        BitWord* bits = a.bits + p * words;
        for (std::size_t wd = 0; wd < words; ++wd) {
          const std::size_t c_begin = wd * kBitsPerWord;
          const std::size_t c_end = std::min(channels, c_begin + kBitsPerWord);
          BitWord word = 0;
          for (std::size_t c0 = c_begin; c0 < c_end; c0 += N) {
            vec<kSteps, false>(a, row, res, r, c0, N, no_mask, &word);
            if constexpr ((kSteps & kResidual) != 0) {
              r += N;
              if (r == rc) r = 0;
            }
          }
          bits[wd] = word;
        }
      } else {
        for (std::size_t c0 = 0; c0 < channels; c0 += N) {
          whole<kSteps>(a, row, (kSteps & kResidual) != 0 ? res + r : nullptr, c0);
          if constexpr ((kSteps & kResidual) != 0) {
            r += N;
            if (r == rc) r = 0;
          }
        }
      }
    }
  }

  template <unsigned kSteps>
  static void rows_with(const Args& args, std::size_t channels, std::size_t pixel_begin,
                        std::size_t pixel_end, float* out) {
    const Args a = args;  // a local copy: nothing the loop stores can alias it
    if (channels % N == 0 && ((kSteps & kResidual) == 0 || a.rc % N == 0)) {
      rows_whole<kSteps>(a, channels, pixel_begin, pixel_end, out);
      return;
    }
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
  template <unsigned... kAll>
  static constexpr auto pre_table(std::integer_sequence<unsigned, kAll...>) {
    using Fn = void (*)(const Args&, std::size_t, std::size_t, std::size_t, float*);
    return std::array<Fn, sizeof...(kAll)>{&rows_with<kAll | kPre>...};
  }
  template <unsigned... kAll>
  static constexpr auto unit_table(std::integer_sequence<unsigned, kAll...>) {
    using Fn = void (*)(const Args&, std::size_t, std::size_t, std::size_t, float*);
    return std::array<Fn, sizeof...(kAll)>{&rows_with<kAll | kUnitScales>...};
  }

  // Whether every scale is exactly 1.0f (bit pattern 0x3f800000): a branch-free OR over the bit
  // patterns, which compilers vectorize.
  static bool all_ones(const float* scale, std::size_t n) {
    if (scale == nullptr) return true;
    std::uint32_t diff = 0;
    for (std::size_t c = 0; c < n; ++c) {
      std::uint32_t b;
      std::memcpy(&b, scale + c, sizeof(b));
      diff |= b ^ 0x3f800000u;
    }
    return diff == 0;
  }

  static void rows(const Epilogue& ep, std::size_t channels, std::size_t pixel_begin,
                   std::size_t pixel_end, float* out) {
    assert(channels > 0 && pixel_begin <= pixel_end);
    assert(ep.residual == nullptr ||
           (ep.residual_channels > 0 && channels % ep.residual_channels == 0));
    assert((ep.pre_scale == nullptr) == (ep.pre_bias == nullptr));
    assert((ep.mid_scale == nullptr) == (ep.mid_bias == nullptr));
    assert((ep.post_scale == nullptr) == (ep.post_bias == nullptr));
    assert((ep.threshold == nullptr) == (ep.bits == nullptr));
    assert(!ep.clip || ep.clip_lo <= ep.clip_hi);
    static constexpr auto kTable = table(std::make_integer_sequence<unsigned, kAllSteps>{});
    static constexpr auto kUnitTable =
        unit_table(std::make_integer_sequence<unsigned, kAllSteps>{});
    static constexpr auto kPreTable = pre_table(std::make_integer_sequence<unsigned, kAllSteps>{});
    const unsigned steps =
        (ep.channel_scale != nullptr ? kScale : 0u) | (ep.residual != nullptr ? kResidual : 0u) |
        (ep.prelu_slope != nullptr ? kPrelu : 0u) | (ep.post_scale != nullptr ? kPost : 0u) |
        (ep.write_float ? kWrite : 0u) | (ep.threshold != nullptr ? kBits : 0u) |
        (ep.mid_scale != nullptr ? kMid : 0u);
    const Args a{ep.relu,          ep.pre_scale, ep.pre_bias,
                 ep.channel_scale, ep.residual,  ep.residual_channels,
                 ep.mid_scale,     ep.mid_bias,  ep.prelu_slope,
                 ep.post_scale,    ep.post_bias, ep.threshold,
                 ep.bits,          ep.clip,      ep.clip_lo,
                 ep.clip_hi};
    // Checked per call (O(channels), against a call's pixels * channels values): the epilogue
    // keeps no state, and the engine's blocks are thousands of values.
    const bool unit = (steps & (kMid | kPost)) != 0 && all_ones(ep.mid_scale, channels) &&
                      all_ones(ep.post_scale, channels);
    if (ep.relu || ep.pre_scale != nullptr || ep.clip) {
      // No unit-scale variant with the tested steps (v * 1.0f is v: the plain one is as exact).
      kPreTable[steps](a, channels, pixel_begin, pixel_end, out);
      return;
    }
    (unit ? kUnitTable : kTable)[steps](a, channels, pixel_begin, pixel_end, out);
  }
};

}  // namespace
}  // namespace qbinfer
