// qbinfer_fuzz_driver: loads .qbw files the way a user's process would and runs each one that
// loads, so that a sanitizer build (scripts/sanitize.sh: ASan + UBSan) turns any out-of-bounds
// read, overflow or leak on a hostile file into a failure. The files come from
// fuzz/qbw_mutator.py (field-aware mutations of fuzz/corpus/, CRC recomputed so that they reach
// the parser) and from fuzz/regressions/ (every file that ever crashed the engine).
//
//   qbinfer_fuzz_driver [--threads N] [--quiet] FILE...
//
// Per file, one line: "<verdict>\t<file>\t<detail>", verdict one of
//   ran       loaded and ran (every output finite or not: both are defined results)
//   refused   the loader refused it with qbinfer::Error (FormatError, FileError, ...)
//   big       loaded, but its arena and repacked weights exceed kRunLimitBytes: not run (a
//             resource bound of the engine's, not a crash; issue-tracked separately)
//   other     any other C++ exception (std::bad_alloc, ...): listed, counted, and a failure
//             (the engine promises qbinfer::Error for bad files)
// then a summary line. Exit status: 0 when every file was ran/refused/big, 1 otherwise. A crash
// or a sanitizer report ends the process with a non-zero status by itself.
//
// LLVMFuzzerTestOneInput (below) is the same body for libFuzzer, built only when the compiler
// is clang with -fsanitize=fuzzer (QBINFER_LIBFUZZER); the deterministic driver is what CI runs.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <new>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "format/errors.h"

namespace {

// Beyond this the driver does not run a model that loaded: a sanitizer build is slow and
// memory-hungry, and the resource bounds for such files are the loader's job (max_memory).
constexpr std::uint64_t kRunLimitBytes = std::uint64_t{256} << 20;

enum class Verdict { kRan, kRefused, kBig, kOther };

// A deterministic input: a fixed xorshift stream of normal-ish values, with a few extreme ones
// (0, ±1e30, a NaN-free range) so that kernels see large magnitudes too.
void fill_input(std::vector<float>& x) {
  std::uint32_t s = 0x9E3779B9u;
  for (std::size_t i = 0; i < x.size(); ++i) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    const float u = static_cast<float>(s >> 8) * (1.0f / 16777216.0f);
    x[i] = (i % 97 == 0) ? (i % 2 ? 1e30f : 0.0f) : 4.0f * u - 2.0f;
  }
}

Verdict try_file(const std::string& path, int threads, std::string* detail) {
  try {
    qbinfer::Model model(path, threads);
    const std::uint64_t need = model.arena_bytes() + model.packed_bytes();
    if (need > kRunLimitBytes) {
      *detail = "arena + packed weights " + std::to_string(need) + " bytes";
      return Verdict::kBig;
    }
    const auto& in = model.input();
    const std::size_t batch = 2;  // two images: the per-image loop and the batch split
    std::vector<float> x(batch * std::size_t{in.height} * in.width * in.channels);
    fill_input(x);
    std::vector<float> out(batch * model.output_floats());
    model.run(x.data(), batch, qbinfer::Layout::kNHWC, out.data());
    std::size_t finite = 0;
    for (float v : out) finite += std::isfinite(v) ? 1 : 0;
    *detail = std::to_string(finite) + "/" + std::to_string(out.size()) + " outputs finite";
    return Verdict::kRan;
  } catch (const qbinfer::Error& e) {
    *detail = e.what();
    return Verdict::kRefused;
  } catch (const std::exception& e) {
    *detail = std::string("unexpected ") + typeid(e).name() + ": " + e.what();
    return Verdict::kOther;
  }
}

// The first words of a refusal, for the summary's histogram of reasons.
std::string reason_class(const std::string& message) {
  // Messages name the op or field first ("op 3 (BCONV2D 'x'): ..."): keep the text after the
  // last ": " up to its first digit, which drops indices and sizes.
  std::string tail = message;
  const auto colon = tail.rfind(": ");
  if (colon != std::string::npos) tail = tail.substr(colon + 2);
  std::string out;
  for (char c : tail) {
    if ((c >= '0' && c <= '9') || out.size() >= 48) break;
    out += c;
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '(')) out.pop_back();
  return out.empty() ? "(number)" : out;
}

}  // namespace

#ifdef QBINFER_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The loader takes a path: write the input to a private temporary file.
  char path[] = "/tmp/qbinfer_fuzz_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  close(fd);
  std::string detail;
  const Verdict v = try_file(path, 1, &detail);
  unlink(path);
  if (v == Verdict::kOther) std::abort();
  return 0;
}
#else
int main(int argc, char** argv) {
  int threads = 1;
  bool quiet = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (arg == "-h" || arg == "--help") {
      std::puts("usage: qbinfer_fuzz_driver [--threads N] [--quiet] FILE...");
      return 0;
    } else {
      files.push_back(arg);
    }
  }
  std::size_t counts[4] = {0, 0, 0, 0};
  std::map<std::string, std::size_t> reasons;
  for (const auto& file : files) {
    std::string detail;
    const Verdict v = try_file(file, threads, &detail);
    counts[static_cast<int>(v)] += 1;
    if (v == Verdict::kRefused) reasons[reason_class(detail)] += 1;
    if (!quiet || v == Verdict::kOther) {
      static const char* const kNames[] = {"ran", "refused", "big", "other"};
      // Messages are the engine's (file-supplied strings are quoted by it); one line each.
      for (char& c : detail) c = (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
      std::printf("%s\t%s\t%s\n", kNames[static_cast<int>(v)], file.c_str(), detail.c_str());
    }
  }
  std::printf("files %zu: ran %zu, refused %zu (%.1f%%), big %zu, other %zu\n", files.size(),
              counts[0], counts[1],
              files.empty()
                  ? 0.0
                  : 100.0 * static_cast<double>(counts[1]) / static_cast<double>(files.size()),
              counts[2], counts[3]);
  std::size_t shown = 0;
  std::vector<std::pair<std::size_t, std::string> > top;
  for (const auto& [r, n] : reasons) top.emplace_back(n, r);
  std::sort(top.rbegin(), top.rend());
  for (const auto& [n, r] : top) {
    if (shown++ == 12) break;
    std::printf("  refused %6zu  %s\n", n, r.c_str());
  }
  return counts[3] == 0 ? 0 : 1;
}
#endif
