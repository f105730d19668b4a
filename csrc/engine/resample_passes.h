// The two filter passes of resample_normalize (resample.h), one implementation per ISA: the
// portable one in resample.cc, the AVX2 one in resample_avx2.cc (compiled with AVX2 + FMA, run
// only on a CPU that has them). resample.cc validates and drives; these only compute.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "engine/resample.h"

namespace qbinfer {

struct ResamplePasses {
  // The first pass, one output row: line[k] = sum_t weights[t] * src[t * row_stride + k] for
  // k < n (`taps` input rows, all inside the image, the first at src).
  void (*filter_rows)(const std::uint8_t* src, std::ptrdiff_t row_stride, const float* weights,
                      std::size_t taps, std::size_t n, float* line);
  // The second pass and the normalisation of one row of a 3-channel image: output pixel j is
  // (sum_t w_j[t] * line[(first[j] + t) * pixel_floats + c] * scale - mean[c]) / std[c] for
  // c < 3, stored at out[j * 3 + c]. pixel_floats is 3 or 4; `line` has one float after its
  // last pixel's values, which may be read.
  void (*filter_columns_rgb)(const float* line, std::size_t pixel_floats, const ResampleAxis& cols,
                             float scale, const float* mean, const float* std, float* out);
  // The same for a 1-channel image (line: one float per pixel), into out_channels values per
  // pixel (the one channel repeated). Its sums are those of any channel of the RGB pass on the
  // same values (the same operations in the same order), so gray repeated into RGB and gray
  // given as one channel give the same bits.
  void (*filter_columns_gray)(const float* line, const ResampleAxis& cols, std::size_t out_channels,
                              float scale, const float* mean, const float* std, float* out);
};

// The taps of output i that lie inside the input (the rest have zero weights).
inline std::size_t resample_live_taps(const ResampleAxis& axis, std::size_t i) {
  return std::min(axis.taps, axis.inputs - static_cast<std::size_t>(axis.first[i]));
}

#if defined(QBINFER_X86_64_RESAMPLE)
extern const ResamplePasses kResamplePasses__avx2;
#endif

}  // namespace qbinfer
