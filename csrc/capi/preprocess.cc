#include "capi/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "engine/resample.h"
#include "format/errors.h"

namespace qbinfer::capi {
namespace {

// numpy's float64 sum of a contiguous row (`w.sum(axis=1)` in `_filter_band`): pairwise, with
// eight accumulators for blocks of up to 128 values, a plain loop below 8. The same additions
// in the same order give the same bits, and so the same float32 weights as Python.
double numpy_sum(const double* a, std::size_t n) {
  if (n < 8) {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (std::size_t k = 0; k < 8; ++k) r[k] = a[k];
    std::size_t i = 8;
    for (; i < n - n % 8; i += 8) {
      for (std::size_t k = 0; k < 8; ++k) r[k] += a[i + k];
    }
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  std::size_t half = n / 2;
  half -= half % 8;
  return numpy_sum(a, half) + numpy_sum(a + half, n - half);
}

// Python's round() of a float to an int: to nearest, ties to even (nearbyint in the default
// rounding mode).
std::size_t round_half_even(double v) { return static_cast<std::size_t>(std::nearbyint(v)); }

// ITU-R BT.601 luma with Pillow's integer weights and rounding (Image.convert("L")).
std::uint8_t luma(const std::uint8_t* rgb) {
  const std::uint32_t l = (19595u * rgb[0] + 38470u * rgb[1] + 7471u * rgb[2] + 0x8000u) >> 16;
  return static_cast<std::uint8_t>(l);
}

}  // namespace

AxisFilter axis_filter(std::size_t n_in, std::size_t n_out, std::size_t first, std::size_t count) {
  AxisFilter f;
  f.lo.resize(count);
  if (n_in == n_out) {  // not resized: the filter is the identity
    std::iota(f.lo.begin(), f.lo.end(), std::int64_t{0});
    f.weights.assign(count, 1.0f);
    f.taps = 1;
    f.start = static_cast<std::int64_t>(first);
    f.stop = static_cast<std::int64_t>(first + count);
    return f;
  }
  // _filter_band, in float64 as numpy computes it.
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  const double support = std::max(scale, 1.0);
  const auto n = static_cast<std::int64_t>(n_in);
  std::vector<double> centers(count);
  std::vector<std::int64_t> hi(count);
  std::int64_t taps = 1;
  for (std::size_t i = 0; i < count; ++i) {
    centers[i] = (static_cast<double>(first + i) + 0.5) * scale;
    // astype(int64) truncates towards zero, then the clamp.
    f.lo[i] = std::max<std::int64_t>(static_cast<std::int64_t>(centers[i] - support + 0.5), 0);
    hi[i] = std::min<std::int64_t>(static_cast<std::int64_t>(centers[i] + support + 0.5), n);
    taps = std::max(taps, hi[i] - f.lo[i]);
  }
  f.taps = static_cast<std::size_t>(taps);
  f.weights.resize(count * f.taps);
  std::vector<double> w(f.taps);
  for (std::size_t i = 0; i < count; ++i) {
    for (std::size_t t = 0; t < f.taps; ++t) {
      const std::int64_t j = f.lo[i] + static_cast<std::int64_t>(t);
      const double v = 1.0 - std::abs(static_cast<double>(j) + 0.5 - centers[i]) / support;
      w[t] = j >= hi[i] ? 0.0 : std::max(v, 0.0);
    }
    const double total = numpy_sum(w.data(), f.taps);
    const double divisor = total > 0 ? total : 1.0;
    for (std::size_t t = 0; t < f.taps; ++t) {
      f.weights[i * f.taps + t] = static_cast<float>(w[t] / divisor);
    }
  }
  f.start = f.lo[0];
  f.stop = std::min<std::int64_t>(f.lo[count - 1] + taps, n);
  for (std::int64_t& v : f.lo) v -= f.start;
  return f;
}

void resized_size(std::size_t height, std::size_t width, std::uint32_t size, std::size_t* out_h,
                  std::size_t* out_w) {
  *out_h = height;
  *out_w = width;
  if (size == 0 || std::min(height, width) == size) return;
  // Python's int / int is the correctly rounded quotient, as is this division of two doubles
  // that hold the integers exactly (both below 2^53).
  if (height <= width) {
    *out_h = size;
    *out_w = std::max<std::size_t>(
        1, round_half_even(static_cast<double>(width) * size / static_cast<double>(height)));
  } else {
    *out_h = std::max<std::size_t>(
        1, round_half_even(static_cast<double>(height) * size / static_cast<double>(width)));
    *out_w = size;
  }
}

void preprocess(const ImageInput& image, const Recipe& recipe, float* out, Isa isa) {
  if (recipe.channels != 1 && recipe.channels != 3) {
    throw ShapeError("predict handles models of 1 or 3 input channels, not " +
                     std::to_string(recipe.channels) +
                     "; preprocess the input yourself and call qbinfer_model_run");
  }
  if (recipe.crop_height != recipe.input_height || recipe.crop_width != recipe.input_width) {
    throw FormatError("the file's crop " + std::to_string(recipe.crop_height) + "x" +
                      std::to_string(recipe.crop_width) + " is not the model's input size " +
                      std::to_string(recipe.input_height) + "x" +
                      std::to_string(recipe.input_width));
  }
  std::size_t nh = 0, nw = 0;
  resized_size(image.height, image.width, recipe.resize_short, &nh, &nw);
  const std::size_t ch = recipe.crop_height, cw = recipe.crop_width;
  if (nh < ch || nw < cw) {
    throw ShapeError("image of " + std::to_string(nh) + "x" + std::to_string(nw) +
                     " after resizing is smaller than the " + std::to_string(ch) + "x" +
                     std::to_string(cw) + " crop");
  }
  const std::size_t top = round_half_even(static_cast<double>(nh - ch) / 2.0);
  const std::size_t left = round_half_even(static_cast<double>(nw - cw) / 2.0);
  const AxisFilter rows = axis_filter(image.height, nh, top, ch);
  const AxisFilter cols = axis_filter(image.width, nw, left, cw);
  const auto win_rows = static_cast<std::size_t>(rows.stop - rows.start);
  const auto win_cols = static_cast<std::size_t>(cols.stop - cols.start);

  // The window of the image the filters read, as the engine takes it.
  const std::uint8_t* origin = image.pixels +
                               static_cast<std::size_t>(rows.start) * image.row_stride +
                               static_cast<std::size_t>(cols.start) * image.channels;
  ImageView view{origin, static_cast<std::ptrdiff_t>(image.row_stride), image.channels,
                 image.channels == 1 ? std::size_t{1} : std::size_t{3}};
  std::vector<std::uint8_t> gray;
  if (recipe.channels == 1 && image.channels != 1) {
    // A 1-channel model takes the luma of the window's pixels.
    gray.resize(win_rows * win_cols);
    for (std::size_t y = 0; y < win_rows; ++y) {
      const std::uint8_t* src = origin + y * image.row_stride;
      for (std::size_t x = 0; x < win_cols; ++x)
        gray[y * win_cols + x] = luma(src + x * image.channels);
    }
    view = ImageView{gray.data(), static_cast<std::ptrdiff_t>(win_cols), 1, 1};
  }
  const ResampleAxis row_axis{rows.lo.data(), rows.weights.data(), ch, rows.taps, win_rows};
  const ResampleAxis col_axis{cols.lo.data(), cols.weights.data(), cw, cols.taps, win_cols};
  resample_normalize(view, row_axis, col_axis, recipe.channels, recipe.pixel_scale, recipe.mean,
                     recipe.std, out, isa);
}

std::vector<ClassScore> top_probabilities(const std::vector<float>& row, bool softmax,
                                          std::size_t k) {
  const std::size_t classes = row.size();
  k = std::min(k, classes);
  std::vector<double> p(classes);
  if (softmax) {
    // A NaN anywhere makes every probability NaN, as numpy's max propagates it.
    double top = -std::numeric_limits<double>::infinity();
    bool nan = false;
    for (const float v : row) {
      nan = nan || std::isnan(v);
      top = std::max(top, static_cast<double>(v));
    }
    if (nan) top = std::numeric_limits<double>::quiet_NaN();
    double sum = 0.0;
    for (std::size_t c = 0; c < classes; ++c)
      sum += p[c] = std::exp(static_cast<double>(row[c]) - top);
    for (double& v : p) v /= sum;
  } else {
    for (std::size_t c = 0; c < classes; ++c) p[c] = row[c];
  }
  std::vector<std::size_t> order(classes);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&p](std::size_t a, std::size_t b) {
                      const bool na = std::isnan(p[a]);
                      const bool nb = std::isnan(p[b]);
                      if (na != nb) return nb;
                      if (!na && p[a] != p[b]) return p[a] > p[b];
                      return a < b;
                    });
  std::vector<ClassScore> best(k);
  for (std::size_t i = 0; i < k; ++i) best[i] = ClassScore{order[i], p[order[i]]};
  return best;
}

}  // namespace qbinfer::capi
