// Run-time ISA detection (isa.h). Built for the baseline CPU: no intrinsics that need -m
// flags, only CPUID/XGETBV through the compiler's <cpuid.h> (or <intrin.h> on MSVC), and on
// Linux/AArch64 and Linux/ARMv7 the kernel's HWCAP bits (getauxval).
//
// An ISA counts as supported only when the CPU has the instructions AND the OS saves the
// registers they use (XGETBV's XCR0): a kernel that the CPU decodes but the OS does not
// context-switch would corrupt state silently, which is why CPUID alone is not enough.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "qbinfer/isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#define QBINFER_X86_64 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__linux__)
#define QBINFER_AARCH64_LINUX 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)  // <asm/hwcap.h>; older glibc headers lack the name
#endif
#endif

// 32-bit ARM Linux with the NEON kernels compiled (CMakeLists.txt: -mfpu=neon-vfpv4 on the
// *_neon.cc files only): they run when HWCAP has NEON and VFPv4 (fused multiply-add).
#if defined(__arm__) && !defined(__aarch64__) && defined(__linux__) && \
    defined(QBINFER_ARMV7_NEON_KERNELS)
#define QBINFER_ARMV7_LINUX_NEON 1
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1UL << 12)  // <asm/hwcap.h> (arch/arm)
#endif
#ifndef HWCAP_VFPv4
#define HWCAP_VFPv4 (1UL << 16)
#endif
#endif

namespace qbinfer {
namespace {

struct CpuFeatures {
  bool avx2 = false;              // AVX2 + FMA + POPCNT + BMI2, YMM state enabled
  bool avx512 = false;            // AVX-512 F/BW/DQ/VL, opmask + ZMM state enabled
  bool avx512_vpopcntdq = false;  // and VPOPCNTDQ
  bool neon_dotprod = false;      // AArch64 SDOT/UDOT (HWCAP_ASIMDDP)
  bool armv7_neon = false;        // 32-bit ARM: NEON + VFPv4 (HWCAP_NEON, HWCAP_VFPv4)
};

#if defined(QBINFER_X86_64)

struct Regs {
  std::uint32_t eax, ebx, ecx, edx;
};

Regs cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
#if defined(_MSC_VER) && !defined(__clang__)
  int r[4];
  __cpuidex(r, static_cast<int>(leaf), static_cast<int>(subleaf));
  return {static_cast<std::uint32_t>(r[0]), static_cast<std::uint32_t>(r[1]),
          static_cast<std::uint32_t>(r[2]), static_cast<std::uint32_t>(r[3])};
#else
  Regs r{};
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
#endif
}

// XCR0, read only after CPUID says OSXSAVE (else XGETBV itself faults). Inline asm rather
// than _xgetbv, which GCC only offers under -mxsave.
std::uint64_t xgetbv0() {
#if defined(_MSC_VER) && !defined(__clang__)
  return _xgetbv(0);
#else
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
#endif
}

bool bit(std::uint32_t reg, int n) { return ((reg >> n) & 1u) != 0; }

CpuFeatures detect() {
  CpuFeatures f;
  const std::uint32_t max_leaf = cpuid(0, 0).eax;
  if (max_leaf < 7) return f;
  const Regs l1 = cpuid(1, 0);
  const Regs l7 = cpuid(7, 0);
  const bool osxsave = bit(l1.ecx, 27);
  if (!osxsave) return f;
  const std::uint64_t xcr0 = xgetbv0();
  // XCR0 bit 1 SSE, bit 2 AVX (upper YMM); bits 5-7 opmask, ZMM0-15 upper, ZMM16-31.
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = ymm_state && (xcr0 & 0xE0) == 0xE0;

  const bool fma = bit(l1.ecx, 12);
  const bool popcnt = bit(l1.ecx, 23);
  const bool avx = bit(l1.ecx, 28);
  const bool avx2 = bit(l7.ebx, 5);
  const bool bmi2 = bit(l7.ebx, 8);
  const bool avx512f = bit(l7.ebx, 16);
  const bool avx512dq = bit(l7.ebx, 17);
  const bool avx512bw = bit(l7.ebx, 30);
  const bool avx512vl = bit(l7.ebx, 31);
  const bool vpopcntdq = bit(l7.ecx, 14);

  f.avx2 = ymm_state && avx && avx2 && fma && popcnt && bmi2;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vpopcntdq = f.avx512 && vpopcntdq;
  return f;
}

#elif defined(QBINFER_AARCH64_LINUX)

// Advanced SIMD itself is mandatory on AArch64; only its extensions are asked of HWCAP, which
// the kernel sets only for what it also context-switches.
CpuFeatures detect() {
  CpuFeatures f;
  f.neon_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return f;
}

#elif defined(QBINFER_ARMV7_LINUX_NEON)

// NEON is optional on ARMv7-A (e.g. Tegra 2 has none); the kernels also use VFPv4's VFMA.
CpuFeatures detect() {
  CpuFeatures f;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.armv7_neon = (hwcap & HWCAP_NEON) != 0 && (hwcap & HWCAP_VFPv4) != 0;
  return f;
}

#else

CpuFeatures detect() { return {}; }

#endif

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<Isa> detect_supported() {
  std::vector<Isa> isas{Isa::kScalar};
#if defined(QBINFER_X86_64)
  if (features().avx2) isas.push_back(Isa::kAvx2);
  if (features().avx512) isas.push_back(Isa::kAvx512);
#elif defined(__aarch64__) || defined(_M_ARM64)
  // Advanced SIMD is mandatory on AArch64; its optional extensions (dotprod) are variants
  // within kNeon, read from HWCAP in detect().
  isas.push_back(Isa::kNeon);
#elif defined(QBINFER_ARMV7_LINUX_NEON)
  if (features().armv7_neon) isas.push_back(Isa::kNeon);
#endif
  return isas;
}

std::string supported_list() {
  std::string s;
  for (Isa isa : supported_isas()) {
    if (!s.empty()) s += ", ";
    s += isa_name(isa);
  }
  return s;
}

// Why `name` is not a usable ISA here: " is not an ISA name (...)" or " is not supported ...",
// then the supported list. Shared by isa_from_name and the QBINFER_ISA check.
std::string unusable_isa_reason(const std::string& name) {
  const bool known = name == "scalar" || name == "avx2" || name == "avx512" || name == "neon";
  return (known ? std::string(" is not supported by this CPU or build")
                : std::string(" is not an ISA name (ISA names: scalar, avx2, avx512, neon)")) +
         "; supported: " + supported_list();
}

Isa resolve_active() {
  const char* env = std::getenv("QBINFER_ISA");
  if (env == nullptr || *env == '\0') return supported_isas().back();
  const std::string want(env);
  for (Isa isa : supported_isas()) {
    if (want == isa_name(isa)) return isa;
  }
  throw std::runtime_error("QBINFER_ISA=" + want + unusable_isa_reason(want));
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kNeon:
      return "neon";
  }
  return "unknown";
}

Isa isa_from_name(const std::string& name) {
  for (Isa isa : supported_isas()) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("isa '" + name + "'" + unusable_isa_reason(name));
}

const std::vector<Isa>& supported_isas() {
  static const std::vector<Isa> isas = detect_supported();
  return isas;
}

bool cpu_has_avx512_vpopcntdq() { return features().avx512_vpopcntdq; }

bool cpu_has_neon_dotprod() {
  static const bool on = [] {
    const char* env = std::getenv("QBINFER_NEON_DOTPROD");
    return features().neon_dotprod && !(env != nullptr && std::string(env) == "0");
  }();
  return on;
}

Isa active_isa() {
  // A throwing initializer leaves the static uninitialised, so a bad QBINFER_ISA raises on
  // every call, never once and then silently picks something else.
  static const Isa isa = resolve_active();
  return isa;
}

}  // namespace qbinfer
