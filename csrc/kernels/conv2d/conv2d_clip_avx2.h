// The CLIP select on 8 lanes (v < lo ? lo : (v > hi ? hi : v), both tests on v: ordered
// compares are false for NaN, so NaN passes through), as the CLIP op's avx2 kernel does it
// (elementwise_avx2.cc), for the dense conv's fused CONV2D -> CLIP. Include only from files
// compiled with -mavx2 (conv2d_avx2.cc, conv2d_avx512.cc).
#pragma once

#include <immintrin.h>

namespace qbinfer {
namespace {

struct Conv2DClipAvx2 {
  static __m256 apply(__m256 v, __m256 lo, __m256 hi) {
    const __m256 upper = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(upper, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
  }
};

}  // namespace
}  // namespace qbinfer
