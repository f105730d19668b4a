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
      a = std::fma(
          weights[t],
          static_cast<float>(
              src[static_cast<std::ptrdiff_t>(t) * row_stride + static_cast<std::ptrdiff_t>(k)]),
          a);
    }
    line[k] = a;
  }
}

void filter_columns_rgb__avx2(const float* line, std::size_t pixel_floats, const ResampleAxis& cols,
                              float scale, const float* mean, const float* std, float* out) {
  const std::size_t last = cols.outputs - 1;
  for (std::size_t j = 0; j <= last; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * pixel_floats;
    const std::size_t end = resample_live_taps(cols, j);
    __m128 acc = _mm_mul_ps(_mm_set1_ps(w[0]), _mm_loadu_ps(p));
    for (std::size_t t = 1; t < end; ++t) {
      acc = _mm_fmadd_ps(_mm_set1_ps(w[t]), _mm_loadu_ps(p + t * pixel_floats), acc);
    }
    if (j < last) {
      _mm_storeu_ps(out + j * 3, acc);  // the fourth value is the next pixel's to overwrite
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
