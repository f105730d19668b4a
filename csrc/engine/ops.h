// Operators of the graph executor: each op type validates its record from the file
// (values, tensors, attributes: the rules of docs/format.md, "Ops") into an Op with its
// kernel shapes resolved. All validation happens here at load; exec_plan.h turns the ops into
// the steps that run (fusing chains, packing weights), and its run functions only compute.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "engine/op_schema.inc"
#include "format/qbw_file.h"
#include "kernels/bconv/bconv.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/pool/pool.h"
#include "kernels/resize/resize.h"

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

// The kernel arguments of the op types that need more than pixels, channels, tensors and
// attributes: one record type per op type, holding only what that type's planner, packer and
// run function read. `kType` names the op type a record belongs to (Op::args checks it in
// debug builds). Every record is trivially destructible: it lives in the model's OpArgsPool,
// which frees all of them at once. An op-dense file (600k ops in 75 MB) thus pays per op only
// for its own type's fields: a MAXPOOL 88 bytes, an FC 16, a one-input CONCAT 24, an
// element-wise op or a SOFTMAX nothing. The counts (OpStats) are derived from these on demand
// (Op::stats), not stored.
struct Conv2DArgs {
  static constexpr OpType kType = OpType::kConv2D;
  Conv2DShape shape{};
  bool relu = false;  // activation
};
struct DWConv3x3Args {
  static constexpr OpType kType = OpType::kDWConv3x3;
  DWConvShape shape{};
  std::size_t scratch_bytes = 0;  // int8: the input's codes
  float input_scale = 0.0f;       // int8: > 0 static, 0 dynamic per image
  bool int8 = false;              // weight dtype
};
struct BConv2DArgs {
  static constexpr OpType kType = OpType::kBConv2D;
  BConvShape shape{};
};
struct AvgPoolArgs {
  static constexpr OpType kType = OpType::kAvgPool;
  AvgPoolShape shape{};
};
struct ConcatArgs {
  static constexpr OpType kType = OpType::kConcat;
  const std::size_t* channels = nullptr;  // per input, in the same pool
  std::uint32_t n_inputs = 0;
  // Its first entry in the workspace's table of CONCAT inputs (ExecContext::concat_inputs),
  // set by the model when it plans the steps.
  std::uint32_t slot = 0;
};
// FC's weight encodings: the schema's FC modes (docs/format.md), generated into op_schema.inc.
enum class FCEncoding : int {
#define QBINFER_FC_ENCODING_ENUMERATOR(key, name) name = key,
  QBINFER_FC_MODE_LIST(QBINFER_FC_ENCODING_ENUMERATOR)
#undef QBINFER_FC_ENCODING_ENUMERATOR
};
struct FCArgs {
  static constexpr OpType kType = OpType::kFC;
  std::size_t out_features = 0;
  FCEncoding encoding = FCEncoding::fp32;
};
struct MaxPoolArgs {
  static constexpr OpType kType = OpType::kMaxPool;
  MaxPoolShape shape{};
};
struct BConv2DGeneralArgs {
  static constexpr OpType kType = OpType::kBConv2DGeneral;
  BConvGeneralShape shape{};
};
struct BFCArgs {
  static constexpr OpType kType = OpType::kBFC;
  std::size_t out_features = 0;
};
struct AvgPool2DArgs {
  static constexpr OpType kType = OpType::kAvgPool2D;
  AvgPool2DShape shape{};
};
struct ResizeArgs {
  static constexpr OpType kType = OpType::kResize;
  ResizeShape shape{};
};

// The storage of the ops' argument records: packed one after another in chunks that never
// move (an op points at its record) and are freed with the pool, so that a record costs its
// own bytes and no allocation of its own. Owned by the model, beside its ops.
class OpArgsPool {
 public:
  OpArgsPool() = default;
  OpArgsPool(const OpArgsPool&) = delete;
  OpArgsPool& operator=(const OpArgsPool&) = delete;

  // A value-initialised record.
  template <class A>
  A* make() {
    static_assert(std::is_trivially_destructible_v<A>, "the pool runs no destructors");
    return new (allocate(sizeof(A), alignof(A))) A{};
  }
  // n zeroed elements (a CONCAT's channels).
  template <class T>
  T* make_array(std::size_t n) {
    static_assert(std::is_trivial_v<T>, "the pool runs no constructors or destructors");
    T* p = static_cast<T*>(allocate(n * sizeof(T), alignof(T)));
    std::fill(p, p + n, T{});
    return p;
  }

 private:
  void* allocate(std::size_t bytes, std::size_t align);

  std::vector<std::unique_ptr<unsigned char[]>> chunks_;
  unsigned char* next_ = nullptr;  // the free part of the last chunk
  std::size_t left_ = 0;
  std::size_t held_ = 0;  // bytes of all chunks
};

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
  // Its type's argument record (the XxxArgs above) in the model's OpArgsPool; nullptr for a
  // type without one.
  void* arg_record = nullptr;

  // The argument record, which must be of the op's own type (A::kType == type): one
  // indirection, as a member would cost.
  template <class A>
  const A& args() const {
    assert(A::kType == type && arg_record != nullptr);
    return *static_cast<const A*>(arg_record);
  }
  template <class A>
  A& args() {
    assert(A::kType == type && arg_record != nullptr);
    return *static_cast<A*>(arg_record);
  }

  // Per-image counts, derived from the op's shapes and tensors on demand: the bytes of its
  // tensors, for a weighted layer its parameters and multiply-accumulates (docs/ops.md), for an
  // element-wise op one parameter per channel and tensor slot and no FLOPs.
  OpStats stats() const;
  std::string_view name() const { return std::string_view(name_chars, name_size); }
  // The attributes (the file's op record): their count is the op type's (the schema's).
  ConstSpan<std::int64_t> attrs() const;
  // Bytes of int8 scratch the op's run needs (DWCONV3X3 int8), else 0.
  std::size_t scratch_bytes() const {
    return type == OpType::kDWConv3x3 ? args<DWConv3x3Args>().scratch_bytes : 0;
  }
};

// CLIP's bounds, lo <= hi and neither NaN (checked by build_op), from its tensor.
struct ClipBounds {
  float lo, hi;
};
ClipBounds clip_bounds(const Op& op);

// SOFTMAX: log-softmax (attr log = 1) instead of probabilities; read from its attribute.
inline bool softmax_log(const Op& op) { return op.attr_values[0] == 1; }

// Validates op `index` of the file against the rules of its type (the generated schema tables
// for counts, dtypes, attribute ranges and tensor slots; ops.cc for shape formulas) and resolves
// it, its argument record in `pool`. Throws FormatError "<path>: op <index> <TYPE> '<name>':
// <what>".
Op build_op(const QbwFile& file, std::uint32_t index, OpArgsPool& pool);

// The op's attributes with their docs/format.md names, in file order.
std::vector<std::pair<const char*, std::int64_t>> named_attrs(const Op& op);

}  // namespace qbinfer
