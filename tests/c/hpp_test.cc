// The C++ layer (qbinfer.hpp) over the installed C API: RAII, moves, exceptions in place of
// status codes. Run by tests/test_capi.py:  hpp_test GOOD_MODEL.qbw DAMAGED.qbw
// Prints the top-3 of a gray test image; exit status 0 iff every check passes.
#include <qbinfer/qbinfer.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: hpp_test GOOD_MODEL.qbw DAMAGED.qbw\n");
    return 2;
  }
  qbinfer::Model model(argv[1]);
  const std::vector<std::int64_t> nchw = model.input_shape(QBINFER_LAYOUT_NCHW);
  const std::vector<std::int64_t> nhwc = model.input_shape(QBINFER_LAYOUT_NHWC);
  check(nchw[0] == 1 && nchw[1] == nhwc[3] && nchw[2] == nhwc[1] && nchw[3] == nhwc[2] &&
            static_cast<std::size_t>(nchw[1] * nchw[2] * nchw[3]) == model.input_floats(),
        "input shape: NCHW and NHWC agree, and with input_floats");
  // A moved-from model is empty, the moved-to one works.
  qbinfer::Model moved = std::move(model);
  check(model.get() == nullptr && moved.get() != nullptr, "move leaves the source empty");

  std::vector<std::uint8_t> gray(40 * 30);
  for (std::size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<std::uint8_t>(i * 7);
  const qbinfer_image image{gray.data(), 30, 40, 1, 0};
  const std::vector<qbinfer_class_score> top = moved.predict(image, 3);
  check(top.size() == 3 && top[0].probability >= top[1].probability, "predict: 3 classes, sorted");
  for (const qbinfer_class_score& s : top) {
    std::printf("  %zu %.17g %s\n", s.index, s.probability, moved.class_name(s.index).c_str());
  }
  // run on the preprocessed image gives the same best class.
  const std::vector<float> x = moved.preprocess(image);
  const std::vector<float> logits = moved.run(x, QBINFER_LAYOUT_NHWC);
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i) best = logits[i] > logits[best] ? i : best;
  check(logits.size() == moved.num_classes() && best == top[0].index,
        "preprocess + run: the same best class as predict");

  bool thrown = false;
  try {
    qbinfer::Model damaged(argv[2]);
  } catch (const qbinfer::Error& e) {
    thrown = e.status() == QBINFER_ERROR_FORMAT && std::strstr(e.what(), argv[2]) != nullptr;
    std::printf("  damaged: %s\n", e.what());
  }
  check(thrown, "a damaged file throws qbinfer::Error (FORMAT, the path in the message)");
  thrown = false;
  try {
    qbinfer::Model missing(std::string(argv[2]) + ".missing");
  } catch (const qbinfer::Error& e) {
    thrown = e.status() == QBINFER_ERROR_FILE && e.error_number() != 0;
  }
  check(thrown, "a missing file throws qbinfer::Error (FILE, errno)");
  return failures == 0 ? 0 : 1;
}
