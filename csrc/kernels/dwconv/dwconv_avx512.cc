// The avx512 depthwise 3x3 kernels: dwconv_simd.h instantiated with VecAvx512
// (16 channels per vector). Bit-identical to the reference (dwconv.h).
#include "kernels/simd/vec_avx512.h"
#include "kernels/dwconv/dwconv_simd.h"
#include "kernels/dwconv/dwconv_variants.h"

namespace qbinfer {

using DWConv3x3C16__avx512 = DWConvSimd<VecAvx512>;

const DWConvKernels kDWConvKernels__avx512{
    "avx512",
    &DWConv3x3C16__avx512::packed_f32_bytes,
    &DWConv3x3C16__avx512::pack_f32,
    &DWConv3x3C16__avx512::run_rows_f32,
    &DWConv3x3C16__avx512::input_absmax,
    &DWConv3x3C16__avx512::quantize_input,
    &DWConv3x3C16__avx512::packed_qs8_bytes,
    &DWConv3x3C16__avx512::pack_qs8,
    &DWConv3x3C16__avx512::run_rows_qs8,
};

}  // namespace qbinfer
