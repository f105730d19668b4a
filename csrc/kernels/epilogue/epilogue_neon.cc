// The neon fused epilogue: epilogue_simd.h instantiated with VecNeon (4 channels per vector),
// whole words of bits packed by neon_pack.h. Bit-identical to epilogue_rows__reference (floats
// and bits).
#include "kernels/simd/vec_neon.h"
#include "kernels/simd/neon_pack.h"
#include "kernels/epilogue/epilogue_simd.h"
#include "kernels/epilogue/epilogue_variants.h"

namespace qbinfer {

using EpilogueC4__neon = EpilogueSimd<VecNeonWordPack>;

const EpilogueKernels kEpilogueKernels__neon{"neon", &EpilogueC4__neon::rows};

}  // namespace qbinfer
