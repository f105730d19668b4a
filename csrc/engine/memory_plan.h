// Static memory planning: every value of one image gets an offset in a single arena, chosen
// once at load from the values' lifetimes, so that running an image allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qbinfer {

inline constexpr std::size_t kArenaAlignment = 64;

// A value is live over the op steps [first, last], inclusive. Step -1 is "before op 0"
// (the graph input is written there). Two values may share bytes only if their lifetimes
// are disjoint, so an op's output never shares memory with any of its inputs (both are
// live at that op's step).
// Step indices fit 32 bits (a file has at most kMaxTableEntries ops, qbw_file.h).
struct Lifetime {
  std::int32_t first;
  std::int32_t last;
};

struct MemoryPlan {
  std::vector<std::uint64_t> offsets;  // per value, multiples of kArenaAlignment
  std::uint64_t arena_bytes = 0;       // a multiple of kArenaAlignment
};

// Greedy by size (largest first, each at the lowest offset free over its lifetime) for
// graphs of up to a few thousand values, where it is cheap; a linear first-fit sweep in
// execution order otherwise. Both are computed where affordable and the smaller arena wins.
MemoryPlan plan_memory(const std::vector<std::uint64_t>& sizes,
                       const std::vector<Lifetime>& lifetimes);

// Whether a plan is valid: aligned, inside the arena, no two overlapping lifetimes share
// bytes. Used by the tests through the debug check in the engine.
bool plan_is_valid(const MemoryPlan& plan, const std::vector<std::uint64_t>& sizes,
                   const std::vector<Lifetime>& lifetimes);

}  // namespace qbinfer
