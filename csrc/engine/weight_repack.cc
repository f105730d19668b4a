#include "engine/weight_repack.h"

#include <cstdint>

#include "kernels/fc/fc.h"

namespace qbinfer {

PackKey pack_key(const Op& op) {
  PackKey key;
  const auto type = static_cast<std::size_t>(op.type);
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.args<BConv2DArgs>().shape;
      key.tensor = op.tensors[0];
      // Not the height: one packed blob serves every input height (bconv.h).
      key.fields = {type,           sh.width,
                    sh.in_channels, sh.out_channels,
                    sh.kernel,      static_cast<std::size_t>(sh.padding)};
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.args<DWConv3x3Args>().shape;
      key.tensor = op.tensors[1];
      key.fields = {type,          op.args<DWConv3x3Args>().int8 ? std::size_t{1} : std::size_t{0},
                    sh.in_height,  sh.in_width,
                    sh.channels,   sh.multiplier,
                    sh.stride_h,   sh.stride_w,
                    sh.out_height, sh.out_width};
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.args<Conv2DArgs>().shape;
      key.tensor = op.tensors[0];
      key.fields = {type,        sh.in_height,  sh.in_width,  sh.in_channels, sh.out_channels,
                    sh.kernel_h, sh.kernel_w,   sh.stride_h,  sh.stride_w,    sh.pad_top,
                    sh.pad_left, sh.pad_bottom, sh.pad_right, sh.out_height,  sh.out_width};
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = op.args<BConv2DGeneralArgs>().shape;
      key.tensor = op.tensors[0];
      key.fields = {type,
                    sh.height,
                    sh.width,
                    sh.in_channels,
                    sh.out_channels,
                    sh.kernel_h,
                    sh.kernel_w,
                    sh.stride_h,
                    sh.stride_w,
                    sh.pad_top,
                    sh.pad_left,
                    sh.out_height,
                    sh.out_width,
                    static_cast<std::size_t>(sh.padding)};
      break;
    }
    case OpType::kFC:
      // bitplane8: its planes become one int8 code per weight (fc.h, "bitplane8 packed"): the
      // same bytes, without the bit extraction on every run.
      if (op.args<FCArgs>().encoding == FCEncoding::bitplane8) {
        key.tensor = op.tensors[0];
        key.fields = {type, static_cast<std::size_t>(FCEncoding::bitplane8), op.channels,
                      op.args<FCArgs>().out_features};
      }
      break;
    default:
      break;
  }
  return key;
}

std::uint64_t packed_weight_bytes(const Op& op, const KernelTable& kt) {
  switch (op.type) {
    case OpType::kBConv2D:
      return kt.bconv->packed_weight_bytes(op.args<BConv2DArgs>().shape);
    case OpType::kDWConv3x3: {
      const DWConv3x3Args& a = op.args<DWConv3x3Args>();
      return a.int8 ? kt.dwconv->packed_qs8_bytes(a.shape) : kt.dwconv->packed_f32_bytes(a.shape);
    }
    case OpType::kConv2D:
      return kt.conv2d->packed_bytes(op.args<Conv2DArgs>().shape);
    case OpType::kBConv2DGeneral:
      return kt.bconv_general->packed_weight_bytes(op.args<BConv2DGeneralArgs>().shape);
    case OpType::kFC:
      return op.args<FCArgs>().encoding == FCEncoding::bitplane8
                 ? std::uint64_t{op.channels} * op.args<FCArgs>().out_features
                 : 0;
    default:
      return 0;
  }
}

AlignedBuffer repack_weights(const Op& op, const KernelTable& kt) {
  AlignedBuffer packed;
  switch (op.type) {
    case OpType::kBConv2D: {
      const BConvShape& sh = op.args<BConv2DArgs>().shape;
      packed = AlignedBuffer(kt.bconv->packed_weight_bytes(sh));
      kt.bconv->pack_weight(sh, op.tensors[0]->as<BitWord>(), packed.data());
      break;
    }
    case OpType::kDWConv3x3: {
      const DWConvShape& sh = op.args<DWConv3x3Args>().shape;
      if (op.args<DWConv3x3Args>().int8) {
        packed = AlignedBuffer(kt.dwconv->packed_qs8_bytes(sh));
        kt.dwconv->pack_qs8(sh, op.tensors[1]->as<std::int8_t>(), packed.data());
      } else {
        packed = AlignedBuffer(kt.dwconv->packed_f32_bytes(sh));
        kt.dwconv->pack_f32(sh, op.tensors[1]->as<float>(), packed.data());
      }
      break;
    }
    case OpType::kConv2D: {
      const Conv2DShape& sh = op.args<Conv2DArgs>().shape;
      packed = AlignedBuffer(kt.conv2d->packed_bytes(sh));
      kt.conv2d->pack(sh, op.tensors[0]->as<float>(), packed.data());
      break;
    }
    case OpType::kBConv2DGeneral: {
      const BConvGeneralShape& sh = op.args<BConv2DGeneralArgs>().shape;
      packed = AlignedBuffer(kt.bconv_general->packed_weight_bytes(sh));
      kt.bconv_general->pack_weight(sh, op.tensors[0]->as<BitWord>(), packed.data());
      break;
    }
    case OpType::kFC: {
      const FCArgs& a = op.args<FCArgs>();
      if (a.encoding == FCEncoding::bitplane8) {
        packed = AlignedBuffer(std::size_t{op.channels} * a.out_features);
        fc_bitplane8_pack(op.channels, a.out_features, op.tensors[0]->as<BitWord>(),
                          reinterpret_cast<std::int8_t*>(packed.data()));
      }
      break;
    }
    default:
      break;
  }
  return packed;
}

}  // namespace qbinfer
