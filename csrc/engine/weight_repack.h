// Weight repacking at load: the weights of BCONV2D, BCONV2D_GENERAL, DWCONV3X3 and CONV2D, and
// the planes of a bitplane8 FC (into int8 codes, fc.h), copied once from the file into the
// layout of the kernels that will run them (each family's pack function), in a 64-byte aligned
// buffer. Ops that read the same tensor with the same
// packing (the same op type and every shape field the pack reads) share one buffer: a file
// that uses one large weight in many ops costs that weight's packed size once, not once per
// op (docs/architecture.md, "Memory bounds at load").
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/aligned_buffer.h"
#include "engine/kernel_table.h"
#include "engine/ops.h"

namespace qbinfer {

// What makes two packed buffers equal: the tensor packed and the fields of the op that decide
// the packed bytes (the op type, the INT8 flag, the whole kernel shape). Empty `fields` for an
// op with nothing to pack.
struct PackKey {
  const void* tensor = nullptr;
  std::vector<std::size_t> fields;

  bool operator<(const PackKey& o) const {
    return tensor != o.tensor ? tensor < o.tensor : fields < o.fields;
  }
  bool empty() const { return fields.empty(); }
};

PackKey pack_key(const Op& op);

// Bytes repack_weights(op, kt) allocates, without packing anything (0: nothing to pack).
std::uint64_t packed_weight_bytes(const Op& op, const KernelTable& kt);

// op's weights packed for the kernels of kt; an empty buffer for an op whose kernels read the
// file's tensors directly.
AlignedBuffer repack_weights(const Op& op, const KernelTable& kt);

}  // namespace qbinfer
