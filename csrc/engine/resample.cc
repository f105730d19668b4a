#include "engine/resample.h"

#include <cstring>
#include <string>
#include <vector>

#include "engine/resample_passes.h"
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

// The portable first pass. The loops over k are plain element-wise float loops, which the
// compiler vectorises for the baseline CPU (the conversion of the bytes included).
void filter_rows_portable(const std::uint8_t* src, std::ptrdiff_t row_stride, const float* weights,
                          std::size_t taps, std::size_t n, float* line) {
  const float w0 = weights[0];
  for (std::size_t k = 0; k < n; ++k) line[k] = w0 * static_cast<float>(src[k]);
  for (std::size_t t = 1; t < taps; ++t) {
    const float wt = weights[t];
    if (wt == 0.0f) continue;  // the band's padding: skipping it changes no value
    const std::uint8_t* st = src + static_cast<std::ptrdiff_t>(t) * row_stride;
    for (std::size_t k = 0; k < n; ++k) line[k] += wt * static_cast<float>(st[k]);
  }
}

// The recipe's normalisation of one value, in its order, in float32 (no FMA: the build passes
// -ffp-contract=off). Every path ends here or in the same three vector operations.
inline float normalize_value(float v, float scale, float mean, float std) {
  return (v * scale - mean) / std;
}

// The second pass of a 1-channel image, then the normalisation, into out_channels values per
// pixel (the one channel repeated).
void filter_columns_gray_portable(const float* line, const ResampleAxis& cols,
                                  std::size_t out_channels, float scale, const float* mean,
                                  const float* std, float* out) {
  for (std::size_t j = 0; j < cols.outputs; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]);
    const std::size_t taps = resample_live_taps(cols, j);
    float acc = w[0] * p[0];
    for (std::size_t t = 1; t < taps; ++t) acc += w[t] * p[t];
    for (std::size_t c = 0; c < out_channels; ++c) {
      out[j * out_channels + c] = normalize_value(acc, scale, mean[c], std[c]);
    }
  }
}

// One output pixel of the RGB second pass in scalar code: its three sums, normalised.
void filter_pixel_rgb(const float* line, std::size_t pixel_floats, const ResampleAxis& cols,
                      std::size_t j, float scale, const float* mean, const float* std, float* o) {
  const float* w = cols.weights + j * cols.taps;
  const float* p = line + static_cast<std::size_t>(cols.first[j]) * pixel_floats;
  const std::size_t taps = resample_live_taps(cols, j);
  for (std::size_t c = 0; c < 3; ++c) {
    float acc = w[0] * p[c];
    for (std::size_t t = 1; t < taps; ++t) acc += w[t] * p[t * pixel_floats + c];
    o[c] = normalize_value(acc, scale, mean[c], std[c]);
  }
}

#if defined(__GNUC__)
// RGB with the three channels of a pixel in one 4-float vector (GCC/Clang vector extensions:
// SSE on x86-64, NEON on AArch64): a quarter of the loads and a third of the divisions of the
// scalar loop. Each lane does the scalar loop's operations in its order, so the values are the
// same bits. The fourth lane reads the next value (the next pixel's first, a pixel's padding
// byte, or the float after the line) and is never kept: the last pixel of the row goes through
// the scalar code, the others store 4 values of which the next pixel overwrites one.
typedef float Float4 __attribute__((vector_size(16)));

inline Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void filter_columns_rgb_portable(const float* line, std::size_t pixel_floats,
                                 const ResampleAxis& cols, float scale, const float* mean,
                                 const float* std, float* out) {
  const Float4 mean4 = {mean[0], mean[1], mean[2], 0.0f};
  const Float4 std4 = {std[0], std[1], std[2], 1.0f};
  const Float4 scale4 = {scale, scale, scale, scale};
  const std::size_t last = cols.outputs - 1;
  for (std::size_t j = 0; j < last; ++j) {
    const float* w = cols.weights + j * cols.taps;
    const float* p = line + static_cast<std::size_t>(cols.first[j]) * pixel_floats;
    const std::size_t taps = resample_live_taps(cols, j);
    Float4 acc = w[0] * load4(p);
    for (std::size_t t = 1; t < taps; ++t) acc += w[t] * load4(p + t * pixel_floats);
    const Float4 v = (acc * scale4 - mean4) / std4;
    std::memcpy(out + j * 3, &v, sizeof v);
  }
  filter_pixel_rgb(line, pixel_floats, cols, last, scale, mean, std, out + last * 3);
}
#else
void filter_columns_rgb_portable(const float* line, std::size_t pixel_floats,
                                 const ResampleAxis& cols, float scale, const float* mean,
                                 const float* std, float* out) {
  for (std::size_t j = 0; j < cols.outputs; ++j) {
    filter_pixel_rgb(line, pixel_floats, cols, j, scale, mean, std, out + j * 3);
  }
}
#endif

const ResamplePasses kPortablePasses{&filter_rows_portable, &filter_columns_rgb_portable,
                                     &filter_columns_gray_portable};

const ResamplePasses& passes_for(Isa isa) {
#if defined(QBINFER_X86_64_RESAMPLE)
  if (isa == Isa::kAvx2 || isa == Isa::kAvx512) return kResamplePasses__avx2;
#endif
  (void)isa;
  return kPortablePasses;
}

}  // namespace

void resample_normalize(const ImageView& image, const ResampleAxis& rows, const ResampleAxis& cols,
                        std::size_t out_channels, float scale, const float* mean, const float* std,
                        float* out, Isa isa) {
  const std::size_t channels = image.channels;
  if (channels != 1 && channels != 3) {
    throw ShapeError("resample: the image must have 1 or 3 channels, not " +
                     std::to_string(channels));
  }
  if (image.pixel_stride != channels && !(channels == 3 && image.pixel_stride == 4)) {
    throw ShapeError("resample: pixels of " + std::to_string(channels) + " channels must be " +
                     std::to_string(channels) + (channels == 3 ? " or 4" : "") +
                     " bytes apart, not " + std::to_string(image.pixel_stride));
  }
  if ((out_channels != 1 && out_channels != 3) || out_channels < channels) {
    throw ShapeError("resample: cannot make " + std::to_string(out_channels) +
                     " output channels of " + std::to_string(channels));
  }
  check_resample_axis(rows, "rows");
  check_resample_axis(cols, "columns");
  const ResamplePasses& passes = passes_for(isa);
  // The bytes of a row that the first pass filters: every pixel's channels, and the padding
  // bytes between them (filtered and never used; not the one after the last pixel, which may
  // lie past the image's memory).
  const std::size_t n = (cols.inputs - 1) * image.pixel_stride + channels;
  // One float per byte, and one more that the second pass may read after the last pixel; zero
  // where the first pass writes nothing.
  std::vector<float> line(cols.inputs * image.pixel_stride + 1, 0.0f);
  const std::size_t out_row = cols.outputs * out_channels;
  for (std::size_t i = 0; i < rows.outputs; ++i) {
    const float* w = rows.weights + i * rows.taps;
    const std::uint8_t* src =
        image.data + static_cast<std::ptrdiff_t>(rows.first[i]) * image.row_stride;
    // Rows of zero weight at the band's ends change no value: drop them (a product of zero
    // added to a sum, or a sum started from one, gives the same bits).
    std::size_t taps = resample_live_taps(rows, i);
    while (taps > 1 && w[taps - 1] == 0.0f) --taps;
    while (taps > 1 && w[0] == 0.0f) {
      ++w;
      src += image.row_stride;
      --taps;
    }
    passes.filter_rows(src, image.row_stride, w, taps, n, line.data());
    float* o = out + i * out_row;
    if (channels == 3) {
      passes.filter_columns_rgb(line.data(), image.pixel_stride, cols, scale, mean, std, o);
    } else {
      passes.filter_columns_gray(line.data(), cols, out_channels, scale, mean, std, o);
    }
  }
}

}  // namespace qbinfer
