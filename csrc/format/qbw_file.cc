#include "format/qbw_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "base/text.h"
#include "format/crc32.h"
#include "qbinfer/bit_contract.h"

#if defined(__unix__) || defined(__APPLE__)
#define QBINFER_HAVE_POSIX_IO 1
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#include <cstdio>
#endif

namespace qbinfer {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kI8:
      return "i8";
    case DType::kBits:
      return "bits";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kI8:
      return 1;
    case DType::kBits:
      return 8;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// FileBytes: the whole file, read once into a 64-byte aligned buffer that the model owns.
//
// Never a mapping: a mapped file that is truncated after load makes the next run fault
// (SIGBUS), and one overwritten in place (`cp other.qbw model.qbw`) changes the weights under
// a running model, bypassing every check made at load. Reading once also means the checks
// validate exactly the bytes the run uses: nothing is read from the file after validation.
// ---------------------------------------------------------------------------------------
class FileBytes {
 public:
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() { ::operator delete(data_, std::align_val_t{kPayloadAlignment}); }

  static std::unique_ptr<FileBytes> load(const std::string& path);
  static std::unique_ptr<FileBytes> copy_of(const void* data, std::size_t size,
                                            const std::string& name);
  // A copy of bytes [offset, offset + size) of `from` (in range), 64-byte aligned.
  static std::unique_ptr<FileBytes> slice(const FileBytes& from, std::uint64_t offset,
                                          std::uint64_t size) {
    std::unique_ptr<FileBytes> bytes(new FileBytes(static_cast<std::size_t>(size)));
    if (size > 0) std::memcpy(bytes->data_, from.data_ + offset, static_cast<std::size_t>(size));
    return bytes;
  }

  const unsigned char* data() const { return data_; }
  std::uint64_t size() const { return size_; }

 private:
  // An aligned buffer of `size` bytes, contents undefined.
  explicit FileBytes(std::size_t size);
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace {

[[noreturn]] void throw_os_error(int err, const std::string& path, const char* doing) {
  throw FileError(
      err, path,
      std::string("cannot ") + doing + " model file '" + path + "': " + std::strerror(err));
}

[[noreturn]] void throw_format(const std::string& path, const std::string& message) {
  throw FormatError(path + ": " + message);
}

// The first size check of every source: a file too short to hold the header.
void check_header_fits(const std::string& path, std::uint64_t size) {
  if (size < kHeaderSize) {
    throw_format(path, "file is " + std::to_string(size) + " bytes, smaller than the " +
                           std::to_string(kHeaderSize) +
                           "-byte header (truncated or not a .qbw file)");
  }
}

}  // namespace

FileBytes::FileBytes(std::size_t size) : size_(size) {
  // Rounded up so the allocation is a whole number of 64-byte lines; never zero bytes. The
  // payload offsets are multiples of 64, so every tensor starts 64-byte aligned.
  const std::size_t rounded = (size / kPayloadAlignment + 1) * kPayloadAlignment;
  data_ = static_cast<unsigned char*>(::operator new(rounded, std::align_val_t{kPayloadAlignment}));
}

#if QBINFER_HAVE_POSIX_IO
std::unique_ptr<FileBytes> FileBytes::load(const std::string& path) {
  // O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever; a regular file
  // ignores the flag, and anything else is refused below before a byte is read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw_os_error(errno, path, "open");
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st;
  if (::fstat(fd, &st) != 0) throw_os_error(errno, path, "stat");
  if (S_ISDIR(st.st_mode)) throw_os_error(EISDIR, path, "read");
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO (named pipe)"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                                              : "of an unknown kind";
    throw_format(path, std::string("not a regular file: it is ") + kind +
                           "; a model must be a regular file");
  }
  if (st.st_size < 0 ||
      static_cast<std::uint64_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
    throw_format(path, "file size " + std::to_string(st.st_size) + " is not addressable");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  check_header_fits(path, size);

  std::unique_ptr<FileBytes> bytes(new FileBytes(size));
  unsigned char* buf = bytes->data_;
  std::size_t done = 0;
  while (done < size) {
    const ::ssize_t n = ::pread(fd, buf + done, size - done, static_cast<::off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_os_error(errno, path, "read");
    }
    if (n == 0) {
      throw_format(path, "file shrank to " + std::to_string(done) + " bytes while being read (" +
                             std::to_string(size) + " expected)");
    }
    done += static_cast<std::size_t>(n);
  }
  // A file rewritten while it was read gives a mix of old and new bytes: the header's size
  // and the CRC-32 over the whole buffer refuse it (validated() checks this copy only).
  return bytes;
}
#else
std::unique_ptr<FileBytes> FileBytes::load(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw_os_error(errno, path, "open");
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  if (std::fseek(f, 0, SEEK_END) != 0) throw_os_error(errno, path, "seek");
  const long end = std::ftell(f);
  if (end < 0) throw_os_error(errno, path, "read");
  std::rewind(f);
  const auto size = static_cast<std::size_t>(end);
  check_header_fits(path, size);
  std::unique_ptr<FileBytes> bytes(new FileBytes(size));
  if (std::fread(bytes->data_, 1, size, f) != size) {
    throw_format(path, "could not read all " + std::to_string(size) + " bytes");
  }
  return bytes;
}
#endif

std::unique_ptr<FileBytes> FileBytes::copy_of(const void* data, std::size_t size,
                                              const std::string& name) {
  check_header_fits(name, size);
  std::unique_ptr<FileBytes> bytes(new FileBytes(size));
  if (size > 0) std::memcpy(bytes->data_, data, size);
  return bytes;
}

// ---------------------------------------------------------------------------------------
// Bounds-checked reading.
// ---------------------------------------------------------------------------------------
namespace {

template <class T>
T load_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // little-endian host (bit_contract.h refuses others)
  return v;
}

bool add_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t* sum) {
  *sum = a + b;
  return *sum < a;
}

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t* product) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return true;
  *product = a * b;
  return false;
}

// Reads the meta section. Every read checks the bytes that remain; every count is checked
// against them before anything is allocated. `context_` names the record being read, so
// a truncation says "while reading op 7 inputs".
class Cursor {
 public:
  Cursor(const QbwFile& file, const unsigned char* base, std::uint64_t size)
      : file_(file), base_(base), size_(size) {}

  void set_context(std::string context) {
    context_ = std::move(context);
    record_kind_ = nullptr;
  }
  // A table record that starts with its name ("tensor 3", then "tensor 3 'conv1.weight'"):
  // reads the name into `name` and makes the record the context of the fields that follow.
  // The label is formed only when a message needs it (context()): forming it for each of
  // 600k records took a sixth of the load of such a file.
  void named_record(const char* kind, std::uint32_t i, std::string& name) {
    begin_record(kind, i);
    record_name(name);
  }
  // The same in two steps, for a record with fields before its name (an op's type).
  void begin_record(const char* kind, std::uint32_t i) {
    record_kind_ = kind;
    record_index_ = i;
    has_record_name_ = false;
  }
  void record_name(std::string& name) {
    name = str("name");
    record_name_ = name;
    has_record_name_ = true;
  }
  // The record's name appended to `pool` (whose capacity must hold every string the rest of
  // the meta section could hold, so the views never move); returns its view there.
  std::string_view record_name_in(std::vector<char>& pool) {
    const std::uint32_t n = string_length("name");
    const unsigned char* p = take(n, "name");
    const std::size_t at = pool.size();
    pool.insert(pool.end(), p, p + n);
    record_name_ = std::string_view(pool.data() + at, n);
    has_record_name_ = true;
    return record_name_;
  }
  std::string context() const {
    if (record_kind_ == nullptr) return context_;
    std::string s = std::string(record_kind_) + " " + std::to_string(record_index_);
    return has_record_name_ ? s + " " + quoted(std::string(record_name_)) : s;
  }
  std::uint64_t position() const { return pos_; }
  std::uint64_t remaining() const { return size_ - pos_; }

  std::uint16_t u16(const char* field) { return load_le<std::uint16_t>(take(2, field)); }
  std::uint32_t u32(const char* field) { return load_le<std::uint32_t>(take(4, field)); }
  std::uint64_t u64(const char* field) { return load_le<std::uint64_t>(take(8, field)); }
  std::int64_t i64(const char* field) { return load_le<std::int64_t>(take(8, field)); }
  float f32(const char* field) { return load_le<float>(take(4, field)); }

  std::string str(const char* field) {
    const std::uint32_t n = string_length(field);
    const unsigned char* p = take(n, field);
    return std::string(reinterpret_cast<const char*>(p), n);
  }

  // A string's length field, checked against the limit.
  std::uint32_t string_length(const char* field) {
    const std::uint32_t n = u32(field);
    if (n > kMaxStringBytes) {
      file_.fail(where(field) + ": string length " + std::to_string(n) + " exceeds the limit " +
                 std::to_string(kMaxStringBytes) + " (meta offset " + std::to_string(pos_ - 4) +
                 ")");
    }
    return n;
  }

  // A count of records of at least `min_record_bytes` each, checked against `limit` and
  // against the bytes left, so a corrupt count cannot make us allocate.
  std::uint32_t count(const char* field, std::uint64_t limit, std::uint64_t min_record_bytes) {
    const std::uint64_t at = pos_;
    const std::uint32_t n = u32(field);
    if (n > limit) {
      file_.fail(where(field) + " = " + std::to_string(n) + " exceeds the limit " +
                 std::to_string(limit) + " (meta offset " + std::to_string(at) + ")");
    }
    const std::uint64_t need = std::uint64_t{n} * min_record_bytes;  // < 2^32 * 2^32
    if (need > remaining()) {
      file_.fail("truncated meta section: " + where(field) + " = " + std::to_string(n) +
                 " needs at least " + std::to_string(need) + " bytes, only " +
                 std::to_string(remaining()) + " left (meta offset " + std::to_string(at) + ")");
    }
    return n;
  }

  // Appends a counted array to `flat` and returns the view of it. `flat`'s capacity must hold
  // every element the rest of the meta section could hold (so the views never move).
  template <class T>
  ConstSpan<T> array(const char* count_field, const char* field, std::vector<T>& flat) {
    const std::uint32_t n =
        count(count_field, std::numeric_limits<std::uint32_t>::max(), sizeof(T));
    const unsigned char* p = take(std::uint64_t{n} * sizeof(T), field);
    const std::size_t at = flat.size();
    flat.resize(at + n);
    T* out = flat.data() + at;
    for (std::uint32_t k = 0; k < n; ++k) out[k] = load_le<T>(p + std::size_t{k} * sizeof(T));
    return ConstSpan<T>(out, n);
  }

 private:
  std::string where(const char* field) const {
    const std::string context = this->context();
    return context.empty() ? std::string(field) : context + " " + field;
  }

  const unsigned char* take(std::uint64_t n, const char* field) {
    if (n > remaining()) {
      file_.fail("truncated meta section while reading " + where(field) + ": need " +
                 std::to_string(n) + " bytes at meta offset " + std::to_string(pos_) + ", only " +
                 std::to_string(remaining()) + " left");
    }
    const unsigned char* p = base_ + pos_;
    pos_ += n;
    return p;
  }

  const QbwFile& file_;
  const unsigned char* base_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  std::string context_;
  const char* record_kind_ = nullptr;  // non-null: the context is this record (named_record)
  std::uint32_t record_index_ = 0;
  std::string_view record_name_;  // once read (has_record_name_)
  bool has_record_name_ = false;
};

// Where the nesting of [ and { in `text` first exceeds `limit`, or npos. Brackets inside
// JSON strings do not count (a backslash escapes the next character there). The text need not
// be valid JSON (metadata is free-form): whatever it is, a JSON parser reading it recurses no
// deeper than this count before it stops.
std::size_t nesting_exceeds(const std::string& text, std::uint32_t limit) {
  std::uint32_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string::npos;
}

// Smallest encodings, for the count checks.
constexpr std::uint64_t kMinTensorRecord = 4 + 4 + 4 + 8 + 8 + 8;
constexpr std::uint64_t kMinValueRecord = 4 + 4 + 4 + 4 + 4;
constexpr std::uint64_t kMinOpRecord = 4 + 4 + 4 + 4 + 4 + 4;
constexpr std::uint64_t kMinString = 4;

}  // namespace

// ---------------------------------------------------------------------------------------
// QbwFile
// ---------------------------------------------------------------------------------------
QbwFile::QbwFile(QbwFile&&) noexcept = default;
QbwFile& QbwFile::operator=(QbwFile&&) noexcept = default;
QbwFile::~QbwFile() = default;

void QbwFile::fail(const std::string& message) const { throw_format(path_, message); }

QbwFile QbwFile::open(const std::string& path) {
  if (path.find('\0') != std::string::npos) {
    // The OS would read the path up to the NUL: refused, as Python's open() does.
    throw std::invalid_argument("embedded null byte in the model path");
  }
  return validated(path, FileBytes::load(path));
}

QbwFile QbwFile::from_memory(const void* data, std::size_t size, const std::string& name) {
  return validated(name, FileBytes::copy_of(data, size, name));
}

QbwFile QbwFile::validated(const std::string& path, std::unique_ptr<FileBytes> bytes) {
  QbwFile f;
  f.path_ = path;
  f.bytes_ = std::move(bytes);
  f.parse_header();
  f.verify_checksum();
  f.parse_meta();
  f.check_tensors();
  f.check_graph();
  f.keep_data_section();
  return f;
}

// Once validated, only the tensors' bytes are read again: the header and the meta section
// were parsed into this object's tables. Where they are the larger part of the file (an
// op-dense file: 600k element-wise ops take 42 MB of meta section and a few KB of data), the
// data section is copied alone and the whole buffer freed, so the load does not keep the
// file's size of dead bytes for the model's lifetime; a weight-heavy file keeps its buffer
// (a copy would cost time and, for a moment, twice the weights).
void QbwFile::keep_data_section() {
  if (data_offset_ <= data_size_) return;
  std::unique_ptr<FileBytes> data = FileBytes::slice(*bytes_, data_offset_, data_size_);
  bytes_ = std::move(data);
  for (TensorInfo& t : tensors_) t.data = bytes_->data() + t.offset;
}

void QbwFile::parse_header() {
  const unsigned char* h = bytes_->data();
  static const unsigned char kMagic[8] = {0x89, 'Q', 'B', 'W', '\r', '\n', 0x1A, '\n'};
  if (std::memcmp(h, kMagic, 8) != 0) {
    if (std::memcmp(h + 1, "QBW", 3) == 0 || std::memcmp(h, "QBW", 3) == 0) {
      fail(
          "bad magic: a .qbw header damaged by a text-mode or 7-bit transfer (expected the "
          "bytes 89 51 42 57 0D 0A 1A 0A)");
    }
    fail("bad magic: not a .qbw file (expected the bytes 89 51 42 57 0D 0A 1A 0A)");
  }
  version_major_ = load_le<std::uint16_t>(h + 8);
  version_minor_ = load_le<std::uint16_t>(h + 10);
  const std::string version = std::to_string(version_major_) + "." + std::to_string(version_minor_);
  const std::string supported = std::to_string(kFormatMajor) + ".x";
  if (version_major_ > kFormatMajor) {
    fail("file format " + version + " is newer than this qbinfer reads (" + supported +
         "); upgrade qbinfer to load it");
  }
  if (version_major_ != kFormatMajor) {
    fail("file format " + version + " is not one this qbinfer reads (" + supported + ")");
  }
  const std::uint32_t header_size = load_le<std::uint32_t>(h + 12);
  file_size_ = load_le<std::uint64_t>(h + 16);
  meta_offset_ = load_le<std::uint64_t>(h + 24);
  meta_size_ = load_le<std::uint64_t>(h + 32);
  data_offset_ = load_le<std::uint64_t>(h + 40);
  data_size_ = load_le<std::uint64_t>(h + 48);
  checksum_ = load_le<std::uint32_t>(h + 56);
  const std::uint32_t reserved = load_le<std::uint32_t>(h + 60);

  const std::uint64_t real_size = bytes_->size();
  if (header_size != kHeaderSize) {
    fail("header_size is " + std::to_string(header_size) + ", expected " +
         std::to_string(kHeaderSize));
  }
  if (reserved != 0) fail("reserved header field is " + std::to_string(reserved) + ", expected 0");
  if (file_size_ != real_size) {
    fail("header says the file is " + std::to_string(file_size_) + " bytes but it is " +
         std::to_string(real_size) + " bytes (" +
         (file_size_ > real_size ? "truncated" : "trailing bytes") + ")");
  }
  if (meta_offset_ != kHeaderSize) {
    fail("meta_offset is " + std::to_string(meta_offset_) + ", expected " +
         std::to_string(kHeaderSize));
  }
  std::uint64_t meta_end = 0;
  if (add_overflows(meta_offset_, meta_size_, &meta_end) || meta_end > data_offset_) {
    fail("meta section [" + std::to_string(meta_offset_) + ", " + std::to_string(meta_offset_) +
         " + " + std::to_string(meta_size_) + ") runs past data_offset " +
         std::to_string(data_offset_));
  }
  if (data_offset_ % kPayloadAlignment != 0) {
    fail("data_offset " + std::to_string(data_offset_) + " is not a multiple of " +
         std::to_string(kPayloadAlignment));
  }
  std::uint64_t data_end = 0;
  if (add_overflows(data_offset_, data_size_, &data_end) || data_end != file_size_) {
    fail("data section [" + std::to_string(data_offset_) + ", " + std::to_string(data_offset_) +
         " + " + std::to_string(data_size_) + ") does not end at file_size " +
         std::to_string(file_size_));
  }
}

void QbwFile::verify_checksum() const {
  const unsigned char* p = bytes_->data();
  std::uint32_t crc = crc32_update(0, p, 56);
  crc = crc32_update(crc, p + kHeaderSize, static_cast<std::size_t>(file_size_ - kHeaderSize));
  if (crc != checksum_) {
    char buf[96];
    std::snprintf(buf, sizeof buf,
                  "checksum mismatch: header says CRC-32 0x%08X, contents give 0x%08X", checksum_,
                  crc);
    fail(std::string(buf) + " (the file is damaged)");
  }
}

void QbwFile::parse_meta() {
  Cursor c(*this, bytes_->data() + meta_offset_, meta_size_);

  producer_ = c.str("producer");
  model_name_ = c.str("model_name");

  // Tensors.
  const std::uint32_t n_tensors = c.count("n_tensors", kMaxTableEntries, kMinTensorRecord);
  tensors_.resize(n_tensors);
  for (std::uint32_t i = 0; i < n_tensors; ++i) {
    TensorInfo& t = tensors_[i];
    c.named_record("tensor", i, t.name);
    const auto where = [&c] { return c.context(); };
    const std::uint32_t dtype = c.u32("dtype");
    if (dtype > 2) {
      fail(where() + ": unknown dtype code " + std::to_string(dtype) + " (0 f32, 1 i8, 2 bits)");
    }
    t.dtype = static_cast<DType>(dtype);
    const std::uint32_t ndim = c.u32("ndim");
    if (ndim < 1 || ndim > 4) fail(where() + ": ndim " + std::to_string(ndim) + " is not in 1..4");
    t.dims.resize(ndim);
    std::uint64_t elements = 1;
    for (std::uint32_t d = 0; d < ndim; ++d) {
      t.dims[d] = c.u64("dims");
      if (t.dims[d] < 1) fail(where() + ": dim " + std::to_string(d) + " is 0 (each must be >= 1)");
      if (mul_overflows(elements, t.dims[d], &elements)) {
        fail(where() + ": the product of the dims overflows 64 bits");
      }
    }
    t.elements = elements;
    t.offset = c.u64("offset");
    t.nbytes = c.u64("nbytes");
    std::uint64_t want = 0;
    if (mul_overflows(elements, dtype_size(t.dtype), &want) || want != t.nbytes) {
      fail(where() + ": nbytes " + std::to_string(t.nbytes) + " does not match its " +
           std::to_string(elements) + " " + dtype_name(t.dtype) + " elements");
    }
  }

  // Values.
  c.set_context("");
  const std::uint32_t n_values = c.count("n_values", kMaxTableEntries, kMinValueRecord);
  values_.resize(n_values);
  value_names_.reserve(c.remaining());  // capacity for any names the rest can hold: views stay
  for (std::uint32_t i = 0; i < n_values; ++i) {
    ValueInfo& v = values_[i];
    c.begin_record("value", i);
    v.name = c.record_name_in(value_names_);
    const auto where = [&c] { return c.context(); };
    const std::uint32_t dtype = c.u32("dtype");
    if (dtype != 0 && dtype != 2) {
      fail(where() + ": dtype code " + std::to_string(dtype) +
           " is not a value dtype (0 f32, 2 bits)");
    }
    v.dtype = static_cast<DType>(dtype);
    v.height = c.u32("height");
    v.width = c.u32("width");
    v.channels = c.u32("channels");
    if (v.height < 1 || v.width < 1 || v.channels < 1) {
      fail(where() + ": shape (" + std::to_string(v.height) + ", " + std::to_string(v.width) +
           ", " + std::to_string(v.channels) + ") has a zero dimension");
    }
    // Each factor < 2^32 and pixels < 2^64 needs care: check in steps.
    std::uint64_t pixels = std::uint64_t{v.height} * v.width;  // < 2^64
    const std::uint64_t per_pixel =
        v.dtype == DType::kF32 ? std::uint64_t{v.channels} * 4 : words_for_channels(v.channels) * 8;
    std::uint64_t bytes = 0;
    if (mul_overflows(pixels, per_pixel, &bytes) || bytes > kMaxValueBytes) {
      fail(where() + ": shape (" + std::to_string(v.height) + ", " + std::to_string(v.width) +
           ", " + std::to_string(v.channels) + ") is larger than the " +
           std::to_string(kMaxValueBytes >> 30) + " GiB a value may take");
    }
    v.bytes = bytes;
  }

  c.set_context("");
  input_value_ = c.u32("input_value");
  output_value_ = c.u32("output_value");

  // Ops.
  const std::uint32_t n_ops = c.count("n_ops", kMaxTableEntries, kMinOpRecord);
  if (n_ops < 1) fail("n_ops is 0: the graph has no op");
  ops_.resize(n_ops);
  // Reserved for what the rest of the meta section could hold at most, so the records' views
  // never move; the pages past what the ops use are never touched, so never resident.
  op_indices_.reserve(c.remaining() / sizeof(std::uint32_t));
  op_names_.reserve(c.remaining());
  op_attrs_.reserve(c.remaining() / sizeof(std::int64_t));
  for (std::uint32_t i = 0; i < n_ops; ++i) {
    OpRecord& op = ops_[i];
    c.begin_record("op", i);
    op.type = c.u32("op_type");
    const std::string_view name = c.record_name_in(op_names_);
    op.name_chars = name.data();
    op.name_size = static_cast<std::uint32_t>(name.size());  // <= kMaxStringBytes
    // The three index arrays are appended back to back: `indices` is where the first begins.
    const ConstSpan<std::uint32_t> inputs = c.array("n_inputs", "inputs", op_indices_);
    op.indices = inputs.data();
    op.n_inputs = static_cast<std::uint32_t>(inputs.size());
    op.n_outputs = static_cast<std::uint32_t>(c.array("n_outputs", "outputs", op_indices_).size());
    op.n_tensors = static_cast<std::uint32_t>(c.array("n_tensors", "tensors", op_indices_).size());
    const ConstSpan<std::int64_t> attrs = c.array("n_attrs", "attrs", op_attrs_);
    op.attr_values = attrs.data();
    op.n_attrs = static_cast<std::uint32_t>(attrs.size());
  }

  // Preprocessing.
  c.set_context("preprocessing");
  Preprocessing& p = preprocessing_;
  p.resize_short = c.u32("resize_short");
  p.crop_height = c.u32("crop_height");
  p.crop_width = c.u32("crop_width");
  for (float& m : p.mean) m = c.f32("mean");
  for (float& s : p.std) s = c.f32("std");
  p.pixel_scale = c.f32("pixel_scale");

  c.set_context("");
  const std::uint32_t n_classes = c.count("n_classes", kMaxTableEntries, kMinString);
  class_names_.resize(n_classes);
  for (std::uint32_t i = 0; i < n_classes; ++i) {
    c.set_context("class name " + std::to_string(i));
    class_names_[i] = c.str("");
  }
  c.set_context("");
  metadata_json_ = c.str("metadata_json");
  const std::size_t too_deep = nesting_exceeds(metadata_json_, kMaxMetadataDepth);
  if (too_deep != std::string::npos) {
    fail("metadata_json nests [ and { deeper than the limit of " +
         std::to_string(kMaxMetadataDepth) + " levels (level " +
         std::to_string(kMaxMetadataDepth + 1) + " opens at byte " + std::to_string(too_deep) +
         " of the metadata)");
  }

  if (c.remaining() != 0 && version_minor_ == 0) {
    fail("meta section has " + std::to_string(c.remaining()) +
         " unread bytes after metadata_json (meta_size " + std::to_string(meta_size_) +
         ", format 1.0 ends at " + std::to_string(c.position()) + ")");
  }

  // Checks on what was read that need no other table.
  const auto finite = [](float x) { return std::isfinite(x); };
  for (int k = 0; k < 3; ++k) {
    if (!finite(p.mean[k])) fail("preprocessing: mean[" + std::to_string(k) + "] is not finite");
    if (!(finite(p.std[k]) && p.std[k] > 0.0f)) {
      fail("preprocessing: std[" + std::to_string(k) + "] = " + std::to_string(p.std[k]) +
           " is not a finite number > 0");
    }
  }
  if (!(finite(p.pixel_scale) && p.pixel_scale > 0.0f)) {
    fail("preprocessing: pixel_scale = " + std::to_string(p.pixel_scale) +
         " is not a finite number > 0");
  }
}

void QbwFile::check_tensors() {
  // Payload ranges: aligned, inside the data section, disjoint. Only then form pointers.
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    const std::string where = "tensor " + std::to_string(i) + " " + quoted(t.name);
    if (t.offset % kPayloadAlignment != 0) {
      fail(where + ": offset " + std::to_string(t.offset) + " is not a multiple of " +
           std::to_string(kPayloadAlignment));
    }
    std::uint64_t end = 0;
    if (add_overflows(t.offset, t.nbytes, &end) || end > data_size_) {
      fail(where + ": bytes [" + std::to_string(t.offset) + ", " + std::to_string(t.offset) +
           " + " + std::to_string(t.nbytes) + ") run past the data section (" +
           std::to_string(data_size_) + " bytes)");
    }
  }
  std::vector<std::size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [this](std::size_t a, std::size_t b) {
    return tensors_[a].offset < tensors_[b].offset ||
           (tensors_[a].offset == tensors_[b].offset && a < b);
  });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& a = tensors_[order[k - 1]];
    const TensorInfo& b = tensors_[order[k]];
    if (a.offset + a.nbytes > b.offset) {
      fail("tensor " + std::to_string(order[k - 1]) + " " + quoted(a.name) + " [" +
           std::to_string(a.offset) + ", " + std::to_string(a.offset + a.nbytes) +
           ") overlaps tensor " + std::to_string(order[k]) + " " + quoted(b.name) + " at " +
           std::to_string(b.offset));
    }
  }
  const unsigned char* data = bytes_->data() + data_offset_;
  for (TensorInfo& t : tensors_) t.data = data + t.offset;
}

void QbwFile::check_graph() const {
  const std::size_t n_values = values_.size();
  const auto value_name = [this](std::uint32_t v) {
    return "value " + std::to_string(v) + " " + quoted(std::string(values_[v].name));
  };
  if (input_value_ >= n_values) {
    fail("input_value " + std::to_string(input_value_) + " is not a value index (" +
         std::to_string(n_values) + " values)");
  }
  if (output_value_ >= n_values) {
    fail("output_value " + std::to_string(output_value_) + " is not a value index (" +
         std::to_string(n_values) + " values)");
  }
  const ValueInfo& in = values_[input_value_];
  if (in.dtype != DType::kF32) fail("input " + value_name(input_value_) + " must be f32, not bits");
  const ValueInfo& out = values_[output_value_];
  if (out.dtype != DType::kF32) {
    fail("output " + value_name(output_value_) + " must be f32, got " + dtype_name(out.dtype) +
         " (" + std::to_string(out.height) + ", " + std::to_string(out.width) + ", " +
         std::to_string(out.channels) + ")");
  }
  if (!class_names_.empty() && class_names_.size() != out.channels) {
    fail(std::to_string(class_names_.size()) + " class names for an output of " +
         std::to_string(out.channels) + " channels (n_classes must be 0 or the channels)");
  }
  const Preprocessing& p = preprocessing_;
  if (p.crop_height != in.height || p.crop_width != in.width) {
    fail("preprocessing crop (" + std::to_string(p.crop_height) + ", " +
         std::to_string(p.crop_width) + ") differs from the input size (" +
         std::to_string(in.height) + ", " + std::to_string(in.width) + ")");
  }
  if (p.resize_short != 0 && p.resize_short < std::min(p.crop_height, p.crop_width)) {
    fail("preprocessing resize_short " + std::to_string(p.resize_short) +
         " is smaller than the crop (" + std::to_string(p.crop_height) + ", " +
         std::to_string(p.crop_width) + ")");
  }

  constexpr std::int64_t kNone = -1;
  std::vector<std::int64_t> producer(n_values, kNone);
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const OpRecord& op = ops_[i];
    const std::string where = "op " + std::to_string(i) + " " + quoted(std::string(op.name()));
    for (std::size_t k = 0; k < op.inputs().size(); ++k) {
      const std::uint32_t v = op.inputs()[k];
      if (v >= n_values) {
        fail(where + ": input " + std::to_string(k) + " is value " + std::to_string(v) +
             ", not a value index (" + std::to_string(n_values) + " values)");
      }
      if (v != input_value_ && producer[v] == kNone) {
        fail(where + ": input " + std::to_string(k) + " is " + value_name(v) +
             ", which no earlier op produces (ops must be in execution order)");
      }
    }
    for (std::size_t k = 0; k < op.outputs().size(); ++k) {
      const std::uint32_t v = op.outputs()[k];
      if (v >= n_values) {
        fail(where + ": output " + std::to_string(k) + " is value " + std::to_string(v) +
             ", not a value index (" + std::to_string(n_values) + " values)");
      }
      if (v == input_value_) fail(where + ": writes the graph input " + value_name(v));
      if (producer[v] != kNone) {
        fail(where + ": " + value_name(v) + " is already produced by op " +
             std::to_string(producer[v]) + " (each value has one producer)");
      }
      producer[v] = static_cast<std::int64_t>(i);
    }
    for (std::size_t k = 0; k < op.tensors().size(); ++k) {
      const std::uint32_t t = op.tensors()[k];
      if (t != kAbsentTensor && t >= tensors_.size()) {
        fail(where + ": tensor slot " + std::to_string(k) + " is " + std::to_string(t) +
             ", not a tensor index (" + std::to_string(tensors_.size()) + " tensors)");
      }
    }
  }
  for (std::uint32_t v = 0; v < n_values; ++v) {
    if (v != input_value_ && producer[v] == kNone) {
      fail(value_name(v) + (v == output_value_ ? " (the output)" : "") + " is produced by no op");
    }
  }
}

}  // namespace qbinfer
