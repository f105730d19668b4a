#include "engine/ops.h"

#include "base/text.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

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

// The shared message helpers (base/text.h) and one overload for a value's shape.
using qbinfer::shape_str;
std::string shape_str(const ValueInfo& v) { return shape_str(v.height, v.width, v.channels); }

// ------------------------------------------------------------------------ the op schema
// The types of the tables in op_schema.inc, generated from weights_tools/op_schema.py: every
// fact about an op that is not a formula (codes, names, counts, dtypes, attribute ranges,
// tensor slots and their dims) comes from there, so the Python validator and this one agree.

// An attribute bound: a constant, an earlier attribute, or the input's height or width, plus
// `offset` (e.g. kernel_h - 1).
enum class BoundKind { kConst, kAttr, kInputHeight, kInputWidth };
struct Bound {
  BoundKind kind;
  std::int64_t value;  // kConst: the bound; kAttr: the attribute index
  std::int64_t offset;
};

struct AttrSpec {
  const char* name;
  Bound lo;
  Bound hi;
  const std::int64_t* allowed;  // nullptr: every value in [lo, hi]
  std::size_t n_allowed;
  const char* why;   // why the range is what it is; "" if it says itself
  bool has_default;  // a trailing attribute added later: a record may end before it
  std::int64_t default_value;
};

// What dims formulas see: input 0's height, width and channels, the output's channels and the
// attributes (already range-checked).
struct DimEnv {
  std::uint64_t H, W, C, Co;
  const std::int64_t* attrs;
};

struct FormSpec {
  int mode;  // index into the op's modes, -1 = every mode
  DType dtype;
  std::vector<std::uint64_t> (*dims)(const DimEnv&);
  std::uint64_t (*tail_bits_of)(const DimEnv&);  // bits: channels of a packed row; else nullptr
};

struct SlotSpec {
  const char* role;
  bool optional;  // may be absent in the modes it has a form for
  const FormSpec* forms;
  std::size_t n_forms;
};

// An op's mode picks the form of its slots: the value of an attribute (FC's encoding) or the
// dtype of a slot (DWCONV3X3's weight).
enum class ModeKind { kNone, kAttr, kSlotDtype };
struct ModeOption {
  std::int64_t key;  // the attribute value, or the DType code
  const char* name;
};
struct ModeSpec {
  ModeKind kind;
  std::size_t index;  // the attribute or slot
  const ModeOption* options;
  std::size_t n_options;
};

struct OpSpec {
  std::uint32_t code;
  const char* name;
  int n_inputs;  // -1: one or more, all of input_dtypes[0]
  const DType* input_dtypes;
  std::size_t n_input_dtypes;
  DType output_dtype;
  const AttrSpec* attrs;
  std::size_t n_attrs;
  std::size_t n_min_attrs;  // the attributes from here on have defaults and may be omitted
  const SlotSpec* slots;
  std::size_t n_slots;
  ModeSpec mode;
};

#define QBINFER_OP_SCHEMA_TABLES
#include "engine/op_schema.inc"  // NOLINT(build/include): generated tables, in this namespace
#undef QBINFER_OP_SCHEMA_TABLES

// nullptr for a code out of range or not assigned (an empty entry: the schema allows gaps).
const OpSpec* op_spec(std::uint32_t code) {
  // A code reserved for another branch's op has an empty spec: unknown here.
  return code >= 1 && code <= QBINFER_OP_CODE_MAX && kOpSpecs[code].name != nullptr
             ? &kOpSpecs[code]
             : nullptr;
}

// Reads one op record and checks it; every message is prefixed with the op's identity.
// check_record() applies the schema's rules (counts, dtypes, attributes, mode); each build_*
// function then checks the op's shape formulas and calls check_slots() for its tensors.
class Builder {
 public:
  Builder(const QbwFile& file, std::uint32_t index, const OpSpec& spec, OpArgsPool& pool)
      : spec_(spec), file_(file), rec_(file.ops()[index]), pool_(pool) {
    op.index = index;
    op.type = static_cast<OpType>(rec_.type);
    op.name_chars = rec_.name().data();
    op.name_size = static_cast<std::uint32_t>(rec_.name().size());
    op.inputs = rec_.inputs();
    op.attr_values = rec_.attrs().data();
  }

  // The op's argument record, made in the model's pool (freed with it, a refused file's too).
  template <class A>
  A& make_args() {
    op.arg_record = pool_.make<A>();
    return op.args<A>();
  }
  OpArgsPool& pool() { return pool_; }

  // The op's identity prefixes the message; it is formed here, only when a check fails (forming
  // it for every op took a tenth of the load of a file of 600k ops).
  [[noreturn]] void fail(const std::string& message) const {
    file_.fail("op " + std::to_string(op.index) + " " + spec_.name + " " +
               quoted(std::string(rec_.name())) + ": " + message);
  }

  void check_record() {
    expect_counts();
    for (std::size_t k = 0; k < rec_.inputs().size(); ++k) {
      input(k, spec_.input_dtypes[spec_.n_inputs < 0 ? 0 : k]);
    }
    output(spec_.output_dtype);
    for (std::size_t i = 0; i < spec_.n_attrs; ++i) check_attr(i);
    select_mode();
  }

  const ValueInfo& in(std::size_t k) const { return file_.values()[rec_.inputs()[k]]; }
  const ValueInfo& out() const { return file_.values()[op.output]; }
  std::int64_t attr(std::size_t i) const { return attrs_[i]; }
  std::uint64_t uattr(std::size_t i) const { return static_cast<std::uint64_t>(attrs_[i]); }
  int mode() const { return mode_; }

  void expect_shape(const char* what, const ValueInfo& v, std::uint64_t h, std::uint64_t w,
                    std::uint64_t c) const {
    if (v.height != h || v.width != w || v.channels != c) {
      fail(std::string(what) + " " + quoted(std::string(v.name)) + " has shape " + shape_str(v) +
           ", expected " + shape_str(h, w, c));
    }
  }

  // Every tensor slot against the schema's form for the op's mode: absent where the mode uses
  // no form, else present (unless optional) with the form's dtype and dims, INT8 codes in the
  // symmetric range and packed rows with zero tail bits.
  void check_slots() {
    const ValueInfo& x = in(0);
    const DimEnv env{x.height, x.width, x.channels, out().channels, attrs_};
    for (std::size_t slot = 0; slot < spec_.n_slots; ++slot) {
      const SlotSpec& s = spec_.slots[slot];
      const FormSpec* form = nullptr;
      for (std::size_t f = 0; f < s.n_forms && form == nullptr; ++f) {
        if (s.forms[f].mode < 0 || s.forms[f].mode == mode_) form = &s.forms[f];
      }
      const std::uint32_t t = rec_.tensors()[slot];
      if (form == nullptr) {
        if (t != kAbsentTensor) {
          fail("tensor slot " + std::to_string(slot) + " (" + s.role + ") must be absent " +
               mode_phrase() + ", got tensor " + std::to_string(t));
        }
        continue;
      }
      if (t == kAbsentTensor) {
        if (s.optional) continue;
        fail("tensor slot " + std::to_string(slot) + " (" + s.role + ") is absent but required");
      }
      const TensorInfo& info = file_.tensors()[t];
      const auto id = [&] {  // formed only for a message
        return "tensor slot " + std::to_string(slot) + " (" + s.role + ") = tensor " +
               std::to_string(t) + " " + quoted(info.name);
      };
      if (info.dtype != form->dtype) {
        fail(id() + " is " + dtype_name(info.dtype) + ", expected " + dtype_name(form->dtype));
      }
      const std::vector<std::uint64_t> dims = form->dims(env);
      if (info.dims != dims) {
        fail(id() + " has dims " + dims_str(info.dims) + ", expected " + dims_str(dims));
      }
      if (info.dtype == DType::kI8) check_int8_symmetric(info, s.role);
      if (form->tail_bits_of != nullptr)
        check_tail_bits(info, s.role, static_cast<std::size_t>(form->tail_bits_of(env)));
    }
  }

  Op op;

 private:
  void expect_counts() {
    const std::size_t n_inputs = rec_.inputs().size();
    if (spec_.n_inputs >= 0 && n_inputs != static_cast<std::size_t>(spec_.n_inputs)) {
      fail("has " + std::to_string(n_inputs) + " inputs, expected " +
           std::to_string(spec_.n_inputs));
    }
    if (spec_.n_inputs < 0 && n_inputs == 0) fail("has no input");
    if (rec_.outputs().size() != 1) {
      fail("has " + std::to_string(rec_.outputs().size()) + " outputs, expected 1");
    }
    if (rec_.tensors().size() != spec_.n_slots) {
      fail("has " + std::to_string(rec_.tensors().size()) + " tensor slots, expected " +
           std::to_string(spec_.n_slots));
    }
    const std::size_t n_attrs = rec_.attrs().size();
    if (n_attrs < spec_.n_min_attrs || n_attrs > spec_.n_attrs) {
      fail("has " + std::to_string(n_attrs) + " attrs, expected " +
           (spec_.n_min_attrs == spec_.n_attrs
                ? std::to_string(spec_.n_attrs)
                : std::to_string(spec_.n_min_attrs) + " to " + std::to_string(spec_.n_attrs)));
    }
    attrs_ = rec_.attrs().data();
    if (n_attrs < spec_.n_attrs) {
      // An older record without the attributes added since: the full list, with their
      // defaults, in the model's pool, so every reader of op.attr_values sees all of them.
      std::int64_t* full = pool_.make_array<std::int64_t>(spec_.n_attrs);
      for (std::size_t i = 0; i < spec_.n_attrs; ++i) {
        full[i] = i < n_attrs ? rec_.attrs()[i] : spec_.attrs[i].default_value;
      }
      attrs_ = full;
      op.attr_values = full;
    }
    op.output = rec_.outputs()[0];
    // Only slots that pass check_slots are read; the view shows the record's indices.
    op.tensors = TensorSlots(file_.tensors().data(), rec_.tensors());
  }

  void input(std::size_t k, DType dtype) const {
    const ValueInfo& v = in(k);
    if (v.dtype != dtype) {
      fail("input " + std::to_string(k) + " " + quoted(std::string(v.name)) + " is " +
           dtype_name(v.dtype) + ", expected " + dtype_name(dtype));
    }
  }

  void output(DType dtype) const {
    const ValueInfo& v = out();
    if (v.dtype != dtype) {
      fail("output " + quoted(std::string(v.name)) + " is " + dtype_name(v.dtype) + ", expected " +
           dtype_name(dtype));
    }
  }

  std::int64_t bound(const Bound& b) const {
    switch (b.kind) {
      case BoundKind::kConst:
        return b.value + b.offset;
      case BoundKind::kAttr:  // an earlier attribute, already in range: no overflow
        return attrs_[static_cast<std::size_t>(b.value)] + b.offset;
      case BoundKind::kInputHeight:
        return static_cast<std::int64_t>(in(0).height) + b.offset;
      case BoundKind::kInputWidth:
        return static_cast<std::int64_t>(in(0).width) + b.offset;
    }
    return 0;
  }

  void check_attr(std::size_t i) const {
    const AttrSpec& a = spec_.attrs[i];
    const std::int64_t v = attrs_[i];
    const std::int64_t lo = bound(a.lo);
    const std::int64_t hi = bound(a.hi);
    // Formed only for a message.
    const auto why = [&] {
      return a.why[0] != '\0' ? std::string(" (") + a.why + ")" : std::string();
    };
    const auto id = [&] {
      return "attr " + std::to_string(i) + " " + a.name + " = " + std::to_string(v);
    };
    if (v < lo || v > hi) {
      fail(id() + " is not in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]" + why());
    }
    if (a.allowed == nullptr) return;
    for (std::size_t k = 0; k < a.n_allowed; ++k) {
      if (a.allowed[k] == v) return;
    }
    std::string set;
    for (std::size_t k = 0; k < a.n_allowed; ++k) {
      set += (k == 0 ? "" : k + 1 == a.n_allowed ? " or " : ", ") + std::to_string(a.allowed[k]);
    }
    fail(id() + " is not " + set + why());
  }

  // The mode's index into spec_.mode.options. A slot dtype that names no mode selects mode 0,
  // whose form then reports the dtype mismatch.
  void select_mode() {
    const ModeSpec& m = spec_.mode;
    mode_ = 0;
    if (m.kind == ModeKind::kNone) return;
    std::int64_t key = 0;
    if (m.kind == ModeKind::kAttr) {
      key = attrs_[m.index];
    } else {
      const std::uint32_t t = rec_.tensors()[m.index];
      if (t == kAbsentTensor) return;
      key = static_cast<std::int64_t>(file_.tensors()[t].dtype);
    }
    for (std::size_t k = 0; k < m.n_options; ++k) {
      if (m.options[k].key == key) mode_ = static_cast<int>(k);
    }
  }

  // "with fp32 encoding", "with f32 weights": why a slot must be absent.
  std::string mode_phrase() const {
    const ModeSpec& m = spec_.mode;
    const std::string name = m.options[mode_].name;
    if (m.kind == ModeKind::kAttr) return "with " + name + " " + spec_.attrs[m.index].name;
    return "with " + name + " " + spec_.slots[m.index].role + "s";
  }

  // Symmetric INT8 codes are in [kInt8Min, kInt8Max] = [-127, 127] (docs/format.md): SIMD
  // kernels may negate or widen them assuming that, so -128 is refused here rather than trusted.
  void check_int8_symmetric(const TensorInfo& t, const char* role) const {
    const auto* q = t.as<std::int8_t>();
    for (std::uint64_t i = 0; i < t.elements; ++i) {
      if (q[i] < kInt8Min || q[i] > kInt8Max) {
        fail(std::string(role) + " tensor " + quoted(t.name) + " holds " + std::to_string(q[i]) +
             " at element " + std::to_string(i) + " (symmetric INT8 codes are in [" +
             std::to_string(kInt8Min) + ", " + std::to_string(kInt8Max) + "])");
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

  const OpSpec& spec_;
  const QbwFile& file_;
  const OpRecord& rec_;
  OpArgsPool& pool_;
  const std::int64_t* attrs_ = nullptr;  // all the schema's attributes (defaults filled in)
  int mode_ = 0;
};

// --------------------------------------------------------------------------- validation
// What the schema cannot state: output shapes and the rules that are formulas over several
// values (docs/format.md, each op's "Rules"), then the kernel arguments and the op's counts.
void build_conv2d(Builder& b) {
  const ValueInfo& in = b.in(0);
  const ValueInfo& out = b.out();
  const std::uint64_t kh = b.uattr(0), kw = b.uattr(1), sh = b.uattr(2), sw = b.uattr(3);
  const std::uint64_t pt = b.uattr(4), pl = b.uattr(5), pb = b.uattr(6), pr = b.uattr(7);
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
  b.check_slots();
  Conv2DArgs& args = b.make_args<Conv2DArgs>();
  args.shape =
      Conv2DShape{in.height, in.width, in.channels, co, kh, kw, sh, sw, pt, pl, pb, pr, ho, wo};
  args.relu = b.attr(8) == 1;
}

void build_dwconv3x3(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  const std::uint64_t sh = b.uattr(0), sw = b.uattr(1), k = b.uattr(2), d = b.uattr(3);
  const std::uint64_t c = in.channels;
  if (d > 1 && (sh != 1 || sw != 1)) {
    b.fail("dilation " + std::to_string(d) + " needs stride 1x1, got " + std::to_string(sh) + "x" +
           std::to_string(sw) + " (no kernel runs a strided dilated conv)");
  }
  const std::uint64_t kc = k * c;  // < 2^31 * 2^32
  const std::uint64_t ho = (in.height + sh - 1) / sh;
  const std::uint64_t wo = (in.width + sw - 1) / sw;
  b.expect_shape("output", b.out(), ho, wo, kc);
  b.check_slots();
  const bool int8 = op.tensors[1]->dtype == DType::kI8;
  if (int8 && d > 1) {
    b.fail("dilation " + std::to_string(d) + " needs f32 weights (no INT8 dilated kernel)");
  }
  float input_scale = 0.0f;
  if (int8) {
    input_scale = op.tensors[5]->as<float>()[0];
    if (!(std::isfinite(input_scale) && input_scale >= 0.0f)) {
      b.fail("input_scale " + std::to_string(input_scale) +
             " is not a finite number >= 0 (0 = dynamic)");
    }
  }
  DWConv3x3Args& args = b.make_args<DWConv3x3Args>();
  args.int8 = int8;
  args.input_scale = input_scale;
  // < 2^32: the input value is <= 4 GiB
  if (int8) args.scratch_bytes = in.height * in.width * c;
  args.shape = DWConvShape{in.height, in.width, c, k, sh, sw, ho, wo, d};
}

void build_bitpack(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  b.expect_shape("output", b.out(), in.height, in.width, in.channels);
  b.check_slots();
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
}

void build_bconv2d(Builder& b) {
  const ValueInfo& in = b.in(0);
  const ValueInfo& out = b.out();
  const std::uint64_t k = b.uattr(0);
  const std::int64_t pad = b.attr(1);
  const std::uint64_t ci = in.channels;
  const std::uint64_t co = out.channels;
  b.expect_shape("output", out, in.height, in.width, co);
  // The dot of every variant is an int32: |dot| <= k*k*Ci.
  if (k * k * ci > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    b.fail(std::to_string(ci) + " input channels overflow the int32 dot of a " + std::to_string(k) +
           "x" + std::to_string(k) + " binary conv");
  }
  b.check_slots();
  b.make_args<BConv2DArgs>().shape = BConvShape{
      in.height, in.width, ci, co, k, pad == 0 ? BinaryPadding::kZero : BinaryPadding::kOne};
}

// AFFINE, PRELU, RELU, SIGMOID: f32 -> f32 of the same shape, per-channel f32 tensors.
void build_unary(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  b.expect_shape("output", b.out(), in.height, in.width, in.channels);
  b.check_slots();
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
}

void build_add(Builder& b) {
  Op& op = b.op;
  const ValueInfo& x = b.in(0);
  b.expect_shape("input 1", b.in(1), x.height, x.width, x.channels);
  b.expect_shape("output", b.out(), x.height, x.width, x.channels);
  op.pixels = std::size_t{x.height} * x.width;
  op.channels = x.channels;
}

void build_mul_channel(Builder& b) {
  Op& op = b.op;
  const ValueInfo& x = b.in(0);
  b.expect_shape("input 1 (the per-channel factors)", b.in(1), 1, 1, x.channels);
  b.expect_shape("output", b.out(), x.height, x.width, x.channels);
  op.pixels = std::size_t{x.height} * x.width;
  op.channels = x.channels;
}

void build_avgpool(Builder& b) {
  const ValueInfo& in = b.in(0);
  const std::uint64_t kh = b.uattr(0), kw = b.uattr(1), sh = b.uattr(2), sw = b.uattr(3);
  const std::uint64_t ho = (in.height - kh + sh - 1) / sh + 1;
  const std::uint64_t wo = (in.width - kw + sw - 1) / sw + 1;
  // Ceil mode must not add a window that starts past the image (PyTorch drops such a
  // window; it can only arise when stride > kernel).
  if ((ho - 1) * sh >= in.height || (wo - 1) * sw >= in.width) {
    b.fail("ceil mode makes a window start past the input " + shape_str(in) + " (kernel " +
           std::to_string(kh) + "x" + std::to_string(kw) + ", stride " + std::to_string(sh) + "x" +
           std::to_string(sw) + ")");
  }
  b.expect_shape("output", b.out(), ho, wo, in.channels);
  b.make_args<AvgPoolArgs>().shape =
      AvgPoolShape{in.height, in.width, in.channels, kh, kw, sh, sw, ho, wo};
}

void build_global_avgpool(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  b.expect_shape("output", b.out(), 1, 1, in.channels);
  op.pixels = std::size_t{in.height} * in.width;
  op.channels = in.channels;
}

void build_concat(Builder& b) {
  Op& op = b.op;
  const ValueInfo& first = b.in(0);
  std::uint64_t total = 0;  // <= 2^20 inputs of < 2^32 channels: no overflow
  std::size_t* channels = b.pool().make_array<std::size_t>(op.inputs.size());
  for (std::size_t k = 0; k < op.inputs.size(); ++k) {
    const ValueInfo& v = b.in(k);
    if (v.height != first.height || v.width != first.width) {
      b.fail("input " + std::to_string(k) + " " + quoted(std::string(v.name)) + " has shape " +
             shape_str(v) + ", but input 0 is " + shape_str(first) +
             " (height and width must agree)");
    }
    total += v.channels;
    channels[k] = v.channels;
  }
  b.expect_shape("output", b.out(), first.height, first.width, total);
  op.pixels = std::size_t{first.height} * first.width;
  ConcatArgs& args = b.make_args<ConcatArgs>();
  args.channels = channels;
  // The file's tables hold fewer than 2^32 entries.
  args.n_inputs = static_cast<std::uint32_t>(op.inputs.size());
}

// FC: f32 (H, W, C) read as one vector of H*W*C features (NHWC order: an FC after a flattened
// map) -> (1, 1, Co). bitplane8 packs C features per plane row and binary C signs per weight
// row, so both need H = W = 1.
void build_fc(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  const ValueInfo& out = b.out();
  b.expect_shape("output", out, 1, 1, out.channels);
  // In range: the schema's mode table has already refused any other value.
  const auto encoding = static_cast<FCEncoding>(b.attr(0));
  const std::uint64_t pixels = std::uint64_t{in.height} * in.width;  // < 2^64
  if ((encoding == FCEncoding::bitplane8 || encoding == FCEncoding::binary) && pixels != 1) {
    b.fail("input " + quoted(std::string(in.name)) + " has shape " + shape_str(in) + ", but " +
           (encoding == FCEncoding::bitplane8 ? "bitplane8" : "binary") +
           " weights need a (1, 1, C) input");
  }
  // The weight dims multiply H*W*C: bound it first so that the product cannot wrap.
  const std::uint64_t c = sat_mul(pixels, in.channels);
  if (c > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    b.fail("input " + quoted(std::string(in.name)) + " of shape " + shape_str(in) +
           " has more than 2^31 - 1 features");
  }
  b.check_slots();
  op.channels = c;
  FCArgs& args = b.make_args<FCArgs>();
  args.out_features = out.channels;
  args.encoding = encoding;
}

void build_maxpool(Builder& b) {
  const ValueInfo& in = b.in(0);
  const std::uint64_t kh = b.uattr(0), kw = b.uattr(1), sh = b.uattr(2), sw = b.uattr(3);
  const std::uint64_t pt = b.uattr(4), pl = b.uattr(5), pb = b.uattr(6), pr = b.uattr(7);
  const std::uint64_t ph = in.height + pt + pb;  // < 2^32 + 2^32: no overflow
  const std::uint64_t pw = in.width + pl + pr;
  if (ph < kh || pw < kw) {
    b.fail("window " + std::to_string(kh) + "x" + std::to_string(kw) +
           " is larger than the padded input " + std::to_string(ph) + "x" + std::to_string(pw));
  }
  // Floor mode. With pads < kernel (the schema's ranges) every window, the last included,
  // starts before the input ends, so it holds an input pixel and padding never wins.
  const std::uint64_t ho = (ph - kh) / sh + 1;
  const std::uint64_t wo = (pw - kw) / sw + 1;
  b.expect_shape("output", b.out(), ho, wo, in.channels);
  b.make_args<MaxPoolArgs>().shape =
      MaxPoolShape{in.height, in.width, in.channels, kh, kw, sh, sw, pt, pl, ho, wo};
}

// CLIP: an element-wise op whose bounds are a 2-float tensor, checked here once.
void build_clip(Builder& b) {
  build_unary(b);
  // The run reads the bounds from the tensor (clip_bounds): no argument record.
  const ClipBounds bounds = clip_bounds(b.op);
  if (std::isnan(bounds.lo) || std::isnan(bounds.hi) || bounds.lo > bounds.hi) {
    b.fail("bounds [" + std::to_string(bounds.lo) + ", " + std::to_string(bounds.hi) +
           "] must be two numbers with lo <= hi");
  }
}

// BFC: bits (H, W, C) x bits (Co, H*W*words(C)) -> f32 (1, 1, Co): the input read as one vector
// of H*W pixels of words(C) words each (a flattened map; H = W = 1 is the usual hidden layer).
void build_bfc(Builder& b) {
  Op& op = b.op;
  const ValueInfo& in = b.in(0);
  const ValueInfo& out = b.out();
  b.expect_shape("output", out, 1, 1, out.channels);
  const std::uint64_t pixels = std::uint64_t{in.height} * in.width;  // < 2^64
  const std::uint64_t c = in.channels;
  const std::uint64_t o = out.channels;
  // Every variant's dot is an int32: |dot| <= H*W*C (saturating, so the check cannot wrap and
  // the weight dims H*W*words(C) are small enough to multiply).
  const std::uint64_t bits = sat_mul(pixels, c);
  if (bits > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    b.fail(std::to_string(bits) + " input signs (" + shape_str(in) +
           ") overflow the int32 dot of a binary FC");
  }
  // run_bfc counts a map whose pixels end in tail bits over whole words, then removes the tail
  // bits' share of the dot in float32: exact while the whole-word count fits 2^24.
  if (pixels > 1 && c % kBitsPerWord != 0 &&
      sat_mul(pixels, words_for_channels(c)) * kBitsPerWord > (std::uint64_t{1} << 24)) {
    b.fail("input " + quoted(std::string(in.name)) + " of shape " + shape_str(in) +
           ": an H x W map whose channels are not a multiple of 64 may hold at most 2^24 "
           "bit positions (64 * H * W * words(C))");
  }
  b.check_slots();
  op.channels = c;
  op.pixels = pixels;
  b.make_args<BFCArgs>().out_features = o;
}

// Output size of PyTorch's conv; fails when the kernel does not fit the padded input.
std::uint64_t conv_out_size(Builder& b, const char* what, std::uint64_t in, std::uint64_t pad_a,
                            std::uint64_t pad_b, std::uint64_t k, std::uint64_t stride) {
  if (in + pad_a + pad_b < k) {
    b.fail("kernel " + std::string(what) + " " + std::to_string(k) + " exceeds the padded input " +
           std::string(what) + " " + std::to_string(in + pad_a + pad_b));
  }
  return (in + pad_a + pad_b - k) / stride + 1;
}

void build_bconv2d_general(Builder& b) {
  const ValueInfo& in = b.in(0);
  const ValueInfo& out = b.out();
  const std::uint64_t kh = b.uattr(0), kw = b.uattr(1), sh = b.uattr(2), sw = b.uattr(3);
  const std::uint64_t pt = b.uattr(4), pl = b.uattr(5), pb = b.uattr(6), pr = b.uattr(7);
  const std::uint64_t ci = in.channels;
  const std::uint64_t co = out.channels;
  const std::uint64_t ho = conv_out_size(b, "height", in.height, pt, pb, kh, sh);
  const std::uint64_t wo = conv_out_size(b, "width", in.width, pl, pr, kw, sw);
  b.expect_shape("output", out, ho, wo, co);
  // The dot of every variant is an int32: |dot| <= kh*kw*Ci (the product saturates, so a
  // hostile kernel size cannot wrap it small).
  if (sat_mul({kh, kw, ci}) >
      static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    b.fail(std::to_string(ci) + " input channels overflow the int32 dot of a " +
           std::to_string(kh) + "x" + std::to_string(kw) + " binary conv");
  }
  b.check_slots();
  b.make_args<BConv2DGeneralArgs>().shape =
      BConvGeneralShape{in.height,
                        in.width,
                        ci,
                        co,
                        kh,
                        kw,
                        sh,
                        sw,
                        pt,
                        pl,
                        ho,
                        wo,
                        b.attr(8) == 0 ? BinaryPadding::kZero : BinaryPadding::kOne};
}

// SOFTMAX: over the channels of each pixel, same shape out; no params and, as for every
// element-wise op, no FLOPs (docs/ops.md counts multiply-accumulates of weighted layers only).
// Its one argument, log, is read from its attribute (softmax_log): no argument record.
void build_softmax(Builder& b) { build_unary(b); }

// Output size of PyTorch's avg_pool2d along one axis (docs/format.md, AVGPOOL2D): floor or
// ceil of the window count, then in ceil mode no window that starts at or past the input's
// end (in + pad_a in padded coordinates), which would cover padding only.
std::uint64_t avgpool2d_out_size(Builder& b, const char* what, std::uint64_t in,
                                 std::uint64_t pad_a, std::uint64_t pad_b, std::uint64_t k,
                                 std::uint64_t stride, bool ceil_mode) {
  if (in + pad_a + pad_b < k) {
    b.fail("window " + std::string(what) + " " + std::to_string(k) + " exceeds the padded input " +
           std::string(what) + " " + std::to_string(in + pad_a + pad_b));
  }
  const std::uint64_t span = in + pad_a + pad_b - k;  // < 2^33: no overflow below
  std::uint64_t out = (ceil_mode ? span + stride - 1 : span) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_a) --out;
  return out;
}

void build_avgpool2d(Builder& b) {
  const ValueInfo& in = b.in(0);
  const std::uint64_t kh = b.uattr(0), kw = b.uattr(1), sh = b.uattr(2), sw = b.uattr(3);
  const std::uint64_t pt = b.uattr(4), pl = b.uattr(5), pb = b.uattr(6), pr = b.uattr(7);
  const bool ceil_mode = b.attr(8) == 1;
  const bool count_include_pad = b.attr(9) == 1;
  const std::uint64_t ho = avgpool2d_out_size(b, "height", in.height, pt, pb, kh, sh, ceil_mode);
  const std::uint64_t wo = avgpool2d_out_size(b, "width", in.width, pl, pr, kw, sw, ceil_mode);
  // With pads < kernel (the schema's ranges) and no window starting past the input, every
  // window covers an input pixel, so no divisor is 0 (pool.h, AvgPool2DShape).
  b.expect_shape("output", b.out(), ho, wo, in.channels);
  // Every divisor (at most kh·kw) is then exact in f32, and no size product wraps on 32 bits.
  if (sat_mul(kh, kw) > (std::uint64_t{1} << 24)) {
    b.fail("window " + std::to_string(kh) + "x" + std::to_string(kw) +
           " has more than 2^24 pixels (its divisor would not be exact in f32)");
  }
  b.make_args<AvgPool2DArgs>().shape = AvgPool2DShape{
      in.height, in.width, in.channels, kh, kw, sh, sw, pt, pl, pb, pr, ho, wo, count_include_pad};
}

// RESIZE: the output is (out_height, out_width, C); the ratios finite and >= 0 (resize.h
// converts floor(ratio * o) to an index, which needs a finite, non-negative product).
void build_resize(Builder& b) {
  const ValueInfo& in = b.in(0);
  const std::uint64_t oh = b.uattr(0), ow = b.uattr(1);
  b.expect_shape("output", b.out(), oh, ow, in.channels);
  b.check_slots();
  const float* ratio = b.op.tensors[0]->as<float>();
  for (int k = 0; k < 2; ++k) {
    if (!(std::isfinite(ratio[k]) && ratio[k] >= 0.0f)) {
      b.fail(std::string("ratio ") + (k == 0 ? "height" : "width") + " " +
             std::to_string(ratio[k]) + " is not a finite number >= 0");
    }
  }
  b.make_args<ResizeArgs>().shape = ResizeShape{
      in.height, in.width, in.channels, oh, ow, b.attr(2) == 1, b.attr(3) == 1, ratio[0], ratio[1]};
}

// The shape rules of each op, by code; the schema's list and this one must have the same
// length (a new op without its build function does not compile).
using BuildFn = void (*)(Builder&);
constexpr BuildFn kBuilders[] = {
    nullptr,
    &build_conv2d,
    &build_dwconv3x3,
    &build_bitpack,
    &build_bconv2d,
    &build_unary,
    &build_unary,
    &build_unary,
    &build_unary,
    &build_add,
    &build_mul_channel,
    &build_avgpool,
    &build_global_avgpool,
    &build_concat,
    &build_fc,
    &build_maxpool,
    &build_clip,
    &build_bconv2d_general,
    &build_bfc,
    &build_softmax,
    &build_avgpool2d,
    &build_resize,
};
static_assert(sizeof(kBuilders) / sizeof(kBuilders[0]) == QBINFER_OP_CODE_MAX + 1,
              "every op of weights_tools/op_schema.py needs its build function here");

}  // namespace

const char* op_type_name(std::uint32_t code) {
  const OpSpec* spec = op_spec(code);
  return spec != nullptr ? spec->name : nullptr;
}

Op build_op(const QbwFile& file, std::uint32_t index, OpArgsPool& pool) {
  const OpRecord& rec = file.ops()[index];
  const OpSpec* spec = op_spec(rec.type);
  if (spec == nullptr) {
    file.fail("op " + std::to_string(index) + " " + quoted(std::string(rec.name())) +
              ": unknown op code " + std::to_string(rec.type) + " (this qbinfer reads format " +
              std::to_string(kFormatMajor) + ".x, op codes 1.." +
              std::to_string(QBINFER_OP_CODE_MAX) + ")");
  }
  Builder b(file, index, *spec, pool);
  b.check_record();
  kBuilders[rec.type](b);
  return b.op;
}

void* OpArgsPool::allocate(std::size_t bytes, std::size_t align) {
  // Chunks grow from 4 KiB (a zoo model's few hundred records) to 1 MiB (an op-dense file's
  // hundreds of thousands); a record larger than that (a CONCAT of 200k inputs) gets a chunk
  // of its own size.
  constexpr std::size_t kFirstChunk = 4096, kMaxChunk = std::size_t{1} << 20;
  const std::size_t pad = (align - reinterpret_cast<std::uintptr_t>(next_) % align) % align;
  if (next_ == nullptr || left_ < pad + bytes) {
    const std::size_t grown = chunks_.empty() ? kFirstChunk : std::min(2 * held_, kMaxChunk);
    const std::size_t size = std::max(grown, bytes + align);
    // Not zeroed: each record is initialised when it is made, and the chunk's untouched tail
    // costs no resident memory.
    chunks_.emplace_back(new unsigned char[size]);
    next_ = chunks_.back().get();
    left_ = size;
    held_ += size;
    return allocate(bytes, align);
  }
  void* p = next_ + pad;
  next_ += pad + bytes;
  left_ -= pad + bytes;
  return p;
}

ConstSpan<std::int64_t> Op::attrs() const {
  // check_record() accepted the schema's count of attributes for the type, or fewer with the
  // defaults of the rest filled in (attr_values then points at the full list).
  const OpSpec* spec = op_spec(static_cast<std::uint32_t>(type));
  return ConstSpan<std::int64_t>(attr_values, spec != nullptr ? spec->n_attrs : 0);
}

OpStats Op::stats() const {
  OpStats s;
  for (const TensorInfo* t : tensors) s.bytes += t != nullptr ? t->nbytes : 0;
  switch (type) {
    case OpType::kConv2D: {
      const Conv2DShape& sh = args<Conv2DArgs>().shape;
      const std::uint64_t co = sh.out_channels, ci = sh.in_channels;
      s.params = sat_mul({co, sh.kernel_h, sh.kernel_w, ci}) + co;
      s.flops = sat_mul({co, ci, sh.kernel_h, sh.kernel_w, sh.out_height, sh.out_width});
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConv3x3Args& a = args<DWConv3x3Args>();
      const std::uint64_t c = a.shape.channels;
      const std::uint64_t kc = a.shape.multiplier * c;
      s.params = kc * 9 + 3 * kc + (tensors[0] ? c : 0) + (a.int8 ? kc + 1 : 0);
      s.flops = sat_mul({kc, 9, a.shape.out_height, a.shape.out_width});
      break;
    }
    case OpType::kBConv2D: {
      const BConvShape& sh = args<BConv2DArgs>().shape;
      const std::uint64_t co = sh.out_channels, ci = sh.in_channels, k = sh.kernel;
      s.params = sat_mul({co, k, k, ci}) + 2 * co;
      s.bops = sat_mul({co, ci, k, k, sh.height, sh.width});
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = args<BConv2DGeneralArgs>().shape;
      const std::uint64_t co = sh.out_channels, ci = sh.in_channels;
      s.params = sat_mul({co, sh.kernel_h, sh.kernel_w, ci}) + 2 * co;
      s.bops = sat_mul({co, ci, sh.kernel_h, sh.kernel_w, sh.out_height, sh.out_width});
      break;
    }
    case OpType::kFC: {
      const FCArgs& a = args<FCArgs>();
      const std::uint64_t o = a.out_features, c = channels;
      s.params = o * c + o + (a.encoding != FCEncoding::fp32 ? o : 0);
      s.flops = o * c;
      break;
    }
    case OpType::kBFC: {
      const std::uint64_t o = args<BFCArgs>().out_features;
      const std::uint64_t bits = sat_mul(pixels, channels);
      s.params = sat_mul(o, bits) + 2 * o;
      s.bops = sat_mul(o, bits);
      break;
    }
    case OpType::kMaxPool: {  // one compare per window pixel
      const MaxPoolShape& sh = args<MaxPoolArgs>().shape;
      s.flops = sat_mul({sh.channels, sh.kernel_h, sh.kernel_w, sh.out_height, sh.out_width});
      break;
    }
    case OpType::kAvgPool2D: {  // one add per window pixel
      const AvgPool2DShape& sh = args<AvgPool2DArgs>().shape;
      s.flops = sat_mul({sh.channels, sh.kernel_h, sh.kernel_w, sh.out_height, sh.out_width});
      break;
    }
    case OpType::kAvgPool:  // not counted (docs/ops.md: weighted layers only)
    case OpType::kConcat:
      break;
    case OpType::kClip:    // its two bounds
    case OpType::kResize:  // its two ratios
      s.params = 2;
      break;
    default:  // element-wise (SOFTMAX too): one parameter per channel and tensor slot
      s.params = std::uint64_t{channels} * tensors.size();
      break;
  }
  return s;
}

ClipBounds clip_bounds(const Op& op) {
  const float* bounds = op.tensors[0]->as<float>();  // the schema's slot: 2 f32
  return ClipBounds{bounds[0], bounds[1]};
}

std::vector<std::pair<const char*, std::int64_t>> named_attrs(const Op& op) {
  const OpSpec* spec = op_spec(static_cast<std::uint32_t>(op.type));
  std::vector<std::pair<const char*, std::int64_t>> out;
  const ConstSpan<std::int64_t> attrs = op.attrs();
  for (std::size_t i = 0; i < attrs.size() && i < spec->n_attrs; ++i) {
    out.emplace_back(spec->attrs[i].name, attrs[i]);
  }
  return out;
}

}  // namespace qbinfer
