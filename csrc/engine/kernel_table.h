// The engine calls microkernels only through these tables: one struct of function pointers
// per kernel family, resolved once per process. Today every entry is the portable
// reference kernel; an ISA-specific kernel (AVX2, AVX-512, NEON) becomes one more
// candidate in the family's selector in kernel_table.cc, and no op changes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/bconv/bconv.h"
#include "kernels/bitpack/bitpack.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/fc/fc.h"
#include "kernels/pool/pool.h"

namespace qbinfer {

struct BitpackKernels {
  const char* isa;
  decltype(&bitpack_f32_nhwc__reference) f32_nhwc;
};

struct BConvKernels {
  const char* isa;
  decltype(&bconv2d_nhwc__reference) nhwc;
};

struct Conv2DKernels {
  const char* isa;
  decltype(&conv2d_f32_nhwc__reference) f32_nhwc;
};

struct DWConvKernels {
  const char* isa;
  decltype(&dwconv3x3_f32_nhwc__reference) f32_nhwc;
  decltype(&dwconv_input_absmax__reference) input_absmax;
  decltype(&dwconv3x3_qs8_nhwc__reference) qs8_nhwc;
};

struct ElementwiseKernels {
  const char* isa;
  decltype(&affine_f32__reference) affine;
  decltype(&prelu_f32__reference) prelu;
  decltype(&relu_f32__reference) relu;
  decltype(&sigmoid_f32__reference) sigmoid;
  decltype(&add_f32__reference) add;
  decltype(&mul_channel_f32__reference) mul_channel;
};

struct FCKernels {
  const char* isa;
  decltype(&fc_f32__reference) f32;
  decltype(&fc_qs8__reference) qs8;
  decltype(&fc_bitplane8__reference) bitplane8;
};

struct PoolKernels {
  const char* isa;
  decltype(&avgpool_f32_nhwc__reference) avgpool;
  decltype(&global_avgpool_f32_nhwc__reference) global_avgpool;
  decltype(&concat_channels_f32__reference) concat;
};

struct KernelTable {
  BitpackKernels bitpack;
  BConvKernels bconv;
  Conv2DKernels conv2d;
  DWConvKernels dwconv;
  ElementwiseKernels elementwise;
  FCKernels fc;
  PoolKernels pool;
};

// The portable kernels, always available (the oracle the others are tested against).
const KernelTable& reference_kernel_table();

// The best kernels this CPU runs, chosen on first call (thread-safe) and fixed after.
const KernelTable& selected_kernel_table();

}  // namespace qbinfer
