// `qbinfer._testing.kernels`: thin bindings of every portable microkernel, for the tests that
// compare single kernels with numpy/PyTorch references. Not a public API.
#pragma once

#include <pybind11/pybind11.h>

namespace qbinfer {
void register_kernel_testing(pybind11::module_& testing);
}  // namespace qbinfer
