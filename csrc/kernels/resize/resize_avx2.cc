// The avx2 RESIZE: resize_simd.h with VecAvx2 (8 channels per vector). Bit-identical to the
// reference (resize.h). The AVX-512 entry runs this code too (resize_variants.h).
#include "kernels/simd/vec_avx2.h"
#include "kernels/resize/resize_simd.h"
#include "kernels/resize/resize_variants.h"

namespace qbinfer {

void resize_rows__avx2(const ResizeShape& shape, const float* in, std::size_t y_begin,
                       std::size_t y_end, float* out) {
  ResizeSimd<VecAvx2>::run_rows(shape, in, y_begin, y_end, out);
}

const ResizeKernels kResizeKernels__avx2{"avx2", &resize_rows__avx2};

}  // namespace qbinfer
