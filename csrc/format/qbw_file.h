// Reader of the .qbw file (docs/format.md, version 1.x).
//
// QbwFile::open reads the whole file once into a 64-byte aligned buffer it owns (never a
// mapping: the file may be truncated, overwritten or deleted after open returns, and nothing
// reads it again) and validates that copy -- everything the format page states: header fields
// with overflow-checked arithmetic, the CRC-32, every count, string, dtype, dim, offset and
// overlap of the tensor table, value shapes and the graph rules -- before it forms a single
// pointer into the payload. A violation is a FormatError "<path>: <what> (<where>)".
// Op-specific rules (shapes, dtypes and attributes per op type) are the engine's: see
// engine/ops.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "format/errors.h"

namespace qbinfer {

inline constexpr std::uint16_t kFormatMajor = 1;
inline constexpr std::uint16_t kFormatMinor = 0;
inline constexpr std::size_t kHeaderSize = 64;
inline constexpr std::size_t kPayloadAlignment = 64;
inline constexpr std::uint32_t kMaxStringBytes = 65535;
inline constexpr std::uint32_t kMaxTableEntries = 1000000;  // tensors, values, ops
// One activation of one image may not exceed this (docs/format.md): a corrupt shape must
// not make the engine plan a multi-terabyte arena.
inline constexpr std::uint64_t kMaxValueBytes = std::uint64_t{1} << 32;
inline constexpr std::uint32_t kAbsentTensor = 0xFFFFFFFFu;
// metadata_json may nest [ and { at most this deep (docs/format.md): a reader's JSON parser
// (Python's json included) recurses once per level, and a file must not be able to exhaust it.
inline constexpr std::uint32_t kMaxMetadataDepth = 64;

enum class DType : std::uint32_t { kF32 = 0, kI8 = 1, kBits = 2 };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> dims;
  std::uint64_t offset;    // relative to the data section, a multiple of 64
  std::uint64_t nbytes;    // == product(dims) * dtype_size(dtype)
  std::uint64_t elements;  // product(dims)
  const void* data;        // into the validated payload (owned by the QbwFile); 64-byte aligned

  template <class T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

struct ValueInfo {
  std::string_view name;  // in the QbwFile's pool of value names (a string per value costed 32
                          // bytes of every value of an op-dense file)
  DType dtype;            // kF32 or kBits
  std::uint32_t height;
  std::uint32_t width;
  std::uint32_t channels;
  std::uint64_t bytes;  // of one image: H*W*C*4, or H*W*words(C)*8 for bits
};

// A read-only view of `size` elements that another object owns (the QbwFile's flat op arrays):
// what a per-op std::vector gave its readers (size, [], iteration) without a heap block per op.
template <class T>
class ConstSpan {
 public:
  ConstSpan() = default;
  ConstSpan(const T* data, std::size_t size) : data_(data), size_(size) {}
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  const T* data_ = nullptr;
  std::size_t size_ = 0;
};

// The arrays of an op record view the QbwFile's flat arrays (one block for all ops: a file of
// hundreds of thousands of ops would otherwise take four heap blocks per op), its name the
// pool of op names. A record holds one pointer per array and 32-bit counts (48 bytes, where
// a view per array took 88): the records of every op are alive while the engine builds its
// ops from them.
struct OpRecord {
  const std::uint32_t* indices = nullptr;  // the inputs, outputs and tensors, back to back
  const std::int64_t* attr_values = nullptr;
  const char* name_chars = nullptr;
  std::uint32_t type = 0;
  std::uint32_t name_size = 0;
  std::uint32_t n_inputs = 0, n_outputs = 0, n_tensors = 0, n_attrs = 0;

  std::string_view name() const { return std::string_view(name_chars, name_size); }
  ConstSpan<std::uint32_t> inputs() const {  // value indices
    return ConstSpan<std::uint32_t>(indices, n_inputs);
  }
  ConstSpan<std::uint32_t> outputs() const {  // value indices
    return ConstSpan<std::uint32_t>(indices + n_inputs, n_outputs);
  }
  ConstSpan<std::uint32_t> tensors() const {  // tensor indices or kAbsentTensor
    return ConstSpan<std::uint32_t>(indices + n_inputs + n_outputs, n_tensors);
  }
  ConstSpan<std::int64_t> attrs() const { return ConstSpan<std::int64_t>(attr_values, n_attrs); }
};

struct Preprocessing {
  std::uint32_t resize_short;  // 0 = no resize
  std::uint32_t crop_height;
  std::uint32_t crop_width;
  float mean[3];
  float std[3];
  float pixel_scale;
};

class FileBytes;  // the buffer that holds the whole file, owned

class QbwFile {
 public:
  // Throws FileError (the OS refused: missing file, a directory, no permission) or
  // FormatError (anything wrong with the contents, or not a regular file: a FIFO, socket or
  // device is refused without being read, so it cannot block), std::invalid_argument for a
  // path with an embedded NUL byte (which the OS would silently cut short).
  static QbwFile open(const std::string& path);

  // The same checks on a file's bytes already in memory (copied: the caller's buffer may go
  // away). `name` stands for the path in messages ("<name>: bad magic ...").
  static QbwFile from_memory(const void* data, std::size_t size, const std::string& name);

  QbwFile(QbwFile&&) noexcept;
  QbwFile& operator=(QbwFile&&) noexcept;
  ~QbwFile();

  const std::string& path() const { return path_; }
  std::uint16_t version_major() const { return version_major_; }
  std::uint16_t version_minor() const { return version_minor_; }
  std::uint64_t file_size() const { return file_size_; }
  std::uint64_t data_size() const { return data_size_; }

  const std::string& producer() const { return producer_; }
  const std::string& model_name() const { return model_name_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<ValueInfo>& values() const { return values_; }
  std::uint32_t input_value() const { return input_value_; }
  std::uint32_t output_value() const { return output_value_; }
  const std::vector<OpRecord>& ops() const { return ops_; }
  // Frees the op records once the engine has built its ops from them (which hold the same
  // type, name and views of the same arrays): ops() is empty afterwards. The arrays the
  // records viewed stay, for the engine's ops view them.
  void release_op_records() { std::vector<OpRecord>().swap(ops_); }
  const Preprocessing& preprocessing() const { return preprocessing_; }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const std::string& metadata_json() const { return metadata_json_; }

  // A FormatError "<path>: <message>".
  [[noreturn]] void fail(const std::string& message) const;

 private:
  QbwFile() = default;
  // Every check of open() on bytes already loaded; `path` names them in messages.
  static QbwFile validated(const std::string& path, std::unique_ptr<FileBytes> bytes);
  void parse_header();
  void verify_checksum() const;
  void parse_meta();
  void check_tensors();
  void check_graph() const;
  void keep_data_section();

  std::string path_;
  std::unique_ptr<FileBytes> bytes_;
  std::uint16_t version_major_ = 0;
  std::uint16_t version_minor_ = 0;
  std::uint64_t file_size_ = 0;
  std::uint64_t meta_offset_ = 0;
  std::uint64_t meta_size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::uint64_t data_size_ = 0;
  std::uint32_t checksum_ = 0;

  std::string producer_;
  std::string model_name_;
  std::vector<TensorInfo> tensors_;
  std::vector<ValueInfo> values_;
  std::uint32_t input_value_ = 0;
  std::uint32_t output_value_ = 0;
  std::vector<OpRecord> ops_;
  std::vector<std::uint32_t> op_indices_;  // every op's inputs, outputs and tensors (OpRecord)
  std::vector<std::int64_t> op_attrs_;     // every op's attrs
  // Every op's name, back to back (OpRecord::name and the engine's Op::name view them): a
  // std::string per op took 32 bytes each, twice (the record and the op).
  std::vector<char> op_names_;
  std::vector<char> value_names_;  // the names ValueInfo::name views
  Preprocessing preprocessing_{};
  std::vector<std::string> class_names_;
  std::string metadata_json_;
};

}  // namespace qbinfer
