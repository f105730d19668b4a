// The graph executor: a validated .qbw file, its ops resolved against the kernel tables,
// and a memory plan. Running a batch executes the graph image by image, each image in a
// workspace (one arena holding every value of that image plus int8 scratch), so nothing is
// allocated per inference once the workspaces exist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/kernel_table.h"
#include "engine/memory_plan.h"
#include "engine/ops.h"
#include "format/qbw_file.h"

namespace qbinfer {

enum class Layout { kNCHW, kNHWC };

class WorkerPool;

class Model {
 public:
  inline static constexpr int kMaxThreads = 1024;

  // Opens and validates `path` (FileError / FormatError), builds and checks every op,
  // plans the arena. threads: 1..kMaxThreads images of a batch run concurrently.
  Model(const std::string& path, int threads);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // x: batch images of input_shape(), NCHW or NHWC float32, contiguous; out: batch *
  // output_floats() floats, in the same layout. Validates nothing (the binding checks the array); safe to call
  // from several threads (calls are serialized). The result does not depend on threads.
  void run(const float* x, std::size_t batch, Layout layout, float* out);

  const QbwFile& file() const { return file_; }
  const std::vector<Op>& ops() const { return ops_; }
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
  int threads() const { return threads_; }
  const KernelTable& kernels() const { return *kernels_; }

 private:
  struct Workspace;
  void run_image(Workspace& ws, const float* x, Layout layout, float* out) const;
  void ensure_workspaces(std::size_t n);
  static void worker_entry(void* job, std::size_t worker);

  QbwFile file_;
  std::vector<Op> ops_;
  const KernelTable* kernels_;
  MemoryPlan plan_;
  std::uint64_t scratch_offset_ = 0;    // int8 scratch, after the values
  std::uint64_t workspace_bytes_ = 0;   // values + scratch
  std::uint64_t weights_bytes_ = 0;
  std::size_t concat_inputs_ = 0;       // total CONCAT inputs over all ops
  int threads_;

  std::mutex run_mutex_;
  std::vector<std::unique_ptr<Workspace>> workspaces_;
  std::unique_ptr<WorkerPool> pool_;
};

}  // namespace qbinfer
