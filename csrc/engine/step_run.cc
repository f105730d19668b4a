// The run functions: what each step computes on one image, calling the kernels of
// ExecContext::kernels (see exec_plan.h for the steps, step_run.h for the entry points).
#include "engine/step_run.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace qbinfer {
namespace {

// Element-wise ops below this many floats run on the calling thread: a hand-off would cost
// more than it saves.
constexpr std::size_t kParallelMinFloats = 32 * 1024;

// --------------------------------------------------------------------------- epilogue
Epilogue make_epilogue(const EpilogueSpec& s, const ExecContext& ctx) {
  Epilogue ep;
  ep.relu = s.relu;
  ep.pre_scale = s.pre_scale;
  ep.pre_bias = s.pre_bias;
  if (s.channel_scale != kNoValue) ep.channel_scale = ctx.value<const float>(s.channel_scale);
  if (s.residual != kNoValue) {
    ep.residual = ctx.value<const float>(s.residual);
    ep.residual_channels = s.residual_channels;
  }
  ep.mid_scale = s.mid_scale;
  ep.mid_bias = s.mid_bias;
  ep.prelu_slope = s.prelu_slope;
  ep.post_scale = s.post_scale;
  ep.post_bias = s.post_bias;
  ep.write_float = s.write_float;
  ep.clip = s.clip;
  ep.clip_lo = s.clip_lo;
  ep.clip_hi = s.clip_hi;
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
  const BConvShape& shape = op.args<BConv2DArgs>().shape;
  const BitWord* in = ctx.value<const BitWord>(op.inputs[0]);
  float* out = ctx.value<float>(step.out());
  const float* scale = op.tensors[1]->as<float>();
  const float* bias = op.tensors[2]->as<float>();
  const BConvKernels& k = *ctx.kernels->bconv;
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  const bool chain = step.kind == StepKind::kConvChain;
  const Epilogue ep = chain ? make_epilogue(step.epi(), ctx) : Epilogue{};
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
  const DWConv3x3Args& args = op.args<DWConv3x3Args>();
  const DWConvShape& shape = args.shape;
  const float* in = ctx.value<const float>(op.inputs[0]);
  const float* pre_bias = op.tensors[0] != nullptr ? op.tensors[0]->as<float>() : nullptr;
  float* out = ctx.value<float>(step.out());
  const float* scale = op.tensors[3]->as<float>();
  const float* bias = op.tensors[4]->as<float>();
  const DWConvKernels& k = *ctx.kernels->dwconv;
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  const bool chain = step.kind == StepKind::kConvChain;
  const Epilogue ep = chain ? make_epilogue(step.epi(), ctx) : Epilogue{};
  const std::size_t oc = shape.multiplier * shape.channels;
  const std::size_t row_pixels = shape.out_width;

  float input_scale = args.input_scale;
  if (args.int8) {
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
  const float* weight_scale = args.int8 ? op.tensors[2]->as<float>() : nullptr;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t y = begin; y < end; y += step.block) {
      const std::size_t y1 = std::min(end, y + step.block);
      if (args.int8) {
        k.run_rows_qs8(shape, ctx.scratch, step.packed.data(), weight_scale, s, scale, bias, y, y1,
                       out);
      } else {
        k.run_rows_f32(shape, in, pre_bias, step.packed.data(), scale, bias, y, y1, out);
      }
      if (chain) e.rows(ep, oc, y * row_pixels, y1 * row_pixels, out);
    }
  });
}

}  // namespace

// The element-wise tail alone, in place over its first input (which shares `out`'s bytes).
void run_epilogue_chain(const Step& step, const ExecContext& ctx) {
  float* out = ctx.value<float>(step.out());
  const Epilogue ep = make_epilogue(step.epi(), ctx);
  const EpilogueKernels& e = *ctx.kernels->epilogue;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t p = begin; p < end; p += step.block) {
      e.rows(ep, step.chain->channels, p, std::min(end, p + step.block), out);
    }
  });
}

namespace {

void run_conv2d(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(step.out());  // a CONV2D -> CLIP chain's: the CLIP's
  const float* bias = op.tensors[1]->as<float>();
  const Conv2DKernels& k = *ctx.kernels->conv2d;
  const Conv2DArgs& args = op.args<Conv2DArgs>();
  if (step.chain != nullptr) {
    const EpilogueSpec& epi = step.epi();
    ctx.parallel_for(step.units, [&](std::size_t b, std::size_t e) {
      k.run_rows_clip(args.shape, in, step.packed.data(), bias, args.relu, epi.clip_lo, epi.clip_hi,
                      b, e, out);
    });
    return;
  }
  ctx.parallel_for(step.units, [&](std::size_t b, std::size_t e) {
    k.run_rows(args.shape, in, step.packed.data(), bias, args.relu, b, e, out);
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
  const AvgPoolShape& s = op.args<AvgPoolArgs>().shape;
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
  const ConcatArgs& a = op.args<ConcatArgs>();
  ctx.kernels->concat->channels_f32(ctx.concat_inputs + a.slot, a.channels, a.n_inputs, op.pixels,
                                    ctx.value<float>(op.output));
}

// FC: split by output features (weight rows are independent); bitplane8 runs on the int8 codes
// its planes were packed into at load (weight_repack.cc).
void run_fc(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* x = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const FCKernels& k = *ctx.kernels->fc;
  const float* bias = op.tensors[2]->as<float>();
  const std::size_t c = op.channels;
  const FCArgs& a = op.args<FCArgs>();
  const std::size_t out_features = a.out_features;
  const bool split = ctx.pool != nullptr && out_features * c >= kParallelMinFloats * 4;
  switch (a.encoding) {
    case FCEncoding::fp32: {
      const float* w = op.tensors[0]->as<float>();
      auto body = [&](std::size_t b, std::size_t e) {
        k.f32(c, e - b, x, w + b * c, bias + b, out + b);
      };
      split ? ctx.parallel_for(out_features, body) : body(0, out_features);
      break;
    }
    case FCEncoding::int8: {
      const std::int8_t* w = op.tensors[0]->as<std::int8_t>();
      const float* ws = op.tensors[1]->as<float>();
      auto body = [&](std::size_t b, std::size_t e) {
        k.qs8(c, e - b, x, w + b * c, ws + b, bias + b, out + b);
      };
      split ? ctx.parallel_for(out_features, body) : body(0, out_features);
      break;
    }
    case FCEncoding::binary: {
      const BitWord* w = op.tensors[0]->as<BitWord>();
      const float* ws = op.tensors[1]->as<float>();
      const std::size_t words = words_for_channels(c);
      auto body = [&](std::size_t b, std::size_t e) {
        k.binary(c, e - b, x, w + b * words, ws + b, bias + b, out + b);
      };
      split ? ctx.parallel_for(out_features, body) : body(0, out_features);
      break;
    }
    case FCEncoding::bitplane8: {  // repacked at load into int8 codes (weight_repack.cc)
      const auto* w = reinterpret_cast<const std::int8_t*>(step.packed.data());
      const float* ws = op.tensors[1]->as<float>();
      auto body = [&](std::size_t b, std::size_t e) {
        k.bitplane8_packed(c, e - b, x, w + b * c, ws + b, bias + b, out + b);
      };
      split ? ctx.parallel_for(out_features, body) : body(0, out_features);
      break;
    }
  }
}

// Max pool: split by output rows across threads, as the average pool.
void run_maxpool(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const PoolKernels& k = *ctx.kernels->pool;
  const MaxPoolShape& s = op.args<MaxPoolArgs>().shape;
  if (s.out_height * s.out_width * s.channels < kParallelMinFloats || ctx.pool == nullptr) {
    k.maxpool(s, in, out);
    return;
  }
  ctx.parallel_for(s.out_height,
                   [&](std::size_t b, std::size_t e) { k.maxpool_rows(s, in, b, e, out); });
}

void run_clip(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const std::size_t c = op.channels;
  const ClipBounds bounds = clip_bounds(op);
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { k.clip(in, n * c, bounds.lo, bounds.hi, out); });
}

// Binary FC: split by output features like the FC (weight rows are independent), once the
// weights are large enough (words, 64 channels each) to pay for the hand-off. The input is H*W
// pixels of words(C) words. With one pixel, or C a multiple of 64, that is the packed vector of
// H*W*C signs the kernel expects. Otherwise each pixel ends in tail bits (0 in input and
// weights, so they never differ): the kernel runs on all 64*H*W*words(C) bit positions with
// scale 1 and bias -(number of tail bits), which leaves the exact dot as a float (every value
// involved is an integer below 2^24, checked by build_bfc), and the epilogue follows in the same
// order as the kernel's (multiply, then add; no FMA).
void run_bfc(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const BitWord* x = ctx.value<const BitWord>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const BFCKernels& k = *ctx.kernels->bfc;
  const BitWord* w = op.tensors[0]->as<BitWord>();
  const float* scale = op.tensors[1]->as<float>();
  const float* bias = op.tensors[2]->as<float>();
  const std::size_t words = op.pixels * words_for_channels(op.channels);
  const std::size_t out_features = op.args<BFCArgs>().out_features;
  const bool split = ctx.pool != nullptr && out_features * words >= kParallelMinFloats;
  if (op.pixels == 1 || op.channels % kBitsPerWord == 0) {
    const std::size_t c = op.pixels * op.channels;
    auto body = [&](std::size_t b, std::size_t e) {
      k.run(c, e - b, x, w + b * words, scale + b, bias + b, out + b);
    };
    split ? ctx.parallel_for(out_features, body) : body(0, out_features);
    return;
  }
  const std::size_t positions = words * kBitsPerWord;
  const float tail_bits = static_cast<float>(positions - op.pixels * op.channels);
  constexpr std::size_t kChunk = 64;  // outputs per kernel call: the unit scale and bias arrays
  auto body = [&](std::size_t b, std::size_t e) {
    float unit[kChunk], minus_tail[kChunk];
    for (std::size_t i = 0; i < kChunk; ++i) {
      unit[i] = 1.0f;
      minus_tail[i] = -tail_bits;
    }
    for (std::size_t o = b; o < e; o += kChunk) {
      const std::size_t n = std::min(kChunk, e - o);
      k.run(positions, n, x, w + o * words, unit, minus_tail, out + o);
      for (std::size_t i = o; i < o + n; ++i) {
        const float scaled = out[i] * scale[i];
        out[i] = scaled + bias[i];
      }
    }
  };
  split ? ctx.parallel_for(out_features, body) : body(0, out_features);
}

// The general binary conv alone (never a chain head: the fusion planner only takes BCONV2D and
// DWCONV3X3), split by output rows.
void run_bconv2d_general(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const BConvGeneralShape& shape = op.args<BConv2DGeneralArgs>().shape;
  const BitWord* in = ctx.value<const BitWord>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const float* scale = op.tensors[1]->as<float>();
  const float* bias = op.tensors[2]->as<float>();
  const BConvGeneralKernels& k = *ctx.kernels->bconv_general;
  ctx.parallel_for(step.units, [&](std::size_t begin, std::size_t end) {
    for (std::size_t y = begin; y < end; y += step.block) {
      k.run_rows(shape, in, step.packed.data(), scale, bias, y, std::min(end, y + step.block), out);
    }
  });
}

// Softmax over the channels of each pixel: pixels are independent, so the rows split by pixels
// like the other element-wise ops (a classifier's one (1, 1, C) pixel runs on this thread).
void run_softmax(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  elementwise(step, ctx,
              [&](const ElementwiseKernels& k, const float* in, float* out, std::size_t,
                  std::size_t n) { k.softmax(in, n, op.channels, softmax_log(op), out); });
}

// AVGPOOL2D: split by output rows across threads, as the other pools.
void run_avgpool2d(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const PoolKernels& k = *ctx.kernels->pool;
  const AvgPool2DShape& s = op.args<AvgPool2DArgs>().shape;
  if (s.out_height * s.out_width * s.channels < kParallelMinFloats || ctx.pool == nullptr) {
    k.avgpool2d(s, in, out);
    return;
  }
  ctx.parallel_for(s.out_height,
                   [&](std::size_t b, std::size_t e) { k.avgpool2d_rows(s, in, b, e, out); });
}

// RESIZE: split by output rows across threads, as the pools.
void run_resize(const Step& step, const ExecContext& ctx) {
  const Op& op = *step.op;
  const float* in = ctx.value<const float>(op.inputs[0]);
  float* out = ctx.value<float>(op.output);
  const ResizeKernels& k = *ctx.kernels->resize;
  const ResizeShape& s = op.args<ResizeArgs>().shape;
  if (s.out_height * s.out_width * s.channels < kParallelMinFloats || ctx.pool == nullptr) {
    k.run_rows(s, in, 0, s.out_height, out);
    return;
  }
  ctx.parallel_for(s.out_height,
                   [&](std::size_t b, std::size_t e) { k.run_rows(s, in, b, e, out); });
}

}  // namespace

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
    case OpType::kMaxPool:
      return &run_maxpool;
    case OpType::kClip:
      return &run_clip;
    case OpType::kBFC:
      return &run_bfc;
    case OpType::kBConv2DGeneral:
      return &run_bconv2d_general;
    case OpType::kSoftmax:
      return &run_softmax;
    case OpType::kAvgPool2D:
      return &run_avgpool2d;
    case OpType::kResize:
      return &run_resize;
  }
  return nullptr;
}

}  // namespace qbinfer
