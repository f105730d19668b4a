// Portable oracles for pooling: one output pixel at a time, an f32 sum over the window
// (clipped to the image, rows then columns) divided by the number of pixels it covers; the max
// pool scans the window (clipped to the image: padding never wins) in the same order.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#include "kernels/pool/pool.h"

namespace qbinfer {

void avgpool_f32_nhwc_rows__reference(const AvgPoolShape& shape, const float* in,
                                      std::size_t y_begin, std::size_t y_end, float* out) {
  assert(shape.channels > 0 && shape.kernel_h > 0 && shape.kernel_w > 0);
  assert(shape.stride_h > 0 && shape.stride_w > 0);
  assert(shape.in_height >= shape.kernel_h && shape.in_width >= shape.kernel_w);
  assert(shape.out_height ==
         (shape.in_height - shape.kernel_h + shape.stride_h - 1) / shape.stride_h + 1);
  assert(shape.out_width ==
         (shape.in_width - shape.kernel_w + shape.stride_w - 1) / shape.stride_w + 1);
  // Ceil mode must not create a window that starts past the image (PyTorch drops it; the
  // formula above never makes one while stride <= kernel, the only case the models use).
  assert((shape.out_height - 1) * shape.stride_h < shape.in_height);
  assert((shape.out_width - 1) * shape.stride_w < shape.in_width);

  assert(y_begin <= y_end && y_end <= shape.out_height);

  const std::size_t channels = shape.channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    const std::size_t y0 = oy * shape.stride_h;
    const std::size_t y1 = std::min(y0 + shape.kernel_h, shape.in_height);
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      const std::size_t x0 = ox * shape.stride_w;
      const std::size_t x1 = std::min(x0 + shape.kernel_w, shape.in_width);
      const float count = static_cast<float>((y1 - y0) * (x1 - x0));
      float* out_px = out + (oy * shape.out_width + ox) * channels;
      for (std::size_t c = 0; c < channels; ++c) {
        float sum = 0.0f;
        for (std::size_t y = y0; y < y1; ++y) {
          for (std::size_t x = x0; x < x1; ++x) sum += in[(y * shape.in_width + x) * channels + c];
        }
        out_px[c] = sum / count;
      }
    }
  }
}

void avgpool_f32_nhwc__reference(const AvgPoolShape& shape, const float* in, float* out) {
  avgpool_f32_nhwc_rows__reference(shape, in, 0, shape.out_height, out);
}

void global_avgpool_f32_nhwc__reference(const float* in, std::size_t pixels, std::size_t channels,
                                        float* out) {
  assert(pixels > 0 && channels > 0);
  for (std::size_t c = 0; c < channels; ++c) {
    float sum = 0.0f;
    for (std::size_t p = 0; p < pixels; ++p) sum += in[p * channels + c];
    out[c] = sum / static_cast<float>(pixels);
  }
}

void maxpool_f32_nhwc_rows__reference(const MaxPoolShape& shape, const float* in,
                                      std::size_t y_begin, std::size_t y_end, float* out) {
  assert(shape.channels > 0 && shape.kernel_h > 0 && shape.kernel_w > 0);
  assert(shape.stride_h > 0 && shape.stride_w > 0);
  assert(shape.pad_top < shape.kernel_h && shape.pad_left < shape.kernel_w);
  // Every window holds an input pixel (the last one starts before the image ends).
  assert(shape.out_height > 0 &&
         (shape.out_height - 1) * shape.stride_h < shape.in_height + shape.pad_top);
  assert(shape.out_width > 0 &&
         (shape.out_width - 1) * shape.stride_w < shape.in_width + shape.pad_left);
  assert(y_begin <= y_end && y_end <= shape.out_height);

  const std::size_t channels = shape.channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    const PoolSpan rows =
        pool_window(oy, shape.in_height, shape.pad_top, shape.kernel_h, shape.stride_h);
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      const PoolSpan cols =
          pool_window(ox, shape.in_width, shape.pad_left, shape.kernel_w, shape.stride_w);
      float* out_px = out + (oy * shape.out_width + ox) * channels;
      for (std::size_t c = 0; c < channels; ++c) {
        float acc = -std::numeric_limits<float>::infinity();
        for (std::size_t y = rows.begin; y < rows.end; ++y) {
          for (std::size_t x = cols.begin; x < cols.end; ++x) {
            const float v = in[(y * shape.in_width + x) * channels + c];
            // Greater wins; the first NaN wins and then stays (pool.h, "Max pool numerics").
            if (v > acc || (std::isnan(v) && !std::isnan(acc))) acc = v;
          }
        }
        out_px[c] = acc;
      }
    }
  }
}

void maxpool_f32_nhwc__reference(const MaxPoolShape& shape, const float* in, float* out) {
  maxpool_f32_nhwc_rows__reference(shape, in, 0, shape.out_height, out);
}

void avgpool2d_f32_nhwc_rows__reference(const AvgPool2DShape& shape, const float* in,
                                        std::size_t y_begin, std::size_t y_end, float* out) {
  assert(shape.channels > 0 && shape.kernel_h > 0 && shape.kernel_w > 0);
  assert(shape.stride_h > 0 && shape.stride_w > 0);
  assert(shape.pad_top < shape.kernel_h && shape.pad_bottom < shape.kernel_h);
  assert(shape.pad_left < shape.kernel_w && shape.pad_right < shape.kernel_w);
  // Every window covers an input pixel: the last one starts before the input ends.
  assert(shape.out_height > 0 &&
         (shape.out_height - 1) * shape.stride_h < shape.in_height + shape.pad_top);
  assert(shape.out_width > 0 &&
         (shape.out_width - 1) * shape.stride_w < shape.in_width + shape.pad_left);
  assert(y_begin <= y_end && y_end <= shape.out_height);

  const std::size_t channels = shape.channels;
  for (std::size_t oy = y_begin; oy < y_end; ++oy) {
    const PoolSpan rows = avgpool2d_span(oy, shape.in_height, shape.pad_top, shape.pad_bottom,
                                         shape.kernel_h, shape.stride_h, shape.count_include_pad);
    for (std::size_t ox = 0; ox < shape.out_width; ++ox) {
      const PoolSpan cols = avgpool2d_span(ox, shape.in_width, shape.pad_left, shape.pad_right,
                                           shape.kernel_w, shape.stride_w, shape.count_include_pad);
      const float divisor = static_cast<float>(rows.divisor * cols.divisor);
      float* out_px = out + (oy * shape.out_width + ox) * channels;
      for (std::size_t c = 0; c < channels; ++c) {
        float sum = 0.0f;  // docs/format.md, AVGPOOL2D: this order in every variant
        for (std::size_t y = rows.begin; y < rows.end; ++y) {
          for (std::size_t x = cols.begin; x < cols.end; ++x) {
            sum += in[(y * shape.in_width + x) * channels + c];
          }
        }
        out_px[c] = sum / divisor;
      }
    }
  }
}

void avgpool2d_f32_nhwc__reference(const AvgPool2DShape& shape, const float* in, float* out) {
  avgpool2d_f32_nhwc_rows__reference(shape, in, 0, shape.out_height, out);
}

}  // namespace qbinfer
