#include "python/preprocess_binding.h"

#include <pybind11/numpy.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/resample.h"
#include "format/errors.h"
#include "python/shape_str.h"

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
                                         float scale, const Floats& mean, const Floats& std) {
  if (!py::isinstance<py::array_t<std::uint8_t>>(src)) {
    throw DtypeError("_resample_normalize: the image must be uint8, got " +
                     std::string(py::str(src.dtype())));
  }
  // Rows may be any distance apart (a window of a larger image), pixels and channels packed.
  // Strides of axes of length 1 are never used (numpy leaves them arbitrary).
  if (src.ndim() != 3 || (src.shape(2) != 1 && src.strides(2) != 1) ||
      (src.shape(1) != 1 && src.strides(1) != src.shape(2)) ||
      (src.shape(0) != 1 && src.strides(0) < src.shape(1) * src.shape(2))) {
    throw ShapeError(
        "_resample_normalize: the image must be H x W x C uint8 with packed pixels, got shape " +
        shape_str(src));
  }
  const auto src_channels = static_cast<std::size_t>(src.shape(2));
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
  py::array_t<float> out({static_cast<py::ssize_t>(rows.outputs),
                          static_cast<py::ssize_t>(cols.outputs),
                          static_cast<py::ssize_t>(out_channels)});
  const auto* pixels = static_cast<const std::uint8_t*>(src.data());
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    resample_normalize(pixels, src.strides(0), src_channels, rows, cols, out_channels, scale,
                       mean.data(), std.data(), dst);
  }
  return out;
}

}  // namespace

void bind_preprocess(py::module_& m) {
  m.def("_resample_normalize", &resample_normalize_py, py::arg("src"), py::arg("row_first"),
        py::arg("row_weights"), py::arg("col_first"), py::arg("col_weights"),
        py::arg("out_channels"), py::arg("scale"), py::arg("mean"), py::arg("std"),
        R"doc(The resize, crop and normalisation of qbinfer.preprocess in one pass (private).

src: H x W x C uint8 (C 1 or 3; rows may be strided, pixels packed). Output pixel (i, j)
reads rows row_first[i] + t with row_weights[i, t] and columns col_first[j] + t with
col_weights[j, t] (taps past the image are skipped), then becomes
(v * scale - mean[c]) / std[c] in float32. Returns rows x cols x out_channels float32.
Releases the GIL.)doc");
}

}  // namespace qbinfer
