// The exceptions of the C++ core. The Python binding maps them one to one onto
// qbinfer._core.{FormatError, ShapeError, DtypeError} (all subclasses of qbinfer._core.Error)
// and FileError onto OSError (FileNotFoundError, IsADirectoryError, ... by errno).
#pragma once

#include <stdexcept>
#include <string>

namespace qbinfer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A .qbw file is damaged, hostile or from an unsupported version. The message names the
// file and says what is wrong and where.
class FormatError : public Error {
 public:
  using Error::Error;
};

// An input array has the wrong rank or shape.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An input array has the wrong dtype.
class DtypeError : public Error {
 public:
  using Error::Error;
};

// The operating system refused a file operation (errno is kept, so Python raises the
// matching OSError subclass with the path).
class FileError : public Error {
 public:
  FileError(int err, std::string path, const std::string& what)
      : Error(what), errno_(err), path_(std::move(path)) {}
  int error_number() const { return errno_; }
  const std::string& path() const { return path_; }

 private:
  int errno_;
  std::string path_;
};

}  // namespace qbinfer
