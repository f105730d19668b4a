#include "python/peak.h"

#include <bitset>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <algorithm>

#include "qbinfer/isa.h"

namespace qbinfer {
namespace peak_detail {
namespace {
// As the reference kernels count (built for the baseline CPU).
inline std::uint64_t popcount64(std::uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
  return static_cast<std::uint64_t>(__builtin_popcountll(x));
#else
  return std::bitset<64>(x).count();
#endif
}
alignas(64) std::uint64_t g_words[512];  // 4 KiB: stays in L1
volatile std::uint64_t g_sink;
volatile float g_fsink;
}  // namespace

double popcount_scalar(std::size_t iterations) {
  for (std::size_t i = 0; i < 512; ++i) g_words[i] = 0x9E3779B97F4A7C15ull * (i + 1);
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const std::uint64_t w = 0x5555AAAA3333CCCCull;
  for (std::size_t it = 0; it < iterations; ++it) {
    for (std::size_t i = 0; i < 512; i += 4) {
      a0 += (popcount64(g_words[i] ^ w));
      a1 += (popcount64(g_words[i + 1] ^ w));
      a2 += (popcount64(g_words[i + 2] ^ w));
      a3 += (popcount64(g_words[i + 3] ^ w));
    }
  }
  g_sink = a0 + a1 + a2 + a3;
  return static_cast<double>(iterations) * 512.0 * 64.0;
}

double fma_scalar(std::size_t iterations) {
  float acc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const float m = 0.999999f, a = 1e-7f;
  for (std::size_t it = 0; it < iterations * 64; ++it) {
    for (float& v : acc) v = v * m + a;
  }
  float s = 0;
  for (float v : acc) s += v;
  g_fsink = s;
  return static_cast<double>(iterations) * 64.0 * 8.0;
}

double read_scalar(const void* buf, std::size_t bytes, std::size_t iterations) {
  const auto* p = static_cast<const std::uint64_t*>(buf);
  const std::size_t words = bytes / 8;
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (std::size_t it = 0; it < iterations; ++it) {
    for (std::size_t i = 0; i < words; i += 4) {
      a0 += p[i];
      a1 += p[i + 1];
      a2 += p[i + 2];
      a3 += p[i + 3];
    }
  }
  g_sink = a0 + a1 + a2 + a3;
  return static_cast<double>(iterations) * static_cast<double>(words) * 8.0;
}

}  // namespace peak_detail

namespace {

bool supported(const char* name) {
  for (Isa isa : supported_isas()) {
    if (std::strcmp(isa_name(isa), name) == 0) return true;
  }
  return false;
}

template <class Fn>
double rate(Fn fn, double seconds) {
  using Clock = std::chrono::steady_clock;
  fn(16);  // warm up: page in, raise the clock
  std::size_t iterations = 64;
  double best = 0.0;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    const auto t0 = Clock::now();
    const double ops = fn(iterations);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (dt < 1e-3) {
      iterations *= 2;
      continue;
    }
    if (ops / dt > best) best = ops / dt;
  }
  return best;
}

}  // namespace

double peak_binary_macs_per_s(const char* isa, double seconds) {
  using namespace peak_detail;
  if (std::strcmp(isa, "scalar") == 0) return rate(&popcount_scalar, seconds);
#if defined(QBINFER_BENCH_X86_64)
  if (std::strcmp(isa, "avx2") == 0 && supported("avx2")) return rate(&popcount_avx2, seconds);
  if (std::strcmp(isa, "avx512") == 0 && supported("avx512")) {
    return rate(&popcount_avx512, seconds);
  }
  if (std::strcmp(isa, "avx512_vpopcnt") == 0 && supported("avx512") &&
      cpu_has_avx512_vpopcntdq()) {
    return rate(&popcount_avx512_vpopcnt, seconds);
  }
#endif
  return 0.0;
}

double peak_read_bytes_per_s(const char* isa, std::size_t bytes, double seconds) {
  using namespace peak_detail;
  bytes = std::max<std::size_t>(256, (bytes + 255) / 256 * 256);
  double (*loop)(const void*, std::size_t, std::size_t) = nullptr;
  if (std::strcmp(isa, "scalar") == 0) loop = &read_scalar;
#if defined(QBINFER_BENCH_X86_64)
  if ((std::strcmp(isa, "avx2") == 0 && supported("avx2")) ||
      (std::strncmp(isa, "avx512", 6) == 0 && supported("avx512"))) {
    loop = &read_avx2;
  }
#endif
  if (loop == nullptr) return 0.0;
  // Filled (so every page is mapped and holds data) before the clock starts.
  std::unique_ptr<std::uint64_t[], void (*)(std::uint64_t*)> buf(
      static_cast<std::uint64_t*>(::operator new[](bytes, std::align_val_t{64})),
      [](std::uint64_t* q) { ::operator delete[](q, std::align_val_t{64}); });
  for (std::size_t i = 0; i < bytes / 8; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  // rate() starts at 64 "iterations" and doubles them until a call lasts a millisecond: here
  // 64 of them make one pass, so even a buffer far larger than the caches starts at one pass.
  return rate(
      [&](std::size_t iterations) {
        return loop(buf.get(), bytes, std::max<std::size_t>(1, iterations / 64));
      },
      seconds);
}

double peak_float_macs_per_s(const char* isa, double seconds) {
  using namespace peak_detail;
  if (std::strcmp(isa, "scalar") == 0) return rate(&fma_scalar, seconds);
#if defined(QBINFER_BENCH_X86_64)
  if (std::strcmp(isa, "avx2") == 0 && supported("avx2")) return rate(&fma_avx2, seconds);
  if (std::strncmp(isa, "avx512", 6) == 0 && supported("avx512")) {
    return rate(&fma_avx512, seconds);
  }
#endif
  return 0.0;
}

}  // namespace qbinfer
