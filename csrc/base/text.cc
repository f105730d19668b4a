#include "base/text.h"

namespace qbinfer {

std::string quoted(const std::string& s) {
  // Names come from the file: keep messages one line and bounded.
  std::string out = "'";
  const std::size_t limit = 80;
  for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      out += '?';
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > limit) out += "...";
  return out + "'";
}

std::string shape_str(std::uint64_t height, std::uint64_t width, std::uint64_t channels) {
  return "(" + std::to_string(height) + ", " + std::to_string(width) + ", " +
         std::to_string(channels) + ")";
}

std::string dims_str(const std::vector<std::uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace qbinfer
