// The pooling kernels written once over a vector-traits type V (kernels/simd/vec_*.h),
// instantiated by pool_avx2.cc, pool_avx512.cc and pool_neon.cc (internal linkage throughout).
// The max pool takes its per-ISA compare-and-select step from the ISA file (only the AVX2 and
// NEON files instantiate it; the AVX-512 table points at the AVX2 max pool).
//
// Vectorized over channels, V::kLanes at a time, masked tails. Each lane sums exactly the
// reference's terms in the reference's order (window rows, then columns, from 0.0f; the global
// pool over pixels in order) and divides once, so results are bit-identical. The global pool
// accumulates in `out` itself (pixel-major, so the input streams once), then divides.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "kernels/pool/pool.h"

namespace qbinfer {
namespace {

// Whether V's division is slow enough to be worth avoiding (V::kSlowDivide: pool_neon.cc, where
// FDIV takes ~30 cycles on a Cortex-A72 and ARMv7 divides lane by lane on VFP). With it, a
// window whose divisor is a power of two 2^k is multiplied by 2^-k instead: sum / 2^k and
// sum * 2^-k are the same real number, each rounded once to nearest, so the bits are the same
// (subnormal results, infinities and NaNs included). The QB/QSB-Nets' shortcut pools (kernel =
// stride = 2 or (2, 1) / (1, 2), ceil mode) only have windows of 4, 2 or 1 pixels. Other
// divisors still divide; the x86 traits keep dividing throughout.
template <class V, class = void>
struct DividesSlowly {
  static constexpr bool value = false;
};
template <class V>
struct DividesSlowly<V, std::void_t<decltype(V::kSlowDivide)>> {
  static constexpr bool value = V::kSlowDivide;
};

// n a power of two: 1.0f / n is then exact (2^-63 at the least, a normal float).
inline bool exact_reciprocal(std::size_t n) { return n != 0 && (n & (n - 1)) == 0; }

template <class V>
struct PoolSimd {
  using F = typename V::F;
  using M = typename V::M;
  static constexpr std::size_t N = V::kLanes;

  // sum / divisor, or (kByReciprocal) sum * scale with scale = 1 / divisor exactly.
  template <bool kByReciprocal>
  static F average(F sum, F divisor_or_scale) {
    return kByReciprocal ? V::mul(sum, divisor_or_scale) : V::div(sum, divisor_or_scale);
  }

  template <bool Tail, bool kByReciprocal = false>
  static void window(const AvgPoolShape& s, const float* in, std::size_t y0, std::size_t y1,
                     std::size_t x0, std::size_t x1, F count, std::size_t c0, M m, float* out) {
    F sum = V::zero();
    for (std::size_t y = y0; y < y1; ++y) {
      for (std::size_t x = x0; x < x1; ++x) {
        const float* p = in + (y * s.in_width + x) * s.channels + c0;
        sum = V::add(sum, Tail ? V::load(p, m) : V::load(p));
      }
    }
    const F avg = average<kByReciprocal>(sum, count);
    if constexpr (Tail) {
      V::store(out + c0, avg, m);
    } else {
      V::store(out + c0, avg);
    }
  }

  static void avgpool_rows(const AvgPoolShape& s, const float* in, std::size_t y_begin,
                           std::size_t y_end, float* out) {
    assert(s.channels > 0 && y_begin <= y_end && y_end <= s.out_height);
    const std::size_t full = s.channels / N * N;
    const M tail_m = V::mask(s.channels - full);
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const std::size_t y0 = oy * s.stride_h;
      const std::size_t y1 = std::min(y0 + s.kernel_h, s.in_height);
      for (std::size_t ox = 0; ox < s.out_width; ++ox) {
        const std::size_t x0 = ox * s.stride_w;
        const std::size_t x1 = std::min(x0 + s.kernel_w, s.in_width);
        const std::size_t pixels = (y1 - y0) * (x1 - x0);
        float* out_px = out + (oy * s.out_width + ox) * s.channels;
        if constexpr (DividesSlowly<V>::value) {
          if (exact_reciprocal(pixels)) {
            const F scale = V::set1(1.0f / static_cast<float>(pixels));
            std::size_t c0 = 0;
            for (; c0 < full; c0 += N) {
              window<false, true>(s, in, y0, y1, x0, x1, scale, c0, tail_m, out_px);
            }
            if (c0 < s.channels) {
              window<true, true>(s, in, y0, y1, x0, x1, scale, c0, tail_m, out_px);
            }
            continue;
          }
        }
        const F count = V::set1(static_cast<float>(pixels));
        std::size_t c0 = 0;
        for (; c0 < full; c0 += N) {
          window<false>(s, in, y0, y1, x0, x1, count, c0, tail_m, out_px);
        }
        if (c0 < s.channels) window<true>(s, in, y0, y1, x0, x1, count, c0, tail_m, out_px);
      }
    }
  }

  // Max pool: `step(acc, v)` is the ISA's "v replaces acc when greater, or NaN over a non-NaN"
  // (pool.h, "Max pool numerics"); windows are scanned in the reference's order, lanes are
  // channels. Masked tail loads read 0 in unused lanes, which are never stored.
  template <bool Tail, class Step>
  static void max_window(const MaxPoolShape& s, const float* in, const PoolSpan& rows,
                         const PoolSpan& cols, std::size_t c0, M m, float* out, Step step) {
    F acc = V::set1(-std::numeric_limits<float>::infinity());
    for (std::size_t y = rows.begin; y < rows.end; ++y) {
      for (std::size_t x = cols.begin; x < cols.end; ++x) {
        const float* p = in + (y * s.in_width + x) * s.channels + c0;
        acc = step(acc, Tail ? V::load(p, m) : V::load(p));
      }
    }
    if constexpr (Tail) {
      V::store(out + c0, acc, m);
    } else {
      V::store(out + c0, acc);
    }
  }

  template <class Step>
  static void maxpool_rows(const MaxPoolShape& s, const float* in, std::size_t y_begin,
                           std::size_t y_end, float* out, Step step) {
    assert(s.channels > 0 && y_begin <= y_end && y_end <= s.out_height);
    const std::size_t full = s.channels / N * N;
    const M tail_m = V::mask(s.channels - full);
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const PoolSpan rows = pool_window(oy, s.in_height, s.pad_top, s.kernel_h, s.stride_h);
      for (std::size_t ox = 0; ox < s.out_width; ++ox) {
        const PoolSpan cols = pool_window(ox, s.in_width, s.pad_left, s.kernel_w, s.stride_w);
        float* out_px = out + (oy * s.out_width + ox) * s.channels;
        std::size_t c0 = 0;
        for (; c0 < full; c0 += N) {
          max_window<false>(s, in, rows, cols, c0, tail_m, out_px, step);
        }
        if (c0 < s.channels) max_window<true>(s, in, rows, cols, c0, tail_m, out_px, step);
      }
    }
  }

  // AVGPOOL2D: the window's input rows and columns and its divisor come from avgpool2d_span
  // (pool.h), as in the reference; each lane sums the covered pixels in the reference's order
  // and divides once. Only the AVX2 and NEON files take these (the AVX-512 table reuses AVX2).
  template <bool Tail, bool kByReciprocal = false>
  static void window2d(const AvgPool2DShape& s, const float* in, const PoolSpan& rows,
                       const PoolSpan& cols, F divisor, std::size_t c0, M m, float* out) {
    F sum = V::zero();
    for (std::size_t y = rows.begin; y < rows.end; ++y) {
      for (std::size_t x = cols.begin; x < cols.end; ++x) {
        const float* p = in + (y * s.in_width + x) * s.channels + c0;
        sum = V::add(sum, Tail ? V::load(p, m) : V::load(p));
      }
    }
    const F avg = average<kByReciprocal>(sum, divisor);
    if constexpr (Tail) {
      V::store(out + c0, avg, m);
    } else {
      V::store(out + c0, avg);
    }
  }

  static void avgpool2d_rows(const AvgPool2DShape& s, const float* in, std::size_t y_begin,
                             std::size_t y_end, float* out) {
    assert(s.channels > 0 && y_begin <= y_end && y_end <= s.out_height);
    const std::size_t full = s.channels / N * N;
    const M tail_m = V::mask(s.channels - full);
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const PoolSpan rows = avgpool2d_span(oy, s.in_height, s.pad_top, s.pad_bottom, s.kernel_h,
                                           s.stride_h, s.count_include_pad);
      for (std::size_t ox = 0; ox < s.out_width; ++ox) {
        const PoolSpan cols = avgpool2d_span(ox, s.in_width, s.pad_left, s.pad_right, s.kernel_w,
                                             s.stride_w, s.count_include_pad);
        const std::size_t divisor_n = rows.divisor * cols.divisor;
        float* out_px = out + (oy * s.out_width + ox) * s.channels;
        if constexpr (DividesSlowly<V>::value) {
          if (exact_reciprocal(divisor_n)) {
            const F scale = V::set1(1.0f / static_cast<float>(divisor_n));
            std::size_t c0 = 0;
            for (; c0 < full; c0 += N) {
              window2d<false, true>(s, in, rows, cols, scale, c0, tail_m, out_px);
            }
            if (c0 < s.channels) window2d<true, true>(s, in, rows, cols, scale, c0, tail_m, out_px);
            continue;
          }
        }
        const F divisor = V::set1(static_cast<float>(divisor_n));
        std::size_t c0 = 0;
        for (; c0 < full; c0 += N) window2d<false>(s, in, rows, cols, divisor, c0, tail_m, out_px);
        if (c0 < s.channels) window2d<true>(s, in, rows, cols, divisor, c0, tail_m, out_px);
      }
    }
  }

  static void avgpool2d(const AvgPool2DShape& s, const float* in, float* out) {
    avgpool2d_rows(s, in, 0, s.out_height, out);
  }

  static void avgpool(const AvgPoolShape& s, const float* in, float* out) {
    avgpool_rows(s, in, 0, s.out_height, out);
  }

  static void global_avgpool(const float* in, std::size_t pixels, std::size_t channels,
                             float* out) {
    assert(pixels > 0 && channels > 0);
    const std::size_t full = channels / N * N;
    const M tail_m = V::mask(channels - full);
    for (std::size_t c0 = 0; c0 < channels; c0 += N) {
      if (c0 < full) {
        V::store(out + c0, V::zero());
      } else {
        V::store(out + c0, V::zero(), tail_m);
      }
    }
    for (std::size_t p = 0; p < pixels; ++p) {
      const float* row = in + p * channels;
      std::size_t c0 = 0;
      for (; c0 < full; c0 += N) V::store(out + c0, V::add(V::load(out + c0), V::load(row + c0)));
      if (c0 < channels) {
        V::store(out + c0, V::add(V::load(out + c0, tail_m), V::load(row + c0, tail_m)), tail_m);
      }
    }
    const F count = V::set1(static_cast<float>(pixels));
    std::size_t c0 = 0;
    for (; c0 < full; c0 += N) V::store(out + c0, V::div(V::load(out + c0), count));
    if (c0 < channels) V::store(out + c0, V::div(V::load(out + c0, tail_m), count), tail_m);
  }
};

}  // namespace
}  // namespace qbinfer
