// Predict's recipe around the engine's resample (engine/resample.h), for the C API: the same
// steps as python/qbinfer/preprocess.py's engine backend, so that an image gives the same model
// input from C as from Python's Model.predict:
//   step 1  pixels: RGB for a 3-channel model (gray repeated by the resample), gray for a
//           1-channel one (RGB to ITU-R BT.601 luma with Pillow's integer weights);
//   step 2  the resized size (shorter side to resize_short, Python's round-half-even) and the
//           triangle filters of both axes, computed in float64 exactly as `_filter_band` does
//           (numpy's pairwise sum included) and rounded to float32;
//   step 3  the centre crop: only the crop's output pixels are filtered, over the window of the
//           image they read (`_axis_filter`);
//   step 4  the normalisation, in the engine's pass.
// And predict's post-processing: the softmax (float64) and top-k of `_top_probabilities`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qbinfer/isa.h"

namespace qbinfer::capi {

// An 8-bit image: channels 1 (gray), 3 (RGB) or 4 (RGBA/RGBX), rows row_stride bytes apart.
struct ImageInput {
  const std::uint8_t* pixels = nullptr;
  std::size_t width = 0;
  std::size_t height = 0;
  std::size_t channels = 0;
  std::size_t row_stride = 0;
};

// The file's preprocessing and the model's input (height x width x channels).
struct Recipe {
  std::uint32_t resize_short = 0;
  std::uint32_t crop_height = 0;
  std::uint32_t crop_width = 0;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  float pixel_scale = 1;
  std::size_t channels = 3;
  std::size_t input_height = 0;
  std::size_t input_width = 0;
};

// One axis's filter for the crop's output pixels first .. first + count - 1 of an
// n_in -> n_out resize: they read input pixels [start, stop); output i reads from `lo[i]`
// (relative to start) `taps` pixels with weights[i * taps + t].
struct AxisFilter {
  std::int64_t start = 0;
  std::int64_t stop = 0;
  std::size_t taps = 1;
  std::vector<std::int64_t> lo;
  std::vector<float> weights;
};
AxisFilter axis_filter(std::size_t n_in, std::size_t n_out, std::size_t first, std::size_t count);

// (height, width) after resizing the shorter side to `size` (0: unchanged).
void resized_size(std::size_t height, std::size_t width, std::uint32_t size, std::size_t* out_h,
                  std::size_t* out_w);

// The model's input for `image`: one NHWC image of input_height x input_width x channels
// floats. Throws ShapeError for an image smaller than the crop after its resize, a model of
// neither 1 nor 3 channels, or a crop that is not the model's input size.
void preprocess(const ImageInput& image, const Recipe& recipe, float* out, Isa isa);

struct ClassScore {
  std::size_t index;
  double probability;
};

// The k most probable classes of one output row, best first, ties to the lower index, NaN
// last: with `softmax`, of the row's float64 softmax (z = v - max, exp(z) / sum); else of the
// row itself.
std::vector<ClassScore> top_probabilities(const std::vector<float>& row, bool softmax,
                                          std::size_t k);

}  // namespace qbinfer::capi
