// Binary conv for AVX-512 with VPOPCNTDQ (Ice Lake, Sapphire Rapids, Zen 4): the kernels of
// bconv_simd_inl.h with zmm vectors and 32-bit lanes only (VPOPCNTD counts 32-bit lanes; 16-bit
// lanes would need BITALG's VPOPCNTW):
//   bconv2d_16oc_32bit_2px__avx512_vpopcnt, bconv2d_3x3_16oc_9tap__avx512_vpopcnt,
//   bconv2d_3x3_16oc_5pair__avx512_vpopcnt.
// Each XORed vector is counted with VPOPCNTD straight into the lanes (3 instructions per 512
// bits, nothing to flush). Deliberately the simplest counter: it is selected only on CPUs that
// have the instruction, which the machines this project is tested on may lack, so everything
// else (layout, streams, borders, epilogue) is shared with the tested avx512 variant.
// GCC 12 reports the _mm512_undefined_* source inside many AVX-512 intrinsics as "(may be)
// used uninitialized" (GCC bug 105593, fixed in 13); the pragmas must precede the header to
// reach the inlined header code.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "kernels/bconv/bconv_simd_inl.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

struct Avx512Vpopcnt {
  using V = __m512i;
  static constexpr std::size_t kLanes = 16;
  static constexpr int kPixels = 2;
  static constexpr int kMaxLg = 0;
  static constexpr bool kHas16BitLanes = false;

  template <int N, int LB>
  struct Counter {
    static_assert(LB == 32, "VPOPCNTD counts 32-bit lanes");
    V acc[N];
    QBINFER_INLINE Counter() {
      for (V& a : acc) a = _mm512_setzero_si512();
    }
    template <class Fetch>
    QBINFER_INLINE void add_stream(Fetch& fetch, std::size_t count) {
      for (std::size_t i = 0; i < count; ++i) {
        V x[N];
        fetch(x);
        for (int n = 0; n < N; ++n) acc[n] = _mm512_add_epi32(acc[n], _mm512_popcnt_epi32(x[n]));
      }
    }
    QBINFER_INLINE void total(V (&count)[N]) const {
      for (int n = 0; n < N; ++n) count[n] = acc[n];
    }
  };

  static QBINFER_INLINE V zero() { return _mm512_setzero_si512(); }
  static QBINFER_INLINE V load(const void* p) { return _mm512_load_si512(p); }
  static QBINFER_INLINE V set32(std::int32_t v) { return _mm512_set1_epi32(v); }
  static QBINFER_INLINE V xor_bcast(V w, const std::uint32_t* a) {
    return _mm512_xor_si512(w, _mm512_set1_epi32(static_cast<int>(*a)));
  }
  static QBINFER_INLINE V add32(V a, V b) { return _mm512_add_epi32(a, b); }
  static QBINFER_INLINE V sub32(V a, V b) { return _mm512_sub_epi32(a, b); }
  // Only for the (unused) 16-bit path, which kHas16BitLanes = false never takes.
  static QBINFER_INLINE V low16(V a) { return a; }
  static QBINFER_INLINE V high16(V a) { return a; }
  static QBINFER_INLINE void replicate16(const BitWord*, std::size_t, std::uint32_t*) {}

  static QBINFER_INLINE V count9(const V* x) {
    V c = _mm512_popcnt_epi32(x[0]);
    for (int i = 1; i < 9; ++i) c = _mm512_add_epi32(c, _mm512_popcnt_epi32(x[i]));
    return c;
  }
  static QBINFER_INLINE V count5(const V* x) {
    V c = _mm512_popcnt_epi32(x[0]);
    for (int i = 1; i < 5; ++i) c = _mm512_add_epi32(c, _mm512_popcnt_epi32(x[i]));
    return c;
  }

  static QBINFER_INLINE void epilogue(V dot, const float* scale, const float* bias, float* out, std::size_t n) {
    const __m512 f = _mm512_cvtepi32_ps(dot);
    const auto m = static_cast<__mmask16>(n == kLanes ? 0xffffu : (1u << n) - 1);
    // Two statements: the contract is a rounded multiply, then a rounded add.
    const __m512 scaled = _mm512_mul_ps(f, _mm512_maskz_loadu_ps(m, scale));
    _mm512_mask_storeu_ps(out, m, _mm512_add_ps(scaled, _mm512_maskz_loadu_ps(m, bias)));
  }
};

using Kernel = BConv<Avx512Vpopcnt>;

}  // namespace

const BConvKernels kBConvKernels__avx512_vpopcnt{"avx512_vpopcnt", &Kernel::packed_weight_bytes,
                                                 &Kernel::pack_weight, &Kernel::run_rows};

}  // namespace qbinfer
