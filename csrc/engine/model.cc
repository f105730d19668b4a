#include "engine/model.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

namespace qbinfer {

// ---------------------------------------------------------------------------------------
// WorkerPool: persistent threads that run one job at a time, so a batch does not pay for
// thread creation. The calling thread takes part as worker 0.
// ---------------------------------------------------------------------------------------
class WorkerPool {
 public:
  using Fn = void (*)(void* ctx, std::size_t worker);

  WorkerPool() = default;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // Total participants available (workers + the caller).
  std::size_t capacity() const { return threads_.size() + 1; }

  void grow(std::size_t participants) {
    while (threads_.size() + 1 < participants) {
      const std::size_t id = threads_.size() + 1;
      threads_.emplace_back([this, id] { loop(id); });
    }
  }

  // Runs fn(ctx, i) for i in [0, participants): 0 on the caller, the rest on workers.
  void run(Fn fn, void* ctx, std::size_t participants) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = fn;
      ctx_ = ctx;
      active_ = participants;
      pending_ = participants - 1;
      ++generation_;
    }
    start_.notify_all();
    fn(ctx, 0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void loop(std::size_t id) {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= active_) continue;
      const Fn fn = fn_;
      void* ctx = ctx_;
      lock.unlock();
      fn(ctx, id);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;
  std::uint64_t generation_ = 0;
  std::size_t active_ = 0;
  std::size_t pending_ = 0;
  bool stop_ = false;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// Workspace: the arena of one concurrently running image, with every pointer resolved.
// ---------------------------------------------------------------------------------------
struct Model::Workspace {
  unsigned char* arena = nullptr;
  std::vector<const float*> concat_inputs;
  ExecContext ctx{};

  explicit Workspace(const Model& m) {
    arena = static_cast<unsigned char*>(::operator new(
        static_cast<std::size_t>(m.workspace_bytes_), std::align_val_t{kArenaAlignment}));
    concat_inputs.reserve(m.concat_inputs_);
    for (const Op& op : m.ops_) {
      if (op.type != OpType::kConcat) continue;
      for (const std::uint32_t v : op.inputs) {
        concat_inputs.push_back(reinterpret_cast<const float*>(arena + m.plan_.offsets[v]));
      }
    }
    ctx.arena = arena;
    ctx.value_offsets = m.plan_.offsets.data();
    ctx.scratch = reinterpret_cast<std::int8_t*>(arena + m.scratch_offset_);
    ctx.concat_inputs = concat_inputs.data();
    ctx.kernels = m.kernels_;
  }
  ~Workspace() { ::operator delete(arena, std::align_val_t{kArenaAlignment}); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

namespace {

// One image's activations may not need more than this; a larger plan comes only from a
// corrupt or absurd file, and is refused before anything is allocated.
constexpr std::uint64_t kMaxWorkspaceBytes = std::uint64_t{1} << 36;  // 64 GiB

std::uint64_t align_up(std::uint64_t n) {
  return (n + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

struct BatchJob {
  Model* model;
  const float* x;
  std::size_t batch;
  std::size_t image_floats;
  std::size_t classes;
  Layout layout;
  float* out;
  std::atomic<std::size_t> next{0};
};

}  // namespace

Model::Model(const std::string& path, int threads)
    : file_(QbwFile::open(path)), kernels_(&selected_kernel_table()), threads_(threads) {
  if (threads < 1 || threads > kMaxThreads) {
    throw std::invalid_argument("threads must be in 1.." + std::to_string(kMaxThreads) +
                                ", got " + std::to_string(threads));
  }
  const std::size_t n_ops = file_.ops().size();
  ops_.reserve(n_ops);
  for (std::uint32_t i = 0; i < n_ops; ++i) ops_.push_back(build_op(file_, i));

  // Lifetimes: a value lives from the step of its producer (the input: -1) to its last
  // reader; the output lives to the end, when it is copied out.
  const auto& values = file_.values();
  std::vector<Lifetime> lifetimes(values.size());
  std::vector<std::uint64_t> sizes(values.size());
  for (std::size_t v = 0; v < values.size(); ++v) sizes[v] = values[v].bytes;
  lifetimes[file_.input_value()] = {-1, -1};
  std::uint64_t scratch = 0;
  for (Op& op : ops_) {
    const auto step = static_cast<std::int64_t>(op.index);
    lifetimes[op.output] = {step, step};
    for (const std::uint32_t v : op.inputs) lifetimes[v].last = std::max(lifetimes[v].last, step);
    scratch = std::max<std::uint64_t>(scratch, op.scratch_bytes);
    if (op.type == OpType::kConcat) {
      op.concat_slot = concat_inputs_;  // Workspace fills the table in this same order
      concat_inputs_ += op.inputs.size();
    }
  }
  lifetimes[file_.output_value()].last = static_cast<std::int64_t>(n_ops);

  plan_ = plan_memory(sizes, lifetimes);
  if (values.size() <= 2048 && !plan_is_valid(plan_, sizes, lifetimes)) {
    throw std::logic_error("qbinfer internal error: invalid memory plan for " + path);
  }
  scratch_offset_ = plan_.arena_bytes;
  workspace_bytes_ = plan_.arena_bytes + align_up(scratch);
  if (workspace_bytes_ > kMaxWorkspaceBytes) {
    file_.fail("the activations of one image need " + std::to_string(workspace_bytes_) +
               " bytes, more than the " + std::to_string(kMaxWorkspaceBytes >> 30) +
               " GiB limit");
  }

  // Weight bytes: every tensor the graph uses, counted once even if shared.
  std::vector<bool> used(file_.tensors().size(), false);
  for (const Op& op : ops_) {
    for (const TensorInfo* t : op.tensors) {
      if (t == nullptr) continue;
      const auto idx = static_cast<std::size_t>(t - file_.tensors().data());
      if (!used[idx]) weights_bytes_ += t->nbytes;
      used[idx] = true;
    }
  }

  ensure_workspaces(1);  // one arena now, so a load that cannot get memory fails here
}

Model::~Model() = default;

void Model::ensure_workspaces(std::size_t n) {
  while (workspaces_.size() < n) workspaces_.push_back(std::make_unique<Workspace>(*this));
  if (n > 1) {
    if (!pool_) pool_ = std::make_unique<WorkerPool>();
    pool_->grow(n);
  }
}

void Model::run_image(Workspace& ws, const float* x, Layout layout, float* out) const {
  const ValueInfo& in = input();
  float* slot = ws.ctx.value<float>(file_.input_value());
  const std::size_t pixels = std::size_t{in.height} * in.width;
  const std::size_t channels = in.channels;
  if (layout == Layout::kNHWC) {
    std::memcpy(slot, x, pixels * channels * sizeof(float));
  } else {
    for (std::size_t c = 0; c < channels; ++c) {
      const float* plane = x + c * pixels;
      for (std::size_t p = 0; p < pixels; ++p) slot[p * channels + c] = plane[p];
    }
  }
  for (const Op& op : ops_) op.run(op, ws.ctx);
  const ValueInfo& o = output();
  const float* result = ws.ctx.value<const float>(file_.output_value());
  const std::size_t out_pixels = std::size_t{o.height} * o.width;
  if (layout == Layout::kNHWC || out_pixels == 1) {
    std::memcpy(out, result, out_pixels * o.channels * sizeof(float));
  } else {
    for (std::size_t c = 0; c < o.channels; ++c) {
      for (std::size_t p = 0; p < out_pixels; ++p) out[c * out_pixels + p] = result[p * o.channels + c];
    }
  }
}

void Model::worker_entry(void* job_ptr, std::size_t worker) {
  auto& job = *static_cast<BatchJob*>(job_ptr);
  Workspace& ws = *job.model->workspaces_[worker];
  for (;;) {
    const std::size_t i = job.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= job.batch) return;
    job.model->run_image(ws, job.x + i * job.image_floats, job.layout, job.out + i * job.classes);
  }
}

void Model::run(const float* x, std::size_t batch, Layout layout, float* out) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (batch == 0) return;
  const ValueInfo& in = input();
  BatchJob job{this, x, batch, std::size_t{in.height} * in.width * in.channels, output_floats(),
               layout, out};
  const std::size_t participants = std::min<std::size_t>(static_cast<std::size_t>(threads_), batch);
  // Grows only when a batch uses more parallelism than any before: steady state allocates
  // nothing.
  ensure_workspaces(participants);
  if (participants == 1) {
    worker_entry(&job, 0);
  } else {
    pool_->run(&Model::worker_entry, &job, participants);
  }
}

}  // namespace qbinfer
