// An array's shape formatted the way numpy prints it, so the bindings' messages read like
// numpy's own: (3,) and (2, 3).
#pragma once

#include <pybind11/numpy.h>

#include <string>

namespace qbinfer {

inline std::string shape_str(const pybind11::array& a) {
  std::string s = "(";
  for (pybind11::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape(i));
  }
  return s + (a.ndim() == 1 ? ",)" : ")");
}

}  // namespace qbinfer
