// Binary conv for AVX2 (Haswell and newer): the kernels of bconv_simd_inl.h with ymm vectors,
// two pixels per weight load:
//   bconv2d_16oc_16bit_2px__avx2   16 output channels per ymm (16-bit lanes), the default;
//   bconv2d_8oc_32bit_2px__avx2    8 per ymm (32-bit lanes) when Co <= 8 or k*k*Ci > 65535;
//   bconv2d_3x3_8oc_9tap__avx2     3x3 with 16 < Ci <= 32 (BConv::run_rows_small3x3: rows
//                                  outer, byte counts widened once; 486 -> ~410 us on
//                                  ReActNet-A's 112x112 32 -> 32, one Zen 3 core);
//   bconv2d_3x3_8oc_5pair__avx2    3x3 with Ci <= 16 (two taps per 32-bit lane);
//   the narrow 1x1 (Ci <= 256)     8 per ymm, weights in registers, one count per unit.
// The per-lane popcount is Harley-Seal as in the AVX-512 variant, but without VPTERNLOG a
// carry-save adder costs 5 instructions (one shared XOR), so blocks stop at 8 vectors (3
// planes); carries are counted with the nibble table (VPSHUFB). Two pixels' adder state
// (12 vectors) overflows the 16 ymm registers a little; the spills cost less than a second
// pass over the weights (measured: +5-9% over one pixel at a time).
#include <immintrin.h>

#include "kernels/bconv/bconv_simd_inl.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

struct Avx2 {
  using V = __m256i;
  static constexpr std::size_t kLanes = 8;
  static constexpr int kPixels = 2;
  static constexpr int kMaxLg = 3;
  static constexpr int kLongStreamLg = 0;  // one block size for every stream
  static constexpr bool kHas16BitLanes = true;
  static constexpr bool kNarrow1x1 = true;     // 1x1 over <= 256 channels: run_rows_narrow1x1
  static constexpr bool kSmall3x3Rows = true;  // 3x3 over 17..32 channels: run_rows_small3x3
  template <int N, int LB>
  using Counter = HsCounter<Avx2, N, LB>;

  static QBINFER_INLINE V zero() { return _mm256_setzero_si256(); }
  static QBINFER_INLINE V load(const void* p) {
    return _mm256_load_si256(static_cast<const V*>(p));
  }
  static QBINFER_INLINE V set32(std::int32_t v) { return _mm256_set1_epi32(v); }
  static QBINFER_INLINE V xor_bcast(V w, const std::uint32_t* a) {
    return _mm256_xor_si256(w, _mm256_set1_epi32(static_cast<int>(*a)));
  }
  static QBINFER_INLINE V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static QBINFER_INLINE V and_(V a, V b) { return _mm256_and_si256(a, b); }
  static QBINFER_INLINE V add8(V a, V b) { return _mm256_add_epi8(a, b); }
  static QBINFER_INLINE V add16(V a, V b) { return _mm256_add_epi16(a, b); }
  static QBINFER_INLINE V add32(V a, V b) { return _mm256_add_epi32(a, b); }
  static QBINFER_INLINE V sub32(V a, V b) { return _mm256_sub_epi32(a, b); }
  static QBINFER_INLINE V low16(V a) { return _mm256_and_si256(a, _mm256_set1_epi32(0xffff)); }
  static QBINFER_INLINE V high16(V a) { return _mm256_srli_epi32(a, 16); }

  static QBINFER_INLINE void csa(V a, V b, V c, V& sum, V& carry) {
    const V u = _mm256_xor_si256(a, b);
    sum = _mm256_xor_si256(u, c);
    carry = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u, c));
  }

  static QBINFER_INLINE V byte_count(V x, int weight) {
    const V table = _mm256_setr_epi32(nibble_table_dword(weight, 0), nibble_table_dword(weight, 1),
                                      nibble_table_dword(weight, 2), nibble_table_dword(weight, 3),
                                      nibble_table_dword(weight, 0), nibble_table_dword(weight, 1),
                                      nibble_table_dword(weight, 2), nibble_table_dword(weight, 3));
    const V nib = _mm256_set1_epi8(0x0f);
    const V lo = _mm256_and_si256(x, nib);
    const V hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), nib);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
  }
  static QBINFER_INLINE V widen16(V bytes, int weight) {
    return _mm256_maddubs_epi16(bytes, _mm256_set1_epi8(static_cast<char>(weight)));
  }
  static QBINFER_INLINE V widen32(V bytes, int weight) {
    return _mm256_madd_epi16(widen16(bytes, weight), _mm256_set1_epi16(1));
  }
  static QBINFER_INLINE V count9(const V* x) { return count9_tree<Avx2>(x); }
  static QBINFER_INLINE V count5(const V* x) { return count5_tree<Avx2>(x); }

  static QBINFER_INLINE void replicate16(const BitWord* src, std::size_t words,
                                         std::uint32_t* dst) {
    std::size_t w = 0;
    for (; w + 2 <= words; w += 2) {
      const V d = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + w)));
      _mm256_storeu_si256(reinterpret_cast<V*>(dst + 4 * w),
                          _mm256_or_si256(d, _mm256_slli_epi32(d, 16)));
    }
    for (; w < words; ++w) {
      const __m128i d = _mm_cvtepu16_epi32(_mm_cvtsi64_si128(static_cast<long long>(src[w])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * w),
                       _mm_or_si128(d, _mm_slli_epi32(d, 16)));
    }
  }

  static QBINFER_INLINE void epilogue(V dot, const float* scale, const float* bias, float* out,
                                      std::size_t n) {
    const __m256 f = _mm256_cvtepi32_ps(dot);
    if (n == kLanes) {
      // Two statements: the contract is a rounded multiply, then a rounded add.
      const __m256 scaled = _mm256_mul_ps(f, _mm256_loadu_ps(scale));
      _mm256_storeu_ps(out, _mm256_add_ps(scaled, _mm256_loadu_ps(bias)));
    } else {
      const V idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const V m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
      const __m256 scaled = _mm256_mul_ps(f, _mm256_maskload_ps(scale, m));
      _mm256_maskstore_ps(out, m, _mm256_add_ps(scaled, _mm256_maskload_ps(bias, m)));
    }
  }
};

using Kernel = BConv<Avx2>;

}  // namespace

const BConvKernels kBConvKernels__avx2{"avx2", &Kernel::packed_weight_bytes, &Kernel::pack_weight,
                                       &Kernel::run_rows};

const BConvGeneralKernels kBConvGeneralKernels__avx2{"avx2", &Kernel::general_packed_weight_bytes,
                                                     &Kernel::general_pack_weight,
                                                     &Kernel::general_run_rows};
// AVX-512 CPUs run these AVX2 kernels (no AVX-512 general kernel yet; they cannot be tested on
// the machine this was written on): the same functions under the ISA's name.
const BConvGeneralKernels kBConvGeneralKernels__avx512{
    "avx512", &Kernel::general_packed_weight_bytes, &Kernel::general_pack_weight,
    &Kernel::general_run_rows};

}  // namespace qbinfer
