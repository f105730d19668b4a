// The neon dense conv: pointwise shapes (1x1, unpadded) through conv2d_pointwise_gemm.h with
// VecNeon, 6 pixels x 16 output channels on AArch64 (24 accumulators + 4 weights + a broadcast
// of its 32 q registers) and 4 pixels x 8 channels on ARMv7 (8 + 2 + 1 of its 16); every other
// shape through conv2d_tiled_simd.h (tiles of 2 blocks of 4 output channels times 6 output
// pixels, edge pixels 8 blocks at a time). Bit-identical to the reference (tested under qemu;
// not timed on ARM hardware).
#include "kernels/simd/vec_neon.h"
#include "kernels/conv2d/conv2d_pointwise_gemm.h"
#include "kernels/conv2d/conv2d_tiled_simd.h"
#include "kernels/conv2d/conv2d_variants.h"

#include <cstddef>
#include <utility>

namespace qbinfer {
namespace {

// The CLIP select (v < lo ? lo : (v > hi ? hi : v), both tests on v; NaN compares false and
// passes through), for the fused CONV2D -> CLIP.
struct Conv2DClipNeon {
  static float32x4_t apply(float32x4_t v, float32x4_t lo, float32x4_t hi) {
    const float32x4_t upper = vbslq_f32(vcgtq_f32(v, hi), hi, v);
    return vbslq_f32(vcltq_f32(v, lo), lo, upper);
  }
};

#if defined(__aarch64__) || defined(_M_ARM64)
// One kernel row of a tile with compile-time taps (the stems: conv2d_tiled_simd.h's RowTaps),
// AArch64 only (FMLA by element). The row's P pixels read kSpan consecutive floats; they are
// loaded once as kVecs vectors, and every product takes its input as a lane of one of them, so
// a tap costs its B weight loads and B x P FMLAs, no broadcast load per pixel (the generic
// tile's LD1R per pixel and tap made the A72's single load port the bound: 8 loads per 12
// FMLAs). Each accumulator still adds its taps in order t = 0, 1, ... as one fused multiply-add
// each, as the generic loop and the reference do: bit-identical.
struct Conv2DRowLanesNeon {
  template <std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static constexpr std::size_t kSpan = (P - 1) * kStep + kRowTaps;
  template <std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static constexpr std::size_t kVecs = (kSpan<P, kRowTaps, kStep> + 3) / 4;

  // Inputs, B x P accumulators and B weights must fit the 32 vector registers with room to
  // spare (no spills): the 3x3 stride-2 stem (10 + 12 + 2); not the 7x7 one (13 + 12 + 2).
  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static constexpr bool kTakes = kRowTaps != 0 && kStep != 0 && kSpan<P, kRowTaps, kStep> >= 4 &&
                                 kVecs<P, kRowTaps, kStep> + B * P + B <= 24;

  // acc += w * element e of the row (x: the row's vectors; the last one ends at the row's last
  // float, so that no load reads past it: it overlaps the one before when kSpan % 4 != 0).
  template <std::size_t kSpanF, std::size_t kVecsF, std::size_t e>
  static float32x4_t fma_element(float32x4_t acc, float32x4_t w, const float32x4_t* x) {
    if constexpr (e < 4 * (kVecsF - 1)) {
      return vfmaq_laneq_f32(acc, w, x[e / 4], e % 4);
    } else {
      return vfmaq_laneq_f32(acc, w, x[kVecsF - 1], e - (kSpanF - 4));
    }
  }

  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep, std::size_t t,
            std::size_t... p>
  static void tap(const float* w, std::size_t cop, const float32x4_t* x, float32x4_t (&acc)[B][P],
                  std::index_sequence<p...>) {
    constexpr std::size_t span = kSpan<P, kRowTaps, kStep>;
    constexpr std::size_t vecs = kVecs<P, kRowTaps, kStep>;
    for (std::size_t b = 0; b < B; ++b) {
      const float32x4_t wv = vld1q_f32(w + t * cop + b * 4);
      ((acc[b][p] = fma_element<span, vecs, p * kStep + t>(acc[b][p], wv, x)), ...);
    }
  }

  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep, std::size_t... t>
  static void taps(const float* w, std::size_t cop, const float32x4_t* x, float32x4_t (&acc)[B][P],
                   std::index_sequence<t...>) {
    (tap<B, P, kRowTaps, kStep, t>(w, cop, x, acc, std::make_index_sequence<P>()), ...);
  }

  template <std::size_t B, std::size_t P, std::size_t kRowTaps, std::size_t kStep>
  static void row(const float* a, const float* w, std::size_t cop, float32x4_t (&acc)[B][P]) {
    constexpr std::size_t span = kSpan<P, kRowTaps, kStep>;
    constexpr std::size_t vecs = kVecs<P, kRowTaps, kStep>;
    float32x4_t x[vecs];
    for (std::size_t k = 0; k + 1 < vecs; ++k) x[k] = vld1q_f32(a + 4 * k);
    x[vecs - 1] = vld1q_f32(a + span - 4);
    taps<B, P, kRowTaps, kStep>(w, cop, x, acc, std::make_index_sequence<kRowTaps>());
  }
};
using Conv2DRowTaps__neon = Conv2DRowLanesNeon;
#else
using Conv2DRowTaps__neon = void;  // ARMv7: no FMLA by element in IEEE mode; the generic loop
#endif

}  // namespace

#if defined(__aarch64__) || defined(_M_ARM64)
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 4, 6, Conv2DClipNeon>;
#else
using Conv2DPointwise__neon = Conv2DPointwiseGemm<VecNeon, 2, 4, Conv2DClipNeon>;
#endif
using Conv2DF32__neon = Conv2DWithPointwise<Conv2DPointwise__neon,
                                            Conv2DTiledSimd<VecNeon, 2, 6, 8, Conv2DRowTaps__neon>,
                                            VecNeon, Conv2DClipNeon>;

const Conv2DKernels kConv2DKernels__neon{"neon", &Conv2DF32__neon::packed_bytes,
                                         &Conv2DF32__neon::pack, &Conv2DF32__neon::run_rows,
                                         &Conv2DF32__neon::run_rows_clip};

}  // namespace qbinfer
