// A thin C++ layer over the C API (qbinfer.h): a move-only Model that closes itself, and
// qbinfer::Error (a std::runtime_error with the status and, for a refused file, errno) in place
// of status codes. Header-only: it calls only the C functions, so it links against either
// libqbinfer.so or libqbinfer.a and crosses no C++ ABI boundary of the library.
//
//   qbinfer::Model model("digits_qbnet.qbw");
//   std::vector<qbinfer_class_score> top = model.predict(image, 5);
#ifndef QBINFER_QBINFER_HPP_
#define QBINFER_QBINFER_HPP_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "qbinfer/qbinfer.h"

namespace qbinfer {

class Error : public std::runtime_error {
 public:
  Error(qbinfer_status status, const std::string& message, int err)
      : std::runtime_error(message), status_(status), errno_(err) {}
  qbinfer_status status() const noexcept { return status_; }
  int error_number() const noexcept { return errno_; }  // for QBINFER_ERROR_FILE

 private:
  qbinfer_status status_;
  int errno_;
};

// Throws Error for a failed status, with the calling thread's message.
inline void check(qbinfer_status status) {
  if (status != QBINFER_OK) throw Error(status, qbinfer_last_error(), qbinfer_last_errno());
}

struct Options {
  int threads = 1;  // 0: every usable CPU
  std::string isa;  // "": QBINFER_ISA or the best this CPU runs
  std::uint64_t max_memory = QBINFER_DEFAULT_MAX_MEMORY;  // 0: no limit
};

class Model {
 public:
  explicit Model(const std::string& path, const Options& options = Options()) {
    const qbinfer_options o = c_options(options);
    check(qbinfer_model_open_path(path.data(), path.size(), &o, &model_));
  }
  // From the bytes of a .qbw file (copied); `name` stands for the path in messages.
  Model(const void* data, std::size_t size, const std::string& name,
        const Options& options = Options()) {
    const qbinfer_options o = c_options(options);
    check(qbinfer_model_open_buffer(data, size, name.c_str(), &o, &model_));
  }
  ~Model() { qbinfer_model_close(model_); }
  Model(Model&& other) noexcept : model_(std::exchange(other.model_, nullptr)) {}
  Model& operator=(Model&& other) noexcept {
    if (this != &other) {
      qbinfer_model_close(model_);
      model_ = std::exchange(other.model_, nullptr);
    }
    return *this;
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  qbinfer_model* get() const noexcept { return model_; }

  // {N, C, H, W} or {N, H, W, C} of one image.
  std::vector<std::int64_t> input_shape(qbinfer_layout layout = QBINFER_LAYOUT_NCHW) const {
    std::vector<std::int64_t> dims(4);
    check(qbinfer_model_input_shape(model_, 0, layout, dims.data()));
    return dims;
  }
  std::vector<std::int64_t> output_shape(qbinfer_layout layout = QBINFER_LAYOUT_NCHW) const {
    std::vector<std::int64_t> dims(4);
    check(qbinfer_model_output_shape(model_, 0, layout, dims.data()));
    return dims;
  }
  std::size_t input_floats() const { return qbinfer_model_input_floats(model_); }
  std::size_t output_floats() const { return qbinfer_model_output_floats(model_); }
  std::size_t num_classes() const { return qbinfer_model_num_classes(model_); }
  int threads() const { return qbinfer_model_threads(model_); }
  std::string isa() const { return qbinfer_model_isa(model_); }
  std::string name() const { return qbinfer_model_name(model_); }
  // "" when the file has no name for the class.
  std::string class_name(std::size_t index) const {
    const char* name = qbinfer_model_class_name(model_, index);
    return name != nullptr ? name : "";
  }

  // A batch of whole images in `layout` -> their outputs, in the same layout.
  std::vector<float> run(const std::vector<float>& input,
                         qbinfer_layout layout = QBINFER_LAYOUT_NCHW) {
    const std::size_t per_image = input_floats();
    const std::size_t batch = per_image != 0 ? input.size() / per_image : 0;
    std::vector<float> output(batch * output_floats());
    check(qbinfer_model_run(model_, input.data(), input.size(), layout, output.data(),
                            output.size()));
    return output;
  }

  // One NHWC image of the model's input, preprocessed as the file says.
  std::vector<float> preprocess(const qbinfer_image& image) const {
    std::vector<float> x(input_floats());
    check(qbinfer_model_preprocess(model_, &image, x.data(), x.size()));
    return x;
  }

  // The k most probable classes, best first.
  std::vector<qbinfer_class_score> predict(const qbinfer_image& image, std::size_t k = 5) {
    std::vector<qbinfer_class_score> top(k);
    std::size_t count = 0;
    check(qbinfer_model_predict(model_, &image, k, top.data(), &count));
    top.resize(count);
    return top;
  }

 private:
  static qbinfer_options c_options(const Options& options) {
    qbinfer_options o;
    qbinfer_options_init(&o);
    o.threads = options.threads;
    o.isa = options.isa.empty() ? nullptr : options.isa.c_str();
    o.max_memory = options.max_memory;
    return o;
  }

  qbinfer_model* model_ = nullptr;
};

}  // namespace qbinfer

#endif  // QBINFER_QBINFER_HPP_
