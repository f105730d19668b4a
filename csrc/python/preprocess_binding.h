// qbinfer._core._resample_normalize: the fused resize, crop and normalisation that
// python/qbinfer/preprocess.py runs for predict (engine/resample.h). In a file of its own so
// that module.cc only calls `bind_preprocess`.
#pragma once

#include <pybind11/pybind11.h>

namespace qbinfer {

void bind_preprocess(pybind11::module_& m);

}  // namespace qbinfer
