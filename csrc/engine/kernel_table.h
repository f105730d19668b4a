// The engine calls microkernels only through a KernelTable: one pointer per kernel family,
// each family's entry for one ISA (`*_kernels_for(isa)`, declared by the family's header).
// A family that has no kernels for that ISA falls back to its scalar (reference) entry, so a
// new ISA can land one family at a time. The table of the active ISA (isa.h: the best the CPU
// runs, or QBINFER_ISA) is resolved once per process.
#pragma once

#include "kernels/bconv/bconv.h"
#include "kernels/bfc/bfc.h"
#include "kernels/bitpack/bitpack.h"
#include "kernels/concat/concat.h"
#include "kernels/conv2d/conv2d.h"
#include "kernels/dwconv/dwconv.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/epilogue/epilogue.h"
#include "kernels/fc/fc.h"
#include "kernels/pool/pool.h"
#include "kernels/resize/resize.h"
#include "qbinfer/isa.h"

namespace qbinfer {

struct KernelTable {
  Isa isa;  // the ISA asked for; a family's own `isa` names the entry actually used
  const BitpackKernels* bitpack;
  const BConvKernels* bconv;
  const Conv2DKernels* conv2d;
  const DWConvKernels* dwconv;
  const ElementwiseKernels* elementwise;
  const EpilogueKernels* epilogue;
  const FCKernels* fc;
  const PoolKernels* pool;
  const ConcatKernels* concat;
  const BFCKernels* bfc;
  const BConvGeneralKernels* bconv_general;
  const ResizeKernels* resize;
};

// The table of `isa`, which must be one of supported_isas() (std::invalid_argument otherwise).
// Tables live for the whole process; each ISA's is built once.
const KernelTable& kernel_table_for(Isa isa);

// The portable kernels, always available (the oracle the others are tested against).
const KernelTable& reference_kernel_table();

// The table of active_isa(), chosen on first call (thread-safe) and fixed after. Throws
// std::runtime_error when QBINFER_ISA names an ISA that is not supported.
const KernelTable& selected_kernel_table();

}  // namespace qbinfer
