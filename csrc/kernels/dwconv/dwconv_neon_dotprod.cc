// The neon depthwise 3x3 kernels for cores with the dot-product extension (ARMv8.2 DotProd:
// Cortex-A55/A76 and newer; compiled with -march=armv8.2-a+dotprod and selected only when
// HWCAP says ASIMDDP). The f32 conv, absmax and quantization are dwconv_simd.h with VecNeon, as
// in dwconv_neon.cc; the INT8 conv is dwconv3x3_qs8_16c_sdot__neon_dotprod below.
//
// INT8 with SDOT. SDOT adds, per int32 lane, the dot of four int8 pairs. A lane is one channel
// and its four bytes are the three taps of one kernel column (rows y-1, y, y+1) plus a zero: a
// "column vector" of input column x holds, for 4 channels, the bytes (in[y-1][x][c],
// in[y][x][c], in[y+1][x][c], 0). Built once per input column for 16 channels (3 loads, 8 ZIPs:
// rows 0 and 1 interleaved bytewise, row 2 with zeros, then the two interleaved 16-bit-wise) and
// shared by the up to three output pixels whose windows contain that column; each output pixel
// is then 3 SDOT per 4 channels (one per kernel column) against weights packed the same way:
// [multiplier][16-channel block][kx][channel][w(0,kx), w(1,kx), w(2,kx), 0].
// Registers: the sliding window of three columns (12 q), the block's 12 weight vectors and 4
// accumulators take 28 of the 32 q registers; the dequantization factors (12 vectors) are
// reloaded from L1 per pixel, off the SDOT chains.
// Borders: a row or column in the padding is a zero vector (code 0 adds exactly 0). Channel
// tails (< 16) load and store through zeroed stack buffers: nothing outside the image is read
// or written. The integer sums are exact and the dequantization is the reference's expression,
// lane by lane, so the results are bit-identical to it.
#include <arm_neon.h>

#if !defined(__ARM_FEATURE_DOTPROD)
#error "dwconv_neon_dotprod.cc needs -march=armv8.2-a+dotprod"
#endif

#include <cassert>
#include <cstdint>
#include <cstring>

#include "kernels/simd/vec_neon.h"
#include "kernels/dwconv/dwconv_simd.h"
#include "kernels/dwconv/dwconv_variants.h"

namespace qbinfer {
namespace {

struct DWConv3x3QS8C16Sdot {
  static constexpr std::size_t kBlock = 16;  // channels per block
  static constexpr std::size_t kBlockBytes = 3 * kBlock * 4;

  static std::size_t blocks(const DWConvShape& s) { return (s.channels + kBlock - 1) / kBlock; }

  static std::size_t packed_qs8_bytes(const DWConvShape& s) {
    return (s.multiplier * blocks(s) * kBlockBytes + 63) / 64 * 64;
  }

  static void pack_qs8(const DWConvShape& s, const std::int8_t* weight, void* packed) {
    std::memset(packed, 0, packed_qs8_bytes(s));
    auto* p = static_cast<std::int8_t*>(packed);
    for (std::size_t j = 0; j < s.multiplier; ++j) {
      for (std::size_t c = 0; c < s.channels; ++c) {
        std::int8_t* block = p + (j * blocks(s) + c / kBlock) * kBlockBytes;
        for (std::size_t kx = 0; kx < 3; ++kx) {
          for (std::size_t ky = 0; ky < 3; ++ky) {
            block[(kx * kBlock + c % kBlock) * 4 + ky] =
                weight[(j * s.channels + c) * 9 + ky * 3 + kx];
          }
        }
      }
    }
  }

  struct Column {
    int8x16_t g[4];  // channels 4i..4i+3, four bytes each
  };

  // The column vectors of input column x (nullptr rows are padding), channels [c0, c0 + n).
  static Column column(const std::int8_t* const* rows, std::size_t x, std::size_t channels,
                       std::size_t n) {
    int8x16_t r[3];
    for (std::size_t k = 0; k < 3; ++k) {
      if (rows[k] == nullptr) {
        r[k] = vdupq_n_s8(0);
      } else if (n == kBlock) {
        r[k] = vld1q_s8(rows[k] + x * channels);
      } else {
        std::int8_t buf[kBlock] = {};
        std::memcpy(buf, rows[k] + x * channels, n);
        r[k] = vld1q_s8(buf);
      }
    }
    const int8x16_t zero = vdupq_n_s8(0);
    const int16x8_t a_lo = vreinterpretq_s16_s8(vzip1q_s8(r[0], r[1]));
    const int16x8_t a_hi = vreinterpretq_s16_s8(vzip2q_s8(r[0], r[1]));
    const int16x8_t b_lo = vreinterpretq_s16_s8(vzip1q_s8(r[2], zero));
    const int16x8_t b_hi = vreinterpretq_s16_s8(vzip2q_s8(r[2], zero));
    Column c;
    c.g[0] = vreinterpretq_s8_s16(vzip1q_s16(a_lo, b_lo));
    c.g[1] = vreinterpretq_s8_s16(vzip2q_s16(a_lo, b_lo));
    c.g[2] = vreinterpretq_s8_s16(vzip1q_s16(a_hi, b_hi));
    c.g[3] = vreinterpretq_s8_s16(vzip2q_s16(a_hi, b_hi));
    return c;
  }

  static Column zero_column() {
    Column c;
    for (auto& v : c.g) v = vdupq_n_s8(0);
    return c;
  }

  // One output row of one 16-channel block and multiplier j, stride_w SW.
  template <std::size_t SW>
  static void row_block(const DWConvShape& s, const std::int8_t* const* rows, const std::int8_t* w,
                        std::size_t n, const float* requant, const float* scale, const float* bias,
                        float* out, std::size_t out_stride) {
    int8x16_t wv[3][4];
    for (std::size_t kx = 0; kx < 3; ++kx) {
      for (std::size_t g = 0; g < 4; ++g) wv[kx][g] = vld1q_s8(w + (kx * kBlock + 4 * g) * 4);
    }
    float32x4_t rq[4], sc[4], bi[4];
    for (std::size_t g = 0; g < 4; ++g) {
      rq[g] = vld1q_f32(requant + 4 * g);
      sc[g] = vld1q_f32(scale + 4 * g);
      bi[g] = vld1q_f32(bias + 4 * g);
    }
    const std::size_t width = s.in_width;
    auto col_at = [&](std::size_t x) {
      return x < width ? column(rows, x, s.channels, n) : zero_column();
    };
    // Window around centre column cx = ox * SW: left (cx - 1), mid, right (cx + 1).
    Column left = zero_column(), mid = col_at(0), right = col_at(1);
    for (std::size_t ox = 0; ox < s.out_width; ++ox) {
      float32x4_t y[4];
      for (std::size_t g = 0; g < 4; ++g) {
        int32x4_t acc = vdotq_s32(vdupq_n_s32(0), left.g[g], wv[0][g]);
        acc = vdotq_s32(acc, mid.g[g], wv[1][g]);
        acc = vdotq_s32(acc, right.g[g], wv[2][g]);
        // The reference's dequantization, one rounded operation at a time (never FMLA).
        const float32x4_t dequant = vmulq_f32(vcvtq_f32_s32(acc), rq[g]);
        y[g] = vaddq_f32(vmulq_f32(dequant, sc[g]), bi[g]);
      }
      float* o = out + ox * out_stride;
      if (n == kBlock) {
        for (std::size_t g = 0; g < 4; ++g) vst1q_f32(o + 4 * g, y[g]);
      } else {
        float buf[kBlock];
        for (std::size_t g = 0; g < 4; ++g) vst1q_f32(buf + 4 * g, y[g]);
        std::memcpy(o, buf, n * sizeof(float));
      }
      const std::size_t cx = (ox + 1) * SW;  // the next centre
      if constexpr (SW == 1) {
        left = mid;
        mid = right;
        right = col_at(cx + 1);
      } else {
        left = right;
        mid = col_at(cx);
        right = col_at(cx + 1);
      }
    }
  }

  static void run_rows_qs8(const DWConvShape& s, const std::int8_t* q_in, const void* packed,
                           const float* weight_scale, float input_scale, const float* scale,
                           const float* bias, std::size_t y_begin, std::size_t y_end, float* out) {
    assert(y_begin <= y_end && y_end <= s.out_height);
    assert(input_scale > 0.0f);
    const auto* w = static_cast<const std::int8_t*>(packed);
    const std::size_t row_elems = s.in_width * s.channels;
    const std::size_t out_stride = s.multiplier * s.channels;
    const std::size_t nb = blocks(s);
    for (std::size_t oy = y_begin; oy < y_end; ++oy) {
      const std::size_t cy = oy * s.stride_h;
      const std::int8_t* rows[3] = {cy >= 1 ? q_in + (cy - 1) * row_elems : nullptr,
                                    q_in + cy * row_elems,
                                    cy + 1 < s.in_height ? q_in + (cy + 1) * row_elems : nullptr};
      float* out_row = out + oy * s.out_width * out_stride;
      for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t c0 = b * kBlock;
        const std::size_t n = s.channels - c0 < kBlock ? s.channels - c0 : kBlock;
        const std::int8_t* brows[3] = {rows[0] != nullptr ? rows[0] + c0 : nullptr, rows[1] + c0,
                                       rows[2] != nullptr ? rows[2] + c0 : nullptr};
        for (std::size_t j = 0; j < s.multiplier; ++j) {
          const std::size_t o = j * s.channels + c0;
          // Per-channel factors of the block, zero-padded (tail lanes are never stored).
          float requant[kBlock] = {}, sc[kBlock] = {}, bi[kBlock] = {};
          for (std::size_t i = 0; i < n; ++i) {
            requant[i] = input_scale * weight_scale[o + i];
            sc[i] = scale[o + i];
            bi[i] = bias[o + i];
          }
          const std::int8_t* wb = w + (j * nb + b) * kBlockBytes;
          if (s.stride_w == 1) {
            row_block<1>(s, brows, wb, n, requant, sc, bi, out_row + o, out_stride);
          } else {
            row_block<2>(s, brows, wb, n, requant, sc, bi, out_row + o, out_stride);
          }
        }
      }
    }
  }
};

using DWConv3x3C4__neon_dotprod = DWConvSimd<VecNeon>;
using DWConv3x3QS8C16Sdot__neon_dotprod = DWConv3x3QS8C16Sdot;

}  // namespace

const DWConvKernels kDWConvKernels__neon_dotprod{
    "neon_dotprod",
    &DWConv3x3C4__neon_dotprod::packed_f32_bytes,
    &DWConv3x3C4__neon_dotprod::pack_f32,
    &DWConv3x3C4__neon_dotprod::run_rows_f32,
    &DWConv3x3C4__neon_dotprod::input_absmax,
    &DWConv3x3C4__neon_dotprod::quantize_input,
    &DWConv3x3QS8C16Sdot__neon_dotprod::packed_qs8_bytes,
    &DWConv3x3QS8C16Sdot__neon_dotprod::pack_qs8,
    &DWConv3x3QS8C16Sdot__neon_dotprod::run_rows_qs8,
};

}  // namespace qbinfer
