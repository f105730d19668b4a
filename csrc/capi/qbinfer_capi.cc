// The C API (include/qbinfer/qbinfer.h) over the engine's Model (engine/model.h).
//
// Every entry point runs its body through `guarded`, which turns each exception into a status
// and a thread-local message, so nothing thrown inside the engine reaches a C caller (where it
// would abort the program). Predict reuses the engine's resample (engine/resample.h) for the
// resize, crop and normalisation; what is computed here is only what the Python package
// computes around that call (python/qbinfer/preprocess.py): the crop geometry and the two
// axes' filters, in the same float64 arithmetic so that the filters are the same float32
// values, and the softmax/top-k of predict (csrc/python/preprocess_binding.cc).
#include "qbinfer/qbinfer.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "capi/preprocess.h"
#include "engine/model.h"
#include "engine/resample.h"
#include "format/errors.h"
#include "qbinfer/isa.h"

#ifndef QBINFER_VERSION
#define QBINFER_VERSION "0.0.0"
#endif

struct qbinfer_model {
  std::unique_ptr<qbinfer::Model> model;
  const char* isa = "";
  // What the output holds: predict takes the softmax of logits and log-probabilities (the
  // latter renormalises their rounding) and a SOFTMAX's probabilities as they are.
  bool outputs_probabilities = false;
};

namespace {

// The calling thread's last failure. A message that cannot be stored (no memory) falls back to
// a fixed text, so reporting an error never throws.
thread_local std::string g_last_error;
thread_local int g_last_errno = 0;
thread_local bool g_message_lost = false;

void set_error(const char* message, int err = 0) noexcept {
  g_last_errno = err;
  try {
    g_last_error = message;
    g_message_lost = false;
  } catch (...) {
    g_message_lost = true;
  }
}

qbinfer_status fail(qbinfer_status status, const char* message, int err = 0) noexcept {
  set_error(message, err);
  return status;
}

// Runs `body` (returning qbinfer_status); every exception becomes a status and a message.
template <class Body>
qbinfer_status guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const qbinfer::FileError& e) {
    return fail(QBINFER_ERROR_FILE, e.what(), e.error_number());
  } catch (const qbinfer::FormatError& e) {
    return fail(QBINFER_ERROR_FORMAT, e.what());
  } catch (const qbinfer::ShapeError& e) {
    return fail(QBINFER_ERROR_SHAPE, e.what());
  } catch (const qbinfer::DtypeError& e) {
    return fail(QBINFER_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const qbinfer::Error& e) {
    return fail(QBINFER_ERROR_INTERNAL, e.what());
  } catch (const std::invalid_argument& e) {  // an embedded NUL, an ISA name
    return fail(QBINFER_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(QBINFER_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::length_error& e) {  // a vector asked for more than it can hold
    return fail(QBINFER_ERROR_OUT_OF_MEMORY, e.what());
  } catch (const std::exception& e) {
    return fail(QBINFER_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(QBINFER_ERROR_INTERNAL, "unknown C++ exception inside qbinfer");
  }
}

// The engine's ISA: QBINFER_ISA or the best supported. A bad QBINFER_ISA is the caller's
// setting, so an invalid argument (active_isa throws std::runtime_error for it).
qbinfer::Isa active_isa_checked() {
  try {
    return qbinfer::active_isa();
  } catch (const qbinfer::Error&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(e.what());
  }
}

qbinfer::ModelOptions model_options(const qbinfer_options* in, const char** isa_name) {
  qbinfer_options opts;
  qbinfer_options_init(&opts);
  if (in != nullptr) {
    // A caller compiled against an older, shorter struct passes its own size: read only that.
    if (in->struct_size < offsetof(qbinfer_options, threads) + sizeof(int) ||
        in->struct_size > (std::size_t{1} << 16)) {
      throw std::invalid_argument("qbinfer_options.struct_size is " +
                                  std::to_string(in->struct_size) +
                                  ": initialise the options with qbinfer_options_init");
    }
    std::memcpy(&opts, in, std::min(in->struct_size, sizeof opts));
  }
  if (opts.threads < 0) {
    throw std::invalid_argument("qbinfer_options.threads must be >= 0 (0: every usable CPU), got " +
                                std::to_string(opts.threads));
  }
  const std::size_t usable =
      std::min<std::size_t>(qbinfer::usable_cpus(), qbinfer::Model::kMaxThreads);
  const std::size_t asked = opts.threads == 0 ? usable : static_cast<std::size_t>(opts.threads);
  const qbinfer::Isa isa =
      opts.isa == nullptr ? active_isa_checked() : qbinfer::isa_from_name(opts.isa);
  *isa_name = qbinfer::isa_name(isa);
  qbinfer::ModelOptions options;
  options.threads = static_cast<int>(std::min(asked, usable));
  options.kernels = &qbinfer::kernel_table_for(isa);
  options.max_memory = opts.max_memory;
  return options;
}

// The handle around a loaded model: its ISA and what its output holds.
qbinfer_model* wrap(std::unique_ptr<qbinfer::Model> model, const char* isa) {
  auto handle = std::make_unique<qbinfer_model>();
  for (const qbinfer::Op& op : model->ops()) {
    // Every value has one producer (the loader checks it): the op that writes the output.
    if (op.output == model->file().output_value()) {
      const auto attrs = op.attrs();
      // SOFTMAX's one attribute is `log` (op_schema.inc): 0 probabilities, 1 log-softmax.
      handle->outputs_probabilities =
          op.type == qbinfer::OpType::kSoftmax && attrs.size() >= 1 && attrs[0] == 0;
    }
  }
  handle->isa = isa;
  handle->model = std::move(model);
  return handle.release();
}

qbinfer_status open_file(const std::string& path, const qbinfer_options* options,
                         qbinfer_model** out) {
  if (out == nullptr) return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model (the output) is NULL");
  const char* isa = "";
  const qbinfer::ModelOptions opts = model_options(options, &isa);
  *out = wrap(std::make_unique<qbinfer::Model>(path, opts), isa);
  return QBINFER_OK;
}

void write_dims(const qbinfer::ValueInfo& v, qbinfer_layout layout, int64_t dims[4]) {
  const auto h = static_cast<int64_t>(v.height);
  const auto w = static_cast<int64_t>(v.width);
  const auto c = static_cast<int64_t>(v.channels);
  dims[0] = 1;
  if (layout == QBINFER_LAYOUT_NCHW) {
    dims[1] = c, dims[2] = h, dims[3] = w;
  } else {
    dims[1] = h, dims[2] = w, dims[3] = c;
  }
}

qbinfer_status shape_of(const qbinfer_model* model, std::size_t index, qbinfer_layout layout,
                        int64_t dims[4], bool input) {
  if (model == nullptr || dims == nullptr) {
    return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model or dims is NULL");
  }
  if (layout != QBINFER_LAYOUT_NCHW && layout != QBINFER_LAYOUT_NHWC) {
    return fail(QBINFER_ERROR_INVALID_ARGUMENT, "layout must be QBINFER_LAYOUT_NCHW or _NHWC");
  }
  if (index != 0) {
    return fail(QBINFER_ERROR_SHAPE, input ? "input index out of range (a model has 1 input)"
                                           : "output index out of range (a model has 1 output)");
  }
  write_dims(input ? model->model->input() : model->model->output(), layout, dims);
  return QBINFER_OK;
}

std::size_t input_floats(const qbinfer::Model& m) {
  const qbinfer::ValueInfo& in = m.input();
  return std::size_t{in.height} * in.width * in.channels;
}

// The image's checks, shared by preprocess and predict.
void check_image(const qbinfer_image* image) {
  if (image == nullptr || image->pixels == nullptr) {
    throw std::invalid_argument("image or image->pixels is NULL");
  }
  if (image->channels != 1 && image->channels != 3 && image->channels != 4) {
    throw std::invalid_argument("image->channels must be 1 (gray), 3 (RGB) or 4 (RGBA), not " +
                                std::to_string(image->channels));
  }
  if (image->width < 1 || image->height < 1) {
    throw qbinfer::ShapeError("the image is empty (" + std::to_string(image->height) + "x" +
                              std::to_string(image->width) + ")");
  }
  if (image->width > QBINFER_MAX_IMAGE_PIXELS / image->height) {
    throw qbinfer::ShapeError("an image of " + std::to_string(image->height) + "x" +
                              std::to_string(image->width) + " pixels exceeds the limit of " +
                              std::to_string(QBINFER_MAX_IMAGE_PIXELS) + " pixels");
  }
  if (image->row_stride != 0 && image->row_stride < image->width * image->channels) {
    throw std::invalid_argument(
        "image->row_stride " + std::to_string(image->row_stride) +
        " is less than width * channels = " + std::to_string(image->width * image->channels));
  }
}

qbinfer::capi::ImageInput image_input(const qbinfer_image* image) {
  qbinfer::capi::ImageInput in;
  in.pixels = image->pixels;
  in.width = image->width;
  in.height = image->height;
  in.channels = image->channels;
  in.row_stride = image->row_stride != 0 ? image->row_stride : image->width * image->channels;
  return in;
}

qbinfer::capi::Recipe recipe_of(const qbinfer::Model& m) {
  const qbinfer::Preprocessing& p = m.file().preprocessing();
  qbinfer::capi::Recipe r;
  r.resize_short = p.resize_short;
  r.crop_height = p.crop_height;
  r.crop_width = p.crop_width;
  std::copy(p.mean, p.mean + 3, r.mean);
  std::copy(p.std, p.std + 3, r.std);
  r.pixel_scale = p.pixel_scale;
  r.channels = m.input().channels;
  r.input_height = m.input().height;
  r.input_width = m.input().width;
  return r;
}

}  // namespace

extern "C" {

const char* qbinfer_status_name(qbinfer_status status) {
  switch (status) {
    case QBINFER_OK:
      return "QBINFER_OK";
    case QBINFER_ERROR_INVALID_ARGUMENT:
      return "QBINFER_ERROR_INVALID_ARGUMENT";
    case QBINFER_ERROR_FILE:
      return "QBINFER_ERROR_FILE";
    case QBINFER_ERROR_FORMAT:
      return "QBINFER_ERROR_FORMAT";
    case QBINFER_ERROR_SHAPE:
      return "QBINFER_ERROR_SHAPE";
    case QBINFER_ERROR_OUT_OF_MEMORY:
      return "QBINFER_ERROR_OUT_OF_MEMORY";
    case QBINFER_ERROR_INTERNAL:
      return "QBINFER_ERROR_INTERNAL";
    case QBINFER_STATUS_MAX_ENUM:
      break;
  }
  return "unknown status";
}

const char* qbinfer_last_error(void) {
  return g_message_lost ? "out of memory (the error message could not be stored)"
                        : g_last_error.c_str();
}

int qbinfer_last_errno(void) { return g_last_errno; }

const char* qbinfer_version(void) { return QBINFER_VERSION; }

const char* qbinfer_active_isa(void) {
  const char* name = nullptr;
  const qbinfer_status status = guarded([&] {
    name = qbinfer::isa_name(active_isa_checked());
    return QBINFER_OK;
  });
  return status == QBINFER_OK ? name : nullptr;
}

void qbinfer_options_init(qbinfer_options* options) {
  if (options == nullptr) return;
  *options = qbinfer_options{};
  options->struct_size = sizeof(qbinfer_options);
  options->threads = 1;
  options->isa = nullptr;
  options->max_memory = QBINFER_DEFAULT_MAX_MEMORY;
}

qbinfer_status qbinfer_model_open(const char* path, const qbinfer_options* options,
                                  qbinfer_model** model) {
  return guarded([&] {
    if (path == nullptr) return fail(QBINFER_ERROR_INVALID_ARGUMENT, "path is NULL");
    return open_file(path, options, model);
  });
}

qbinfer_status qbinfer_model_open_path(const char* path, std::size_t length,
                                       const qbinfer_options* options, qbinfer_model** model) {
  return guarded([&] {
    if (path == nullptr) return fail(QBINFER_ERROR_INVALID_ARGUMENT, "path is NULL");
    // QbwFile::open refuses a NUL inside the string (std::invalid_argument), before the OS
    // could read the path only up to it.
    return open_file(std::string(path, length), options, model);
  });
}

qbinfer_status qbinfer_model_open_buffer(const void* data, std::size_t size, const char* name,
                                         const qbinfer_options* options, qbinfer_model** model) {
  return guarded([&] {
    if (model == nullptr) return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model (the output) is NULL");
    if (data == nullptr && size != 0) {
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, "data is NULL with a size > 0");
    }
    const char* isa = "";
    const qbinfer::ModelOptions opts = model_options(options, &isa);
    static const char kEmpty = 0;
    qbinfer::QbwFile file = qbinfer::QbwFile::from_memory(data != nullptr ? data : &kEmpty, size,
                                                          name != nullptr ? name : "<buffer>");
    *model = wrap(std::make_unique<qbinfer::Model>(std::move(file), opts), isa);
    return QBINFER_OK;
  });
}

void qbinfer_model_close(qbinfer_model* model) { delete model; }

std::size_t qbinfer_model_input_count(const qbinfer_model* model) { return model ? 1 : 0; }
std::size_t qbinfer_model_output_count(const qbinfer_model* model) { return model ? 1 : 0; }

qbinfer_status qbinfer_model_input_shape(const qbinfer_model* model, std::size_t index,
                                         qbinfer_layout layout, int64_t dims[4]) {
  return guarded([&] { return shape_of(model, index, layout, dims, true); });
}

qbinfer_status qbinfer_model_output_shape(const qbinfer_model* model, std::size_t index,
                                          qbinfer_layout layout, int64_t dims[4]) {
  return guarded([&] { return shape_of(model, index, layout, dims, false); });
}

std::size_t qbinfer_model_input_floats(const qbinfer_model* model) {
  return model ? input_floats(*model->model) : 0;
}

std::size_t qbinfer_model_output_floats(const qbinfer_model* model) {
  return model ? model->model->output_floats() : 0;
}

int qbinfer_model_threads(const qbinfer_model* model) {
  return model ? model->model->threads() : 0;
}

const char* qbinfer_model_isa(const qbinfer_model* model) { return model ? model->isa : nullptr; }

const char* qbinfer_model_name(const qbinfer_model* model) {
  return model ? model->model->file().model_name().c_str() : nullptr;
}

std::size_t qbinfer_model_num_classes(const qbinfer_model* model) {
  return model ? model->model->num_classes() : 0;
}

const char* qbinfer_model_class_name(const qbinfer_model* model, std::size_t index) {
  if (model == nullptr) return nullptr;
  const std::vector<std::string>& names = model->model->file().class_names();
  return index < names.size() ? names[index].c_str() : nullptr;
}

qbinfer_status qbinfer_model_preprocessing(const qbinfer_model* model, qbinfer_preprocessing* out) {
  if (model == nullptr || out == nullptr) {
    return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model or out is NULL");
  }
  const qbinfer::Preprocessing& p = model->model->file().preprocessing();
  out->resize_short = p.resize_short;
  out->crop_height = p.crop_height;
  out->crop_width = p.crop_width;
  std::copy(p.mean, p.mean + 3, out->mean);
  std::copy(p.std, p.std + 3, out->std);
  out->pixel_scale = p.pixel_scale;
  return QBINFER_OK;
}

qbinfer_status qbinfer_model_run(qbinfer_model* model, const float* input, std::size_t input_count,
                                 qbinfer_layout layout, float* output, std::size_t output_count) {
  return guarded([&] {
    if (model == nullptr || input == nullptr || output == nullptr) {
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model, input or output is NULL");
    }
    if (layout != QBINFER_LAYOUT_NCHW && layout != QBINFER_LAYOUT_NHWC) {
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, "layout must be QBINFER_LAYOUT_NCHW or _NHWC");
    }
    qbinfer::Model& m = *model->model;
    const std::size_t per_image = input_floats(m);
    if (input_count == 0 || input_count % per_image != 0) {
      const std::string message = "input_floats must be a whole number >= 1 of images of " +
                                  std::to_string(per_image) + " floats, got " +
                                  std::to_string(input_count);
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, message.c_str());
    }
    const std::size_t batch = input_count / per_image;
    if (output_count / m.output_floats() < batch) {
      const std::string message = "output_floats " + std::to_string(output_count) +
                                  " is less than the " + std::to_string(batch) + " x " +
                                  std::to_string(m.output_floats()) + " floats of the output";
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, message.c_str());
    }
    m.run(input, batch,
          layout == QBINFER_LAYOUT_NCHW ? qbinfer::Layout::kNCHW : qbinfer::Layout::kNHWC, output);
    return QBINFER_OK;
  });
}

qbinfer_status qbinfer_model_preprocess(const qbinfer_model* model, const qbinfer_image* image,
                                        float* output, std::size_t output_count) {
  return guarded([&] {
    if (model == nullptr || output == nullptr) {
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model or output is NULL");
    }
    check_image(image);
    const std::size_t need = input_floats(*model->model);
    if (output_count < need) {
      const std::string message = "output_floats " + std::to_string(output_count) +
                                  " is less than the model's input of " + std::to_string(need);
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, message.c_str());
    }
    qbinfer::capi::preprocess(image_input(image), recipe_of(*model->model), output,
                              active_isa_checked());
    return QBINFER_OK;
  });
}

qbinfer_status qbinfer_model_predict(qbinfer_model* model, const qbinfer_image* image,
                                     std::size_t k, qbinfer_class_score* top, std::size_t* count) {
  return guarded([&] {
    if (model == nullptr || top == nullptr || count == nullptr) {
      return fail(QBINFER_ERROR_INVALID_ARGUMENT, "model, top or count is NULL");
    }
    if (k == 0) return fail(QBINFER_ERROR_INVALID_ARGUMENT, "k must be >= 1");
    qbinfer::Model& m = *model->model;
    if (m.output().height != 1 || m.output().width != 1) {
      return fail(QBINFER_ERROR_SHAPE,
                  "predict takes a classifier (output N x classes); this model's output is a "
                  "map: preprocess and call qbinfer_model_run");
    }
    check_image(image);
    std::vector<float> x(input_floats(m));
    qbinfer::capi::preprocess(image_input(image), recipe_of(m), x.data(), active_isa_checked());
    std::vector<float> logits(m.output_floats());
    m.run(x.data(), 1, qbinfer::Layout::kNHWC, logits.data());
    std::vector<qbinfer::capi::ClassScore> best =
        qbinfer::capi::top_probabilities(logits, !model->outputs_probabilities, k);
    for (std::size_t i = 0; i < best.size(); ++i) {
      top[i].index = best[i].index;
      top[i].probability = best[i].probability;
    }
    *count = best.size();
    return QBINFER_OK;
  });
}

}  // extern "C"
