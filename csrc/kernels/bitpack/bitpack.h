// Bitpacking microkernels: float NHWC rows -> packed sign bits (see bit_contract.h).
//
// Every variant has the same contract, so tests and dispatch can treat them alike:
//   x           pixels * channels floats, channels innermost, contiguous.
//   channels    > 0.
//   thresholds  `channels` floats, or nullptr for all-zero thresholds (plain sign).
//   out         pixels * words_for_channels(channels) words, fully written: every
//               tail bit is 0 and nothing outside that range is touched.
// Microkernels compute and assert; shape and dtype validation belongs to the caller.
#pragma once

#include <cstddef>

#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {

// Portable C++ oracle: one value at a time, no SIMD assumptions. Faster variants are
// tested bit-exact against it.
void bitpack_f32_nhwc__reference(const float* x, std::size_t pixels, std::size_t channels,
                                 const float* thresholds, BitWord* out);

// One ISA's bitpacking; f32_nhwc has the contract above and is bit-identical to the reference.
struct BitpackKernels {
  const char* isa;  // "scalar", "avx2", "avx512", ...
  void (*f32_nhwc)(const float* x, std::size_t pixels, std::size_t channels,
                   const float* thresholds, BitWord* out);
};

// The bitpacking of `isa` if this build has it and this CPU runs it, else nullptr. kScalar is
// always there (the reference).
const BitpackKernels* bitpack_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const BitpackKernels* const* bitpack_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const BitpackKernels* const* bitpack_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
