// The fused epilogue: the element-wise tail of a DS or B half, applied to rows of a kernel's
// output while they are still in cache, so no float tensor makes an extra pass through memory.
//
// For output value v at pixel p (0-based within the image) and channel c of `channels`, the
// steps run in this fixed order, each only when its pointer is non-null (0a: when relu is set):
//   0a. v = v < 0 ? 0 : v                                        (ReLU, exactly the RELU op:
//                                      -0.0f stays -0.0f, NaN stays NaN)
//   0b. v = v * pre_scale[c] + pre_bias[c]                       (an affine before everything
//                                      else, e.g. QuickNet's BN after its ReLU; both or none)
//   1. v = v * channel_scale[c]                                  (SE scaling)
//   2. v = v + residual[p * residual_channels + c % residual_channels]
//                                     (the shortcut; residual_channels < channels repeats it,
//                                      block j of the output reading channel c -
//                                      j*residual_channels)
//   3. v = v * mid_scale[c] + mid_bias[c]                        (an affine between the
//                                      shortcut and the PReLU, e.g. ReActNet's learnable
//                                      bias; both or none)
//   4. v = v >= 0 ? v : prelu_slope[c] * v                       (PReLU)
//   5. v = v * post_scale[c] + post_bias[c]                      (BN after PReLU; both or none)
//   5b. v = v < clip_lo ? clip_lo : (v > clip_hi ? clip_hi : v)   (CLIP, e.g. ReLU6, when clip
//                                      is set: exactly the CLIP op, both tests on v, NaN stays
//                                      NaN; clip_lo <= clip_hi, neither NaN, either may be
//                                      infinite)
//   6. out[p * channels + c] = v                                 (unless write_float is false)
//   7. bits: bit c of pixel p in bits[p * words_for_channels(channels) + c / 64] is
//      !(v >= threshold[c])                                      (bit contract; tail bits 0)
// Each step is one IEEE operation in f32 in this order (no FMA: -ffp-contract=off), so every
// ISA variant gives bit-identical floats and bits. (A NaN stays NaN through every step; which
// NaN payload comes out is not part of the contract.)
#pragma once

#include <cstddef>

#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {

struct Epilogue {
  bool relu = false;
  const float* pre_scale = nullptr;
  const float* pre_bias = nullptr;
  const float* channel_scale = nullptr;
  const float* residual = nullptr;
  std::size_t residual_channels = 0;  // with residual: > 0 and divides `channels`
  const float* mid_scale = nullptr;
  const float* mid_bias = nullptr;
  const float* prelu_slope = nullptr;
  const float* post_scale = nullptr;
  const float* post_bias = nullptr;
  bool write_float = true;
  const float* threshold = nullptr;
  BitWord* bits = nullptr;  // with threshold: the image's bit rows (base of pixel 0)
  bool clip = false;        // step 5b
  float clip_lo = 0.0f, clip_hi = 0.0f;
};

// Applies `ep` to pixels [pixel_begin, pixel_end) of an image whose kernel output (before the
// epilogue) is in `out` (pixels * channels floats, NHWC, base of pixel 0); writes the results in
// place. Pixel indices are absolute: residual and bits are read/written at pixel p's position.
// Writes only pixels [pixel_begin, pixel_end) of out and of bits (every word of those pixels,
// tail bits 0); reads nothing outside them. Pure, so disjoint ranges may run concurrently.
void epilogue_rows__reference(const Epilogue& ep, std::size_t channels, std::size_t pixel_begin,
                              std::size_t pixel_end, float* out);

// One ISA's epilogue; `rows` has the contract of epilogue_rows__reference and is bit-identical
// to it (floats and bits).
struct EpilogueKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  void (*rows)(const Epilogue& ep, std::size_t channels, std::size_t pixel_begin,
               std::size_t pixel_end, float* out);
};

// The epilogue of `isa` if this build has it and this CPU runs it, else nullptr. kScalar is
// always there (the reference).
const EpilogueKernels* epilogue_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const EpilogueKernels* const* epilogue_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const EpilogueKernels* const* epilogue_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
