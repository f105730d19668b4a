// Small text helpers for error messages, so every message names things the same way.
//
// Include these from .cc files only: a header that pulled them in would clash with a file's
// own helper of the same name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qbinfer {

// A name that comes from a file, quoted and kept to one bounded line: 'name', at most 80
// characters (then ...), control characters shown as '?'.
std::string quoted(const std::string& s);

// An NHWC value's (height, width, channels): "(2, 3, 4)".
std::string shape_str(std::uint64_t height, std::uint64_t width, std::uint64_t channels);

// A tensor's dimensions: "[2, 3, 4]".
std::string dims_str(const std::vector<std::uint64_t>& dims);

}  // namespace qbinfer
