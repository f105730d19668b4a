// The image preprocessing of `Model.predict` (python/qbinfer/preprocess.py, "The recipe"): a
// separable resize of an 8-bit image given as two banded filters (one per axis, computed by
// the caller: which input pixels each output pixel reads and with what weights), fused with
// the crop (the filters are those of the crop's pixels only) and the per-channel
// normalisation. In float32, one output row at a time, so nothing larger than one row of the
// intermediate image is ever held.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qbinfer/isa.h"

namespace qbinfer {

// One axis of a separable resampling: output pixel i reads the input pixels
// first[i] .. first[i] + taps - 1 with weights[i * taps + t]; indices at or past the axis's
// `inputs` pixels are skipped (their weights are zero). Validated by `check_resample_axis`.
struct ResampleAxis {
  const std::int64_t* first;
  const float* weights;
  std::size_t outputs;
  std::size_t taps;
  std::size_t inputs;
};

// Throws ShapeError naming `what` ("rows", "columns") unless every first[i] lies in
// [0, inputs) and outputs, taps and inputs are >= 1.
void check_resample_axis(const ResampleAxis& axis, const char* what);

// An 8-bit image in memory: `rows` x `cols` pixels of `channels` (1 or 3) bytes each, pixels
// `pixel_stride` bytes apart (`channels`, or 4 for RGB stored as RGBX, as Pillow keeps it) and
// rows `row_stride` bytes apart. Only the `channels` bytes of each pixel are read.
struct ImageView {
  const std::uint8_t* data;
  std::ptrdiff_t row_stride;
  std::size_t pixel_stride;
  std::size_t channels;
};

// out: rows.outputs x cols.outputs x out_channels float32 (out_channels 1 or 3, >= the image's
// channels: one source channel is repeated), each value (v * scale - mean[c]) / std[c] for the
// resampled value v of the image (rows.inputs x cols.inputs pixels), in that order in float32
// (what numpy computes for the same v; scale 1, mean 0, std 1 give v itself). Both axes and the
// image's layout are checked (ShapeError).
//
// `isa` picks the implementation of the two filter passes: the portable one (kScalar, kNeon)
// or the AVX2 one (kAvx2, kAvx512; resample_avx2.cc). Their resampled values differ by float
// rounding only (the AVX2 sums use FMA); the normalisation is the same arithmetic in both. The
// pixels' layout (pixel_stride) never changes a value.
void resample_normalize(const ImageView& image, const ResampleAxis& rows, const ResampleAxis& cols,
                        std::size_t out_channels, float scale, const float* mean, const float* std,
                        float* out, Isa isa = active_isa());

}  // namespace qbinfer
