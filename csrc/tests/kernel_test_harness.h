// The kernel test plan (kernel_test_harness.cc) as a library: the standalone
// qbinfer_kernel_tests (kernel_tests.cc, also run under qemu) and qbinfer._testing (the pytest
// file tests/test_kernels_simd.py) both run it, so the plan is written once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qbinfer {
namespace kernel_tests {

// The outcome of one family/variant run.
struct Report {
  std::string family;
  std::string variant;
  std::uint64_t seed = 0;
  std::size_t cases = 0;
  std::size_t failures = 0;
  double seconds = 0.0;
  std::vector<std::string> messages;  // the first few failures, each naming its case
};

// The kernel families, in the order the standalone binary runs them.
const std::vector<std::string>& families();

// A family's variants (the `isa` names of its kernel tables, scalar first): those this build
// has and this CPU runs, and all this build has. Unknown family: std::invalid_argument.
std::vector<std::string> runnable_variants(const std::string& family);
std::vector<std::string> compiled_variants(const std::string& family);

// Runs the plan for one family and one runnable variant. `seed` fixes every random choice;
// `scale` multiplies the number of random cases (the fixed cases always run). Throws
// std::invalid_argument for an unknown family or a variant that is not runnable here.
Report run(const std::string& family, const std::string& variant, std::uint64_t seed,
           double scale = 1.0);

}  // namespace kernel_tests
}  // namespace qbinfer
