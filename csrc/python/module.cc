// qbinfer._core: the Python binding. This layer owns validation (dtype, rank, shapes)
// and memory layout; the kernels it calls only compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/bitpack/bitpack.h"
#include "python/kernel_testing.h"
#include "qbinfer/bit_contract.h"

namespace py = pybind11;

namespace {

// What the kernels need: C order and natural alignment (an unaligned float* is UB
// even where x86 would tolerate it). Constructing one from an ndarray copies only
// when the input lacks either. No forcecast: dtype is checked explicitly first so the
// user gets a dtype error instead of a silent conversion.
constexpr int kKernelReady =
    py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
using F32Array = py::array_t<float, kKernelReady>;
using U64Array = py::array_t<std::uint64_t, py::array::c_style>;

// Formats a shape the way numpy prints it, so messages read like numpy's own.
std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape(i));
  }
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks that `obj` is a native-endian float32 ndarray and returns it kernel-ready.
F32Array as_f32(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string("bitpack: ") + name +
                         " must be a numpy.ndarray of dtype float32, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  // array_t<float>::check_ compares dtypes with PyArray_EquivTypes, so byte-swapped
  // float32 ('>f4' here) is rejected too: the kernels read native floats.
  if (!py::isinstance<py::array_t<float>>(obj)) {
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    throw py::type_error(std::string("bitpack: ") + name +
                         " must have dtype float32, got " +
                         std::string(py::str(arr.dtype())));
  }
  return F32Array(py::reinterpret_borrow<py::object>(obj));
}

U64Array bitpack(const py::object& x_obj, const py::object& thresholds_obj) {
  const F32Array x = as_f32(x_obj, "x");
  if (x.ndim() < 1) {
    throw py::value_error("bitpack: x must have rank >= 1 with channels on the last axis, "
                          "got a 0-d array");
  }
  const std::size_t channels = static_cast<std::size_t>(x.shape(x.ndim() - 1));
  if (channels == 0) {
    throw py::value_error("bitpack: x has zero channels (last axis), shape " +
                          shape_str(x));
  }

  F32Array thresholds;
  const float* t_ptr = nullptr;
  if (!thresholds_obj.is_none()) {
    thresholds = as_f32(thresholds_obj, "thresholds");
    if (thresholds.ndim() != 1 || static_cast<std::size_t>(thresholds.shape(0)) != channels) {
      throw py::value_error("bitpack: thresholds must have shape (" +
                            std::to_string(channels) + ",) to match x of shape " +
                            shape_str(x) + ", got shape " + shape_str(thresholds));
    }
    t_ptr = thresholds.data();
  }

  const std::size_t words = qbinfer::words_for_channels(channels);
  std::vector<py::ssize_t> out_shape(x.shape(), x.shape() + x.ndim());
  out_shape.back() = static_cast<py::ssize_t>(words);
  U64Array out(out_shape);

  // Zero-size leading axes are legal (an empty batch) and need no kernel call.
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / channels;
  const float* x_ptr = x.data();
  qbinfer::BitWord* out_ptr = out.mutable_data();
  {
    // `x`, `thresholds` and `out` hold references, so the buffers outlive the call.
    py::gil_scoped_release release;
    qbinfer::bitpack_f32_nhwc__reference(x_ptr, pixels, channels, t_ptr, out_ptr);
  }
  return out;
}

#define QBINFER_STRINGIFY_(x) #x
#define QBINFER_STRINGIFY(x) QBINFER_STRINGIFY_(x)

const char* compiler_id() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " QBINFER_STRINGIFY(_MSC_FULL_VER);
#else
  return "unknown";
#endif
}

const char* target_arch() {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  return "aarch64";
#else
  return "other";
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qbinfer native core (bit-packed binary CNN kernels)";
  m.attr("__version__") = QBINFER_VERSION;
  m.attr("BITS_PER_WORD") = qbinfer::kBitsPerWord;

  m.def("bitpack", &bitpack, py::arg("x"), py::arg("thresholds") = py::none(),
        R"doc(Pack float32 values into sign bits along the last axis (channels).

x: float32 array of rank >= 1, channels last (NHWC or [..., C]). Non-contiguous
   input is copied.
thresholds: optional float32 array of shape (C,); None means all zeros.

Returns a uint64 array of shape x.shape[:-1] + ((C + 63) // 64,). Channel c is bit
c % 64 of word c // 64; bit 1 means -1, i.e. NOT (x >= threshold), so x equal to its
threshold and -0.0 pack as +1 and NaN packs as -1. Tail bits past C are 0.)doc");

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["version"] = QBINFER_VERSION;
        info["compiler"] = compiler_id();
        info["target_arch"] = target_arch();
        // Grows as ISA-specific kernels are added; run-time selection comes later.
        info["compiled_isas"] = py::make_tuple("reference");
        info["bits_per_word"] = qbinfer::kBitsPerWord;
        return info;
      },
      "Describe how this extension was built: version, compiler, target, kernel ISAs.");

  qbinfer::register_kernel_testing(m);
}
