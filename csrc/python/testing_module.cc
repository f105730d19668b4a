// qbinfer._testing: what tests/ and benchmarks/ need besides the runtime in qbinfer._core. The
// kernel test plan (csrc/tests/kernel_test_harness.cc, shared with the standalone
// qbinfer_kernel_tests), bindings of single kernels (`kernels`), microbenchmark drivers and
// machine ceilings (`bench`), the zoo's layer shapes, and two engine internals (CRC-32, thread
// pool latency). Not a public API; built with QBINFER_BUILD_TESTING (default ON).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/thread_pool.h"
#include "format/crc32.h"
#include "python/kernel_bench.h"
#include "python/kernel_testing.h"
#include "tests/kernel_test_harness.h"

namespace py = pybind11;

namespace {

py::dict run_kernel_tests(std::uint64_t seed, const std::string& family, const std::string& isa,
                          double scale) {
  qbinfer::kernel_tests::Report r;
  {
    py::gil_scoped_release release;
    r = qbinfer::kernel_tests::run(family, isa, seed, scale);
  }
  py::dict d;
  d["family"] = r.family;
  d["variant"] = r.variant;
  d["seed"] = r.seed;
  d["cases"] = r.cases;
  d["failures"] = r.failures;
  d["seconds"] = r.seconds;
  d["messages"] = r.messages;
  return d;
}

// Every line of tests/zoo_shapes.inc as (model, family, params), in order; the family and
// parameter names are those of benchmarks/zoo_shapes.py and KernelBench.
py::list zoo_layers() {
  py::list out;
  auto add = [&out](const char* model, const char* family, py::dict params) {
    out.append(py::make_tuple(model, family, params));
  };
#define QBINFER_ZOO_CONV2D(model, h, w, ci, co, k, stride)                                 \
  add(model, "conv2d",                                                                     \
      py::dict(py::arg("h") = h, py::arg("w") = w, py::arg("ci") = ci, py::arg("co") = co, \
               py::arg("k") = k, py::arg("stride") = stride));
#define QBINFER_ZOO_DWCONV(model, h, w, c, sh, sw, multiplier)                           \
  add(model, "dwconv_f32",                                                               \
      py::dict(py::arg("h") = h, py::arg("w") = w, py::arg("c") = c, py::arg("sh") = sh, \
               py::arg("sw") = sw, py::arg("multiplier") = multiplier));
#define QBINFER_ZOO_EPILOGUE(model, pixels, channels, residual_channels, bits) \
  add(model, "epilogue",                                                       \
      py::dict(py::arg("pixels") = pixels, py::arg("channels") = channels,     \
               py::arg("residual_channels") = residual_channels, py::arg("bits") = bits));
#define QBINFER_ZOO_BCONV(model, h, w, ci, co, k)                                          \
  add(model, "bconv",                                                                      \
      py::dict(py::arg("h") = h, py::arg("w") = w, py::arg("ci") = ci, py::arg("co") = co, \
               py::arg("k") = k));
#define QBINFER_ZOO_FC(model, ci, co) \
  add(model, "fc_f32", py::dict(py::arg("ci") = ci, py::arg("co") = co));
#include "tests/zoo_shapes.inc"
  return out;
}

}  // namespace

PYBIND11_MODULE(_testing, m) {
  m.doc() = "qbinfer test and benchmark drivers (not part of the runtime API)";

  m.def("kernel_test_families", &qbinfer::kernel_tests::families,
        "The kernel families the kernel test plan covers.");
  m.def(
      "kernel_variants",
      [](const std::string& family, bool runnable_only) {
        return runnable_only ? qbinfer::kernel_tests::runnable_variants(family)
                             : qbinfer::kernel_tests::compiled_variants(family);
      },
      py::arg("family"), py::arg("runnable_only") = true,
      "A family's variants, scalar first: those this build has and this CPU runs, or "
      "(runnable_only=False) all this build has.");
  m.def("run_kernel_tests", &run_kernel_tests, py::arg("seed"), py::arg("family"), py::arg("isa"),
        py::arg("scale") = 1.0,
        "Runs the kernel test plan for one family and one runnable variant (`isa`, a variant "
        "name such as 'avx512_vpopcnt'). Returns a dict: family, variant, seed, cases, "
        "failures, seconds, messages (the first few failures). ValueError for an unknown family "
        "or a variant this CPU cannot run.");

  m.def("zoo_layers", &zoo_layers,
        "The zoo's layer shapes at 224x224 (csrc/tests/zoo_shapes.inc, generated from "
        "weights_tools.zoo): (model, family, params) per kernel call of one image, in order.");

  m.def(
      "pool_latency",
      [](std::size_t threads, std::size_t iterations, std::size_t cold_iterations) {
        qbinfer::PoolLatency l{};
        {
          py::gil_scoped_release release;
          l = qbinfer::measure_pool_latency(threads, iterations, cold_iterations);
        }
        py::dict d;
        d["hot_ns"] = l.hot_ns;
        d["cold_ns"] = l.cold_ns;
        return d;
      },
      py::arg("threads") = 2, py::arg("iterations") = 10000, py::arg("cold_iterations") = 50,
      "Median round trip of an empty job on a fresh thread pool, in ns: hot (workers "
      "spinning) and cold (workers parked). For the benchmarks.");
  m.def(
      "crc32",
      [](const py::bytes& data, std::uint32_t value) {
        const std::string_view v = data;
        return qbinfer::crc32_update(value, v.data(), v.size());
      },
      py::arg("data"), py::arg("value") = 0,
      "CRC-32 of the .qbw checksum (same as zlib.crc32); for tests.");

  qbinfer::register_kernel_testing(m);
  qbinfer::register_kernel_bench(m);
}
