// The selection rule every kernel family's selector (<family>_kernels.cc) shares, written once.
//
// A family lists its variants in one table, scalar first, each with the ISA it belongs to and,
// for a variant that needs more than its ISA (AVX-512 VPOPCNTDQ, NEON dotprod), a CPU feature
// test. Then:
//   best_variant(table, isa)      the last runnable entry of `isa` (the table lists an ISA's
//                                 plain variant before its faster sub-variants), or nullptr
//                                 when the CPU or build lacks `isa`;
//   runnable_variants(table, n)   every runnable entry in table order: what tests and
//                                 benchmarks iterate over, so no compiled variant goes untested;
//   compiled_variants(table, n)   every entry, runnable or not: for naming what a test skips.
// Built for the baseline CPU: only ISAs are compared and pointers returned; a variant's code
// runs only after its entry has been found runnable.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "qbinfer/isa.h"

namespace qbinfer {

template <class Kernels>
struct IsaVariant {
  Isa isa;
  const Kernels* kernels;
  bool (*cpu_has_extra)() = nullptr;  // nullptr: the ISA itself is enough
};

inline bool isa_supported(Isa isa) {
  const auto& isas = supported_isas();
  return std::find(isas.begin(), isas.end(), isa) != isas.end();
}

template <class Kernels>
bool variant_runnable(const IsaVariant<Kernels>& v) {
  return isa_supported(v.isa) && (v.cpu_has_extra == nullptr || v.cpu_has_extra());
}

template <class Kernels, std::size_t N>
const Kernels* best_variant(const IsaVariant<Kernels> (&table)[N], Isa isa) {
  const Kernels* best = nullptr;
  for (const auto& v : table) {
    if (v.isa == isa && variant_runnable(v)) best = v.kernels;
  }
  return best;
}

// The list is computed once per family (one instantiation per Kernels type) and kept.
template <class Kernels, std::size_t N>
const Kernels* const* runnable_variants(const IsaVariant<Kernels> (&table)[N], std::size_t* count) {
  static const std::vector<const Kernels*> runnable = [&table] {
    std::vector<const Kernels*> v;
    for (const auto& entry : table) {
      if (variant_runnable(entry)) v.push_back(entry.kernels);
    }
    return v;
  }();
  *count = runnable.size();
  return runnable.data();
}

// Only the entries' names may be read for a variant that is not runnable here.
template <class Kernels, std::size_t N>
const Kernels* const* compiled_variants(const IsaVariant<Kernels> (&table)[N], std::size_t* count) {
  static const std::vector<const Kernels*> compiled = [&table] {
    std::vector<const Kernels*> v;
    for (const auto& entry : table) v.push_back(entry.kernels);
    return v;
  }();
  *count = compiled.size();
  return compiled.data();
}

}  // namespace qbinfer
