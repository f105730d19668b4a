// Binary conv for AVX-512 F/BW without VPOPCNTDQ (Skylake-SP, Cascade Lake): the kernels of
// bconv_simd_inl.h with zmm vectors, four pixels per weight load:
//   bconv2d_32oc_16bit_4px__avx512   32 output channels per zmm (16-bit lanes), the default;
//   bconv2d_16oc_32bit_4px__avx512   16 per zmm (32-bit lanes) when Co <= 16 or k*k*Ci > 65535;
//   bconv2d_3x3_16oc_9tap__avx512    3x3 with 16 < Ci <= 32;
//   bconv2d_3x3_16oc_5pair__avx512   3x3 with Ci <= 16 (two taps per 32-bit lane).
// The per-lane popcount is Harley-Seal: blocks of 16 XORed vectors go through carry-save
// adders (2 VPTERNLOGD each, no register copy: see csa) into 4 bit planes; only a block's carry
// (weight 16) is counted at once, with the nibble table (VPSHUFB) into bytes, widened into the
// lanes with VPMADDUBSW (+ VPMADDWD for 32-bit lanes). About 3 instructions per 512 XORed
// bits, versus 8 for a table count of every vector. Four pixels' adder state (4 planes, 3
// accumulators each) does not fit the 32 zmm registers with the carries in flight, but the
// independent chains hide more latency than the spills cost: measured on Cascade Lake, 4
// pixels beat 2 by 5-8% on 1x1 convs and 5 or 6 lose again.
#include "kernels/simd/avx512_gcc12_warnings.h"  // first: see there
#include <immintrin.h>

#include "kernels/bconv/bconv_avx512_common_inl.h"
#include "kernels/bconv/bconv_simd_inl.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

struct Avx512 : Avx512Common {
  static constexpr int kPixels = 4;
  static constexpr int kMaxLg = 4;
  static constexpr int kLongStreamLg = 5;  // 32-vector blocks on long streams
  static constexpr bool kHas16BitLanes = true;
  template <int N, int LB>
  using Counter = HsCounter<Avx512, N, LB>;

  static QBINFER_INLINE V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  static QBINFER_INLINE V and_(V a, V b) { return _mm512_and_si512(a, b); }
  static QBINFER_INLINE V add8(V a, V b) { return _mm512_add_epi8(a, b); }
  static QBINFER_INLINE V add16(V a, V b) { return _mm512_add_epi16(a, b); }
  static QBINFER_INLINE V low16(V a) { return _mm512_and_si512(a, _mm512_set1_epi32(0xffff)); }
  static QBINFER_INLINE V high16(V a) { return _mm512_srli_epi32(a, 16); }

  // Carry-save adder: (sum, carry) = (p ^ a ^ b, majority(p, a, b)), in two VPTERNLOGD and no
  // register copy. VPTERNLOGD overwrites its first source; p (a bit plane) lives on while a
  // and b die here, so the sum overwrites b, and the carry, recovered from (a, p, sum) as
  // a == p ? a : ~sum, overwrites a. (Computing both from (p, a, b) needs a copy of one
  // input, which this CPU does not eliminate at rename: a third uop per adder.)
  static QBINFER_INLINE void csa(V p, V a, V b, V& sum, V& carry) {
    sum = _mm512_ternarylogic_epi32(b, a, p, 0x96);
    carry = _mm512_ternarylogic_epi32(a, p, sum, 0xD4);
  }

  // Per-byte popcount times `weight` (<= 8), via the nibble table.
  static QBINFER_INLINE V byte_count(V x, int weight) {
    const V table = _mm512_set4_epi32(nibble_table_dword(weight, 3), nibble_table_dword(weight, 2),
                                      nibble_table_dword(weight, 1), nibble_table_dword(weight, 0));
    const V nib = _mm512_set1_epi8(0x0f);
    const V lo = _mm512_and_si512(x, nib);
    const V hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), nib);
    return _mm512_add_epi8(_mm512_shuffle_epi8(table, lo), _mm512_shuffle_epi8(table, hi));
  }
  // Unsigned bytes (each <= 255) times `weight` (<= 16) summed into 16-bit or 32-bit lanes.
  static QBINFER_INLINE V widen16(V bytes, int weight) {
    return _mm512_maddubs_epi16(bytes, _mm512_set1_epi8(static_cast<char>(weight)));
  }
  static QBINFER_INLINE V widen32(V bytes, int weight) {
    return _mm512_madd_epi16(widen16(bytes, weight), _mm512_set1_epi16(1));
  }
  static QBINFER_INLINE V count9(const V* x) { return count9_tree<Avx512>(x); }
  static QBINFER_INLINE V count5(const V* x) { return count5_tree<Avx512>(x); }

  // 16-bit chunk q of word w -> both halves of dst[4w + q], for `words` words.
  static QBINFER_INLINE void replicate16(const BitWord* src, std::size_t words,
                                         std::uint32_t* dst) {
    std::size_t w = 0;
    for (; w + 4 <= words; w += 4) {
      const V d =
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + w)));
      _mm512_storeu_si512(dst + 4 * w, _mm512_or_si512(d, _mm512_slli_epi32(d, 16)));
    }
    for (; w < words; ++w) {
      const __m128i d = _mm_cvtepu16_epi32(_mm_cvtsi64_si128(static_cast<long long>(src[w])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * w),
                       _mm_or_si128(d, _mm_slli_epi32(d, 16)));
    }
  }
};

using Kernel = BConv<Avx512>;

}  // namespace

const BConvKernels kBConvKernels__avx512{"avx512", &Kernel::packed_weight_bytes,
                                         &Kernel::pack_weight, &Kernel::run_rows};

}  // namespace qbinfer
