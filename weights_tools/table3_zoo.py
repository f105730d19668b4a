"""The networks of the QSB-Net paper's Table 3 that `bnn_zoo` and `zoo` do not hold yet.

QuickNet-Small, QuickNet and QuickNet-Large (Larq Zoo's `larq_zoo/sota/quicknet.py`), the
Real-to-Binary ResNet-18 (Martinez et al. 2020, Larq Zoo's `larq_zoo/literature/
real_to_bin_nets.py`, `RealToBinNetBNNFactory`), and the FP32 MobileNetV1 and MobileNetV2
(MobileNetV2 with torchvision's module tree, so a torchvision checkpoint loads strictly). They
are registered in `bnn_zoo.BNN_ZOO` with the Table-3 name of QSB-Net-Large with SE1
(`qsb_net_large_se1`), and `TABLE3_NETWORKS` lists every network of the table in its order
with the paper's figures (`for row in TABLE3_NETWORKS: model = row.build()`).

    >>> from weights_tools.zoo import build_model
    >>> model = build_model("quicknet", num_classes=1000)     # 224x224x3 input

The Larq networks are written in PyTorch from Larq Zoo's Keras definitions (read, not copied);
what differs from Keras and why:

- Padding: Keras "same" padding of a stride-2 layer on an even input pads only the bottom and
  right (one row and column for a 3x3 kernel); these modules use PyTorch's symmetric padding
  (`padding=1`, `padding=3` for a 7x7), as a PyTorch port does. Output sizes are the same, the
  sampled positions move by one pixel in those layers (QuickNet's stem conv and stem depthwise,
  Real-to-Bin's stem conv, stem max pool and its three stride-2 binary convs). A Keras
  checkpoint moved into these modules (weights transposed to OIHW) therefore computes slightly
  different features unless it is fine-tuned; every other layer (the stride-1 ones, and the
  transition blurpools of QuickNet, whose input has an odd size where "same" is symmetric)
  computes exactly what Keras computes.
- Larq's `ste_sign` is sign with sign(0) = +1 (`larq.math.sign(x) = tf.sign(tf.sign(x) + 0.1)`);
  `LarqSteSign` below is `where(x >= 0, +1, -1)` forward, which the converter reads as the
  engine's BITPACK `x >= 0` exactly, and zero weights binarize to +1 too (no ternary split).
  Its gradient is Larq's: the incoming gradient where |x| <= clip_value, else 0.
- The models return logits; Larq's Keras models end with a softmax layer.
- Larq's `WeightClip(1.25)` kernel constraint is a training-time projection of the latent
  weights after each optimizer step: `clip_latent_weights_()` applies it; it never changes the
  binarized weights, so inference does not depend on it.
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LarqSteSign",
    "QuickNet",
    "RealToBinNet",
    "MobileNetV1",
    "MobileNetV2",
    "quicknet_small",
    "quicknet",
    "quicknet_large",
    "real_to_bin_resnet18",
    "mobilenet_v1",
    "mobilenet_v2",
    "qsb_net_large_se1",
    "Table3Network",
    "TABLE3_NETWORKS",
    "TABLE3_ZOO_NAMES",
]


# ---------------------------------------------------------------------------------------------
# Larq's binarizer


class LarqSteSign(torch.autograd.Function):
    """Larq's `ste_sign`: +1 where x >= 0, else -1 (sign(0) = +1); gradient passed where
    |x| <= clip_value (1.25 in QuickNet, 1.0 Larq's default), 0 elsewhere."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip_value: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip_value = clip_value
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(x >= 0, one, -one)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() <= ctx.clip_value).to(grad_output.dtype), None


def ste_sign(x: torch.Tensor, clip_value: float = 1.0) -> torch.Tensor:
    return LarqSteSign.apply(x, clip_value)


class LarqBinaryConv2d(nn.Conv2d):
    """Larq's `QuantConv2D` with `input_quantizer` and `kernel_quantizer` both `ste_sign`: a
    conv of sign(x) with sign(W), no weight scale, no bias. `pad_value` is Larq's `pad_values`:
    1.0 pads the binary input with +1 (QuickNet), 0.0 with zeros (Keras's default, Real-to-Bin).
    The latent weights stay in `weight` (OIHW), as nn.Conv2d keeps them."""

    binary_macs = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        pad_value: float = 0.0,
        clip_value: float = 1.0,
    ):
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.pad_value = float(pad_value)
        self.clip_value = float(clip_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = ste_sign(x, self.clip_value)
        w = ste_sign(self.weight, self.clip_value)
        if self.pad_value == 0.0:
            return F.conv2d(bits, w, stride=self.stride, padding=1)
        bits = F.pad(bits, (1, 1, 1, 1), value=self.pad_value)
        return F.conv2d(bits, w, stride=self.stride)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad_value={self.pad_value}, clip={self.clip_value}"


def _blurpool_kernel(channels: int) -> torch.Tensor:
    """Larq Zoo's `blurpool_initializer` for a 3x3 depthwise conv: outer([1, 2, 1]) / 16 per
    channel (anti-aliased downsampling, Zhang 2019), as an OIHW depthwise weight."""
    k = torch.tensor([1.0, 2.0, 1.0])
    k2 = torch.outer(k, k) / 16.0
    return k2.expand(channels, 1, 3, 3).clone()


# ---------------------------------------------------------------------------------------------
# QuickNet (Larq Zoo)


class QuickNetStem(nn.Module):
    """FP32 3x3 stride-2 conv to filters/4 + BN + ReLU, depthwise 3x3 stride 2 + BN without
    scale or shift (Keras `BatchNormalization(scale=False, center=False)`), 1x1 conv + BN."""

    def __init__(self, filters: int):
        super().__init__()
        if filters % 4:
            raise ValueError(f"QuickNet's stem needs filters divisible by 4, got {filters}")
        quarter = filters // 4
        self.conv = nn.Conv2d(3, quarter, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(quarter, eps=1e-3)
        self.depthwise = nn.Conv2d(quarter, quarter, 3, 2, 1, groups=quarter, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(quarter, eps=1e-3, affine=False)
        self.pointwise = nn.Conv2d(quarter, filters, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(filters, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.depthwise_bn(self.depthwise(x))
        return self.pointwise_bn(self.pointwise(x))


class QuickNetResidualBlock(nn.Module):
    """x + BN(ReLU(binary 3x3 conv(sign(x)))), the binary input padded with +1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = LarqBinaryConv2d(channels, channels, pad_value=1.0, clip_value=1.25)
        self.bn = nn.BatchNorm2d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(F.relu(self.conv(x)))

    @torch.no_grad()
    def clip_latent_weights_(self) -> None:
        self.conv.weight.clamp_(-1.25, 1.25)


class QuickNetTransition(nn.Module):
    """ReLU, 2x2 max pool with stride 1 (no padding: H -> H - 1), the fixed blurpool depthwise
    3x3 stride 2 (not trained: its weight has requires_grad False), FP32 1x1 conv + BN."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.pool = nn.MaxPool2d(2, stride=1)
        self.blurpool = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        with torch.no_grad():
            self.blurpool.weight.copy_(_blurpool_kernel(in_channels))
        self.blurpool.weight.requires_grad_(False)
        self.pointwise = nn.Conv2d(in_channels, filters, 1, bias=False)
        self.bn = nn.BatchNorm2d(filters, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blurpool(self.pool(F.relu(x)))
        return self.bn(self.pointwise(x))


class QuickNet(nn.Module):
    """Larq Zoo's QuickNet: the stem, then per section a transition block where the width
    changes and `blocks` residual binary blocks; ReLU, global average pool, FP32 FC.

    `features` holds, in order, the stem and every block (Keras's layer order); at 224x224 the
    four sections run at 56, 28, 14 and 7 pixels."""

    def __init__(
        self,
        section_blocks: Sequence[int] = (4, 4, 4, 4),
        section_filters: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
    ):
        super().__init__()
        if len(section_blocks) != len(section_filters):
            raise ValueError("section_blocks and section_filters must have the same length")
        layers: List[nn.Module] = [QuickNetStem(section_filters[0])]
        width = section_filters[0]
        for blocks, filters in zip(section_blocks, section_filters):
            for _ in range(blocks):
                if filters != width:
                    layers.append(QuickNetTransition(width, filters))
                    width = filters
                layers.append(QuickNetResidualBlock(width))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    def clip_latent_weights_(self) -> None:
        """Larq's WeightClip(1.25) on the binary convs' latent weights (call after a step)."""
        for m in self.modules():
            if isinstance(m, QuickNetResidualBlock):
                m.clip_latent_weights_()


def quicknet_small(num_classes: int = 1000) -> QuickNet:
    return QuickNet((4, 4, 4, 4), (32, 64, 256, 512), num_classes=num_classes)


def quicknet(num_classes: int = 1000) -> QuickNet:
    return QuickNet((4, 4, 4, 4), (64, 128, 256, 512), num_classes=num_classes)


def quicknet_large(num_classes: int = 1000) -> QuickNet:
    return QuickNet((6, 8, 12, 6), (64, 128, 256, 512), num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# Real-to-Binary ResNet-18 (Martinez et al. 2020, Larq Zoo's RealToBinNetBNNFactory)


class RealToBinScaling(nn.Module):
    """The data-driven scaling of Real-to-Bin's section 4.3: from the binary conv's real input,
    global average pool -> FC (C_in / r, no bias) -> ReLU -> FC (C_out, no bias) -> sigmoid,
    one factor per output channel and image."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 8):
        super().__init__()
        self.dense_reduce = nn.Linear(in_channels, in_channels // reduction, bias=False)
        self.dense_expand = nn.Linear(in_channels // reduction, out_channels, bias=False)

    def forward(self, conv_input: torch.Tensor) -> torch.Tensor:
        z = F.adaptive_avg_pool2d(conv_input, 1).flatten(1)
        s = torch.sigmoid(self.dense_expand(F.relu(self.dense_reduce(z))))
        return s.view(s.shape[0], s.shape[1], 1, 1)


class RealToBinHalfBlock(nn.Module):
    """One binary conv of Real-to-Bin (its Figure 1): BN -> sign -> binary 3x3 conv (zero
    padding, stride 2 where the width doubles) -> times the scaling of the BN output -> PReLU,
    plus the shortcut (2x2 average pool, FP32 1x1 conv and BN where the width changes)."""

    def __init__(self, in_channels: int, downsample: bool = False):
        super().__init__()
        out_channels = 2 * in_channels if downsample else in_channels
        self.bn = nn.BatchNorm2d(in_channels, eps=1e-3)
        self.conv = LarqBinaryConv2d(in_channels, out_channels, stride=2 if downsample else 1)
        self.scaling = RealToBinScaling(in_channels, out_channels)
        self.prelu = nn.PReLU(out_channels, init=0.0)  # Keras's PReLU starts at 0
        if downsample:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(2, 2),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels, eps=1e-3),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_input = self.bn(x)
        out = self.conv(conv_input) * self.scaling(conv_input)
        return self.prelu(out) + self.shortcut(x)


class RealToBinBlock(nn.Module):
    """Larq Zoo's `block`: two half blocks, `a` (downsampling at the start of stages 2-4) and
    `b`."""

    def __init__(self, in_channels: int, downsample: bool):
        super().__init__()
        self.a = RealToBinHalfBlock(in_channels, downsample)
        self.b = RealToBinHalfBlock(self.a.conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


class RealToBinNet(nn.Module):
    """Real-to-Bin ResNet-18: FP32 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max pool, eight
    blocks (`blocks.0` .. `blocks.7`: Larq's blocks 2..9; blocks 4, 6 and 8 downsample), global
    average pool, FP32 FC."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks: List[nn.Module] = []
        width = 64
        for larq_block in range(2, 10):
            downsample = larq_block % 2 == 0 and larq_block > 3
            blocks.append(RealToBinBlock(width, downsample))
            width = 2 * width if downsample else width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def real_to_bin_resnet18(num_classes: int = 1000) -> RealToBinNet:
    return RealToBinNet(num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# MobileNetV1 and MobileNetV2 (FP32)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation layout: `0` conv, `1` BN, `2` ReLU6."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


# (output channels, stride) of MobileNetV1's 13 depthwise-separable layers (Howard et al. 2017).
_MOBILENET_V1_LAYERS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """MobileNetV1 (width 1.0): 3x3 stride-2 conv 32 + BN + ReLU6, 13 depthwise-separable layers
    (depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU6), global average pool, FC. ReLU6
    as in Keras's and TF-Slim's MobileNet (the paper writes ReLU). `features.0` the stem,
    `features.i` (i >= 1) a Sequential of its depthwise (`0`) and pointwise (`1`) halves."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: List[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        width = 32
        for cout, stride in _MOBILENET_V1_LAYERS:
            layers.append(
                nn.Sequential(
                    _conv_bn_relu6(width, width, 3, stride, groups=width),
                    _conv_bn_relu6(width, cout, 1, 1),
                )
            )
            width = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: `conv` = [1x1 expansion + BN + ReLU6 (t > 1)], depthwise
    3x3 + BN + ReLU6, linear 1x1 projection, BN; the input added when stride 1 and the width
    is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# (t, c, n, s) of MobileNetV2 (Sandler et al. 2018, torchvision's inverted_residual_setting).
_MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """torchvision's `mobilenet_v2()` (width 1.0): the same module tree and parameter names
    (`features.0` .. `features.18`, `classifier.1`), so its checkpoints load strictly."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: List[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        width = 32
        for t, c, n, s in _MOBILENET_V2_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(width, c, s if i == 0 else 1, t))
                width = c
        layers.append(_conv_bn_relu6(width, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v1(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# QSB-Net-Large with SE1 under its Table-3 name


def qsb_net_large_se1(num_classes: int = 1000) -> nn.Module:
    """The zoo's `qsb_net_large` with `se="se1"` (SE after the DS halves of the downsampling
    blocks), the network Table 3 calls QSB-Net-Large(SE1)."""
    from .zoo import build_model

    return build_model("qsb_net_large", num_classes=num_classes, se="se1")


# ---------------------------------------------------------------------------------------------
# Table 3, in the paper's order


class Table3Network(NamedTuple):
    """One row of the QSB-Net paper's Table 3: its label there, the zoo name that
    `weights_tools.zoo.build_model` builds, and the paper's figures (Larq Compute Engine on one
    thread of a Raspberry Pi 4B; None where the table has a dash)."""

    label: str
    name: str
    paper_rpi4b_ms: float
    paper_params_mb: float
    paper_ops_e8: Optional[float]

    def build(self, num_classes: int = 1000) -> nn.Module:
        from .zoo import build_model

        return build_model(self.name, num_classes=num_classes)


TABLE3_NETWORKS: Tuple[Table3Network, ...] = (
    Table3Network("MobileNetV1", "mobilenet_v1", 160.8, 16.9, 5.75),
    Table3Network("MobileNetV2", "mobilenet_v2", 117.4, 14.0, 3.0),
    Table3Network("XNOR-Net-18", "xnor_net_resnet18", 87.0, 4.2, 1.67),
    Table3Network("Bi-Real-18", "bireal_net18", 80.2, 4.2, 1.63),
    Table3Network("Real-to-Bin-18", "real_to_bin_resnet18", 100.9, 5.4, 1.83),
    Table3Network("ReActNet-A", "reactnet_a", 120.4, 7.7, 0.87),
    Table3Network("QuickNet-Small", "quicknet_small", 17.5, 4.0, None),
    Table3Network("QuickNet", "quicknet", 27.4, 4.2, None),
    Table3Network("QB-Net-Small", "qb_net_small", 55.5, 9.8, 0.43),
    Table3Network("QB-Net-Large", "qb_net_large", 65.5, 12.0, 0.53),
    Table3Network("QSB-Net-Small", "qsb_net_small", 76.1, 10.0, 0.53),
    Table3Network("QSB-Net-Large", "qsb_net_large", 86.2, 12.3, 0.62),
    Table3Network("QSB-Net-Large(SE1)", "qsb_net_large_se1", 89.7, 12.4, 0.69),
)

# The builders of this module, registered in bnn_zoo.BNN_ZOO (quicknet_large is not in Table 3
# but is the third size of Larq Zoo's QuickNet).
TABLE3_ZOO_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "quicknet_small": quicknet_small,
    "quicknet": quicknet,
    "quicknet_large": quicknet_large,
    "real_to_bin_resnet18": real_to_bin_resnet18,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "qsb_net_large_se1": qsb_net_large_se1,
}
TABLE3_ZOO_NAMES = tuple(TABLE3_ZOO_BUILDERS)
