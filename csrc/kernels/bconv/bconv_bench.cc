// Microbenchmark of every binary conv variant over the binary conv shapes of one zoo model at
// 224x224 (csrc/tests/zoo_shapes.inc; default QB-Net-Small): prints G binary MAC/s
// (H*W*Co*Ci*k*k per run_rows over the whole image, one thread).
// Time is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), the best of many short trials, so
// that other processes on a shared machine perturb it as little as possible.
// Not a test: build with -DQBINFER_BUILD_BENCHMARKS=ON and run
//   qbinfer_bconv_bench [isa|all] [model]       e.g. qbinfer_bconv_bench all qsb_net_small
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "kernels/bconv/bconv.h"

namespace {

double macs_of(const qbinfer::BConvShape& s) {
  return static_cast<double>(s.height * s.width * s.out_channels * s.in_channels * s.kernel *
                             s.kernel);
}

struct Case {
  std::string name;
  qbinfer::BConvShape shape;
};

// The distinct binary convs of `model`, in network order.
std::vector<Case> zoo_cases(const std::string& model) {
  struct Row {
    const char* model;
    std::size_t h, w, ci, co, k;
  };
  const Row rows[] = {
#define QBINFER_ZOO_BCONV(model, h, w, ci, co, k) {model, h, w, ci, co, k},
#include "tests/zoo_shapes.inc"
  };
  std::vector<Case> cases;
  for (const Row& r : rows) {
    if (model != r.model) continue;
    const qbinfer::BConvShape s{r.h, r.w, r.ci, r.co, r.k, qbinfer::BinaryPadding::kZero};
    bool seen = false;
    for (const Case& c : cases) {
      seen = seen || (c.shape.height == s.height && c.shape.width == s.width &&
                      c.shape.in_channels == s.in_channels &&
                      c.shape.out_channels == s.out_channels && c.shape.kernel == s.kernel);
    }
    if (!seen) {
      cases.push_back({std::to_string(r.h) + "x" + std::to_string(r.w) + " " +
                           std::to_string(r.ci) + "->" + std::to_string(r.co) + " k" +
                           std::to_string(r.k),
                       s});
    }
  }
  return cases;
}

double seconds_per_run(const qbinfer::BConvKernels& k, const qbinfer::BConvShape& s,
                       const std::vector<qbinfer::BitWord>& in, const void* packed,
                       const std::vector<float>& scale, const std::vector<float>& bias,
                       std::vector<float>& out) {
  auto now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  auto run = [&] {
    k.run_rows(s, in.data(), packed, scale.data(), bias.data(), 0, s.height, out.data());
  };
  run();  // warm caches
  const double macs = macs_of(s);
  // Trials of ~2 ms (shorter than a scheduler slice), the best of 40.
  const int reps = std::max(1, int(1e9 / macs));
  double best = 1e30;
  for (int trial = 0; trial < 40; ++trial) {
    const double t0 = now();
    for (int r = 0; r < reps; ++r) run();
    best = std::min(best, (now() - t0) / reps);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const char* only = argc > 1 && std::strcmp(argv[1], "all") != 0 ? argv[1] : nullptr;
  const std::string model = argc > 2 ? argv[2] : "qb_net_small";
  const std::vector<Case> cases = zoo_cases(model);
  if (cases.empty()) {
    std::fprintf(stderr, "no binary convs for model '%s' in tests/zoo_shapes.inc\n", model.c_str());
    return 2;
  }
  std::mt19937_64 rng(42);
  std::size_t nvar = 0;
  const qbinfer::BConvKernels* const* variants = qbinfer::bconv_kernel_variants(&nvar);
  std::printf("%-20s", "shape");
  for (std::size_t v = 0; v < nvar; ++v) {
    if (only == nullptr || std::strcmp(only, variants[v]->isa) == 0) {
      std::printf(" %14s", variants[v]->isa);
    }
  }
  std::printf("   (G binary MAC/s, one thread; time per run in us)\n");
  for (const Case& c : cases) {
    const auto& s = c.shape;
    const std::size_t words = qbinfer::words_for_channels(s.in_channels);
    std::vector<qbinfer::BitWord> in(s.height * s.width * words),
        w(s.out_channels * s.kernel * s.kernel * words);
    const qbinfer::BitWord tail = s.in_channels % 64
                                      ? (qbinfer::BitWord{1} << (s.in_channels % 64)) - 1
                                      : ~qbinfer::BitWord{0};
    for (std::size_t i = 0; i < in.size(); ++i)
      in[i] = rng() & (i % words + 1 == words ? tail : ~0ull);
    for (std::size_t i = 0; i < w.size(); ++i)
      w[i] = rng() & (i % words + 1 == words ? tail : ~0ull);
    std::vector<float> scale(s.out_channels, 0.01f), bias(s.out_channels, 0.5f);
    std::vector<float> out(s.height * s.width * s.out_channels);
    const double macs = macs_of(s);
    std::printf("%-20s", c.name.c_str());
    for (std::size_t v = 0; v < nvar; ++v) {
      const auto& k = *variants[v];
      if (only != nullptr && std::strcmp(only, k.isa) != 0) continue;
      const std::size_t bytes = k.packed_weight_bytes(s);
      void* packed = ::operator new(bytes, std::align_val_t{64});
      k.pack_weight(s, w.data(), packed);
      const double t = seconds_per_run(k, s, in, packed, scale, bias, out);
      std::printf(" %6.1f (%5.0f)", macs / t * 1e-9, t * 1e6);
      ::operator delete(packed, std::align_val_t{64});
    }
    std::printf("\n");
  }
  return 0;
}
