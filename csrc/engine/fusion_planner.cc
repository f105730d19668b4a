// The fusion planner: which ops chain into one step (fusion_planner.h).
#include "engine/fusion_planner.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace qbinfer {
namespace {

// An AFFINE whose result only a PRELU reads: it runs as the epilogue's mid affine (before the
// PReLU) rather than its post affine, so ADD -> AFFINE -> PRELU -> AFFINE is one chain.
bool feeds_prelu(const Graph& g, const std::vector<char>& taken, const Op& affine) {
  const std::uint32_t r = g.sole_reader(affine.output);
  return r != kNoValue && !taken[r] && g.ops[r].type == OpType::kPReLU;
}

// Takes the ops that follow `chain.out` while each is the sole reader of the value before
// it and comes later in the epilogue's order (the kStage constants: ReLU, pre affine, scale,
// residual, mid affine, PReLU, post affine, clip). The ReLU only right after a conv head, and the
// pre affine only right after that ReLU (QuickNet's conv -> ReLU -> BN -> ADD): an AFFINE
// straight after a conv keeps its old post / mid role, so no existing plan changes.
void extend(const Graph& g, std::vector<char>& taken, Chain& chain) {
  for (;;) {
    const std::uint32_t cur = chain.out;
    const std::uint32_t r = g.sole_reader(cur);
    if (r == kNoValue || taken[r]) break;
    const Op& op = g.ops[r];
    if (op.type == OpType::kReLU && chain.stage == 0 && chain.kind == StepKind::kConvChain) {
      chain.epi.relu = true;
      chain.stage = kStageRelu;
    } else if (op.type == OpType::kAffine && chain.stage == kStageRelu) {
      chain.epi.pre_scale = op.tensors[0]->as<float>();
      chain.epi.pre_bias = op.tensors[1]->as<float>();
      chain.stage = kStagePre;
    } else if (op.type == OpType::kMulChannel && chain.stage < kStageScale && op.inputs[0] == cur) {
      chain.epi.channel_scale = op.inputs[1];
      chain.stage = kStageScale;
    } else if (op.type == OpType::kAdd && chain.stage < kStageResidual) {
      const std::uint32_t other = op.inputs[0] == cur ? op.inputs[1] : op.inputs[0];
      chain.epi.residual = other;
      chain.epi.residual_channels = g.channels(cur);
      // A CONCAT of k copies of one value, read only here: read that value k times instead.
      const std::uint32_t q = g.producer[other];
      if (q != kNoValue && !taken[q] && g.ops[q].type == OpType::kConcat &&
          g.sole_reader(other) == r) {
        const Op& concat = g.ops[q];
        const std::uint32_t src = concat.inputs[0];
        const bool copies = std::all_of(concat.inputs.begin(), concat.inputs.end(),
                                        [src](std::uint32_t v) { return v == src; });
        if (copies && g.channels(cur) % g.channels(src) == 0) {
          chain.epi.residual = src;
          chain.epi.residual_channels = g.channels(src);
          chain.absorbed_concat = q;
        }
      }
      chain.stage = kStageResidual;
    } else if (op.type == OpType::kAffine && chain.stage < kStageMid && feeds_prelu(g, taken, op)) {
      chain.epi.mid_scale = op.tensors[0]->as<float>();
      chain.epi.mid_bias = op.tensors[1]->as<float>();
      chain.stage = kStageMid;
    } else if (op.type == OpType::kPReLU && chain.stage < kStagePrelu) {
      chain.epi.prelu_slope = op.tensors[0]->as<float>();
      chain.stage = kStagePrelu;
    } else if (op.type == OpType::kAffine && chain.stage < kStagePost) {
      chain.epi.post_scale = op.tensors[0]->as<float>();
      chain.epi.post_bias = op.tensors[1]->as<float>();
      chain.stage = kStagePost;
    } else if (op.type == OpType::kClip && chain.stage < kStageClip) {
      // MobileNets' ReLU6 after each depthwise conv: clipped in the block's epilogue pass.
      const ClipBounds bounds = clip_bounds(op);
      chain.epi.clip = true;
      chain.epi.clip_lo = bounds.lo;
      chain.epi.clip_hi = bounds.hi;
      chain.stage = kStageClip;
    } else {
      break;
    }
    chain.members.push_back(r);
    chain.out = op.output;
    chain.position = r;
  }
  // Packing the result for a binary conv, in the same pass.
  for (const std::uint32_t r : g.readers(chain.out)) {
    const Op& op = g.ops[r];
    if (op.type != OpType::kBitpack || taken[r]) continue;
    chain.epi.threshold = op.tensors[0]->as<float>();
    chain.epi.bits = op.output;
    // The floats are still wanted when anything else reads them.
    chain.epi.write_float = g.is_output(chain.out) || g.readers(chain.out).size() > 1;
    chain.members.push_back(r);
    break;
  }
}

void take(std::vector<char>& taken, const Chain& c) {
  for (const std::uint32_t m : c.members) taken[m] = 1;
  if (c.absorbed_concat != kNoValue) taken[c.absorbed_concat] = 1;
}

// Finds the chains, in a fixed order, and hands each to sink(Chain&&). Deterministic: the
// planner calls it more than once rather than hold every candidate chain at once.
template <class Sink>
void find_chains(const Graph& g, Sink&& sink) {
  std::vector<char> taken(g.ops.size(), 0);
  // Conv chains first: they save a whole pass over the conv's output.
  for (const Op& op : g.ops) {
    if (op.type == OpType::kConv2D) {
      // A float conv and the CLIP that alone reads it (ReLU6): the kernel clips its output
      // rows as it writes them (Conv2DKernels::run_rows_clip). Nothing else joins.
      const std::uint32_t r = g.sole_reader(op.output);
      if (r == kNoValue || taken[r] || g.ops[r].type != OpType::kClip) continue;
      Chain c;
      c.kind = StepKind::kConvChain;
      c.members = {op.index, r};
      c.head_input = op.inputs[0];
      c.out = g.ops[r].output;
      c.position = r;
      const ClipBounds bounds = clip_bounds(g.ops[r]);
      c.epi.clip = true;
      c.epi.clip_lo = bounds.lo;
      c.epi.clip_hi = bounds.hi;
      take(taken, c);
      sink(std::move(c));
      continue;
    }
    if (op.type != OpType::kBConv2D && op.type != OpType::kDWConv3x3) continue;
    Chain c;
    c.kind = StepKind::kConvChain;
    c.members = {op.index};
    c.head_input = op.inputs[0];
    c.out = op.output;
    c.position = op.index;
    extend(g, taken, c);
    if (c.members.size() < 2) continue;
    take(taken, c);
    sink(std::move(c));
  }
  // Element-wise chains with no conv in front, in place over their first input.
  for (const Op& op : g.ops) {
    if (taken[op.index]) continue;
    Chain c;
    c.kind = StepKind::kEpilogueChain;
    c.members = {op.index};
    c.out = op.output;
    c.position = op.index;
    switch (op.type) {
      case OpType::kMulChannel:
        c.head_input = op.inputs[0];
        c.epi.channel_scale = op.inputs[1];
        c.stage = kStageScale;
        break;
      case OpType::kAdd:
        // The base is the operand nothing reads later (checked in validate_inplace); try the
        // first, the second if the first is the graph output.
        if (op.inputs[0] == op.inputs[1]) continue;
        c.head_input = g.is_output(op.inputs[0]) ? op.inputs[1] : op.inputs[0];
        c.epi.residual = c.head_input == op.inputs[0] ? op.inputs[1] : op.inputs[0];
        c.epi.residual_channels = op.channels;
        c.stage = kStageResidual;
        break;
      case OpType::kPReLU:
        c.head_input = op.inputs[0];
        c.epi.prelu_slope = op.tensors[0]->as<float>();
        c.stage = kStagePrelu;
        break;
      case OpType::kAffine:
        c.head_input = op.inputs[0];
        if (feeds_prelu(g, taken, op)) {
          c.epi.mid_scale = op.tensors[0]->as<float>();
          c.epi.mid_bias = op.tensors[1]->as<float>();
          c.stage = kStageMid;
        } else {
          c.epi.post_scale = op.tensors[0]->as<float>();
          c.epi.post_bias = op.tensors[1]->as<float>();
          c.stage = kStagePost;
        }
        break;
      default:
        continue;
    }
    if (g.is_output(c.head_input)) continue;
    extend(g, taken, c);
    if (c.members.size() < 2) continue;
    take(taken, c);
    sink(std::move(c));
  }
}

// Per value, the latest position (in the order the steps will run) at which any op reads it,
// and the latest at which an op other than the one that reads it there does: what inplace_ok
// needs, computed in one pass over the readers so that checking every chain stays linear in
// the graph (a value read by many ops is not walked once per chain that could overwrite it).
struct LastReads {
  static constexpr std::uint32_t kNone = kNoValue;
  std::vector<std::uint32_t> op;     // the op reading at `first`
  std::vector<std::uint32_t> first;  // latest reading position, or kNone
  std::vector<std::uint32_t> other;  // latest position of an op other than `op`, or kNone

  LastReads() = default;
  LastReads(const Graph& g, const std::vector<std::uint32_t>& position_of) {
    const std::size_t n = g.num_values();
    op.assign(n, kNone);
    first.assign(n, kNone);
    other.assign(n, kNone);
    auto later = [](std::uint32_t a, std::uint32_t b) { return a == kNone || b > a; };
    for (std::size_t v = 0; v < n; ++v) {
      for (const std::uint32_t r : g.readers(static_cast<std::uint32_t>(v))) {
        const std::uint32_t p = position_of[r];
        if (r == op[v]) continue;  // the same op reading v again
        if (later(first[v], p)) {
          if (op[v] != kNone) other[v] = first[v];
          first[v] = p;
          op[v] = r;
        } else if (later(other[v], p)) {
          other[v] = p;
        }
      }
    }
  }

  // The latest position at which an op other than `except` reads v (kNone: none does).
  std::uint32_t latest_except(std::uint32_t v, std::uint32_t except) const {
    return op[v] == except ? other[v] : first[v];
  }
};

// An in-place chain overwrites its base: nothing may read the base after it (in the order the
// steps will run), and the chain itself may read it only as the base.
bool inplace_ok(const Graph& g, const Chain& c, const LastReads& last) {
  const std::uint32_t base = c.head_input;
  if (g.is_output(base) || base == c.epi.channel_scale || base == c.epi.residual) return false;
  const std::uint32_t latest = last.latest_except(base, c.members[0]);
  return latest == LastReads::kNone || latest < c.position;
}

}  // namespace

// The values a chain reads.
std::vector<std::uint32_t> chain_reads(const Chain& c) {
  std::vector<std::uint32_t> r{c.head_input};
  if (c.epi.channel_scale != kNoValue) r.push_back(c.epi.channel_scale);
  if (c.epi.residual != kNoValue) r.push_back(c.epi.residual);
  return r;
}

FusionPlan plan_fusion(const Graph& g, bool fuse) {
  const std::size_t n = g.ops.size();
  FusionPlan plan;
  plan.chain_of.assign(n, -1);
  if (!fuse) return plan;
  // Where each op will run, every chain found kept: a chain runs where its result is
  // produced. Dropping an in-place chain moves nothing else, so one pass settles it.
  LastReads last;
  {
    std::vector<std::uint32_t> position_of(n);
    for (std::uint32_t i = 0; i < n; ++i) position_of[i] = i;
    find_chains(g, [&position_of](Chain&& c) {
      for (const std::uint32_t m : c.members) position_of[m] = c.position;
      if (c.absorbed_concat != kNoValue) position_of[c.absorbed_concat] = c.position;
    });
    last = LastReads(g, position_of);
  }
  // The chains found again, those kept counted first and then stored: no candidate chain is
  // held (an op-dense file can have hundreds of thousands, which the check drops).
  auto kept = [&g, &last](const Chain& c) {
    return c.kind != StepKind::kEpilogueChain || inplace_ok(g, c, last);
  };
  std::size_t n_kept = 0;
  find_chains(g, [&](Chain&& c) { n_kept += kept(c) ? 1 : 0; });
  plan.chains.reserve(n_kept);
  find_chains(g, [&](Chain&& c) {
    if (!kept(c)) return;
    const auto index = static_cast<std::int32_t>(plan.chains.size());
    for (const std::uint32_t m : c.members) plan.chain_of[m] = index;
    if (c.absorbed_concat != kNoValue) plan.chain_of[c.absorbed_concat] = index;
    plan.chains.push_back(std::move(c));
  });
  return plan;
}

}  // namespace qbinfer
