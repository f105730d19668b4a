#include "engine/weight_repack.h"

#include <cstdint>

namespace qbinfer {

AlignedBuffer repack_weights(const Op& op, const KernelTable& kt) {
  AlignedBuffer packed;
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.bconv;
      packed = AlignedBuffer(kt.bconv->packed_weight_bytes(sh));
      kt.bconv->pack_weight(sh, op.tensors[0]->as<BitWord>(), packed.data());
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.dwconv;
      if (op.dw_int8) {
        packed = AlignedBuffer(kt.dwconv->packed_qs8_bytes(sh));
        kt.dwconv->pack_qs8(sh, op.tensors[1]->as<std::int8_t>(), packed.data());
      } else {
        packed = AlignedBuffer(kt.dwconv->packed_f32_bytes(sh));
        kt.dwconv->pack_f32(sh, op.tensors[1]->as<float>(), packed.data());
      }
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.conv2d;
      packed = AlignedBuffer(kt.conv2d->packed_bytes(sh));
      kt.conv2d->pack(sh, op.tensors[0]->as<float>(), packed.data());
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = op.bconv_general;
      packed = AlignedBuffer(kt.bconv_general->packed_weight_bytes(sh));
      kt.bconv_general->pack_weight(sh, op.tensors[0]->as<BitWord>(), packed.data());
      break;
    }
    default:
      break;
  }
  return packed;
}

}  // namespace qbinfer
