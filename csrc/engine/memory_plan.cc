#include "engine/memory_plan.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <utility>

namespace qbinfer {
namespace {

std::uint64_t align_up(std::uint64_t n) {
  return (n + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

bool overlaps(const Lifetime& a, const Lifetime& b) {
  return a.first <= b.last && b.first <= a.last;
}

// Above this many values the quadratic greedy planner is skipped.
constexpr std::size_t kGreedyLimit = 4096;

MemoryPlan plan_greedy_by_size(const std::vector<std::uint64_t>& sizes,
                               const std::vector<Lifetime>& lifetimes) {
  const std::size_t n = sizes.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return sizes[a] > sizes[b]; });
  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  std::vector<std::size_t> placed;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> busy;  // [begin, end) of conflicts
  for (const std::size_t v : order) {
    const std::uint64_t size = align_up(sizes[v]);
    busy.clear();
    for (const std::size_t u : placed) {
      if (overlaps(lifetimes[u], lifetimes[v])) {
        busy.emplace_back(plan.offsets[u], plan.offsets[u] + align_up(sizes[u]));
      }
    }
    std::sort(busy.begin(), busy.end());
    std::uint64_t offset = 0;
    for (const auto& [begin, end] : busy) {
      if (begin >= offset + size) break;  // the gap before this block fits
      offset = std::max(offset, end);
    }
    plan.offsets[v] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
    placed.push_back(v);
  }
  return plan;
}

// The free intervals of the arena below its end, coalesced, indexed by offset and by size.
// A request takes the lowest-offset interval that fits among the first kScan intervals by
// offset (first fit: all of them in ordinary graphs, whose free lists are short), else the
// smallest interval that fits (best fit, O(log n)). Scanning the whole list instead made the
// sweep quadratic on a crafted file whose values fragment the arena into many intervals.
class FreeIntervals {
 public:
  static constexpr std::size_t kScan = 64;

  void release(std::uint64_t off, std::uint64_t size) {
    auto next = by_offset_.lower_bound(off);
    if (next != by_offset_.end() && off + size == next->first) {
      size += next->second;
      by_size_.erase({next->second, next->first});
      next = by_offset_.erase(next);
    }
    if (next != by_offset_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        by_size_.erase({prev->second, prev->first});
        off = prev->first;
        size += prev->second;
        by_offset_.erase(prev);
      }
    }
    insert(off, size);
  }

  // The offset of `size` bytes taken from a free interval, or `kNone` when none fits.
  static constexpr std::uint64_t kNone = ~std::uint64_t{0};
  std::uint64_t take(std::uint64_t size) {
    auto it = by_offset_.begin();
    for (std::size_t k = 0; k < kScan && it != by_offset_.end(); ++k, ++it) {
      if (it->second >= size) return take_from(it->first, it->second, size);
    }
    if (it == by_offset_.end()) return kNone;  // all scanned, none fits
    const auto best = by_size_.lower_bound({size, 0});
    if (best == by_size_.end()) return kNone;
    return take_from(best->second, best->first, size);
  }

 private:
  void insert(std::uint64_t off, std::uint64_t size) {
    by_offset_.emplace(off, size);
    by_size_.emplace(size, off);
  }
  std::uint64_t take_from(std::uint64_t off, std::uint64_t have, std::uint64_t size) {
    by_offset_.erase(off);
    by_size_.erase({have, off});
    if (have > size) insert(off + size, have - size);
    return off;
  }

  std::map<std::uint64_t, std::uint64_t> by_offset_;           // offset -> size
  std::set<std::pair<std::uint64_t, std::uint64_t>> by_size_;  // (size, offset)
};

// Walks the steps in order: frees the values whose lifetime ended, then places the values
// born at this step in a free interval that fits (FreeIntervals), or at the end of the arena.
MemoryPlan plan_sweep(const std::vector<std::uint64_t>& sizes,
                      const std::vector<Lifetime>& lifetimes) {
  const std::size_t n = sizes.size();
  // Value indices fit 32 bits (at most kMaxTableEntries values): half the bytes of size_t on
  // a file of hundreds of thousands of values.
  std::vector<std::uint32_t> by_birth(n);
  std::vector<std::uint32_t> by_death(n);
  std::iota(by_birth.begin(), by_birth.end(), std::uint32_t{0});
  std::iota(by_death.begin(), by_death.end(), std::uint32_t{0});
  std::stable_sort(by_birth.begin(), by_birth.end(), [&](std::uint32_t a, std::uint32_t b) {
    return lifetimes[a].first < lifetimes[b].first;
  });
  std::stable_sort(by_death.begin(), by_death.end(), [&](std::uint32_t a, std::uint32_t b) {
    return lifetimes[a].last < lifetimes[b].last;
  });

  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  FreeIntervals free_list;
  std::uint64_t end = 0;
  std::size_t d = 0;
  for (const std::size_t v : by_birth) {
    const std::int64_t step = lifetimes[v].first;
    for (; d < n && lifetimes[by_death[d]].last < step; ++d) {
      const std::size_t u = by_death[d];
      free_list.release(plan.offsets[u], align_up(sizes[u]));
    }
    const std::uint64_t size = align_up(sizes[v]);
    const std::uint64_t off = free_list.take(size);
    if (off != FreeIntervals::kNone) {
      plan.offsets[v] = off;
    } else {
      plan.offsets[v] = end;
      end += size;
    }
  }
  plan.arena_bytes = end;
  return plan;
}

}  // namespace

MemoryPlan plan_memory(const std::vector<std::uint64_t>& sizes,
                       const std::vector<Lifetime>& lifetimes) {
  MemoryPlan best = plan_sweep(sizes, lifetimes);
  if (sizes.size() <= kGreedyLimit) {
    MemoryPlan greedy = plan_greedy_by_size(sizes, lifetimes);
    if (greedy.arena_bytes < best.arena_bytes) best = std::move(greedy);
  }
  return best;
}

bool plan_is_valid(const MemoryPlan& plan, const std::vector<std::uint64_t>& sizes,
                   const std::vector<Lifetime>& lifetimes) {
  const std::size_t n = sizes.size();
  if (plan.offsets.size() != n) return false;
  for (std::size_t v = 0; v < n; ++v) {
    if (plan.offsets[v] % kArenaAlignment != 0) return false;
    if (plan.offsets[v] + sizes[v] > plan.arena_bytes) return false;
    for (std::size_t u = v + 1; u < n; ++u) {
      if (!overlaps(lifetimes[u], lifetimes[v])) continue;
      const bool disjoint = plan.offsets[u] + sizes[u] <= plan.offsets[v] ||
                            plan.offsets[v] + sizes[v] <= plan.offsets[u];
      if (!disjoint) return false;
    }
  }
  return true;
}

}  // namespace qbinfer
