#include "python/preprocess_binding.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/resample.h"
#include "format/errors.h"
#include "python/shape_str.h"
#include "qbinfer/isa.h"

namespace py = pybind11;

namespace qbinfer {
namespace {

using Int64s = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;

// An axis from (first: (outputs,), weights: (outputs, taps)) over `inputs` pixels.
ResampleAxis make_axis(const Int64s& first, const Floats& weights, std::size_t inputs,
                       const char* what) {
  if (first.ndim() != 1 || weights.ndim() != 2 || weights.shape(0) != first.shape(0)) {
    throw ShapeError(std::string("_resample_normalize: the ") + what +
                     " filter must be first (n,) and weights (n, taps), got " + shape_str(first) +
                     " and " + shape_str(weights));
  }
  return ResampleAxis{first.data(), weights.data(), static_cast<std::size_t>(first.shape(0)),
                      static_cast<std::size_t>(weights.shape(1)), inputs};
}

py::array_t<float> resample_normalize_py(const py::array& src, const Int64s& row_first,
                                         const Floats& row_weights, const Int64s& col_first,
                                         const Floats& col_weights, std::size_t out_channels,
                                         float scale, const Floats& mean, const Floats& std,
                                         const std::optional<std::string>& isa_name) {
  if (!py::isinstance<py::array_t<std::uint8_t>>(src)) {
    throw DtypeError("_resample_normalize: the image must be uint8, got " +
                     std::string(py::str(src.dtype())));
  }
  // Rows may be any distance apart (a window of a larger image), channels packed, pixels packed
  // or, for RGB, 4 bytes apart (RGBX: Pillow's memory, an RGBA array's RGB). Strides of axes of
  // length 1 are never used (numpy leaves them arbitrary).
  const py::ssize_t channels = src.ndim() == 3 ? src.shape(2) : 0;
  const py::ssize_t pixel_stride = src.ndim() == 3 && src.shape(1) > 1 ? src.strides(1) : channels;
  if (src.ndim() != 3 || (channels != 1 && src.strides(2) != 1) ||
      !(pixel_stride == channels || (channels == 3 && pixel_stride == 4)) ||
      (src.shape(0) != 1 && src.strides(0) < src.shape(1) * pixel_stride)) {
    throw ShapeError(
        "_resample_normalize: the image must be H x W x C uint8 with packed pixels (or RGB "
        "pixels 4 bytes apart), got shape " +
        shape_str(src));
  }
  const ResampleAxis rows =
      make_axis(row_first, row_weights, static_cast<std::size_t>(src.shape(0)), "rows");
  const ResampleAxis cols =
      make_axis(col_first, col_weights, static_cast<std::size_t>(src.shape(1)), "columns");
  if (mean.ndim() != 1 || std.ndim() != 1 ||
      static_cast<std::size_t>(mean.shape(0)) < out_channels ||
      static_cast<std::size_t>(std.shape(0)) < out_channels) {
    throw ShapeError("_resample_normalize: mean and std need " + std::to_string(out_channels) +
                     " values, got " + shape_str(mean) + " and " + shape_str(std));
  }
  const Isa isa = isa_name ? isa_from_name(*isa_name) : active_isa();
  py::array_t<float> out({static_cast<py::ssize_t>(rows.outputs),
                          static_cast<py::ssize_t>(cols.outputs),
                          static_cast<py::ssize_t>(out_channels)});
  const ImageView image{static_cast<const std::uint8_t*>(src.data()),
                        src.shape(0) > 1 ? src.strides(0) : 0,
                        static_cast<std::size_t>(pixel_stride), static_cast<std::size_t>(channels)};
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    resample_normalize(image, rows, cols, out_channels, scale, mean.data(), std.data(), dst, isa);
  }
  return out;
}

// The Arrow C data interface's two structs (arrow.apache.org/docs/format/CDataInterface.html),
// a stable ABI: what Pillow's Image.__arrow_c_array__ hands out in its two capsules.
struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  std::int64_t flags;
  std::int64_t n_children;
  ArrowSchema** children;
  ArrowSchema* dictionary;
  void (*release)(ArrowSchema*);
  void* private_data;
};

struct ArrowArray {
  std::int64_t length;
  std::int64_t null_count;
  std::int64_t offset;
  std::int64_t n_buffers;
  std::int64_t n_children;
  const void** buffers;
  ArrowArray** children;
  ArrowArray* dictionary;
  void (*release)(ArrowArray*);
  void* private_data;
};

// The bytes of a primitive uint8 array ("C") of `length` values, no nulls, no offset; or null.
const std::uint8_t* arrow_bytes(const ArrowSchema& schema, const ArrowArray& array,
                                std::int64_t length) {
  if (std::strcmp(schema.format, "C") != 0 || array.length != length || array.offset != 0 ||
      array.null_count != 0 || array.n_buffers != 2 || array.buffers[1] == nullptr) {
    return nullptr;
  }
  return static_cast<const std::uint8_t*>(array.buffers[1]);
}

py::object arrow_pixels_py(const py::capsule& schema_capsule, const py::capsule& array_capsule,
                           py::ssize_t height, py::ssize_t width) {
  if (std::strcmp(schema_capsule.name(), "arrow_schema") != 0 ||
      std::strcmp(array_capsule.name(), "arrow_array") != 0) {
    throw py::type_error("_arrow_pixels: expected the capsules of __arrow_c_array__");
  }
  const auto* schema = schema_capsule.get_pointer<ArrowSchema>();
  const auto* array = array_capsule.get_pointer<ArrowArray>();
  if (schema->release == nullptr || array->release == nullptr || height < 1 || width < 1) {
    return py::none();
  }
  const std::int64_t pixels = static_cast<std::int64_t>(height) * width;
  const std::uint8_t* data = nullptr;
  py::ssize_t channels = 0;
  if (std::strcmp(schema->format, "C") == 0) {  // "L": a byte per pixel
    data = arrow_bytes(*schema, *array, pixels);
    channels = 1;
  } else if (std::strcmp(schema->format, "+w:4") == 0 && schema->n_children == 1 &&
             array->n_children == 1 && array->offset == 0 && array->null_count == 0 &&
             array->length == pixels) {  // "RGB", "RGBA"...: 4 bytes per pixel
    data = arrow_bytes(*schema->children[0], *array->children[0], pixels * 4);
    channels = 4;
  }
  if (data == nullptr) return py::none();
  // A view of Pillow's memory that holds the array capsule, whose destructor releases it.
  py::array view(py::dtype::of<std::uint8_t>(), {height, width, channels},
                 {width * channels, channels, py::ssize_t{1}}, data, array_capsule);
  view.attr("setflags")(py::arg("write") = false);
  return std::move(view);
}

// predict's post-processing of a classifier's outputs (N x C), in one call: after the model's
// run the Python and numpy code that did this ran with cold caches, ten numpy calls costing
// about 0.25 ms, a tenth of predict's budget over run. Per image, the probabilities (the
// softmax of the row in float64: z = v - max, exp(z) / sum; or the row itself) and the k best
// classes, best first, ties to the lower index, NaN last (numpy's stable argsort of -p).
py::tuple top_probabilities_py(const Floats& outputs, bool softmax, std::size_t k) {
  if (outputs.ndim() != 2 || outputs.shape(1) < 1) {
    throw ShapeError("_top_probabilities: the outputs must be N x C with C >= 1, got " +
                     shape_str(outputs));
  }
  if (k < 1) throw py::value_error("_top_probabilities: k must be >= 1");
  const auto rows = static_cast<std::size_t>(outputs.shape(0));
  const auto classes = static_cast<std::size_t>(outputs.shape(1));
  k = std::min(k, classes);
  py::array_t<std::int64_t> best({rows, k});
  py::array_t<double> best_p({rows, k});
  std::vector<double> p(classes);
  std::vector<std::int64_t> order(classes);
  const float* v = outputs.data();
  std::int64_t* best_out = best.mutable_data();
  double* best_p_out = best_p.mutable_data();
  for (std::size_t r = 0; r < rows; ++r, v += classes) {
    if (softmax) {
      // numpy's max propagates NaN: then every probability is NaN, as there.
      double top = -std::numeric_limits<double>::infinity();
      bool nan = false;
      for (std::size_t c = 0; c < classes; ++c) {
        const double x = v[c];
        nan = nan || std::isnan(x);
        top = std::max(top, x);
      }
      if (nan) top = std::numeric_limits<double>::quiet_NaN();
      double sum = 0.0;
      for (std::size_t c = 0; c < classes; ++c)
        sum += p[c] = std::exp(static_cast<double>(v[c]) - top);
      for (std::size_t c = 0; c < classes; ++c) p[c] /= sum;
    } else {
      for (std::size_t c = 0; c < classes; ++c) p[c] = v[c];
    }
    std::iota(order.begin(), order.end(), std::int64_t{0});
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&p](std::int64_t a, std::int64_t b) {
                        const double pa = p[static_cast<std::size_t>(a)];
                        const double pb = p[static_cast<std::size_t>(b)];
                        const bool na = std::isnan(pa);
                        const bool nb = std::isnan(pb);
                        if (na != nb) return nb;
                        if (!na && pa != pb) return pa > pb;
                        return a < b;
                      });
    for (std::size_t i = 0; i < k; ++i) {
      best_out[r * k + i] = order[i];
      best_p_out[r * k + i] = p[static_cast<std::size_t>(order[i])];
    }
  }
  return py::make_tuple(best, best_p);
}

}  // namespace

void bind_preprocess(py::module_& m) {
  m.def("_resample_normalize", &resample_normalize_py, py::arg("src"), py::arg("row_first"),
        py::arg("row_weights"), py::arg("col_first"), py::arg("col_weights"),
        py::arg("out_channels"), py::arg("scale"), py::arg("mean"), py::arg("std"),
        py::arg("isa") = py::none(),
        R"doc(The resize, crop and normalisation of qbinfer.preprocess in one pass (private).

src: H x W x C uint8 (C 1 or 3; rows may be strided, channels packed, pixels packed or, for
RGB, 4 bytes apart). Output pixel (i, j) reads rows row_first[i] + t with row_weights[i, t]
and columns col_first[j] + t with col_weights[j, t] (taps past the image are skipped), then
becomes (v * scale - mean[c]) / std[c] in float32. Returns rows x cols x out_channels float32.
isa: the implementation ("scalar", "avx2", ...: an ISA this CPU runs); None: the active one.
Releases the GIL.)doc");
  m.def("_arrow_pixels", &arrow_pixels_py, py::arg("schema"), py::arg("array"), py::arg("height"),
        py::arg("width"),
        R"doc(A read-only H x W x C uint8 view of an image exported through the Arrow C data
interface (private): the two capsules of Pillow's Image.__arrow_c_array__(), C = 1 for one
byte per pixel ("C"), 4 for four ("+w:4": RGB as RGBX, RGBA). The view keeps the array capsule,
and with it the image's memory, alive. None for any other layout (nulls, offsets, another
format), which the caller reads another way.)doc");
  m.def("_top_probabilities", &top_probabilities_py, py::arg("outputs"), py::arg("softmax"),
        py::arg("k"),
        R"doc(predict's post-processing of a classifier (private): for outputs N x C float32,
(indices N x k int64, probabilities N x k float64) of the k best classes per row, best first,
ties to the lower index, NaN last. softmax: the probabilities are the float64 softmax of the
row (logits, log-probabilities); else the row itself (probabilities).)doc");
}

}  // namespace qbinfer
