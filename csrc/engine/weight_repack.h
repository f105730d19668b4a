// Weight repacking at load: the weights of BCONV2D, DWCONV3X3 and CONV2D, copied once from the
// file into the layout of the kernels that will run them (each family's pack function), in a
// 64-byte aligned buffer the step owns.
#pragma once

#include "base/aligned_buffer.h"
#include "engine/kernel_table.h"
#include "engine/ops.h"

namespace qbinfer {

// op's weights packed for the kernels of kt; an empty buffer for an op whose kernels read the
// file's tensors directly.
AlignedBuffer repack_weights(const Op& op, const KernelTable& kt);

}  // namespace qbinfer
