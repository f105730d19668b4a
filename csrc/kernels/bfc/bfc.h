// Binary fully connected (BinaryNet's hidden layers): bits x bits, XNOR-popcount.
//
// Contract shared by every variant (tests and dispatch treat them alike):
//   in      words_for_channels(in_channels) words: one packed pixel (bit contract: bit 1 = -1,
//           tail bits 0), the output of a BITPACK of shape (1, 1, C).
//   weight  out_features * words_for_channels(in_channels) words, row o = output o, packed
//           like the activations (tail bits 0). The file layout: no repacking.
//   out     out_features floats: out[o] = float(dot[o]) * scale[o] + bias[o], with
//           dot[o] = in_channels - 2 * popcount(in XOR weight[o]) the exact integer ±1 dot
//           (an int32: in_channels <= 2^31 - 1, checked by the engine).
// The float epilogue is one multiply and one add in that order (no FMA), so every variant gives
// bit-identical floats. Pure, no allocation; output rows are independent, so a caller may split
// [0, out_features) across threads by offsetting weight (by rows * words), scale, bias and out.
#pragma once

#include <cstddef>

#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {

// The oracle: one output at a time, one word at a time.
void bfc__reference(std::size_t in_channels, std::size_t out_features, const BitWord* in,
                    const BitWord* weight, const float* scale, const float* bias, float* out);

struct BFCKernels {
  const char* isa;  // "scalar", "avx2", "avx512", "neon"
  void (*run)(std::size_t in_channels, std::size_t out_features, const BitWord* in,
              const BitWord* weight, const float* scale, const float* bias, float* out);
};

// The binary FC of `isa` if this build has it and this CPU runs it, else nullptr. kScalar is
// always there (the reference).
const BFCKernels* bfc_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const BFCKernels* const* bfc_kernel_variants(std::size_t* count);
// Every variant this build has, runnable here or not (for tests that name what they skip).
const BFCKernels* const* bfc_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
