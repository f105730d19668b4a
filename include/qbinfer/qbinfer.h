/* qbinfer C API: load a .qbw model and run it from C (or any language with a C FFI), without
 * Python. Installed as <qbinfer/qbinfer.h>; link libqbinfer (static or shared): with CMake,
 *     find_package(qbinfer REQUIRED)
 *     target_link_libraries(app PRIVATE qbinfer::qbinfer)
 * or with pkg-config, `pkg-config --cflags --libs qbinfer` (the shared library; `--static` adds
 * the C++ runtime, libm and threads that libqbinfer.a needs).
 *
 * Rules that hold for every function:
 *  - No C++ exception crosses this interface: each function catches everything and returns a
 *    qbinfer_status. On failure, qbinfer_last_error() gives a message saying what is wrong (for
 *    a damaged file: the path, the problem and where) and qbinfer_last_errno() the OS error
 *    number of a refused file operation; both belong to the calling thread and stay until its
 *    next failing call. Output arguments are left untouched on failure.
 *  - Handles are opaque. A model may be used by several threads at once (qbinfer_model_run and
 *    qbinfer_model_predict each run in an activation arena of their own); close it once, after
 *    every call on it has returned.
 *  - Strings returned are owned by the library (static, or by the model until it is closed).
 *    Strings read from the file (class names, model name) are its bytes as written, normally
 *    UTF-8 but not checked: sanitise them before printing to a terminal.
 *
 * The version of this interface is QBINFER_C_API_VERSION; functions are only ever added. */
#ifndef QBINFER_QBINFER_H_
#define QBINFER_QBINFER_H_

#include <stddef.h>
#include <stdint.h>

/* QBINFER_API marks the exported functions: default visibility when building libqbinfer (the
 * rest of the library is hidden), dllexport/dllimport on Windows. */
#if defined(_WIN32)
#if defined(QBINFER_BUILDING_SHARED)
#define QBINFER_API __declspec(dllexport)
#elif defined(QBINFER_USING_SHARED)
#define QBINFER_API __declspec(dllimport)
#else
#define QBINFER_API
#endif
#elif defined(__GNUC__)
#define QBINFER_API __attribute__((visibility("default")))
#else
#define QBINFER_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define QBINFER_C_API_VERSION 1

/* What a call returned. Every failure also sets qbinfer_last_error(). */
typedef enum qbinfer_status {
  QBINFER_OK = 0,
  /* A NULL pointer, a bad option (threads < 0, an unknown or unsupported ISA name), a path
   * with a NUL byte inside its length, a buffer of the wrong size, k = 0. */
  QBINFER_ERROR_INVALID_ARGUMENT = 1,
  /* The OS refused to open or read the file (missing, a directory, no permission):
   * qbinfer_last_errno() holds its errno (ENOENT, EISDIR, EACCES, ...). */
  QBINFER_ERROR_FILE = 2,
  /* The .qbw file is damaged, hostile, of an unsupported version, needs more memory than
   * max_memory allows, or is not a regular file (a FIFO, socket or device is refused without
   * being read, so opening one never blocks). */
  QBINFER_ERROR_FORMAT = 3,
  /* An image or a model that the call cannot take: an image too large or smaller than the
   * crop after its resize, a model that is not a classifier (for predict), a model of neither
   * 1 nor 3 input channels (for predict), an index past the inputs or outputs. */
  QBINFER_ERROR_SHAPE = 4,
  /* Memory ran out (std::bad_alloc inside the library). */
  QBINFER_ERROR_OUT_OF_MEMORY = 5,
  /* Anything else: a bug in qbinfer (the message says what failed). */
  QBINFER_ERROR_INTERNAL = 6,
  /* Not a status: makes the type an int's size and every int value valid in C++ too, so a
   * value from a newer library or a bad cast is no undefined behaviour. */
  QBINFER_STATUS_MAX_ENUM = 0x7fffffff
} qbinfer_status;

/* The enumerator's name ("QBINFER_ERROR_FORMAT"), or "unknown status" for another value. */
QBINFER_API const char* qbinfer_status_name(qbinfer_status status);

/* The message of the calling thread's last failed call ("" before any failure). */
QBINFER_API const char* qbinfer_last_error(void);

/* errno of the calling thread's last QBINFER_ERROR_FILE (0 for other failures). */
QBINFER_API int qbinfer_last_errno(void);

/* The library's version ("0.1.0"), that of the Python package built from the same source. */
QBINFER_API const char* qbinfer_version(void);

/* The kernels' instruction set the engine picks on this CPU ("avx2", "neon", "scalar", ...):
 * QBINFER_ISA from the environment if set, else the best this CPU runs. NULL (with the
 * message in qbinfer_last_error) when QBINFER_ISA names an ISA this CPU or build lacks. */
QBINFER_API const char* qbinfer_active_isa(void);

/* Tensor layouts of qbinfer_model_run. */
typedef enum qbinfer_layout {
  QBINFER_LAYOUT_NCHW = 0,
  QBINFER_LAYOUT_NHWC = 1,
  /* Not a layout (see QBINFER_STATUS_MAX_ENUM): a bad value is refused, not undefined. */
  QBINFER_LAYOUT_MAX_ENUM = 0x7fffffff
} qbinfer_layout;

/* Most bytes a load may commit in proportion to the graph by default (2 GiB): see max_memory. */
#define QBINFER_DEFAULT_MAX_MEMORY ((uint64_t)2 << 30)

/* How to load a model. Fill it with qbinfer_options_init, then change fields. */
typedef struct qbinfer_options {
  /* sizeof(qbinfer_options) as the caller was compiled (set by qbinfer_options_init): lets a
   * newer library take options from a program built against an older header. */
  size_t struct_size;
  /* Threads of the engine's pool: 0 for every CPU this process may use; N >= 1 asks for N,
   * capped to those CPUs. Default 1. Results never depend on it. */
  int threads;
  /* The kernels' ISA by name ("scalar", "avx2", "avx512", "neon"), or NULL (default) for
   * qbinfer_active_isa(). */
  const char* isa;
  /* Most bytes the load may commit in proportion to the graph (one activation arena plus the
   * weights repacked for the kernels); a file that needs more is refused with
   * QBINFER_ERROR_FORMAT before that much is allocated. 0: no limit. Default
   * QBINFER_DEFAULT_MAX_MEMORY. */
  uint64_t max_memory;
} qbinfer_options;

/* Sets every field of *options to its default (and struct_size). */
QBINFER_API void qbinfer_options_init(qbinfer_options* options);

typedef struct qbinfer_model qbinfer_model;

/* Opens, validates and plans the model in the .qbw file at `path` (NUL-terminated): *model on
 * success. options: NULL for the defaults. Only a regular file is read; it is opened without
 * blocking and refused (QBINFER_ERROR_FORMAT) if it is a FIFO, socket or device. The file is
 * read once: it may change or go away after this returns. */
QBINFER_API qbinfer_status qbinfer_model_open(const char* path, const qbinfer_options* options,
                                              qbinfer_model** model);

/* The same for a path of `length` bytes that need not be NUL-terminated (a string from Rust,
 * Go, Java...): a NUL byte within the length is refused (QBINFER_ERROR_INVALID_ARGUMENT), as
 * the OS would otherwise open the shorter path before it. */
QBINFER_API qbinfer_status qbinfer_model_open_path(const char* path, size_t length,
                                                   const qbinfer_options* options,
                                                   qbinfer_model** model);

/* The same from the `size` bytes of a .qbw file already in memory (copied: the caller may free
 * them as soon as this returns). `name` stands for the path in messages (NULL: "<buffer>"). */
QBINFER_API qbinfer_status qbinfer_model_open_buffer(const void* data, size_t size,
                                                     const char* name,
                                                     const qbinfer_options* options,
                                                     qbinfer_model** model);

/* Frees the model (NULL is ignored). */
QBINFER_API void qbinfer_model_close(qbinfer_model* model);

/* Inputs and outputs: a model has one of each (these return 1); the functions below take the
 * index so that the interface can grow. Shapes are of one image (batch 1); their dims are
 * dims[0..3] = N, C, H, W for QBINFER_LAYOUT_NCHW and N, H, W, C for NHWC. A classifier's
 * output has H = W = 1 (N x classes x 1 x 1). */
QBINFER_API size_t qbinfer_model_input_count(const qbinfer_model* model);
QBINFER_API size_t qbinfer_model_output_count(const qbinfer_model* model);
QBINFER_API qbinfer_status qbinfer_model_input_shape(const qbinfer_model* model, size_t index,
                                                     qbinfer_layout layout, int64_t dims[4]);
QBINFER_API qbinfer_status qbinfer_model_output_shape(const qbinfer_model* model, size_t index,
                                                      qbinfer_layout layout, int64_t dims[4]);

/* Floats of one image's input (C * H * W) and output; 0 for a NULL model. */
QBINFER_API size_t qbinfer_model_input_floats(const qbinfer_model* model);
QBINFER_API size_t qbinfer_model_output_floats(const qbinfer_model* model);

/* Threads of the model's pool as resolved (>= 1), and its kernels' ISA name; 0 / NULL for a
 * NULL model. */
QBINFER_API int qbinfer_model_threads(const qbinfer_model* model);
QBINFER_API const char* qbinfer_model_isa(const qbinfer_model* model);

/* The model's name from the file (may be ""); NULL for a NULL model. */
QBINFER_API const char* qbinfer_model_name(const qbinfer_model* model);

/* Classes of the output (its channels), and the name of class `index` as the file stores it:
 * NULL when the file has no class names or the index is out of range. */
QBINFER_API size_t qbinfer_model_num_classes(const qbinfer_model* model);
QBINFER_API const char* qbinfer_model_class_name(const qbinfer_model* model, size_t index);

/* The image preprocessing stored in the file (the recipe of qbinfer_model_predict). */
typedef struct qbinfer_preprocessing {
  uint32_t resize_short; /* the shorter side is resized to this (0: no resize) */
  uint32_t crop_height;  /* then the centre crop, the model's input size */
  uint32_t crop_width;
  float mean[3]; /* then (pixel * pixel_scale - mean[c]) / std[c] per channel */
  float std[3];
  float pixel_scale;
} qbinfer_preprocessing;
QBINFER_API qbinfer_status qbinfer_model_preprocessing(const qbinfer_model* model,
                                                       qbinfer_preprocessing* out);

/* Runs a preprocessed float32 batch. input: `input_floats` floats, a whole number N >= 1 of
 * images of qbinfer_model_input_floats() each, contiguous, in `layout`; output: room for
 * `output_floats` >= N * qbinfer_model_output_floats() floats, written in the same layout.
 * Safe to call from several threads at once. */
QBINFER_API qbinfer_status qbinfer_model_run(qbinfer_model* model, const float* input,
                                             size_t input_floats, qbinfer_layout layout,
                                             float* output, size_t output_floats);

/* An 8-bit image in memory: `height` rows of `width` pixels of `channels` bytes each (1: gray,
 * 3: RGB, 4: RGBA or RGBX, whose fourth byte is not read), rows `row_stride` bytes apart (0:
 * width * channels, packed). */
typedef struct qbinfer_image {
  const uint8_t* pixels;
  size_t width;
  size_t height;
  size_t channels;
  size_t row_stride;
} qbinfer_image;

/* Most pixels (width * height) an image may have: 2^28, as the Python package. */
#define QBINFER_MAX_IMAGE_PIXELS ((size_t)1 << 28)

/* The model's input for `image` as the file's preprocessing says, exactly as the Python
 * package's Model.predict computes it (same engine code): a 3-channel model takes RGB (gray
 * repeated), a 1-channel model gray (RGB becomes ITU-R BT.601 luma, Pillow's integer rule);
 * the shorter side resized to resize_short with the bilinear (triangle) filter, the centre
 * crop, then the normalisation. output: room for `output_floats` >= qbinfer_model_input_floats()
 * floats, written as one NHWC image (pass it to qbinfer_model_run with QBINFER_LAYOUT_NHWC). */
QBINFER_API qbinfer_status qbinfer_model_preprocess(const qbinfer_model* model,
                                                    const qbinfer_image* image, float* output,
                                                    size_t output_floats);

/* One class of a prediction. */
typedef struct qbinfer_class_score {
  size_t index;       /* class index (into qbinfer_model_class_name) */
  double probability; /* in [0, 1] */
} qbinfer_class_score;

/* Classifies `image`: qbinfer_model_preprocess, qbinfer_model_run, then the probabilities (the
 * softmax of logits or log-probabilities in double, or a model's own probabilities) of the `k`
 * most probable classes, best first, ties to the lower index. top: room for k entries;
 * *count: how many were written, min(k, classes). QBINFER_ERROR_SHAPE for a model whose output
 * is not N x classes (a dense output: use qbinfer_model_run). */
QBINFER_API qbinfer_status qbinfer_model_predict(qbinfer_model* model, const qbinfer_image* image,
                                                 size_t k, qbinfer_class_score* top,
                                                 size_t* count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* QBINFER_QBINFER_H_ */
