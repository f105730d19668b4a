// The avx2 depthwise 3x3 kernels: dwconv_simd.h instantiated with VecAvx2
// (8 channels per vector). Bit-identical to the reference (dwconv.h).
#include "kernels/simd/vec_avx2.h"
#include "kernels/dwconv/dwconv_simd.h"
#include "kernels/dwconv/dwconv_variants.h"

namespace qbinfer {

using DWConv3x3C8__avx2 = DWConvSimd<VecAvx2>;

const DWConvKernels kDWConvKernels__avx2{
    "avx2",
    &DWConv3x3C8__avx2::packed_f32_bytes,
    &DWConv3x3C8__avx2::pack_f32,
    &DWConv3x3C8__avx2::run_rows_f32,
    &DWConv3x3C8__avx2::input_absmax,
    &DWConv3x3C8__avx2::quantize_input,
    &DWConv3x3C8__avx2::packed_qs8_bytes,
    &DWConv3x3C8__avx2::pack_qs8,
    &DWConv3x3C8__avx2::run_rows_qs8,
};

}  // namespace qbinfer
