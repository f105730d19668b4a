// qbinfer-bench: run a .qbw model from the command line, with no Python. Made for boards such as
// the Raspberry Pi, where the tool and a model file are all that is deployed, and for checking an
// ARM build against x86: --dump-logits writes the output on one machine, --compare checks it on
// another (scripts/test-aarch64.sh does that under qemu).
//
// The default input is a deterministic pseudo-random image (see kSeedHelp), so two machines
// given the same seed run the same bytes without shipping an input file.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/text.h"
#include "engine/kernel_table.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "format/errors.h"
#include "qbinfer/isa.h"

namespace {

// Exit codes, also listed in --help.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;     // a file could not be read or written, a damaged model, ...
constexpr int kExitUsage = 2;     // bad command line
constexpr int kExitMismatch = 3;  // --compare found a difference

const char kUsage[] =
    "usage: qbinfer-bench MODEL.qbw [options]\n"
    "\n"
    "Runs a qbinfer model on one image and prints its latency, the kernels it used and the\n"
    "top-5 classes. No Python needed.\n"
    "\n"
    "options:\n"
    "  --runs N            timed runs (default 20); median and min latency are printed\n"
    "  --warmup N          untimed runs before them (default 3)\n"
    "  --threads N         threads of the engine (default 1)\n"
    "  --isa NAME          kernels to use: scalar, avx2, avx512, neon (default: the best this\n"
    "                      CPU runs, or the environment variable QBINFER_ISA)\n"
    "  --max-memory BYTES  refuse a model whose activation arena plus repacked weights need\n"
    "                      more (default 2147483648, 2 GiB; 0: no limit)\n"
    "  --no-fusion         run every op on its own (the engine fuses element-wise tails into\n"
    "                      convs by default; the results are identical)\n"
    "  --input FILE        the image: raw little-endian float32, NCHW, exactly the model's\n"
    "                      input shape (1 x C x H x W), already preprocessed\n"
    "  --seed S            without --input: the seed of the pseudo-random image (default 0)\n"
    "  --dump-input FILE   write the image that ran (raw float32, as --input reads it)\n"
    "  --dump-logits FILE  write the output (raw little-endian float32, NCHW)\n"
    "  --compare FILE      compare the output with FILE (as --dump-logits writes it); exits 3\n"
    "                      on a difference\n"
    "  --rtol X            --compare: relative tolerance (default 1e-5)\n"
    "  --atol X            --compare: absolute tolerance (default rtol x max|expected|)\n"
    "  --top K             classes to print (default 5; 0 prints none)\n"
    "  --profile           also print each step's median time (the steps as they run, fused\n"
    "                      chains included) over --runs runs\n"
    "  -h, --help          this text\n"
    "\n"
    "The pseudo-random image (uniform on [-1, 1) in steps of 2^-23, NCHW order), with all\n"
    "arithmetic on unsigned 64-bit integers modulo 2^64:\n"
    "  state = seed\n"
    "  for i in 0 .. C*H*W - 1:\n"
    "      state += 0x9E3779B97F4A7C15\n"
    "      z = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9\n"
    "      z = (z ^ (z >> 27)) * 0x94D049BB133111EB\n"
    "      z = z ^ (z >> 31)\n"
    "      x[i] = ((z >> 40) - 2^23) / 2^23            (exact in float32)\n"
    "\n"
    "--compare passes when every element has |out - expected| <= atol + rtol x |expected|\n"
    "(NaN matches only NaN) and, for a classifier, the top-K classes are the same, in order.\n"
    "\n"
    "exit status: 0 ok; 1 error (missing or damaged file, unsupported ISA, ...); 2 bad command\n"
    "line; 3 --compare found a difference.\n";

struct Options {
  std::string model;
  int runs = 20;
  int warmup = 3;
  int threads = 1;
  std::string isa;  // empty: active_isa()
  bool fusion = true;
  std::uint64_t max_memory = qbinfer::kDefaultMaxMemory;  // 0: no limit
  std::string input;
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::string dump_input;
  std::string dump_logits;
  std::string compare;
  double rtol = 1e-5;
  double atol = -1.0;  // < 0: rtol * max|expected|
  int top = 5;
  bool profile = false;
};

// A command-line mistake: printed with the usage hint, exit status 2.
struct UsageError {
  std::string message;
};

long long parse_int(const std::string& opt, const std::string& text, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw UsageError{opt + " wants an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got '" + text + "'"};
  }
  return v;
}

std::uint64_t parse_u64(const std::string& opt, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  // strtoull accepts a leading '-' and wraps it; a seed is never negative.
  const unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (text.empty() || text[0] == '-' || *end != '\0' || errno != 0) {
    throw UsageError{opt + " wants a non-negative integer, got '" + text + "'"};
  }
  return static_cast<std::uint64_t>(v);
}

double parse_double(const std::string& opt, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < 0) {
    throw UsageError{opt + " wants a finite number >= 0, got '" + text + "'"};
  }
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string value;
    bool has_value = false;
    // --opt=value as well as --opt value.
    if (arg.rfind("--", 0) == 0) {
      const std::size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_value = true;
      }
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= args.size()) throw UsageError{arg + " needs a value"};
      return args[++i];
    };
    auto no_value = [&]() {
      if (has_value) throw UsageError{arg + " takes no value"};
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    } else if (arg == "--runs") {
      o.runs = static_cast<int>(parse_int(arg, next(), 1, 1000000));
    } else if (arg == "--warmup") {
      o.warmup = static_cast<int>(parse_int(arg, next(), 0, 1000000));
    } else if (arg == "--threads") {
      o.threads = static_cast<int>(parse_int(arg, next(), 1, qbinfer::Model::kMaxThreads));
    } else if (arg == "--isa") {
      o.isa = next();
    } else if (arg == "--max-memory") {
      o.max_memory = parse_u64(arg, next());
    } else if (arg == "--no-fusion") {
      no_value();
      o.fusion = false;
    } else if (arg == "--input") {
      o.input = next();
    } else if (arg == "--seed") {
      o.seed = parse_u64(arg, next());
      o.seed_given = true;
    } else if (arg == "--dump-input") {
      o.dump_input = next();
    } else if (arg == "--dump-logits") {
      o.dump_logits = next();
    } else if (arg == "--compare") {
      o.compare = next();
    } else if (arg == "--rtol") {
      o.rtol = parse_double(arg, next());
    } else if (arg == "--atol") {
      o.atol = parse_double(arg, next());
    } else if (arg == "--top") {
      o.top = static_cast<int>(parse_int(arg, next(), 0, 1000000));
    } else if (arg == "--profile") {
      no_value();
      o.profile = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option " + arg};
    } else if (o.model.empty()) {
      o.model = arg;
    } else {
      throw UsageError{"one model file only (got '" + o.model + "' and '" + arg + "')"};
    }
  }
  if (o.model.empty()) throw UsageError{"no model file given"};
  if (!o.input.empty() && o.seed_given) throw UsageError{"--seed and --input exclude each other"};
  return o;
}

// The image documented in kUsage (SplitMix64, whose constants are public domain): cheap, exact
// and easy to write in numpy, so a Python test can regenerate the same input bit for bit.
std::vector<float> seeded_image(std::uint64_t seed, std::size_t n) {
  std::vector<float> x(n);
  std::uint64_t state = seed;
  for (std::size_t i = 0; i < n; ++i) {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    // 24 bits, centred: an integer in [-2^23, 2^23) that float32 holds exactly.
    const auto k = static_cast<std::int32_t>(z >> 40) - (std::int32_t{1} << 23);
    x[i] = static_cast<float>(k) * (1.0f / 8388608.0f);
  }
  return x;
}

// Raw float32 files are little-endian whatever the host is: assemble and split the bytes
// explicitly rather than relying on the host's byte order.
std::vector<float> read_f32_file(const std::string& path, std::size_t expected, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    throw qbinfer::Error("cannot open " + std::string(what) + " file '" + path +
                         "': " + std::strerror(errno));
  }
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)),
                                         std::istreambuf_iterator<char>());
  if (f.bad()) throw qbinfer::Error("cannot read " + std::string(what) + " file '" + path + "'");
  if (bytes.size() != expected * 4) {
    throw qbinfer::Error(std::string(what) + " file '" + path + "' holds " +
                         std::to_string(bytes.size()) + " bytes; the model needs exactly " +
                         std::to_string(expected * 4) + " (" + std::to_string(expected) +
                         " float32)");
  }
  std::vector<float> out(expected);
  for (std::size_t i = 0; i < expected; ++i) {
    const std::uint32_t u = std::uint32_t{bytes[4 * i]} | std::uint32_t{bytes[4 * i + 1]} << 8 |
                            std::uint32_t{bytes[4 * i + 2]} << 16 |
                            std::uint32_t{bytes[4 * i + 3]} << 24;
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

void write_f32_file(const std::string& path, const std::vector<float>& data) {
  std::vector<unsigned char> bytes(data.size() * 4);
  for (std::size_t i = 0; i < data.size(); ++i) {
    std::uint32_t u = 0;
    std::memcpy(&u, &data[i], 4);
    for (int b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<unsigned char>(u >> (8 * b));
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw qbinfer::Error("cannot create '" + path + "': " + std::strerror(errno));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw qbinfer::Error("cannot write '" + path + "'");
}

// --isa NAME: the engine's one name lookup; its std::invalid_argument becomes this tool's error.
qbinfer::Isa isa_for_option(const std::string& name) {
  try {
    return qbinfer::isa_from_name(name);
  } catch (const std::invalid_argument& e) {
    throw qbinfer::Error(std::string("--isa: ") + e.what());
  }
}

// Indices of the k largest values, largest first; ties keep the lower index first, so the
// order is the same on every machine for the same values.
std::vector<std::size_t> top_k(const std::vector<float>& v, std::size_t k) {
  std::vector<std::size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  k = std::min(k, v.size());
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                    [&](std::size_t a, std::size_t b) {
                      // NaN sorts last.
                      if (std::isnan(v[a]) != std::isnan(v[b])) return std::isnan(v[b]);
                      return v[a] > v[b] || (v[a] == v[b] && a < b);
                    });
  idx.resize(k);
  return idx;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string shape_str(const qbinfer::ValueInfo& v) {
  return std::to_string(v.height) + "x" + std::to_string(v.width) + "x" +
         std::to_string(v.channels);
}

const char* step_kind_name(qbinfer::StepKind kind) {
  switch (kind) {
    case qbinfer::StepKind::kOp:
      return "op";
    case qbinfer::StepKind::kConvChain:
      return "conv_chain";
    case qbinfer::StepKind::kEpilogueChain:
      return "epilogue_chain";
  }
  return "?";
}

void print_kernels(const qbinfer::KernelTable& t) {
  std::printf("isa        %s\n", qbinfer::isa_name(t.isa));
  std::printf(
      "kernels    bitpack %s, bconv %s, conv2d %s, dwconv %s, elementwise %s, "
      "epilogue %s, fc %s, pool %s\n",
      t.bitpack->isa, t.bconv->isa, t.conv2d->isa, t.dwconv->isa, t.elementwise->isa,
      t.epilogue->isa, t.fc->isa, t.pool->isa);
}

void print_profile(qbinfer::Model& model, const std::vector<float>& x, int runs) {
  const std::vector<double> ns = model.profile(x.data(), qbinfer::Layout::kNCHW, runs);
  const double total = std::accumulate(ns.begin(), ns.end(), 0.0);
  const auto& values = model.file().values();
  std::printf("\nprofile    median per step over %d runs (sum %.3f ms)\n", runs, total / 1e6);
  std::printf("%4s  %-14s  %-44s  %-13s  %10s  %6s\n", "step", "kind", "ops", "output HxWxC", "us",
              "%");
  for (std::size_t i = 0; i < ns.size(); ++i) {
    const qbinfer::Step& s = model.steps()[i];
    const std::string out = s.out() != qbinfer::kNoValue ? shape_str(values[s.out()]) : "-";
    std::printf("%4zu  %-14s  %-44s  %-13s  %10.1f  %6.2f\n", i, step_kind_name(s.kind),
                model.step_label(i).c_str(), out.c_str(), ns[i] / 1e3,
                total > 0 ? 100.0 * ns[i] / total : 0.0);
  }
}

void print_top(const qbinfer::Model& model, const std::vector<float>& logits, int top) {
  if (top == 0 || model.output_floats() != model.num_classes()) return;
  // Softmax in double, shifted by the maximum so exp cannot overflow. A model that ends in a
  // SOFTMAX with log = 0 outputs the probabilities already (a softmax of them would flatten
  // them); log-probabilities are logits shifted by a constant, whose softmax is right.
  bool probabilities = false;
  for (const qbinfer::Op& op : model.ops()) {
    probabilities =
        probabilities || (op.output == model.file().output_value() &&
                          op.type == qbinfer::OpType::kSoftmax && !qbinfer::softmax_log(op));
  }
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const auto probability = [&](float v) {
    return probabilities ? static_cast<double>(v) : std::exp(static_cast<double>(v) - mx) / sum;
  };
  const auto& names = model.file().class_names();
  const std::vector<std::size_t> best = top_k(logits, static_cast<std::size_t>(top));
  std::printf("top-%zu      %6s  %14s  %8s  %s\n", best.size(), "class", "logit", "softmax",
              names.empty() ? "" : "name");
  for (std::size_t c : best) {
    // Class names come from the file: quoted() shows control characters (escape sequences,
    // newlines) as '?', so a name cannot drive the terminal or forge a line of the log.
    const std::string name = names.empty() ? "" : qbinfer::quoted(names[c]);
    std::printf("           %6zu  %14.7g  %8.5f  %s\n", c, static_cast<double>(logits[c]),
                probability(logits[c]), name.c_str());
  }
}

// The --compare rule of kUsage. Returns true when out matches expected.
bool compare(const qbinfer::Model& model, const std::vector<float>& out,
             const std::vector<float>& expected, const Options& o) {
  double scale = 0;
  for (float e : expected) {
    if (std::isfinite(e)) scale = std::max(scale, std::fabs(static_cast<double>(e)));
  }
  const double atol = o.atol >= 0 ? o.atol : o.rtol * scale;
  std::size_t identical = 0, bad = 0, worst = 0;
  double max_abs = 0, max_rel = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double a = out[i], e = expected[i];
    if (std::memcmp(&out[i], &expected[i], 4) == 0) ++identical;
    if (std::isnan(a) || std::isnan(e)) {
      if (std::isnan(a) != std::isnan(e)) ++bad;
      continue;
    }
    const double d = a == e ? 0.0 : std::fabs(a - e);  // inf == inf: no inf - inf = NaN
    if (d > max_abs) {
      max_abs = d;
      worst = i;
    }
    if (e != 0) max_rel = std::max(max_rel, d / std::fabs(e));
    if (!(d <= atol + o.rtol * std::fabs(e))) ++bad;
  }
  std::printf(
      "compare    %zu floats vs %s: %zu bit-identical, max |diff| %.3g (element %zu), "
      "max rel diff %.3g; tolerance atol %.3g + rtol %.3g x |expected|\n",
      out.size(), o.compare.c_str(), identical, max_abs, worst, max_rel, atol, o.rtol);
  bool ok = bad == 0;
  if (!ok) std::printf("compare    MISMATCH: %zu floats outside the tolerance\n", bad);
  if (o.top > 0 && model.output_floats() == model.num_classes()) {
    const auto k = static_cast<std::size_t>(o.top);
    const std::vector<std::size_t> a = top_k(out, k), b = top_k(expected, k);
    auto list = [](const std::vector<std::size_t>& v) {
      std::string s;
      for (std::size_t c : v) s += (s.empty() ? "" : " ") + std::to_string(c);
      return s;
    };
    if (a == b) {
      std::printf("compare    top-%zu equal: %s\n", a.size(), list(a).c_str());
    } else {
      std::printf("compare    MISMATCH: top-%zu %s, expected %s\n", a.size(), list(a).c_str(),
                  list(b).c_str());
      ok = false;
    }
  }
  std::printf("compare    %s\n", ok ? "OK" : "FAILED");
  return ok;
}

int run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };

  qbinfer::ModelOptions mo;
  mo.threads = o.threads;
  mo.fuse = o.fusion ? 1 : 0;
  mo.max_memory = o.max_memory;
  // Both paths may throw (an ISA this CPU lacks, or a bad QBINFER_ISA): reported as errors.
  mo.kernels = o.isa.empty() ? &qbinfer::selected_kernel_table()
                             : &qbinfer::kernel_table_for(isa_for_option(o.isa));

  const Clock::time_point t_load = Clock::now();
  qbinfer::Model model(o.model, mo);
  const double load_ms = ms_since(t_load);

  const qbinfer::ValueInfo& in = model.input();
  const std::size_t in_floats = std::size_t{in.channels} * in.height * in.width;
  const qbinfer::QbwFile& file = model.file();
  // The model name and producer come from the file: quoted (see print_top).
  std::printf("model      %s (%s, %s, format %u.%u, %llu bytes)\n", o.model.c_str(),
              qbinfer::quoted(file.model_name()).c_str(), qbinfer::quoted(file.producer()).c_str(),
              static_cast<unsigned>(file.version_major()),
              static_cast<unsigned>(file.version_minor()),
              static_cast<unsigned long long>(file.file_size()));
  std::printf(
      "graph      %zu ops in %zu steps (fusion %s), arena %llu bytes per image, "
      "load %.2f ms\n",
      model.ops().size(), model.steps().size(), model.fused() ? "on" : "off",
      static_cast<unsigned long long>(model.arena_bytes()), load_ms);
  print_kernels(model.kernels());
  std::printf("threads    %d\n", model.threads());

  const std::vector<float> x = o.input.empty() ? seeded_image(o.seed, in_floats)
                                               : read_f32_file(o.input, in_floats, "input");
  std::printf("input      1x%ux%ux%u float32 NCHW, %s\n", in.channels, in.height, in.width,
              o.input.empty() ? ("pseudo-random, seed " + std::to_string(o.seed)).c_str()
                              : o.input.c_str());
  if (!o.dump_input.empty()) write_f32_file(o.dump_input, x);

  std::vector<float> out(model.output_floats());
  for (int i = 0; i < o.warmup; ++i) model.run(x.data(), 1, qbinfer::Layout::kNCHW, out.data());
  std::vector<double> times(static_cast<std::size_t>(o.runs));
  for (double& t : times) {
    const Clock::time_point t0 = Clock::now();
    model.run(x.data(), 1, qbinfer::Layout::kNCHW, out.data());
    t = ms_since(t0);
  }
  std::printf("latency    median %.3f ms, min %.3f ms over %d runs (%d warm-up)\n", median(times),
              *std::min_element(times.begin(), times.end()), o.runs, o.warmup);
  print_top(model, out, o.top);

  if (!o.dump_logits.empty()) {
    write_f32_file(o.dump_logits, out);
    std::printf("wrote      %s (%zu float32)\n", o.dump_logits.c_str(), out.size());
  }
  bool same = true;
  if (!o.compare.empty()) {
    same = compare(model, out, read_f32_file(o.compare, out.size(), "--compare"), o);
  }
  if (o.profile) print_profile(model, x, o.runs);
  return same ? kExitOk : kExitMismatch;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "qbinfer-bench: %s\n(qbinfer-bench --help for the options)\n",
                 e.message.c_str());
    return kExitUsage;
  }
  try {
    return run(options);
  } catch (const qbinfer::FileError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qbinfer-bench: %s\n", e.what());
  } catch (const qbinfer::FormatError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qbinfer-bench: not a valid model: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qbinfer-bench: error: %s\n", e.what());
  }
  return kExitError;
}
