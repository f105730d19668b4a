// Portable oracle for the binary convolution: one output pixel and one output channel at a
// time, taps in [ky][kx] order, the channel words of a tap in order. No tiling, no
// border/interior split: a tap outside the image is decided per tap, which is slow but
// leaves nothing to get wrong at the borders. Faster variants are tested bit-exact
// against it.
#include <cassert>
#include <cstdint>
#include <limits>

#include "kernels/bconv/bconv.h"

#if defined(__GNUC__) || defined(__clang__)
#define QBINFER_POPCOUNT64(x) __builtin_popcountll(x)
#else
#include <bitset>
#define QBINFER_POPCOUNT64(x) std::bitset<64>(x).count()
#endif

namespace qbinfer {
namespace {

static_assert(sizeof(unsigned long long) == sizeof(BitWord),
              "__builtin_popcountll must see the whole word");

// Number of -1 bits among the words of one pixel row: both rows have tail bits 0, so
// XOR leaves the tail empty and no mask is needed (bit_contract.h).
int popcount_xor(const BitWord* a, const BitWord* w, std::size_t words) {
  int count = 0;
  for (std::size_t i = 0; i < words; ++i) {
    count += static_cast<int>(QBINFER_POPCOUNT64(a[i] ^ w[i]));
  }
  return count;
}

int popcount_row(const BitWord* w, std::size_t words) {
  int count = 0;
  for (std::size_t i = 0; i < words; ++i) {
    count += static_cast<int>(QBINFER_POPCOUNT64(w[i]));
  }
  return count;
}

}  // namespace

void bconv2d_nhwc__reference(const BConvShape& shape, const BitWord* in, const BitWord* weight,
                             const float* scale, const float* bias, float* out) {
  bconv2d_nhwc_rows__reference(shape, in, weight, scale, bias, 0, shape.height, out);
}

void bconv2d_nhwc_rows__reference(const BConvShape& shape, const BitWord* in, const BitWord* weight,
                                  const float* scale, const float* bias, std::size_t y_begin,
                                  std::size_t y_end, float* out) {
  assert(y_begin <= y_end && y_end <= shape.height);
  assert(shape.kernel == 1 || shape.kernel == 3);
  assert(shape.in_channels > 0 && shape.out_channels > 0);
  assert(shape.padding == BinaryPadding::kZero || shape.padding == BinaryPadding::kOne);
  // |dot| <= k*k*Ci must fit the int32 accumulator every variant uses.
  assert(shape.kernel * shape.kernel * shape.in_channels <=
         static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()));

  const std::size_t words = words_for_channels(shape.in_channels);
  const int channels = static_cast<int>(shape.in_channels);
  const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(shape.height);
  const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(shape.width);
  const std::ptrdiff_t k = static_cast<std::ptrdiff_t>(shape.kernel);
  const std::ptrdiff_t pad = k / 2;
  const bool one_padding = shape.padding == BinaryPadding::kOne;

  for (std::ptrdiff_t y = static_cast<std::ptrdiff_t>(y_begin);
       y < static_cast<std::ptrdiff_t>(y_end); ++y) {
    for (std::ptrdiff_t x = 0; x < width; ++x) {
      float* out_px = out + (y * width + x) * static_cast<std::ptrdiff_t>(shape.out_channels);
      for (std::size_t o = 0; o < shape.out_channels; ++o) {
        const BitWord* w_o = weight + o * static_cast<std::size_t>(k * k) * words;
        std::int32_t dot = 0;
        for (std::ptrdiff_t ky = 0; ky < k; ++ky) {
          for (std::ptrdiff_t kx = 0; kx < k; ++kx) {
            const BitWord* w_tap = w_o + static_cast<std::size_t>(ky * k + kx) * words;
            const std::ptrdiff_t iy = y + ky - pad;
            const std::ptrdiff_t ix = x + kx - pad;
            if (iy < 0 || iy >= height || ix < 0 || ix >= width) {
              // A +1 pad packs to all-zero bits, so its dot with the tap is the tap's own
              // weight sum; a zero pad contributes nothing.
              if (one_padding) dot += channels - 2 * popcount_row(w_tap, words);
              continue;
            }
            const BitWord* a = in + static_cast<std::size_t>(iy * width + ix) * words;
            dot += channels - 2 * popcount_xor(a, w_tap, words);
          }
        }
        // The contract is a rounded multiply, then a rounded add. Two statements, because
        // clang's default -ffp-contract=on fuses a*b+c within one expression into an FMA
        // on targets that have one (GCC in ISO mode, as built here, does not fuse).
        const float scaled = static_cast<float>(dot) * scale[o];
        out_px[o] = scaled + bias[o];
      }
    }
  }
}

void bconv2d_general_rows__reference(const BConvGeneralShape& shape, const BitWord* in,
                                     const BitWord* weight, const float* scale, const float* bias,
                                     std::size_t y_begin, std::size_t y_end, float* out) {
  assert(y_begin <= y_end && y_end <= shape.out_height);
  assert(shape.kernel_h > 0 && shape.kernel_w > 0 && shape.stride_h > 0 && shape.stride_w > 0);
  assert(shape.in_channels > 0 && shape.out_channels > 0);
  assert(shape.padding == BinaryPadding::kZero || shape.padding == BinaryPadding::kOne);
  assert(shape.kernel_h * shape.kernel_w * shape.in_channels <=
         static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()));

  const std::size_t words = words_for_channels(shape.in_channels);
  const int channels = static_cast<int>(shape.in_channels);
  const std::ptrdiff_t height = static_cast<std::ptrdiff_t>(shape.height);
  const std::ptrdiff_t width = static_cast<std::ptrdiff_t>(shape.width);
  const std::ptrdiff_t kh = static_cast<std::ptrdiff_t>(shape.kernel_h);
  const std::ptrdiff_t kw = static_cast<std::ptrdiff_t>(shape.kernel_w);
  const std::ptrdiff_t sh = static_cast<std::ptrdiff_t>(shape.stride_h);
  const std::ptrdiff_t sw = static_cast<std::ptrdiff_t>(shape.stride_w);
  const std::ptrdiff_t pt = static_cast<std::ptrdiff_t>(shape.pad_top);
  const std::ptrdiff_t pl = static_cast<std::ptrdiff_t>(shape.pad_left);
  const std::size_t out_width = shape.out_width;
  const bool one_padding = shape.padding == BinaryPadding::kOne;

  for (std::size_t y = y_begin; y < y_end; ++y) {
    for (std::size_t x = 0; x < out_width; ++x) {
      float* out_px = out + (y * out_width + x) * shape.out_channels;
      const std::ptrdiff_t iy0 = static_cast<std::ptrdiff_t>(y) * sh - pt;
      const std::ptrdiff_t ix0 = static_cast<std::ptrdiff_t>(x) * sw - pl;
      for (std::size_t o = 0; o < shape.out_channels; ++o) {
        const BitWord* w_o = weight + o * static_cast<std::size_t>(kh * kw) * words;
        std::int32_t dot = 0;
        for (std::ptrdiff_t ky = 0; ky < kh; ++ky) {
          for (std::ptrdiff_t kx = 0; kx < kw; ++kx) {
            const BitWord* w_tap = w_o + static_cast<std::size_t>(ky * kw + kx) * words;
            const std::ptrdiff_t iy = iy0 + ky;
            const std::ptrdiff_t ix = ix0 + kx;
            if (iy < 0 || iy >= height || ix < 0 || ix >= width) {
              if (one_padding) dot += channels - 2 * popcount_row(w_tap, words);
              continue;
            }
            const BitWord* a = in + static_cast<std::size_t>(iy * width + ix) * words;
            dot += channels - 2 * popcount_xor(a, w_tap, words);
          }
        }
        const float scaled = static_cast<float>(dot) * scale[o];  // no FMA: see above
        out_px[o] = scaled + bias[o];
      }
    }
  }
}

}  // namespace qbinfer
