// The graph executor: a validated .qbw file, its ops turned into steps (fused chains, packed
// weights) for one kernel table, and a memory plan. Running a batch executes the steps image
// by image in a workspace (one arena holding every value of that image plus int8 scratch), so
// nothing is allocated per inference once the workspaces exist.
//
// Threads: with threads = N, a batch of fewer than N images runs its images one after the
// other, each heavy step split across the N threads (rows, pixels or output features); a
// batch of N or more runs N images at a time, one per thread, each in its own workspace. Every
// output element is computed by exactly one thread with the same code either way, so results
// do not depend on N.
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
  int threads = 1;
  const KernelTable* kernels = nullptr;  // nullptr: selected_kernel_table() (the active ISA)
  int fuse = -1;                         // -1: fusion_enabled_by_env(); 0 off; 1 on
};

class Model {
 public:
  inline static constexpr int kMaxThreads = 1024;

  // Opens and validates `path` (FileError / FormatError), builds and checks every op, plans
  // the steps and the arena.
  Model(const std::string& path, const ModelOptions& options);
  Model(const std::string& path, int threads) : Model(path, ModelOptions{threads}) {}
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // x: batch images of input_shape(), NCHW or NHWC float32, contiguous; out: batch *
  // output_floats() floats, in the same layout. Validates nothing (the binding checks the
  // array); safe to call from several threads (calls are serialized). The result does not
  // depend on threads.
  void run(const float* x, std::size_t batch, Layout layout, float* out);

  // Runs image x (one image, as run) `runs` times as a batch of one would, and returns the
  // median nanoseconds of each step: wall-clock, or with thread_cpu the calling thread's CPU
  // time (on a loaded machine, what a step costs when it has the core). For profiling; the
  // output is discarded.
  std::vector<double> profile(const float* x, Layout layout, int runs, bool thread_cpu = false);

  const QbwFile& file() const { return file_; }
  const std::vector<Op>& ops() const { return ops_; }        // as in the file
  const std::vector<Step>& steps() const { return steps_; }  // as they run
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
  int threads() const { return threads_; }
  bool fused() const { return fused_; }
  const KernelTable& kernels() const { return *kernels_; }

 private:
  struct Workspace;
  // step_ns: when not null, each step's duration is written there.
  void run_image(Workspace& ws, const float* x, Layout layout, float* out,
                 double* step_ns = nullptr, bool thread_cpu = false) const;
  void ensure_workspaces(std::size_t n);
  static void image_worker(void* job, std::size_t worker, std::size_t workers);

  QbwFile file_;
  std::vector<Op> ops_;
  const KernelTable* kernels_;
  bool fused_ = true;
  std::vector<Step> steps_;
  MemoryPlan plan_;
  std::uint64_t scratch_offset_ = 0;   // int8 scratch, after the values
  std::uint64_t workspace_bytes_ = 0;  // values + scratch
  std::uint64_t weights_bytes_ = 0;
  std::uint64_t packed_bytes_ = 0;
  std::size_t concat_inputs_ = 0;  // total CONCAT inputs over all steps
  int threads_;

  std::mutex run_mutex_;
  std::vector<std::unique_ptr<Workspace>> workspaces_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace qbinfer
