// qbinfer._testing.bench: kernel microbenchmark drivers and the machine's ceilings, for
// benchmarks/ (never the tests).
#pragma once

#include <pybind11/pybind11.h>

namespace qbinfer {

void register_kernel_bench(pybind11::module_& testing);

}  // namespace qbinfer
