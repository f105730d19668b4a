// A 64-byte aligned, zero-initialised byte buffer: what packed weights and other blobs that the
// SIMD kernels read with aligned loads live in. Shared by the engine (weights repacked at load)
// and the kernel drivers (tests, benchmarks).
#pragma once

#include <cstddef>
#include <memory>

namespace qbinfer {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes);
  const void* data() const { return data_.get(); }
  void* data() { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(unsigned char* p) const;
  };
  std::unique_ptr<unsigned char, Free> data_;
  std::size_t size_ = 0;
};

}  // namespace qbinfer
