#include "engine/memory_plan.h"

#include <algorithm>
#include <map>
#include <numeric>

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

// Walks the steps in order: frees the values whose lifetime ended, then places the values
// born at this step at the first free interval that fits (or the end of the arena).
MemoryPlan plan_sweep(const std::vector<std::uint64_t>& sizes,
                      const std::vector<Lifetime>& lifetimes) {
  const std::size_t n = sizes.size();
  std::vector<std::size_t> by_birth(n);
  std::vector<std::size_t> by_death(n);
  std::iota(by_birth.begin(), by_birth.end(), std::size_t{0});
  std::iota(by_death.begin(), by_death.end(), std::size_t{0});
  std::stable_sort(by_birth.begin(), by_birth.end(), [&](std::size_t a, std::size_t b) {
    return lifetimes[a].first < lifetimes[b].first;
  });
  std::stable_sort(by_death.begin(), by_death.end(), [&](std::size_t a, std::size_t b) {
    return lifetimes[a].last < lifetimes[b].last;
  });

  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  std::map<std::uint64_t, std::uint64_t> free_list;  // offset -> size, coalesced
  std::uint64_t end = 0;
  std::size_t d = 0;
  for (const std::size_t v : by_birth) {
    const std::int64_t step = lifetimes[v].first;
    for (; d < n && lifetimes[by_death[d]].last < step; ++d) {
      const std::size_t u = by_death[d];
      std::uint64_t off = plan.offsets[u];
      std::uint64_t size = align_up(sizes[u]);
      auto next = free_list.lower_bound(off);
      if (next != free_list.end() && off + size == next->first) {
        size += next->second;
        next = free_list.erase(next);
      }
      if (next != free_list.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == off) {
          prev->second += size;
          continue;
        }
      }
      free_list.emplace(off, size);
    }
    const std::uint64_t size = align_up(sizes[v]);
    auto it = std::find_if(free_list.begin(), free_list.end(),
                           [size](const auto& f) { return f.second >= size; });
    if (it != free_list.end()) {
      plan.offsets[v] = it->first;
      const std::uint64_t rest = it->second - size;
      const std::uint64_t rest_offset = it->first + size;
      free_list.erase(it);
      if (rest > 0) free_list.emplace(rest_offset, rest);
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
