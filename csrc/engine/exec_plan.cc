#include "engine/exec_plan.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace qbinfer {

// --------------------------------------------------------------------------- AlignedBuffer
AlignedBuffer::AlignedBuffer(std::size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  auto* p = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t{64}));
  std::memset(p, 0, bytes);
  data_.reset(p);
}

void AlignedBuffer::Free::operator()(unsigned char* p) const {
  ::operator delete(p, std::align_val_t{64});
}

namespace {

// Element-wise ops below this many floats run on the calling thread: a hand-off would cost
// more than it saves.
constexpr std::size_t kParallelMinFloats = 32 * 1024;
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

// --------------------------------------------------------------------------- epilogue
Epilogue make_epilogue(const EpilogueSpec& s, const ExecContext& ctx) {
  Epilogue ep;
  if (s.channel_scale != kNoValue) ep.channel_scale = ctx.value<const float>(s.channel_scale);
  if (s.residual != kNoValue) {
    ep.residual = ctx.value<const float>(s.residual);
    ep.residual_channels = s.residual_channels;
  }
  ep.prelu_slope = s.prelu_slope;
  ep.post_scale = s.post_scale;
  ep.post_bias = s.post_bias;
  ep.write_float = s.write_float;
  if (s.bits != kNoValue) {
    ep.threshold = s.threshold;
    ep.bits = ctx.value<BitWord>(s.bits);
  }
  return ep;
}

// --------------------------------------------------------------------------- run functions
// Binary conv, alone or as the head of a chain: blocks of rows (3x3) or of pixels (1x1, where
// pixels are independent and a block runs as a 1 x n image), then the epilogue on the block.
void run_bconv2d(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const BConvShape& shape = op.bconv;
  const BitWord* in = ctx.value<const BitWord>(op.inputs[0]);
  float* out = ctx.value<float>(step.out);
  const float* scale = op.tensors[1]->as<float>();
  const float* bias = op.tensors[2]->as<float>();
  const BConvKernels& k = *ctx.kernels->bconv;
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  const bool chain = step.kind == StepKind::kConvChain;
  const Epilogue ep = chain ? make_epilogue(step.epi, ctx) : Epilogue{};
  const std::size_t words = words_for_channels(shape.in_channels);
  const std::size_t co = shape.out_channels;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t u = begin; u < end; u += step.block) {
      const std::size_t u1 = std::min(end, u + step.block);
      std::size_t p0 = u, p1 = u1;
      if (step.by_pixel) {
        const BConvShape strip{1, u1 - u, shape.in_channels, co, 1, shape.padding};
        k.run_rows(strip, in + u * words, step.packed.data(), scale, bias, 0, 1, out + u * co);
      } else {
        k.run_rows(shape, in, step.packed.data(), scale, bias, u, u1, out);
        p0 = u * shape.width;
        p1 = u1 * shape.width;
      }
      if (chain) e.rows(ep, co, p0, p1, out);
    }
  });
}

// Depthwise conv, alone or as the head of a chain. INT8 first quantizes the whole biased
// input (its scale, when dynamic, is a max over the image: exact in any order).
void run_dwconv3x3(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const DWConvShape& shape = op.dwconv;
  const float* in = ctx.value<const float>(op.inputs[0]);
  const float* pre_bias = op.tensors[0] != nullptr ? op.tensors[0]->as<float>() : nullptr;
  float* out = ctx.value<float>(step.out);
  const float* scale = op.tensors[3]->as<float>();
  const float* bias = op.tensors[4]->as<float>();
  const DWConvKernels& k = *ctx.kernels->dwconv;
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  const bool chain = step.kind == StepKind::kConvChain;
  const Epilogue ep = chain ? make_epilogue(step.epi, ctx) : Epilogue{};
  const std::size_t oc = shape.multiplier * shape.channels;
  const std::size_t row_pixels = shape.out_width;

  float input_scale = op.dw_input_scale;
  if (op.dw_int8) {
    const std::size_t pixels = shape.in_height * shape.in_width;
    const std::size_t c = shape.channels;
    if (!(input_scale > 0.0f)) {
      float* partial = ctx.partials;
      const std::size_t parts = ctx.participants();
      for (std::size_t i = 0; i < parts; ++i) partial[i] = 0.0f;
      ctx.parallel_parts(pixels, [&](std::size_t b, std::size_t en, std::size_t part) {
        if (b < en) partial[part] = k.input_absmax(in + b * c, pre_bias, en - b, c);
      });
      float absmax = 0.0f;
      for (std::size_t i = 0; i < parts; ++i) absmax = std::max(absmax, partial[i]);
      input_scale = dwconv_dynamic_input_scale(absmax);
    }
    const float s = input_scale;
    std::int8_t* q = ctx.scratch;
    ctx.parallel_for(pixels, [&](std::size_t b, std::size_t en) {
      k.quantize_input(in + b * c, pre_bias, en - b, c, s, q + b * c);
    });
  }
  const float s = input_scale;
  const float* weight_scale = op.dw_int8 ? op.tensors[2]->as<float>() : nullptr;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t y = begin; y < end; y += step.block) {
      const std::size_t y1 = std::min(end, y + step.block);
      if (op.dw_int8) {
        k.run_rows_qs8(shape, ctx.scratch, step.packed.data(), weight_scale, s, scale, bias, y, y1,
                       out);
      } else {
        k.run_rows_f32(shape, in, pre_bias, step.packed.data(), scale, bias, y, y1, out);
      }
      if (chain) e.rows(ep, oc, y * row_pixels, y1 * row_pixels, out);
    }
  });
}

// The element-wise tail alone, in place over its first input (which shares `out`'s bytes).
void run_epilogue_chain(const Step& step, const ExecContext& ctx) {
  float* out = ctx.value<float>(step.out);
  const Epilogue ep = make_epilogue(step.epi, ctx);
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t p = begin; p < end; p += step.block) {
      e.rows(ep, step.channels, p, std::min(end, p + step.block), out);
    }
  });
}

void run_conv2d(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const float* bias = op.tensors[1]->as<float>();
  const Conv2DKernels& k = *ctx.kernels->conv2d;
  ctx.parallel_for(step.units, [&](std::size_t b, std::size_t e) {
    k.run_rows(op.conv2d, in, step.packed.data(), bias, op.relu, b, e, out);
  });
}

// Per-pixel ops split by pixels once they are large enough to pay for the hand-off.
template <class Body>
void pixelwise(const Step& step, const ExecContext& ctx, Body&& body) {
  const Op& op = *step.op;
  if (op.pixels * op.channels < kParallelMinFloats || ctx.pool == nullptr) {
    body(std::size_t{0}, op.pixels);
    return;
  }
  ctx.parallel_for(op.pixels, body);
}

void run_bitpack(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  BitWord* out = ctx.value<BitWord>(op.output);
  const float* threshold = op.tensors[0]->as<float>();
  const std::size_t c = op.channels;
  const std::size_t words = words_for_channels(c);
  const BitpackKernels& k = *ctx.kernels->bitpack;
  pixelwise(step, ctx, [&](std::size_t b, std::size_t e) {
    k.f32_nhwc(in + b * c, e - b, c, threshold, out + b * words);
  });
}

// An element-wise op over input 0 and the output, float rows of op.channels split by pixels:
// body(kernels, in, out, first pixel, pixel count) with in and out at the first pixel.
template <class Body>
void elementwise(const Step& step, const ExecContext& ctx, Body&& body) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const std::size_t c = op.channels;
  const ElementwiseKernels& k = *ctx.kernels->elementwise;
  pixelwise(step, ctx,
            [&](std::size_t b, std::size_t e) { body(k, in + b * c, out + b * c, b, e - b); });
}

void run_affine(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* scale = op.tensors[0]->as<float>();
  const float* bias = op.tensors[1]->as<float>();
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { k.affine(in, n, op.channels, scale, bias, out); });
}

void run_prelu(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* slope = op.tensors[0]->as<float>();
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { k.prelu(in, n, op.channels, slope, out); });
}

// ReLU and sigmoid: the same flat loop over pixels * channels floats, one kernel or the other.
template <void (*ElementwiseKernels::*Kernel)(const float*, std::size_t, float*)>
void run_flat(const Step& step, const ExecContext& ctx) {
  const std::size_t c = step.op->channels;
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { (k.*Kernel)(in, n * c, out); });
}

void run_add(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* addend = ctx.value<const float>(op.inputs[1]);
  const std::size_t c = op.channels;
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t first,
                  std::size_t n) { k.add(in, addend + first * c, n * c, out); });
}

void run_mul_channel(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* s = ctx.value<const float>(op.inputs[1]);
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { k.mul_channel(in, n, op.channels, s, out); });
}

void run_avgpool(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const PoolKernels& k = *ctx.kernels->pool;
  const AvgPoolShape& s = op.avgpool;
  if (s.out_height * s.out_width * s.channels < kParallelMinFloats || ctx.pool == nullptr) {
    k.avgpool(s, in, out);
    return;
  }
  ctx.parallel_for(s.out_height,
                   [&](std::size_t b, std::size_t e) { k.avgpool_rows(s, in, b, e, out); });
}

void run_global_avgpool(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  ctx.kernels->pool->global_avgpool(ctx.value<const float>(op.inputs[0]), op.pixels, op.channels,
                                    ctx.value<float>(op.output));
}

void run_concat(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  ctx.kernels->pool->concat(ctx.concat_inputs + step.concat_slot, op.concat_channels.data(),
                            op.concat_channels.size(), op.pixels, ctx.value<float>(op.output));
}

// FC: fp32 and int8 split by output features (weight rows are independent); bitplane8's
// planes interleave the outputs, so it runs whole.
void run_fc(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* x = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const FCKernels& k = *ctx.kernels->fc;
  const float* bias = op.tensors[2]->as<float>();
  const std::size_t c = op.channels;
  const bool split = ctx.pool != nullptr && op.out_features * c >= kParallelMinFloats * 4;
  switch (op.fc_encoding) {
    case 0: {
      const float* w = op.tensors[0]->as<float>();
      auto body = [&](std::size_t b, std::size_t e) {
        k.f32(c, e - b, x, w + b * c, bias + b, out + b);
      };
      split ? ctx.parallel_for(op.out_features, body) : body(0, op.out_features);
      break;
    }
    case 1: {
      const std::int8_t* w = op.tensors[0]->as<std::int8_t>();
      const float* ws = op.tensors[1]->as<float>();
      auto body = [&](std::size_t b, std::size_t e) {
        k.qs8(c, e - b, x, w + b * c, ws + b, bias + b, out + b);
      };
      split ? ctx.parallel_for(op.out_features, body) : body(0, op.out_features);
      break;
    }
    default:
      k.bitplane8(c, op.out_features, x, op.tensors[0]->as<BitWord>(), op.tensors[1]->as<float>(),
                  bias, out);
      break;
  }
}

StepRunFn run_fn(OpType type) {
  switch (type) {
    case OpType::kConv2D:
      return &run_conv2d;
    case OpType::kDWConv3x3:
      return &run_dwconv3x3;
    case OpType::kBitpack:
      return &run_bitpack;
    case OpType::kBConv2D:
      return &run_bconv2d;
    case OpType::kAffine:
      return &run_affine;
    case OpType::kPReLU:
      return &run_prelu;
    case OpType::kReLU:
      return &run_flat<&ElementwiseKernels::relu>;
    case OpType::kSigmoid:
      return &run_flat<&ElementwiseKernels::sigmoid>;
    case OpType::kAdd:
      return &run_add;
    case OpType::kMulChannel:
      return &run_mul_channel;
    case OpType::kAvgPool:
      return &run_avgpool;
    case OpType::kGlobalAvgPool:
      return &run_global_avgpool;
    case OpType::kConcat:
      return &run_concat;
    case OpType::kFC:
      return &run_fc;
  }
  return nullptr;
}

// --------------------------------------------------------------------------- planning
// Who reads what, in file order.
struct Graph {
  const QbwFile& file;
  const std::vector<Op>& ops;
  std::vector<std::vector<std::uint32_t>> readers;  // per value: reading op per occurrence
  std::vector<std::uint32_t> producer;              // per value: op index, or kNoValue

  Graph(const QbwFile& f, const std::vector<Op>& o) : file(f), ops(o) {
    readers.resize(f.values().size());
    producer.assign(f.values().size(), kNoValue);
    for (const Op& op : ops) {
      for (const std::uint32_t v : op.inputs) readers[v].push_back(op.index);
      producer[op.output] = op.index;
    }
  }

  bool is_output(std::uint32_t v) const { return v == file.output_value(); }
  // The only op that reads v, once, when v is not the graph output; else kNoValue.
  std::uint32_t sole_reader(std::uint32_t v) const {
    if (is_output(v) || readers[v].size() != 1) return kNoValue;
    return readers[v][0];
  }
  std::size_t channels(std::uint32_t v) const { return file.values()[v].channels; }
};

struct Chain {
  StepKind kind = StepKind::kOp;
  std::vector<std::uint32_t> members;   // head first
  std::uint32_t head_input = kNoValue;  // the conv's input, or the in-place base
  std::uint32_t out = kNoValue;
  std::uint32_t position = 0;  // file index of the op that produces `out`
  std::uint32_t absorbed_concat = kNoValue;
  EpilogueSpec epi;
  int stage = 0;  // last epilogue step taken: 1 scale .. 4 affine
};

// Takes the ops that follow `chain.out` while each is the sole reader of the value before
// it and comes later in the epilogue's order.
void extend(const Graph& g, std::vector<char>& taken, Chain& chain) {
  for (;;) {
    const std::uint32_t cur = chain.out;
    const std::uint32_t r = g.sole_reader(cur);
    if (r == kNoValue || taken[r]) break;
    const Op& op = g.ops[r];
    if (op.type == OpType::kMulChannel && chain.stage < 1 && op.inputs[0] == cur) {
      chain.epi.channel_scale = op.inputs[1];
      chain.stage = 1;
    } else if (op.type == OpType::kAdd && chain.stage < 2) {
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
      chain.stage = 2;
    } else if (op.type == OpType::kPReLU && chain.stage < 3) {
      chain.epi.prelu_slope = op.tensors[0]->as<float>();
      chain.stage = 3;
    } else if (op.type == OpType::kAffine && chain.stage < 4) {
      chain.epi.post_scale = op.tensors[0]->as<float>();
      chain.epi.post_bias = op.tensors[1]->as<float>();
      chain.stage = 4;
    } else {
      break;
    }
    chain.members.push_back(r);
    chain.out = op.output;
    chain.position = r;
  }
  // Packing the result for a binary conv, in the same pass.
  for (const std::uint32_t r : g.readers[chain.out]) {
    const Op& op = g.ops[r];
    if (op.type != OpType::kBitpack || taken[r]) continue;
    chain.epi.threshold = op.tensors[0]->as<float>();
    chain.epi.bits = op.output;
    // The floats are still wanted when anything else reads them.
    chain.epi.write_float = g.is_output(chain.out) || g.readers[chain.out].size() > 1;
    chain.members.push_back(r);
    break;
  }
}

void take(std::vector<char>& taken, const Chain& c) {
  for (const std::uint32_t m : c.members) taken[m] = 1;
  if (c.absorbed_concat != kNoValue) taken[c.absorbed_concat] = 1;
}

std::vector<Chain> find_chains(const Graph& g) {
  std::vector<Chain> chains;
  std::vector<char> taken(g.ops.size(), 0);
  // Conv chains first: they save a whole pass over the conv's output.
  for (const Op& op : g.ops) {
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
    chains.push_back(std::move(c));
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
        c.stage = 1;
        break;
      case OpType::kAdd:
        // The base is the operand nothing reads later (checked in validate_inplace); try the
        // first, the second if the first is the graph output.
        if (op.inputs[0] == op.inputs[1]) continue;
        c.head_input = g.is_output(op.inputs[0]) ? op.inputs[1] : op.inputs[0];
        c.epi.residual = c.head_input == op.inputs[0] ? op.inputs[1] : op.inputs[0];
        c.epi.residual_channels = op.channels;
        c.stage = 2;
        break;
      case OpType::kPReLU:
        c.head_input = op.inputs[0];
        c.epi.prelu_slope = op.tensors[0]->as<float>();
        c.stage = 3;
        break;
      case OpType::kAffine:
        c.head_input = op.inputs[0];
        c.epi.post_scale = op.tensors[0]->as<float>();
        c.epi.post_bias = op.tensors[1]->as<float>();
        c.stage = 4;
        break;
      default:
        continue;
    }
    if (g.is_output(c.head_input)) continue;
    extend(g, taken, c);
    if (c.members.size() < 2) continue;
    take(taken, c);
    chains.push_back(std::move(c));
  }
  return chains;
}

// The values a chain reads.
std::vector<std::uint32_t> chain_reads(const Chain& c) {
  std::vector<std::uint32_t> r{c.head_input};
  if (c.epi.channel_scale != kNoValue) r.push_back(c.epi.channel_scale);
  if (c.epi.residual != kNoValue) r.push_back(c.epi.residual);
  return r;
}

// An in-place chain overwrites its base: nothing may read the base after it (in the order the
// steps will run), and the chain itself may read it only as the base.
bool inplace_ok(const Graph& g, const Chain& c, const std::vector<std::uint32_t>& position_of) {
  const std::uint32_t base = c.head_input;
  if (g.is_output(base) || base == c.epi.channel_scale || base == c.epi.residual) return false;
  for (const std::uint32_t r : g.readers[base]) {
    if (r == c.members[0]) continue;
    if (position_of[r] >= c.position) return false;
  }
  return true;
}

std::string join_types(const std::vector<Op>& ops, const std::vector<std::uint32_t>& members) {
  std::string s;
  for (const std::uint32_t m : members) {
    if (!s.empty()) s += "+";
    s += op_type_name(static_cast<std::uint32_t>(ops[m].type));
  }
  return s;
}

// Packs the step's weights for the active kernels and sets its work split.
void prepare(Step& s, const Graph& g, const KernelTable& kt) {
  const Op& op = *s.op;
  s.run = run_fn(op.type);
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.bconv;
      s.packed = AlignedBuffer(kt.bconv->packed_weight_bytes(sh));
      kt.bconv->pack_weight(sh, op.tensors[0]->as<BitWord>(), s.packed.data());
      s.by_pixel = sh.kernel == 1;
      s.units = s.by_pixel ? sh.height * sh.width : sh.height;
      s.block = block_units(s.by_pixel ? sh.out_channels : sh.width * sh.out_channels);
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.dwconv;
      if (op.dw_int8) {
        s.packed = AlignedBuffer(kt.dwconv->packed_qs8_bytes(sh));
        kt.dwconv->pack_qs8(sh, op.tensors[1]->as<std::int8_t>(), s.packed.data());
      } else {
        s.packed = AlignedBuffer(kt.dwconv->packed_f32_bytes(sh));
        kt.dwconv->pack_f32(sh, op.tensors[1]->as<float>(), s.packed.data());
      }
      s.units = sh.out_height;
      s.block = block_units(sh.out_width * sh.multiplier * sh.channels);
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.conv2d;
      s.packed = AlignedBuffer(kt.conv2d->packed_bytes(sh));
      kt.conv2d->pack(sh, op.tensors[0]->as<float>(), s.packed.data());
      s.units = sh.out_height;
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

bool fusion_enabled_by_env() {
  const char* env = std::getenv("QBINFER_FUSION");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

std::vector<Step> build_steps(const QbwFile& file, const std::vector<Op>& ops,
                              const KernelTable& kernels, bool fuse) {
  const Graph g(file, ops);
  std::vector<Chain> chains = fuse ? find_chains(g) : std::vector<Chain>{};

  // Where each op will run: a chain runs where its result is produced.
  std::vector<std::uint32_t> position_of(ops.size());
  std::vector<std::int64_t> chain_of(ops.size(), -1);
  auto place = [&] {
    for (std::uint32_t i = 0; i < ops.size(); ++i) {
      position_of[i] = i;
      chain_of[i] = -1;
    }
    for (std::size_t c = 0; c < chains.size(); ++c) {
      for (const std::uint32_t m : chains[c].members) {
        position_of[m] = chains[c].position;
        chain_of[m] = static_cast<std::int64_t>(c);
      }
      if (chains[c].absorbed_concat != kNoValue) {
        position_of[chains[c].absorbed_concat] = chains[c].position;
        chain_of[chains[c].absorbed_concat] = static_cast<std::int64_t>(c);
      }
    }
  };
  place();
  // Dropping an in-place chain moves nothing else, so one pass settles it.
  std::vector<Chain> kept;
  for (Chain& c : chains) {
    if (c.kind == StepKind::kEpilogueChain && !inplace_ok(g, c, position_of)) continue;
    kept.push_back(std::move(c));
  }
  chains = std::move(kept);
  place();

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
      prepare(s, g, kernels);
      steps.push_back(std::move(s));
      continue;
    }
    const Op& op = ops[i];
    Step s;
    s.op = &op;
    s.members = {i};
    s.reads = op.inputs;
    s.out = op.output;
    s.writes = {op.output};
    s.label = op_type_name(static_cast<std::uint32_t>(op.type));
    prepare(s, g, kernels);
    steps.push_back(std::move(s));
  }
  return steps;
}

}  // namespace qbinfer
