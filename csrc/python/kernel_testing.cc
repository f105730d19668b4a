#include "python/kernel_testing.h"

namespace qbinfer {
void register_kernel_testing(pybind11::module_& core) {
  core.def_submodule("_kernels", "portable microkernels, for tests only");
}
}  // namespace qbinfer
