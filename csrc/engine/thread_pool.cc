#include "engine/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#define QBINFER_HAVE_FUTEX 1
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define QBINFER_HAVE_GETPID 1
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qbinfer {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

using Clock = std::chrono::steady_clock;

// Spins while pred() holds, for at most spin_us; returns whether pred() stopped holding.
// After the first few microseconds of pure spinning it also yields between rounds: when the
// machine is oversubscribed the thread that would end the wait may be queued on this very
// CPU, and a pure spin would hold it off for the whole window.
template <class Pred>
bool spin_while(int spin_us, Pred&& pred) {
  if (!pred()) return true;
  if (spin_us <= 0) return false;
  const auto deadline = Clock::now() + std::chrono::microseconds(spin_us);
  for (int round = 0;; ++round) {
    for (int i = 0; i < 64; ++i) {
      cpu_relax();
      if (!pred()) return true;
    }
    if (Clock::now() >= deadline) return !pred();
    if (round > 0) std::this_thread::yield();
  }
}

#if defined(QBINFER_HAVE_FUTEX)
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "futex needs a plain 32-bit word");
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}
void futex_wake_all(std::atomic<std::uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, 0x7fffffff,
          nullptr, nullptr, 0);
}
#endif

long current_pid() {
#if defined(QBINFER_HAVE_GETPID)
  return static_cast<long>(getpid());
#else
  return 0;
#endif
}

int default_spin_us() {
  const char* env = std::getenv("QBINFER_SPIN_US");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 0 && v <= 1000000) return static_cast<int>(v);
  }
  return ThreadPool::kDefaultSpinUs;
}

}  // namespace

ThreadPool::ThreadPool(std::size_t threads, int spin_us)
    : spin_us_(spin_us < 0 ? default_spin_us() : spin_us), owner_pid_(current_pid()) {
  const std::size_t n = std::max<std::size_t>(threads, 1) - 1;
  workers_.reserve(n);
  for (std::size_t id = 1; id <= n; ++id) workers_.emplace_back([this, id] { worker_loop(id); });
}

// Wakes every parked worker after generation_ changed (the mutex round trip orders the change
// before a waiter's re-check in the condition-variable fallback).
void ThreadPool::wake_parked() {
#if defined(QBINFER_HAVE_FUTEX)
  futex_wake_all(&generation_);
#else
  {
    std::lock_guard<std::mutex> lock(park_mutex_);
  }
  park_cv_.notify_all();
#endif
}

ThreadPool::~ThreadPool() {
  if (current_pid() != owner_pid_) {
    // A forked child: the workers are the parent's and do not exist here. Their handles can be
    // neither joined nor detached, and destroying a joinable std::thread terminates: leak them.
    new std::vector<std::thread>(std::move(workers_));
    return;
  }
  stop_.store(true, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  wake_parked();
  for (std::thread& t : workers_) t.join();
}

// Dekker-style hand-off: the caller bumps generation_ then reads parked_workers_; a worker
// bumps parked_workers_ then re-checks generation_ (the futex does so atomically). Both
// sequentially consistent, so at least one of them sees the other and no wake-up is lost.
void ThreadPool::run(Fn fn, void* ctx) {
  if (workers_.empty()) {
    fn(ctx, 0, 1);
    return;
  }
  if (current_pid() != owner_pid_) {
    // After fork() only the forking thread exists in the child: run every part here, in
    // order, which gives the same results.
    for (std::size_t i = 0; i < size(); ++i) fn(ctx, i, size());
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  pending_.store(static_cast<std::uint32_t>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (parked_workers_.load(std::memory_order_seq_cst) != 0) {
    wake_parked();
  }
  fn(ctx, 0, size());
  wait_done();
}

void ThreadPool::wait_done() {
  if (spin_while(spin_us_ > 0 ? std::max(spin_us_, 200) : 0,
                 [this] { return pending_.load(std::memory_order_acquire) != 0; })) {
    return;
  }
  caller_parked_.store(1, std::memory_order_seq_cst);
  for (;;) {
    const std::uint32_t p = pending_.load(std::memory_order_seq_cst);
    if (p == 0) break;
#if defined(QBINFER_HAVE_FUTEX)
    futex_wait(&pending_, p);
#else
    std::unique_lock<std::mutex> lock(park_mutex_);
    park_cv_.wait(lock, [this] { return pending_.load(std::memory_order_seq_cst) == 0; });
#endif
  }
  caller_parked_.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
}

void ThreadPool::wait_generation(std::uint32_t seen) {
  if (spin_while(spin_us_, [&] { return generation_.load(std::memory_order_acquire) == seen; })) {
    return;
  }
  parked_workers_.fetch_add(1, std::memory_order_seq_cst);
  for (;;) {
    if (generation_.load(std::memory_order_seq_cst) != seen) break;
#if defined(QBINFER_HAVE_FUTEX)
    futex_wait(&generation_, seen);
#else
    std::unique_lock<std::mutex> lock(park_mutex_);
    park_cv_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
#endif
  }
  parked_workers_.fetch_sub(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_acquire);
}

void ThreadPool::worker_loop(std::size_t id) {
  // 0, not a load: a worker that starts late must still take the first job.
  std::uint32_t seen = 0;
  for (;;) {
    wait_generation(seen);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    fn_(ctx_, id, size());
    // The last one to finish wakes the caller if it parked.
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_parked_.load(std::memory_order_seq_cst) != 0) {
#if defined(QBINFER_HAVE_FUTEX)
      futex_wake_all(&pending_);
#else
      {
        std::lock_guard<std::mutex> lock(park_mutex_);
      }
      park_cv_.notify_all();
#endif
    }
  }
}

PoolLatency measure_pool_latency(std::size_t threads, std::size_t iterations,
                                 std::size_t cold_iterations) {
  ThreadPool pool(threads);
  auto noop = [](void*, std::size_t, std::size_t) {};
  auto median = [](std::vector<double>& v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> hot;
  hot.reserve(iterations);
  for (std::size_t i = 0; i < iterations / 10 + 1; ++i) pool.run(noop, nullptr);  // warm up
  for (std::size_t i = 0; i < iterations; ++i) {
    const auto t0 = Clock::now();
    pool.run(noop, nullptr);
    hot.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
  }
  std::vector<double> cold;
  cold.reserve(cold_iterations);
  for (std::size_t i = 0; i < cold_iterations; ++i) {
    // Past the spin window, so every worker has parked on the futex.
    std::this_thread::sleep_for(std::chrono::microseconds(pool.size() > 1 ? 2000 : 0) +
                                std::chrono::microseconds(default_spin_us() * 2));
    const auto t0 = Clock::now();
    pool.run(noop, nullptr);
    cold.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
  }
  return {median(hot), median(cold)};
}

}  // namespace qbinfer
