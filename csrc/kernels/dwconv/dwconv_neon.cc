// The neon depthwise 3x3 kernels: dwconv_simd.h instantiated with VecNeon (4 channels per
// vector, 4 output pixels per step at stride_w 1, 3 at stride_w 2). The INT8 conv multiplies
// int32 lanes (MUL + ADD): it runs on every AArch64 core, the Cortex-A72 (no SDOT) included;
// dwconv_neon_dotprod.cc has the SDOT conv for cores that have it. Bit-identical to the
// reference (dwconv.h).
#include "kernels/simd/vec_neon.h"
#include "kernels/dwconv/dwconv_simd.h"
#include "kernels/dwconv/dwconv_variants.h"

namespace qbinfer {

using DWConv3x3C4__neon = DWConvSimd<VecNeon>;

const DWConvKernels kDWConvKernels__neon{
    "neon",
    &DWConv3x3C4__neon::packed_f32_bytes,
    &DWConv3x3C4__neon::pack_f32,
    &DWConv3x3C4__neon::run_rows_f32,
    &DWConv3x3C4__neon::input_absmax,
    &DWConv3x3C4__neon::quantize_input,
    &DWConv3x3C4__neon::packed_qs8_bytes,
    &DWConv3x3C4__neon::pack_qs8,
    &DWConv3x3C4__neon::run_rows_qs8,
};

}  // namespace qbinfer
