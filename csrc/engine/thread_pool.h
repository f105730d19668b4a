// A persistent pool for intra-op parallelism: the caller and `threads - 1` workers. Hand-off
// costs microseconds, not a system call:
//
//   - the caller publishes a job in one 64-bit word (claim_: kind, generation, chunk count,
//     next chunk) and bumps a 32-bit generation counter; a worker that is spinning on it (it
//     spins for `spin_us` after its last job) starts at once;
//   - a worker that has spun that long parks on a futex (Linux; a condition variable
//     elsewhere) and the caller wakes it only when some worker is parked;
//   - completion is an atomic countdown the caller spins on (then parks on too).
//
// Two kinds of job:
//   run(fn, ctx)               every participant runs fn once, on its own index; the caller
//                              waits for all of them (the latency benchmark uses it).
//   run_chunks(n, fn, ctx)     fn(ctx, c) for each chunk c in [0, n), each claimed exactly once
//                              (compare-and-swap on claim_) by whichever participant comes
//                              first, the caller included. The caller waits only for chunks
//                              already claimed, never for a worker that has not started: on a
//                              machine whose other cores are busy a late worker finds the
//                              chunks gone, and the job costs what the caller alone would.
// Either way each output element is computed by exactly one participant with the same code.
// Nothing is allocated per job: the job is a function pointer and a context pointer.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <mutex>
#include <thread>
#include <vector>

namespace qbinfer {

class ThreadPool {
 public:
  using Fn = void (*)(void* ctx, std::size_t participant, std::size_t participants);
  using ChunkFn = void (*)(void* ctx, std::size_t chunk);

  // threads >= 1 participants (threads - 1 workers are started now). spin_us < 0: the
  // default (QBINFER_SPIN_US, else kDefaultSpinUs).
  explicit ThreadPool(std::size_t threads, int spin_us = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  std::size_t size() const { return workers_.size() + 1; }

  // Runs fn(ctx, i, size()) for every i in [0, size()): 0 on the calling thread. Returns when
  // all have returned. Not reentrant: one job at a time (the Model hands the pool to one call
  // at a time).
  void run(Fn fn, void* ctx);

  // Runs fn(ctx, c) once for every chunk c in [0, chunks), on whichever participants claim
  // them (see the top of this file); returns when all have returned. chunks <= kMaxChunks.
  void run_chunks(std::size_t chunks, ChunkFn fn, void* ctx);
  static constexpr std::size_t kMaxChunks = 0xFFFF;

  // Splits [0, n) into size() contiguous ranges, the same way every time, and runs
  // body(begin, end) on each non-empty one. With size() == 1 or n <= 1 it is a plain call.
  template <class Body>
  void parallel_for(std::size_t n, Body&& body) {
    if (size() == 1 || n <= 1) {
      if (n > 0) body(std::size_t{0}, n);
      return;
    }
    struct Closure {
      std::remove_reference_t<Body>* body;
      std::size_t n;
    } closure{&body, n};
    run(
        [](void* c, std::size_t i, std::size_t parts) {
          auto& cl = *static_cast<Closure*>(c);
          const std::size_t begin = range_begin(cl.n, i, parts);
          const std::size_t end = range_begin(cl.n, i + 1, parts);
          if (begin < end) (*cl.body)(begin, end);
        },
        &closure);
  }

  // The first index of part i when [0, n) is cut into `parts` near-equal contiguous pieces.
  static std::size_t range_begin(std::size_t n, std::size_t i, std::size_t parts) {
    // n counts rows, pixels or channels (< 2^40) and i <= parts <= 1024: no overflow.
    return static_cast<std::size_t>(static_cast<std::uint64_t>(n) * i / parts);
  }

  static constexpr int kDefaultSpinUs = 50;

 private:
  void worker_loop(std::size_t id);
  void wait_generation(std::uint32_t seen);
  void wait_done();
  void wake_parked();
  void publish(bool every_participant, std::size_t chunks);
  void claim_chunks(std::uint64_t word);
  void finish_one();

  std::vector<std::thread> workers_;
  int spin_us_;
  long owner_pid_ = 0;  // a forked child has no workers: it runs every part itself

  // The job, published by the store of claim_; rewritten only after the last job completed
  // (a worker reads them only after claim_ showed it a job that cannot complete without it).
  Fn fn_ = nullptr;
  ChunkFn chunk_fn_ = nullptr;
  void* ctx_ = nullptr;

  // [63] every-participant job, [62:32] generation, [31:16] chunks, [15:0] next chunk.
  alignas(64) std::atomic<std::uint64_t> claim_{0};
  std::atomic<std::uint32_t> generation_{0};  // the futex word: claim_'s generation
  std::atomic<std::uint32_t> parked_workers_{0};
  std::atomic<bool> stop_{false};
  alignas(64) std::atomic<std::uint32_t> pending_{0};
  std::atomic<std::uint32_t> caller_parked_{0};

  // Fallback parking (non-Linux).
  std::mutex park_mutex_;
  std::condition_variable park_cv_;
};

// Round-trip latency of an empty job on a pool of `threads`, in nanoseconds: the median over
// `iterations` back-to-back jobs (workers spinning), and over `cold_iterations` jobs issued
// after the workers have parked (sleep past the spin window first). For the benchmarks.
struct PoolLatency {
  double hot_ns;
  double cold_ns;
};
PoolLatency measure_pool_latency(std::size_t threads, std::size_t iterations,
                                 std::size_t cold_iterations);

// The CPUs this process may run on: its affinity mask where the OS has one (Linux
// sched_getaffinity: a container or `taskset` limit counts), else the hardware threads; >= 1.
std::size_t usable_cpus();

}  // namespace qbinfer
