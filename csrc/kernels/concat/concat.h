// Channel concatenation, NHWC floats.
//
// A copy: one memcpy per input row, which the C library already vectorizes for the CPU it runs
// on. So the family has only its portable entry (no <isa>.cc files): the kernel table falls
// back to it for every ISA (engine/kernel_table.h), and a new ISA needs nothing here.
#pragma once

#include <cstddef>

#include "qbinfer/isa.h"

namespace qbinfer {

// Writes `pixels` rows of sum(channels[i]) floats: row p is the concatenation of row p of
// every input, in order. The inputs may alias each other (a channel repeat), never `out`.
void concat_channels_f32__reference(const float* const* inputs, const std::size_t* channels,
                                    std::size_t n_inputs, std::size_t pixels, float* out);

struct ConcatKernels {
  const char* isa;  // "scalar"
  void (*channels_f32)(const float* const* inputs, const std::size_t* channels,
                       std::size_t n_inputs, std::size_t pixels, float* out);
};

// The concat kernels of `isa` if this build has them and this CPU runs them, else nullptr.
// kScalar is always there (the reference).
const ConcatKernels* concat_kernels_for(Isa isa);

// Every variant this build has and this CPU runs, scalar first: what tests and benchmarks
// iterate over, so that no compiled variant goes untested.
const ConcatKernels* const* concat_kernel_variants(std::size_t* count);

// Every variant this build has, runnable here or not (only their names may be read).
const ConcatKernels* const* concat_compiled_kernel_variants(std::size_t* count);

}  // namespace qbinfer
