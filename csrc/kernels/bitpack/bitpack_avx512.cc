// Bitpacking for AVX-512 F, 16 channels per block (bitpack_blocks_inl.h). One VCMPPS (GE, ordered,
// quiet) per 16 channels gives the "x >= t" mask directly; the bit is its complement. Ordered
// compares are false for NaN on either side and IEEE compares -0.0 >= 0.0 true, which is
// exactly pack_bit (bit_contract.h). A channel tail uses masked loads (nothing past the row is
// read) and the complement is masked to the valid channels, so tail bits stay 0.
#include "kernels/simd/avx512_gcc12_warnings.h"  // first: see there
#include <immintrin.h>

#include <cstdint>

#include "kernels/bitpack/bitpack_blocks_inl.h"
#include "kernels/bitpack/bitpack_variants.h"

namespace qbinfer {
namespace {

// Bits for channels [0, n) of one 16-channel block, n in 1..16.
inline std::uint64_t pack16(const float* x, const float* t, unsigned n) {
  const auto valid = static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1);
  const __m512 xv = _mm512_maskz_loadu_ps(valid, x);
  const __m512 tv = t != nullptr ? _mm512_maskz_loadu_ps(valid, t) : _mm512_setzero_ps();
  const __mmask16 ge = _mm512_cmp_ps_mask(xv, tv, _CMP_GE_OQ);
  return static_cast<std::uint64_t>(static_cast<unsigned>(~ge & valid) & 0xffffu);
}

}  // namespace

const BitpackKernels kBitpackKernels__avx512{"avx512", &bitpack_f32_nhwc_blocks<16, &pack16>};

}  // namespace qbinfer
