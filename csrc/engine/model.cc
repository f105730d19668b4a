#include "engine/model.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <cstring>
#include <limits>
#include <new>
#include <unordered_map>
#include <stdexcept>
#include <utility>

namespace qbinfer {

// ---------------------------------------------------------------------------------------
// Workspace: the arena of one concurrently running image, with every pointer resolved.
// ---------------------------------------------------------------------------------------
struct Model::Workspace {
  unsigned char* arena = nullptr;
  std::vector<const float*> concat_inputs;
  std::vector<float> partials;
  ExecContext ctx{};

  explicit Workspace(const Model& m) {
    arena = static_cast<unsigned char*>(::operator new(static_cast<std::size_t>(m.workspace_bytes_),
                                                       std::align_val_t{kArenaAlignment}));
    concat_inputs.reserve(m.concat_inputs_);
    for (const Step& s : m.steps_) {
      if (s.kind != StepKind::kOp || s.op->type != OpType::kConcat) continue;
      for (const std::uint32_t v : s.op->inputs) {
        concat_inputs.push_back(reinterpret_cast<const float*>(arena + m.plan_.offsets[v]));
      }
    }
    partials.assign(static_cast<std::size_t>(m.threads_) * kPiecesPerThread, 0.0f);
    ctx.arena = arena;
    ctx.value_offsets = m.plan_.offsets.data();
    ctx.scratch = reinterpret_cast<std::int8_t*>(arena + m.scratch_offset_);
    ctx.concat_inputs = concat_inputs.data();
    ctx.partials = partials.data();
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
  const Model* model;
  Model::Workspace* const* workspaces;  // one per pool participant
  const float* x;
  std::size_t batch;
  std::size_t image_floats;
  std::size_t out_floats;
  Layout layout;
  float* out;
  std::atomic<std::size_t> next{0};
};

// Nanoseconds on the steady clock, or of this thread's CPU time where the OS offers it.
double now_ns(bool thread_cpu) {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  if (thread_cpu) {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
  }
#else
  (void)thread_cpu;
#endif
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A value that no step touches (a fused intermediate, or a value the file leaves unread and
// unwritten): no bytes, and a lifetime that overlaps nothing.
constexpr Lifetime kNoLifetime{-2, -2};

}  // namespace

Model::Model(const std::string& path, const ModelOptions& options)
    : Model(QbwFile::open(path), options) {}

Model::Model(QbwFile file, const ModelOptions& options)
    : file_(std::move(file)),
      kernels_(options.kernels != nullptr ? options.kernels : &selected_kernel_table()),
      threads_(options.threads != 0
                   ? options.threads
                   : static_cast<int>(std::min<std::size_t>(usable_cpus(), kMaxThreads))) {
  if (threads_ < 1 || threads_ > kMaxThreads) {
    throw std::invalid_argument("threads must be in 1.." + std::to_string(kMaxThreads) +
                                " (or 0 for every usable CPU), got " + std::to_string(threads_));
  }
  const std::size_t n_ops = file_.ops().size();
  ops_.reserve(n_ops);
  for (std::uint32_t i = 0; i < n_ops; ++i) ops_.push_back(build_op(file_, i, op_args_));
  file_.release_op_records();  // ops_ holds what they held (per op, ~100 bytes less at peak)
  fused_ = options.fuse < 0 ? fusion_enabled_by_env() : options.fuse != 0;
  steps_ = build_steps(file_, ops_, *kernels_, fused_, step_chains_);

  // Lifetimes over the steps: a value lives from the step that writes it (the input: -1) to
  // its last reader; the output lives to the end, when it is copied out. An in-place chain's
  // result shares the bytes of its base: the two are planned as one storage whose lifetime
  // covers both.
  const auto& values = file_.values();
  const std::size_t n_values = values.size();
  // The in-place links (an in-place chain's result -> its base): one per in-place chain, so a
  // map rather than an entry per value.
  std::unordered_map<std::uint32_t, std::uint32_t> inplace_base;
  auto find = [&inplace_base](std::uint32_t v) {
    for (auto it = inplace_base.find(v); it != inplace_base.end(); it = inplace_base.find(v)) {
      v = it->second;
    }
    return v;
  };
  // Steps are fewer than kMaxTableEntries (ops), so a step index fits 32 bits.
  constexpr std::int32_t kUnborn = std::numeric_limits<std::int32_t>::max();
  std::vector<Lifetime> lifetimes(n_values, Lifetime{kUnborn, -1});
  lifetimes[file_.input_value()] = {-1, -1};
  std::uint64_t scratch = 0;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    Step& s = steps_[i];
    const auto step = static_cast<std::int32_t>(i);
    for (const std::uint32_t v : s.reads()) lifetimes[v].last = std::max(lifetimes[v].last, step);
    for (const std::uint32_t v : s.writes()) {
      lifetimes[v].first = std::min(lifetimes[v].first, step);
      lifetimes[v].last = std::max(lifetimes[v].last, step);
    }
    if (s.inplace() != kNoValue) inplace_base[s.out()] = find(s.inplace());
    scratch = std::max<std::uint64_t>(scratch, s.op->scratch_bytes());
    if (s.kind == StepKind::kOp && s.op->type == OpType::kConcat) {
      // Workspace fills the table in this same order. Each entry is an input index of the
      // file's op records, which a file of less than 16 GiB of them cannot push past 2^32.
      if (concat_inputs_ > std::numeric_limits<std::uint32_t>::max()) {
        file_.fail("the CONCAT ops read more than 2^32 inputs in all");
      }
      ops_[s.op->index].args<ConcatArgs>().slot = static_cast<std::uint32_t>(concat_inputs_);
      concat_inputs_ += s.op->inputs.size();
    }
  }
  lifetimes[file_.output_value()].last = static_cast<std::int32_t>(steps_.size());

  // Each storage (a value, or an in-place base with the results that share its bytes): the
  // largest of its values, live over the union of their lifetimes, merged into the base's
  // entry in place. A value that is never written needs no bytes and no lifetime.
  std::vector<std::uint64_t> sizes(n_values, 0);
  for (std::uint32_t v = 0; v < n_values; ++v) {
    if (lifetimes[v].first == kUnborn) continue;
    const std::uint32_t r = find(v);
    sizes[r] = std::max(sizes[r], values[v].bytes);
  }
  // Only bases receive merges and a base is never linked, so each linked value's own lifetime
  // is still its own when it is read.
  for (const auto& link : inplace_base) {
    const std::uint32_t v = link.first;
    if (lifetimes[v].first == kUnborn) continue;
    Lifetime& l = lifetimes[find(v)];
    if (l.first == kUnborn) {
      l = lifetimes[v];
    } else {
      l.first = std::min(l.first, lifetimes[v].first);
      l.last = std::max(l.last, lifetimes[v].last);
    }
    lifetimes[v] = kNoLifetime;
  }
  for (Lifetime& l : lifetimes) {
    if (l.first == kUnborn) l = kNoLifetime;
  }
  std::vector<Lifetime>& storage = lifetimes;
  plan_ = plan_memory(sizes, storage);
  if (n_values <= 2048 && !plan_is_valid(plan_, sizes, storage)) {
    throw std::logic_error("qbinfer internal error: invalid memory plan for " + file_.path());
  }
  for (const auto& link : inplace_base) plan_.offsets[link.first] = plan_.offsets[find(link.first)];
  // The planning scratch (16 bytes per value) goes back before the packed weights and the
  // first workspace are allocated, so that they can reuse it instead of adding to the peak (an
  // op-dense file's peak; a CONCAT-dense file's workspace holds 8 bytes per CONCAT input).
  std::vector<std::uint64_t>().swap(sizes);
  std::vector<Lifetime>().swap(lifetimes);
  inplace_base = {};
  if (n_ops >= kReturnScratchAfterOps) return_freed_memory();

  scratch_offset_ = plan_.arena_bytes;
  workspace_bytes_ = plan_.arena_bytes + align_up(scratch);
  if (workspace_bytes_ > kMaxWorkspaceBytes) {
    file_.fail("the activations of one image need " + std::to_string(workspace_bytes_) +
               " bytes, more than the " + std::to_string(kMaxWorkspaceBytes >> 30) + " GiB limit");
  }
  // A 32-bit build (ARMv7) allocates the arena with a 32-bit size_t: a plan above that would
  // be truncated there, and the steps would write past the allocation.
  if (workspace_bytes_ > std::numeric_limits<std::size_t>::max()) {
    file_.fail("the activations of one image need " + std::to_string(workspace_bytes_) +
               " bytes, more than a " + std::to_string(8 * sizeof(std::size_t)) +
               "-bit build can address");
  }

  // The load's memory checked against max_memory before the weights are packed (one buffer
  // per tensor and packing, shared by the steps) and before the first arena is allocated.
  const std::vector<WeightPack> packs = plan_weight_packs(steps_, *kernels_);
  check_load_memory(file_, ops_, steps_, packs, plan_.offsets, plan_.arena_bytes, workspace_bytes_,
                    options.max_memory);
  packed_buffers_ = pack_weights(steps_, packs, *kernels_);
  for (const WeightPack& p : packs) packed_bytes_ += p.bytes;

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

  const auto threads = static_cast<std::size_t>(threads_);
  // One image per thread pays when one image's work is worth a piece of a split step.
  const double image_ns = plan_threads(steps_, file_, ops_, threads, options.split);
  bool any_split = false;
  for (const Step& s : steps_) any_split = any_split || s.parts > 1;
  image_parallel_ =
      threads > 1 && (options.split == SplitPolicy::kAlways || image_ns >= min_part_ns());
  if (threads > 1 && (any_split || image_parallel_)) {
    pool_ = std::make_unique<ThreadPool>(threads);
  }
  // One arena now, so a load that cannot get memory fails here.
  release_workspace(acquire_workspace());
}

Model::~Model() = default;

std::size_t Model::workspaces() const {
  std::lock_guard<std::mutex> lock(workspace_mutex_);
  return workspace_count_;
}

// A free workspace, or a new one when every one is in use (allocated outside the lock).
std::unique_ptr<Model::Workspace> Model::acquire_workspace() {
  {
    std::lock_guard<std::mutex> lock(workspace_mutex_);
    if (!free_workspaces_.empty()) {
      std::unique_ptr<Workspace> ws = std::move(free_workspaces_.back());
      free_workspaces_.pop_back();
      return ws;
    }
  }
  auto ws = std::make_unique<Workspace>(*this);
  std::lock_guard<std::mutex> lock(workspace_mutex_);
  ++workspace_count_;
  // The free list never holds more than every workspace: its push in release never allocates
  // once a workspace has been counted.
  free_workspaces_.reserve(workspace_count_);
  return ws;
}

void Model::release_workspace(std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(workspace_mutex_);
  free_workspaces_.push_back(std::move(ws));
}

// A workspace held for the duration of a call, returned to the free list on every exit.
class Model::Lease {
 public:
  explicit Lease(Model& m) : model_(m), ws_(m.acquire_workspace()) {}
  ~Lease() { model_.release_workspace(std::move(ws_)); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Workspace& operator*() const { return *ws_; }
  Workspace* get() const { return ws_.get(); }

 private:
  Model& model_;
  std::unique_ptr<Workspace> ws_;
};

void Model::run_image(Workspace& ws, ThreadPool* pool, const float* x, Layout layout, float* out,
                      double* step_ns, bool thread_cpu) const {
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
  // Each step on the pool or on this thread alone, as plan_threads chose.
  ExecContext& ctx = ws.ctx;
  auto run_step = [&ctx, pool](const Step& s) {
    ctx.pool = s.parts > 1 ? pool : nullptr;
    ctx.parts = ctx.pool != nullptr ? s.pieces : 1;
    s.run(s, ctx);
  };
  if (step_ns == nullptr) {
    for (const Step& s : steps_) run_step(s);
  } else {
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      const double t0 = now_ns(thread_cpu);
      run_step(steps_[i]);
      step_ns[i] = now_ns(thread_cpu) - t0;
    }
  }
  const ValueInfo& o = output();
  const float* result = ws.ctx.value<const float>(file_.output_value());
  const std::size_t out_pixels = std::size_t{o.height} * o.width;
  if (layout == Layout::kNHWC || out_pixels == 1) {
    std::memcpy(out, result, out_pixels * o.channels * sizeof(float));
  } else {
    for (std::size_t c = 0; c < o.channels; ++c) {
      for (std::size_t p = 0; p < out_pixels; ++p)
        out[c * out_pixels + p] = result[p * o.channels + c];
    }
  }
}

// Chunk c of a batch: images taken one by one from the shared counter, in workspace c. The
// first chunk claimed drains the batch unless others join; a chunk claimed late finds it empty.
void Model::image_worker(void* job_ptr, std::size_t chunk) {
  auto& job = *static_cast<BatchJob*>(job_ptr);
  Workspace& ws = *job.workspaces[chunk];
  for (;;) {
    const std::size_t i = job.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= job.batch) return;
    job.model->run_image(ws, nullptr, job.x + i * job.image_floats, job.layout,
                         job.out + i * job.out_floats);
  }
}

void Model::run(const float* x, std::size_t batch, Layout layout, float* out) {
  if (batch == 0) return;
  const ValueInfo& in = input();
  const std::size_t image_floats = std::size_t{in.height} * in.width * in.channels;
  const auto threads = static_cast<std::size_t>(threads_);
  // The pool if no other call holds it; else this call runs on its own thread.
  std::unique_lock<std::mutex> pool_lock;
  ThreadPool* pool = nullptr;
  if (pool_ != nullptr) {
    pool_lock = std::unique_lock<std::mutex>(pool_mutex_, std::try_to_lock);
    if (pool_lock.owns_lock()) pool = pool_.get();
  }
  if (pool != nullptr && image_parallel_ && batch >= threads) {
    // One image per thread at a time, each in a workspace of its own. Workspaces are made
    // only when a batch first needs them: steady state allocates nothing.
    std::vector<std::unique_ptr<Lease>> leases;
    std::vector<Workspace*> spaces;
    leases.reserve(threads);
    spaces.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) {
      leases.push_back(std::make_unique<Lease>(*this));
      spaces.push_back(leases.back()->get());
    }
    BatchJob job{this, spaces.data(), x, batch, image_floats, output_floats(), layout, out};
    pool->run_chunks(threads, &Model::image_worker, &job);
    return;
  }
  Lease ws(*this);
  for (std::size_t i = 0; i < batch; ++i) {
    run_image(*ws, pool, x + i * image_floats, layout, out + i * output_floats());
  }
}

}  // namespace qbinfer

namespace qbinfer {

std::vector<double> Model::profile(const float* x, Layout layout, int runs, bool thread_cpu) {
  // Waits for the pool (unlike run): a profile times the steps as a batch of one runs them.
  std::unique_lock<std::mutex> pool_lock;
  if (pool_ != nullptr) pool_lock = std::unique_lock<std::mutex>(pool_mutex_);
  const std::size_t n = steps_.size();
  const auto r = static_cast<std::size_t>(std::max(runs, 1));
  std::vector<double> samples(n * r);
  std::vector<float> out(output_floats());
  Lease ws(*this);
  for (std::size_t k = 0; k < r; ++k) {
    run_image(*ws, pool_.get(), x, layout, out.data(), samples.data() + k * n, thread_cpu);
  }
  std::vector<double> median(n);
  std::vector<double> one(r);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t k = 0; k < r; ++k) one[k] = samples[k * n + i];
    std::nth_element(one.begin(), one.begin() + static_cast<std::ptrdiff_t>(r / 2), one.end());
    median[i] = one[r / 2];
  }
  return median;
}

}  // namespace qbinfer
