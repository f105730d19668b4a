/* classify: the top-5 classes of an image under a .qbw model, through the qbinfer C API.
 *
 *   classify MODEL.qbw IMAGE.ppm|IMAGE.pgm [--top K] [--threads N]
 *
 * Reads a binary PPM (P6, RGB) or PGM (P5, gray) image with 8-bit samples (maxval 255), lets the
 * library preprocess it as the model file says (resize, centre crop, normalisation: the same
 * code and values as the Python package's Model.predict) and prints one line per class, best
 * first: rank, class index, probability, and the class name when the file has one (printable
 * ASCII; other bytes as \xNN, so a hostile name cannot drive the terminal). Exit status 0 on
 * success, 1 on a failure, with the library's message on stderr. No dependency beyond libc
 * and libqbinfer: convert other formats first, e.g. `convert photo.jpg photo.ppm`. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qbinfer/qbinfer.h>

/* Skips whitespace and '#' comments between the header's fields. */
static void skip_space(FILE* f) {
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') {
      while ((c = fgetc(f)) != EOF && c != '\n' && c != '\r') {
      }
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') {
      ungetc(c, f);
      return;
    }
  }
}

/* A decimal header field of at most 9 digits (so never past INT32_MAX); -1 if there is none. */
static long read_field(FILE* f) {
  long v = 0;
  int digits = 0;
  int c;
  skip_space(f);
  while ((c = fgetc(f)) != EOF && c >= '0' && c <= '9') {
    if (++digits > 9) return -1;
    v = v * 10 + (c - '0');
  }
  if (digits == 0) return -1;
  /* One whitespace byte ends the field (for maxval: the last byte before the samples). */
  if (c == EOF ||
      !(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '#')) {
    return -1;
  }
  if (c == '#') ungetc(c, f);
  return v;
}

/* Reads a P5/P6 file into *image (pixels malloc'd); 0 on success, else prints why and
 * returns -1. */
static int read_pnm(const char* path, qbinfer_image* image) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "classify: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  int ok = -1;
  uint8_t* pixels = NULL;
  char magic[2];
  if (fread(magic, 1, 2, f) != 2 || magic[0] != 'P' || (magic[1] != '5' && magic[1] != '6')) {
    fprintf(stderr, "classify: %s is not a binary PGM (P5) or PPM (P6) file\n", path);
    goto done;
  }
  const size_t channels = magic[1] == '6' ? 3 : 1;
  const long width = read_field(f);
  const long height = read_field(f);
  const long maxval = read_field(f);
  if (width < 1 || height < 1 || maxval < 1) {
    fprintf(stderr, "classify: %s: bad header (width, height and maxval must be > 0)\n", path);
    goto done;
  }
  if (maxval != 255) {
    fprintf(stderr, "classify: %s: maxval %ld; only 8-bit samples (maxval 255) are read\n", path,
            maxval);
    goto done;
  }
  if ((size_t)width > QBINFER_MAX_IMAGE_PIXELS / (size_t)height) {
    fprintf(stderr, "classify: %s: %ldx%ld pixels is more than the limit of %zu\n", path, width,
            height, (size_t)QBINFER_MAX_IMAGE_PIXELS);
    goto done;
  }
  const size_t bytes = (size_t)width * (size_t)height * channels;
  pixels = malloc(bytes);
  if (pixels == NULL) {
    fprintf(stderr, "classify: %s: out of memory for %zu bytes\n", path, bytes);
    goto done;
  }
  if (fread(pixels, 1, bytes, f) != bytes) {
    fprintf(stderr, "classify: %s: truncated (%ldx%ld pixels need %zu bytes)\n", path, width,
            height, bytes);
    goto done;
  }
  image->pixels = pixels;
  image->width = (size_t)width;
  image->height = (size_t)height;
  image->channels = channels;
  image->row_stride = 0;
  pixels = NULL;
  ok = 0;
done:
  free(pixels);
  fclose(f);
  return ok;
}

/* A class name as printable ASCII, other bytes as \xNN. */
static void print_sanitised(const char* s) {
  for (const unsigned char* p = (const unsigned char*)s; *p != 0; ++p) {
    if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
      putchar(*p);
    } else {
      printf("\\x%02x", *p);
    }
  }
}

static int usage(void) {
  fprintf(stderr, "usage: classify MODEL.qbw IMAGE.ppm|IMAGE.pgm [--top K] [--threads N]\n");
  return 2;
}

/* A whole decimal number in [lo, hi], or -1. */
static long parse_count(const char* s, long lo, long hi) {
  char* end = NULL;
  errno = 0;
  const long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != 0 || v < lo || v > hi) return -1;
  return v;
}

int main(int argc, char** argv) {
  const char* model_path = NULL;
  const char* image_path = NULL;
  long top_k = 5;
  long threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
      if ((top_k = parse_count(argv[++i], 1, 1000000)) < 0) return usage();
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      if ((threads = parse_count(argv[++i], 0, 1024)) < 0) return usage();
    } else if (model_path == NULL) {
      model_path = argv[i];
    } else if (image_path == NULL) {
      image_path = argv[i];
    } else {
      return usage();
    }
  }
  if (model_path == NULL || image_path == NULL) return usage();

  qbinfer_options options;
  qbinfer_options_init(&options);
  options.threads = (int)threads;
  qbinfer_model* model = NULL;
  qbinfer_status status = qbinfer_model_open(model_path, &options, &model);
  if (status != QBINFER_OK) {
    fprintf(stderr, "classify: %s: %s\n", qbinfer_status_name(status), qbinfer_last_error());
    return 1;
  }
  qbinfer_image image;
  if (read_pnm(image_path, &image) != 0) {
    qbinfer_model_close(model);
    return 1;
  }
  int64_t dims[4];
  qbinfer_model_input_shape(model, 0, QBINFER_LAYOUT_NHWC, dims);
  printf("qbinfer %s, kernels %s, %d thread(s)\n", qbinfer_version(), qbinfer_model_isa(model),
         qbinfer_model_threads(model));
  printf("model ");
  print_sanitised(qbinfer_model_name(model));
  printf(": input %lld x %lld x %lld, %zu classes\n", (long long)dims[1], (long long)dims[2],
         (long long)dims[3], qbinfer_model_num_classes(model));
  printf("image %s: %zu x %zu x %zu\n", image_path, image.height, image.width, image.channels);

  qbinfer_class_score* top = calloc((size_t)top_k, sizeof *top);
  size_t count = 0;
  status = top == NULL ? QBINFER_ERROR_OUT_OF_MEMORY
                       : qbinfer_model_predict(model, &image, (size_t)top_k, top, &count);
  int rc = 0;
  if (status != QBINFER_OK) {
    fprintf(stderr, "classify: %s: %s\n", qbinfer_status_name(status),
            top == NULL ? "out of memory" : qbinfer_last_error());
    rc = 1;
  } else {
    printf("top-%zu: rank index probability name\n", count);
    for (size_t i = 0; i < count; ++i) {
      /* %.17g: every bit of the double, so a comparison with another run is exact. */
      printf("%zu %zu %.17g ", i + 1, top[i].index, top[i].probability);
      const char* name = qbinfer_model_class_name(model, top[i].index);
      print_sanitised(name != NULL ? name : "");
      putchar('\n');
    }
  }
  free(top);
  free((void*)image.pixels);
  qbinfer_model_close(model);
  return rc;
}
