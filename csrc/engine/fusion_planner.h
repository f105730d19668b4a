// The fusion planner: which ops of a file chain into one step (the chains exec_plan.h
// describes), and whether an epilogue chain may run in place over its first input. It only
// decides; build_steps (exec_plan.cc) turns its chains into steps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/exec_plan.h"
#include "engine/ops.h"
#include "format/qbw_file.h"

namespace qbinfer {

// The ops reading one value, one entry per occurrence, in file order.
struct ReaderList {
  const std::uint32_t* first = nullptr;
  const std::uint32_t* last = nullptr;
  const std::uint32_t* begin() const { return first; }
  const std::uint32_t* end() const { return last; }
  std::size_t size() const { return static_cast<std::size_t>(last - first); }
  std::uint32_t operator[](std::size_t i) const { return first[i]; }
};

// Who reads what, in file order. The readers of every value live in one array (value v's at
// reader_start[v] .. reader_start[v + 1]): two allocations whatever the graph's size, where a
// vector per value cost one allocation per value on files of hundreds of thousands of ops.
struct Graph {
  const QbwFile& file;
  const std::vector<Op>& ops;
  std::vector<std::size_t> reader_start;  // per value, then the end: into reader_ops
  std::vector<std::uint32_t> reader_ops;  // reading op per occurrence, grouped by value
  std::vector<std::uint32_t> producer;    // per value: op index, or kNoValue

  Graph(const QbwFile& f, const std::vector<Op>& o) : file(f), ops(o) {
    const std::size_t n = f.values().size();
    reader_start.assign(n + 1, 0);
    producer.assign(n, kNoValue);
    for (const Op& op : ops) {
      for (const std::uint32_t v : op.inputs) ++reader_start[v + 1];
      producer[op.output] = op.index;
    }
    for (std::size_t v = 0; v < n; ++v) reader_start[v + 1] += reader_start[v];
    reader_ops.resize(reader_start[n]);
    std::vector<std::size_t> fill(reader_start.begin(), reader_start.end() - 1);
    for (const Op& op : ops) {
      for (const std::uint32_t v : op.inputs) reader_ops[fill[v]++] = op.index;
    }
  }

  std::size_t num_values() const { return producer.size(); }
  ReaderList readers(std::uint32_t v) const {
    return {reader_ops.data() + reader_start[v], reader_ops.data() + reader_start[v + 1]};
  }
  bool is_output(std::uint32_t v) const { return v == file.output_value(); }
  // The only op that reads v, once, when v is not the graph output; else kNoValue.
  std::uint32_t sole_reader(std::uint32_t v) const {
    if (is_output(v) || reader_start[v + 1] - reader_start[v] != 1) return kNoValue;
    return reader_ops[reader_start[v]];
  }
  std::size_t channels(std::uint32_t v) const { return file.values()[v].channels; }
};

// A chain being built: its head (a conv, or the first op of an epilogue chain) and the ops it
// absorbs, with the epilogue they add up to.
struct Chain {
  StepKind kind = StepKind::kOp;
  std::vector<std::uint32_t> members;   // head first
  std::uint32_t head_input = kNoValue;  // the conv's input, or the in-place base
  std::uint32_t out = kNoValue;
  std::uint32_t position = 0;  // file index of the op that produces `out`
  std::uint32_t absorbed_concat = kNoValue;
  EpilogueSpec epi;
  int stage = 0;  // last epilogue step taken: one of the kStage constants below, 0 none
};

// The epilogue's steps (epilogue.h) in their order, as Chain::stage counts them: a chain takes
// an op only for a later step than the last it took.
constexpr int kStageRelu = 1;      // 0a
constexpr int kStagePre = 2;       // 0b: an AFFINE only right after the ReLU step
constexpr int kStageScale = 3;     // 1
constexpr int kStageResidual = 4;  // 2
constexpr int kStageMid = 5;       // 3
constexpr int kStagePrelu = 6;     // 4
constexpr int kStagePost = 7;      // 5
constexpr int kStageClip = 8;      // 5b: a CLIP (ReLU6), last of the element-wise steps

// The chains kept, and the chain each op runs in.
struct FusionPlan {
  std::vector<Chain> chains;
  // Per op: its index into chains, or -1 (a step alone). Chains are fewer than ops, which are
  // at most kMaxTableEntries.
  std::vector<std::int32_t> chain_of;
};

// Finds the chains (none when fuse is false) and drops the in-place chains whose base is read
// after them. A chain runs at its `position`, where its result is produced.
FusionPlan plan_fusion(const Graph& g, bool fuse);

// The values a chain reads.
std::vector<std::uint32_t> chain_reads(const Chain& c);

}  // namespace qbinfer
