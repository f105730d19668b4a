// Portable oracles for the element-wise and per-channel kernels: one value at a time,
// each output element depending only on the same input element, so out == in is safe.
#include <cassert>
#include <cmath>

#include "kernels/elementwise/elementwise.h"

namespace qbinfer {

void affine_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                           const float* scale, const float* bias, float* out) {
  assert(channels > 0);
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t c = 0; c < channels; ++c) {
      const std::size_t i = p * channels + c;
      // Rounded multiply, then rounded add (one per statement, so no FMA under clang).
      const float scaled = in[i] * scale[c];
      out[i] = scaled + bias[c];
    }
  }
}

void prelu_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                          const float* slope, float* out) {
  assert(channels > 0);
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t c = 0; c < channels; ++c) {
      const std::size_t i = p * channels + c;
      const float v = in[i];
      // NaN takes the slope branch and stays NaN, as torch's prelu gives.
      out[i] = v >= 0.0f ? v : slope[c] * v;
    }
  }
}

void relu_f32__reference(const float* in, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    // Not std::max(in, 0): NaN must propagate, as torch.relu does.
    out[i] = in[i] < 0.0f ? 0.0f : in[i];
  }
}

void sigmoid_f32__reference(const float* in, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    // exp overflows to inf for very negative inputs, giving exactly 0: no special case.
    out[i] = 1.0f / (1.0f + std::exp(-in[i]));
  }
}

void add_f32__reference(const float* a, const float* b, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void mul_channel_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                                const float* s, float* out) {
  assert(channels > 0);
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t c = 0; c < channels; ++c) {
      out[p * channels + c] = in[p * channels + c] * s[c];
    }
  }
}

void clip_f32__reference(const float* in, std::size_t n, float lo, float hi, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    // Not std::clamp: NaN must pass through, and the two tests are on the input itself.
    const float v = in[i];
    out[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

// Two passes over the row after the maximum; it reads x_c before writing out_c at every step,
// so out == in is safe. No multiply anywhere: nothing a compiler could contract into an FMA.
void softmax_f32__reference(const float* in, std::size_t pixels, std::size_t channels,
                            bool log_softmax, float* out) {
  assert(channels > 0);
  for (std::size_t p = 0; p < pixels; ++p) {
    const float* x = in + p * channels;
    float* y = out + p * channels;
    // Not std::max: a NaN must win and then stay (NaN > m and m > NaN are both false).
    float m = x[0];
    for (std::size_t c = 1; c < channels; ++c) {
      if (x[c] > m || std::isnan(x[c])) m = x[c];
    }
    // Subtracting the maximum keeps every exp in (0, 1]: no overflow, and s >= 1 unless the
    // row is NaN. The double sum is exact to well below float precision for any row length.
    double sum = 0.0;
    for (std::size_t c = 0; c < channels; ++c) {
      const float e = std::exp(x[c] - m);
      sum += static_cast<double>(e);
      if (!log_softmax) y[c] = e;
    }
    const float s = static_cast<float>(sum);
    if (log_softmax) {
      const float log_s = std::log(s);
      for (std::size_t c = 0; c < channels; ++c) y[c] = (x[c] - m) - log_s;
    } else {
      for (std::size_t c = 0; c < channels; ++c) y[c] = y[c] / s;
    }
  }
}

}  // namespace qbinfer
