#include "engine/resample.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "format/errors.h"

namespace qbinfer {

void check_resample_axis(const ResampleAxis& axis, const char* what) {
  if (axis.outputs == 0 || axis.taps == 0 || axis.inputs == 0) {
    throw ShapeError(std::string("resample: the ") + what + " filter is empty (" +
                     std::to_string(axis.outputs) + " outputs, " + std::to_string(axis.taps) +
                     " taps, " + std::to_string(axis.inputs) + " inputs)");
  }
  for (std::size_t i = 0; i < axis.outputs; ++i) {
    const std::int64_t f = axis.first[i];
    if (f < 0 || static_cast<std::uint64_t>(f) >= axis.inputs) {
      throw ShapeError(std::string("resample: ") + what + " output " + std::to_string(i) +
                       " starts at input " + std::to_string(f) + ", outside [0, " +
                       std::to_string(axis.inputs) + ")");
    }
  }
}

namespace {

// The taps of output i that lie inside the input (the rest have zero weights).
inline std::size_t live_taps(const ResampleAxis& axis, std::size_t i) {
  return std::min(axis.taps, axis.inputs - static_cast<std::size_t>(axis.first[i]));
}

// One output row of the first pass: line[k] = sum_t w[t] * src_row(first + t)[k] over the
// row's `n` bytes. The loops over k are plain element-wise float loops, which the compiler
// vectorises (the conversion of the bytes included).
void filter_rows(const std::uint8_t* src, std::ptrdiff_t row_stride, const ResampleAxis& rows,
                 std::size_t i, std::size_t n, float* line) {
  const float* w = rows.weights + i * rows.taps;
  const std::uint8_t* s = src + static_cast<std::ptrdiff_t>(rows.first[i]) * row_stride;
  const float w0 = w[0];
  for (std::size_t k = 0; k < n; ++k) line[k] = w0 * static_cast<float>(s[k]);
  const std::size_t taps = live_taps(rows, i);
  for (std::size_t t = 1; t < taps; ++t) {
    const float wt = w[t];
    if (wt == 0.0f) continue;  // the band's padding: skipping it changes no value
    const std::uint8_t* st = s + static_cast<std::ptrdiff_t>(t) * row_stride;
    for (std::size_t k = 0; k < n; ++k) line[k] += wt * static_cast<float>(st[k]);
  }
}

// The second pass over one filtered row, then the normalisation: SRC_C channels in the line,
// out_channels values written per pixel (one source channel repeated). Normalising each value
// as it is made measured faster than a vectorised pass over the finished row.
template <std::size_t SRC_C>
void filter_columns(const float* line, const ResampleAxis& cols, std::size_t out_channels,
                    float scale, const float* mean, const float* std, float* out) {
  for (std::size_t j = 0; j < cols.outputs; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * SRC_C;
    const std::size_t taps = live_taps(cols, j);
    float acc[SRC_C];
    for (std::size_t c = 0; c < SRC_C; ++c) acc[c] = w[0] * p[c];
    for (std::size_t t = 1; t < taps; ++t) {
      for (std::size_t c = 0; c < SRC_C; ++c) acc[c] += w[t] * p[t * SRC_C + c];
    }
    float* o = out + j * out_channels;
    for (std::size_t c = 0; c < out_channels; ++c) {
      // The recipe's order, in float32 (no FMA: the build passes -ffp-contract=off).
      o[c] = (acc[SRC_C == 1 ? 0 : c] * scale - mean[c]) / std[c];
    }
  }
}

#if defined(__GNUC__)
// RGB to RGB with the three channels of a pixel in one 4-float vector (GCC/Clang vector
// extensions: SSE on x86-64, NEON on AArch64): a quarter of the loads and a third of the
// divisions of the loop above, which they bound. Each lane does the scalar loop's operations in
// its order, so the values are the same bits. The fourth lane reads the next pixel's first value
// (the line has one float of padding) and is never stored: the last pixel of the row goes
// through the scalar loop, the others store 4 values of which the next pixel overwrites one.
typedef float Float4 __attribute__((vector_size(16)));

inline Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void filter_columns_rgb(const float* line, const ResampleAxis& cols, float scale, const float* mean,
                        const float* std, float* out) {
  const Float4 mean4 = {mean[0], mean[1], mean[2], 0.0f};
  const Float4 std4 = {std[0], std[1], std[2], 1.0f};
  const Float4 scale4 = {scale, scale, scale, scale};
  const std::size_t last = cols.outputs - 1;
  for (std::size_t j = 0; j < last; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * 3;
    const std::size_t taps = live_taps(cols, j);
    Float4 acc = w[0] * load4(p);
    for (std::size_t t = 1; t < taps; ++t) acc += w[t] * load4(p + t * 3);
    const Float4 v = (acc * scale4 - mean4) / std4;
    std::memcpy(out + j * 3, &v, sizeof v);
  }
  ResampleAxis tail = cols;
  tail.first += last;
  tail.weights += last * cols.taps;
  tail.outputs = 1;
  filter_columns<3>(line, tail, 3, scale, mean, std, out + last * 3);
}
#endif

}  // namespace

void resample_normalize(const std::uint8_t* src, std::ptrdiff_t row_stride,
                        std::size_t src_channels, const ResampleAxis& rows,
                        const ResampleAxis& cols, std::size_t out_channels, float scale,
                        const float* mean, const float* std, float* out) {
  if (src_channels != 1 && src_channels != 3) {
    throw ShapeError("resample: the image must have 1 or 3 channels, not " +
                     std::to_string(src_channels));
  }
  if ((out_channels != 1 && out_channels != 3) || out_channels < src_channels) {
    throw ShapeError("resample: cannot make " + std::to_string(out_channels) +
                     " output channels of " + std::to_string(src_channels));
  }
  check_resample_axis(rows, "rows");
  check_resample_axis(cols, "columns");
  const std::size_t n = cols.inputs * src_channels;
  const std::size_t out_row = cols.outputs * out_channels;
  std::vector<float> line(n + 1);  // + 1: the padding filter_columns_rgb reads
  for (std::size_t i = 0; i < rows.outputs; ++i) {
    float* o = out + i * out_row;
    filter_rows(src, row_stride, rows, i, n, line.data());
#if defined(__GNUC__)
    if (src_channels == 3 && out_channels == 3) {
      filter_columns_rgb(line.data(), cols, scale, mean, std, o);
      continue;
    }
#endif
    if (src_channels == 3) {
      filter_columns<3>(line.data(), cols, out_channels, scale, mean, std, o);
    } else {
      filter_columns<1>(line.data(), cols, out_channels, scale, mean, std, o);
    }
  }
}

}  // namespace qbinfer
