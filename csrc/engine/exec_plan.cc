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

#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

// A size that the step keeps in 32 bits: rows or pixels of a value (< 4 GiB), or a block of
// them (clamped: a block never needs to be longer than the whole).
std::uint32_t narrow_units(std::size_t n) {
  return static_cast<std::uint32_t>(
      std::min<std::size_t>(n, std::numeric_limits<std::uint32_t>::max()));
}

// Sets the step's run function and work split (its weights are packed by pack_weights).
void prepare(Step& s, const StepChain* chain) {
  const Op& op = *s.op;
  s.run = run_fn(op.type);
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.args<BConv2DArgs>().shape;
      s.by_pixel = sh.kernel == 1;
      s.units = narrow_units(s.by_pixel ? sh.height * sh.width : sh.height);
      s.block =
          narrow_units(block_units(s.by_pixel ? sh.out_channels : sh.width * sh.out_channels));
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.args<DWConv3x3Args>().shape;
      s.units = narrow_units(sh.out_height);
      s.block = narrow_units(block_units(sh.out_width * sh.multiplier * sh.channels));
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.args<Conv2DArgs>().shape;
      s.units = narrow_units(sh.out_height);
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = op.args<BConv2DGeneralArgs>().shape;
      s.units = narrow_units(sh.out_height);
      s.block = narrow_units(block_units(sh.out_width * sh.out_channels));
      break;
    }
    default:
      break;
  }
  if (s.kind == StepKind::kEpilogueChain) {
    s.run = &run_epilogue_chain;
    s.units = narrow_units(op.pixels);
    s.block = narrow_units(block_units(chain->channels));
  }
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

std::string step_label(const Step& step, const std::vector<Op>& ops) {
  std::string s;
  for (const std::uint32_t m : step.members()) {
    if (!s.empty()) s += "+";
    s += op_type_name(static_cast<std::uint32_t>(ops[m].type));
  }
  return s;
}

double estimate_step_ns(const Step& step, const QbwFile& file, const std::vector<Op>& ops) {
  const std::vector<ValueInfo>& values = file.values();
  double ns = 0.0;
  for (const std::uint32_t m : step.members()) {
    const Op& op = ops[m];
    double activation_bytes = static_cast<double>(values[op.output].bytes);
    for (const std::uint32_t v : op.inputs)
      activation_bytes += static_cast<double>(values[v].bytes);
    ns += static_cast<double>(op.stats().bops) * kNsPerBinaryMac +
          static_cast<double>(op.stats().flops) * kNsPerFloatMac +
          activation_bytes * kNsPerActivationByte +
          static_cast<double>(op.stats().bytes) * kNsPerWeightByte;
  }
  return ns;
}

double plan_threads(std::vector<Step>& steps, const QbwFile& file, const std::vector<Op>& ops,
                    std::size_t threads, SplitPolicy policy) {
  const double per_part = min_part_ns();
  double image_ns = 0.0;
  for (Step& s : steps) {
    const double work_ns = estimate_step_ns(s, file, ops);
    image_ns += work_ns;
    std::size_t parts = threads;
    if (policy == SplitPolicy::kByWork) {
      // Threads that each get at least per_part of the work.
      const double affordable = std::floor(work_ns / per_part);
      parts = affordable >= static_cast<double>(threads)
                  ? threads
                  : std::max<std::size_t>(1, static_cast<std::size_t>(affordable));
    }
    // Never more pieces than units of work (rows or pixels; 0: the run function splits
    // something else, pixels or output features, and skips empty pieces).
    std::size_t pieces = parts > 1 ? parts * kPiecesPerThread : 1;
    if (s.units > 0) pieces = std::min<std::size_t>(pieces, s.units);
    if (pieces <= 1) parts = 1;
    // threads <= Model::kMaxThreads (1024): both fit 16 bits.
    s.parts = static_cast<std::uint16_t>(parts);
    s.pieces = static_cast<std::uint16_t>(parts > 1 ? pieces : 1);
  }
  return image_ns;
}

void return_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

bool fusion_enabled_by_env() {
  const char* env = std::getenv("QBINFER_FUSION");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

std::vector<Step> build_steps(const QbwFile& file, const std::vector<Op>& ops,
                              const KernelTable& /*kernels*/, bool fuse,
                              std::vector<StepChain>& step_chains) {
  std::vector<Step> steps;
  {
    // The graph's reader lists only serve the planner: freed before the steps are made.
    FusionPlan plan;
    {
      const Graph g(file, ops);
      plan = plan_fusion(g, fuse);
    }
    // Only after a large graph: on a small one the scratch is a few MiB at most, and giving it
    // back makes the next load in the process fault its pages in again (QSB-Net-Large, 171
    // ops, loaded 3 ms slower of 12 ms in a loop).
    if (ops.size() >= kReturnScratchAfterOps) return_freed_memory();
    // The chain records first, in the order of their steps: exactly as many as chains, so the
    // steps' pointers into them never move.
    step_chains.clear();
    step_chains.reserve(plan.chains.size());
    for (const Chain& ch : plan.chains) {
      StepChain sc;
      for (const std::uint32_t m : ch.members) sc.members[sc.n_members++] = m;
      if (ch.absorbed_concat != kNoValue) sc.members[sc.n_members++] = ch.absorbed_concat;
      for (const std::uint32_t v : chain_reads(ch)) sc.reads[sc.n_reads++] = v;
      sc.writes[sc.n_writes++] = ch.out;
      if (ch.epi.bits != kNoValue) sc.writes[sc.n_writes++] = ch.epi.bits;
      if (ch.kind == StepKind::kEpilogueChain) sc.inplace = ch.head_input;
      sc.channels = file.values()[ch.out].channels;
      sc.epi = ch.epi;
      step_chains.push_back(sc);
    }
    // Exactly one step per op not in a chain, and one per chain.
    std::size_t n_steps = plan.chains.size();
    for (const std::int32_t c : plan.chain_of) n_steps += c < 0 ? 1 : 0;
    steps.reserve(n_steps);
    for (std::uint32_t i = 0; i < ops.size(); ++i) {
      const std::int32_t c = plan.chain_of[i];
      Step s;
      if (c >= 0) {
        const Chain& ch = plan.chains[static_cast<std::size_t>(c)];
        if (i != ch.position) continue;  // runs with its chain
        s.kind = ch.kind;
        s.op = &ops[ch.members[0]];
        s.chain = &step_chains[static_cast<std::size_t>(c)];
      } else {
        s.op = &ops[i];
      }
      prepare(s, s.chain);
      steps.push_back(s);
    }
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

std::vector<std::unique_ptr<const AlignedBuffer>> pack_weights(std::vector<Step>& steps,
                                                               const std::vector<WeightPack>& packs,
                                                               const KernelTable& kernels) {
  std::vector<std::unique_ptr<const AlignedBuffer>> buffers;
  buffers.reserve(packs.size());
  for (const WeightPack& p : packs) {
    buffers.push_back(
        std::make_unique<const AlignedBuffer>(repack_weights(*steps[p.steps[0]].op, kernels)));
    const PackedWeights shared(buffers.back().get());
    for (const std::size_t i : p.steps) steps[i].packed = shared;
  }
  return buffers;
}

namespace {

std::string op_identity(const Op& op) {
  return "op " + std::to_string(op.index) + " " +
         op_type_name(static_cast<std::uint32_t>(op.type)) + " " + quoted(std::string(op.name()));
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
      for (const std::uint32_t v : s.writes()) stored[v] = 1;
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
      culprit = writer + " pushes it over: its output " + quoted(std::string(values[worst].name)) +
                " of " + std::to_string(values[worst].bytes) + " bytes lies at arena bytes [" +
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
