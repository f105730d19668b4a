// qbinfer._testing.kernels: one binding per portable microkernel, in the natural numpy shapes
// (NHWC without the batch). The bindings own validation, as every caller of a microkernel
// must: dtype (TypeError), shape, attribute ranges and the tail-bit rule (ValueError), so a
// wrong call raises instead of reaching a kernel assert or reading out of bounds. They
// return fresh C-contiguous arrays and release the GIL around each kernel call.
#include "python/kernel_testing.h"
#include "python/shape_str.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <stdexcept>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/bconv/bconv.h"
#include "kernels/bfc/bfc.h"
#include "kernels/bitpack/bitpack.h"
#include "kernels/concat/concat.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/epilogue/epilogue.h"
#include "kernels/fc/fc.h"
#include "kernels/pool/pool.h"
#include "kernels/resize/resize.h"
#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace py = pybind11;

namespace qbinfer {
namespace {

// C order and natural alignment, copying only when the input lacks either. No forcecast:
// the dtype is checked first so a float64 array is an error, not a silent conversion.
constexpr int kKernelReady = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
template <typename T>
using Ready = py::array_t<T, kKernelReady>;

template <typename T>
const char* dtype_name();
template <>
const char* dtype_name<float>() {
  return "float32";
}
template <>
const char* dtype_name<std::uint64_t>() {
  return "uint64";
}
template <>
const char* dtype_name<std::int8_t>() {
  return "int8";
}

// "fn: name", the prefix of every message.
std::string where(const char* fn, const char* name) { return std::string(fn) + ": " + name; }

template <typename T>
Ready<T> as_array(const py::handle& obj, const char* fn, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(where(fn, name) + " must be a numpy.ndarray of dtype " + dtype_name<T>() +
                         ", got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  // PyArray_EquivTypes underneath: a byte-swapped array is rejected too.
  if (!py::isinstance<py::array_t<T>>(obj)) {
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    throw py::type_error(where(fn, name) + " must have dtype " + dtype_name<T>() + ", got " +
                         std::string(py::str(arr.dtype())));
  }
  return Ready<T>(py::reinterpret_borrow<py::object>(obj));
}

// One expected dimension: an exact size, or any size >= 1 shown by its name.
struct Dim {
  py::ssize_t size;  // < 0: any size >= 1
  const char* name;
};
Dim any(const char* name) { return {-1, name}; }
Dim exactly(std::size_t size) { return {static_cast<py::ssize_t>(size), nullptr}; }

void expect_shape(const py::array& a, const char* fn, const char* name,
                  std::initializer_list<Dim> dims) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(dims.size());
  std::string want = "(";
  py::ssize_t i = 0;
  for (const Dim& d : dims) {
    if (i > 0) want += ", ";
    want += d.size < 0 ? std::string(d.name) : std::to_string(d.size);
    if (ok) ok = d.size < 0 ? a.shape(i) >= 1 : a.shape(i) == d.size;
    ++i;
  }
  want += dims.size() == 1 ? ",)" : ")";
  if (!ok) {
    throw py::value_error(where(fn, name) + " must have shape " + want +
                          (dims.size() == 0 ? "" : " (named sizes >= 1)") + ", got " +
                          shape_str(a));
  }
}

// Channels-last arrays of any rank >= 1: returns the channel count (>= 1).
std::size_t channels_last(const py::array& a, const char* fn, const char* name) {
  if (a.ndim() < 1 || a.shape(a.ndim() - 1) < 1) {
    throw py::value_error(where(fn, name) +
                          " must have rank >= 1 and at least one channel on the last axis, got "
                          "shape " +
                          shape_str(a));
  }
  return static_cast<std::size_t>(a.shape(a.ndim() - 1));
}

// A float32 [C] argument, one value per channel.
Ready<float> per_channel(const py::object& obj, const char* fn, const char* name,
                         std::size_t channels) {
  auto a = as_array<float>(obj, fn, name);
  expect_shape(a, fn, name, {exactly(channels)});
  return a;
}

// Optional per-channel float32 [C] argument.
Ready<float> optional_channels(const py::object& obj, const char* fn, const char* name,
                               std::size_t channels, const float** ptr) {
  Ready<float> a;
  *ptr = nullptr;
  if (!obj.is_none()) {
    a = per_channel(obj, fn, name, channels);
    *ptr = a.data();
  }
  return a;
}

std::size_t dim(const py::array& a, py::ssize_t i) { return static_cast<std::size_t>(a.shape(i)); }

std::size_t positive(std::int64_t v, const char* fn, const char* name) {
  if (v < 1) {
    throw py::value_error(where(fn, name) + " must be >= 1, got " + std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

// Every kernel assumes bits past the channel count are 0 (bit_contract.h); the last axis of
// `bits` holds the words of one row of `channels` channels.
void expect_zero_tail(const Ready<std::uint64_t>& bits, std::size_t channels, const char* fn,
                      const char* name) {
  const std::size_t used = channels % kBitsPerWord;
  if (used == 0 || bits.size() == 0) return;
  const std::size_t words = words_for_channels(channels);
  const std::uint64_t* p = bits.data();
  const std::size_t rows = static_cast<std::size_t>(bits.size()) / words;
  for (std::size_t r = 0; r < rows; ++r) {
    if ((p[r * words + words - 1] >> used) != 0) {
      throw py::value_error(where(fn, name) + " has bits set past channel " +
                            std::to_string(channels) + " in row " + std::to_string(r) +
                            " (the bit contract requires tail bits 0)");
    }
  }
}

py::array_t<float> new_f32(std::vector<py::ssize_t> shape) {
  return py::array_t<float>(std::move(shape));
}

template <typename F>
void without_gil(F&& f) {
  // Every buffer a kernel touches is held by a local Ready<>/array_t, so it outlives this.
  py::gil_scoped_release release;
  f();
}

// --- ISA selection ------------------------------------------------------------------------

// A runnable variant by its name ("scalar", "avx2", "avx512", "avx512_vpopcnt", ...); a plain
// ISA name gives bconv_kernels_for(that ISA).
const BConvKernels& bconv_variant(const std::string& name) {
  std::size_t n = 0;
  const BConvKernels* const* v = bconv_kernel_variants(&n);
  for (std::size_t i = 0; i < n; ++i) {
    if (name == v[i]->isa) return *v[i];
  }
  const BConvKernels* k = bconv_kernels_for(isa_from_name(name));
  if (k == nullptr) {
    throw py::value_error("bconv2d: this build has no binary conv for isa '" + name + "'");
  }
  return *k;
}

// 64-byte aligned bytes, as the engine gives pack_weight.
struct AlignedBytes {
  struct Free {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t{64}); }
  };
  std::unique_ptr<void, Free> ptr;
  explicit AlignedBytes(std::size_t bytes)
      : ptr(::operator new(std::max<std::size_t>(bytes, 64), std::align_val_t{64})) {}
};

// --- binary conv ------------------------------------------------------------------------

py::array_t<float> bconv2d(const py::object& x_obj, const py::object& w_obj,
                           std::int64_t in_channels, const py::object& scale_obj,
                           const py::object& bias_obj, const std::string& padding,
                           const py::object& isa_obj, const py::object& row_ranges_obj) {
  constexpr const char* fn = "bconv2d";
  const auto x = as_array<std::uint64_t>(x_obj, fn, "x_bits");
  const auto w = as_array<std::uint64_t>(w_obj, fn, "w_bits");
  const auto scale = as_array<float>(scale_obj, fn, "scale");
  const auto bias = as_array<float>(bias_obj, fn, "bias");

  const std::size_t ci = positive(in_channels, fn, "in_channels");
  if (ci > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max() / 9)) {
    throw py::value_error("bconv2d: in_channels " + std::to_string(ci) +
                          " is too large for an int32 dot over 9 taps");
  }
  const std::size_t words = words_for_channels(ci);
  BinaryPadding mode;
  if (padding == "zero") {
    mode = BinaryPadding::kZero;
  } else if (padding == "one") {
    mode = BinaryPadding::kOne;
  } else {
    throw py::value_error("bconv2d: padding must be 'zero' or 'one', got '" + padding + "'");
  }
  expect_shape(x, fn, "x_bits", {any("H"), any("W"), exactly(words)});
  expect_shape(w, fn, "w_bits", {any("Co"), any("k"), any("k"), exactly(words)});
  const std::size_t k = dim(w, 1);
  if (dim(w, 2) != k || (k != 1 && k != 3)) {
    throw py::value_error("bconv2d: w_bits must be [Co, k, k, words] with k 1 or 3, got shape " +
                          shape_str(w));
  }
  const std::size_t co = dim(w, 0);
  expect_shape(scale, fn, "scale", {exactly(co)});
  expect_shape(bias, fn, "bias", {exactly(co)});
  expect_zero_tail(x, ci, fn, "x_bits");
  expect_zero_tail(w, ci, fn, "w_bits");

  const BConvShape shape{dim(x, 0), dim(x, 1), ci, co, k, mode};
  auto out = new_f32({x.shape(0), x.shape(1), static_cast<py::ssize_t>(co)});
  float* o = out.mutable_data();

  if (isa_obj.is_none()) {
    if (!row_ranges_obj.is_none()) {
      throw py::value_error("bconv2d: row_ranges needs an isa (the packed-weight path)");
    }
    without_gil(
        [&] { bconv2d_nhwc__reference(shape, x.data(), w.data(), scale.data(), bias.data(), o); });
    return out;
  }

  const BConvKernels& kernels = bconv_variant(py::cast<std::string>(isa_obj));
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  if (row_ranges_obj.is_none()) {
    ranges.emplace_back(0, shape.height);
  } else {
    for (const py::handle item : row_ranges_obj) {
      const auto r = py::cast<std::pair<std::int64_t, std::int64_t>>(item);
      if (r.first < 0 || r.first > r.second || r.second > static_cast<std::int64_t>(shape.height)) {
        throw py::value_error(
            "bconv2d: row range (" + std::to_string(r.first) + ", " + std::to_string(r.second) +
            ") is not within 0 <= begin <= end <= " + "H = " + std::to_string(shape.height));
      }
      ranges.emplace_back(static_cast<std::size_t>(r.first), static_cast<std::size_t>(r.second));
    }
    // Rows no range covers stay NaN, so a test sees a kernel writing outside its rows.
    std::fill(o, o + out.size(), std::numeric_limits<float>::quiet_NaN());
  }
  const std::size_t bytes = kernels.packed_weight_bytes(shape);
  if (bytes == 0 || bytes % 64 != 0) {
    throw std::logic_error(std::string("bconv2d: ") + kernels.isa +
                           " packed_weight_bytes is not a positive multiple of 64");
  }
  AlignedBytes packed(bytes);
  without_gil([&] {
    kernels.pack_weight(shape, w.data(), packed.ptr.get());
    for (const auto& r : ranges) {
      kernels.run_rows(shape, x.data(), packed.ptr.get(), scale.data(), bias.data(), r.first,
                       r.second, o);
    }
  });
  return out;
}

// --- bitpacking (per ISA; the public qbinfer.bitpack is the engine's) --------------------

py::array_t<std::uint64_t> bitpack_isa(const py::object& x_obj, const py::object& t_obj,
                                       const std::string& isa) {
  constexpr const char* fn = "bitpack";
  const BitpackKernels* kernels = bitpack_kernels_for(isa_from_name(isa));
  if (kernels == nullptr) {
    throw py::value_error("bitpack: this build has no bitpacking for isa '" + isa + "'");
  }
  const auto x = as_array<float>(x_obj, fn, "x");
  const std::size_t c = channels_last(x, fn, "x");
  const float* tp = nullptr;
  const Ready<float> t = optional_channels(t_obj, fn, "thresholds", c, &tp);
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  shape.back() = static_cast<py::ssize_t>(words_for_channels(c));
  py::array_t<std::uint64_t> out(shape);
  std::uint64_t* o = out.mutable_data();
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / c;
  without_gil([&] { kernels->f32_nhwc(x.data(), pixels, c, tp, o); });
  return out;
}

// --- float/int8 families: ISA choice and row ranges ---------------------------------------

// The kernels of one family for isa (None: "scalar"); ValueError when not supported.
template <class K>
const K& family_kernels(const char* fn, const py::object& isa_obj, const K* (*for_isa)(Isa)) {
  const std::string name =
      isa_obj.is_none() ? std::string("scalar") : py::cast<std::string>(isa_obj);
  const K* k = for_isa(isa_from_name(name));
  if (k == nullptr) {
    throw py::value_error(std::string(fn) + ": this build has no kernels for isa '" + name + "'");
  }
  return *k;
}

using RowRanges = std::vector<std::pair<std::size_t, std::size_t>>;

// (begin, end) pairs within [0, rows], in the caller's order; None: one range of all rows.
RowRanges row_ranges(const char* fn, const py::object& obj, std::size_t rows) {
  RowRanges ranges;
  if (obj.is_none()) {
    ranges.emplace_back(0, rows);
    return ranges;
  }
  for (const py::handle item : obj) {
    const auto r = py::cast<std::pair<std::int64_t, std::int64_t>>(item);
    if (r.first < 0 || r.first > r.second || r.second > static_cast<std::int64_t>(rows)) {
      throw py::value_error(std::string(fn) + ": range (" + std::to_string(r.first) + ", " +
                            std::to_string(r.second) +
                            ") is not within 0 <= begin <= end <= " + std::to_string(rows));
    }
    ranges.emplace_back(static_cast<std::size_t>(r.first), static_cast<std::size_t>(r.second));
  }
  return ranges;
}

// Output rows no range covers stay NaN, so a test sees a kernel writing outside its rows.
void fill_nan_if_ranged(const py::object& ranges_obj, py::array_t<float>& out) {
  if (ranges_obj.is_none() || out.size() == 0) return;
  float* o = out.mutable_data();
  std::fill(o, o + out.size(), std::numeric_limits<float>::quiet_NaN());
}

// A kernel without packed weights (the pools): `whole()` over the whole output, or with row
// ranges `rows(begin, end)` over each range in the caller's order, the other rows left NaN.
template <typename Whole, typename Rows>
py::array_t<float> run_whole_or_ranges(const char* fn, const py::object& row_ranges_obj,
                                       std::size_t out_rows, py::array_t<float> out,
                                       const Whole& whole, const Rows& rows) {
  if (row_ranges_obj.is_none()) {
    without_gil(whole);
    return out;
  }
  const RowRanges ranges = row_ranges(fn, row_ranges_obj, out_rows);
  fill_nan_if_ranged(row_ranges_obj, out);
  without_gil([&] {
    for (const auto& r : ranges) rows(r.first, r.second);
  });
  return out;
}

template <typename Size>
void expect_packed_size(const char* fn, const char* isa, Size bytes) {
  if (bytes == 0 || bytes % 64 != 0) {
    throw std::logic_error(std::string(fn) + ": " + isa +
                           " packed size is not a positive multiple of 64");
  }
}

// --- depthwise --------------------------------------------------------------------------

struct DWArgs {
  Ready<float> x;
  Ready<float> pre_bias;  // empty when None
  const float* pre_bias_ptr = nullptr;
  Ready<float> scale;
  Ready<float> bias;
  DWConvShape shape{};
};

// Shared checks of both depthwise bindings; the weight is checked by the caller against
// shape.multiplier * shape.channels rows.
DWArgs dw_common(const char* fn, const py::object& x_obj, const py::object& pre_bias_obj,
                 const py::object& scale_obj, const py::object& bias_obj, std::int64_t stride_h,
                 std::int64_t stride_w, std::int64_t multiplier, py::ssize_t weight_rows) {
  DWArgs a;
  a.x = as_array<float>(x_obj, fn, "x");
  expect_shape(a.x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t c = dim(a.x, 2);
  a.pre_bias = optional_channels(pre_bias_obj, fn, "pre_bias", c, &a.pre_bias_ptr);
  if (!((stride_h == 1 || stride_h == 2) && (stride_w == 1 || stride_w == 2))) {
    throw py::value_error(std::string(fn) +
                          ": stride must be (1, 1), (2, 2), (2, 1) or (1, 2), "
                          "got (" +
                          std::to_string(stride_h) + ", " + std::to_string(stride_w) + ")");
  }
  const std::size_t k = positive(multiplier, fn, "multiplier");
  if (weight_rows < 0 || static_cast<std::size_t>(weight_rows) % c != 0 ||
      static_cast<std::size_t>(weight_rows) / c != k) {
    throw py::value_error(std::string(fn) + ": w must have multiplier * C = " + std::to_string(k) +
                          " * " + std::to_string(c) + " rows, got " + std::to_string(weight_rows));
  }
  const std::size_t kc = k * c;
  a.scale = as_array<float>(scale_obj, fn, "scale");
  expect_shape(a.scale, fn, "scale", {exactly(kc)});
  a.bias = as_array<float>(bias_obj, fn, "bias");
  expect_shape(a.bias, fn, "bias", {exactly(kc)});

  const std::size_t sh = static_cast<std::size_t>(stride_h);
  const std::size_t sw = static_cast<std::size_t>(stride_w);
  a.shape = DWConvShape{dim(a.x, 0),
                        dim(a.x, 1),
                        c,
                        k,
                        sh,
                        sw,
                        (dim(a.x, 0) + sh - 1) / sh,
                        (dim(a.x, 1) + sw - 1) / sw};
  return a;
}

py::array_t<float> dw_output(const DWConvShape& s) {
  return new_f32({static_cast<py::ssize_t>(s.out_height), static_cast<py::ssize_t>(s.out_width),
                  static_cast<py::ssize_t>(s.multiplier * s.channels)});
}

py::ssize_t weight_rows(const py::array& w) { return w.ndim() >= 1 ? w.shape(0) : -1; }

py::array_t<float> dwconv3x3_f32(const py::object& x_obj, const py::object& pre_bias_obj,
                                 const py::object& w_obj, const py::object& scale_obj,
                                 const py::object& bias_obj, std::int64_t stride_h,
                                 std::int64_t stride_w, std::int64_t multiplier,
                                 const py::object& isa_obj, const py::object& row_ranges_obj,
                                 std::int64_t dilation) {
  constexpr const char* fn = "dwconv3x3_f32";
  const auto w = as_array<float>(w_obj, fn, "w");
  expect_shape(w, fn, "w", {any("multiplier * C"), exactly(9)});
  DWArgs a = dw_common(fn, x_obj, pre_bias_obj, scale_obj, bias_obj, stride_h, stride_w, multiplier,
                       weight_rows(w));
  a.shape.dilation = positive(dilation, fn, "dilation");
  if (a.shape.dilation > 1 && (stride_h != 1 || stride_w != 1)) {
    throw py::value_error("dwconv3x3_f32: dilation > 1 needs stride (1, 1)");
  }
  auto out = dw_output(a.shape);
  float* o = out.mutable_data();
  if (isa_obj.is_none() && row_ranges_obj.is_none()) {
    without_gil([&] {
      dwconv3x3_f32_nhwc__reference(a.shape, a.x.data(), a.pre_bias_ptr, w.data(), a.scale.data(),
                                    a.bias.data(), o);
    });
    return out;
  }
  const DWConvKernels& k = family_kernels(fn, isa_obj, &dwconv_kernels_for);
  const RowRanges ranges = row_ranges(fn, row_ranges_obj, a.shape.out_height);
  fill_nan_if_ranged(row_ranges_obj, out);
  const std::size_t bytes = k.packed_f32_bytes(a.shape);
  expect_packed_size(fn, k.isa, bytes);
  AlignedBytes packed(bytes);
  without_gil([&] {
    k.pack_f32(a.shape, w.data(), packed.ptr.get());
    for (const auto& r : ranges) {
      k.run_rows_f32(a.shape, a.x.data(), a.pre_bias_ptr, packed.ptr.get(), a.scale.data(),
                     a.bias.data(), r.first, r.second, o);
    }
  });
  return out;
}

py::array_t<float> dwconv3x3_qs8(const py::object& x_obj, const py::object& pre_bias_obj,
                                 const py::object& input_scale_obj, const py::object& w_obj,
                                 const py::object& w_scale_obj, const py::object& scale_obj,
                                 const py::object& bias_obj, std::int64_t stride_h,
                                 std::int64_t stride_w, std::int64_t multiplier,
                                 const py::object& isa_obj, const py::object& row_ranges_obj) {
  constexpr const char* fn = "dwconv3x3_qs8";
  const bool reference_path = isa_obj.is_none() && row_ranges_obj.is_none();
  const DWConvKernels& k = family_kernels(fn, isa_obj, &dwconv_kernels_for);
  const auto w = as_array<std::int8_t>(w_obj, fn, "w");
  expect_shape(w, fn, "w", {any("multiplier * C"), exactly(9)});
  const DWArgs a = dw_common(fn, x_obj, pre_bias_obj, scale_obj, bias_obj, stride_h, stride_w,
                             multiplier, weight_rows(w));
  const auto w_scale = as_array<float>(w_scale_obj, fn, "w_scale");
  expect_shape(w_scale, fn, "w_scale", {exactly(a.shape.multiplier * a.shape.channels)});
  for (py::ssize_t i = 0; i < w.size(); ++i) {
    if (w.data()[i] == -128) {
      throw py::value_error(
          "dwconv3x3_qs8: w must lie in [-127, 127] (symmetric INT8), found "
          "-128 at flat index " +
          std::to_string(i));
    }
  }

  const std::size_t pixels = a.shape.in_height * a.shape.in_width;
  float input_scale;
  if (input_scale_obj.is_none()) {
    input_scale = dwconv_dynamic_input_scale(
        reference_path
            ? dwconv_input_absmax__reference(a.x.data(), a.pre_bias_ptr, pixels, a.shape.channels)
            : k.input_absmax(a.x.data(), a.pre_bias_ptr, pixels, a.shape.channels));
  } else {
    // float(), int and numpy scalars convert; strings and the like do not.
    if (!py::hasattr(input_scale_obj, "__float__")) {
      throw py::type_error("dwconv3x3_qs8: input_scale must be a float or None, got " +
                           std::string(py::str(py::type::of(input_scale_obj).attr("__name__"))));
    }
    const double requested = py::cast<double>(py::float_(input_scale_obj));
    // Range-checked in double first: converting a double beyond float's range is undefined.
    input_scale = requested > 0.0 && requested <= std::numeric_limits<float>::max()
                      ? static_cast<float>(requested)
                      : 0.0f;
    if (!(input_scale > 0.0f)) {
      throw py::value_error(
          "dwconv3x3_qs8: input_scale must be finite and > 0 as a float32 "
          "(None for the dynamic scale), got " +
          std::string(py::str(input_scale_obj)));
    }
  }

  std::vector<std::int8_t> scratch(pixels * a.shape.channels);
  auto out = dw_output(a.shape);
  float* o = out.mutable_data();
  if (reference_path) {
    without_gil([&] {
      dwconv3x3_qs8_nhwc__reference(a.shape, a.x.data(), a.pre_bias_ptr, input_scale, w.data(),
                                    w_scale.data(), a.scale.data(), a.bias.data(), scratch.data(),
                                    o);
    });
    return out;
  }
  const RowRanges ranges = row_ranges(fn, row_ranges_obj, a.shape.out_height);
  fill_nan_if_ranged(row_ranges_obj, out);
  const std::size_t bytes = k.packed_qs8_bytes(a.shape);
  expect_packed_size(fn, k.isa, bytes);
  AlignedBytes packed(bytes);
  without_gil([&] {
    k.pack_qs8(a.shape, w.data(), packed.ptr.get());
    k.quantize_input(a.x.data(), a.pre_bias_ptr, pixels, a.shape.channels, input_scale,
                     scratch.data());
    for (const auto& r : ranges) {
      k.run_rows_qs8(a.shape, scratch.data(), packed.ptr.get(), w_scale.data(), input_scale,
                     a.scale.data(), a.bias.data(), r.first, r.second, o);
    }
  });
  return out;
}

float dwconv_input_absmax(const py::object& x_obj, const py::object& pre_bias_obj,
                          const py::object& isa_obj) {
  constexpr const char* fn = "dwconv_input_absmax";
  const auto x = as_array<float>(x_obj, fn, "x");
  const std::size_t c = channels_last(x, fn, "x");
  const float* pb = nullptr;
  const Ready<float> pre_bias = optional_channels(pre_bias_obj, fn, "pre_bias", c, &pb);
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / c;
  const DWConvKernels& k = family_kernels(fn, isa_obj, &dwconv_kernels_for);
  float result = 0.0f;
  without_gil([&] { result = k.input_absmax(x.data(), pb, pixels, c); });
  return result;
}

py::array_t<std::int8_t> dwconv_quantize_input(const py::object& x_obj,
                                               const py::object& pre_bias_obj, double input_scale,
                                               const py::object& isa_obj) {
  constexpr const char* fn = "dwconv_quantize_input";
  const auto x = as_array<float>(x_obj, fn, "x");
  const std::size_t c = channels_last(x, fn, "x");
  const float* pb = nullptr;
  const Ready<float> pre_bias = optional_channels(pre_bias_obj, fn, "pre_bias", c, &pb);
  const float s = input_scale > 0.0 && input_scale <= std::numeric_limits<float>::max()
                      ? static_cast<float>(input_scale)
                      : 0.0f;
  if (!(s > 0.0f)) {
    throw py::value_error(
        "dwconv_quantize_input: input_scale must be finite and > 0 as a "
        "float32");
  }
  const DWConvKernels& k = family_kernels(fn, isa_obj, &dwconv_kernels_for);
  py::array_t<std::int8_t> q(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  std::int8_t* qp = q.mutable_data();
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / c;
  without_gil([&] { k.quantize_input(x.data(), pb, pixels, c, s, qp); });
  return q;
}

// --- fully connected --------------------------------------------------------------------

py::array_t<float> fc_f32(const py::object& x_obj, const py::object& w_obj,
                          const py::object& bias_obj, const py::object& isa_obj) {
  constexpr const char* fn = "fc_f32";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("C")});
  const auto w = as_array<float>(w_obj, fn, "w");
  expect_shape(w, fn, "w", {any("O"), exactly(dim(x, 0))});
  const auto bias = as_array<float>(bias_obj, fn, "bias");
  expect_shape(bias, fn, "bias", {exactly(dim(w, 0))});
  auto out = new_f32({w.shape(0)});
  float* o = out.mutable_data();
  const FCKernels& k = family_kernels(fn, isa_obj, &fc_kernels_for);
  without_gil([&] { k.f32(dim(x, 0), dim(w, 0), x.data(), w.data(), bias.data(), o); });
  return out;
}

py::array_t<float> fc_qs8(const py::object& x_obj, const py::object& w_obj,
                          const py::object& w_scale_obj, const py::object& bias_obj,
                          const py::object& isa_obj) {
  constexpr const char* fn = "fc_qs8";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("C")});
  const auto w = as_array<std::int8_t>(w_obj, fn, "w");
  expect_shape(w, fn, "w", {any("O"), exactly(dim(x, 0))});
  const auto w_scale = as_array<float>(w_scale_obj, fn, "w_scale");
  expect_shape(w_scale, fn, "w_scale", {exactly(dim(w, 0))});
  const auto bias = as_array<float>(bias_obj, fn, "bias");
  expect_shape(bias, fn, "bias", {exactly(dim(w, 0))});
  auto out = new_f32({w.shape(0)});
  float* o = out.mutable_data();
  const FCKernels& k = family_kernels(fn, isa_obj, &fc_kernels_for);
  without_gil(
      [&] { k.qs8(dim(x, 0), dim(w, 0), x.data(), w.data(), w_scale.data(), bias.data(), o); });
  return out;
}

py::array_t<float> fc_bitplane8(const py::object& x_obj, const py::object& planes_obj,
                                const py::object& w_scale_obj, const py::object& bias_obj,
                                const py::object& isa_obj) {
  constexpr const char* fn = "fc_bitplane8";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("C")});
  const std::size_t c = dim(x, 0);
  const auto planes = as_array<std::uint64_t>(planes_obj, fn, "planes");
  expect_shape(planes, fn, "planes", {exactly(8), any("O"), exactly(words_for_channels(c))});
  expect_zero_tail(planes, c, fn, "planes");
  const std::size_t n_out = dim(planes, 1);
  const auto w_scale = as_array<float>(w_scale_obj, fn, "w_scale");
  expect_shape(w_scale, fn, "w_scale", {exactly(n_out)});
  const auto bias = as_array<float>(bias_obj, fn, "bias");
  expect_shape(bias, fn, "bias", {exactly(n_out)});
  auto out = new_f32({static_cast<py::ssize_t>(n_out)});
  float* o = out.mutable_data();
  const FCKernels& k = family_kernels(fn, isa_obj, &fc_kernels_for);
  without_gil(
      [&] { k.bitplane8(c, n_out, x.data(), planes.data(), w_scale.data(), bias.data(), o); });
  return out;
}

// --- binary FC --------------------------------------------------------------------------

py::array_t<float> bfc(const py::object& x_obj, const py::object& w_obj, std::int64_t in_channels,
                       const py::object& scale_obj, const py::object& bias_obj,
                       const py::object& isa_obj) {
  constexpr const char* fn = "bfc";
  const auto x = as_array<std::uint64_t>(x_obj, fn, "x_bits");
  const auto w = as_array<std::uint64_t>(w_obj, fn, "w_bits");
  const auto scale = as_array<float>(scale_obj, fn, "scale");
  const auto bias = as_array<float>(bias_obj, fn, "bias");
  const std::size_t ci = positive(in_channels, fn, "in_channels");
  if (ci > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw py::value_error("bfc: in_channels " + std::to_string(ci) + " overflows the int32 dot");
  }
  const std::size_t words = words_for_channels(ci);
  expect_shape(x, fn, "x_bits", {exactly(words)});
  expect_shape(w, fn, "w_bits", {any("O"), exactly(words)});
  expect_zero_tail(x, ci, fn, "x_bits");
  expect_zero_tail(w, ci, fn, "w_bits");
  const std::size_t n_out = dim(w, 0);
  expect_shape(scale, fn, "scale", {exactly(n_out)});
  expect_shape(bias, fn, "bias", {exactly(n_out)});
  auto out = new_f32({static_cast<py::ssize_t>(n_out)});
  float* o = out.mutable_data();
  const BFCKernels& k = family_kernels(fn, isa_obj, &bfc_kernels_for);
  without_gil([&] { k.run(ci, n_out, x.data(), w.data(), scale.data(), bias.data(), o); });
  return out;
}

// --- dense conv -------------------------------------------------------------------------

py::array_t<float> conv2d_f32(const py::object& x_obj, const py::object& w_obj,
                              const py::object& bias_obj, std::int64_t stride_h,
                              std::int64_t stride_w, std::int64_t pad_top, std::int64_t pad_left,
                              std::int64_t pad_bottom, std::int64_t pad_right, bool relu,
                              const py::object& isa_obj, const py::object& row_ranges_obj) {
  constexpr const char* fn = "conv2d_f32";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("Ci")});
  const auto w = as_array<float>(w_obj, fn, "w");
  expect_shape(w, fn, "w", {any("Co"), any("kh"), any("kw"), exactly(dim(x, 2))});
  const std::size_t co = dim(w, 0), kh = dim(w, 1), kw = dim(w, 2);
  Ready<float> bias;
  std::vector<float> zero_bias;
  const float* b = nullptr;
  if (bias_obj.is_none()) {
    zero_bias.assign(co, 0.0f);  // the kernel's bias is never null
    b = zero_bias.data();
  } else {
    bias = as_array<float>(bias_obj, fn, "bias");
    expect_shape(bias, fn, "bias", {exactly(co)});
    b = bias.data();
  }
  const std::size_t sh = positive(stride_h, fn, "stride_h");
  const std::size_t sw = positive(stride_w, fn, "stride_w");
  // A pad of a whole kernel or more only adds rows of bare bias: refused as a likely mistake
  // (and it keeps the output size bounded by the input's).
  const std::int64_t pads[4] = {pad_top, pad_left, pad_bottom, pad_right};
  const char* pad_names[4] = {"pad_top", "pad_left", "pad_bottom", "pad_right"};
  for (int i = 0; i < 4; ++i) {
    const std::size_t limit = (i % 2 == 0) ? kh : kw;
    if (pads[i] < 0 || static_cast<std::size_t>(pads[i]) >= limit) {
      throw py::value_error(std::string(fn) + ": " + pad_names[i] + " must be in [0, " +
                            std::to_string(limit - 1) + "] for this kernel, got " +
                            std::to_string(pads[i]));
    }
  }
  const std::size_t pt = static_cast<std::size_t>(pad_top), pl = static_cast<std::size_t>(pad_left);
  const std::size_t pb = static_cast<std::size_t>(pad_bottom);
  const std::size_t pr = static_cast<std::size_t>(pad_right);
  const std::size_t h = dim(x, 0), wd = dim(x, 1);
  if (h + pt + pb < kh || wd + pl + pr < kw) {
    throw py::value_error("conv2d_f32: the padded input " + std::to_string(h + pt + pb) + "x" +
                          std::to_string(wd + pl + pr) + " is smaller than the kernel " +
                          std::to_string(kh) + "x" + std::to_string(kw));
  }
  const Conv2DShape shape{h,
                          wd,
                          dim(x, 2),
                          co,
                          kh,
                          kw,
                          sh,
                          sw,
                          pt,
                          pl,
                          pb,
                          pr,
                          (h + pt + pb - kh) / sh + 1,
                          (wd + pl + pr - kw) / sw + 1};
  auto out = new_f32({static_cast<py::ssize_t>(shape.out_height),
                      static_cast<py::ssize_t>(shape.out_width), static_cast<py::ssize_t>(co)});
  float* o = out.mutable_data();
  if (isa_obj.is_none() && row_ranges_obj.is_none()) {
    without_gil([&] { conv2d_f32_nhwc__reference(shape, x.data(), w.data(), b, relu, o); });
    return out;
  }
  const Conv2DKernels& k = family_kernels(fn, isa_obj, &conv2d_kernels_for);
  const RowRanges ranges = row_ranges(fn, row_ranges_obj, shape.out_height);
  fill_nan_if_ranged(row_ranges_obj, out);
  const std::size_t bytes = k.packed_bytes(shape);
  expect_packed_size(fn, k.isa, bytes);
  AlignedBytes packed(bytes);
  without_gil([&] {
    k.pack(shape, w.data(), packed.ptr.get());
    for (const auto& r : ranges) {
      k.run_rows(shape, x.data(), packed.ptr.get(), b, relu, r.first, r.second, o);
    }
  });
  return out;
}

// --- element-wise -----------------------------------------------------------------------

// The output array; with `inplace` it starts as a copy of x and the kernel is called with
// out == in, which exercises the aliasing the kernels promise to allow.
py::array_t<float> output_like(const Ready<float>& x, bool inplace) {
  py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  if (inplace && x.size() > 0) {
    std::memcpy(out.mutable_data(), x.data(), static_cast<std::size_t>(x.size()) * sizeof(float));
  }
  return out;
}

// affine, prelu and mul_channel: x [..., C] and per-channel parameters, checked in that order
// (channel_input, then the caller's per_channel calls), then run_channel_op runs
// body(kernels, in, pixels, C, out) without the GIL, in place when asked.
struct ChannelInput {
  Ready<float> x;
  std::size_t channels;
};

ChannelInput channel_input(const char* fn, const py::object& x_obj) {
  auto x = as_array<float>(x_obj, fn, "x");
  const std::size_t c = channels_last(x, fn, "x");
  return {std::move(x), c};
}

template <class Body>
py::array_t<float> run_channel_op(const char* fn, const ChannelInput& x, bool inplace,
                                  const py::object& isa_obj, Body&& body) {
  auto out = output_like(x.x, inplace);
  float* o = out.mutable_data();
  const float* in = inplace ? o : x.x.data();
  const std::size_t pixels = static_cast<std::size_t>(x.x.size()) / x.channels;
  const ElementwiseKernels& k = family_kernels(fn, isa_obj, &elementwise_kernels_for);
  without_gil([&] { body(k, in, pixels, x.channels, o); });
  return out;
}

py::array_t<float> affine(const py::object& x_obj, const py::object& scale_obj,
                          const py::object& bias_obj, bool inplace, const py::object& isa_obj) {
  constexpr const char* fn = "affine";
  const ChannelInput x = channel_input(fn, x_obj);
  const auto scale = per_channel(scale_obj, fn, "scale", x.channels);
  const auto bias = per_channel(bias_obj, fn, "bias", x.channels);
  return run_channel_op(
      fn, x, inplace, isa_obj,
      [&](const ElementwiseKernels& k, const float* in, std::size_t pixels, std::size_t c,
          float* o) { k.affine(in, pixels, c, scale.data(), bias.data(), o); });
}

py::array_t<float> prelu(const py::object& x_obj, const py::object& slope_obj, bool inplace,
                         const py::object& isa_obj) {
  constexpr const char* fn = "prelu";
  const ChannelInput x = channel_input(fn, x_obj);
  const auto slope = per_channel(slope_obj, fn, "slope", x.channels);
  return run_channel_op(fn, x, inplace, isa_obj,
                        [&](const ElementwiseKernels& k, const float* in, std::size_t pixels,
                            std::size_t c, float* o) { k.prelu(in, pixels, c, slope.data(), o); });
}

py::array_t<float> mul_channel(const py::object& x_obj, const py::object& s_obj, bool inplace,
                               const py::object& isa_obj) {
  constexpr const char* fn = "mul_channel";
  const ChannelInput x = channel_input(fn, x_obj);
  const auto s = per_channel(s_obj, fn, "s", x.channels);
  return run_channel_op(
      fn, x, inplace, isa_obj,
      [&](const ElementwiseKernels& k, const float* in, std::size_t pixels, std::size_t c,
          float* o) { k.mul_channel(in, pixels, c, s.data(), o); });
}

using UnaryKernel = void (*)(const float*, std::size_t, float*);

py::array_t<float> unary(const char* fn, UnaryKernel ElementwiseKernels::* which,
                         const py::object& x_obj, bool inplace, const py::object& isa_obj) {
  const UnaryKernel Kernel = family_kernels(fn, isa_obj, &elementwise_kernels_for).*which;
  const auto x = as_array<float>(x_obj, fn, "x");
  auto out = output_like(x, inplace);
  float* o = out.mutable_data();
  const float* in = inplace ? o : x.data();
  const std::size_t n = static_cast<std::size_t>(x.size());
  without_gil([&] { Kernel(in, n, o); });
  return out;
}

py::array_t<float> add(const py::object& a_obj, const py::object& b_obj, bool inplace,
                       const py::object& isa_obj) {
  constexpr const char* fn = "add";
  const auto a = as_array<float>(a_obj, fn, "a");
  const auto b = as_array<float>(b_obj, fn, "b");
  if (a.ndim() != b.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), b.shape())) {
    throw py::value_error("add: a and b must have the same shape (no broadcasting), got " +
                          shape_str(a) + " and " + shape_str(b));
  }
  auto out = output_like(a, inplace);
  float* o = out.mutable_data();
  const float* in = inplace ? o : a.data();
  const std::size_t n = static_cast<std::size_t>(a.size());
  const ElementwiseKernels& k = family_kernels(fn, isa_obj, &elementwise_kernels_for);
  without_gil([&] { k.add(in, b.data(), n, o); });
  return out;
}

// --- pooling and concat -----------------------------------------------------------------

py::array_t<float> avgpool(const py::object& x_obj, std::int64_t kernel_h, std::int64_t kernel_w,
                           std::int64_t stride_h, std::int64_t stride_w, const py::object& isa_obj,
                           const py::object& row_ranges_obj) {
  constexpr const char* fn = "avgpool";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t kh = positive(kernel_h, fn, "kernel_h");
  const std::size_t kw = positive(kernel_w, fn, "kernel_w");
  const std::size_t sh = positive(stride_h, fn, "stride_h");
  const std::size_t sw = positive(stride_w, fn, "stride_w");
  const std::size_t h = dim(x, 0), w = dim(x, 1);
  if (h < kh || w < kw) {
    throw py::value_error("avgpool: the input " + std::to_string(h) + "x" + std::to_string(w) +
                          " is smaller than the kernel " + std::to_string(kh) + "x" +
                          std::to_string(kw));
  }
  const std::size_t ho = (h - kh + sh - 1) / sh + 1;
  const std::size_t wo = (w - kw + sw - 1) / sw + 1;
  // Ceil mode with stride > kernel can put a last window wholly past the image, which
  // PyTorch drops and this op's formula does not: refused rather than disagreeing.
  if ((ho - 1) * sh >= h || (wo - 1) * sw >= w) {
    throw py::value_error(
        "avgpool: with this stride the last ceil-mode window starts past the "
        "image; use stride <= kernel");
  }
  const AvgPoolShape shape{h, w, dim(x, 2), kh, kw, sh, sw, ho, wo};
  auto out = new_f32({static_cast<py::ssize_t>(ho), static_cast<py::ssize_t>(wo), x.shape(2)});
  float* o = out.mutable_data();
  const PoolKernels& k = family_kernels(fn, isa_obj, &pool_kernels_for);
  return run_whole_or_ranges(
      fn, row_ranges_obj, ho, out, [&] { k.avgpool(shape, x.data(), o); },
      [&](std::size_t begin, std::size_t end) { k.avgpool_rows(shape, x.data(), begin, end, o); });
}

py::array_t<float> maxpool(const py::object& x_obj, std::int64_t kernel_h, std::int64_t kernel_w,
                           std::int64_t stride_h, std::int64_t stride_w, std::int64_t pad_top,
                           std::int64_t pad_left, std::int64_t pad_bottom, std::int64_t pad_right,
                           const py::object& isa_obj, const py::object& row_ranges_obj) {
  constexpr const char* fn = "maxpool";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t kh = positive(kernel_h, fn, "kernel_h");
  const std::size_t kw = positive(kernel_w, fn, "kernel_w");
  const std::size_t sh = positive(stride_h, fn, "stride_h");
  const std::size_t sw = positive(stride_w, fn, "stride_w");
  const std::int64_t pads[] = {pad_top, pad_left, pad_bottom, pad_right};
  const std::int64_t limits[] = {kernel_h, kernel_w, kernel_h, kernel_w};
  for (int i = 0; i < 4; ++i) {
    // The kernel's contract (pool.h): pads < kernel, so that every window holds a pixel.
    if (pads[i] < 0 || pads[i] >= limits[i]) {
      throw py::value_error("maxpool: pads must be in [0, kernel - 1]");
    }
  }
  const std::size_t h = dim(x, 0), w = dim(x, 1);
  const std::size_t ph = h + static_cast<std::size_t>(pad_top + pad_bottom);
  const std::size_t pw = w + static_cast<std::size_t>(pad_left + pad_right);
  if (ph < kh || pw < kw) {
    throw py::value_error("maxpool: the kernel is larger than the padded input");
  }
  const std::size_t ho = (ph - kh) / sh + 1, wo = (pw - kw) / sw + 1;
  const MaxPoolShape shape{h,
                           w,
                           dim(x, 2),
                           kh,
                           kw,
                           sh,
                           sw,
                           static_cast<std::size_t>(pad_top),
                           static_cast<std::size_t>(pad_left),
                           ho,
                           wo};
  auto out = new_f32({static_cast<py::ssize_t>(ho), static_cast<py::ssize_t>(wo), x.shape(2)});
  float* o = out.mutable_data();
  const PoolKernels& k = family_kernels(fn, isa_obj, &pool_kernels_for);
  return run_whole_or_ranges(
      fn, row_ranges_obj, ho, out, [&] { k.maxpool(shape, x.data(), o); },
      [&](std::size_t begin, std::size_t end) { k.maxpool_rows(shape, x.data(), begin, end, o); });
}

py::array_t<float> avgpool2d(const py::object& x_obj, std::int64_t kernel_h, std::int64_t kernel_w,
                             std::int64_t stride_h, std::int64_t stride_w, std::int64_t pad_top,
                             std::int64_t pad_left, std::int64_t pad_bottom, std::int64_t pad_right,
                             bool ceil_mode, bool count_include_pad, const py::object& isa_obj,
                             const py::object& row_ranges_obj) {
  constexpr const char* fn = "avgpool2d";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t kh = positive(kernel_h, fn, "kernel_h");
  const std::size_t kw = positive(kernel_w, fn, "kernel_w");
  const std::size_t sh = positive(stride_h, fn, "stride_h");
  const std::size_t sw = positive(stride_w, fn, "stride_w");
  const std::int64_t pads[] = {pad_top, pad_left, pad_bottom, pad_right};
  const std::int64_t limits[] = {kernel_h, kernel_w, kernel_h, kernel_w};
  for (int i = 0; i < 4; ++i) {
    // The kernel's contract (pool.h): pads < kernel, so that every window holds a pixel.
    if (pads[i] < 0 || pads[i] >= limits[i]) {
      throw py::value_error("avgpool2d: pads must be in [0, kernel - 1]");
    }
  }
  const std::size_t pt = static_cast<std::size_t>(pad_top);
  const std::size_t pl = static_cast<std::size_t>(pad_left);
  const std::size_t pb = static_cast<std::size_t>(pad_bottom);
  const std::size_t pr = static_cast<std::size_t>(pad_right);
  const std::size_t h = dim(x, 0), w = dim(x, 1);
  if (h + pt + pb < kh || w + pl + pr < kw) {
    throw py::value_error("avgpool2d: the kernel is larger than the padded input");
  }
  // PyTorch's output size (docs/format.md, AVGPOOL2D).
  const auto out_size = [&](std::size_t n, std::size_t a, std::size_t b, std::size_t k,
                            std::size_t s) {
    const std::size_t span = n + a + b - k;
    std::size_t o = (ceil_mode ? span + s - 1 : span) / s + 1;
    if (ceil_mode && (o - 1) * s >= n + a) --o;
    return o;
  };
  const std::size_t ho = out_size(h, pt, pb, kh, sh), wo = out_size(w, pl, pr, kw, sw);
  const AvgPool2DShape shape{h,  w,  dim(x, 2), kh, kw, sh, sw,
                             pt, pl, pb,        pr, ho, wo, count_include_pad};
  auto out = new_f32({static_cast<py::ssize_t>(ho), static_cast<py::ssize_t>(wo), x.shape(2)});
  float* o = out.mutable_data();
  const PoolKernels& k = family_kernels(fn, isa_obj, &pool_kernels_for);
  return run_whole_or_ranges(
      fn, row_ranges_obj, ho, out, [&] { k.avgpool2d(shape, x.data(), o); },
      [&](std::size_t begin, std::size_t end) {
        k.avgpool2d_rows(shape, x.data(), begin, end, o);
      });
}

// RESIZE (resize.h): x [H, W, C] -> [out_height, out_width, C]; ratios finite and >= 0.
py::array_t<float> resize(const py::object& x_obj, std::int64_t out_height, std::int64_t out_width,
                          bool bilinear, bool half_pixel, float ratio_h, float ratio_w,
                          const py::object& isa_obj, const py::object& row_ranges_obj) {
  constexpr const char* fn = "resize";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t oh = positive(out_height, fn, "out_height");
  const std::size_t ow = positive(out_width, fn, "out_width");
  if (!(std::isfinite(ratio_h) && ratio_h >= 0.0f && std::isfinite(ratio_w) && ratio_w >= 0.0f)) {
    throw py::value_error("resize: ratios must be finite and >= 0");
  }
  const ResizeShape shape{dim(x, 0), dim(x, 1),  dim(x, 2), oh,     ow,
                          bilinear,  half_pixel, ratio_h,   ratio_w};
  auto out = new_f32({static_cast<py::ssize_t>(oh), static_cast<py::ssize_t>(ow), x.shape(2)});
  float* o = out.mutable_data();
  const ResizeKernels& k = family_kernels(fn, isa_obj, &resize_kernels_for);
  return run_whole_or_ranges(
      fn, row_ranges_obj, oh, out, [&] { k.run_rows(shape, x.data(), 0, oh, o); },
      [&](std::size_t begin, std::size_t end) { k.run_rows(shape, x.data(), begin, end, o); });
}

py::array_t<float> clip(const py::object& x_obj, float lo, float hi, bool inplace,
                        const py::object& isa_obj) {
  constexpr const char* fn = "clip";
  const auto x = as_array<float>(x_obj, fn, "x");
  auto out = output_like(x, inplace);
  float* o = out.mutable_data();
  const float* in = inplace ? o : x.data();
  const std::size_t n = static_cast<std::size_t>(x.size());
  const ElementwiseKernels& k = family_kernels(fn, isa_obj, &elementwise_kernels_for);
  without_gil([&] { k.clip(in, n, lo, hi, o); });
  return out;
}

// Softmax over the last axis of x (C = its length), each leading index a pixel.
py::array_t<float> softmax(const py::object& x_obj, bool log_softmax, bool inplace,
                           const py::object& isa_obj) {
  constexpr const char* fn = "softmax";
  const ChannelInput x = channel_input(fn, x_obj);
  return run_channel_op(fn, x, inplace, isa_obj,
                        [&](const ElementwiseKernels& k, const float* in, std::size_t pixels,
                            std::size_t c, float* o) { k.softmax(in, pixels, c, log_softmax, o); });
}

py::array_t<float> global_avgpool(const py::object& x_obj, const py::object& isa_obj) {
  constexpr const char* fn = "global_avgpool";
  const auto x = as_array<float>(x_obj, fn, "x");
  expect_shape(x, fn, "x", {any("H"), any("W"), any("C")});
  const std::size_t c = dim(x, 2);
  auto out = new_f32({x.shape(2)});
  float* o = out.mutable_data();
  const PoolKernels& k = family_kernels(fn, isa_obj, &pool_kernels_for);
  without_gil([&] { k.global_avgpool(x.data(), dim(x, 0) * dim(x, 1), c, o); });
  return out;
}

py::array_t<float> concat(const py::object& inputs_obj) {
  constexpr const char* fn = "concat";
  if (!py::isinstance<py::list>(inputs_obj) && !py::isinstance<py::tuple>(inputs_obj)) {
    throw py::type_error("concat: inputs must be a list or tuple of float32 arrays, got " +
                         std::string(py::str(py::type::of(inputs_obj).attr("__name__"))));
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(inputs_obj);
  if (seq.size() == 0) throw py::value_error("concat: inputs must not be empty");

  std::vector<Ready<float>> arrays;
  std::vector<const float*> ptrs;
  std::vector<std::size_t> channels;
  std::size_t total = 0;
  for (std::size_t i = 0; i < seq.size(); ++i) {
    const std::string name = "inputs[" + std::to_string(i) + "]";
    arrays.push_back(as_array<float>(seq[i], fn, name.c_str()));
    const Ready<float>& a = arrays.back();
    channels.push_back(channels_last(a, fn, name.c_str()));
    const Ready<float>& first = arrays.front();
    if (a.ndim() != first.ndim() ||
        !std::equal(a.shape(), a.shape() + a.ndim() - 1, first.shape())) {
      throw py::value_error(
          "concat: every input must have the leading shape of inputs[0], "
          "got " +
          shape_str(first) + " and " + name + " " + shape_str(a));
    }
    total += channels.back();
  }
  for (const auto& a : arrays) ptrs.push_back(a.data());
  const Ready<float>& first = arrays.front();
  std::vector<py::ssize_t> shape(first.shape(), first.shape() + first.ndim());
  shape.back() = static_cast<py::ssize_t>(total);
  auto out = new_f32(shape);
  float* o = out.mutable_data();
  const std::size_t pixels = static_cast<std::size_t>(first.size()) / channels.front();
  without_gil([&] {
    concat_channels_f32__reference(ptrs.data(), channels.data(), ptrs.size(), pixels, o);
  });
  return out;
}

// --- fused epilogue ---------------------------------------------------------------------

py::tuple epilogue(const py::object& x_obj, const py::object& channel_scale_obj,
                   const py::object& residual_obj, const py::object& prelu_slope_obj,
                   const py::object& post_scale_obj, const py::object& post_bias_obj,
                   bool write_float, const py::object& threshold_obj, const py::object& isa_obj,
                   const py::object& pixel_ranges_obj, const py::object& clip_obj) {
  constexpr const char* fn = "epilogue";
  const auto x = as_array<float>(x_obj, fn, "x");
  const std::size_t c = channels_last(x, fn, "x");
  const std::size_t pixels = static_cast<std::size_t>(x.size()) / c;
  Epilogue ep;
  const auto cs = optional_channels(channel_scale_obj, fn, "channel_scale", c, &ep.channel_scale);
  const auto slope = optional_channels(prelu_slope_obj, fn, "prelu_slope", c, &ep.prelu_slope);
  const auto ps = optional_channels(post_scale_obj, fn, "post_scale", c, &ep.post_scale);
  const auto pbias = optional_channels(post_bias_obj, fn, "post_bias", c, &ep.post_bias);
  if ((ep.post_scale == nullptr) != (ep.post_bias == nullptr)) {
    throw py::value_error("epilogue: post_scale and post_bias go together (both or none)");
  }
  const auto th = optional_channels(threshold_obj, fn, "threshold", c, &ep.threshold);
  Ready<float> residual;
  if (!residual_obj.is_none()) {
    residual = as_array<float>(residual_obj, fn, "residual");
    const std::size_t rc = channels_last(residual, fn, "residual");
    if (c % rc != 0 || static_cast<std::size_t>(residual.size()) / rc != pixels) {
      throw py::value_error(
          "epilogue: residual must have the pixels of x and a channel count "
          "dividing " +
          std::to_string(c) + ", got shape " + shape_str(residual));
    }
    ep.residual = residual.data();
    ep.residual_channels = rc;
  }
  ep.write_float = write_float;
  if (!clip_obj.is_none()) {
    const auto bounds = clip_obj.cast<std::pair<float, float>>();
    // The CLIP op's load-time rule (build_clip): the kernels assume it.
    if (std::isnan(bounds.first) || std::isnan(bounds.second) || bounds.first > bounds.second) {
      throw py::value_error("epilogue: clip must be (lo, hi) with lo <= hi, neither NaN, got (" +
                            std::to_string(bounds.first) + ", " + std::to_string(bounds.second) +
                            ")");
    }
    ep.clip = true;
    ep.clip_lo = bounds.first;
    ep.clip_hi = bounds.second;
  }
  const EpilogueKernels& k = family_kernels(fn, isa_obj, &epilogue_kernels_for);
  const RowRanges ranges = row_ranges(fn, pixel_ranges_obj, pixels);

  py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  float* o = out.mutable_data();
  if (x.size() > 0) {
    std::memcpy(o, x.data(), static_cast<std::size_t>(x.size()) * sizeof(float));
  }
  py::object bits_obj = py::none();
  py::array_t<std::uint64_t> bits;
  if (ep.threshold != nullptr) {
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    shape.back() = static_cast<py::ssize_t>(words_for_channels(c));
    bits = py::array_t<std::uint64_t>(shape);
    // Words no range covers keep this pattern, so a test sees a kernel writing outside them.
    std::fill(bits.mutable_data(), bits.mutable_data() + bits.size(), ~std::uint64_t{0});
    ep.bits = bits.mutable_data();
    bits_obj = bits;
  }
  without_gil([&] {
    for (const auto& r : ranges) k.rows(ep, c, r.first, r.second, o);
  });
  return py::make_tuple(out, bits_obj);
}

}  // namespace

void register_kernel_testing(py::module_& testing) {
  py::module_ m = testing.def_submodule("kernels", "portable microkernels, for tests only");

  m.def("bconv2d", &bconv2d, py::arg("x_bits"), py::arg("w_bits"), py::arg("in_channels"),
        py::arg("scale"), py::arg("bias"), py::arg("padding") = "zero", py::arg("isa") = py::none(),
        py::arg("row_ranges") = py::none(),
        "Binary conv, stride 1, 'same': x_bits uint64 [H, W, words], w_bits uint64\n"
        "[Co, k, k, words] (k 1 or 3), scale/bias float32 [Co], padding 'zero' | 'one'.\n"
        "Returns float32 [H, W, Co] = float(dot) * scale + bias.\n"
        "isa None: the reference kernel. isa a name from bconv_variants() (or an ISA from\n"
        "supported_isas()): that variant's pack_weight, then run_rows over each (begin, end)\n"
        "of row_ranges in order (default: all rows; rows no range covers are NaN).");
  m.def("bitpack", &bitpack_isa, py::arg("x"), py::arg("thresholds") = py::none(),
        py::arg("isa") = "scalar",
        "Bitpacking with one ISA's kernel: x float32 [..., C], thresholds [C] or None ->\n"
        "uint64 [..., words(C)].");
  m.def("dwconv3x3_f32", &dwconv3x3_f32, py::arg("x"), py::arg("pre_bias"), py::arg("w"),
        py::arg("scale"), py::arg("bias"), py::arg("stride_h") = 1, py::arg("stride_w") = 1,
        py::arg("multiplier") = 1, py::arg("isa") = py::none(), py::arg("row_ranges") = py::none(),
        py::arg("dilation") = 1,
        "Depthwise 3x3, zero padding = dilation (stride 1 when > 1): x float32 [H, W, C],\n"
        "pre_bias [C] or None,\n"
        "w [multiplier * C, 9], scale/bias [multiplier * C]. Returns [Ho, Wo, multiplier * C],\n"
        "channel j * C + c = conv j of channel c.\n"
        "isa None: the whole-image reference. isa a name from supported_isas(): that ISA's\n"
        "pack_f32, then run_rows_f32 over each (begin, end) of row_ranges in order (default:\n"
        "all rows; output rows no range covers are NaN).");
  m.def("dwconv3x3_qs8", &dwconv3x3_qs8, py::arg("x"), py::arg("pre_bias"), py::arg("input_scale"),
        py::arg("w"), py::arg("w_scale"), py::arg("scale"), py::arg("bias"),
        py::arg("stride_h") = 1, py::arg("stride_w") = 1, py::arg("multiplier") = 1,
        py::arg("isa") = py::none(), py::arg("row_ranges") = py::none(),
        "INT8 depthwise 3x3: as dwconv3x3_f32 (isa, row_ranges too: that ISA's input_absmax,\n"
        "quantize_input, pack_qs8 and run_rows_qs8) with w int8 in [-127, 127] and w_scale\n"
        "float32 [multiplier * C]; input_scale a float > 0 (rounded to float32), or None for\n"
        "the dynamic scale max|x + pre_bias| / 127 (1 when that is 0).");
  m.def("dwconv_input_absmax", &dwconv_input_absmax, py::arg("x"), py::arg("pre_bias") = py::none(),
        py::arg("isa") = py::none(),
        "max |x + pre_bias| over a channels-last float32 array (NaN ignored).");
  m.def("dwconv_quantize_input", &dwconv_quantize_input, py::arg("x"), py::arg("pre_bias"),
        py::arg("input_scale"), py::arg("isa") = py::none(),
        "INT8 codes clamp(nearbyint((x + pre_bias) / input_scale), -127, 127), NaN -> 0, of a\n"
        "channels-last float32 array, with one ISA's kernel.");
  m.def("fc_f32", &fc_f32, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("isa") = py::none(),
        "x float32 [C], w float32 [O, C], bias [O] -> [O].");
  m.def("fc_qs8", &fc_qs8, py::arg("x"), py::arg("w"), py::arg("w_scale"), py::arg("bias"),
        py::arg("isa") = py::none(),
        "x float32 [C], w int8 [O, C], w_scale/bias float32 [O] -> [O].");
  m.def("fc_bitplane8", &fc_bitplane8, py::arg("x"), py::arg("planes"), py::arg("w_scale"),
        py::arg("bias"), py::arg("isa") = py::none(),
        "x float32 [C], planes uint64 [8, O, words(C)] (stored bit = 1 - bit_b(B)),\n"
        "w_scale/bias float32 [O] -> [O], w = w_scale * (2B - 255).");
  m.def("bfc", &bfc, py::arg("x_bits"), py::arg("w_bits"), py::arg("in_channels"), py::arg("scale"),
        py::arg("bias"), py::arg("isa") = py::none(),
        "Binary FC: x_bits uint64 [words(C)], w_bits uint64 [O, words(C)] (tail bits 0),\n"
        "scale/bias float32 [O] -> float32 [O] = f32(C - 2*popcount(x ^ w[o])) * scale + bias.");
  m.def("conv2d_f32", &conv2d_f32, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(),
        py::arg("stride_h") = 1, py::arg("stride_w") = 1, py::arg("pad_top") = 0,
        py::arg("pad_left") = 0, py::arg("pad_bottom") = 0, py::arg("pad_right") = 0,
        py::arg("relu") = false, py::arg("isa") = py::none(), py::arg("row_ranges") = py::none(),
        "Dense conv, zero padding: x float32 [H, W, Ci], w [Co, kh, kw, Ci], bias [Co] or\n"
        "None; each pad in [0, kernel - 1]. Returns [Ho, Wo, Co]. isa / row_ranges as\n"
        "dwconv3x3_f32 (that ISA's pack and run_rows).");
  m.def("affine", &affine, py::arg("x"), py::arg("scale"), py::arg("bias"),
        py::arg("inplace") = false, py::arg("isa") = py::none(),
        "x * scale[c] + bias[c] over a channels-last array.");
  m.def("prelu", &prelu, py::arg("x"), py::arg("slope"), py::arg("inplace") = false,
        py::arg("isa") = py::none(), "x >= 0 ? x : slope[c] * x over a channels-last array.");
  m.def(
      "relu",
      [](const py::object& x, bool inplace, const py::object& isa) {
        return unary("relu", &ElementwiseKernels::relu, x, inplace, isa);
      },
      py::arg("x"), py::arg("inplace") = false, py::arg("isa") = py::none(),
      "max(x, 0), NaN propagated.");
  m.def(
      "sigmoid",
      [](const py::object& x, bool inplace, const py::object& isa) {
        return unary("sigmoid", &ElementwiseKernels::sigmoid, x, inplace, isa);
      },
      py::arg("x"), py::arg("inplace") = false, py::arg("isa") = py::none(), "1 / (1 + exp(-x)).");
  m.def("add", &add, py::arg("a"), py::arg("b"), py::arg("inplace") = false,
        py::arg("isa") = py::none(), "a + b, same shapes.");
  m.def("mul_channel", &mul_channel, py::arg("x"), py::arg("s"), py::arg("inplace") = false,
        py::arg("isa") = py::none(), "x * s[c] over a channels-last array (SE scaling).");
  m.def("avgpool", &avgpool, py::arg("x"), py::arg("kernel_h"), py::arg("kernel_w"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("isa") = py::none(),
        py::arg("row_ranges") = py::none(),
        "Average pool, no padding, ceil mode, each window averaging the pixels it covers:\n"
        "x float32 [H, W, C] -> [ceil((H - kh) / sh) + 1, ceil((W - kw) / sw) + 1, C].\n"
        "row_ranges: avgpool_rows over each (begin, end) of output rows (others NaN).");
  m.def("global_avgpool", &global_avgpool, py::arg("x"), py::arg("isa") = py::none(),
        "Mean over pixels: x float32 [H, W, C] -> [C].");
  m.def("concat", &concat, py::arg("inputs"),
        "Concatenate channels-last float32 arrays with equal leading shapes; an array may\n"
        "appear several times.");
  m.def("epilogue", &epilogue, py::arg("x"), py::arg("channel_scale") = py::none(),
        py::arg("residual") = py::none(), py::arg("prelu_slope") = py::none(),
        py::arg("post_scale") = py::none(), py::arg("post_bias") = py::none(),
        py::arg("write_float") = true, py::arg("threshold") = py::none(),
        py::arg("isa") = py::none(), py::arg("pixel_ranges") = py::none(),
        py::arg("clip") = py::none(),
        "The fused epilogue (kernels/epilogue/epilogue.h) on a copy of x float32 [..., C]\n"
        "(pixels = all leading axes), residual [..., Cr] with Cr dividing C, per-channel\n"
        "arguments [C] or None, clip (lo, hi) or None (step 5b). Runs rows over each\n"
        "(begin, end) of pixel_ranges (default: all). Returns (out, bits): out the floats\n"
        "(x unchanged when write_float is False), bits uint64 [..., words(C)] when threshold\n"
        "is given (words no range covers are all ones), else None.");
  m.def("maxpool", &maxpool, py::arg("x"), py::arg("kernel_h"), py::arg("kernel_w"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top") = 0, py::arg("pad_left") = 0,
        py::arg("pad_bottom") = 0, py::arg("pad_right") = 0, py::arg("isa") = py::none(),
        py::arg("row_ranges") = py::none(),
        "Max pool, floor mode, padding never wins (pads in [0, kernel - 1]): x float32\n"
        "[H, W, C] -> [(H + pt + pb - kh) / sh + 1, (W + pl + pr - kw) / sw + 1, C]. A window's\n"
        "first NaN wins. row_ranges: maxpool_rows over each (begin, end) (others NaN).");
  m.def("clip", &clip, py::arg("x"), py::arg("lo"), py::arg("hi"), py::arg("inplace") = false,
        py::arg("isa") = py::none(), "x < lo ? lo : (x > hi ? hi : x); NaN passes through.");
  m.def("softmax", &softmax, py::arg("x"), py::arg("log") = false, py::arg("inplace") = false,
        py::arg("isa") = py::none(),
        "Softmax (log=False) or log-softmax (log=True) over the last axis of a float32 array\n"
        "(the SOFTMAX op: max, exp, a double sum in channel order, then e / s or z - log(s)).");
  m.def("avgpool2d", &avgpool2d, py::arg("x"), py::arg("kernel_h"), py::arg("kernel_w"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top") = 0, py::arg("pad_left") = 0,
        py::arg("pad_bottom") = 0, py::arg("pad_right") = 0, py::arg("ceil_mode") = false,
        py::arg("count_include_pad") = true, py::arg("isa") = py::none(),
        py::arg("row_ranges") = py::none(),
        "PyTorch's avg_pool2d (AVGPOOL2D, docs/format.md), pads in [0, kernel - 1]: x float32\n"
        "[H, W, C] -> [Ho, Wo, C]. row_ranges: avgpool2d_rows over each (begin, end) (others\n"
        "NaN).");
  m.def("resize", &resize, py::arg("x"), py::arg("out_height"), py::arg("out_width"),
        py::arg("bilinear"), py::arg("half_pixel"), py::arg("ratio_h"), py::arg("ratio_w"),
        py::arg("isa") = py::none(), py::arg("row_ranges") = py::none(),
        "RESIZE (docs/format.md): x float32 [H, W, C] -> [out_height, out_width, C], nearest or\n"
        "bilinear, corner or half_pixel coordinates, ratios = input pixels per output pixel.\n"
        "row_ranges: run_rows over each (begin, end) (others NaN).");
}

}  // namespace qbinfer
