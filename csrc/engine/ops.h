// Operators of the graph executor: each op type validates its record from the file
// (values, tensors, attributes: the rules of docs/format.md, "Ops") into a ready-to-run Op
// with its kernel shapes resolved, and runs by one call through the kernel table. All
// validation happens here at load; the run functions only compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/kernel_table.h"
#include "format/qbw_file.h"

namespace qbinfer {

enum class OpType : std::uint32_t {
  kConv2D = 1,
  kDWConv3x3 = 2,
  kBitpack = 3,
  kBConv2D = 4,
  kAffine = 5,
  kPReLU = 6,
  kReLU = 7,
  kSigmoid = 8,
  kAdd = 9,
  kMulChannel = 10,
  kAvgPool = 11,
  kGlobalAvgPool = 12,
  kConcat = 13,
  kFC = 14,
};

// "CONV2D", ..., or nullptr for a code this reader does not know.
const char* op_type_name(std::uint32_t code);

// Where an op finds its buffers while it runs on one image. Everything here is fixed when a
// workspace is created; nothing is allocated while running.
struct ExecContext {
  unsigned char* arena;
  const std::uint64_t* value_offsets;  // per value, into arena
  std::int8_t* scratch;                // int8 depthwise scratch
  const float* const* concat_inputs;   // per workspace: the resolved inputs of every CONCAT
  const KernelTable* kernels;

  template <class T>
  T* value(std::uint32_t v) const {
    return reinterpret_cast<T*>(arena + value_offsets[v]);
  }
};

struct Op;
using OpRunFn = void (*)(const Op&, const ExecContext&);

// Per-image counts, docs/ops.md convention (multiply-accumulates).
struct OpStats {
  std::uint64_t params = 0;  // scalar parameters (a binary weight counts once)
  std::uint64_t bytes = 0;   // stored bytes of the op's tensors
  std::uint64_t flops = 0;
  std::uint64_t bops = 0;
};

struct Op {
  std::uint32_t index = 0;
  OpType type{};
  std::string name;
  std::vector<std::uint32_t> inputs;          // value indices
  std::uint32_t output = 0;                   // value index
  std::vector<const TensorInfo*> tensors;     // per slot; nullptr = absent
  std::vector<std::int64_t> attrs;
  OpRunFn run = nullptr;
  OpStats stats;

  // Kernel arguments, resolved at load (only those of this op's type are meaningful).
  Conv2DShape conv2d{};
  DWConvShape dwconv{};
  BConvShape bconv{};
  AvgPoolShape avgpool{};
  std::size_t pixels = 0;    // element-wise, bitpack, global pool, concat
  std::size_t channels = 0;  // element-wise, bitpack, global pool; FC in_features
  std::size_t out_features = 0;     // FC
  int fc_encoding = 0;              // FC: 0 fp32, 1 int8, 2 bitplane8
  bool relu = false;                // CONV2D activation
  bool dw_int8 = false;             // DWCONV3X3 weight dtype
  float dw_input_scale = 0.0f;      // DWCONV3X3 int8: > 0 static, 0 dynamic per image
  std::size_t scratch_bytes = 0;    // DWCONV3X3 int8
  std::vector<std::size_t> concat_channels;
  std::size_t concat_slot = 0;      // first entry of this op in ExecContext::concat_inputs
};

// Validates op `index` of the file against the rules of its type and resolves it.
// Throws FormatError "<path>: op <index> <TYPE> '<name>': <what>".
Op build_op(const QbwFile& file, std::uint32_t index);

// The op's attributes with their docs/format.md names, in file order.
std::vector<std::pair<const char*, std::int64_t>> named_attrs(const Op& op);

}  // namespace qbinfer
