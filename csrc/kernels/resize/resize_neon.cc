// The neon RESIZE (AArch64, and ARMv7 through neon_compat.h as vec_neon.h is): resize_simd.h
// with VecNeon (4 channels per vector). Bit-identical to the reference (resize.h).
#include "kernels/simd/vec_neon.h"
#include "kernels/resize/resize_simd.h"
#include "kernels/resize/resize_variants.h"

namespace qbinfer {

const ResizeKernels kResizeKernels__neon{"neon", &ResizeSimd<VecNeon>::run_rows};

}  // namespace qbinfer
