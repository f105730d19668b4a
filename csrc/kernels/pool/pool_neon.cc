// The neon pooling kernels: pool_simd.h instantiated with VecNeon (4 channels per vector).
// Bit-identical to the references.
#include "kernels/simd/vec_neon.h"
#include "kernels/pool/pool_simd.h"
#include "kernels/pool/pool_variants.h"

namespace qbinfer {

namespace {
// FDIV is ~30 cycles on a Cortex-A72, and ARMv7 divides lane by lane on VFP (neon_compat.h):
// the average pools multiply by an exact reciprocal where they can (pool_simd.h, DividesSlowly).
struct VecNeonPool : VecNeon {
  static constexpr bool kSlowDivide = true;
};
}  // namespace

using AvgPoolC4__neon = PoolSimd<VecNeonPool>;

namespace {

// v replaces acc where v > acc, or where v is NaN (v != v) and acc is not: the reference's
// rule, lane by lane.
float32x4_t max_nan_first_step(float32x4_t acc, float32x4_t v) {
  const uint32x4_t v_nan = vmvnq_u32(vceqq_f32(v, v));
  const uint32x4_t take = vorrq_u32(vcgtq_f32(v, acc), vandq_u32(v_nan, vceqq_f32(acc, acc)));
  return vbslq_f32(take, v, acc);
}

void maxpool_rows__neon(const MaxPoolShape& s, const float* in, std::size_t y_begin,
                        std::size_t y_end, float* out) {
  AvgPoolC4__neon::maxpool_rows(s, in, y_begin, y_end, out,
                                [](auto acc, auto v) { return max_nan_first_step(acc, v); });
}

void maxpool__neon(const MaxPoolShape& s, const float* in, float* out) {
  maxpool_rows__neon(s, in, 0, s.out_height, out);
}

void avgpool2d__neon(const AvgPool2DShape& s, const float* in, float* out) {
  AvgPoolC4__neon::avgpool2d(s, in, out);
}

void avgpool2d_rows__neon(const AvgPool2DShape& s, const float* in, std::size_t y_begin,
                          std::size_t y_end, float* out) {
  AvgPoolC4__neon::avgpool2d_rows(s, in, y_begin, y_end, out);
}

}  // namespace

const PoolKernels kPoolKernels__neon{
    "neon",
    &AvgPoolC4__neon::avgpool,
    &AvgPoolC4__neon::global_avgpool,
    &AvgPoolC4__neon::avgpool_rows,
    &maxpool__neon,
    &maxpool_rows__neon,
    &avgpool2d__neon,
    &avgpool2d_rows__neon,
};

}  // namespace qbinfer
