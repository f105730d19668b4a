/* Tests of the qbinfer C API's failure paths, built against the installed package (static
 * library): damaged and hostile model files, paths that are not regular files, bad arguments.
 * Every call must come back with the expected status and a message that says what is wrong;
 * none may abort (an exception escaping the library would) or block (alarm() ends a hang).
 *
 *   capi_tests GOOD_MODEL.qbw WORK_DIR [MORE.qbw ...]
 *
 * GOOD_MODEL is a valid classifier (the shipped digits model): the damaged files are made from
 * its bytes in WORK_DIR. MORE files (e.g. the fuzz corpus) are each opened and, when they load,
 * run and predicted: any status is accepted there, as long as it is a known one with a
 * message. Prints one line per check; exit status 0 iff all pass. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <qbinfer/qbinfer.h>

static int failures = 0;
static int checks = 0;

static void report(int ok, const char* what, qbinfer_status status) {
  ++checks;
  if (!ok) ++failures;
  printf("%s %s: %s \"%s\"\n", ok ? "ok  " : "FAIL", what, qbinfer_status_name(status),
         status == QBINFER_OK ? "" : qbinfer_last_error());
}

/* The status is `want`, and the message is there and contains `needle` (NULL: any). */
static void expect(const char* what, qbinfer_status status, qbinfer_status want,
                   const char* needle) {
  const char* msg = qbinfer_last_error();
  int ok = status == want;
  if (want != QBINFER_OK) ok = ok && msg != NULL && msg[0] != 0;
  if (needle != NULL) ok = ok && msg != NULL && strstr(msg, needle) != NULL;
  report(ok, what, status);
  if (!ok && needle != NULL)
    printf("     (expected %s with \"%s\")\n", qbinfer_status_name(want), needle);
}

static uint8_t* read_all(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  const long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* data = n > 0 ? malloc((size_t)n) : NULL;
  if (data != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

static void write_file(const char* path, const uint8_t* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size) {
    fprintf(stderr, "capi_tests: cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  fclose(f);
}

/* CRC-32 (IEEE 802.3, zlib's), bit by bit: the format's checksum, so a hostile header can be
 * given a valid CRC and reach the check it targets. */
static uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* The header's checksum (docs/format.md): CRC-32 of bytes [0, 56) then [64, size). */
static void fix_crc(uint8_t* data, size_t size) {
  uint32_t crc = crc32_update(0, data, 56);
  crc = crc32_update(crc, data + 64, size - 64);
  for (int i = 0; i < 4; ++i) data[56 + i] = (uint8_t)(crc >> (8 * i));
}

static void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
}

/* Opens `path` and expects `want` (with `needle` in the message). */
static void expect_open(const char* what, const char* path, qbinfer_status want,
                        const char* needle) {
  qbinfer_model* model = NULL;
  const qbinfer_status status = qbinfer_model_open(path, NULL, &model);
  expect(what, status, want, needle);
  if (status == QBINFER_OK) qbinfer_model_close(model);
  if (want != QBINFER_OK && model != NULL) report(0, "  the output stays NULL on failure", status);
}

/* A file that may or may not load: whatever happens must be a known status with a message. */
static void survive(const char* path) {
  qbinfer_model* model = NULL;
  qbinfer_status status = qbinfer_model_open(path, NULL, &model);
  int ok =
      status >= QBINFER_OK && status <= QBINFER_ERROR_INTERNAL && status != QBINFER_ERROR_INTERNAL;
  ok = ok && (status == QBINFER_OK || qbinfer_last_error()[0] != 0);
  if (status == QBINFER_OK) {
    const size_t in = qbinfer_model_input_floats(model);
    const size_t out = qbinfer_model_output_floats(model);
    float* x = calloc(in, sizeof *x);
    float* y = calloc(out, sizeof *y);
    if (x != NULL && y != NULL) {
      const qbinfer_status run = qbinfer_model_run(model, x, in, QBINFER_LAYOUT_NHWC, y, out);
      ok = ok && run == QBINFER_OK;
      uint8_t pixels[3 * 40 * 48];
      memset(pixels, 128, sizeof pixels);
      const qbinfer_image image = {pixels, 48, 40, 3, 0};
      qbinfer_class_score top[5];
      size_t count = 0;
      const qbinfer_status pred = qbinfer_model_predict(model, &image, 5, top, &count);
      /* A map output, a model of 2 channels, a crop larger than the picture: refusals. */
      ok = ok && pred != QBINFER_ERROR_INTERNAL &&
           (pred == QBINFER_OK || qbinfer_last_error()[0] != 0);
    }
    free(x);
    free(y);
    qbinfer_model_close(model);
  }
  char what[512];
  snprintf(what, sizeof what, "survives %s", path);
  report(ok, what, status);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL a call blocked for 60 s (a FIFO opened for reading?)\n";
  if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
  _exit(3);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: capi_tests GOOD_MODEL.qbw WORK_DIR [MORE.qbw ...]\n");
    return 2;
  }
  signal(SIGALRM, on_alarm);
  alarm(60);
  const char* good = argv[1];
  const char* dir = argv[2];
  char path[4096];
  size_t size = 0;
  uint8_t* bytes = read_all(good, &size);
  if (bytes == NULL || size < 128) {
    fprintf(stderr, "capi_tests: cannot read the good model %s\n", good);
    return 2;
  }
  printf("qbinfer %s, C API %d, active ISA %s\n", qbinfer_version(), QBINFER_C_API_VERSION,
         qbinfer_active_isa());
  report(strlen(qbinfer_version()) > 0, "version string", QBINFER_OK);
  report(strcmp(qbinfer_status_name(QBINFER_ERROR_FORMAT), "QBINFER_ERROR_FORMAT") == 0,
         "status names", QBINFER_OK);

  /* The good file loads, from its path and from its bytes. */
  expect_open("the good model opens", good, QBINFER_OK, NULL);
  qbinfer_model* model = NULL;
  expect("the good model opens from a buffer",
         qbinfer_model_open_buffer(bytes, size, "good.qbw", NULL, &model), QBINFER_OK, NULL);

  /* Not files, or not regular ones. */
  snprintf(path, sizeof path, "%s/no-such-model.qbw", dir);
  expect_open("a missing file", path, QBINFER_ERROR_FILE, "no-such-model.qbw");
  report(qbinfer_last_errno() == ENOENT, "  errno is ENOENT", QBINFER_ERROR_FILE);
  expect_open("a directory", dir, QBINFER_ERROR_FILE, NULL);
  report(qbinfer_last_errno() == EISDIR, "  errno is EISDIR", QBINFER_ERROR_FILE);
  snprintf(path, sizeof path, "%s/fifo.qbw", dir);
  unlink(path);
  if (mkfifo(path, 0600) != 0) {
    fprintf(stderr, "capi_tests: mkfifo %s: %s\n", path, strerror(errno));
    return 2;
  }
  expect_open("a FIFO (refused without blocking)", path, QBINFER_ERROR_FORMAT, "FIFO");
  unlink(path);
  expect_open("/dev/null (a character device)", "/dev/null", QBINFER_ERROR_FORMAT,
              "character device");
  qbinfer_model* none = NULL;
  expect("a NUL byte inside the path's length",
         qbinfer_model_open_path("model.qbw\0.txt", 14, NULL, &none),
         QBINFER_ERROR_INVALID_ARGUMENT, "null byte");
  expect("a path without NUL through open_path",
         qbinfer_model_open_path(good, strlen(good), NULL, &none), QBINFER_OK, NULL);
  qbinfer_model_close(none);
  none = NULL;
  expect("a NULL path", qbinfer_model_open(NULL, NULL, &none), QBINFER_ERROR_INVALID_ARGUMENT,
         "NULL");
  expect("a NULL output", qbinfer_model_open(good, NULL, NULL), QBINFER_ERROR_INVALID_ARGUMENT,
         "NULL");

  /* Damaged and hostile contents. */
  uint8_t* copy = malloc(size);
  snprintf(path, sizeof path, "%s/truncated.qbw", dir);
  write_file(path, bytes, size / 2);
  expect_open("truncated to half", path, QBINFER_ERROR_FORMAT, "truncated.qbw");
  write_file(path, bytes, 10);
  expect_open("truncated inside the header", path, QBINFER_ERROR_FORMAT, "truncated.qbw");
  write_file(path, bytes, 0);
  expect_open("an empty file", path, QBINFER_ERROR_FORMAT, NULL);

  memcpy(copy, bytes, size);
  copy[size - 7] ^= 0x10; /* a weight's bit: only the checksum can tell */
  snprintf(path, sizeof path, "%s/bad-crc.qbw", dir);
  write_file(path, copy, size);
  expect_open("one flipped bit (bad CRC)", path, QBINFER_ERROR_FORMAT, "CRC");

  memcpy(copy, bytes, size);
  copy[0] = 'X';
  snprintf(path, sizeof path, "%s/bad-magic.qbw", dir);
  write_file(path, copy, size);
  expect_open("a wrong magic number", path, QBINFER_ERROR_FORMAT, NULL);

  memcpy(copy, bytes, size);
  copy[8] = 2; /* version_major 2 */
  fix_crc(copy, size);
  snprintf(path, sizeof path, "%s/major2.qbw", dir);
  write_file(path, copy, size);
  expect_open("a newer major version", path, QBINFER_ERROR_FORMAT, NULL);

  /* Hostile sizes, each with a valid CRC so that the size check itself must refuse them. */
  static const struct {
    int offset;
    uint64_t value;
    const char* what;
  } hostile[] = {
      {16, UINT64_C(0xFFFFFFFFFFFFFFC0), "file_size 2^64 - 64"},
      {32, UINT64_C(0xFFFFFFFFFFFFFFF0), "meta_size 2^64 - 16"},
      {40, UINT64_C(0x8000000000000000), "data_offset 2^63"},
      {48, UINT64_C(0xFFFFFFFFFFFFFFFF), "data_size 2^64 - 1"},
      {24, UINT64_C(0xFFFFFFFFFFFFFFC0), "meta_offset 2^64 - 64"},
  };
  for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; ++i) {
    memcpy(copy, bytes, size);
    put_u64(copy + hostile[i].offset, hostile[i].value);
    fix_crc(copy, size);
    snprintf(path, sizeof path, "%s/hostile-%zu.qbw", dir, i);
    write_file(path, copy, size);
    char what[128];
    snprintf(what, sizeof what, "hostile header: %s", hostile[i].what);
    expect_open(what, path, QBINFER_ERROR_FORMAT, NULL);
  }
  /* The same damage through a buffer: the name given stands for the path. */
  none = NULL;
  expect("a truncated buffer", qbinfer_model_open_buffer(bytes, size / 3, "in-memory", NULL, &none),
         QBINFER_ERROR_FORMAT, "in-memory");
  expect("a NULL buffer", qbinfer_model_open_buffer(NULL, 100, NULL, NULL, &none),
         QBINFER_ERROR_INVALID_ARGUMENT, NULL);

  /* Options. */
  qbinfer_options options;
  qbinfer_options_init(&options);
  options.threads = -1;
  expect("threads -1", qbinfer_model_open(good, &options, &none), QBINFER_ERROR_INVALID_ARGUMENT,
         "threads");
  qbinfer_options_init(&options);
  options.isa = "pentium-mmx";
  expect("an unknown ISA", qbinfer_model_open(good, &options, &none),
         QBINFER_ERROR_INVALID_ARGUMENT, "pentium-mmx");
  qbinfer_options_init(&options);
  options.max_memory = 4096;
  expect("max_memory below what the model needs", qbinfer_model_open(good, &options, &none),
         QBINFER_ERROR_FORMAT, NULL);
  qbinfer_options_init(&options);
  options.struct_size = 3;
  expect("options not initialised", qbinfer_model_open(good, &options, &none),
         QBINFER_ERROR_INVALID_ARGUMENT, "qbinfer_options_init");

  /* Bad calls on a good model. */
  if (model != NULL) {
    const size_t in = qbinfer_model_input_floats(model);
    const size_t out = qbinfer_model_output_floats(model);
    float* x = calloc(in * 2, sizeof *x);
    float* y = calloc(out * 2, sizeof *y);
    expect("run, a batch of two",
           qbinfer_model_run(model, x, 2 * in, QBINFER_LAYOUT_NCHW, y, 2 * out), QBINFER_OK, NULL);
    expect("run, half an image", qbinfer_model_run(model, x, in / 2, QBINFER_LAYOUT_NCHW, y, out),
           QBINFER_ERROR_INVALID_ARGUMENT, "whole number");
    expect("run, no room for the output",
           qbinfer_model_run(model, x, 2 * in, QBINFER_LAYOUT_NCHW, y, out),
           QBINFER_ERROR_INVALID_ARGUMENT, "output_floats");
    expect("run, a bad layout", qbinfer_model_run(model, x, in, (qbinfer_layout)7, y, out),
           QBINFER_ERROR_INVALID_ARGUMENT, "layout");
    int64_t dims[4];
    expect("input shape", qbinfer_model_input_shape(model, 0, QBINFER_LAYOUT_NCHW, dims),
           QBINFER_OK, NULL);
    expect("input 1 of a one-input model",
           qbinfer_model_input_shape(model, 1, QBINFER_LAYOUT_NCHW, dims), QBINFER_ERROR_SHAPE,
           "index");
    uint8_t pixels[4 * 3 * 3];
    memset(pixels, 200, sizeof pixels);
    qbinfer_image image = {pixels, 3, 3, 4, 0};
    qbinfer_class_score top[3];
    size_t count = 0;
    expect("predict, a 3x3 RGBA image", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_OK, NULL);
    report(count == 3 && top[0].probability >= top[1].probability &&
               top[1].probability >= top[2].probability,
           "  three classes, best first", QBINFER_OK);
    image.channels = 2;
    expect("predict, 2 channels", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_ERROR_INVALID_ARGUMENT, "channels");
    image.channels = 3;
    image.width = 0;
    expect("predict, an empty image", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_ERROR_SHAPE, "empty");
    image.width = (size_t)1 << 20;
    image.height = (size_t)1 << 20;
    expect("predict, 2^40 pixels", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_ERROR_SHAPE, "limit");
    image.width = 3;
    image.height = 3;
    image.row_stride = 2;
    expect("predict, rows overlapping", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_ERROR_INVALID_ARGUMENT, "row_stride");
    image.row_stride = 0;
    expect("predict, k = 0", qbinfer_model_predict(model, &image, 0, top, &count),
           QBINFER_ERROR_INVALID_ARGUMENT, "k");
    image.pixels = NULL;
    expect("predict, NULL pixels", qbinfer_model_predict(model, &image, 3, top, &count),
           QBINFER_ERROR_INVALID_ARGUMENT, "NULL");
    free(x);
    free(y);
    qbinfer_model_close(model);
  }
  free(copy);
  free(bytes);

  for (int i = 3; i < argc; ++i) survive(argv[i]);

  printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
