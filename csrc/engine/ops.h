// Operators of the graph executor: each op type validates its record from the file
// (values, tensors, attributes: the rules of docs/format.md, "Ops") into an Op with its
// kernel shapes resolved. All validation happens here at load; exec_plan.h turns the ops into
// the steps that run (fusing chains, packing weights), and its run functions only compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/op_schema.inc"
#include "format/qbw_file.h"
#include "kernels/bconv/bconv.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/pool/pool.h"

namespace qbinfer {

// The op codes of docs/format.md; the list is generated from weights_tools/op_schema.py.
enum class OpType : std::uint32_t {
#define QBINFER_OP_ENUMERATOR(code, NAME, enumerator) enumerator = code,
  QBINFER_OP_LIST(QBINFER_OP_ENUMERATOR)
#undef QBINFER_OP_ENUMERATOR
};

// "CONV2D", ..., or nullptr for a code this reader does not know.
const char* op_type_name(std::uint32_t code);

// Per-image counts, docs/ops.md convention (multiply-accumulates).
struct OpStats {
  std::uint64_t params = 0;  // scalar parameters (a binary weight counts once)
  std::uint64_t bytes = 0;   // stored bytes of the op's tensors
  std::uint64_t flops = 0;
  std::uint64_t bops = 0;
};

// An op's tensor slots: the file's tensor of each slot, nullptr where absent. A view of the op
// record's tensor indices (no per-op array: the QbwFile outlives its ops).
class TensorSlots {
 public:
  TensorSlots() = default;
  TensorSlots(const TensorInfo* tensors, ConstSpan<std::uint32_t> slots)
      : tensors_(tensors), slots_(slots) {}
  std::size_t size() const { return slots_.size(); }
  const TensorInfo* operator[](std::size_t slot) const {
    const std::uint32_t t = slots_[slot];
    return t == kAbsentTensor ? nullptr : tensors_ + t;
  }

  class Iterator {
   public:
    Iterator(const TensorSlots* slots, std::size_t i) : slots_(slots), i_(i) {}
    const TensorInfo* operator*() const { return (*slots_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& other) const { return i_ != other.i_; }

   private:
    const TensorSlots* slots_;
    std::size_t i_;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, size()); }

 private:
  const TensorInfo* tensors_ = nullptr;
  ConstSpan<std::uint32_t> slots_;
};

// The kernel arguments of the op types that need more than pixels and channels (convs, pools,
// FC, CONCAT, CLIP, SOFTMAX), with their counts: held apart from the Op, so that an
// element-wise op (most ops of an op-dense file: 600k of them in a 42 MB file) carries none.
struct OpArgs {
  // The shapes of the kernels with one are alternatives: an op holds only its own type's (the
  // builder assigns it; the planner, packer and run functions read it only under a switch on
  // the op's type). All are trivially copyable; the first is value-initialised so that a
  // default OpArgs has no indeterminate bytes.
  union {
    Conv2DShape conv2d{};
    DWConvShape dwconv;
    BConvShape bconv;
    AvgPoolShape avgpool;
    MaxPoolShape maxpool;
    BConvGeneralShape bconv_general;
    AvgPool2DShape avgpool2d;
  };
  std::size_t out_features = 0;   // FC
  std::size_t scratch_bytes = 0;  // DWCONV3X3 int8
  // CONCAT: its first entry in the workspace's table of CONCAT inputs
  // (ExecContext::concat_inputs), set by the model when it plans the steps.
  std::uint32_t concat_slot = 0;
  std::vector<std::size_t> concat_channels;
  float dw_input_scale = 0.0f;  // DWCONV3X3 int8: > 0 static, 0 dynamic per image
  int fc_encoding = 0;          // FC: 0 fp32, 1 int8, 2 bitplane8
  bool relu = false;            // CONV2D activation
  bool dw_int8 = false;         // DWCONV3X3 weight dtype
  bool softmax_log = false;     // SOFTMAX: log-softmax (attr log = 1) instead of probabilities
  OpStats stats;
};

// Whether ops of this type have OpArgs: all but the element-wise ones whose run needs only
// pixels, channels and tensors (and whose counts follow from them: Op::stats).
bool op_has_args(OpType type);

struct Op {
  std::uint32_t index = 0;
  OpType type{};
  std::uint32_t output = 0;  // value index
  std::uint32_t name_size = 0;
  const char* name_chars = nullptr;           // in the QbwFile's pool of op names
  ConstSpan<std::uint32_t> inputs;            // value indices (views of the file's op record)
  TensorSlots tensors;                        // per slot; nullptr = absent
  const std::int64_t* attr_values = nullptr;  // the record's, as many as the type has
  std::size_t pixels = 0;                     // element-wise, bitpack, global pool, concat
  std::size_t channels = 0;                   // element-wise, bitpack, global pool; FC in_features
  // Kernel arguments (op_has_args(type)); nullptr for an element-wise op.
  std::unique_ptr<OpArgs> args;

  // Per-image counts: the builder's for an op with arguments; for an element-wise op, one
  // parameter per channel and tensor slot, the bytes of its tensors and no FLOPs
  // (docs/ops.md counts multiply-accumulates of weighted layers only).
  OpStats stats() const;
  std::string_view name() const { return std::string_view(name_chars, name_size); }
  // The attributes (the file's op record): their count is the op type's (the schema's).
  ConstSpan<std::int64_t> attrs() const;
  // Bytes of int8 scratch the op's run needs (DWCONV3X3 int8), else 0.
  std::size_t scratch_bytes() const { return args != nullptr ? args->scratch_bytes : 0; }
};

// CLIP's bounds, lo <= hi and neither NaN (checked by build_op), from its tensor.
struct ClipBounds {
  float lo, hi;
};
ClipBounds clip_bounds(const Op& op);

// Validates op `index` of the file against the rules of its type (the generated schema tables
// for counts, dtypes, attribute ranges and tensor slots; ops.cc for shape formulas) and resolves
// it. Throws FormatError "<path>: op <index> <TYPE> '<name>': <what>".
Op build_op(const QbwFile& file, std::uint32_t index);

// The op's attributes with their docs/format.md names, in file order.
std::vector<std::pair<const char*, std::int64_t>> named_attrs(const Op& op);

}  // namespace qbinfer
