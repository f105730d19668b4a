#include "engine/thread_pool.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#define QBINFER_HAVE_FUTEX 1
#endif
#if defined(__linux__)
#include <sched.h>
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

namespace {

// claim_'s fields (thread_pool.h).
constexpr std::uint64_t kEveryParticipant = std::uint64_t{1} << 63;
constexpr std::uint32_t kGenerationMask = 0x7FFFFFFFu;
inline std::uint32_t word_generation(std::uint64_t w) {
  return static_cast<std::uint32_t>(w >> 32) & kGenerationMask;
}
inline std::size_t word_chunks(std::uint64_t w) {
  return static_cast<std::size_t>((w >> 16) & 0xFFFF);
}
inline std::size_t word_next(std::uint64_t w) { return static_cast<std::size_t>(w & 0xFFFF); }

}  // namespace

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
  publish(true, 0);
  wake_parked();
  for (std::thread& t : workers_) t.join();
}

// Dekker-style hand-off: the caller stores claim_ and generation_, then reads parked_workers_;
// a worker bumps parked_workers_, then reads generation_ and re-checks claim_ (the futex
// compares generation_ atomically). All sequentially consistent, so at least one of them sees
// the other and no wake-up is lost. Only the caller writes generation_ (one job at a time).
void ThreadPool::publish(bool every_participant, std::size_t chunks) {
  const std::uint32_t g = (generation_.load(std::memory_order_relaxed) + 1) & kGenerationMask;
  claim_.store((every_participant ? kEveryParticipant : 0) | (std::uint64_t{g} << 32) |
                   (static_cast<std::uint64_t>(chunks) << 16),
               std::memory_order_seq_cst);
  generation_.store(g, std::memory_order_seq_cst);
  if (parked_workers_.load(std::memory_order_seq_cst) != 0) wake_parked();
}

// One participant's part of completing a job: the last one wakes the caller if it parked.
void ThreadPool::finish_one() {
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

// Claims and runs chunks of the job in `word` until none is left or a newer job replaced it.
// A successful compare-and-swap makes the chunk ours: the job cannot complete (and chunk_fn_
// and ctx_ cannot change) before we finish it.
void ThreadPool::claim_chunks(std::uint64_t word) {
  const std::uint32_t g = word_generation(word);
  for (;;) {
    if ((word & kEveryParticipant) != 0 || word_generation(word) != g) return;
    const std::size_t next = word_next(word);
    if (next >= word_chunks(word)) return;
    if (claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      chunk_fn_(ctx_, next);
      finish_one();
      word = claim_.load(std::memory_order_acquire);
    }
  }
}

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
  publish(true, 0);
  fn(ctx, 0, size());
  wait_done();
}

void ThreadPool::run_chunks(std::size_t chunks, ChunkFn fn, void* ctx) {
  if (chunks > kMaxChunks) std::abort();  // a caller bug: the word holds 16 bits
  if (workers_.empty() || chunks <= 1 || current_pid() != owner_pid_) {
    for (std::size_t c = 0; c < chunks; ++c) fn(ctx, c);
    return;
  }
  chunk_fn_ = fn;
  ctx_ = ctx;
  pending_.store(static_cast<std::uint32_t>(chunks), std::memory_order_relaxed);
  publish(false, chunks);
  claim_chunks(claim_.load(std::memory_order_acquire));
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

// Returns once claim_ holds a job newer than generation `seen`.
void ThreadPool::wait_generation(std::uint32_t seen) {
  auto same = [&](std::memory_order order) { return word_generation(claim_.load(order)) == seen; };
  if (spin_while(spin_us_, [&] { return same(std::memory_order_acquire); })) return;
  parked_workers_.fetch_add(1, std::memory_order_seq_cst);
  for (;;) {
    const std::uint32_t g = generation_.load(std::memory_order_seq_cst);
    if (!same(std::memory_order_seq_cst)) break;
#if defined(QBINFER_HAVE_FUTEX)
    futex_wait(&generation_, g);
#else
    (void)g;
    std::unique_lock<std::mutex> lock(park_mutex_);
    park_cv_.wait(lock, [&] { return !same(std::memory_order_seq_cst); });
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
    // The newest job: a worker that slept through several handles only the last (older
    // chunk jobs completed without it; an every-participant job waits for every worker, so
    // none is ever skipped).
    const std::uint64_t word = claim_.load(std::memory_order_acquire);
    seen = word_generation(word);
    if (stop_.load(std::memory_order_acquire)) return;
    if ((word & kEveryParticipant) != 0) {
      fn_(ctx_, id, size());
      finish_one();
    } else {
      claim_chunks(word);
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

std::size_t usable_cpus() {
#if defined(__linux__)
  // Sized for machines beyond CPU_SETSIZE (1024) CPUs.
  for (int cpus = 1024; cpus <= (1 << 16); cpus *= 4) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (set == nullptr) break;
    const std::size_t size = CPU_ALLOC_SIZE(cpus);
    CPU_ZERO_S(size, set);
    const int rc = sched_getaffinity(0, size, set);
    const int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return count > 0 ? static_cast<std::size_t>(count) : 1;
    if (errno != EINVAL) break;  // EINVAL: the kernel's mask is larger than ours
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

}  // namespace qbinfer
