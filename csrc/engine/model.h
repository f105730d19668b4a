// The graph executor: a validated .qbw file, its ops turned into steps (fused chains, packed
// weights) for one kernel table, and a memory plan. Running a batch executes the steps image
// by image in a workspace (one arena holding every value of that image plus int8 scratch), so
// nothing is allocated per inference once the workspaces exist.
//
// Threads: with threads = N (0: every CPU the process may use), a batch of fewer than N images
// runs its images one after the other, each step split over as many of the N threads as its
// estimated work pays for (SplitPolicy, exec_plan.h): a step too small to split runs on the
// calling thread whatever N is. A batch of N or more runs N images at a time, one per thread,
// each in its own workspace, when one image's work pays for the hand-off. Every output element
// is computed by exactly one thread with the same code either way, so results do not depend
// on N. A model none of whose steps would split starts no threads at all.
//
// Concurrency: run() and profile() may be called from several threads at once. Each call
// takes a workspace (an arena) from the model's free list, making a new one when all are in
// use (so a model holds as many arenas as it has seen concurrent calls); the steps, weights and
// plan are shared read-only. The pool of N threads serves one call at a time: a call that
// finds it busy runs on its own thread, which gives the same results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/exec_plan.h"
#include "engine/kernel_table.h"
#include "engine/memory_plan.h"
#include "engine/ops.h"
#include "engine/thread_pool.h"
#include "format/qbw_file.h"

namespace qbinfer {

enum class Layout { kNCHW, kNHWC };

struct ModelOptions {
  int threads = 1;  // 0: usable_cpus() (thread_pool.h)
  SplitPolicy split = SplitPolicy::kByWork;
  const KernelTable* kernels = nullptr;  // nullptr: selected_kernel_table() (the active ISA)
  int fuse = -1;                         // -1: fusion_enabled_by_env(); 0 off; 1 on
  // Most bytes the load may commit in proportion to the graph: one activation arena (each
  // further concurrent call adds one more) plus the repacked weights; 0: no limit. Over it the
  // file is refused with a FormatError (check_load_memory, exec_plan.h).
  std::uint64_t max_memory = kDefaultMaxMemory;
};

class Model {
 public:
  inline static constexpr int kMaxThreads = 1024;

  // Opens and validates `path` (FileError / FormatError), builds and checks every op, plans
  // the steps and the arena.
  Model(const std::string& path, const ModelOptions& options);
  // The same from a file already read and validated (QbwFile::from_memory).
  Model(QbwFile file, const ModelOptions& options);
  Model(const std::string& path, int threads) : Model(path, ModelOptions{threads}) {}
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // x: batch images of input_shape(), NCHW or NHWC float32, contiguous; out: batch *
  // output_floats() floats, in the same layout. Validates nothing (the binding checks the
  // array). Safe to call from several threads at once: each call runs in its own workspace
  // (see the top of this file). The result depends neither on threads nor on concurrency.
  void run(const float* x, std::size_t batch, Layout layout, float* out);

  // Runs image x (one image, as run) `runs` times as a batch of one would, and returns the
  // median nanoseconds of each step: wall-clock, or with thread_cpu the calling thread's CPU
  // time (on a loaded machine, what a step costs when it has the core). For profiling; the
  // output is discarded.
  std::vector<double> profile(const float* x, Layout layout, int runs, bool thread_cpu = false);

  const QbwFile& file() const { return file_; }
  const std::vector<Op>& ops() const { return ops_; }        // as in the file
  const std::vector<Step>& steps() const { return steps_; }  // as they run
  // Step i's label ("BCONV2D+ADD+PRELU+AFFINE") and estimated single-thread nanoseconds
  // (plan_threads' estimate), derived on demand: the steps do not keep them.
  std::string step_label(std::size_t i) const { return qbinfer::step_label(steps_[i], ops_); }
  double step_work_ns(std::size_t i) const { return estimate_step_ns(steps_[i], file_, ops_); }
  const ValueInfo& input() const { return file_.values()[file_.input_value()]; }
  const ValueInfo& output() const { return file_.values()[file_.output_value()]; }
  std::size_t num_classes() const { return output().channels; }
  // Floats of one image's output: num_classes() for a classifier (1 x 1 output), else
  // height * width * channels (returned NCHW or NHWC like the input).
  std::size_t output_floats() const {
    return std::size_t{output().height} * output().width * output().channels;
  }
  std::uint64_t arena_bytes() const { return workspace_bytes_; }  // per concurrent image
  std::uint64_t weights_bytes() const { return weights_bytes_; }
  std::uint64_t packed_bytes() const { return packed_bytes_; }  // repacked weights
  int threads() const { return threads_; }  // participants of the pool (resolved, >= 1)
  // Whether some step splits or a batch may run image-parallel: a pool exists.
  bool uses_pool() const { return pool_ != nullptr; }
  std::size_t workspaces() const;  // arenas made so far (one per concurrent call seen)
  bool fused() const { return fused_; }
  const KernelTable& kernels() const { return *kernels_; }

  struct Workspace;  // one arena with its resolved pointers (model.cc)

 private:
  class Lease;
  // Runs one image in `ws`, splitting steps over `pool` (nullptr: the calling thread alone).
  // step_ns: when not null, each step's duration is written there.
  void run_image(Workspace& ws, ThreadPool* pool, const float* x, Layout layout, float* out,
                 double* step_ns = nullptr, bool thread_cpu = false) const;
  std::unique_ptr<Workspace> acquire_workspace();
  void release_workspace(std::unique_ptr<Workspace> ws);
  static void image_worker(void* job, std::size_t chunk);

  QbwFile file_;
  OpArgsPool op_args_;  // the ops' argument records, which they point into
  std::vector<Op> ops_;
  const KernelTable* kernels_;
  bool fused_ = true;
  std::vector<Step> steps_;
  std::vector<StepChain> step_chains_;  // the fused steps' chains, which they point into
  std::vector<std::unique_ptr<const AlignedBuffer>> packed_buffers_;  // the steps point in
  MemoryPlan plan_;
  std::uint64_t scratch_offset_ = 0;   // int8 scratch, after the values
  std::uint64_t workspace_bytes_ = 0;  // values + scratch
  std::uint64_t weights_bytes_ = 0;
  std::uint64_t packed_bytes_ = 0;
  std::size_t concat_inputs_ = 0;  // total CONCAT inputs over all steps
  int threads_;
  bool image_parallel_ = false;  // a batch of >= threads_ images may run one image per thread

  mutable std::mutex workspace_mutex_;  // guards free_workspaces_ and workspace_count_
  std::vector<std::unique_ptr<Workspace>> free_workspaces_;
  std::size_t workspace_count_ = 0;
  std::mutex pool_mutex_;  // held by the one call using pool_
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace qbinfer
