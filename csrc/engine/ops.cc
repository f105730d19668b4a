#include "engine/ops.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace qbinfer {
namespace {

constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

// Counts saturate instead of wrapping: a hostile file must not make a summary lie small.
std::uint64_t sat_mul(std::uint64_t a, std::uint64_t b) {
  if (a != 0 && b > kU64Max / a) return kU64Max;
  return a * b;
}
std::uint64_t sat_mul(std::initializer_list<std::uint64_t> xs) {
  std::uint64_t p = 1;
  for (std::uint64_t x : xs) p = sat_mul(p, x);
  return p;
}

std::string shape_str(std::uint64_t h, std::uint64_t w, std::uint64_t c) {
  return "(" + std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) + ")";
}
std::string shape_str(const ValueInfo& v) { return shape_str(v.height, v.width, v.channels); }
std::string dims_str(const std::vector<std::uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    out += (ch < 0x20 || ch == 0x7F) ? '?' : static_cast<char>(ch);
  }
  return out + (s.size() > 80 ? "...'" : "'");
}

// Reads one op record and checks it; every message is prefixed with the op's identity.
class Builder {
 public:
  Builder(const QbwFile& file, std::uint32_t index, const char* type_name)
      : file_(file), rec_(file.ops()[index]) {
    where_ = "op " + std::to_string(index) + " " + type_name + " " + quoted(rec_.name);
    op.index = index;
    op.type = static_cast<OpType>(rec_.type);
    op.name = rec_.name;
    op.inputs = rec_.inputs;
    op.attrs = rec_.attrs;
  }

  [[noreturn]] void fail(const std::string& message) const { file_.fail(where_ + ": " + message); }

  // n_inputs < 0: at least one input, any number.
  void expect_counts(int n_inputs, std::size_t n_tensors, std::size_t n_attrs) {
    if (n_inputs >= 0 && rec_.inputs.size() != static_cast<std::size_t>(n_inputs)) {
      fail("has " + std::to_string(rec_.inputs.size()) + " inputs, expected " +
           std::to_string(n_inputs));
    }
    if (n_inputs < 0 && rec_.inputs.empty()) fail("has no input");
    if (rec_.outputs.size() != 1) {
      fail("has " + std::to_string(rec_.outputs.size()) + " outputs, expected 1");
    }
    if (rec_.tensors.size() != n_tensors) {
      fail("has " + std::to_string(rec_.tensors.size()) + " tensor slots, expected " +
           std::to_string(n_tensors));
    }
    if (rec_.attrs.size() != n_attrs) {
      fail("has " + std::to_string(rec_.attrs.size()) + " attrs, expected " +
           std::to_string(n_attrs));
    }
    op.output = rec_.outputs[0];
    op.tensors.assign(n_tensors, nullptr);
  }

  const ValueInfo& input(std::size_t k, DType dtype) const {
    const ValueInfo& v = file_.values()[rec_.inputs[k]];
    if (v.dtype != dtype) {
      fail("input " + std::to_string(k) + " " + quoted(v.name) + " is " + dtype_name(v.dtype) +
           ", expected " + dtype_name(dtype));
    }
    return v;
  }

  const ValueInfo& output(DType dtype) const {
    const ValueInfo& v = file_.values()[op.output];
    if (v.dtype != dtype) {
      fail("output " + quoted(v.name) + " is " + dtype_name(v.dtype) + ", expected " +
           dtype_name(dtype));
    }
    return v;
  }

  void expect_shape(const char* what, const ValueInfo& v, std::uint64_t h, std::uint64_t w,
                    std::uint64_t c) const {
    if (v.height != h || v.width != w || v.channels != c) {
      fail(std::string(what) + " " + quoted(v.name) + " has shape " + shape_str(v) + ", expected " +
           shape_str(h, w, c));
    }
  }

  // A required (or, with `optional`, possibly absent) tensor of the given dtype and dims.
  const TensorInfo* tensor(std::size_t slot, const char* role, DType dtype,
                           const std::vector<std::uint64_t>& dims, bool optional = false) {
    const std::uint32_t t = rec_.tensors[slot];
    if (t == kAbsentTensor) {
      if (optional) return nullptr;
      fail("tensor slot " + std::to_string(slot) + " (" + role + ") is absent but required");
    }
    const TensorInfo& info = file_.tensors()[t];
    const std::string id = "tensor slot " + std::to_string(slot) + " (" + role + ") = tensor " +
                           std::to_string(t) + " " + quoted(info.name);
    if (info.dtype != dtype) {
      fail(id + " is " + dtype_name(info.dtype) + ", expected " + dtype_name(dtype));
    }
    if (info.dims != dims) {
      fail(id + " has dims " + dims_str(info.dims) + ", expected " + dims_str(dims));
    }
    op.tensors[slot] = &info;
    op.stats.bytes += info.nbytes;
    return &info;
  }

  const TensorInfo* peek_tensor(std::size_t slot) const {
    const std::uint32_t t = rec_.tensors[slot];
    return t == kAbsentTensor ? nullptr : &file_.tensors()[t];
  }

  void absent(std::size_t slot, const char* role, const char* why) const {
    if (rec_.tensors[slot] != kAbsentTensor) {
      fail("tensor slot " + std::to_string(slot) + " (" + role + ") must be absent " + why +
           ", got tensor " + std::to_string(rec_.tensors[slot]));
    }
  }

  // Symmetric INT8 codes are in [-127, 127] (docs/format.md): SIMD kernels may negate or
  // widen them assuming that, so -128 is refused here rather than trusted.
  void check_int8_symmetric(const TensorInfo& t, const char* role) const {
    const auto* q = t.as<std::int8_t>();
    for (std::uint64_t i = 0; i < t.elements; ++i) {
      if (q[i] == -128) {
        fail(std::string(role) + " tensor " + quoted(t.name) + " holds -128 at element " +
             std::to_string(i) + " (symmetric INT8 codes are in [-127, 127])");
      }
    }
  }

  // Packed ±1 rows of `channels` channels: bits past the last channel must be 0 (the bit
  // contract; kernels rely on it to skip masking).
  void check_tail_bits(const TensorInfo& t, const char* role, std::size_t channels) const {
    const std::size_t tail = channels % kBitsPerWord;
    if (tail == 0) return;
    const std::size_t words = words_for_channels(channels);
    const BitWord mask = ~((BitWord{1} << tail) - 1);
    const BitWord* w = t.as<BitWord>();
    const std::size_t rows = static_cast<std::size_t>(t.elements / words);
    for (std::size_t r = 0; r < rows; ++r) {
      if ((w[r * words + words - 1] & mask) != 0) {
        fail(std::string(role) + " tensor " + quoted(t.name) + " has bits set past channel " +
             std::to_string(channels) + " in row " + std::to_string(r) + " (tail bits must be 0)");
      }
    }
  }

  std::int64_t attr(std::size_t i, const char* name, std::int64_t lo, std::int64_t hi) const {
    const std::int64_t v = rec_.attrs[i];
    if (v < lo || v > hi) {
      fail("attr " + std::to_string(i) + " " + name + " = " + std::to_string(v) + " is not in [" +
           std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return v;
  }

  Op op;

 private:
  const QbwFile& file_;
  const OpRecord& rec_;
  std::string where_;
};

// Attribute limits: far beyond any real model, small enough that no size arithmetic on
// them can overflow 64 bits.
constexpr std::int64_t kMaxAttr = (std::int64_t{1} << 31) - 1;

// --------------------------------------------------------------------------- validation
void build_conv2d(Builder& b) {
  b.expect_counts(1, 2, 9);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  const auto kh = static_cast<std::uint64_t>(b.attr(0, "kernel_h", 1, kMaxAttr));
  const auto kw = static_cast<std::uint64_t>(b.attr(1, "kernel_w", 1, kMaxAttr));
  const auto sh = static_cast<std::uint64_t>(b.attr(2, "stride_h", 1, kMaxAttr));
  const auto sw = static_cast<std::uint64_t>(b.attr(3, "stride_w", 1, kMaxAttr));
  // A pad of a whole kernel or more would make windows that see only padding.
  const auto pad = [&b](std::size_t i, const char* name, std::uint64_t kernel) {
    return static_cast<std::uint64_t>(b.attr(i, name, 0, static_cast<std::int64_t>(kernel) - 1));
  };
  const std::uint64_t pt = pad(4, "pad_top", kh);
  const std::uint64_t pl = pad(5, "pad_left", kw);
  const std::uint64_t pb = pad(6, "pad_bottom", kh);
  const std::uint64_t pr = pad(7, "pad_right", kw);
  op.relu = b.attr(8, "activation", 0, 1) == 1;
  const std::uint64_t ph = in.height + pt + pb;
  const std::uint64_t pw = in.width + pl + pr;
  if (ph < kh || pw < kw) {
    b.fail("kernel " + std::to_string(kh) + "x" + std::to_string(kw) +
           " is larger than the padded input " + std::to_string(ph) + "x" + std::to_string(pw));
  }
  const std::uint64_t ho = (ph - kh) / sh + 1;
  const std::uint64_t wo = (pw - kw) / sw + 1;
  const std::uint64_t co = out.channels;
  b.expect_shape("output", out, ho, wo, co);
  b.tensor(0, "weight", DType::kF32, {co, kh, kw, in.channels});
  b.tensor(1, "bias", DType::kF32, {co});
  op.conv2d =
      Conv2DShape{in.height, in.width, in.channels, co, kh, kw, sh, sw, pt, pl, pb, pr, ho, wo};
  op.stats.params = sat_mul({co, kh, kw, in.channels}) + co;
  op.stats.flops = sat_mul({co, in.channels, kh, kw, ho, wo});
}

void build_dwconv3x3(Builder& b) {
  b.expect_counts(1, 6, 3);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  const auto sh = static_cast<std::uint64_t>(b.attr(0, "stride_h", 1, 2));
  const auto sw = static_cast<std::uint64_t>(b.attr(1, "stride_w", 1, 2));
  const auto k = static_cast<std::uint64_t>(b.attr(2, "multiplier", 1, kMaxAttr));
  const std::uint64_t c = in.channels;
  const std::uint64_t kc = k * c;  // < 2^31 * 2^32
  const std::uint64_t ho = (in.height + sh - 1) / sh;
  const std::uint64_t wo = (in.width + sw - 1) / sw;
  b.expect_shape("output", out, ho, wo, kc);

  b.tensor(0, "pre_bias", DType::kF32, {c}, /*optional=*/true);
  const TensorInfo* w = b.peek_tensor(1);
  op.dw_int8 = w != nullptr && w->dtype == DType::kI8;
  const TensorInfo* weight = b.tensor(1, "weight", op.dw_int8 ? DType::kI8 : DType::kF32, {kc, 9});
  if (op.dw_int8) {
    b.check_int8_symmetric(*weight, "weight");
    b.tensor(2, "weight_scale", DType::kF32, {kc});
  } else {
    b.absent(2, "weight_scale", "with f32 weights");
  }
  b.tensor(3, "scale", DType::kF32, {kc});
  b.tensor(4, "bias", DType::kF32, {kc});
  if (op.dw_int8) {
    const TensorInfo* s = b.tensor(5, "input_scale", DType::kF32, {1});
    const float v = s->as<float>()[0];
    if (!(std::isfinite(v) && v >= 0.0f)) {
      b.fail("input_scale " + std::to_string(v) + " is not a finite number >= 0 (0 = dynamic)");
    }
    op.dw_input_scale = v;
    op.scratch_bytes = in.height * in.width * c;  // < 2^32: the input value is <= 4 GiB
  } else {
    b.absent(5, "input_scale", "with f32 weights");
  }
  op.dwconv = DWConvShape{in.height, in.width, c, k, sh, sw, ho, wo};
  op.stats.params = kc * 9 + 3 * kc + (op.tensors[0] ? c : 0) + (op.dw_int8 ? kc + 1 : 0);
  op.stats.flops = sat_mul({kc, 9, ho, wo});
}

void build_bitpack(Builder& b) {
  b.expect_counts(1, 1, 0);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kBits);
  b.expect_shape("output", out, in.height, in.width, in.channels);
  b.tensor(0, "threshold", DType::kF32, {in.channels});
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
  op.stats.params = in.channels;
}

void build_bconv2d(Builder& b) {
  b.expect_counts(1, 3, 2);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kBits);
  const ValueInfo& out = b.output(DType::kF32);
  const auto k = static_cast<std::uint64_t>(b.attr(0, "kernel", 1, 3));
  if (k != 1 && k != 3) b.fail("attr 0 kernel = " + std::to_string(k) + " is not 1 or 3");
  const auto pad = b.attr(1, "pad_mode", 0, 1);
  const std::uint64_t ci = in.channels;
  const std::uint64_t co = out.channels;
  b.expect_shape("output", out, in.height, in.width, co);
  // The dot of every variant is an int32: |dot| <= k*k*Ci.
  if (k * k * ci > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    b.fail(std::to_string(ci) + " input channels overflow the int32 dot of a " + std::to_string(k) +
           "x" + std::to_string(k) + " binary conv");
  }
  const TensorInfo* w = b.tensor(0, "weight", DType::kBits, {co, k, k, words_for_channels(ci)});
  b.check_tail_bits(*w, "weight", ci);
  b.tensor(1, "scale", DType::kF32, {co});
  b.tensor(2, "bias", DType::kF32, {co});
  op.bconv = BConvShape{in.height, in.width, ci,
                        co,        k,        pad == 0 ? BinaryPadding::kZero : BinaryPadding::kOne};
  op.stats.params = sat_mul({co, k, k, ci}) + 2 * co;
  op.stats.bops = sat_mul({co, ci, k, k, in.height, in.width});
}

// AFFINE, PRELU, RELU, SIGMOID: f32 -> f32 of the same shape, `n_vectors` per-channel tensors.
void build_unary(Builder& b, std::initializer_list<const char*> vectors) {
  b.expect_counts(1, vectors.size(), 0);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  b.expect_shape("output", out, in.height, in.width, in.channels);
  std::size_t slot = 0;
  for (const char* role : vectors) b.tensor(slot++, role, DType::kF32, {in.channels});
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
  op.stats.params = std::uint64_t{in.channels} * vectors.size();
}

void build_affine(Builder& b) { build_unary(b, {"scale", "bias"}); }
void build_prelu(Builder& b) { build_unary(b, {"slope"}); }
void build_relu(Builder& b) { build_unary(b, {}); }
void build_sigmoid(Builder& b) { build_unary(b, {}); }

void build_add(Builder& b) {
  b.expect_counts(2, 0, 0);
  Op& op = b.op;
  const ValueInfo& x = b.input(0, DType::kF32);
  const ValueInfo& y = b.input(1, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  b.expect_shape("input 1", y, x.height, x.width, x.channels);
  b.expect_shape("output", out, x.height, x.width, x.channels);
  op.pixels = std::size_t{x.height} * x.width;
  op.channels = x.channels;
}

void build_mul_channel(Builder& b) {
  b.expect_counts(2, 0, 0);
  Op& op = b.op;
  const ValueInfo& x = b.input(0, DType::kF32);
  const ValueInfo& s = b.input(1, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  b.expect_shape("input 1 (the per-channel factors)", s, 1, 1, x.channels);
  b.expect_shape("output", out, x.height, x.width, x.channels);
  op.pixels = std::size_t{x.height} * x.width;
  op.channels = x.channels;
}

void build_avgpool(Builder& b) {
  b.expect_counts(1, 0, 4);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  const auto kh = static_cast<std::uint64_t>(b.attr(0, "kernel_h", 1, in.height));
  const auto kw = static_cast<std::uint64_t>(b.attr(1, "kernel_w", 1, in.width));
  const auto sh = static_cast<std::uint64_t>(b.attr(2, "stride_h", 1, kMaxAttr));
  const auto sw = static_cast<std::uint64_t>(b.attr(3, "stride_w", 1, kMaxAttr));
  const std::uint64_t ho = (in.height - kh + sh - 1) / sh + 1;
  const std::uint64_t wo = (in.width - kw + sw - 1) / sw + 1;
  // Ceil mode must not add a window that starts past the image (PyTorch drops such a
  // window; it can only arise when stride > kernel).
  if ((ho - 1) * sh >= in.height || (wo - 1) * sw >= in.width) {
    b.fail("ceil mode makes a window start past the input " + shape_str(in) + " (kernel " +
           std::to_string(kh) + "x" + std::to_string(kw) + ", stride " + std::to_string(sh) + "x" +
           std::to_string(sw) + ")");
  }
  b.expect_shape("output", out, ho, wo, in.channels);
  op.avgpool = AvgPoolShape{in.height, in.width, in.channels, kh, kw, sh, sw, ho, wo};
}

void build_global_avgpool(Builder& b) {
  b.expect_counts(1, 0, 0);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  b.expect_shape("output", out, 1, 1, in.channels);
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
}

void build_concat(Builder& b) {
  b.expect_counts(-1, 0, 0);
  Op& op = b.op;
  const ValueInfo& first = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  std::uint64_t total = 0;  // <= 2^20 inputs of < 2^32 channels: no overflow
  for (std::size_t k = 0; k < op.inputs.size(); ++k) {
    const ValueInfo& v = b.input(k, DType::kF32);
    if (v.height != first.height || v.width != first.width) {
      b.fail("input " + std::to_string(k) + " " + quoted(v.name) + " has shape " + shape_str(v) +
             ", but input 0 is " + shape_str(first) + " (height and width must agree)");
    }
    total += v.channels;
    op.concat_channels.push_back(v.channels);
  }
  b.expect_shape("output", out, first.height, first.width, total);
  op.pixels = std::size_t{first.height} * first.width;
}

void build_fc(Builder& b) {
  b.expect_counts(1, 3, 1);
  Op& op = b.op;
  const ValueInfo& in = b.input(0, DType::kF32);
  const ValueInfo& out = b.output(DType::kF32);
  if (in.height != 1 || in.width != 1) {
    b.fail("input " + quoted(in.name) + " has shape " + shape_str(in) +
           ", expected (1, 1, C) (pool first)");
  }
  b.expect_shape("output", out, 1, 1, out.channels);
  op.fc_encoding = static_cast<int>(b.attr(0, "encoding", 0, 2));
  const std::uint64_t c = in.channels;
  const std::uint64_t o = out.channels;
  switch (op.fc_encoding) {
    case 0:
      b.tensor(0, "weight", DType::kF32, {o, c});
      b.absent(1, "weight_scale", "with fp32 encoding");
      break;
    case 1:
      b.check_int8_symmetric(*b.tensor(0, "weight", DType::kI8, {o, c}), "weight");
      b.tensor(1, "weight_scale", DType::kF32, {o});
      break;
    default: {
      const TensorInfo* planes =
          b.tensor(0, "weight planes", DType::kBits, {8, o, words_for_channels(c)});
      b.check_tail_bits(*planes, "weight planes", c);
      b.tensor(1, "weight_scale", DType::kF32, {o});
      break;
    }
  }
  b.tensor(2, "bias", DType::kF32, {o});
  op.channels = c;
  op.out_features = o;
  op.stats.params = o * c + o + (op.fc_encoding != 0 ? o : 0);
  op.stats.flops = o * c;
}

struct OpDef {
  const char* name;
  void (*build)(Builder&);
  std::vector<const char*> attr_names;
};

const OpDef* op_def(std::uint32_t code) {
  static const OpDef defs[] = {
      {nullptr, nullptr, {}},
      {"CONV2D",
       &build_conv2d,
       {"kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
        "pad_right", "activation"}},
      {"DWCONV3X3", &build_dwconv3x3, {"stride_h", "stride_w", "multiplier"}},
      {"BITPACK", &build_bitpack, {}},
      {"BCONV2D", &build_bconv2d, {"kernel", "pad_mode"}},
      {"AFFINE", &build_affine, {}},
      {"PRELU", &build_prelu, {}},
      {"RELU", &build_relu, {}},
      {"SIGMOID", &build_sigmoid, {}},
      {"ADD", &build_add, {}},
      {"MUL_CHANNEL", &build_mul_channel, {}},
      {"AVGPOOL", &build_avgpool, {"kernel_h", "kernel_w", "stride_h", "stride_w"}},
      {"GLOBAL_AVGPOOL", &build_global_avgpool, {}},
      {"CONCAT", &build_concat, {}},
      {"FC", &build_fc, {"encoding"}},
  };
  constexpr std::uint32_t n = sizeof(defs) / sizeof(defs[0]);
  return code >= 1 && code < n ? &defs[code] : nullptr;
}

}  // namespace

const char* op_type_name(std::uint32_t code) {
  const OpDef* def = op_def(code);
  return def != nullptr ? def->name : nullptr;
}

Op build_op(const QbwFile& file, std::uint32_t index) {
  const OpRecord& rec = file.ops()[index];
  const OpDef* def = op_def(rec.type);
  if (def == nullptr) {
    file.fail("op " + std::to_string(index) + " " + quoted(rec.name) + ": unknown op code " +
              std::to_string(rec.type) + " (this qbinfer reads format " +
              std::to_string(kFormatMajor) + ".x, op codes 1..14)");
  }
  Builder b(file, index, def->name);
  def->build(b);
  return std::move(b.op);
}

std::vector<std::pair<const char*, std::int64_t>> named_attrs(const Op& op) {
  const OpDef* def = op_def(static_cast<std::uint32_t>(op.type));
  std::vector<std::pair<const char*, std::int64_t>> out;
  for (std::size_t i = 0; i < op.attrs.size() && i < def->attr_names.size(); ++i) {
    out.emplace_back(def->attr_names[i], op.attrs[i]);
  }
  return out;
}

}  // namespace qbinfer
