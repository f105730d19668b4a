// Portable concat: copies row by row.
#include <cassert>
#include <cstring>

#include "kernels/concat/concat.h"

namespace qbinfer {

void concat_channels_f32__reference(const float* const* inputs, const std::size_t* channels,
                                    std::size_t n_inputs, std::size_t pixels, float* out) {
  assert(n_inputs > 0);
  for (std::size_t p = 0; p < pixels; ++p) {
    for (std::size_t i = 0; i < n_inputs; ++i) {
      const std::size_t ci = channels[i];
      // memcpy's no-overlap rule holds: inputs may alias each other but never out.
      std::memcpy(out, inputs[i] + p * ci, ci * sizeof(float));
      out += ci;
    }
  }
}

}  // namespace qbinfer
