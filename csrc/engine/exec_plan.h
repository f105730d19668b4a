// The execution plan: the validated ops of a file turned into the steps that run.
//
// A step is one op, or a fused chain of ops that the file keeps apart (the file stays
// unfused; the engine fuses when it loads):
//
//   conv chain      CONV2D, then the CLIP that alone reads it (ReLU6), clipped by the conv
//                   kernel on the rows it writes (Conv2DKernels::run_rows_clip); or
//                   BCONV2D or DWCONV3X3, then the element-wise tail of a half in the order
//                   of the epilogue (kernels/epilogue/epilogue.h): [RELU [AFFINE]]
//                   [MUL_CHANNEL] [ADD] [PRELU] [AFFINE] [CLIP], then [BITPACK] of the result
//                   (DWCONV3X3 -> CLIP: the MobileNets' depthwise conv and its ReLU6). The kernel
//                   writes a block of rows, and the epilogue runs on that block while it is in
//                   cache (and packs the bits for the next binary conv in the same pass). A
//                   residual that is a CONCAT of k copies of one value (the repeated shortcut of a
//                   DS half) is read from that value directly (residual_channels = its channels).
//   epilogue chain  the same tail with no conv in front (the SE tail MUL_CHANNEL -> ADD ->
//                   PRELU -> AFFINE -> BITPACK, after the SE has read the whole depthwise
//                   output): one pass, in place over the chain's first input, whose bytes the
//                   chain's result shares.
//
// A chain only absorbs a value that nothing else reads (and that is not the graph output), so
// the intermediates need no arena slot; everything else keeps its slot and the unfused path
// is unchanged. Fused and unfused give bit-identical results: the epilogue performs the same
// rounded operations in the same order as the separate ops.
//
// Weights of BCONV2D, BCONV2D_GENERAL, DWCONV3X3, CONV2D and bitplane8 FCs are repacked at load
// into 64-byte aligned buffers in the layout of the active kernels, one per (tensor, packing):
// steps that pack the same tensor the same way share the buffer (weight_repack.h).
//
// This header holds the types the engine's planning files share; the work is split by job:
//   exec_plan.cc       build_steps: plan assembly (steps in order, work split per step)
//   fusion_planner.*   which ops chain into one step, in-place decisions
//   weight_repack.*    weights packed for the active kernels at load
//   step_run.*         the run functions: what each step computes, calling the kernels
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/aligned_buffer.h"
#include "engine/kernel_table.h"
#include "engine/ops.h"
#include "engine/thread_pool.h"
#include "format/qbw_file.h"

namespace qbinfer {

inline constexpr std::uint32_t kNoValue = std::numeric_limits<std::uint32_t>::max();

// Where a step finds its buffers while it runs on one image, and the threads it may use.
// Everything here is fixed when a workspace is created (except `pool` and `parts`, set per
// step as it runs); nothing is allocated while running.
struct ExecContext {
  unsigned char* arena = nullptr;
  const std::uint64_t* value_offsets = nullptr;  // per value, into arena
  std::int8_t* scratch = nullptr;                // int8 depthwise codes of one image
  const float* const* concat_inputs = nullptr;   // per workspace: the inputs of every CONCAT
  float* partials = nullptr;                     // one float per participant (reductions)
  const KernelTable* kernels = nullptr;
  ThreadPool* pool = nullptr;  // nullptr: the calling thread alone
  std::size_t parts = 1;       // pieces the current step is cut into (Step::pieces)

  template <class T>
  T* value(std::uint32_t v) const {
    return reinterpret_cast<T*>(arena + value_offsets[v]);
  }

  std::size_t participants() const { return pool != nullptr ? parts : 1; }

  // body(begin, end) over contiguous pieces of [0, n), one per participant: each index is
  // handled by exactly one participant, with the same code whatever the thread count.
  template <class Body>
  void parallel_for(std::size_t n, Body&& body) const {
    if (pool == nullptr || parts <= 1 || n <= 1) {
      if (n > 0) body(std::size_t{0}, n);
      return;
    }
    parallel_parts(n, [&body](std::size_t begin, std::size_t end, std::size_t) {
      if (begin < end) body(begin, end);
    });
  }

  // As parallel_for, with the piece's index: body(begin, end, part), called for every part
  // in [0, participants()), an empty range included. The pieces go to whichever pool
  // participants claim them first (ThreadPool::run_chunks).
  template <class Body>
  void parallel_parts(std::size_t n, Body&& body) const {
    if (pool == nullptr || parts <= 1) {
      body(std::size_t{0}, n, std::size_t{0});
      return;
    }
    struct Closure {
      std::remove_reference_t<Body>* body;
      std::size_t n;
      std::size_t parts;
    } closure{&body, n, parts};
    pool->run_chunks(
        parts,
        [](void* c, std::size_t i) {
          auto& cl = *static_cast<Closure*>(c);
          (*cl.body)(ThreadPool::range_begin(cl.n, i, cl.parts),
                     ThreadPool::range_begin(cl.n, i + 1, cl.parts), i);
        },
        &closure);
  }
};

// The element-wise tail of a chain, resolved at load: value indices become pointers into the
// arena when the step runs, tensors are the file's.
struct EpilogueSpec {
  bool relu = false;                 // a RELU right after the chain's head
  const float* pre_scale = nullptr;  // an AFFINE after that RELU, before everything else
  const float* pre_bias = nullptr;
  std::uint32_t channel_scale = kNoValue;  // MUL_CHANNEL's (1, 1, C) factors
  std::uint32_t residual = kNoValue;       // ADD's other operand
  std::size_t residual_channels = 0;
  const float* mid_scale = nullptr;  // an AFFINE between the ADD and the PRELU
  const float* mid_bias = nullptr;
  const float* prelu_slope = nullptr;
  const float* post_scale = nullptr;
  const float* post_bias = nullptr;
  const float* threshold = nullptr;  // BITPACK
  std::uint32_t bits = kNoValue;     // BITPACK's output
  bool write_float = true;
  // A CLIP: after a CONV2D head (its only member) the conv kernel clips as it writes; in any
  // other chain the epilogue's last element-wise step (5b).
  bool clip = false;
  float clip_lo = 0.0f, clip_hi = 0.0f;
};

enum class StepKind : std::uint8_t { kOp, kConvChain, kEpilogueChain };

// A step's weights in the active kernels' layout: a buffer shared, read-only, by every step that
// packs the same tensor the same way (empty for a step with nothing packed). The model owns
// the buffers (pack_weights returns them); a step only points at its own.
class PackedWeights {
 public:
  PackedWeights() = default;
  explicit PackedWeights(const AlignedBuffer* buffer) : buffer_(buffer) {}
  const void* data() const { return buffer_ != nullptr ? buffer_->data() : nullptr; }
  std::size_t size() const { return buffer_ != nullptr ? buffer_->size() : 0; }
  const AlignedBuffer* buffer() const { return buffer_; }

 private:
  const AlignedBuffer* buffer_ = nullptr;
};

// What a fused chain adds to its step: kept beside the steps, so that a step of one op (every
// step of an unfused graph, most steps of an op-dense file) carries none of it.
struct StepChain {
  // A chain holds at most a conv, one op per epilogue stage (8: the kStage constants of
  // fusion_planner.h), a BITPACK and an absorbed CONCAT; it reads its base, the channel scale
  // and the residual; it writes its result and the packed bits.
  static constexpr std::size_t kMaxMembers = 11;
  std::uint32_t members[kMaxMembers] = {};  // file op indices, head first
  std::uint32_t reads[3] = {};              // values read
  std::uint32_t writes[2] = {};             // values written
  std::uint8_t n_members = 0, n_reads = 0, n_writes = 0;
  std::uint32_t inplace = kNoValue;  // epilogue chain: the input updated in place
  std::size_t channels = 0;          // channels of the chain's result
  EpilogueSpec epi;
};

struct Step;
using StepRunFn = void (*)(const Step&, const ExecContext&);

// One step of the plan, only what the run reads: a graph of hundreds of thousands of ops has
// as many steps. The label, the member list and the estimated work are derived on demand
// (step_label, members(), estimate_step_ns).
struct Step {
  const Op* op = nullptr;  // the op it runs (a chain's head)
  StepRunFn run = nullptr;
  const StepChain* chain = nullptr;  // a fused chain's members and epilogue; nullptr: one op
  PackedWeights packed;              // weights in the active kernels' layout (pack_weights)
  // Rows (or pixels, see by_pixel) to split over threads: < 2^32, for a value is < 4 GiB.
  std::uint32_t units = 0;
  std::uint32_t block = 0;   // units per kernel + epilogue block
  std::uint16_t parts = 1;   // threads it is split over when the pool is free (plan_threads)
  std::uint16_t pieces = 1;  // chunks those threads claim: kPiecesPerThread each, at most units
  StepKind kind = StepKind::kOp;
  bool by_pixel = false;  // 1x1 binary conv: the unit is a pixel, not a row

  // The float value the step writes (a chain's result).
  std::uint32_t out() const { return chain != nullptr ? chain->writes[0] : op->output; }
  // File op indices, head first.
  ConstSpan<std::uint32_t> members() const {
    return chain != nullptr ? ConstSpan<std::uint32_t>(chain->members, chain->n_members)
                            : ConstSpan<std::uint32_t>(&op->index, 1);
  }
  // Values read.
  ConstSpan<std::uint32_t> reads() const {
    return chain != nullptr ? ConstSpan<std::uint32_t>(chain->reads, chain->n_reads) : op->inputs;
  }
  // Values written.
  ConstSpan<std::uint32_t> writes() const {
    return chain != nullptr ? ConstSpan<std::uint32_t>(chain->writes, chain->n_writes)
                            : ConstSpan<std::uint32_t>(&op->output, 1);
  }
  // Epilogue chain: the input updated in place; else kNoValue.
  std::uint32_t inplace() const { return chain != nullptr ? chain->inplace : kNoValue; }
  // A chain's epilogue (chain steps only).
  const EpilogueSpec& epi() const { return chain->epi; }
};

// "BCONV2D+ADD+PRELU+AFFINE+BITPACK": the types of the step's ops, head first.
std::string step_label(const Step& step, const std::vector<Op>& ops);

// Builds the steps in execution order. fuse = false: one step per op (the reference path the
// fused one is tested against). The ops must outlive the steps, and `chains` (filled here, one
// entry per fused step, never resized afterwards) too. The weights are not packed yet:
// plan_weight_packs and pack_weights do that once the load's memory is checked.
std::vector<Step> build_steps(const QbwFile& file, const std::vector<Op>& ops,
                              const KernelTable& kernels, bool fuse,
                              std::vector<StepChain>& chains);

// One packed buffer to make: its size and the steps that share it (steps[0] is the first).
struct WeightPack {
  std::uint64_t bytes = 0;
  std::vector<std::size_t> steps;
};

// The distinct packed buffers the steps need, in the order of their first step: one per
// (tensor, packing) however many steps use it. Allocates nothing of the buffers' size.
std::vector<WeightPack> plan_weight_packs(const std::vector<Step>& steps,
                                          const KernelTable& kernels);

// Packs each buffer of `packs` once and hands it to every step that shares it; returns the
// buffers, which the steps point into.
std::vector<std::unique_ptr<const AlignedBuffer>> pack_weights(std::vector<Step>& steps,
                                                               const std::vector<WeightPack>& packs,
                                                               const KernelTable& kernels);

// The default of ModelOptions::max_memory and of the bindings: 2 GiB per load.
inline constexpr std::uint64_t kDefaultMaxMemory = std::uint64_t{2} << 30;

// What a load allocates in proportion to the graph rather than to the file: one workspace
// (the activation arena, with the int8 scratch and the CONCAT pointer table) and the packed
// weights. Over max_memory (0: no limit), refuses the file with a FormatError (file.fail)
// that gives the figures, names the op whose buffer pushes the total over the limit, and says
// how to raise it. Called before the packed weights or any arena are allocated.
//   value_offsets   per value, its offset in the arena (the memory plan)
//   arena_bytes     the values' part of the arena; workspace_bytes adds the scratch
void check_load_memory(const QbwFile& file, const std::vector<Op>& ops,
                       const std::vector<Step>& steps, const std::vector<WeightPack>& packs,
                       const std::vector<std::uint64_t>& value_offsets, std::uint64_t arena_bytes,
                       std::uint64_t workspace_bytes, std::uint64_t max_memory);

// The bytes of a per-workspace CONCAT pointer table of `entries` inputs.
inline std::uint64_t concat_table_bytes(std::size_t entries) {
  return std::uint64_t{entries} * sizeof(const float*);
}

// How a model with a pool of N threads splits its steps.
//   kByWork: each step is cut into as many pieces as its estimated work pays for (at least
//            kMinPartNs of it per piece), at most N; a step too small for two runs on the
//            calling thread whatever N is. The default.
//   kAlways: every step is cut into N pieces (the engine before work-based splitting; tests
//            use it to cover the split code paths on small graphs).
enum class SplitPolicy { kByWork, kAlways };

// The least estimated single-thread work one piece of a split step must carry. A split into
// k pieces saves about work * (1 - 1/k) and costs one round trip of the pool; the round trip
// was measured (qbinfer._testing.pool_latency, 2 threads, AMD EPYC shared with other jobs) at
// 11 us with the workers spinning and 17 us with them parked, so a piece of at least twice
// the parked round trip keeps the hand-off under half of what the split saves, estimate
// errors included (docs/architecture.md, "Threads"). QBINFER_MIN_PART_US overrides it for
// tuning experiments.
inline constexpr double kMinPartNs = 32000;
// A split step is cut into this many pieces per thread, claimed dynamically, so that a thread
// that starts late (or is preempted) leaves its share to the others instead of holding the
// step up. A piece still carries kMinPartNs / 4 = 8 us of work: the claim is one atomic.
inline constexpr std::size_t kPiecesPerThread = 4;
double min_part_ns();

// Estimated single-thread nanoseconds of a step from its work: binary MACs, float MACs and
// the bytes of weights and activations it touches (docs/architecture.md gives the fit).
double estimate_step_ns(const Step& step, const QbwFile& file, const std::vector<Op>& ops);

// Sets every step's parts and pieces for a pool of `threads` participants; returns the
// estimated single-thread work of one image (the sum of estimate_step_ns over the steps).
double plan_threads(std::vector<Step>& steps, const QbwFile& file, const std::vector<Op>& ops,
                    std::size_t threads, SplitPolicy policy);

// Gives the pages of freed heap blocks back to the OS where the C library can (glibc's
// malloc_trim). The load's planners free tens of MB of scratch per stage on a file of
// hundreds of thousands of ops; once a freed block of a few MB has raised glibc's mmap
// threshold, the next such scratch comes from the heap, whose freed blocks glibc keeps
// resident, so without this the next stage's allocations add to the peak instead of reusing
// them.
void return_freed_memory();
// The graph size (ops) from which build_steps gives its planners' scratch back: about 40 MiB of
// it for a million ops, a few MiB below this.
inline constexpr std::size_t kReturnScratchAfterOps = 100000;

// Whether load-time fusion is on for this process: QBINFER_FUSION=0 turns it off (tests).
bool fusion_enabled_by_env();

}  // namespace qbinfer
