// Binary convolution microkernels (XNOR-popcount), NHWC, stride 1, 'same' output size.
//
// Contract shared by every variant (tests and dispatch treat them alike):
//   in      height * width * words_for_channels(in_channels) words (bit contract).
//   weight  out_channels * kernel * kernel * words_for_channels(in_channels) words,
//           [o][ky][kx][word], packed like the activations (tail bits 0).
//   out     height * width * out_channels floats:
//           out[p][o] = float(dot[p][o]) * scale[o] + bias[o]
//   dot is the exact integer sum over taps and channels of a * w (each ±1). For kernel 3,
//   a tap outside the image contributes 0 (kZero, PyTorch's zero padding) or +1 * w
//   (kOne). kernel 1 has no padding.
// dot is computed exactly in integers; the float epilogue is one multiply and one add in
// that order, so every variant gives bit-identical floats.
#pragma once

#include <cstddef>

#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {

enum class BinaryPadding : int { kZero = 0, kOne = 1 };

struct BConvShape {
  std::size_t height;
  std::size_t width;
  std::size_t in_channels;
  std::size_t out_channels;
  std::size_t kernel;  // 1 or 3
  BinaryPadding padding;
};

void bconv2d_nhwc__reference(const BConvShape& shape, const BitWord* in, const BitWord* weight,
                             const float* scale, const float* bias, float* out);

// The same oracle over output rows [y_begin, y_end) only (taps still read rows y-1 and y+1).
void bconv2d_nhwc_rows__reference(const BConvShape& shape, const BitWord* in, const BitWord* weight,
                                  const float* scale, const float* bias, std::size_t y_begin,
                                  std::size_t y_end, float* out);

// One ISA's binary conv, as the engine uses it: weights are repacked once at load into the
// layout that ISA's kernels want, then any split of the output rows runs, from any threads.
//
//   packed_weight_bytes(shape)   size of the packed blob (a multiple of 64, > 0).
//   pack_weight(shape, weight, packed)
//                                weight in the file layout [Co][k][k][words] (tail bits 0);
//                                packed is packed_weight_bytes(shape) bytes, 64-byte aligned.
//                                The blob may hold more than the weights (e.g. the zero-padding
//                                correction), so it depends on the whole shape, padding included,
//                                except height: one blob serves every input size.
//   run_rows(shape, in, packed, scale, bias, y_begin, y_end, out)
//                                writes output rows [y_begin, y_end) (0 <= y_begin <= y_end <=
//                                height) of the image: in and out are the whole image's bases
//                                (in: height*width*words words; out: height*width*Co floats), and
//                                only out[y_begin*width*Co, y_end*width*Co) is written. Reads
//                                input rows y_begin-1 .. y_end (clipped to the image) and nothing
//                                past the image. Pure: no state, no allocation, so disjoint row
//                                ranges may run concurrently. Bit-identical to the reference.
struct BConvKernels {
  const char* isa;  // "scalar", "avx2", "avx512", "avx512_vpopcnt", ...
  std::size_t (*packed_weight_bytes)(const BConvShape& shape);
  void (*pack_weight)(const BConvShape& shape, const BitWord* weight, void* packed);
  void (*run_rows)(const BConvShape& shape, const BitWord* in, const void* packed,
                   const float* scale, const float* bias, std::size_t y_begin, std::size_t y_end,
                   float* out);
};

// The best binary conv of `isa` that this build has and this CPU runs (for kAvx512, the
// VPOPCNTDQ variant when the CPU has it), or nullptr. kScalar is always there: the reference
// kernel with the file layout as its packed layout (pack_weight copies).
const BConvKernels* bconv_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const BConvKernels* const* bconv_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const BConvKernels* const* bconv_compiled_kernel_variants(std::size_t* count);

// ------------------------------------------------------------------ general binary conv
// Any kernel, stride and padding (BCONV2D_GENERAL): PyTorch's conv output size,
//   out_height = (height + pad_top + pad_bottom - kernel_h) / stride_h + 1 (and width),
// given here directly (pad_bottom / pad_right only decide it). A tap at an input position
// outside the image is in the padding: it contributes 0 (kZero) or +1 * w (kOne). The dot is
// an int32 (kernel_h * kernel_w * in_channels <= 2^31 - 1); out as for BConvShape.
//   weight  out_channels * kernel_h * kernel_w * words_for_channels(in_channels) words,
//           [o][ky][kx][word], the file layout.
struct BConvGeneralShape {
  std::size_t height;
  std::size_t width;
  std::size_t in_channels;
  std::size_t out_channels;
  std::size_t kernel_h;
  std::size_t kernel_w;
  std::size_t stride_h;
  std::size_t stride_w;
  std::size_t pad_top;
  std::size_t pad_left;
  std::size_t out_height;
  std::size_t out_width;
  BinaryPadding padding;
};

// The oracle over output rows [y_begin, y_end) of the out_height x out_width output.
void bconv2d_general_rows__reference(const BConvGeneralShape& shape, const BitWord* in,
                                     const BitWord* weight, const float* scale, const float* bias,
                                     std::size_t y_begin, std::size_t y_end, float* out);

// One ISA's general binary conv, used like BConvKernels: weights packed once at load
// (packed_weight_bytes(shape), a multiple of 64 and > 0; unlike BConvKernels the blob may
// depend on the whole shape, heights included, since which path runs does), then run_rows writes
// output rows [y_begin, y_end) of out (the whole output's base, out_height * out_width *
// out_channels floats), reading only the input rows those outputs' taps cover. Pure, so disjoint
// row ranges may run concurrently. Bit-identical to the reference. A variant may have a fast path
// for some shapes only (e.g. 3x3 stride 2) and run the reference for the rest.
struct BConvGeneralKernels {
  const char* isa;
  std::size_t (*packed_weight_bytes)(const BConvGeneralShape& shape);
  void (*pack_weight)(const BConvGeneralShape& shape, const BitWord* weight, void* packed);
  void (*run_rows)(const BConvGeneralShape& shape, const BitWord* in, const void* packed,
                   const float* scale, const float* bias, std::size_t y_begin, std::size_t y_end,
                   float* out);
};

// As bconv_kernels_for / bconv_kernel_variants / bconv_compiled_kernel_variants.
const BConvGeneralKernels* bconv_general_kernels_for(Isa isa);
const BConvGeneralKernels* const* bconv_general_kernel_variants(std::size_t* count);
const BConvGeneralKernels* const* bconv_general_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
