// The execution plan: the validated ops of a file turned into the steps that run.
//
// A step is one op, or a fused chain of ops that the file keeps apart (the file stays
// unfused; the engine fuses when it loads):
//
//   conv chain      BCONV2D or DWCONV3X3, then the element-wise tail of a half in the order
//                   of the epilogue (kernels/epilogue/epilogue.h): [MUL_CHANNEL] [ADD]
//                   [PRELU] [AFFINE], then [BITPACK] of the result. The kernel writes a block
//                   of rows, and the epilogue runs on that block while it is in cache (and
//                   packs the bits for the next binary conv in the same pass). A residual that
//                   is a CONCAT of k copies of one value (the repeated shortcut of a DS half)
//                   is read from that value directly (residual_channels = its channels).
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
// Weights of BCONV2D, DWCONV3X3 and CONV2D are repacked at load into 64-byte aligned buffers
// owned by the step, in the layout of the active kernels.
//
// This header holds the types the engine's planning files share; the work is split by job:
//   exec_plan.cc       build_steps: plan assembly (steps in order, work split per step)
//   fusion_planner.*   which ops chain into one step, in-place decisions
//   weight_repack.*    weights packed for the active kernels at load
//   step_run.*         the run functions: what each step computes, calling the kernels
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "engine/kernel_table.h"
#include "engine/ops.h"
#include "engine/thread_pool.h"
#include "format/qbw_file.h"

namespace qbinfer {

inline constexpr std::uint32_t kNoValue = std::numeric_limits<std::uint32_t>::max();

// Where a step finds its buffers while it runs on one image, and the threads it may use.
// Everything here is fixed when a workspace is created (except `pool`, chosen per run);
// nothing is allocated while running.
struct ExecContext {
  unsigned char* arena = nullptr;
  const std::uint64_t* value_offsets = nullptr;  // per value, into arena
  std::int8_t* scratch = nullptr;                // int8 depthwise codes of one image
  const float* const* concat_inputs = nullptr;   // per workspace: the inputs of every CONCAT
  float* partials = nullptr;                     // one float per participant (reductions)
  const KernelTable* kernels = nullptr;
  ThreadPool* pool = nullptr;  // nullptr: the calling thread alone

  template <class T>
  T* value(std::uint32_t v) const {
    return reinterpret_cast<T*>(arena + value_offsets[v]);
  }

  std::size_t participants() const { return pool != nullptr ? pool->size() : 1; }

  // body(begin, end) over contiguous pieces of [0, n), one per participant: each index is
  // handled by exactly one participant, with the same code whatever the thread count.
  template <class Body>
  void parallel_for(std::size_t n, Body&& body) const {
    if (pool == nullptr) {
      if (n > 0) body(std::size_t{0}, n);
      return;
    }
    pool->parallel_for(n, body);
  }

  // As parallel_for, with the participant's index: body(begin, end, part).
  template <class Body>
  void parallel_parts(std::size_t n, Body&& body) const {
    if (pool == nullptr) {
      body(std::size_t{0}, n, std::size_t{0});
      return;
    }
    struct Closure {
      std::remove_reference_t<Body>* body;
      std::size_t n;
    } closure{&body, n};
    pool->run(
        [](void* c, std::size_t i, std::size_t parts) {
          auto& cl = *static_cast<Closure*>(c);
          (*cl.body)(ThreadPool::range_begin(cl.n, i, parts),
                     ThreadPool::range_begin(cl.n, i + 1, parts), i);
        },
        &closure);
  }
};

// The element-wise tail of a chain, resolved at load: value indices become pointers into the
// arena when the step runs, tensors are the file's.
struct EpilogueSpec {
  std::uint32_t channel_scale = kNoValue;  // MUL_CHANNEL's (1, 1, C) factors
  std::uint32_t residual = kNoValue;       // ADD's other operand
  std::size_t residual_channels = 0;
  const float* prelu_slope = nullptr;
  const float* post_scale = nullptr;
  const float* post_bias = nullptr;
  const float* threshold = nullptr;  // BITPACK
  std::uint32_t bits = kNoValue;     // BITPACK's output
  bool write_float = true;
};

enum class StepKind { kOp, kConvChain, kEpilogueChain };

struct Step;
using StepRunFn = void (*)(const Step&, const ExecContext&);

struct Step {
  StepKind kind = StepKind::kOp;
  const Op* op = nullptr;              // the op it runs (a chain's head)
  std::vector<std::uint32_t> members;  // file op indices, head first
  std::vector<std::uint32_t> reads;    // values read
  std::vector<std::uint32_t> writes;   // values written
  std::uint32_t out = kNoValue;        // the float value the step writes (a chain's result)
  std::uint32_t inplace = kNoValue;    // epilogue chain: the input updated in place
  std::size_t channels = 0;            // channels of `out` (chains)
  std::size_t out_width = 0;           // pixels per row of `out` (chains)
  std::size_t units = 0;               // rows (or pixels, see by_pixel) to split over threads
  std::size_t block = 0;               // units per kernel + epilogue block
  bool by_pixel = false;               // 1x1 binary conv: the unit is a pixel, not a row
  std::size_t concat_slot = 0;         // CONCAT: its first entry in ExecContext::concat_inputs
  EpilogueSpec epi;
  AlignedBuffer packed;  // weights in the active kernels' layout
  StepRunFn run = nullptr;
  std::string label;  // "BCONV2D+ADD+PRELU+AFFINE+BITPACK"
};

// Builds the steps in execution order. fuse = false: one step per op (the reference path the
// fused one is tested against). The ops must outlive the steps.
std::vector<Step> build_steps(const QbwFile& file, const std::vector<Op>& ops,
                              const KernelTable& kernels, bool fuse);

// Whether load-time fusion is on for this process: QBINFER_FUSION=0 turns it off (tests).
bool fusion_enabled_by_env();

}  // namespace qbinfer
