// Plan assembly: the steps of a file in execution order. The fusion planner
// (fusion_planner.h) chooses the chains, weight_repack.h packs the weights, step_run.h holds
// what each step computes; here each step gets its run function, weights and work split.
#include "engine/exec_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <cstdio>
#include <map>

#include "base/text.h"
#include "engine/fusion_planner.h"
#include "engine/step_run.h"
#include "engine/weight_repack.h"

namespace qbinfer {
namespace {

// A conv writes about this many floats per block before the epilogue runs on them: small
// enough to stay in L2, large enough that the kernel keeps its weights hot across a block.
// (On Cascade Lake 8 K to 64 K floats perform alike; 2 K is markedly slower.)
constexpr std::size_t kBlockFloats = 16 * 1024;

std::size_t block_floats() {
  static const std::size_t n = [] {
    const char* env = std::getenv("QBINFER_BLOCK_FLOATS");  // for tuning experiments only
    const long v = env != nullptr ? std::strtol(env, nullptr, 10) : 0;
    return v > 0 ? static_cast<std::size_t>(v) : kBlockFloats;
  }();
  return n;
}

std::size_t block_units(std::size_t floats_per_unit) {
  return std::max<std::size_t>(1, block_floats() / std::max<std::size_t>(1, floats_per_unit));
}

std::string join_types(const std::vector<Op>& ops, const IndexList& members) {
  std::string s;
  for (const std::uint32_t m : members) {
    if (!s.empty()) s += "+";
    s += op_type_name(static_cast<std::uint32_t>(ops[m].type));
  }
  return s;
}

// Sets the step's run function and work split (its weights are packed by pack_weights).
void prepare(Step& s, const Graph& g) {
  const Op& op = *s.op;
  s.run = run_fn(op.type);
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.bconv;
      s.by_pixel = sh.kernel == 1;
      s.units = s.by_pixel ? sh.height * sh.width : sh.height;
      s.block = block_units(s.by_pixel ? sh.out_channels : sh.width * sh.out_channels);
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.dwconv;
      s.units = sh.out_height;
      s.block = block_units(sh.out_width * sh.multiplier * sh.channels);
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.conv2d;
      s.units = sh.out_height;
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = op.bconv_general;
      s.units = sh.out_height;
      s.block = block_units(sh.out_width * sh.out_channels);
      break;
    }
    default:
      break;
  }
  if (s.kind == StepKind::kEpilogueChain) {
    s.run = &run_epilogue_chain;
    s.units = op.pixels;
    s.block = block_units(op.channels);
  }
  const ValueInfo& out = g.file.values()[s.out];
  s.channels = out.channels;
  s.out_width = out.width;
}

}  // namespace

// Single-thread cost rates of the estimate: a least-squares fit of the thread-CPU time of the
// 184 steps of the four zoo models at 224 and the digits model (AVX2, AMD EPYC), rounded
// down, so the estimate errs toward running a step whole (median estimate/measured 0.76).
constexpr double kNsPerBinaryMac = 0.002;
constexpr double kNsPerFloatMac = 0.01;
constexpr double kNsPerActivationByte = 0.015;
constexpr double kNsPerWeightByte = 0.03;  // read once per image: from memory, not cache

double min_part_ns() {
  static const double ns = [] {
    const char* env = std::getenv("QBINFER_MIN_PART_US");  // for tuning experiments only
    const double v = env != nullptr ? std::strtod(env, nullptr) : 0.0;
    return v > 0.0 ? v * 1000.0 : kMinPartNs;
  }();
  return ns;
}

double estimate_step_ns(const Step& step, const QbwFile& file, const std::vector<Op>& ops) {
  const std::vector<ValueInfo>& values = file.values();
  double ns = 0.0;
  for (const std::uint32_t m : step.members) {
    const Op& op = ops[m];
    double activation_bytes = static_cast<double>(values[op.output].bytes);
    for (const std::uint32_t v : op.inputs)
      activation_bytes += static_cast<double>(values[v].bytes);
    ns += static_cast<double>(op.stats.bops) * kNsPerBinaryMac +
          static_cast<double>(op.stats.flops) * kNsPerFloatMac +
          activation_bytes * kNsPerActivationByte +
          static_cast<double>(op.stats.bytes) * kNsPerWeightByte;
  }
  return ns;
}

void plan_threads(std::vector<Step>& steps, const QbwFile& file, const std::vector<Op>& ops,
                  std::size_t threads, SplitPolicy policy) {
  const double per_part = min_part_ns();
  for (Step& s : steps) {
    s.work_ns = estimate_step_ns(s, file, ops);
    std::size_t parts = threads;
    if (policy == SplitPolicy::kByWork) {
      // Threads that each get at least per_part of the work.
      const double affordable = std::floor(s.work_ns / per_part);
      parts = affordable >= static_cast<double>(threads)
                  ? threads
                  : std::max<std::size_t>(1, static_cast<std::size_t>(affordable));
    }
    // Never more pieces than units of work (rows or pixels; 0: the run function splits
    // something else, pixels or output features, and skips empty pieces).
    std::size_t pieces = parts > 1 ? parts * kPiecesPerThread : 1;
    if (s.units > 0) pieces = std::min(pieces, s.units);
    if (pieces <= 1) parts = 1;
    s.parts = parts;
    s.pieces = parts > 1 ? pieces : 1;
  }
}

bool fusion_enabled_by_env() {
  const char* env = std::getenv("QBINFER_FUSION");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

std::vector<Step> build_steps(const QbwFile& file, const std::vector<Op>& ops,
                              const KernelTable& /*kernels*/, bool fuse) {
  const Graph g(file, ops);
  const FusionPlan plan = plan_fusion(g, fuse);
  const std::vector<Chain>& chains = plan.chains;
  const std::vector<std::int64_t>& chain_of = plan.chain_of;

  std::vector<Step> steps;
  steps.reserve(ops.size());
  std::vector<std::int64_t> emitted(chains.size(), 0);
  for (std::uint32_t i = 0; i < ops.size(); ++i) {
    const std::int64_t c = chain_of[i];
    if (c >= 0) {
      const Chain& ch = chains[static_cast<std::size_t>(c)];
      if (i != ch.position) continue;  // runs with its chain
      Step s;
      s.kind = ch.kind;
      s.op = &ops[ch.members[0]];
      s.members = ch.members;
      if (ch.absorbed_concat != kNoValue) s.members.push_back(ch.absorbed_concat);
      s.reads = chain_reads(ch);
      s.out = ch.out;
      s.writes = {ch.out};
      if (ch.epi.bits != kNoValue) s.writes.push_back(ch.epi.bits);
      if (ch.kind == StepKind::kEpilogueChain) s.inplace = ch.head_input;
      s.epi = ch.epi;
      s.label = join_types(ops, s.members);
      prepare(s, g);
      steps.push_back(std::move(s));
      continue;
    }
    const Op& op = ops[i];
    Step s;
    s.op = &op;
    s.members = {i};
    s.reads.assign(op.inputs.begin(), op.inputs.end());
    s.out = op.output;
    s.writes = {op.output};
    s.label = op_type_name(static_cast<std::uint32_t>(op.type));
    prepare(s, g);
    steps.push_back(std::move(s));
  }
  return steps;
}

std::vector<WeightPack> plan_weight_packs(const std::vector<Step>& steps,
                                          const KernelTable& kernels) {
  std::vector<WeightPack> packs;
  std::map<PackKey, std::size_t> index;  // key -> its entry in packs
  for (std::size_t i = 0; i < steps.size(); ++i) {
    PackKey key = pack_key(*steps[i].op);
    if (key.empty()) continue;
    const auto [it, fresh] = index.emplace(std::move(key), packs.size());
    if (fresh) packs.push_back(WeightPack{packed_weight_bytes(*steps[i].op, kernels), {}});
    packs[it->second].steps.push_back(i);
  }
  return packs;
}

void pack_weights(std::vector<Step>& steps, const std::vector<WeightPack>& packs,
                  const KernelTable& kernels) {
  for (const WeightPack& p : packs) {
    const PackedWeights shared(
        std::make_shared<const AlignedBuffer>(repack_weights(*steps[p.steps[0]].op, kernels)));
    for (const std::size_t i : p.steps) steps[i].packed = shared;
  }
}

namespace {

std::string op_identity(const Op& op) {
  return "op " + std::to_string(op.index) + " " +
         op_type_name(static_cast<std::uint32_t>(op.type)) + " " + quoted(op.name);
}

std::string bytes_and_gib(std::uint64_t bytes) {
  char gib[32];
  std::snprintf(gib, sizeof gib, "%.2f", static_cast<double>(bytes) / double(1 << 30));
  return std::to_string(bytes) + " bytes (" + gib + " GiB)";
}

}  // namespace

void check_load_memory(const QbwFile& file, const std::vector<Op>& ops,
                       const std::vector<Step>& steps, const std::vector<WeightPack>& packs,
                       const std::vector<std::uint64_t>& value_offsets, std::uint64_t arena_bytes,
                       std::uint64_t workspace_bytes, std::uint64_t max_memory) {
  std::size_t concat_entries = 0;
  for (const Step& s : steps) {
    if (s.kind == StepKind::kOp && s.op->type == OpType::kConcat)
      concat_entries += s.op->inputs.size();
  }
  const std::uint64_t workspace = workspace_bytes + concat_table_bytes(concat_entries);
  std::uint64_t packed = 0;
  for (const WeightPack& p : packs) packed += p.bytes;
  // No overflow: the workspace is at most 64 GiB (Model) and each packed buffer is a few times
  // its tensor, which the file holds.
  const std::uint64_t total = workspace + packed;
  if (max_memory == 0 || total <= max_memory) return;

  // The buffer that pushes the total over the limit, counting the packed weights first (in
  // the order the steps use them), then the arena from its lowest byte up: a packed buffer
  // whose running total passes the limit, or else the value whose end in the arena is the
  // first past what the limit leaves for the arena.
  std::string culprit;
  std::uint64_t running = 0;
  for (const WeightPack& p : packs) {
    running += p.bytes;
    if (running <= max_memory) continue;
    culprit = op_identity(*steps[p.steps[0]].op) + " pushes it over with " +
              std::to_string(p.bytes) + " bytes of repacked weights" +
              (p.steps.size() > 1 ? " (shared by " + std::to_string(p.steps.size()) + " steps)"
                                  : std::string());
    break;
  }
  if (culprit.empty()) {
    const std::vector<ValueInfo>& values = file.values();
    std::vector<char> stored(values.size(), 0);
    stored[file.input_value()] = 1;
    for (const Step& s : steps) {
      for (const std::uint32_t v : s.writes) stored[v] = 1;
    }
    const std::uint64_t others = packed + (workspace - arena_bytes);  // scratch, table
    const std::uint64_t room = max_memory > others ? max_memory - others : 0;
    std::uint32_t worst = kNoValue;
    std::uint64_t worst_end = 0;
    for (std::uint32_t v = 0; v < values.size(); ++v) {
      if (!stored[v]) continue;
      const std::uint64_t end = value_offsets[v] + values[v].bytes;
      if (end > room && (worst == kNoValue || end < worst_end)) {
        worst = v;
        worst_end = end;
      }
    }
    if (worst != kNoValue) {
      std::string writer = "the graph input";
      for (const Op& op : ops) {
        if (op.output == worst) writer = op_identity(op);
      }
      culprit = writer + " pushes it over: its output " + quoted(values[worst].name) + " of " +
                std::to_string(values[worst].bytes) + " bytes lies at arena bytes [" +
                std::to_string(value_offsets[worst]) + ", " + std::to_string(worst_end) + ")";
    } else {
      culprit = "the int8 scratch and the CONCAT input table push it over";
    }
  }
  file.fail("loading needs " + bytes_and_gib(total) +
            ", more than max_memory = " + bytes_and_gib(max_memory) +
            ": the activation arena of one call is " + std::to_string(workspace) +
            " bytes and the repacked weights " + std::to_string(packed) + " bytes; " + culprit +
            ". If the file is trusted, raise the limit: qbinfer.load(path, max_memory=BYTES) "
            "(None: no limit), or qbinfer-bench --max-memory BYTES (0: no limit)");
}

}  // namespace qbinfer
