// qbinfer_kernel_tests: the kernel test plan (kernel_test_harness.cc) without Python, so that
// cross builds can be proven under qemu (qemu-aarch64 for the NEON kernels) and native builds
// test their AVX2 / AVX-512 kernels the same way the pytest file does.
//
// Usage: qbinfer_kernel_tests [--seed N] [--scale X] [--family F] [--variant V]. The seed
// (default: from the clock) is printed first; --seed N replays a failure exactly. --scale
// multiplies the number of random cases (default 1). Exit code 0 iff every comparison passed.
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "qbinfer/isa.h"
#include "tests/kernel_test_harness.h"

namespace {

int run(int argc, char** argv) {
  namespace kt = qbinfer::kernel_tests;
  std::uint64_t seed =
      static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) %
      1000000007ull;
  double scale = 1.0;
  std::string only_family, only_variant;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--scale" && i + 1 < argc) {
      scale = std::strtod(argv[++i], nullptr);
    } else if (a == "--family" && i + 1 < argc) {
      only_family = argv[++i];
    } else if (a == "--variant" && i + 1 < argc) {
      only_variant = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seed N] [--scale X] [--family F] [--variant V]\n",
                   argv[0]);
      return 2;
    }
  }
  std::printf("qbinfer_kernel_tests --seed %" PRIu64 "\n", seed);
  std::string isas;
  for (qbinfer::Isa isa : qbinfer::supported_isas()) isas += std::string(" ") + isa_name(isa);
  std::printf("supported ISAs:%s; neon dotprod: %s\n", isas.c_str(),
              qbinfer::cpu_has_neon_dotprod() ? "yes" : "no");
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t families = 0, variants = 0, cases = 0, failures = 0;
  for (const std::string& family : kt::families()) {
    if (!only_family.empty() && family != only_family) continue;
    ++families;
    const std::vector<std::string> runnable = kt::runnable_variants(family);
    for (const std::string& variant : runnable) {
      if (!only_variant.empty() && variant != only_variant) continue;
      const kt::Report r = kt::run(family, variant, seed, scale);
      std::printf("%-12s %-16s %5zu cases  %s  (%.2f s)\n", family.c_str(), variant.c_str(),
                  r.cases, r.failures == 0 ? "ok" : "FAILED", r.seconds);
      if (r.failures != 0) std::printf("    %zu failures, the first:\n", r.failures);
      for (const std::string& m : r.messages) std::printf("    FAIL %s\n", m.c_str());
      std::fflush(stdout);
      ++variants;
      cases += r.cases;
      failures += r.failures;
    }
    std::string not_runnable;
    for (const std::string& v : kt::compiled_variants(family)) {
      bool found = false;
      for (const std::string& w : runnable) found = found || v == w;
      if (!found) not_runnable += " " + v;
    }
    if (!not_runnable.empty()) {
      std::printf("%-12s compiled, not runnable on this CPU:%s\n", family.c_str(),
                  not_runnable.c_str());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "summary: %zu families, %zu variants, %zu cases, %zu failures (%.1f s) --seed %" PRIu64 "\n",
      families, variants, cases, failures, secs, seed);
  if (variants == 0) {
    std::printf("FAILED: no family/variant matched --family '%s' --variant '%s'\n",
                only_family.c_str(), only_variant.c_str());
    return 1;
  }
  if (failures != 0) std::printf("FAILED\n");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qbinfer_kernel_tests: %s\n", e.what());
    return 2;
  }
}
