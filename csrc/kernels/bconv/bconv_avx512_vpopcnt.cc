// Binary conv for AVX-512 with VPOPCNTDQ (Ice Lake, Sapphire Rapids, Zen 4): the kernels of
// bconv_simd_inl.h with zmm vectors and 32-bit lanes only (VPOPCNTD counts 32-bit lanes; 16-bit
// lanes would need BITALG's VPOPCNTW):
//   bconv2d_16oc_32bit_2px__avx512_vpopcnt, bconv2d_3x3_16oc_9tap__avx512_vpopcnt,
//   bconv2d_3x3_16oc_5pair__avx512_vpopcnt.
// Each XORed vector is counted with VPOPCNTD straight into the lanes (3 instructions per 512
// bits, nothing to flush). Deliberately the simplest counter: it is selected only on CPUs that
// have the instruction, which the machines this project is tested on may lack, so everything
// else (layout, streams, borders, epilogue) is shared with the tested avx512 variant.
#include "kernels/simd/avx512_gcc12_warnings.h"  // first: see there
#include <immintrin.h>

#include "kernels/bconv/bconv_avx512_common_inl.h"
#include "kernels/bconv/bconv_simd_inl.h"
#include "kernels/bconv/bconv_variants.h"

namespace qbinfer {
namespace {

struct Avx512Vpopcnt : Avx512Common {
  static constexpr int kPixels = 2;
  static constexpr int kMaxLg = 0;
  static constexpr int kLongStreamLg = 0;  // counts with VPOPCNTD: no adder blocks
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

  // Only for the (unused) 16-bit path, which kHas16BitLanes = false never takes.
  static QBINFER_INLINE V low16(V a) { return a; }
  static QBINFER_INLINE V high16(V a) { return a; }
  static QBINFER_INLINE void replicate16(const BitWord*, std::size_t, std::uint32_t*) {}

  template <int K>
  static QBINFER_INLINE V popcount_sum(const V* x) {
    V c = _mm512_popcnt_epi32(x[0]);
    for (int i = 1; i < K; ++i) c = _mm512_add_epi32(c, _mm512_popcnt_epi32(x[i]));
    return c;
  }
  static QBINFER_INLINE V count9(const V* x) { return popcount_sum<9>(x); }
  static QBINFER_INLINE V count5(const V* x) { return popcount_sum<5>(x); }
};

using Kernel = BConv<Avx512Vpopcnt>;

}  // namespace

const BConvKernels kBConvKernels__avx512_vpopcnt{"avx512_vpopcnt", &Kernel::packed_weight_bytes,
                                                 &Kernel::pack_weight, &Kernel::run_rows};

}  // namespace qbinfer
