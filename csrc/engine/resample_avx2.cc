// The filter passes of resample_normalize for AVX2 + FMA (resample_passes.h). Compiled with
// -mavx2 -mfma (CMakeLists.txt) and called only when the CPU has them (resample.cc picks it for
// Isa::kAvx2 and kAvx512).
//
// First pass: 8 bytes of a row at a time widened to 8 floats, 32 values in 4 accumulators per
// step so the FMA latency is hidden, every tap fused (one rounding per tap). Second pass: one
// pixel's 3 channels in the low lanes of a 4-float vector, fused likewise; the row of sums is
// then normalised 8 values at a time with the per-channel constants laid out in a 24-float
// period (3 channels x 8 lanes). The scalar tails use std::fma, the same fused operation, so a
// value does not depend on where it falls in a vector, and RGB read as 3 or 4 bytes per pixel
// gives the same bits.

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "engine/resample_passes.h"

namespace qbinfer {
namespace {

inline __m256 load8_bytes(const std::uint8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
}

void filter_rows__avx2(const std::uint8_t* src, std::ptrdiff_t row_stride, const float* weights,
                       std::size_t taps, std::size_t n, float* line) {
  std::size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m256 w0 = _mm256_set1_ps(weights[0]);
    __m256 a0 = _mm256_mul_ps(w0, load8_bytes(src + k));
    __m256 a1 = _mm256_mul_ps(w0, load8_bytes(src + k + 8));
    __m256 a2 = _mm256_mul_ps(w0, load8_bytes(src + k + 16));
    __m256 a3 = _mm256_mul_ps(w0, load8_bytes(src + k + 24));
    for (std::size_t t = 1; t < taps; ++t) {
      const std::uint8_t* s = src + static_cast<std::ptrdiff_t>(t) * row_stride + k;
      const __m256 wt = _mm256_set1_ps(weights[t]);
      a0 = _mm256_fmadd_ps(wt, load8_bytes(s), a0);
      a1 = _mm256_fmadd_ps(wt, load8_bytes(s + 8), a1);
      a2 = _mm256_fmadd_ps(wt, load8_bytes(s + 16), a2);
      a3 = _mm256_fmadd_ps(wt, load8_bytes(s + 24), a3);
    }
    _mm256_storeu_ps(line + k, a0);
    _mm256_storeu_ps(line + k + 8, a1);
    _mm256_storeu_ps(line + k + 16, a2);
    _mm256_storeu_ps(line + k + 24, a3);
  }
  for (; k + 8 <= n; k += 8) {
    __m256 a = _mm256_mul_ps(_mm256_set1_ps(weights[0]), load8_bytes(src + k));
    for (std::size_t t = 1; t < taps; ++t) {
      const std::uint8_t* s = src + static_cast<std::ptrdiff_t>(t) * row_stride + k;
      a = _mm256_fmadd_ps(_mm256_set1_ps(weights[t]), load8_bytes(s), a);
    }
    _mm256_storeu_ps(line + k, a);
  }
  for (; k < n; ++k) {  // the last n % 8 bytes: reading 8 could run past the image
    float a = weights[0] * static_cast<float>(src[k]);
    for (std::size_t t = 1; t < taps; ++t) {
      const std::uint8_t* st = src + static_cast<std::ptrdiff_t>(t) * row_stride;
      a = std::fma(weights[t], static_cast<float>(st[k]), a);
    }
    line[k] = a;
  }
}

// The sums of one output pixel: its `taps` taps from p (one pixel's 3 or 4 floats each).
inline __m128 pixel_sums(const float* p, const float* w, std::size_t taps,
                         std::size_t pixel_floats) {
  __m128 acc = _mm_mul_ps(_mm_set1_ps(w[0]), _mm_loadu_ps(p));
  for (std::size_t t = 1; t < taps; ++t) {
    acc = _mm_fmadd_ps(_mm_set1_ps(w[t]), _mm_loadu_ps(p + t * pixel_floats), acc);
  }
  return acc;
}

// The pixels of a row before `end`, each with all its TAPS taps inside the line, with the tap
// count and the pixel size known at compile time: the tap loop unrolled, no branch per tap,
// so the out-of-order core overlaps the FMA chains of neighbouring pixels (the loop above runs
// at the latency of one chain). The same operations in the same order: the same bits.
template <std::size_t TAPS, std::size_t PIXEL_FLOATS>
std::size_t columns_fixed_taps(const float* line, const ResampleAxis& cols, std::size_t end,
                               float* out) {
  std::size_t j = 0;
  for (; j < end; ++j) {
    if (static_cast<std::size_t>(cols.first[j]) + TAPS > cols.inputs) break;
    const float* w = cols.weights + j * TAPS;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * PIXEL_FLOATS;
    __m128 acc = _mm_mul_ps(_mm_set1_ps(w[0]), _mm_loadu_ps(p));
    for (std::size_t t = 1; t < TAPS; ++t) {
      acc = _mm_fmadd_ps(_mm_set1_ps(w[t]), _mm_loadu_ps(p + t * PIXEL_FLOATS), acc);
    }
    _mm_storeu_ps(out + j * 3, acc);  // the fourth value is the next pixel's to overwrite
  }
  return j;
}

template <std::size_t PIXEL_FLOATS>
std::size_t columns_fixed(const float* line, const ResampleAxis& cols, std::size_t end,
                          float* out) {
  switch (cols.taps) {
    case 1:
      return columns_fixed_taps<1, PIXEL_FLOATS>(line, cols, end, out);
    case 2:
      return columns_fixed_taps<2, PIXEL_FLOATS>(line, cols, end, out);
    case 3:
      return columns_fixed_taps<3, PIXEL_FLOATS>(line, cols, end, out);
    case 4:
      return columns_fixed_taps<4, PIXEL_FLOATS>(line, cols, end, out);
    case 5:
      return columns_fixed_taps<5, PIXEL_FLOATS>(line, cols, end, out);
    case 6:
      return columns_fixed_taps<6, PIXEL_FLOATS>(line, cols, end, out);
    case 7:
      return columns_fixed_taps<7, PIXEL_FLOATS>(line, cols, end, out);
    case 8:
      return columns_fixed_taps<8, PIXEL_FLOATS>(line, cols, end, out);
    case 9:
      return columns_fixed_taps<9, PIXEL_FLOATS>(line, cols, end, out);
    case 10:
      return columns_fixed_taps<10, PIXEL_FLOATS>(line, cols, end, out);
    default:
      return 0;  // wider filters (downscales above 4.5): the general loop
  }
}

void filter_columns_rgb__avx2(const float* line, std::size_t pixel_floats, const ResampleAxis& cols,
                              float scale, const float* mean, const float* std, float* out) {
  const std::size_t last = cols.outputs - 1;
  // The leading pixels whose taps all lie inside the line (all but a few at the right edge):
  // the unrolled loop; the rest, and the last pixel (3 values stored, not 4), below.
  std::size_t j = pixel_floats == 4 ? columns_fixed<4>(line, cols, last, out)
                                    : columns_fixed<3>(line, cols, last, out);
  for (; j <= last; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * pixel_floats;
    const __m128 acc = pixel_sums(p, w, resample_live_taps(cols, j), pixel_floats);
    if (j < last) {
      _mm_storeu_ps(out + j * 3, acc);
    } else {
      float sums[4];
      _mm_storeu_ps(sums, acc);
      for (std::size_t c = 0; c < 3; ++c) out[j * 3 + c] = sums[c];
    }
  }
  // The normalisation, in the recipe's order and float32 (mul, sub, div: no FMA), so the same
  // bits as the portable pass for the same sums.
  float mean24[24];
  float std24[24];
  for (std::size_t q = 0; q < 24; ++q) {
    mean24[q] = mean[q % 3];
    std24[q] = std[q % 3];
  }
  const __m256 scale8 = _mm256_set1_ps(scale);
  const std::size_t n = cols.outputs * 3;
  std::size_t k = 0;
  for (std::size_t phase = 0; k + 8 <= n; k += 8, phase = phase == 2 ? 0 : phase + 1) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(out + k), scale8);
    const __m256 centred = _mm256_sub_ps(v, _mm256_loadu_ps(mean24 + 8 * phase));
    _mm256_storeu_ps(out + k, _mm256_div_ps(centred, _mm256_loadu_ps(std24 + 8 * phase)));
  }
  for (; k < n; ++k) out[k] = (out[k] * scale - mean[k % 3]) / std[k % 3];
}

// One channel: the RGB pass's operations on one lane, in scalar code (std::fma is the fused
// multiply-add of _mm_fmadd_ps), then the same normalisation.
void filter_columns_gray__avx2(const float* line, const ResampleAxis& cols,
                               std::size_t out_channels, float scale, const float* mean,
                               const float* std, float* out) {
  for (std::size_t j = 0; j < cols.outputs; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]);
    const std::size_t end = resample_live_taps(cols, j);
    float acc = w[0] * p[0];
    for (std::size_t t = 1; t < end; ++t) acc = std::fma(w[t], p[t], acc);
    for (std::size_t c = 0; c < out_channels; ++c) {
      out[j * out_channels + c] = (acc * scale - mean[c]) / std[c];
    }
  }
}

}  // namespace

const ResamplePasses kResamplePasses__avx2{&filter_rows__avx2, &filter_columns_rgb__avx2,
                                           &filter_columns_gray__avx2};

}  // namespace qbinfer
