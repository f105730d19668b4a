// The avx512 fused epilogue: epilogue_simd.h instantiated with VecAvx512 (16 channels per vector).
// Bit-identical to epilogue_rows__reference (floats and bits).
#include "kernels/simd/vec_avx512.h"
#include "kernels/epilogue/epilogue_simd.h"
#include "kernels/epilogue/epilogue_variants.h"

namespace qbinfer {

using EpilogueC16__avx512 = EpilogueSimd<VecAvx512>;

const EpilogueKernels kEpilogueKernels__avx512{"avx512", &EpilogueC16__avx512::rows};

}  // namespace qbinfer
