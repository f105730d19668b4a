// The kernel test plan, in one place: every compiled ISA variant of every kernel family against
// the portable reference. Run by the standalone qbinfer_kernel_tests (kernel_tests.cc; also
// under qemu for the NEON kernels) and by qbinfer._testing.run_kernel_tests (the pytest file
// tests/test_kernels_simd.py), so there is no second copy of it.
//
// What is compared:
//   bit-exact (memcmp; for floats the same bits, NaN positions equal but payloads free)
//     bitpack, bconv, depthwise f32 and INT8 (absmax, quantization, conv), the dense conv, the
//     pools, concat, the element-wise kernels, the fused epilogue (floats and bits);
//   within fc.h's tolerance  |got - exact| <= 1e-5 * (|ws| * sum |w * x| + |bias|)  in double
//     the FC encodings (f32, INT8, bitplane8 in family fc; binary in family fc_binary);
//   the softmax reference (which every variant must equal bit for bit) also within the SOFTMAX
//     tolerance of docs/format.md of exact math in double.
// Row-range entry points run over a shuffled split of the rows (empty ranges included) and over
// one partial range into a sentinel-filled output, which must stay untouched outside it. Inputs
// and outputs sit against an inaccessible page (at their end, or at their start: alternating per
// case) where the OS allows it, so a kernel that touches one byte outside them crashes the test.
// Each family starts with fixed cases (awkward shapes, the zoo's layers scaled down in H and W,
// accumulators at their limits, special values) and continues with random ones; the seed
// replays a run exactly (every family/variant derives its own stream from it).
#include "tests/kernel_test_harness.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define QBINFER_TEST_GUARD_PAGES 1
#endif

#include "kernels/bconv/bconv.h"
#include "kernels/bfc/bfc.h"
#include "kernels/bitpack/bitpack.h"
#include "kernels/concat/concat.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/epilogue/epilogue.h"
#include "kernels/fc/fc.h"
#include "kernels/pool/pool.h"
#include "kernels/resize/resize.h"
#include "qbinfer/bit_contract.h"
#include "qbinfer/isa.h"

namespace qbinfer {
namespace {

using Rng = std::mt19937_64;

// ---- buffers ------------------------------------------------------------------------------

// n elements of T, pressed against an inaccessible page at their end (guard_end) or start, so
// an out-of-bounds read or write faults. Falls back to plain heap memory where mmap is absent.
template <class T>
class Buf {
 public:
  Buf() = default;
  explicit Buf(std::size_t n, bool guard_end = true) : n_(n) {
    const std::size_t bytes = n * sizeof(T);
#if defined(QBINFER_TEST_GUARD_PAGES)
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t data_pages = bytes == 0 ? 1 : (bytes + page - 1) / page;
    map_bytes_ = (data_pages + 2) * page;
    void* m = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      map_ = static_cast<unsigned char*>(m);
      mprotect(map_, page, PROT_NONE);
      mprotect(map_ + (data_pages + 1) * page, page, PROT_NONE);
      const std::size_t off = guard_end ? page + (data_pages * page - bytes) : page;
      data_ = reinterpret_cast<T*>(map_ + off);
      return;
    }
#endif
    static_cast<void>(guard_end);
    heap_.resize(n + 1);
    data_ = heap_.data();
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept { swap(o); }
  Buf& operator=(Buf&& o) noexcept {
    swap(o);
    return *this;
  }
  ~Buf() {
#if defined(QBINFER_TEST_GUARD_PAGES)
    if (map_ != nullptr) munmap(map_, map_bytes_);
#endif
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  void assign(const std::vector<T>& v) {
    if (!v.empty()) std::memcpy(data_, v.data(), v.size() * sizeof(T));
  }

 private:
  void swap(Buf& o) {
    std::swap(n_, o.n_);
    std::swap(data_, o.data_);
    std::swap(map_, o.map_);
    std::swap(map_bytes_, o.map_bytes_);
    std::swap(heap_, o.heap_);
  }
  std::size_t n_ = 0;
  T* data_ = nullptr;
  unsigned char* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::vector<T> heap_;
};

template <class T>
Buf<T> guarded(const std::vector<T>& v, bool guard_end) {
  Buf<T> b(v.size(), guard_end);
  b.assign(v);
  return b;
}

// A 64-byte aligned blob (packed weights).
class Aligned {
 public:
  explicit Aligned(std::size_t bytes) : raw_(bytes + 64) {
    const auto addr = reinterpret_cast<std::uintptr_t>(raw_.data());
    p_ = raw_.data() + ((64 - addr % 64) % 64);
  }
  void* data() { return p_; }

 private:
  std::vector<unsigned char> raw_;
  unsigned char* p_;
};

// ---- random data --------------------------------------------------------------------------

std::size_t uniform(Rng& rng, std::size_t lo, std::size_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
}
template <class T, std::size_t N>
T pick(Rng& rng, const T (&list)[N]) {
  return list[uniform(rng, 0, N - 1)];
}
bool coin(Rng& rng, double p = 0.5) { return std::bernoulli_distribution(p)(rng); }

std::vector<float> randn(Rng& rng, std::size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Values of magnitude m..2m with random signs (products of two of them near m^2).
std::vector<float> signed_magnitudes(Rng& rng, std::size_t n, float m) {
  std::uniform_real_distribution<float> u(1.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (coin(rng) ? -m : m) * u(rng);
  return v;
}

const float kSpecials[] = {0.0f,
                           -0.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           -std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::max(),
                           -std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min(),
                           1e-39f,
                           -3e-39f,
                           3e38f,
                           -3e38f,
                           0.5f,
                           -0.5f,
                           1.5f,
                           2.5f,
                           -2.5f,
                           126.5f,
                           -126.5f,
                           127.5f,
                           1e10f};

// Overwrites about `fraction` of v with special values (signed zeros, infinities, NaN,
// denormals, rounding ties).
void sprinkle(Rng& rng, std::vector<float>& v, double fraction, bool finite_only = false) {
  if (v.empty()) return;
  const auto count = static_cast<std::size_t>(static_cast<double>(v.size()) * fraction) + 1;
  for (std::size_t i = 0; i < count; ++i) {
    float s = pick(rng, kSpecials);
    if (finite_only && !std::isfinite(s)) s = -0.0f;
    v[uniform(rng, 0, v.size() - 1)] = s;
  }
}

// rows x channels bits, tail bits 0; each valid bit is 1 with probability `ones` (0.5: uniform
// words; 0 and 1: the all-equal patterns that drive every accumulator to its limit).
// The FC's bitplane8 weights of codes B in [0, 255] (w = 2B - 255), co x ci row-major: plane b
// of output o stores 1 (= -1) where bit b of B is 0 (docs/format.md, FC encoding 2).
std::vector<BitWord> bitplanes_of_codes(const std::vector<unsigned>& codes, std::size_t co,
                                        std::size_t ci) {
  const std::size_t words = words_for_channels(ci);
  std::vector<BitWord> planes(8 * co * words, 0);
  for (unsigned b = 0; b < 8; ++b) {
    for (std::size_t o = 0; o < co; ++o) {
      for (std::size_t j = 0; j < ci; ++j) {
        if (((codes[o * ci + j] >> b) & 1u) == 0) {
          planes[(b * co + o) * words + j / kBitsPerWord] |= BitWord{1} << (j % kBitsPerWord);
        }
      }
    }
  }
  return planes;
}

std::vector<BitWord> random_bits(Rng& rng, std::size_t rows, std::size_t channels,
                                 double ones = 0.5) {
  const std::size_t words = words_for_channels(channels);
  std::vector<BitWord> v(rows * words);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t w = 0; w < words; ++w) {
      BitWord x = 0;
      if (ones == 0.5) {
        x = rng();
      } else if (ones >= 1.0) {
        x = ~BitWord{0};
      } else if (ones > 0.0) {
        for (std::size_t b = 0; b < kBitsPerWord; ++b) {
          if (coin(rng, ones)) x |= BitWord{1} << b;
        }
      }
      const std::size_t c0 = w * kBitsPerWord;
      if (channels - c0 < kBitsPerWord) x &= (BitWord{1} << (channels - c0)) - 1;  // tail 0
      v[r * words + w] = x;
    }
  }
  return v;
}

std::vector<std::int8_t> random_i8(Rng& rng, std::size_t n) {
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(static_cast<int>(uniform(rng, 0, 254)) - 127);
  return v;
}

// A shuffled split of [0, rows) into contiguous ranges: up to four random ones, now and then
// with empty ranges mixed in (a caller may pass them), or one row at a time, last row first.
std::vector<std::pair<std::size_t, std::size_t>> row_splits(Rng& rng, std::size_t rows) {
  std::vector<std::pair<std::size_t, std::size_t>> r;
  const std::size_t kind = uniform(rng, 0, 5);
  if (kind == 0) {
    for (std::size_t y = rows; y-- > 0;) r.emplace_back(y, y + 1);
    return r;
  }
  std::vector<std::size_t> cuts{0, rows};
  for (int i = 0; i < 3; ++i) cuts.push_back(uniform(rng, 0, rows));
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) r.emplace_back(cuts[i], cuts[i + 1]);
  if (kind == 1) {
    r.emplace_back(0, 0);
    r.emplace_back(rows, rows);
    const std::size_t y = uniform(rng, 0, rows);
    r.emplace_back(y, y);
  }
  std::shuffle(r.begin(), r.end(), rng);
  return r;
}

const float kSentinel = -1234.5f;

// ---- reporting ----------------------------------------------------------------------------

struct Tally {
  std::size_t cases = 0;
  std::size_t failures = 0;
  std::string context;                // the current case, for messages
  std::vector<std::string> messages;  // the first few failures
  bool fail(const std::string& what) {
    if (messages.size() < 5) messages.push_back(context + ": " + what);
    ++failures;
    return false;
  }
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Same bits, NaN payloads aside.
bool same_floats(Tally& t, const char* what, const float* got, const float* want, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const bool gn = std::isnan(got[i]), wn = std::isnan(want[i]);
    if (gn != wn || (!gn && bits_of(got[i]) != bits_of(want[i]))) {
      return t.fail(fmt("%s: value %zu of %zu: got %.9g (0x%08x), want %.9g (0x%08x)", what, i, n,
                        static_cast<double>(got[i]), bits_of(got[i]), static_cast<double>(want[i]),
                        bits_of(want[i])));
    }
  }
  return true;
}

template <class T>
bool same_bytes(Tally& t, const char* what, const T* got, const T* want, std::size_t n) {
  if (n == 0 || std::memcmp(got, want, n * sizeof(T)) == 0) return true;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(got + i, want + i, sizeof(T)) != 0) {
      return t.fail(fmt("%s: element %zu of %zu differs (got 0x%" PRIx64 ", want 0x%" PRIx64 ")",
                        what, i, n, static_cast<std::uint64_t>(got[i]),
                        static_cast<std::uint64_t>(want[i])));
    }
  }
  return false;
}

// ---- the zoo's layers --------------------------------------------------------------------

// The distinct channel structures of the zoo's layers (tests/zoo_shapes.inc, generated from
// weights_tools.zoo): the fixed cases of each family run them at small H and W, since the
// channel structure, strides and multiplier are what select a kernel path.
template <std::size_t N>
std::vector<std::array<std::size_t, N>> sorted_unique(std::vector<std::array<std::size_t, N>> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::vector<std::array<std::size_t, 3>> zoo_bconv() {  // ci, co, k
  return sorted_unique<3>({
#define QBINFER_ZOO_BCONV(model, h, w, ci, co, k) {ci, co, k},
#include "tests/zoo_shapes.inc"
  });
}

std::vector<std::array<std::size_t, 4>> zoo_dwconv() {  // c, sh, sw, multiplier
  return sorted_unique<4>({
#define QBINFER_ZOO_DWCONV(model, h, w, c, sh, sw, multiplier) {c, sh, sw, multiplier},
#include "tests/zoo_shapes.inc"
  });
}

std::vector<std::array<std::size_t, 3>> zoo_epilogue() {  // channels, residual_channels, bits
  return sorted_unique<3>({
#define QBINFER_ZOO_EPILOGUE(model, pixels, channels, residual_channels, bits) \
  {channels, residual_channels, bits},
#include "tests/zoo_shapes.inc"
  });
}

std::vector<std::array<std::size_t, 4>> zoo_conv2d() {  // ci, co, k, stride
  return sorted_unique<4>({
#define QBINFER_ZOO_CONV2D(model, h, w, ci, co, k, stride) {ci, co, k, stride},
#include "tests/zoo_shapes.inc"
  });
}

std::vector<std::array<std::size_t, 2>> zoo_fc() {  // ci, co
  return sorted_unique<2>({
#define QBINFER_ZOO_FC(model, ci, co) {ci, co},
#include "tests/zoo_shapes.inc"
  });
}

// ---- bitpack ------------------------------------------------------------------------------

// One bitpack call against the reference, into an output prefilled with ones.
void bitpack_case(const BitpackKernels& k, Tally& t, const std::vector<float>& x,
                  std::size_t pixels, std::size_t c, const std::vector<float>* th, bool ge) {
  const std::size_t words = words_for_channels(c);
  std::vector<BitWord> want(pixels * words);
  bitpack_f32_nhwc__reference(x.data(), pixels, c, th ? th->data() : nullptr, want.data());
  Buf<float> xg = guarded(x, ge);
  Buf<float> tg = th ? guarded(*th, !ge) : Buf<float>();
  Buf<BitWord> out(pixels * words, ge);
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = ~BitWord{0};
  k.f32_nhwc(xg.data(), pixels, c, th ? tg.data() : nullptr, out.data());
  same_bytes(t, "bits", out.data(), want.data(), want.size());
  ++t.cases;
}

void test_bitpack(const BitpackKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // The edge rules, fixed: NaN packs as -1, +-0 and denormals against a 0 threshold as the
  // sign rule says, a NaN threshold makes every value -1.
  {
    t.context = "edge rules";
    const std::vector<float> x = {nan, -0.0f, 0.0f, -1e-45f, 1e-45f, -inf, inf, 2.0f, 2.0f};
    const std::vector<float> th = {0, 0, 0, 0, 0, 0, 0, 2.0f, nan};
    bitpack_case(k, t, x, 1, x.size(), nullptr, true);
    bitpack_case(k, t, x, 1, x.size(), &th, false);
  }
  // All -1: exactly the valid bits set, the tail 0.
  for (const std::size_t c : {1, 15, 16, 17, 64, 65, 130}) {
    t.context = fmt("all -1 C=%zu", c);
    bitpack_case(k, t, std::vector<float>(2 * c, -1.0f), 2, c, nullptr, c % 2 == 0);
  }
  const std::size_t kChannels[] = {1,  2,  3,  7,   8,   9,   15,  16,  17,  31,  32,  33,
                                   63, 64, 65, 100, 127, 128, 129, 191, 192, 200, 257, 513};
  for (std::size_t i = 0; i < n_cases; ++i) {
    const std::size_t c = coin(rng) ? pick(rng, kChannels) : uniform(rng, 1, 300);
    const std::size_t pixels = uniform(rng, 0, 13);
    const bool with_t = coin(rng);
    const bool ge = i % 2 == 0;
    t.context = fmt("case %zu pixels=%zu C=%zu thresholds=%d", i, pixels, c, with_t);
    std::vector<float> x = randn(rng, pixels * c);
    sprinkle(rng, x, 0.2);
    std::vector<float> th = randn(rng, c);
    sprinkle(rng, th, 0.2);
    // Ties: values equal to their channel's threshold (or to 0).
    for (std::size_t p = 0; p < pixels; p += 2) {
      for (std::size_t j = 0; j < c; j += 3) x[p * c + j] = with_t ? th[j] : 0.0f;
    }
    bitpack_case(k, t, x, pixels, c, with_t ? &th : nullptr, ge);
  }
}

// ---- bconv --------------------------------------------------------------------------------

// The binary convs' shared check: pack the weights, run every row in a shuffled split (all must
// equal `want`), then one partial row range into a sentinel-filled output (rows outside it must
// keep the sentinel). `rows` output rows of `row_floats` floats each.
template <class Kernels, class Shape>
void check_packed_rows(const Kernels& k, const Shape& s, std::size_t rows, std::size_t row_floats,
                       const std::vector<BitWord>& in, const std::vector<BitWord>& weight,
                       const std::vector<float>& scale, const std::vector<float>& bias,
                       const std::vector<float>& want, bool ge, Rng& rng, Tally& t) {
  const std::size_t n_out = want.size();
  Aligned packed(k.packed_weight_bytes(s));
  {
    Buf<BitWord> wg = guarded(weight, ge);
    k.pack_weight(s, wg.data(), packed.data());
  }
  Buf<BitWord> ig = guarded(in, ge);
  Buf<float> sg = guarded(scale, !ge), bg = guarded(bias, ge);
  Buf<float> out(n_out, ge);
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  for (const auto& r : row_splits(rng, rows)) {
    k.run_rows(s, ig.data(), packed.data(), sg.data(), bg.data(), r.first, r.second, out.data());
  }
  if (!same_floats(t, "whole image", out.data(), want.data(), n_out)) return;
  const std::size_t y0 = uniform(rng, 0, rows), y1 = uniform(rng, y0, rows);
  std::vector<float> want_part(n_out, kSentinel);
  std::copy(want.begin() + static_cast<std::ptrdiff_t>(y0 * row_floats),
            want.begin() + static_cast<std::ptrdiff_t>(y1 * row_floats),
            want_part.begin() + static_cast<std::ptrdiff_t>(y0 * row_floats));
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  k.run_rows(s, ig.data(), packed.data(), sg.data(), bg.data(), y0, y1, out.data());
  same_floats(t, fmt("rows [%zu, %zu)", y0, y1).c_str(), out.data(), want_part.data(), n_out);
}

// One shape; in_ones / w_ones: the density of 1 bits in the input and the weights (0 and 1 give
// the extreme dots that fill every popcount lane and byte accumulator).
void bconv_case(const BConvKernels& k, Rng& rng, Tally& t, const BConvShape& s, bool ge,
                double in_ones = 0.5, double w_ones = 0.5) {
  t.context = fmt("H=%zu W=%zu Ci=%zu Co=%zu k=%zu pad=%s ones=(%g,%g)", s.height, s.width,
                  s.in_channels, s.out_channels, s.kernel,
                  s.padding == BinaryPadding::kZero ? "zero" : "one", in_ones, w_ones);
  const std::size_t taps = s.kernel * s.kernel;
  const std::vector<BitWord> in = random_bits(rng, s.height * s.width, s.in_channels, in_ones);
  const std::vector<BitWord> weight =
      random_bits(rng, s.out_channels * taps, s.in_channels, w_ones);
  const std::vector<float> scale = randn(rng, s.out_channels);
  const std::vector<float> bias = randn(rng, s.out_channels);
  const std::size_t n_out = s.height * s.width * s.out_channels;
  std::vector<float> want(n_out);
  bconv2d_nhwc__reference(s, in.data(), weight.data(), scale.data(), bias.data(), want.data());

  check_packed_rows(k, s, s.height, s.width * s.out_channels, in, weight, scale, bias, want, ge,
                    rng, t);
}

void test_bconv(const BConvKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kCi[] = {1,   2,   5,   15,  16,  17,  31,  32,  33,  63,   64,   65,   100,
                             127, 128, 129, 192, 255, 256, 320, 500, 512, 1000, 1024, 2047, 2048};
  const std::size_t kCo[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 40};
  const std::size_t kHW[][2] = {{1, 1}, {2, 3}, {3, 2}, {1, 5}, {5, 1}, {3, 3},
                                {4, 4}, {3, 7}, {6, 5}, {2, 9}, {7, 3}};
  constexpr BinaryPadding kZero = BinaryPadding::kZero, kOne = BinaryPadding::kOne;
  std::size_t fixed_cases = 0;
  auto fixed = [&](const BConvShape& s, double in_ones = 0.5, double w_ones = 0.5) {
    bconv_case(k, rng, t, s, fixed_cases++ % 2 == 0, in_ones, w_ones);
    ++t.cases;
  };
  // Awkward shapes: the multi-piece streams (3x3 over 2304 channels with 16-bit lanes; 32-bit
  // lanes when k*k*Ci > 65535), the pair path across a 256-pixel tile, the nine-tap tree's
  // interior, the largest in-channel count of the zoo at 3x3 and 1x1, and streams longer than
  // 4095 vectors (the NEON counter's 16 -> 32-bit widening).
  for (const BConvShape& s : {BConvShape{2, 2, 2304, 9, 3, kZero},
                              {2, 2, 7400, 5, 3, kOne},
                              {2, 2, 7400, 9, 3, kZero},
                              {2, 260, 5, 5, 3, kZero},
                              {2, 261, 16, 3, 3, kOne},
                              {5, 6, 24, 9, 3, kZero},
                              {3, 3, 2048, 17, 3, kZero},
                              {2, 3, 2048, 9, 1, kOne},
                              {1, 1, 70000, 3, 1, kZero},
                              {1, 2, 140000, 3, 1, kOne},
                              {2, 2, 15000, 5, 3, kZero}}) {
    fixed(s);
  }
  // A sweep: every in-channel count with 1x1, 3x3 zero and 3x3 one padding; output channels and
  // sides rotate through their lists so that each value meets several channel counts.
  {
    const std::size_t ci_list[] = {1, 16, 31, 32, 33, 63, 64, 65, 100, 128, 200, 512, 2048};
    const std::size_t co_list[] = {1, 5, 16, 17, 33, 31, 64, 65, 100, 128, 200};
    const std::size_t sides[] = {1, 2, 3, 7, 9};
    const std::pair<std::size_t, BinaryPadding> kp[] = {{1, kZero}, {3, kZero}, {3, kOne}};
    std::size_t n = 0;
    for (const std::size_t ci : ci_list) {
      for (const auto& [kk, pad] : kp) {
        std::size_t co = co_list[(n * 7) % std::size(co_list)];
        if (ci == 2048) co = std::min<std::size_t>(co, 33);  // keep the oracle quick
        fixed(
            {sides[n % std::size(sides)], sides[(n * 3 + 1) % std::size(sides)], ci, co, kk, pad});
        ++n;
      }
    }
  }
  // Every border configuration of a 3x3 (1, 2 and 3 rows/columns: a pixel can miss a tap on both
  // sides at once), for each kernel path (Ci <= 16: taps in pairs; Ci <= 32: the nine-tap tree;
  // wider: gathered streams) and channel counts that are not multiples of any tile.
  for (std::size_t h = 1; h <= 3; ++h) {
    for (std::size_t w = 1; w <= 3; ++w) {
      for (const auto& [ci, co] :
           {std::pair<std::size_t, std::size_t>{16, 17}, {9, 40}, {31, 5}, {33, 17}, {100, 33}}) {
        for (const BinaryPadding pad : {kZero, kOne}) fixed({h, w, ci, co, 3, pad});
      }
    }
  }
  // Rows wider than the Ci <= 16 path's tile of 256 pixels (tile edges inside a row).
  for (const BConvShape& s : {BConvShape{2, 300, 16, 5, 3, kZero},
                              {3, 513, 7, 17, 3, kOne},
                              {1, 257, 16, 16, 3, kZero},
                              {2, 300, 32, 5, 3, kOne},
                              {2, 300, 100, 17, 3, kZero}}) {
    fixed(s);
  }
  // Streams past the kernels' stack buffer (gathered and counted in pieces, a piece boundary
  // inside a tap) and on both sides of the 16-bit lane limit (k * k * Ci <= 65535: 16-bit lanes).
  for (const BConvShape& s : {BConvShape{2, 3, 40000, 33, 1, kZero},
                              {3, 3, 4100, 17, 3, kZero},
                              {3, 2, 4100, 17, 3, kOne},
                              {3, 2, 8200, 20, 3, kZero},
                              {3, 3, 8200, 5, 3, kOne},
                              {1, 2, 70000, 17, 1, kZero}}) {
    fixed(s);
  }
  // Accumulators at their limits. 2048 channels at 3x3 with every XOR bit 0 (dot +18432) or 1
  // (dot -18432: the largest count every lane and byte accumulator of a popcount holds at once).
  for (const BinaryPadding pad : {kZero, kOne}) {
    fixed({4, 5, 2048, 19, 3, pad}, 1.0, 1.0);
    fixed({4, 5, 2048, 19, 3, pad}, 1.0, 0.0);
  }
  // Every bit opposite at the largest k * k * Ci that 16-bit lanes take: each lane counts 65529
  // (3x3) or 65535 (1x1), the top of the unsigned 16-bit range.
  fixed({3, 3, 7281, 40, 3, kOne}, 1.0, 0.0);
  fixed({3, 3, 65535, 40, 1, kOne}, 1.0, 0.0);
  // A 1x1 stream long enough to widen the byte counters several times, with skewed bits.
  fixed({2, 3, 16384, 18, 1, kZero}, 0.9, 0.1);
  // The zoo's layers, H and W scaled down, both paddings.
  {
    std::size_t n = 0;
    for (const auto& [ci, co, kk] : zoo_bconv()) {
      const std::size_t h = 3 + n % 7, w = 2 + (n * 3) % 8;
      const std::size_t co_cap =
          std::max<std::size_t>(1, 400000 / (h * w * kk * kk * words_for_channels(ci)));
      for (const BinaryPadding pad : {kZero, kOne}) {
        fixed({h, w, ci, std::min(co, co_cap), kk, pad});
      }
      ++n;
    }
  }
  for (std::size_t i = 0; i < n_cases; ++i) {
    const auto& hw = kHW[uniform(rng, 0, std::size(kHW) - 1)];
    BConvShape s{};
    s.height = hw[0];
    s.width = hw[1];
    s.kernel = coin(rng) ? 3 : 1;
    s.in_channels = coin(rng, 0.6) ? pick(rng, kCi) : uniform(rng, 1, 2048);
    s.out_channels = pick(rng, kCo);
    s.padding = coin(rng) ? BinaryPadding::kZero : BinaryPadding::kOne;
    // Keep the scalar oracle's work bounded (qemu runs it 10-30x slower).
    while (s.height * s.width * s.out_channels * s.kernel * s.kernel *
                   words_for_channels(s.in_channels) >
               60000 &&
           s.out_channels > 1) {
      s.out_channels = (s.out_channels + 1) / 2;
    }
    bconv_case(k, rng, t, s, i % 2 == 0);
    ++t.cases;
  }
  // The narrow 1x1 path (Ci <= 256: one to eight 32-bit units per pixel, groups of 8 channels
  // in register blocks of 4, 2 or 1): every unit count and both sides of each unit edge, channel
  // counts that leave a partial last group or a partial register block, rows that end mid-block,
  // and the extreme dots (every XOR bit 0 or 1). ReActNet-A's 112x112 32 -> 32 and 56x56 64 -> 64
  // at small sides. Then random narrow shapes (the seed is in the test id).
  for (const std::size_t ci : {1,  7,   31,  32,  33,  48,  63,  64,  65,  95, 96,
                               97, 127, 128, 129, 160, 191, 192, 224, 255, 256}) {
    for (const std::size_t co : {1, 8, 9, 24, 31, 32, 33, 40, 56, 64, 65}) {
      fixed({1 + (ci + co) % 3, 1 + (ci * co) % 7, ci, co, 1, (ci + co) % 2 ? kOne : kZero});
    }
  }
  for (const std::size_t ci : {32, 64, 100, 128, 200, 256}) {
    fixed({3, 5, ci, 33, 1, kZero}, 1.0, 1.0);
    fixed({3, 5, ci, 33, 1, kOne}, 1.0, 0.0);
    fixed({2, 7, ci, 17, 1, kZero}, 0.0, 1.0);
  }
  fixed({5, 37, 32, 32, 1, kZero});
  fixed({4, 13, 64, 64, 1, kOne});
  fixed({3, 11, 128, 128, 1, kZero});
  fixed({2, 9, 256, 256, 1, kOne});
  fixed({1, 3, 257, 9, 1, kZero});  // the first width past the narrow path
  for (std::size_t i = 0; i < n_cases / 20; ++i) {
    const BConvShape s{
        uniform(rng, 1, 6),      uniform(rng, 1, 40), uniform(rng, 1, 256), uniform(rng, 1, 80), 1,
        coin(rng) ? kZero : kOne};
    const double in_ones = coin(rng, 0.2) ? 0.9 : 0.5;
    const double w_ones = coin(rng, 0.2) ? 0.1 : 0.5;
    bconv_case(k, rng, t, s, i % 2 == 0, in_ones, w_ones);
    ++t.cases;
  }
  // 3x3 over 17..32 channels (one 32-bit unit per pixel; the AVX2 row kernel walks interior
  // pixels two at a time): 1x1 maps, widths 1..8 and odd widths that leave one interior pixel
  // after the pairs, output channels that leave a partial group of 8, both paddings, and the
  // extreme dots (every XOR bit 0 or 1: each of a byte's four weighted planes at its limit).
  for (const std::size_t ci : {17, 24, 31, 32}) {
    for (std::size_t w = 1; w <= 8; ++w) {
      const std::size_t co_list[] = {1, 7, 8, 9, 31, 32, 33, 70};
      const std::size_t co = co_list[(ci + w) % std::size(co_list)];
      const std::size_t h = 1 + (ci + 2 * w) % 4;
      fixed({h, w, ci, co, 3, w % 2 ? kZero : kOne});
      fixed({h, w, ci, co, 3, w % 2 ? kOne : kZero});
    }
  }
  for (const std::size_t co : {1, 5, 8, 13, 32, 33, 64, 70}) {
    fixed({4, 11, 32, co, 3, co % 2 ? kZero : kOne});
    fixed({3, 13, 32, co, 3, co % 2 ? kOne : kZero}, 1.0, 1.0);
    fixed({3, 13, 32, co, 3, co % 2 ? kZero : kOne}, 1.0, 0.0);
    fixed({2, 9, 20, co, 3, kZero}, 0.0, 1.0);
  }
  fixed({6, 33, 32, 32, 3, kZero});  // ReActNet-A's first binary block at a small side
  fixed({5, 34, 32, 32, 3, kOne});
}

// ---- general binary conv (any kernel, stride, padding) -----------------------------------

// PyTorch's conv output size (the caller keeps the kernel within the padded input).
std::size_t conv_out(std::size_t in, std::size_t pad_a, std::size_t pad_b, std::size_t k,
                     std::size_t stride) {
  return (in + pad_a + pad_b - k) / stride + 1;
}

struct GeneralGeometry {
  std::size_t h, w, ci, co, kh, kw, sh, sw, pt, pl, pb, pr;
  BinaryPadding pad;
};

BConvGeneralShape general_shape(const GeneralGeometry& g) {
  return BConvGeneralShape{g.h,
                           g.w,
                           g.ci,
                           g.co,
                           g.kh,
                           g.kw,
                           g.sh,
                           g.sw,
                           g.pt,
                           g.pl,
                           conv_out(g.h, g.pt, g.pb, g.kh, g.sh),
                           conv_out(g.w, g.pl, g.pr, g.kw, g.sw),
                           g.pad};
}

void bconv_general_case(const BConvGeneralKernels& k, Rng& rng, Tally& t, const GeneralGeometry& g,
                        bool ge, double in_ones = 0.5, double w_ones = 0.5) {
  const BConvGeneralShape s = general_shape(g);
  t.context = fmt(
      "H=%zu W=%zu Ci=%zu Co=%zu k=%zux%zu stride=%zux%zu pads(t,l,b,r)=(%zu,%zu,%zu,%zu) "
      "pad=%s out=%zux%zu ones=(%g,%g)",
      g.h, g.w, g.ci, g.co, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.pb, g.pr,
      g.pad == BinaryPadding::kZero ? "zero" : "one", s.out_height, s.out_width, in_ones, w_ones);
  const std::size_t taps = g.kh * g.kw;
  const std::vector<BitWord> in = random_bits(rng, g.h * g.w, g.ci, in_ones);
  const std::vector<BitWord> weight = random_bits(rng, g.co * taps, g.ci, w_ones);
  const std::vector<float> scale = randn(rng, g.co);
  const std::vector<float> bias = randn(rng, g.co);
  const std::size_t n_out = s.out_height * s.out_width * g.co;
  std::vector<float> want(n_out);
  bconv2d_general_rows__reference(s, in.data(), weight.data(), scale.data(), bias.data(), 0,
                                  s.out_height, want.data());
  // The general oracle against the independent stride-1 one where their shapes meet ('same'
  // 1x1 and 3x3), so that the scalar entry, which is this oracle, is tested too.
  if (g.sh == 1 && g.sw == 1 && g.kh == g.kw && (g.kh == 1 || g.kh == 3) && g.pt == g.kh / 2 &&
      g.pl == g.pt && g.pb == g.pt && g.pr == g.pt) {
    std::vector<float> same(n_out);
    bconv2d_nhwc__reference(BConvShape{g.h, g.w, g.ci, g.co, g.kh, g.pad}, in.data(), weight.data(),
                            scale.data(), bias.data(), same.data());
    if (!same_floats(t, "general oracle vs stride-1 oracle", want.data(), same.data(), n_out)) {
      return;
    }
  }

  check_packed_rows(k, s, s.out_height, s.out_width * g.co, in, weight, scale, bias, want, ge, rng,
                    t);
}

void test_bconv_general(const BConvGeneralKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  constexpr BinaryPadding kZero = BinaryPadding::kZero, kOne = BinaryPadding::kOne;
  std::size_t fixed_cases = 0;
  auto fixed = [&](const GeneralGeometry& g, double in_ones = 0.5, double w_ones = 0.5) {
    bconv_general_case(k, rng, t, g, fixed_cases++ % 2 == 0, in_ones, w_ones);
    ++t.cases;
  };
  // 3x3 stride 2 pad 1 (ReActNet's downsampling), both paddings, over channel counts on both
  // sides of the 64-bit word and the SIMD tiles, even and odd sides, 1-pixel outputs.
  {
    const std::size_t ci_list[] = {1, 16, 31, 32, 33, 63, 64, 65, 100, 128, 129, 256, 300, 512};
    const std::size_t co_list[] = {1, 3, 5, 8, 16, 17, 32, 33, 40};
    const std::size_t sides[][2] = {{1, 1}, {2, 2}, {3, 3}, {4, 5}, {7, 6}, {8, 8}, {9, 11}};
    std::size_t n = 0;
    for (const std::size_t ci : ci_list) {
      for (const BinaryPadding pad : {kZero, kOne}) {
        const auto& hw = sides[n % std::size(sides)];
        const std::size_t co = co_list[(n * 5) % std::size(co_list)];
        fixed({hw[0], hw[1], ci, co, 3, 3, 2, 2, 1, 1, 1, 1, pad});
        ++n;
      }
    }
    // Every small image, so that each output pixel meets each border combination.
    for (std::size_t h = 1; h <= 5; ++h) {
      for (std::size_t w = 1; w <= 5; ++w) {
        for (const BinaryPadding pad : {kZero, kOne})
          fixed({h, w, 70, 9, 3, 3, 2, 2, 1, 1, 1, 1, pad});
      }
    }
  }
  // Larger kernels, strides 1..3, asymmetric and zero pads, non-square kernels, a kernel as
  // large as the padded input (1-pixel output), and 'same' 1x1 / 3x3 (checked against the
  // stride-1 oracle above).
  for (const GeneralGeometry& g : {GeneralGeometry{9, 9, 70, 5, 5, 5, 1, 1, 2, 2, 2, 2, kZero},
                                   {9, 10, 70, 5, 5, 5, 2, 2, 2, 2, 2, 2, kOne},
                                   {11, 12, 33, 7, 7, 7, 2, 2, 3, 3, 3, 3, kZero},
                                   {11, 12, 33, 7, 7, 7, 2, 2, 3, 3, 3, 3, kOne},
                                   {10, 9, 130, 4, 7, 7, 3, 3, 3, 3, 3, 3, kOne},
                                   {8, 9, 65, 6, 3, 3, 3, 3, 1, 0, 2, 1, kZero},
                                   {8, 9, 65, 6, 3, 3, 3, 2, 0, 2, 1, 0, kOne},
                                   {7, 6, 5, 3, 5, 3, 1, 2, 4, 0, 1, 2, kOne},
                                   {3, 4, 100, 5, 5, 6, 1, 1, 1, 1, 1, 1, kZero},
                                   {3, 4, 100, 5, 5, 6, 1, 1, 1, 1, 1, 1, kOne},
                                   {1, 1, 129, 4, 3, 3, 2, 2, 1, 1, 1, 1, kOne},
                                   {2, 2, 64, 4, 2, 2, 2, 2, 0, 0, 0, 0, kZero},
                                   {6, 7, 200, 9, 1, 1, 2, 2, 0, 0, 0, 0, kZero},
                                   {5, 6, 100, 17, 3, 3, 1, 1, 1, 1, 1, 1, kZero},
                                   {5, 6, 100, 17, 3, 3, 1, 1, 1, 1, 1, 1, kOne},
                                   {4, 3, 65, 9, 1, 1, 1, 1, 0, 0, 0, 0, kOne}}) {
    fixed(g);
  }
  // Dots at their extremes: every XOR bit 0 or 1, so a wrong padding term shows as a whole tap.
  for (const BinaryPadding pad : {kZero, kOne}) {
    fixed({6, 7, 512, 5, 3, 3, 2, 2, 1, 1, 1, 1, pad}, 1.0, 1.0);
    fixed({6, 7, 512, 5, 3, 3, 2, 2, 1, 1, 1, 1, pad}, 1.0, 0.0);
    fixed({6, 7, 512, 5, 3, 3, 2, 2, 1, 1, 1, 1, pad}, 0.0, 1.0);
  }
  for (std::size_t i = 0; i < n_cases; ++i) {
    GeneralGeometry g{};
    g.kh = uniform(rng, 1, 7);
    g.kw = coin(rng, 0.7) ? g.kh : uniform(rng, 1, 7);
    g.sh = uniform(rng, 1, 3);
    g.sw = coin(rng, 0.7) ? g.sh : uniform(rng, 1, 3);
    g.pt = uniform(rng, 0, g.kh - 1);
    g.pb = coin(rng, 0.6) ? g.pt : uniform(rng, 0, g.kh - 1);
    g.pl = uniform(rng, 0, g.kw - 1);
    g.pr = coin(rng, 0.6) ? g.pl : uniform(rng, 0, g.kw - 1);
    // The image at least fits the kernel once padded.
    g.h = std::max(uniform(rng, 1, 12), g.kh - std::min(g.kh, g.pt + g.pb));
    g.w = std::max(uniform(rng, 1, 12), g.kw - std::min(g.kw, g.pl + g.pr));
    g.h = std::max<std::size_t>(g.h, 1);
    g.w = std::max<std::size_t>(g.w, 1);
    g.ci = coin(rng, 0.5) ? uniform(rng, 1, 300) : 64 * uniform(rng, 1, 4);
    g.co = uniform(rng, 1, 40);
    g.pad = coin(rng) ? kZero : kOne;
    // Keep the scalar oracle's work bounded (qemu runs it 10-30x slower).
    const GeneralGeometry& cg = g;
    auto work = [&cg] {
      const BConvGeneralShape s = general_shape(cg);
      return s.out_height * s.out_width * cg.co * cg.kh * cg.kw * words_for_channels(cg.ci);
    };
    while (work() > 60000 && g.co > 1) g.co = (g.co + 1) / 2;
    bconv_general_case(k, rng, t, g, i % 2 == 0);
    ++t.cases;
  }
}

// ---- depthwise ----------------------------------------------------------------------------

void test_dwconv(const DWConvKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  // 515: a layer wide enough for the kernels' chunked scratch path, with a channel tail.
  const std::size_t kC[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 48, 64, 100, 130, 515};
  const std::size_t kHW[][2] = {{1, 1}, {1, 6}, {5, 1}, {2, 3},  {3, 2}, {7, 5},
                                {5, 9}, {9, 4}, {4, 7}, {11, 3}, {6, 6}, {3, 13}};
  const std::size_t kStride[][2] = {{1, 1}, {2, 2}, {2, 1}, {1, 2}};
  const std::size_t kMult[] = {1, 2, 3, 4};
  // First every channel count x stride x multiplier x pre-bias (plus the zoo's layers), each at a
  // random size; then random cases. Every third case is a signs case: -0.0 inputs, zero
  // products, infinite weights on taps that fall into the padding (they must be skipped, never
  // added as 0 * inf = NaN), zero biases of either sign.
  const std::size_t n_grid = std::size(kC) * 4 * std::size(kMult) * 2;
  const auto zoo = zoo_dwconv();
  for (std::size_t i = 0; i < n_grid + zoo.size() + n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const auto& hw = kHW[uniform(rng, 0, std::size(kHW) - 1)];
    DWConvShape s{};
    s.in_height = hw[0];
    s.in_width = hw[1];
    bool pre = false;
    if (i < n_grid) {
      std::size_t g = i;
      s.channels = kC[g % std::size(kC)];
      g /= std::size(kC);
      s.stride_h = kStride[g % 4][0];
      s.stride_w = kStride[g % 4][1];
      g /= 4;
      s.multiplier = kMult[g % std::size(kMult)];
      pre = g / std::size(kMult) != 0;
    } else if (i < n_grid + zoo.size()) {
      const auto& z = zoo[i - n_grid];
      s.channels = z[0];
      s.stride_h = z[1];
      s.stride_w = z[2];
      s.multiplier = z[3];
      pre = coin(rng);
    } else {
      s.channels = pick(rng, kC);
      s.multiplier = pick(rng, kMult);
      s.stride_h = kStride[i % 4][0];
      s.stride_w = kStride[i % 4][1];
      pre = coin(rng);
    }
    s.out_height = (s.in_height + s.stride_h - 1) / s.stride_h;
    s.out_width = (s.in_width + s.stride_w - 1) / s.stride_w;
    const bool signs = i % 3 == 2;
    t.context =
        fmt("case %zu H=%zu W=%zu C=%zu mult=%zu stride=(%zu,%zu) pre_bias=%d signs=%d", i,
            s.in_height, s.in_width, s.channels, s.multiplier, s.stride_h, s.stride_w, pre, signs);
    const std::size_t pixels = s.in_height * s.in_width, oc = s.multiplier * s.channels;
    const std::size_t n_out = s.out_height * s.out_width * oc;
    std::vector<float> in = randn(rng, pixels * s.channels, 3.0f);
    if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
    std::vector<float> pre_bias = randn(rng, s.channels);
    std::vector<float> w = randn(rng, oc * 9);
    if (coin(rng, 0.2)) sprinkle(rng, w, 0.05);
    std::vector<float> scale = randn(rng, oc), bias = randn(rng, oc);
    if (signs) {
      const float inf = std::numeric_limits<float>::infinity();
      for (std::size_t y = 0; y < s.in_height; y += 2) {
        for (std::size_t x = 0; x < s.in_width; x += 3) {
          for (std::size_t c = 0; c < s.channels; ++c)
            in[(y * s.in_width + x) * s.channels + c] = -0.0f;
        }
      }
      if (pixels > s.in_width + 1) {
        for (std::size_t c = 0; c < s.channels; ++c) in[(s.in_width + 1) * s.channels + c] = 0.0f;
      }
      for (std::size_t o = 0; o < oc; ++o) {
        if (o % 3 == 0) w[o * 9 + 0] = inf;  // top-left tap: padding for row 0 and column 0
        if (o % 3 == 1) w[o * 9 + 8] = -inf;
        if (o % 3 == 2) w[o * 9 + 4] = -0.0f;
        bias[o] = coin(rng) ? -0.0f : 0.0f;
      }
      const float zero = coin(rng) ? -0.0f : 0.0f;
      for (float& v : pre_bias) v = zero;
    }
    const float* pb_ref = pre ? pre_bias.data() : nullptr;
    Buf<float> ing = guarded(in, ge), pbg = guarded(pre_bias, !ge);
    Buf<float> sg = guarded(scale, ge), bg = guarded(bias, !ge);
    const float* pb = pre ? pbg.data() : nullptr;

    // f32
    std::vector<float> want(n_out);
    dwconv3x3_f32_nhwc__reference(s, in.data(), pb_ref, w.data(), scale.data(), bias.data(),
                                  want.data());
    Aligned pf(k.packed_f32_bytes(s));
    {
      Buf<float> wg = guarded(w, ge);
      k.pack_f32(s, wg.data(), pf.data());
    }
    Buf<float> out(n_out, ge);
    for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
    for (const auto& r : row_splits(rng, s.out_height)) {
      k.run_rows_f32(s, ing.data(), pb, pf.data(), sg.data(), bg.data(), r.first, r.second,
                     out.data());
    }
    same_floats(t, "f32", out.data(), want.data(), n_out);
    {
      const std::size_t y0 = uniform(rng, 0, s.out_height), y1 = uniform(rng, y0, s.out_height);
      const std::size_t row = s.out_width * oc;
      std::vector<float> want_part(n_out, kSentinel);
      std::copy(want.begin() + static_cast<std::ptrdiff_t>(y0 * row),
                want.begin() + static_cast<std::ptrdiff_t>(y1 * row),
                want_part.begin() + static_cast<std::ptrdiff_t>(y0 * row));
      for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
      k.run_rows_f32(s, ing.data(), pb, pf.data(), sg.data(), bg.data(), y0, y1, out.data());
      same_floats(t, fmt("f32 rows [%zu, %zu)", y0, y1).c_str(), out.data(), want_part.data(),
                  n_out);
    }

    // INT8: absmax, quantization (dynamic scale, and fixed ones that saturate / vanish), conv.
    std::vector<float> qin = randn(rng, pixels * s.channels, 40.0f);
    sprinkle(rng, qin, 0.1);
    std::vector<float> finite = qin;
    for (float& v : finite) {
      if (std::isinf(v)) v = 0.0f;
    }
    for (const std::vector<float>* src : {&finite, &qin}) {
      Buf<float> g = guarded(*src, ge);
      const float want_max =
          dwconv_input_absmax__reference(src->data(), pb_ref, pixels, s.channels);
      const float got_max = k.input_absmax(g.data(), pb, pixels, s.channels);
      same_floats(t, "absmax", &got_max, &want_max, 1);
    }
    const float absmax = dwconv_input_absmax__reference(finite.data(), pb_ref, pixels, s.channels);
    const float dyn = dwconv_dynamic_input_scale(absmax);
    Buf<float> qg = guarded(qin, !ge);
    std::vector<std::int8_t> q_want(pixels * s.channels);
    for (const float qs : {dyn, 1.0f, 0.37f, 0.125f, 1e-30f}) {
      dwconv_quantize_input__reference(qin.data(), pb_ref, pixels, s.channels, qs, q_want.data());
      Buf<std::int8_t> q_got(pixels * s.channels, ge);
      k.quantize_input(qg.data(), pb, pixels, s.channels, qs, q_got.data());
      same_bytes(t, fmt("quantize scale=%g", static_cast<double>(qs)).c_str(), q_got.data(),
                 q_want.data(), q_want.size());
    }
    {
      // Ties: u / s exactly k + 0.5 (rounding to even) and far past the clamp at +-127.
      const float ts = 1.0f / 32.0f;
      std::vector<float> tin(pixels * s.channels), tpb(s.channels);
      for (float& v : tin)
        v = static_cast<float>(static_cast<int>(uniform(rng, 0, 1200)) - 600) * ts / 2;
      for (float& v : tpb)
        v = static_cast<float>(static_cast<int>(uniform(rng, 0, 40)) - 20) * ts / 2;
      dwconv_quantize_input__reference(tin.data(), pre ? tpb.data() : nullptr, pixels, s.channels,
                                       ts, q_want.data());
      Buf<float> tg = guarded(tin, ge), tpg = guarded(tpb, !ge);
      Buf<std::int8_t> q_got(pixels * s.channels, !ge);
      k.quantize_input(tg.data(), pre ? tpg.data() : nullptr, pixels, s.channels, ts, q_got.data());
      same_bytes(t, "quantize ties", q_got.data(), q_want.data(), q_want.size());
    }
    dwconv_quantize_input__reference(finite.data(), pb_ref, pixels, s.channels, dyn, q_want.data());
    // Extreme codes now and then: every product at +-127 * +-127.
    if (coin(rng, 0.2)) {
      for (auto& q : q_want) q = coin(rng) ? 127 : -127;
    }
    std::vector<std::int8_t> w8 = random_i8(rng, oc * 9);
    if (coin(rng, 0.2)) {
      for (auto& q : w8) q = coin(rng) ? 127 : -127;
    }
    std::vector<float> wscale = randn(rng, oc, 0.01f);
    for (float& v : wscale) v = std::fabs(v) + 1e-3f;
    std::vector<float> want8(n_out);
    dwconv3x3_qs8_nhwc_rows__reference(s, q_want.data(), w8.data(), wscale.data(), dyn,
                                       scale.data(), bias.data(), 0, s.out_height, want8.data());
    Aligned pq(k.packed_qs8_bytes(s));
    {
      Buf<std::int8_t> wg = guarded(w8, ge);
      k.pack_qs8(s, wg.data(), pq.data());
    }
    Buf<std::int8_t> qin_g = guarded(q_want, !ge);
    Buf<float> wsg = guarded(wscale, ge);
    for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
    for (const auto& r : row_splits(rng, s.out_height)) {
      k.run_rows_qs8(s, qin_g.data(), pq.data(), wsg.data(), dyn, sg.data(), bg.data(), r.first,
                     r.second, out.data());
    }
    same_floats(t, "qs8", out.data(), want8.data(), n_out);
    ++t.cases;
  }
  // Overflow (docs/format.md, "Float semantics"): inputs, pre-biases and weights whose products
  // pass FLT_MAX (1.5e19: the fused MAC stays finite where a separate multiply would not),
  // scales and biases near 1e38, every stride and multiplier; f32 whole images.
  std::size_t n_overflow = 0;
  for (const float m : {1.5e19f, 1e20f}) {
    for (const auto& st : kStride) {
      for (const std::size_t mult : {std::size_t{1}, std::size_t{2}}) {
        DWConvShape s{};
        s.in_height = 5;
        s.in_width = 6;
        s.channels = n_overflow % 2 == 0 ? 17 : 40;
        s.stride_h = st[0];
        s.stride_w = st[1];
        s.multiplier = mult;
        s.out_height = (s.in_height + s.stride_h - 1) / s.stride_h;
        s.out_width = (s.in_width + s.stride_w - 1) / s.stride_w;
        const bool ge = n_overflow++ % 2 == 0;
        t.context = fmt("overflow=%g C=%zu mult=%zu stride=(%zu,%zu)", static_cast<double>(m),
                        s.channels, mult, s.stride_h, s.stride_w);
        const std::size_t oc = mult * s.channels;
        const std::size_t n_out = s.out_height * s.out_width * oc;
        const std::vector<float> in =
            signed_magnitudes(rng, s.in_height * s.in_width * s.channels, m);
        const std::vector<float> pre_bias = signed_magnitudes(rng, s.channels, m);
        const std::vector<float> w = signed_magnitudes(rng, oc * 9, m);
        const std::vector<float> scale = signed_magnitudes(rng, oc, 1.0f);
        const std::vector<float> bias = signed_magnitudes(rng, oc, 1e38f);
        std::vector<float> want(n_out);
        dwconv3x3_f32_nhwc__reference(s, in.data(), pre_bias.data(), w.data(), scale.data(),
                                      bias.data(), want.data());
        Aligned pf(k.packed_f32_bytes(s));
        {
          Buf<float> wg = guarded(w, ge);
          k.pack_f32(s, wg.data(), pf.data());
        }
        Buf<float> ing = guarded(in, ge), pbg = guarded(pre_bias, !ge);
        Buf<float> sg = guarded(scale, ge), bg = guarded(bias, !ge);
        Buf<float> out(n_out, ge);
        for (const auto& r : row_splits(rng, s.out_height)) {
          k.run_rows_f32(s, ing.data(), pbg.data(), pf.data(), sg.data(), bg.data(), r.first,
                         r.second, out.data());
        }
        same_floats(t, "f32", out.data(), want.data(), n_out);
        ++t.cases;
      }
    }
  }
}

// ---- dense conv (stem) --------------------------------------------------------------------

// One dense conv; `signs`: -0.0 inputs and an infinite weight on the top-left tap of every
// other output channel (a padded tap must be skipped, not added as 0 * inf = NaN).
// overflow > 0: inputs and weights of magnitude overflow..2*overflow with random signs and
// biases up to 2e38, so products and partial sums pass FLT_MAX and (with overflow = 1.5e19)
// a fused multiply-add stays finite where a separate multiply would give inf: the variant
// must fuse exactly where the reference does.
void conv2d_case(const Conv2DKernels& k, Rng& rng, Tally& t, Conv2DShape s, bool relu, bool signs,
                 bool ge, float overflow = 0.0f) {
  s.out_height = (s.in_height + s.pad_top + s.pad_bottom - s.kernel_h) / s.stride_h + 1;
  s.out_width = (s.in_width + s.pad_left + s.pad_right - s.kernel_w) / s.stride_w + 1;
  t.context =
      fmt("in=%zux%zux%zu Co=%zu k=%zux%zu stride=(%zu,%zu) pad=(%zu,%zu,%zu,%zu) relu=%d signs=%d",
          s.in_height, s.in_width, s.in_channels, s.out_channels, s.kernel_h, s.kernel_w,
          s.stride_h, s.stride_w, s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, relu, signs);
  std::vector<float> in = randn(rng, s.in_height * s.in_width * s.in_channels);
  if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
  const std::size_t taps = s.kernel_h * s.kernel_w * s.in_channels;
  std::vector<float> w = randn(rng, s.out_channels * taps);
  if (signs) {
    for (std::size_t y = 0; y < s.in_height; y += 3) {
      for (std::size_t x = 0; x < s.in_width; x += 2) {
        for (std::size_t c = 0; c < s.in_channels; ++c) {
          in[(y * s.in_width + x) * s.in_channels + c] = -0.0f;
        }
      }
    }
    for (std::size_t o = 0; o < s.out_channels; o += 2) {
      for (std::size_t c = 0; c < s.in_channels; ++c) {
        w[o * taps + c] = std::numeric_limits<float>::infinity();
      }
    }
  }
  std::vector<float> bias = randn(rng, s.out_channels);
  if (overflow > 0.0f) {
    t.context += fmt(" overflow=%g", static_cast<double>(overflow));
    in = signed_magnitudes(rng, in.size(), overflow);
    w = signed_magnitudes(rng, w.size(), overflow);
    bias = signed_magnitudes(rng, bias.size(), 1e38f);
  }
  const std::size_t n_out = s.out_height * s.out_width * s.out_channels;
  std::vector<float> want(n_out);
  conv2d_f32_nhwc__reference(s, in.data(), w.data(), bias.data(), relu, want.data());
  Aligned packed(k.packed_bytes(s));
  {
    Buf<float> wg = guarded(w, ge);
    k.pack(s, wg.data(), packed.data());
  }
  Buf<float> ig = guarded(in, ge), bg = guarded(bias, !ge);
  Buf<float> out(n_out, ge);
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  for (const auto& r : row_splits(rng, s.out_height)) {
    k.run_rows(s, ig.data(), packed.data(), bg.data(), relu, r.first, r.second, out.data());
  }
  if (!same_floats(t, "conv2d", out.data(), want.data(), n_out)) return;
  // One partial range: rows outside it keep the sentinel.
  const std::size_t y0 = uniform(rng, 0, s.out_height), y1 = uniform(rng, y0, s.out_height);
  const std::size_t row = s.out_width * s.out_channels;
  std::vector<float> want_part(n_out, kSentinel);
  std::copy(want.begin() + static_cast<std::ptrdiff_t>(y0 * row),
            want.begin() + static_cast<std::ptrdiff_t>(y1 * row),
            want_part.begin() + static_cast<std::ptrdiff_t>(y0 * row));
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  k.run_rows(s, ig.data(), packed.data(), bg.data(), relu, y0, y1, out.data());
  if (!same_floats(t, fmt("conv2d rows [%zu, %zu)", y0, y1).c_str(), out.data(), want_part.data(),
                   n_out)) {
    return;
  }
  // The fused CONV2D -> CLIP (ReLU6 and others), against the reference conv then the CLIP
  // op's reference, on the whole image and on [y0, y1); bounds from the case's size (no draw,
  // so the cases after this one draw what they drew before it was tested): ReLU6, Hardtanh,
  // a narrow band with -0.0 as its lower bound, and lo == hi.
  const float bounds[][2] = {{0.0f, 6.0f}, {-1.0f, 1.0f}, {-0.0f, 0.25f}, {0.5f, 0.5f}};
  const float lo = bounds[n_out % 4][0], hi = bounds[n_out % 4][1];
  std::vector<float> want_clip(n_out);
  clip_f32__reference(want.data(), n_out, lo, hi, want_clip.data());
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  k.run_rows_clip(s, ig.data(), packed.data(), bg.data(), relu, lo, hi, 0, s.out_height,
                  out.data());
  if (!same_floats(
          t, fmt("conv2d+clip(%g, %g)", static_cast<double>(lo), static_cast<double>(hi)).c_str(),
          out.data(), want_clip.data(), n_out)) {
    return;
  }
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  k.run_rows_clip(s, ig.data(), packed.data(), bg.data(), relu, lo, hi, y0, y1, out.data());
  for (std::size_t j = 0; j < n_out; ++j) {
    if (j < y0 * row || j >= y1 * row) want_clip[j] = kSentinel;
  }
  same_floats(t, fmt("conv2d+clip rows [%zu, %zu)", y0, y1).c_str(), out.data(), want_clip.data(),
              n_out);
}

void test_conv2d(const Conv2DKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  std::size_t n = 0;
  // Fixed: the stem at 224x224, odd sizes, kernels and paddings past 1, 1x1 convs on wide
  // channel counts; then the zoo's stems at small sizes.
  struct Fixed {
    Conv2DShape s;  // in_height, in_width, in_channels, out_channels, kernel_h, kernel_w,
                    // stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right
    bool relu;
  };
  const Fixed fixed[] = {
      {{224, 224, 3, 16, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0}, true},
      {{33, 31, 3, 16, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0}, true},
      {{9, 9, 3, 17, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0}, false},
      {{1, 1, 3, 16, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0}, true},
      {{2, 3, 5, 33, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0}, true},
      {{7, 20, 1, 1, 3, 3, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{17, 13, 4, 20, 3, 2, 2, 1, 2, 1, 0, 0, 0, 0}, true},
      {{6, 40, 3, 8, 3, 3, 1, 2, 1, 0, 1, 2, 0, 0}, false},
      {{1, 1, 130, 100, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{5, 4, 64, 31, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      // The published BNNs' float convs: the 7x7 stride-2 stem on 3 channels (Bi-Real Net,
      // XNOR-Net; 64 channels = 8 blocks of 8 at its edges, two-block tiles inside), the 1x1
      // downsampling convs with stride 2 (XNOR-Net) and 1 (Bi-Real Net, after its average
      // pool) on images narrower than a tile, and odd sizes and channel counts around them.
      {{45, 38, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0}, true},
      {{23, 29, 3, 72, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0}, false},
      {{14, 14, 64, 128, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0}, false},
      {{7, 7, 256, 512, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{9, 13, 40, 84, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0}, true},
      {{6, 11, 7, 100, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0}, true},
  };
  for (const Fixed& f : fixed) {
    for (const bool signs : {false, true}) {
      conv2d_case(k, rng, t, f.s, f.relu, signs, n++ % 2 == 0);
      ++t.cases;
    }
  }
  for (const auto& [ci, co, kk, stride] : zoo_conv2d()) {
    const Conv2DShape s{9 + n % 5, 17 + n % 11, ci, co, kk, kk, stride, stride, 1, 1, 1, 1, 0, 0};
    conv2d_case(k, rng, t, s, true, n % 2 == 1, n % 2 == 0);
    ++n;
    ++t.cases;
  }
  for (std::size_t i = 0; i < n_cases; ++i) {
    const bool ge = i % 2 == 0;
    Conv2DShape s{};
    if (i % 3 == 0) {
      // The stem: 3x3, 3 channels, stride 2, 'same'-style padding, wide enough for full tiles.
      s.in_channels = 3;
      s.kernel_h = s.kernel_w = 3;
      s.stride_h = s.stride_w = 2;
      s.pad_top = s.pad_left = uniform(rng, 0, 1);
      s.pad_bottom = s.pad_right = 1;
      s.in_height = uniform(rng, 2, 9);
      s.in_width = uniform(rng, 2, 40);
      s.out_channels = uniform(rng, 1, 40);
    } else {
      s.in_channels = uniform(rng, 1, 6);
      s.kernel_h = uniform(rng, 1, 3);
      s.kernel_w = uniform(rng, 1, 3);
      s.stride_h = uniform(rng, 1, 2);
      s.stride_w = uniform(rng, 1, 2);
      // Paddings up to 2, but less than the kernel (as the converter emits).
      s.pad_top = uniform(rng, 0, std::min<std::size_t>(2, s.kernel_h - 1));
      s.pad_left = uniform(rng, 0, std::min<std::size_t>(2, s.kernel_w - 1));
      s.pad_bottom = uniform(rng, 0, std::min<std::size_t>(2, s.kernel_h - 1));
      s.pad_right = uniform(rng, 0, std::min<std::size_t>(2, s.kernel_w - 1));
      s.in_height = uniform(rng, 1, 8);
      s.in_width = uniform(rng, 1, 30);
      s.out_channels = uniform(rng, 1, 37);
    }
    const std::size_t ph = s.in_height + s.pad_top + s.pad_bottom;
    const std::size_t pw = s.in_width + s.pad_left + s.pad_right;
    if (ph < s.kernel_h) s.in_height += s.kernel_h - ph;
    if (pw < s.kernel_w) s.in_width += s.kernel_w - pw;
    conv2d_case(k, rng, t, s, coin(rng), i % 4 == 3, ge);
    ++t.cases;
  }
  // The BNNs' float convs (issue 12), after the cases above so that their random draws stay
  // as they were: Bi-Real Net / ReActNet's 1x1 downsampling shortcuts (stride 2, and a 1x1 on
  // 56x56x64 -> 128), XNOR-Net / ResNet's 7x7 stride-2 pad-3 stem (3 -> 64), 5x5 convs, and
  // output channel counts off every vector width (1, 7, 9, 33) for each of these kernels.
  const Fixed bnn[] = {
      {{56, 56, 64, 128, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{14, 15, 64, 128, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0}, false},
      {{9, 7, 33, 64, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0}, true},
      {{57, 57, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0}, true},
      {{37, 29, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0}, false},
      {{3, 2, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0}, true},
      {{13, 11, 5, 16, 5, 5, 1, 1, 2, 2, 2, 2, 0, 0}, false},
      {{12, 12, 3, 32, 5, 5, 2, 2, 2, 2, 2, 2, 0, 0}, true},
      {{16, 17, 7, 8, 5, 5, 3, 3, 0, 0, 0, 0, 0, 0}, false},
      {{6, 9, 4, 12, 5, 3, 2, 1, 2, 1, 1, 0, 0, 0}, true},
  };
  for (const Fixed& f : bnn) {
    conv2d_case(k, rng, t, f.s, f.relu, false, n++ % 2 == 0);
    ++t.cases;
  }
  for (const std::size_t co : {std::size_t{1}, std::size_t{7}, std::size_t{9}, std::size_t{33}}) {
    const Conv2DShape shapes[] = {
        {10, 11, 64, co, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0},
        {8, 7, 17, co, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0},
        {23, 19, 3, co, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0},
        {9, 10, 6, co, 5, 5, 1, 1, 2, 2, 2, 2, 0, 0},
        {11, 9, 5, co, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0},
    };
    for (const Conv2DShape& s : shapes) {
      for (const bool signs : {false, true}) {
        conv2d_case(k, rng, t, s, signs, signs, n++ % 2 == 0);
        ++t.cases;
      }
    }
  }
  // Overflow (docs/format.md, "Float semantics"): products near and past FLT_MAX, where a
  // multiply-add fused on one ISA and not on another would differ, over the stem shapes.
  for (const float m : {1.5e19f, 1e20f, 1e10f}) {
    const Conv2DShape shapes[] = {
        {9, 10, 3, 24, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0},
        {7, 6, 5, 17, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0},
        {6, 5, 16, 33, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0},
        {11, 9, 3, 9, 7, 7, 2, 2, 3, 3, 3, 3, 0, 0},
    };
    for (const Conv2DShape& s : shapes) {
      conv2d_case(k, rng, t, s, n % 3 == 0, false, n % 2 == 0, m);
      ++n;
      ++t.cases;
    }
  }
  // The pointwise GEMM (conv2d_pointwise_gemm.h), after the cases above so that their random
  // draws stay as they were: in_channels past one K block (256), so that partial sums go
  // through the output and back (K = 257, 300, 520, 1024); pixel counts past one chunk and
  // off the 6- and 4-pixel tiles; out_channels off every panel (8, 16) and vector width (4, 8)
  // by 1..15; MobileNetV1/V2's layers at small sizes; strided ones; then random pointwise
  // shapes with any of these.
  const Fixed pointwise[] = {
      {{7, 7, 1024, 1024, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      {{7, 7, 960, 160, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{14, 14, 512, 40, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      {{13, 11, 300, 24, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{5, 23, 257, 19, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      {{9, 9, 520, 33, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0}, false},
      {{28, 28, 32, 144, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      {{20, 17, 16, 96, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
      {{1, 1, 1280, 17, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, true},
      {{3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, false},
  };
  for (const Fixed& f : pointwise) {
    for (const bool signs : {false, true}) {
      conv2d_case(k, rng, t, f.s, f.relu, signs, n++ % 2 == 0);
      ++t.cases;
    }
  }
  for (std::size_t co = 1; co <= 33; ++co) {
    const Conv2DShape s{3, 5 + co % 7, 5 + co % 11, co, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
    conv2d_case(k, rng, t, s, co % 2 == 0, co % 5 == 0, n++ % 2 == 0);
    ++t.cases;
  }
  for (std::size_t i = 0; i < n_cases / 4; ++i) {
    Conv2DShape s{};
    s.kernel_h = s.kernel_w = 1;
    s.stride_h = s.stride_w = coin(rng, 0.8) ? 1 : 2;
    s.in_height = uniform(rng, 1, 16);
    s.in_width = uniform(rng, 1, 16);
    s.in_channels = coin(rng, 0.2) ? uniform(rng, 250, 600) : uniform(rng, 1, 70);
    s.out_channels = uniform(rng, 1, 70);
    conv2d_case(k, rng, t, s, coin(rng), i % 4 == 3, n++ % 2 == 0);
    ++t.cases;
  }
  for (const float m : {1.5e19f, 1e20f}) {
    const Conv2DShape s{4, 7, 300, 21, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
    conv2d_case(k, rng, t, s, false, false, n++ % 2 == 0, m);
    ++t.cases;
  }
}

// ---- pools --------------------------------------------------------------------------------

void test_maxpool(const PoolKernels& k, Rng& rng, Tally& t, std::size_t n_cases);
void test_avgpool2d(const PoolKernels& k, Rng& rng, Tally& t, std::size_t n_cases);

void test_pool(const PoolKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kKS[][4] = {
      {2, 2, 2, 2}, {2, 1, 2, 1}, {1, 2, 1, 2}, {3, 3, 2, 2}, {3, 2, 1, 1}};
  const std::size_t kC[] = {1, 3, 4, 5, 8, 17, 64, 100};
  for (std::size_t i = 0; i < n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const auto& ks = kKS[uniform(rng, 0, std::size(kKS) - 1)];
    AvgPoolShape s{};
    s.kernel_h = ks[0];
    s.kernel_w = ks[1];
    s.stride_h = ks[2];
    s.stride_w = ks[3];
    s.in_height = uniform(rng, s.kernel_h, 9);
    s.in_width = uniform(rng, s.kernel_w, 9);
    s.channels = pick(rng, kC);
    s.out_height = (s.in_height - s.kernel_h + s.stride_h - 1) / s.stride_h + 1;
    s.out_width = (s.in_width - s.kernel_w + s.stride_w - 1) / s.stride_w + 1;
    t.context = fmt("case %zu in=%zux%zux%zu kernel=%zux%zu stride=(%zu,%zu)", i, s.in_height,
                    s.in_width, s.channels, s.kernel_h, s.kernel_w, s.stride_h, s.stride_w);
    const std::size_t pixels = s.in_height * s.in_width;
    std::vector<float> in = randn(rng, pixels * s.channels);
    if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
    const std::size_t n_out = s.out_height * s.out_width * s.channels;
    std::vector<float> want(n_out);
    avgpool_f32_nhwc__reference(s, in.data(), want.data());
    Buf<float> ig = guarded(in, ge);
    Buf<float> out(n_out, ge);
    k.avgpool(s, ig.data(), out.data());
    same_floats(t, "avgpool", out.data(), want.data(), n_out);
    for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
    for (const auto& r : row_splits(rng, s.out_height)) {
      k.avgpool_rows(s, ig.data(), r.first, r.second, out.data());
    }
    same_floats(t, "avgpool rows", out.data(), want.data(), n_out);

    std::vector<float> gwant(s.channels);
    global_avgpool_f32_nhwc__reference(in.data(), pixels, s.channels, gwant.data());
    Buf<float> gout(s.channels, !ge);
    k.global_avgpool(ig.data(), pixels, s.channels, gout.data());
    same_floats(t, "global avgpool", gout.data(), gwant.data(), s.channels);

    ++t.cases;
  }
  test_maxpool(k, rng, t, n_cases);
  test_avgpool2d(k, rng, t, n_cases);
}

// Bit-identical, NaN payloads and signs included (max pool and clip only select their inputs).
bool same_float_bits(Tally& t, const char* what, const float* got, const float* want,
                     std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      return t.fail(fmt("%s: value %zu of %zu: got %.9g (0x%08x), want %.9g (0x%08x)", what, i, n,
                        static_cast<double>(got[i]), bits_of(got[i]), static_cast<double>(want[i]),
                        bits_of(want[i])));
    }
  }
  return true;
}

// A few NaNs with distinct payloads and signs, so that "the first NaN of the window wins" is
// checked bit for bit, not just "some NaN".
void sprinkle_nans(Rng& rng, std::vector<float>& v, std::size_t count) {
  if (v.empty()) return;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t bits =
        (coin(rng) ? 0xffc00000u : 0x7fc00000u) | static_cast<std::uint32_t>(uniform(rng, 1, 4095));
    float f;
    std::memcpy(&f, &bits, 4);
    v[uniform(rng, 0, v.size() - 1)] = f;
  }
}

void maxpool_case(const PoolKernels& k, Rng& rng, Tally& t, const MaxPoolShape& s, bool ge) {
  t.context =
      fmt("maxpool in=%zux%zux%zu kernel=%zux%zu stride=(%zu,%zu) pad=(%zu,%zu) out=%zux%zu",
          s.in_height, s.in_width, s.channels, s.kernel_h, s.kernel_w, s.stride_h, s.stride_w,
          s.pad_top, s.pad_left, s.out_height, s.out_width);
  std::vector<float> in = randn(rng, s.in_height * s.in_width * s.channels);
  if (coin(rng, 0.4)) sprinkle(rng, in, 0.05);
  if (coin(rng, 0.3)) sprinkle_nans(rng, in, uniform(rng, 1, 4));
  if (coin(rng, 0.1)) {  // signed zeros only: ties between +0 and -0 everywhere
    for (float& v : in) v = coin(rng) ? 0.0f : -0.0f;
  }
  const std::size_t n_out = s.out_height * s.out_width * s.channels;
  std::vector<float> want(n_out);
  maxpool_f32_nhwc__reference(s, in.data(), want.data());
  Buf<float> ig = guarded(in, ge);
  Buf<float> out(n_out, !ge);
  k.maxpool(s, ig.data(), out.data());
  same_float_bits(t, "maxpool", out.data(), want.data(), n_out);
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  for (const auto& r : row_splits(rng, s.out_height)) {
    k.maxpool_rows(s, ig.data(), r.first, r.second, out.data());
  }
  same_float_bits(t, "maxpool rows", out.data(), want.data(), n_out);
}

// Max pool: the ResNet stem (3x3 s2 p1), 2x2 s2, floor and ceil mode (ceil written as a larger
// bottom/right pad), then random kernels 1..5, strides 1..4 (stride > kernel included) and every
// pad in [0, kernel - 1] on each side, with channels around the vector widths.
void test_maxpool(const PoolKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 100};
  // {kh, kw, sh, sw, pt, pl, pb, pr, H, W}
  const std::size_t kFixed[][10] = {
      {3, 3, 2, 2, 1, 1, 1, 1, 16, 16}, {3, 3, 2, 2, 1, 1, 1, 1, 15, 15},
      {2, 2, 2, 2, 0, 0, 0, 0, 9, 8},   {2, 2, 2, 2, 0, 0, 1, 1, 9, 7},
      {3, 3, 2, 2, 1, 1, 2, 2, 14, 14}, {1, 1, 3, 3, 0, 0, 0, 0, 7, 8},
      {3, 1, 1, 2, 2, 0, 2, 0, 1, 5},   {5, 5, 1, 1, 4, 4, 4, 4, 1, 1},
  };
  for (std::size_t i = 0; i < std::size(kFixed) + n_cases; ++i) {
    const bool ge = i % 2 == 0;
    MaxPoolShape s{};
    std::size_t pad_bottom, pad_right;
    if (i < std::size(kFixed)) {
      const auto& f = kFixed[i];
      s = MaxPoolShape{f[8], f[9], pick(rng, kC), f[0], f[1], f[2], f[3], f[4], f[5], 0, 0};
      pad_bottom = f[6];
      pad_right = f[7];
    } else {
      s.kernel_h = uniform(rng, 1, 5);
      s.kernel_w = uniform(rng, 1, 5);
      s.stride_h = uniform(rng, 1, 4);
      s.stride_w = uniform(rng, 1, 4);
      s.pad_top = uniform(rng, 0, s.kernel_h - 1);
      s.pad_left = uniform(rng, 0, s.kernel_w - 1);
      pad_bottom = uniform(rng, 0, s.kernel_h - 1);
      pad_right = uniform(rng, 0, s.kernel_w - 1);
      s.in_height = uniform(rng, 1, 12);
      s.in_width = uniform(rng, 1, 12);
      s.channels = pick(rng, kC);
      // The window must fit the padded input (ops.cc refuses the rest).
      const std::size_t ph = s.in_height + s.pad_top + pad_bottom;
      const std::size_t pw = s.in_width + s.pad_left + pad_right;
      if (ph < s.kernel_h) s.in_height += s.kernel_h - ph;
      if (pw < s.kernel_w) s.in_width += s.kernel_w - pw;
    }
    s.out_height = (s.in_height + s.pad_top + pad_bottom - s.kernel_h) / s.stride_h + 1;
    s.out_width = (s.in_width + s.pad_left + pad_right - s.kernel_w) / s.stride_w + 1;
    maxpool_case(k, rng, t, s, ge);
    ++t.cases;
  }
}

// AVGPOOL2D's output size along one axis (docs/format.md): PyTorch's floor or ceil rule, the
// ceil-mode window that would start past the input dropped. 0 when the window does not fit.
std::size_t avgpool2d_out(std::size_t in, std::size_t pad_a, std::size_t pad_b, std::size_t k,
                          std::size_t stride, bool ceil_mode) {
  if (in + pad_a + pad_b < k) return 0;
  const std::size_t span = in + pad_a + pad_b - k;
  std::size_t out = (ceil_mode ? span + stride - 1 : span) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_a) --out;
  return out;
}

void avgpool2d_case(const PoolKernels& k, Rng& rng, Tally& t, const AvgPool2DShape& s, bool ge) {
  t.context =
      fmt("avgpool2d in=%zux%zux%zu kernel=%zux%zu stride=(%zu,%zu) pad=(%zu,%zu,%zu,%zu) "
          "out=%zux%zu count_include_pad=%d",
          s.in_height, s.in_width, s.channels, s.kernel_h, s.kernel_w, s.stride_h, s.stride_w,
          s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, s.out_height, s.out_width,
          static_cast<int>(s.count_include_pad));
  std::vector<float> in = randn(rng, s.in_height * s.in_width * s.channels);
  if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
  if (coin(rng, 0.2)) {  // large magnitudes of both signs: the sum order shows in the rounding
    for (float& v : in) v *= coin(rng) ? 1.0e7f : 1.0e-3f;
  }
  const std::size_t n_out = s.out_height * s.out_width * s.channels;
  std::vector<float> want(n_out);
  avgpool2d_f32_nhwc__reference(s, in.data(), want.data());
  Buf<float> ig = guarded(in, ge);
  Buf<float> out(n_out, !ge);
  k.avgpool2d(s, ig.data(), out.data());
  if (!same_floats(t, "avgpool2d", out.data(), want.data(), n_out)) return;
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  for (const auto& r : row_splits(rng, s.out_height)) {
    k.avgpool2d_rows(s, ig.data(), r.first, r.second, out.data());
  }
  if (!same_floats(t, "avgpool2d rows", out.data(), want.data(), n_out)) return;
  // One partial range: the rows outside it keep the sentinel.
  const std::size_t y0 = uniform(rng, 0, s.out_height), y1 = uniform(rng, y0, s.out_height);
  const std::size_t row = s.out_width * s.channels;
  std::vector<float> want_part(n_out, kSentinel);
  std::copy(want.begin() + static_cast<std::ptrdiff_t>(y0 * row),
            want.begin() + static_cast<std::ptrdiff_t>(y1 * row),
            want_part.begin() + static_cast<std::ptrdiff_t>(y0 * row));
  for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
  k.avgpool2d_rows(s, ig.data(), y0, y1, out.data());
  same_floats(t, fmt("avgpool2d rows [%zu, %zu)", y0, y1).c_str(), out.data(), want_part.data(),
              n_out);
}

// AVGPOOL2D: the BNN layers (nn.AvgPool2d(3, 2, 1) both divisors, 2x2 s2 floor mode on odd
// maps, ceil-mode windows crossing the edge with the padding counted, a ceil-mode window that
// PyTorch drops, 1x1 maps under 3x3 and 5x5 windows, asymmetric ONNX pads), then random
// kernels 1..5, strides 1..4 (stride > kernel included), every pad in [0, kernel - 1] on each
// side, both modes and both divisors, with channels around the vector widths.
void test_avgpool2d(const PoolKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};
  // {kh, kw, sh, sw, pt, pl, pb, pr, H, W, ceil_mode, count_include_pad}
  const std::size_t kFixed[][12] = {
      {3, 3, 2, 2, 1, 1, 1, 1, 16, 16, 0, 1}, {3, 3, 2, 2, 1, 1, 1, 1, 15, 15, 0, 0},
      {2, 2, 2, 2, 0, 0, 0, 0, 7, 9, 0, 1},   {2, 2, 2, 2, 0, 0, 0, 0, 7, 9, 1, 1},
      {3, 3, 2, 2, 1, 1, 1, 1, 8, 8, 1, 1},   {3, 3, 2, 2, 1, 1, 1, 1, 8, 8, 1, 0},
      {2, 2, 3, 3, 0, 0, 0, 0, 7, 7, 1, 1},   {3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1},
      {5, 5, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1},   {5, 5, 3, 3, 2, 2, 2, 2, 2, 3, 1, 0},
      {3, 2, 1, 2, 2, 0, 1, 1, 4, 5, 1, 1},   {4, 4, 2, 2, 2, 2, 2, 2, 6, 6, 1, 1},
  };
  for (std::size_t i = 0; i < std::size(kFixed) + n_cases; ++i) {
    const bool ge = i % 2 == 0;
    AvgPool2DShape s{};
    bool ceil_mode;
    if (i < std::size(kFixed)) {
      const auto& f = kFixed[i];
      s = AvgPool2DShape{f[8], f[9], pick(rng, kC), f[0], f[1], f[2], f[3],
                         f[4], f[5], f[6],          f[7], 0,    0,    f[11] == 1};
      ceil_mode = f[10] == 1;
    } else {
      s.kernel_h = uniform(rng, 1, 5);
      s.kernel_w = uniform(rng, 1, 5);
      s.stride_h = uniform(rng, 1, 4);
      s.stride_w = uniform(rng, 1, 4);
      s.pad_top = uniform(rng, 0, s.kernel_h - 1);
      s.pad_left = uniform(rng, 0, s.kernel_w - 1);
      s.pad_bottom = uniform(rng, 0, s.kernel_h - 1);
      s.pad_right = uniform(rng, 0, s.kernel_w - 1);
      s.in_height = uniform(rng, 1, 12);
      s.in_width = uniform(rng, 1, 12);
      s.channels = pick(rng, kC);
      s.count_include_pad = coin(rng);
      ceil_mode = coin(rng);
      // The window must fit the padded input (ops.cc refuses the rest).
      const std::size_t ph = s.in_height + s.pad_top + s.pad_bottom;
      const std::size_t pw = s.in_width + s.pad_left + s.pad_right;
      if (ph < s.kernel_h) s.in_height += s.kernel_h - ph;
      if (pw < s.kernel_w) s.in_width += s.kernel_w - pw;
    }
    s.out_height =
        avgpool2d_out(s.in_height, s.pad_top, s.pad_bottom, s.kernel_h, s.stride_h, ceil_mode);
    s.out_width =
        avgpool2d_out(s.in_width, s.pad_left, s.pad_right, s.kernel_w, s.stride_w, ceil_mode);
    avgpool2d_case(k, rng, t, s, ge);
    ++t.cases;
  }
}

void test_concat(const ConcatKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1, 3, 4, 5, 8, 17, 64, 100};
  for (std::size_t i = 0; i < n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const std::size_t pixels = uniform(rng, 1, 81);
    const std::size_t c1 = pick(rng, kC);
    const std::size_t c2 = uniform(rng, 1, 9);
    t.context = fmt("case %zu pixels=%zu channels=%zu+%zu+%zu", i, pixels, c1, c2, c2);
    // Two inputs, the second repeated (aliasing inputs are allowed).
    const std::vector<float> a = randn(rng, pixels * c1);
    const std::vector<float> b = randn(rng, pixels * c2);
    Buf<float> agd = guarded(a, ge);
    Buf<float> bgd = guarded(b, !ge);
    const float* inputs[] = {agd.data(), bgd.data(), bgd.data()};
    const float* inputs_ref[] = {a.data(), b.data(), b.data()};
    const std::size_t chans[] = {c1, c2, c2};
    const std::size_t n_cat = pixels * (c1 + 2 * c2);
    std::vector<float> cwant(n_cat);
    concat_channels_f32__reference(inputs_ref, chans, 3, pixels, cwant.data());
    Buf<float> cout(n_cat, ge);
    k.channels_f32(inputs, chans, 3, pixels, cout.data());
    same_floats(t, "concat", cout.data(), cwant.data(), n_cat);
    ++t.cases;
  }
}

// ---- element-wise -------------------------------------------------------------------------

// One softmax case (elementwise.h): the variant against the reference, bits equal (every table
// holds the one portable function, so anything else is a wrong table entry), in place too; and
// the reference against exact math in double within docs/format.md's SOFTMAX tolerance, which
// is what a qemu run checks on another architecture's libm: log-softmax
// |got - exact| <= 1e-6 * (|exact| + 1), softmax |got - exact| <= 1e-6 * |exact| + 1e-9; NaN
// exactly where the exact result is NaN, infinities equal.
void test_softmax_case(const ElementwiseKernels& k, Rng& rng, Tally& t, std::size_t i) {
  const std::size_t kC[] = {1, 2, 3, 10, 17, 64, 100, 1000, 10000};
  const float kScale[] = {1e-3f, 1.0f, 10.0f, 1e3f, 1e6f};
  const bool ge = i % 2 == 0;
  const bool log_softmax = i % 4 >= 2;
  const std::size_t c = i < std::size(kC) ? kC[i] : pick(rng, kC);
  const std::size_t pixels = uniform(rng, 1, c >= 1000 ? 2 : 6), n = pixels * c;
  const float scale = pick(rng, kScale);
  t.context = fmt("softmax case %zu pixels=%zu C=%zu scale=%g log=%d", i, pixels, c,
                  static_cast<double>(scale), log_softmax ? 1 : 0);
  std::vector<float> x = randn(rng, n, scale);
  if (i % 3 == 2) sprinkle(rng, x, 0.02);  // infinities, NaNs, denormals, float max
  std::vector<float> want(n);
  softmax_f32__reference(x.data(), pixels, c, log_softmax, want.data());
  const Buf<float> xg = guarded(x, ge);
  Buf<float> out(n, !ge);
  k.softmax(xg.data(), pixels, c, log_softmax, out.data());
  same_floats(t, "softmax", out.data(), want.data(), n);
  out.assign(x);
  k.softmax(out.data(), pixels, c, log_softmax, out.data());
  same_floats(t, "softmax in place", out.data(), want.data(), n);

  for (std::size_t p = 0; p < pixels; ++p) {
    const float* row = x.data() + p * c;
    double m = row[0];
    bool nan = false;
    for (std::size_t j = 0; j < c; ++j) {
      nan = nan || std::isnan(row[j]);
      m = std::max(m, static_cast<double>(row[j]));
    }
    double sum = 0.0;
    for (std::size_t j = 0; j < c; ++j) sum += std::exp(static_cast<double>(row[j]) - m);
    for (std::size_t j = 0; j < c; ++j) {
      const double z = static_cast<double>(row[j]) - m;  // NaN for inf - inf
      const double exact_math = log_softmax ? z - std::log(sum) : std::exp(z) / sum;
      // In float range: a log-probability below -FLT_MAX is -inf in any float result (and a
      // double-to-float conversion out of range is undefined, hence the test first).
      double exact = exact_math;
      if (std::fabs(exact_math) > static_cast<double>(std::numeric_limits<float>::max())) {
        exact = std::copysign(HUGE_VAL, exact_math);
      }
      const double got = want[p * c + j];
      bool ok;
      if (nan || std::isnan(exact)) {
        ok = std::isnan(got);
      } else if (std::isinf(exact) || std::isinf(got)) {
        ok = got == exact;
      } else {
        const double bound =
            log_softmax ? 1e-6 * (std::fabs(exact) + 1.0) : 1e-6 * std::fabs(exact) + 1e-9;
        ok = std::fabs(got - exact) <= bound;
      }
      if (!ok) {
        t.fail(
            fmt("softmax reference: row %zu value %zu: got %.9g, exact %.12g", p, j, got, exact));
        return;
      }
    }
  }
}

void test_elementwise(const ElementwiseKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 100, 130};
  for (std::size_t i = 0; i < n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const std::size_t c = pick(rng, kC), pixels = uniform(rng, 0, 7), n = pixels * c;
    t.context = fmt("case %zu pixels=%zu C=%zu", i, pixels, c);
    std::vector<float> x = randn(rng, n, 3.0f);
    sprinkle(rng, x, 0.1);
    const std::vector<float> s = randn(rng, c), b = randn(rng, c), y = randn(rng, n);
    Buf<float> xg = guarded(x, ge), sg = guarded(s, !ge), bg = guarded(b, ge), yg = guarded(y, !ge);
    std::vector<float> want(n);
    for (int inplace = 0; inplace < 2; ++inplace) {
      Buf<float> out(n, ge);
      auto src = [&]() -> const float* {
        if (inplace == 0) return xg.data();
        out.assign(x);
        return out.data();
      };
      affine_f32__reference(x.data(), pixels, c, s.data(), b.data(), want.data());
      k.affine(src(), pixels, c, sg.data(), bg.data(), out.data());
      same_floats(t, inplace ? "affine in place" : "affine", out.data(), want.data(), n);
      prelu_f32__reference(x.data(), pixels, c, s.data(), want.data());
      k.prelu(src(), pixels, c, sg.data(), out.data());
      same_floats(t, inplace ? "prelu in place" : "prelu", out.data(), want.data(), n);
      mul_channel_f32__reference(x.data(), pixels, c, s.data(), want.data());
      k.mul_channel(src(), pixels, c, sg.data(), out.data());
      same_floats(t, inplace ? "mul_channel in place" : "mul_channel", out.data(), want.data(), n);
      relu_f32__reference(x.data(), n, want.data());
      k.relu(src(), n, out.data());
      same_floats(t, inplace ? "relu in place" : "relu", out.data(), want.data(), n);
      sigmoid_f32__reference(x.data(), n, want.data());
      k.sigmoid(src(), n, out.data());
      same_floats(t, inplace ? "sigmoid in place" : "sigmoid", out.data(), want.data(), n);
      add_f32__reference(x.data(), y.data(), n, want.data());
      k.add(src(), yg.data(), n, out.data());
      same_floats(t, inplace ? "add in place" : "add", out.data(), want.data(), n);
      // clip: ReLU6, Hardtanh, a one-sided bound, an empty range and random bounds; the input
      // holds NaNs with payloads, which must come back bit for bit.
      const float kInf = std::numeric_limits<float>::infinity();
      const float kBounds[][2] = {{0.0f, 6.0f},  {-1.0f, 1.0f}, {0.0f, kInf},
                                  {-kInf, 0.5f}, {2.0f, 2.0f},  {-0.0f, 0.0f}};
      float lo, hi;
      if (i % 7 < std::size(kBounds)) {
        lo = kBounds[i % 7][0];
        hi = kBounds[i % 7][1];
      } else {
        lo = static_cast<float>(uniform(rng, 0, 200)) / 64.0f - 2.0f;
        hi = lo + static_cast<float>(uniform(rng, 0, 200)) / 64.0f;
      }
      std::vector<float> xc = x;
      sprinkle_nans(rng, xc, n / 8);
      Buf<float> xcg = guarded(xc, ge);
      clip_f32__reference(xc.data(), n, lo, hi, want.data());
      const float* clip_src = xcg.data();
      if (inplace == 1) {
        out.assign(xc);
        clip_src = out.data();
      }
      k.clip(clip_src, n, lo, hi, out.data());
      same_float_bits(t, inplace ? "clip in place" : "clip", out.data(), want.data(), n);
    }
    test_softmax_case(k, rng, t, i);
    ++t.cases;
  }
}

// ---- fused epilogue -----------------------------------------------------------------------

void test_epilogue(const EpilogueKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1,  3,  4,  7,  15,  16,  17,  31,  32,
                            33, 48, 64, 66, 100, 128, 130, 192, 256};
  // The zoo's (channels, residual channels, bits) first, then random cases; the step subset
  // cycles through all 128 either way (64: the mid affine; the ReLU / pre affine / clip steps
  // apart, below). Every third case has mid and post scales of exactly 1.0f (ReActNet's
  // learnable biases: the kernels may skip the multiply), every third but one all 1.0f except
  // one channel (they must not).
  const auto zoo = zoo_epilogue();
  for (std::size_t i = 0; i < zoo.size() + n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const bool from_zoo = i < zoo.size();
    const std::size_t c = from_zoo ? zoo[i][0] : pick(rng, kC), pixels = uniform(rng, 1, 15);
    unsigned steps = static_cast<unsigned>(i % 128);              // every subset of the 7 steps
    if (from_zoo) steps = 2u | 4u | 8u | (zoo[i][2] ? 32u : 0u);  // the zoo's tails
    // The pre steps (128: ReLU, 256: pre affine) cycle apart from the others, so every subset
    // of the 7 meets each of the 4 pre combinations over 512 cases; the zoo's cases run without.
    if (!from_zoo) steps |= static_cast<unsigned>((i / 128 + i / 7) % 4) << 7;
    // The clip (512) on every other case, out of step with both cycles above.
    if (!from_zoo && (i / 128 + i / 3) % 2 == 1) steps |= 512u;
    std::vector<std::size_t> divisors;
    for (std::size_t d = 1; d <= c; ++d) {
      if (c % d == 0) divisors.push_back(d);
    }
    const std::size_t rc = from_zoo ? zoo[i][1] : divisors[uniform(rng, 0, divisors.size() - 1)];
    // Usually one partial range (the rest must stay untouched), sometimes the whole image.
    const bool whole = coin(rng, 0.25);
    const std::size_t p0 = whole ? 0 : uniform(rng, 0, pixels);
    const std::size_t p1 = whole ? pixels : uniform(rng, p0, pixels);
    const std::size_t unit_scales = (i / 2) % 3;  // 0 random, 1 all 1.0f, 2 all but one
    t.context =
        fmt("case %zu C=%zu pixels=%zu steps=0x%03x residual_channels=%zu range=[%zu,%zu) "
            "unit_scales=%zu",
            i, c, pixels, steps, rc, p0, p1, unit_scales);
    // Clip bounds: ReLU6, a random interval, one point, a half-infinite one, signed zeros (the
    // CLIP op allows lo <= hi, neither NaN; +0 and -0 compare equal either way round).
    const float inf = std::numeric_limits<float>::infinity();
    float clip_lo = 0.0f, clip_hi = 6.0f;
    switch (uniform(rng, 0, 5)) {
      case 0:
        break;
      case 1: {
        const float u = static_cast<float>(uniform(rng, 0, 1000)) / 250.0f - 2.0f;
        clip_lo = -u - 1.0f;
        clip_hi = u * u;
        break;
      }
      case 2:
        clip_lo = clip_hi = static_cast<float>(uniform(rng, 0, 8)) * 0.25f - 1.0f;
        break;
      case 3:
        clip_lo = coin(rng, 0.5) ? -inf : -1.5f;
        clip_hi = clip_lo == -inf ? 0.75f : inf;
        break;
      case 4:
        clip_lo = coin(rng, 0.5) ? -0.0f : 0.0f;
        clip_hi = coin(rng, 0.5) ? -0.0f : 0.0f;
        break;
      default:
        clip_lo = -inf;
        clip_hi = inf;
        break;
    }
    if (steps & 512) {
      t.context += fmt(" clip=[%g,%g]", static_cast<double>(clip_lo), static_cast<double>(clip_hi));
    }
    std::vector<float> x = randn(rng, pixels * c, 2.0f);
    sprinkle(rng, x, 0.1);
    if (steps & 512) {
      // Values at the bounds and a sign-flipped zero, where a select in the wrong order shows.
      for (std::size_t j = 1; j < x.size(); j += 11) x[j] = j % 2 == 0 ? clip_lo : clip_hi;
      for (std::size_t j = 4; j < x.size(); j += 13) x[j] = j % 2 == 0 ? -0.0f : 0.0f;
    }
    std::vector<float> th = randn(rng, c);
    for (std::size_t j = 0; j < c; j += 5) th[j] = 0.0f;
    for (std::size_t j = 1; j < c; j += 7) th[j] = -0.0f;
    if (c > 2) th[2] = std::numeric_limits<float>::quiet_NaN();
    for (std::size_t p = 0; p < pixels; p += 3) {
      for (std::size_t j = 0; j < c; ++j) x[p * c + j] = th[j];  // ties
    }
    const std::vector<float> cs = randn(rng, c);
    std::vector<float> ps = randn(rng, c), ms = randn(rng, c), mb = randn(rng, c);
    if (unit_scales != 0) {
      std::fill(ps.begin(), ps.end(), 1.0f);
      std::fill(ms.begin(), ms.end(), 1.0f);
      if (unit_scales == 2) {
        const std::size_t j = uniform(rng, 0, c - 1);
        (coin(rng, 0.5) ? ps : ms)[j] = coin(rng, 0.5) ? -1.0f : 1.0000001f;
      }
    }
    std::vector<float> pre_s = randn(rng, c), pre_b = randn(rng, c);
    for (std::size_t j = 0; j < c; j += 6) pre_b[j] = -0.0f;  // ReLU's -0.0f through + -0.0f
    std::vector<float> slope = randn(rng, c), pb = randn(rng, c), res = randn(rng, pixels * rc);
    for (std::size_t j = 0; j < c; j += 4) slope[j] = -0.0f;
    for (std::size_t j = 0; j < c; j += 3) pb[j] = -0.0f;
    {
      const float r_specials[] = {std::numeric_limits<float>::quiet_NaN(), -0.0f,
                                  std::numeric_limits<float>::infinity(), 0.0f};
      for (std::size_t j = 0; j < 4 && j < res.size(); ++j) res[j] = r_specials[j];
    }
    Buf<float> csg = guarded(cs, ge), slg = guarded(slope, !ge), psg = guarded(ps, ge),
               pbg = guarded(pb, !ge), rg = guarded(res, ge), thg = guarded(th, !ge),
               msg = guarded(ms, !ge), mbg = guarded(mb, ge), pre_sg = guarded(pre_s, ge),
               pre_bg = guarded(pre_b, !ge);
    const std::size_t words = words_for_channels(c);
    auto make = [&](bool kernel_side) {
      Epilogue ep;
      ep.relu = (steps & 128) != 0;
      if (steps & 256) {
        ep.pre_scale = kernel_side ? pre_sg.data() : pre_s.data();
        ep.pre_bias = kernel_side ? pre_bg.data() : pre_b.data();
      }
      if (steps & 1) ep.channel_scale = kernel_side ? csg.data() : cs.data();
      if (steps & 2) {
        ep.residual = kernel_side ? rg.data() : res.data();
        ep.residual_channels = rc;
      }
      if (steps & 4) ep.prelu_slope = kernel_side ? slg.data() : slope.data();
      if (steps & 64) {
        ep.mid_scale = kernel_side ? msg.data() : ms.data();
        ep.mid_bias = kernel_side ? mbg.data() : mb.data();
      }
      if (steps & 8) {
        ep.post_scale = kernel_side ? psg.data() : ps.data();
        ep.post_bias = kernel_side ? pbg.data() : pb.data();
      }
      ep.write_float = (steps & 16) == 0;
      if (steps & 32) ep.threshold = kernel_side ? thg.data() : th.data();
      if (steps & 512) {
        ep.clip = true;
        ep.clip_lo = clip_lo;
        ep.clip_hi = clip_hi;
      }
      return ep;
    };
    std::vector<BitWord> sentinel_bits(pixels * words);
    for (auto& w : sentinel_bits) w = rng();
    std::vector<float> want = x;
    std::vector<BitWord> want_bits = sentinel_bits;
    Epilogue ref = make(false);
    if (ref.threshold != nullptr) ref.bits = want_bits.data();
    epilogue_rows__reference(ref, c, p0, p1, want.data());
    Buf<float> out = guarded(x, ge);
    Buf<BitWord> bits = guarded(sentinel_bits, !ge);
    Epilogue ep = make(true);
    if (ep.threshold != nullptr) ep.bits = bits.data();
    k.rows(ep, c, p0, p1, out.data());
    same_floats(t, "floats", out.data(), want.data(), want.size());
    same_bytes(t, "bits", bits.data(), want_bits.data(), want_bits.size());
    if (whole) {
      // The same image again as a shuffled split of pixel ranges.
      out.assign(x);
      bits.assign(sentinel_bits);
      for (const auto& r : row_splits(rng, pixels)) k.rows(ep, c, r.first, r.second, out.data());
      same_floats(t, "floats, split", out.data(), want.data(), want.size());
      same_bytes(t, "bits, split", bits.data(), want_bits.data(), want_bits.size());
    }
    ++t.cases;
  }
}

// ---- FC -----------------------------------------------------------------------------------

// fc.h: |got - exact| <= 1e-5 * magnitude, both in double.
bool within(Tally& t, const char* what, const float* got, const std::vector<double>& exact,
            const std::vector<double>& mag) {
  for (std::size_t o = 0; o < exact.size(); ++o) {
    const double err = std::fabs(static_cast<double>(got[o]) - exact[o]);
    if (!(err <= 1e-5 * mag[o])) {
      return t.fail(fmt("%s: output %zu: got %.9g, exact %.9g, magnitude %.9g", what, o,
                        static_cast<double>(got[o]), exact[o], mag[o]));
    }
  }
  return true;
}

void test_fc_extremes(const FCKernels& k, Rng& rng, Tally& t);

void test_fc(const FCKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kIn[] = {1,  3,   4,   7,   8,   15,  16,  17,   31,   63,  64,
                             65, 100, 128, 129, 130, 257, 512, 1000, 1280, 2048};
  const std::size_t kOut[] = {1, 2, 3, 4, 5, 7, 9, 10, 17};
  // The zoo's classifiers first, then random shapes.
  const auto zoo = zoo_fc();
  for (std::size_t i = 0; i < zoo.size() + n_cases; ++i) {
    const bool ge = i % 2 == 0;
    const bool from_zoo = i < zoo.size();
    const std::size_t ci = from_zoo ? zoo[i][0] : pick(rng, kIn);
    const std::size_t co = from_zoo ? zoo[i][1] : pick(rng, kOut);
    t.context = fmt("case %zu in=%zu out=%zu", i, ci, co);
    const std::vector<float> x = randn(rng, ci), bias = randn(rng, co);
    std::vector<float> ws = randn(rng, co, 0.01f);
    for (float& v : ws) v = std::fabs(v) + 1e-4f;
    Buf<float> xg = guarded(x, ge), bg = guarded(bias, !ge), wsg = guarded(ws, ge);
    std::vector<double> exact(co), mag(co);
    Buf<float> out(co, ge);

    const std::vector<float> w = randn(rng, co * ci);
    for (std::size_t o = 0; o < co; ++o) {
      double e = 0, m = 0;
      for (std::size_t j = 0; j < ci; ++j) {
        e += static_cast<double>(w[o * ci + j]) * x[j];
        m += std::fabs(static_cast<double>(w[o * ci + j]) * x[j]);
      }
      exact[o] = e + bias[o];
      mag[o] = m + std::fabs(static_cast<double>(bias[o]));
    }
    {
      Buf<float> wg = guarded(w, !ge);
      k.f32(ci, co, xg.data(), wg.data(), bg.data(), out.data());
      within(t, "f32", out.data(), exact, mag);
    }

    const std::vector<std::int8_t> q = random_i8(rng, co * ci);
    for (std::size_t o = 0; o < co; ++o) {
      double e = 0, m = 0;
      for (std::size_t j = 0; j < ci; ++j) {
        e += static_cast<double>(q[o * ci + j]) * x[j];
        m += std::fabs(static_cast<double>(q[o * ci + j]) * x[j]);
      }
      exact[o] = static_cast<double>(ws[o]) * e + bias[o];
      mag[o] = static_cast<double>(ws[o]) * m + std::fabs(static_cast<double>(bias[o]));
    }
    {
      Buf<std::int8_t> qg = guarded(q, ge);
      k.qs8(ci, co, xg.data(), qg.data(), wsg.data(), bg.data(), out.data());
      within(t, "qs8", out.data(), exact, mag);
    }

    // bitplane8: codes B in [0, 255], w = 2B - 255; plane b stores 1 (= -1) where bit b of B is 0.
    std::vector<unsigned> codes(co * ci);
    for (auto& v : codes) v = static_cast<unsigned>(uniform(rng, 0, 255));
    codes[0] = 0;
    codes.back() = 255;
    const std::vector<BitWord> planes = bitplanes_of_codes(codes, co, ci);
    for (std::size_t o = 0; o < co; ++o) {
      double e = 0, m = 0;
      for (std::size_t j = 0; j < ci; ++j) {
        const double wv = 2.0 * codes[o * ci + j] - 255.0;
        e += wv * x[j];
        m += std::fabs(wv * x[j]);
      }
      exact[o] = static_cast<double>(ws[o]) * e + bias[o];
      mag[o] = static_cast<double>(ws[o]) * m + std::fabs(static_cast<double>(bias[o]));
    }
    {
      Buf<BitWord> pg = guarded(planes, !ge);
      k.bitplane8(ci, co, xg.data(), pg.data(), wsg.data(), bg.data(), out.data());
      within(t, "bitplane8", out.data(), exact, mag);
    }
    {
      // The engine's form: the planes packed into int8 codes at load. The packed reference sums
      // the same weights in the same order as the planes' reference: equal bit for bit.
      std::vector<std::int8_t> packed(co * ci);
      fc_bitplane8_pack(ci, co, planes.data(), packed.data());
      std::vector<float> from_planes(co), from_packed(co);
      fc_bitplane8__reference(ci, co, x.data(), planes.data(), ws.data(), bias.data(),
                              from_planes.data());
      fc_bitplane8_packed__reference(ci, co, x.data(), packed.data(), ws.data(), bias.data(),
                                     from_packed.data());
      for (std::size_t o = 0; o < co; ++o) {
        if (std::memcmp(&from_planes[o], &from_packed[o], sizeof(float)) != 0) {
          t.fail(fmt("bitplane8 packed reference: output %zu: %.9g, planes' reference %.9g", o,
                     static_cast<double>(from_packed[o]), static_cast<double>(from_planes[o])));
          break;
        }
      }
      Buf<std::int8_t> qg = guarded(packed, ge);
      k.bitplane8_packed(ci, co, xg.data(), qg.data(), wsg.data(), bg.data(), out.data());
      within(t, "bitplane8 packed", out.data(), exact, mag);
    }
    ++t.cases;
  }
  test_fc_extremes(k, rng, t);
}

// fc.h's overflow rule: a variant's output is +inf, -inf or NaN exactly where the reference's
// is (whatever its summation order); finite outputs within the tolerance of the reference's.
int nonfinite_kind(float v) { return std::isnan(v) ? 1 : std::isinf(v) ? (v > 0 ? 2 : 3) : 0; }

bool same_nonfinite_within(Tally& t, const char* what, const float* got, const float* want,
                           const std::vector<double>& mag) {
  for (std::size_t o = 0; o < mag.size(); ++o) {
    const int kg = nonfinite_kind(got[o]), kw = nonfinite_kind(want[o]);
    const double err = std::fabs(static_cast<double>(got[o]) - static_cast<double>(want[o]));
    if (kg != kw || (kg == 0 && !(err <= 2e-5 * mag[o]))) {
      return t.fail(fmt("%s: output %zu: got %.9g, reference %.9g, magnitude %.9g", what, o,
                        static_cast<double>(got[o]), static_cast<double>(want[o]), mag[o]));
    }
  }
  return true;
}

// Extreme values through the three encodings: specials (inf, NaN, FLT_MAX, denormals) in x, w
// and bias; products near 1e38 with random signs (partial sums that overflow in one order and
// not in another); products that overflow f32 (1e20 * 1e20); a 1e38 input with 1e38 biases (a
// hostile BN before the head); sums that land on either side of FLT_MAX.
void test_fc_extremes(const FCKernels& k, Rng& rng, Tally& t) {
  const std::size_t kShapes[][2] = {{7, 5}, {64, 9}, {100, 17}, {257, 4}, {1000, 10}};
  const char* kKinds[] = {"specials", "partial sums near 1e38", "products 1e40", "bias 1e38",
                          "near FLT_MAX"};
  const float fmax = std::numeric_limits<float>::max();
  auto big = [&](std::size_t n, float magnitude) {
    std::vector<float> v(n);
    std::uniform_real_distribution<float> u(1.0f, 2.0f);
    for (float& x : v) x = (coin(rng) ? -1.0f : 1.0f) * magnitude * u(rng);
    return v;
  };
  std::size_t n = 0;
  for (std::size_t kind = 0; kind < std::size(kKinds); ++kind) {
    for (const auto& shape : kShapes) {
      const std::size_t ci = shape[0], co = shape[1];
      const bool ge = n++ % 2 == 0;
      t.context = fmt("extremes '%s' in=%zu out=%zu", kKinds[kind], ci, co);
      std::vector<float> x, w, bias = randn(rng, co);
      if (kind == 0) {
        x = randn(rng, ci);
        w = randn(rng, co * ci);
        sprinkle(rng, x, 0.05);
        sprinkle(rng, w, 0.02);
        sprinkle(rng, bias, 0.3);
      } else if (kind == 1 || kind == 2) {
        x = big(ci, kind == 1 ? 1e19f : 1e20f);
        w = big(co * ci, kind == 1 ? 1e19f : 1e20f);
        sprinkle(rng, bias, 0.3, /*finite_only=*/true);
      } else if (kind == 3) {
        x.assign(ci, 1e38f);
        w = randn(rng, co * ci, 0.1f);
        bias.assign(co, 1e38f);
      } else {
        x.assign(ci, fmax / static_cast<float>(ci));
        w = randn(rng, co * ci, 1e-3f);
        for (float& v : w) v += 1.0f;
        bias = randn(rng, co, 1e37f);
      }
      std::vector<float> ws = randn(rng, co, 0.01f);
      for (float& v : ws) v = std::fabs(v) + 1e-4f;
      if (kind == 0) sprinkle(rng, ws, 0.2, /*finite_only=*/true);
      std::vector<float> xq = x;  // qs8 / bitplane8: scaled up so that their sums overflow too
      if (kind != 0) {
        for (float& v : xq) v *= 1e3f;
        for (float& v : ws) v = 1e-3f;
      }
      Buf<float> xg = guarded(x, ge), xqg = guarded(xq, !ge), bg = guarded(bias, !ge);
      Buf<float> wsg = guarded(ws, ge);
      Buf<float> out(co, ge);
      std::vector<float> want(co);
      std::vector<double> mag(co);
      auto magnitudes = [&](auto weight_of, const std::vector<float>& xv) {
        for (std::size_t o = 0; o < co; ++o) {
          double m = 0;
          for (std::size_t j = 0; j < ci; ++j) {
            m += std::fabs(static_cast<double>(weight_of(o, j)) * xv[j]);
          }
          mag[o] =
              static_cast<double>(std::fabs(ws[o])) * m + std::fabs(static_cast<double>(bias[o]));
        }
      };
      {
        Buf<float> wg = guarded(w, !ge);
        fc_f32__reference(ci, co, x.data(), w.data(), bias.data(), want.data());
        k.f32(ci, co, xg.data(), wg.data(), bg.data(), out.data());
        // f32 has no weight scale.
        for (std::size_t o = 0; o < co; ++o) {
          double m = 0;
          for (std::size_t j = 0; j < ci; ++j) {
            m += std::fabs(static_cast<double>(w[o * ci + j]) * x[j]);
          }
          mag[o] = m + std::fabs(static_cast<double>(bias[o]));
        }
        same_nonfinite_within(t, "f32", out.data(), want.data(), mag);
      }
      {
        const std::vector<std::int8_t> q = random_i8(rng, co * ci);
        Buf<std::int8_t> qg = guarded(q, ge);
        fc_qs8__reference(ci, co, xq.data(), q.data(), ws.data(), bias.data(), want.data());
        k.qs8(ci, co, xqg.data(), qg.data(), wsg.data(), bg.data(), out.data());
        magnitudes([&](std::size_t o, std::size_t j) { return q[o * ci + j]; }, xq);
        same_nonfinite_within(t, "qs8", out.data(), want.data(), mag);
      }
      {
        std::vector<unsigned> codes(co * ci);
        for (auto& v : codes) v = static_cast<unsigned>(uniform(rng, 0, 255));
        const std::vector<BitWord> planes = bitplanes_of_codes(codes, co, ci);
        Buf<BitWord> pg = guarded(planes, ge);
        fc_bitplane8__reference(ci, co, x.data(), planes.data(), ws.data(), bias.data(),
                                want.data());
        k.bitplane8(ci, co, xg.data(), pg.data(), wsg.data(), bg.data(), out.data());
        magnitudes(
            [&](std::size_t o, std::size_t j) {
              return 2.0f * static_cast<float>(codes[o * ci + j]) - 255.0f;
            },
            x);
        same_nonfinite_within(t, "bitplane8", out.data(), want.data(), mag);
        std::vector<std::int8_t> packed(co * ci);
        fc_bitplane8_pack(ci, co, planes.data(), packed.data());
        Buf<std::int8_t> qg = guarded(packed, !ge);
        k.bitplane8_packed(ci, co, xg.data(), qg.data(), wsg.data(), bg.data(), out.data());
        same_nonfinite_within(t, "bitplane8 packed", out.data(), want.data(), mag);
      }
      ++t.cases;
    }
  }
}

// ---- binary FC ----------------------------------------------------------------------------

// One shape, run over a shuffled split of the outputs (each part offsetting weight, scale,
// bias and out, as the engine splits it across threads), then one partial range into a
// sentinel-filled output. in_ones / w_ones as in bconv_case (0 and 1: dot = -C or +C).
void bfc_case(const BFCKernels& k, Rng& rng, Tally& t, std::size_t ci, std::size_t co, bool ge,
              double in_ones = 0.5, double w_ones = 0.5) {
  t.context = fmt("C=%zu O=%zu ones=(%g,%g)", ci, co, in_ones, w_ones);
  const std::size_t words = words_for_channels(ci);
  const std::vector<BitWord> in = random_bits(rng, 1, ci, in_ones);
  const std::vector<BitWord> weight = random_bits(rng, co, ci, w_ones);
  std::vector<float> scale = randn(rng, co), bias = randn(rng, co);
  sprinkle(rng, scale, 0.05);
  std::vector<float> want(co);
  bfc__reference(ci, co, in.data(), weight.data(), scale.data(), bias.data(), want.data());
  Buf<BitWord> ig = guarded(in, ge), wg = guarded(weight, !ge);
  Buf<float> sg = guarded(scale, !ge), bg = guarded(bias, ge);
  Buf<float> out(co, ge);
  for (std::size_t j = 0; j < co; ++j) out[j] = kSentinel;
  for (const auto& r : row_splits(rng, co)) {
    k.run(ci, r.second - r.first, ig.data(), wg.data() + r.first * words, sg.data() + r.first,
          bg.data() + r.first, out.data() + r.first);
  }
  if (!same_floats(t, "all outputs", out.data(), want.data(), co)) return;
  const std::size_t o0 = uniform(rng, 0, co), o1 = uniform(rng, o0, co);
  std::vector<float> want_part(co, kSentinel);
  std::copy(want.begin() + static_cast<std::ptrdiff_t>(o0),
            want.begin() + static_cast<std::ptrdiff_t>(o1),
            want_part.begin() + static_cast<std::ptrdiff_t>(o0));
  for (std::size_t j = 0; j < co; ++j) out[j] = kSentinel;
  k.run(ci, o1 - o0, ig.data(), wg.data() + o0 * words, sg.data() + o0, bg.data() + o0,
        out.data() + o0);
  same_floats(t, fmt("outputs [%zu, %zu)", o0, o1).c_str(), out.data(), want_part.data(), co);
}

void test_bfc(const BFCKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  // Channels around every word, vector (4 words on AVX2, 2 on NEON) and flush (31 vectors of
  // 4 words = 7936 channels on AVX2) boundary; outputs around the 4-row tile.
  const std::size_t kC[] = {1,    2,    63,   64,   65,   127,  128,  129,  200,
                            255,  256,  257,  320,  511,  512,  513,  1000, 2047,
                            2048, 4095, 4096, 4097, 7935, 7936, 7937, 8192, 8193};
  const std::size_t kO[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 31, 33};
  std::size_t i = 0;
  // Fixed: every channel count with a few output counts, then the extreme densities (all
  // channels agree or all disagree: every byte and lane at its limit).
  for (std::size_t ci : kC) {
    for (std::size_t co : {std::size_t{1}, std::size_t{4}, std::size_t{7}, std::size_t{9}}) {
      bfc_case(k, rng, t, ci, co, i++ % 2 == 0);
      ++t.cases;
    }
    for (double in_ones : {0.0, 1.0}) {
      for (double w_ones : {0.0, 1.0}) {
        bfc_case(k, rng, t, ci, 5, i++ % 2 == 0, in_ones, w_ones);
        ++t.cases;
      }
    }
  }
  // The zoo-sized layers of a BinaryNet MLP.
  for (std::size_t ci : {std::size_t{2048}, std::size_t{4096}}) {
    bfc_case(k, rng, t, ci, 64, i++ % 2 == 0);
    ++t.cases;
  }
  for (std::size_t n = 0; n < n_cases; ++n) {
    const std::size_t ci = coin(rng) ? pick(rng, kC) : uniform(rng, 1, 3000);
    const std::size_t co = coin(rng) ? pick(rng, kO) : uniform(rng, 1, 40);
    bfc_case(k, rng, t, ci, co, i++ % 2 == 0, coin(rng, 0.9) ? 0.5 : 0.9, 0.5);
    ++t.cases;
  }
}

// ---- FC, binary (±1) weights: the compact SE weights ---------------------------------------

// fc.h: |got - exact| <= 1e-5 * (|ws| * sum |x| + |bias|) of the exact ws * sum ±x + bias in
// double; every row range of a split run gives the whole run's outputs bit for bit (rows are
// independent); extremes (inf, NaN, sums past FLT_MAX) give inf and NaN exactly where the
// reference does.
void fc_binary_case(const FCKernels& k, Rng& rng, Tally& t, std::size_t ci, std::size_t co, bool ge,
                    double ones, int extremes) {
  std::vector<float> x = randn(rng, ci), bias = randn(rng, co);
  std::vector<float> ws = randn(rng, co, 0.01f);
  for (float& v : ws) v = std::fabs(v) + 1e-4f;
  if (extremes == 1) {  // specials in x, bias and weight scales
    sprinkle(rng, x, 0.05);
    sprinkle(rng, bias, 0.3);
    sprinkle(rng, ws, 0.2, /*finite_only=*/true);
  } else if (extremes == 2) {  // sums of ±1e38 that pass FLT_MAX in one order and not another
    for (float& v : x)
      v = (coin(rng) ? -1.0f : 1.0f) * 1e38f *
          (1.0f + static_cast<float>(uniform(rng, 0, 99)) / 100.0f);
    for (float& v : ws) v = 1.0f;
  }
  const std::vector<BitWord> signs = random_bits(rng, co, ci, ones);
  const std::size_t words = words_for_channels(ci);
  Buf<float> xg = guarded(x, ge), bg = guarded(bias, !ge), wsg = guarded(ws, ge);
  Buf<BitWord> sg = guarded(signs, !ge);
  Buf<float> out(co, ge);
  k.binary(ci, co, xg.data(), sg.data(), wsg.data(), bg.data(), out.data());
  std::vector<double> exact(co), mag(co);
  for (std::size_t o = 0; o < co; ++o) {
    double e = 0, m = 0;
    for (std::size_t j = 0; j < ci; ++j) {
      const bool minus = ((signs[o * words + j / kBitsPerWord] >> (j % kBitsPerWord)) & 1u) != 0;
      e += minus ? -static_cast<double>(x[j]) : static_cast<double>(x[j]);
      m += std::fabs(static_cast<double>(x[j]));
    }
    exact[o] = static_cast<double>(ws[o]) * e + bias[o];
    mag[o] = std::fabs(static_cast<double>(ws[o])) * m + std::fabs(static_cast<double>(bias[o]));
  }
  if (extremes == 0) {
    within(t, "binary", out.data(), exact, mag);
  } else {
    std::vector<float> want(co);
    fc_binary__reference(ci, co, x.data(), signs.data(), ws.data(), bias.data(), want.data());
    same_nonfinite_within(t, "binary, extremes", out.data(), want.data(), mag);
  }
  // A row range [b, e) with offset rows, scales, biases and outputs: the whole run's bits.
  const std::size_t b = uniform(rng, 0, co), e = uniform(rng, b, co);
  if (e > b) {
    Buf<float> part(e - b, !ge);
    k.binary(ci, e - b, xg.data(), sg.data() + b * words, wsg.data() + b, bg.data() + b,
             part.data());
    same_floats(t, "binary, row range", part.data(), out.data() + b, e - b);
  }
  ++t.cases;
}

void test_fc_binary(const FCKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kIn[] = {1,  3,  4,   7,   8,   15,  16,  17,  31,   32,   63,
                             64, 65, 100, 128, 129, 256, 257, 512, 1000, 1024, 2048};
  const std::size_t kOut[] = {1, 2, 3, 4, 5, 7, 9, 16, 17, 32};
  std::size_t i = 0;
  // The SE layers of the zoo (squeeze C -> C/8 and excite C/8 -> C, C from 32 to 2048).
  for (std::size_t c = 32; c <= 2048; c *= 2) {
    t.context = fmt("SE squeeze/excite C=%zu", c);
    fc_binary_case(k, rng, t, c, c / 8, i++ % 2 == 0, 0.5, 0);
    fc_binary_case(k, rng, t, c / 8, c, i++ % 2 == 0, 0.5, 0);
  }
  // All weights +1 and all -1 (every lane on one side), then random shapes and densities.
  for (std::size_t ci : {1, 8, 63, 64, 65, 200}) {
    for (double ones : {0.0, 1.0}) {
      t.context = fmt("in=%zu out=5 ones=%.0f", ci, ones);
      fc_binary_case(k, rng, t, ci, 5, i++ % 2 == 0, ones, 0);
    }
  }
  for (std::size_t n = 0; n < n_cases; ++n) {
    const std::size_t ci = pick(rng, kIn), co = pick(rng, kOut);
    const int extremes = n % 5 == 3 ? 1 : n % 5 == 4 ? 2 : 0;
    t.context = fmt("case %zu in=%zu out=%zu extremes=%d", n, ci, co, extremes);
    fc_binary_case(k, rng, t, ci, co, i++ % 2 == 0, coin(rng, 0.8) ? 0.5 : 0.9, extremes);
  }
}

// The binary FC mode is a member of FCKernels: its family lists the FC variants.
const FCKernels* const* fc_binary_kernel_variants(std::size_t* count) {
  return fc_kernel_variants(count);
}
const FCKernels* const* fc_binary_compiled_kernel_variants(std::size_t* count) {
  return fc_compiled_kernel_variants(count);
}

// ---- dilated depthwise (DeepLab's atrous convs) ----------------------------------------------

// The f32 depthwise conv with dilation > 1 (stride 1): rates from 2 to 36 and past the image
// (every tap but the centre in the padding), widths around 2 * dilation (the kernel's interior
// / border split), channel tails, multipliers, pre_bias; every third case puts infinite weights
// on the outer taps, which the border pixels must skip.
void test_dwconv_dilated(const DWConvKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  // 515 and 1024: wide enough for the chunked scratch path (with and without a channel tail).
  const std::size_t kC[] = {1, 3, 4, 5, 8, 9, 16, 17, 24, 33, 64, 515, 1024};
  const std::size_t kRate[] = {2, 3, 4, 5, 6, 12, 18, 24, 36};
  for (std::size_t i = 0; i < n_cases; ++i) {
    DWConvShape s{};
    s.dilation = pick(rng, kRate);
    const std::size_t around = 2 * s.dilation;
    const auto side = [&] {
      switch (uniform(rng, 0, 3)) {
        case 0:
          return uniform(rng, 1, 6);
        case 1:  // around the interior / border split
          return around > 2 ? uniform(rng, around - 2, around + 2) : uniform(rng, 1, 6);
        case 2:
          return uniform(rng, 1, s.dilation + 1);
        default:
          return uniform(rng, 1, 48);
      }
    };
    s.in_height = side();
    s.in_width = side();
    s.channels = pick(rng, kC);
    s.multiplier = uniform(rng, 1, 3);
    s.stride_h = s.stride_w = 1;
    s.out_height = s.in_height;
    s.out_width = s.in_width;
    const bool pre = coin(rng), ge = coin(rng), signs = i % 3 == 2;
    t.context = fmt("case %zu H=%zu W=%zu C=%zu mult=%zu dilation=%zu pre_bias=%d signs=%d", i,
                    s.in_height, s.in_width, s.channels, s.multiplier, s.dilation, pre, signs);
    const std::size_t pixels = s.in_height * s.in_width, oc = s.multiplier * s.channels;
    const std::size_t n_out = pixels * oc;
    std::vector<float> in = randn(rng, pixels * s.channels, 3.0f);
    if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
    std::vector<float> pre_bias = randn(rng, s.channels);
    std::vector<float> w = randn(rng, oc * 9);
    std::vector<float> scale = randn(rng, oc), bias = randn(rng, oc);
    if (signs) {
      const float inf = std::numeric_limits<float>::infinity();
      for (std::size_t o = 0; o < oc; ++o) {
        w[o * 9 + (o % 2 == 0 ? 0 : 8)] = o % 4 < 2 ? inf : -inf;
        w[o * 9 + (o % 2 == 0 ? 5 : 3)] = -inf;
      }
    }
    const float* pb_ref = pre ? pre_bias.data() : nullptr;
    std::vector<float> want(n_out);
    dwconv3x3_f32_nhwc__reference(s, in.data(), pb_ref, w.data(), scale.data(), bias.data(),
                                  want.data());
    Buf<float> ing = guarded(in, ge), pbg = guarded(pre_bias, !ge);
    Buf<float> sg = guarded(scale, ge), bg = guarded(bias, !ge);
    Aligned pf(k.packed_f32_bytes(s));
    {
      Buf<float> wg = guarded(w, ge);
      k.pack_f32(s, wg.data(), pf.data());
    }
    Buf<float> out(n_out, ge);
    for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
    for (const auto& r : row_splits(rng, s.out_height)) {
      k.run_rows_f32(s, ing.data(), pre ? pbg.data() : nullptr, pf.data(), sg.data(), bg.data(),
                     r.first, r.second, out.data());
    }
    same_floats(t, "f32 dilated", out.data(), want.data(), n_out);
    ++t.cases;
  }
}

// The dilated path is a member of DWConvKernels: its family lists the depthwise variants.
const DWConvKernels* const* dwconv_dilated_kernel_variants(std::size_t* count) {
  return dwconv_kernel_variants(count);
}
const DWConvKernels* const* dwconv_dilated_compiled_kernel_variants(std::size_t* count) {
  return dwconv_compiled_kernel_variants(count);
}

// ---- resize -----------------------------------------------------------------------------------

// RESIZE against its reference, bit for bit: nearest and bilinear, both coordinate modes, the
// ratios the converter writes (n / m, (n - 1) / (m - 1), 1 / scale) and odd ones (0, > n),
// 1 x 1 inputs (the broadcast), channel tails, special values in the input.
void test_resize(const ResizeKernels& k, Rng& rng, Tally& t, std::size_t n_cases) {
  const std::size_t kC[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 21, 33, 48, 64, 256};
  const float kScale[] = {2.0f, 4.0f, 0.5f, 1.5f, 3.0f, 8.0f, 0.25f};
  for (std::size_t i = 0; i < n_cases; ++i) {
    ResizeShape s{};
    const bool broadcast = i % 5 == 0;
    s.in_height = broadcast ? 1 : uniform(rng, 1, 17);
    s.in_width = broadcast ? 1 : uniform(rng, 1, 17);
    s.out_height = uniform(rng, 1, 40);
    s.out_width = uniform(rng, 1, 40);
    s.channels = pick(rng, kC);
    s.bilinear = coin(rng, 0.7);
    s.half_pixel = coin(rng);
    const auto ratio = [&](std::size_t n, std::size_t m) {
      switch (uniform(rng, 0, 5)) {
        case 0:
        case 1:
          return static_cast<float>(n) / static_cast<float>(m);
        case 2:
          return m > 1 ? static_cast<float>(n - 1) / static_cast<float>(m - 1) : 0.0f;
        case 3:
          return static_cast<float>(1.0 / static_cast<double>(pick(rng, kScale)));
        case 4:
          return 0.0f;
        default:
          return std::uniform_real_distribution<float>(0.0f, 3.0f)(rng);
      }
    };
    s.ratio_h = ratio(s.in_height, s.out_height);
    s.ratio_w = ratio(s.in_width, s.out_width);
    const bool ge = coin(rng);
    t.context =
        fmt("case %zu in=%zux%zu out=%zux%zu C=%zu bilinear=%d half_pixel=%d ratio=(%.9g, "
            "%.9g)",
            i, s.in_height, s.in_width, s.out_height, s.out_width, s.channels, s.bilinear,
            s.half_pixel, static_cast<double>(s.ratio_h), static_cast<double>(s.ratio_w));
    std::vector<float> in = randn(rng, s.in_height * s.in_width * s.channels, 3.0f);
    if (coin(rng, 0.3)) sprinkle(rng, in, 0.05);
    const std::size_t n_out = s.out_height * s.out_width * s.channels;
    std::vector<float> want(n_out);
    resize_rows__reference(s, in.data(), 0, s.out_height, want.data());
    Buf<float> ing = guarded(in, ge);
    Buf<float> out(n_out, !ge);
    for (std::size_t j = 0; j < n_out; ++j) out[j] = kSentinel;
    for (const auto& r : row_splits(rng, s.out_height)) {
      k.run_rows(s, ing.data(), r.first, r.second, out.data());
    }
    same_floats(t, "resize", out.data(), want.data(), n_out);
    if (broadcast) {  // a 1 x 1 input is copied to every output pixel, bit for bit
      for (std::size_t j = 0; j < n_out; ++j) {
        const float v = in[j % s.channels];
        if (!(bits_of(want[j]) == bits_of(v) || (std::isnan(v) && std::isnan(want[j])))) {
          t.fail(fmt("broadcast: value %zu is %.9g, the input's %.9g", j,
                     static_cast<double>(want[j]), static_cast<double>(v)));
          break;
        }
      }
    }
    ++t.cases;
  }
}

// ---- driver -------------------------------------------------------------------------------

std::uint64_t mix(std::uint64_t seed, const std::string& a, const std::string& b) {
  // FNV-1a over the names, folded into the seed: each family/variant has its own stream.
  std::uint64_t h = 1469598103934665603ull ^ seed;
  for (const std::string* s : {&a, &b}) {
    for (unsigned char ch : *s) {
      h ^= ch;
      h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
  }
  return h;
}

template <class K>
std::vector<std::string> variant_names(const K* const* (*list)(std::size_t*)) {
  std::size_t n = 0;
  const K* const* v = list(&n);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n; ++i) names.emplace_back(v[i]->isa);
  return names;
}

// Runs `test` on the runnable variant called `variant`; false if there is none.
template <class K, class Test>
bool run_variant(const K* const* (*list)(std::size_t*), Test test, const std::string& variant,
                 Rng& rng, Tally& t, std::size_t n_cases) {
  std::size_t n = 0;
  const K* const* v = list(&n);
  for (std::size_t i = 0; i < n; ++i) {
    if (variant == v[i]->isa) {
      test(*v[i], rng, t, n_cases);
      return true;
    }
  }
  return false;
}

// One row per family: its name, its random cases at scale 1, and its variant lists and test.
struct Family {
  const char* name;
  std::size_t random_cases;
  std::vector<std::string> (*runnable)();
  std::vector<std::string> (*compiled)();
  bool (*run)(const std::string& variant, Rng& rng, Tally& t, std::size_t n_cases);
};

#define QBINFER_KERNEL_FAMILY(name, cases, Kernels, test_fn)                                 \
  Family {                                                                                   \
    #name, cases, [] { return variant_names<Kernels>(&name##_kernel_variants); },            \
        [] { return variant_names<Kernels>(&name##_compiled_kernel_variants); },             \
        [](const std::string& variant, Rng& rng, Tally& t, std::size_t n) {                  \
          return run_variant<Kernels>(&name##_kernel_variants, test_fn, variant, rng, t, n); \
        }                                                                                    \
  }

const std::vector<Family>& family_table() {
  static const std::vector<Family> table = {
      QBINFER_KERNEL_FAMILY(bitpack, 1000, BitpackKernels, test_bitpack),
      QBINFER_KERNEL_FAMILY(bconv, 2000, BConvKernels, test_bconv),
      QBINFER_KERNEL_FAMILY(dwconv, 800, DWConvKernels, test_dwconv),
      QBINFER_KERNEL_FAMILY(conv2d, 500, Conv2DKernels, test_conv2d),
      QBINFER_KERNEL_FAMILY(pool, 400, PoolKernels, test_pool),
      QBINFER_KERNEL_FAMILY(concat, 400, ConcatKernels, test_concat),
      QBINFER_KERNEL_FAMILY(elementwise, 400, ElementwiseKernels, test_elementwise),
      QBINFER_KERNEL_FAMILY(epilogue, 1024, EpilogueKernels, test_epilogue),
      QBINFER_KERNEL_FAMILY(fc, 400, FCKernels, test_fc),
      QBINFER_KERNEL_FAMILY(bfc, 300, BFCKernels, test_bfc),
      QBINFER_KERNEL_FAMILY(bconv_general, 600, BConvGeneralKernels, test_bconv_general),
      QBINFER_KERNEL_FAMILY(fc_binary, 400, FCKernels, test_fc_binary),
      QBINFER_KERNEL_FAMILY(dwconv_dilated, 300, DWConvKernels, test_dwconv_dilated),
      QBINFER_KERNEL_FAMILY(resize, 400, ResizeKernels, test_resize),
  };
  return table;
}
#undef QBINFER_KERNEL_FAMILY

const Family& find_family(const std::string& name) {
  std::string known;
  for (const Family& f : family_table()) {
    if (name == f.name) return f;
    known += (known.empty() ? "" : ", ") + std::string(f.name);
  }
  throw std::invalid_argument("unknown kernel family '" + name + "'; families: " + known);
}

}  // namespace

namespace kernel_tests {

const std::vector<std::string>& families() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Family& f : family_table()) v.emplace_back(f.name);
    return v;
  }();
  return names;
}

std::vector<std::string> runnable_variants(const std::string& family) {
  return find_family(family).runnable();
}

std::vector<std::string> compiled_variants(const std::string& family) {
  return find_family(family).compiled();
}

Report run(const std::string& family, const std::string& variant, std::uint64_t seed,
           double scale) {
  const Family& f = find_family(family);
  const std::size_t n_cases = std::max<std::size_t>(
      1, static_cast<std::size_t>(static_cast<double>(f.random_cases) * scale));
  Report r;
  r.family = family;
  r.variant = variant;
  r.seed = seed;
  Rng rng(mix(seed, family, variant));
  Tally t;
  const auto t0 = std::chrono::steady_clock::now();
  if (!f.run(variant, rng, t, n_cases)) {
    std::string runnable;
    for (const std::string& v : f.runnable()) runnable += (runnable.empty() ? "" : ", ") + v;
    throw std::invalid_argument("kernel family '" + family + "' has no variant '" + variant +
                                "' that this build and CPU run; runnable: " + runnable);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cases = t.cases;
  r.failures = t.failures;
  r.messages = std::move(t.messages);
  return r;
}

}  // namespace kernel_tests
}  // namespace qbinfer
