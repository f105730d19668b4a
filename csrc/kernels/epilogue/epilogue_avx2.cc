// The avx2 fused epilogue: epilogue_simd.h instantiated with VecAvx2 (8 channels per vector).
// Bit-identical to epilogue_rows__reference (floats and bits).
#include "kernels/simd/vec_avx2.h"
#include "kernels/epilogue/epilogue_simd.h"
#include "kernels/epilogue/epilogue_variants.h"

namespace qbinfer {

using EpilogueC8__avx2 = EpilogueSimd<VecAvx2>;

const EpilogueKernels kEpilogueKernels__avx2{"avx2", &EpilogueC8__avx2::rows};

}  // namespace qbinfer
