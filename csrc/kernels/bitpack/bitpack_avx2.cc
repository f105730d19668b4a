// Bitpacking for AVX2, 8 channels per block (bitpack_blocks_inl.h). One VCMPPS (GE, ordered, quiet)
// per 8 channels and VMOVMSKPS give the "x >= t" bits; the packed bit is their complement. Ordered
// compares are false for NaN on either side and IEEE compares -0.0 >= 0.0 true, which is
// exactly pack_bit (bit_contract.h). A channel tail uses VMASKMOVPS loads (masked-off lanes
// are not read, so nothing past the row is touched) and the complement is masked to the
// valid channels, so tail bits stay 0.
#include <immintrin.h>

#include <cstdint>

#include "kernels/bitpack/bitpack_blocks_inl.h"
#include "kernels/bitpack/bitpack_variants.h"

namespace qbinfer {
namespace {

// Bits for channels [0, n) of one 8-channel block, n in 1..8.
inline std::uint64_t pack8(const float* x, const float* t, unsigned n) {
  __m256 xv, tv;
  unsigned valid;
  if (n >= 8) {
    valid = 0xffu;
    xv = _mm256_loadu_ps(x);
    tv = t != nullptr ? _mm256_loadu_ps(t) : _mm256_setzero_ps();
  } else {
    valid = (1u << n) - 1;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
    xv = _mm256_maskload_ps(x, m);
    tv = t != nullptr ? _mm256_maskload_ps(t, m) : _mm256_setzero_ps();
  }
  const auto ge = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(xv, tv, _CMP_GE_OQ)));
  return ~ge & valid;
}

}  // namespace

const BitpackKernels kBitpackKernels__avx2{"avx2", &bitpack_f32_nhwc_blocks<8, &pack8>};

}  // namespace qbinfer
