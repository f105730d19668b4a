#include "engine/kernel_table.h"

namespace qbinfer {
namespace {

constexpr const char* kReference = "reference";

// One selector per family. Each will try its ISA candidates best first (CPUID/XGETBV or
// HWCAP, then a QBINFER_ISA override) and fall back to the reference entry.
BitpackKernels select_bitpack() { return reference_kernel_table().bitpack; }
BConvKernels select_bconv() { return reference_kernel_table().bconv; }
Conv2DKernels select_conv2d() { return reference_kernel_table().conv2d; }
DWConvKernels select_dwconv() { return reference_kernel_table().dwconv; }
ElementwiseKernels select_elementwise() { return reference_kernel_table().elementwise; }
FCKernels select_fc() { return reference_kernel_table().fc; }
PoolKernels select_pool() { return reference_kernel_table().pool; }

}  // namespace

const KernelTable& reference_kernel_table() {
  static const KernelTable table{
      {kReference, &bitpack_f32_nhwc__reference},
      {kReference, &bconv2d_nhwc__reference},
      {kReference, &conv2d_f32_nhwc__reference},
      {kReference, &dwconv3x3_f32_nhwc__reference, &dwconv_input_absmax__reference,
       &dwconv3x3_qs8_nhwc__reference},
      {kReference, &affine_f32__reference, &prelu_f32__reference, &relu_f32__reference,
       &sigmoid_f32__reference, &add_f32__reference, &mul_channel_f32__reference},
      {kReference, &fc_f32__reference, &fc_qs8__reference, &fc_bitplane8__reference},
      {kReference, &avgpool_f32_nhwc__reference, &global_avgpool_f32_nhwc__reference,
       &concat_channels_f32__reference},
  };
  return table;
}

const KernelTable& selected_kernel_table() {
  static const KernelTable table{select_bitpack(), select_bconv(),       select_conv2d(),
                                 select_dwconv(),  select_elementwise(), select_fc(),
                                 select_pool()};
  return table;
}

}  // namespace qbinfer
