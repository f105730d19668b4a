#include "engine/kernel_table.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qbinfer {
namespace {

// The family's entry for `isa`, or its scalar entry when this build or CPU has none.
template <class Family>
const Family* pick(const Family* (*kernels_for)(Isa), Isa isa) {
  const Family* f = kernels_for(isa);
  return f != nullptr ? f : kernels_for(Isa::kScalar);
}

KernelTable build_table(Isa isa) {
  return KernelTable{isa,
                     pick(&bitpack_kernels_for, isa),
                     pick(&bconv_kernels_for, isa),
                     pick(&conv2d_kernels_for, isa),
                     pick(&dwconv_kernels_for, isa),
                     pick(&elementwise_kernels_for, isa),
                     pick(&epilogue_kernels_for, isa),
                     pick(&fc_kernels_for, isa),
                     pick(&pool_kernels_for, isa),
                     pick(&concat_kernels_for, isa),
                     pick(&bfc_kernels_for, isa),
                     pick(&bconv_general_kernels_for, isa),
                     pick(&resize_kernels_for, isa)};
}

constexpr int kIsaCount = 4;

}  // namespace

const KernelTable& kernel_table_for(Isa isa) {
  const auto& supported = supported_isas();
  if (std::find(supported.begin(), supported.end(), isa) == supported.end()) {
    throw std::invalid_argument(std::string("ISA ") + isa_name(isa) +
                                " is not supported by this build and CPU");
  }
  // Built eagerly for every supported ISA on first use (thread-safe static init), then
  // read-only.
  static const auto tables = [] {
    struct Tables {
      KernelTable t[kIsaCount];
    } all{};
    for (Isa s : supported_isas()) all.t[static_cast<int>(s)] = build_table(s);
    return all;
  }();
  return tables.t[static_cast<int>(isa)];
}

const KernelTable& reference_kernel_table() { return kernel_table_for(Isa::kScalar); }

const KernelTable& selected_kernel_table() { return kernel_table_for(active_isa()); }

}  // namespace qbinfer
