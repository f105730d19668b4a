#include "base/aligned_buffer.h"

#include <cstring>
#include <new>

namespace qbinfer {

AlignedBuffer::AlignedBuffer(std::size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  auto* p = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t{64}));
  std::memset(p, 0, bytes);
  data_.reset(p);
}

void AlignedBuffer::Free::operator()(unsigned char* p) const {
  ::operator delete(p, std::align_val_t{64});
}

}  // namespace qbinfer
