"""DeepLabv3+ on the QB-Net / QSB-Net backbones (paper §5.2, Table 4, A.10; docs/segmentation.md).

    >>> from weights_tools.zoo import build_segmenter
    >>> model = build_segmenter("deeplabv3plus", backbone="qsb_net_large", num_classes=21,
    ...                         output_stride=16, head="binary")
    >>> model(torch.zeros(1, 3, 513, 513)).shape
    torch.Size([1, 21, 513, 513])

The paper names the pieces (a QSB-Net backbone, DeepLabv3+, "1-bit weights and features") and
nothing else; every choice it leaves open is pinned here and listed in docs/segmentation.md:

* Backbone: the classification network's stem and blocks (`zoo.BinaryNet`), no pool or FC. For
  output stride 16 the last downsampling block runs at stride 1, for 8 the last two (as
  torchvision's `replace_stride_with_dilation`): a replaced block keeps the dilation in force
  before it, and every depthwise conv after it is dilated by twice that. A replaced block's
  average-pooled shortcut becomes the identity. Only the FP32 depthwise convs are dilated; a
  binary 3x3 conv (the kernel rule gives them to blocks of <= 32 channels) in a dilated block is
  refused, since the engine's binary 3x3 conv has no dilation.
* Low-level features for the decoder: the output of the last block at stride 4 (block 4, the
  TypeN after the first D/DS block: 32 channels in the zoo's models).
* head="fp32": DeepLabv3+ as published: ASPP = 1x1 conv, three atrous separable convs
  (depthwise 3x3 at rate r, BN, ReLU, pointwise 1x1, BN, ReLU) and image pooling, concatenated,
  projected by 1x1 conv + BN + ReLU (+ dropout 0.1 while training); decoder = 1x1 conv + BN +
  ReLU to 48 channels on the low-level features, concatenated with the bilinearly upsampled ASPP
  output, two separable 3x3 convs, classifier.
* head="binary": the same graph with every 1x1 conv a binary pointwise unit (`BinaryPointwise`:
  sign(x + gamma), binary 1x1 conv with alpha, BN, the input added back when the channel count is
  unchanged, BPReLU) and every depthwise conv a DS half (`layers.DSHalf`, stride 1, its depthwise
  conv dilated): the paper's DS/B halves. Stays FP32 in both heads: the stem, the image-pooling
  branch (one 1x1 conv on a 1x1 map, negligible work) and the classifier (1x1 conv with bias,
  the counterpart of the classification FC).
* Upsampling: bilinear, align_corners=False, to the low-level features' size and then to the
  input's size (x4 when the input is a multiple of 4).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BinaryConv2d, BPReLU, DSHalf, LearnableBias, binary_sign
from .zoo import MODEL_NAMES, ArchSpec, BinaryNet, get_arch, set_training_stage

__all__ = [
    "SEGMENTER_NAMES",
    "SEG_HEADS",
    "OUTPUT_STRIDES",
    "ASPP_RATES",
    "SEG_BACKBONES",
    "BinaryPointwise",
    "SeparableConv",
    "ASPP",
    "DeepLabV3PlusDecoder",
    "SegBackbone",
    "DeepLabV3Plus",
    "build_segmenter",
]

SEGMENTER_NAMES = ("deeplabv3plus",)
SEG_HEADS = ("binary", "fp32")
OUTPUT_STRIDES = (8, 16)
# DeepLabv3's atrous rates: 6/12/18 at output stride 16, doubled at 8.
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
SEG_BACKBONES = MODEL_NAMES
LOW_LEVEL_STRIDE = 4


def _size_of(x: torch.Tensor) -> Tuple[int, int]:
    # Python ints: the exported Resize gets constant sizes (the .qbw is built for one input
    # size), not a Shape -> Gather subgraph.
    return int(x.shape[-2]), int(x.shape[-1])


def _upsample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BinaryPointwise(nn.Module):
    """The B half generalised to a channel change: z = sign(x + gamma); t = BN(alpha * binconv1x1(z));
    out = BPReLU(t + x) when in == out channels, else BPReLU(t) (no shortcut can be added)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.gamma = LearnableBias(in_channels)
        self.conv = BinaryConv2d(in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = BPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.bn(self.conv(binary_sign(self.gamma(x))))
        if self.in_channels == self.out_channels:
            t = t + x
        return self.act(t)


def _dilate_depthwise(ds: DSHalf, dilation: int) -> DSHalf:
    for conv in ds.dw:
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)
    return ds


def _fp32_pointwise(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SeparableConv(nn.Module):
    """Depthwise 3x3 (dilation `rate`, padding `rate`) then pointwise 1x1.

    binary: DS half (stride 1, FP32 depthwise, BN, identity shortcut, BPReLU) + BinaryPointwise.
    fp32: depthwise conv + BN + ReLU + 1x1 conv + BN + ReLU (DeepLabv3+'s separable conv).
    """

    def __init__(self, in_channels: int, out_channels: int, rate: int, head: str):
        super().__init__()
        self.head = head
        self.rate = rate
        if head == "binary":
            self.depthwise: nn.Module = _dilate_depthwise(DSHalf(in_channels, (1, 1), 1), rate)
            self.pointwise: nn.Module = BinaryPointwise(in_channels, out_channels)
        else:
            self.depthwise = nn.Sequential(
                nn.Conv2d(
                    in_channels,
                    in_channels,
                    3,
                    padding=rate,
                    dilation=rate,
                    groups=in_channels,
                    bias=False,
                ),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
            )
            self.pointwise = _fp32_pointwise(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _pointwise(in_channels: int, out_channels: int, head: str) -> nn.Module:
    if head == "binary":
        return BinaryPointwise(in_channels, out_channels)
    return _fp32_pointwise(in_channels, out_channels)


class ImagePooling(nn.Module):
    """Global average pool, FP32 1x1 conv + BN + ReLU, bilinear back to the feature size (a
    broadcast of the 1x1 map). FP32 in both heads: one dot product per output channel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(self.pool(x))))
        return _upsample(y, _size_of(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three separable convs at `rates`, image pooling;
    concatenated (in that order) and projected to `out_channels`."""

    def __init__(
        self, in_channels: int, out_channels: int, rates: Sequence[int], head: str, dropout: float
    ):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        branches: List[nn.Module] = [_pointwise(in_channels, out_channels, head)]
        branches += [SeparableConv(in_channels, out_channels, r, head) for r in self.rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = _pointwise(len(branches) * out_channels, out_channels, head)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.dropout(self.project(y))


class DeepLabV3PlusDecoder(nn.Module):
    """Low-level 1x1 projection, concat with the upsampled ASPP output, two separable 3x3 convs,
    FP32 1x1 classifier with bias."""

    def __init__(
        self,
        low_level_in: int,
        aspp_channels: int,
        low_level_channels: int,
        decoder_channels: int,
        num_classes: int,
        head: str,
    ):
        super().__init__()
        self.low_level = _pointwise(low_level_in, low_level_channels, head)
        self.fuse = nn.Sequential(
            SeparableConv(aspp_channels + low_level_channels, decoder_channels, 1, head),
            SeparableConv(decoder_channels, decoder_channels, 1, head),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, aspp_out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_level(low)
        y = torch.cat([_upsample(aspp_out, _size_of(low)), low], dim=1)
        return self.classifier(self.fuse(y))


def _block_factor(block: nn.Module) -> int:
    """How much a block divides the spatial size by (2 for D/Q/DS/QS, 1 for N)."""
    fh = fw = 1
    for stage in block.stages:
        fh *= stage.ds.stride[0]
        fw *= stage.ds.stride[1]
    if fh != fw:
        raise ValueError(
            f"a {block.kind} block downsamples height by {fh} and width by {fw}: a segmentation "
            "backbone needs square downsampling per block"
        )
    return fh


class SegBackbone(nn.Module):
    """A zoo network's stem and blocks at a chosen output stride; returns (low, high) features:
    the output of the last block at stride 4 and of the last block."""

    def __init__(self, net: BinaryNet, output_stride: int):
        super().__init__()
        self.stem = net.stem
        self.blocks = net.blocks
        self.output_stride = output_stride
        factors = [_block_factor(b) for b in self.blocks]
        total = 2 * math.prod(factors)  # the stem halves the input
        if total < output_stride:
            raise ValueError(
                f"{net.arch.name} reaches only stride {total}; output stride {output_stride} "
                "needs more downsampling blocks"
            )
        # Replace downsampling blocks from the last one until the stride is the requested one.
        replaced = set()
        stride = total
        for i in reversed(range(len(factors))):
            if stride == output_stride:
                break
            if factors[i] > 1:
                replaced.add(i)
                stride //= factors[i]
        if stride != output_stride:
            raise ValueError(f"cannot reach output stride {output_stride} from {total}")
        self.replaced_blocks = tuple(sorted(replaced))
        dilation = 1
        stride = 2
        self.low_level_index = -1
        self.block_dilations: List[int] = []
        for i, block in enumerate(self.blocks):
            if i in replaced:
                for stage in block.stages:
                    stage.ds.stride = (1, 1)  # the shortcut's average pool goes with it
                    for conv in stage.ds.dw:
                        conv.stride = (1, 1)
                    self._dilate_block_stage(stage, dilation, i)
                self.block_dilations.append(dilation)
                dilation *= factors[i]
            else:
                for stage in block.stages:
                    self._dilate_block_stage(stage, dilation, i)
                self.block_dilations.append(dilation)
                stride *= factors[i]
            if stride == LOW_LEVEL_STRIDE:
                self.low_level_index = i
        if self.low_level_index < 0:
            raise ValueError(f"{net.arch.name} has no block at stride {LOW_LEVEL_STRIDE}")
        self.low_level_channels = self.blocks[self.low_level_index].out_channels
        self.out_channels = self.blocks[-1].out_channels

    @staticmethod
    def _dilate_block_stage(stage: nn.Module, dilation: int, index: int) -> None:
        if dilation == 1:
            return
        if stage.b.conv.kernel_size != 1:
            raise ValueError(
                f"block {index + 2} has a 3x3 binary conv and would need dilation {dilation}; "
                "binary convs are not dilated (use wider channels or a higher output stride)"
            )
        _dilate_depthwise(stage.ds, dilation)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        low = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.low_level_index:
                low = x
        return low, x


class DeepLabV3Plus(nn.Module):
    """Backbone -> ASPP -> decoder -> bilinear upsampling to the input size; logits N x K x H x W."""

    def __init__(
        self,
        backbone: SegBackbone,
        num_classes: int,
        head: str,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.aspp = ASPP(
            backbone.out_channels,
            aspp_channels,
            ASPP_RATES[backbone.output_stride],
            head,
            dropout,
        )
        self.decoder = DeepLabV3PlusDecoder(
            backbone.low_level_channels,
            aspp_channels,
            low_level_channels,
            decoder_channels,
            num_classes,
            head,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = _size_of(x)
        low, high = self.backbone(x)
        return _upsample(self.decoder(self.aspp(high), low), size)


def build_segmenter(
    name: str = "deeplabv3plus",
    backbone: Union[str, ArchSpec] = "qsb_net_large",
    num_classes: int = 21,
    output_stride: int = 16,
    se: Optional[str] = None,
    head: str = "binary",
    stage: int = 2,
    padding: str = "zero",
    aspp_channels: int = 256,
    low_level_channels: int = 48,
    decoder_channels: int = 256,
) -> DeepLabV3Plus:
    """DeepLabv3+ on a zoo backbone (a name of `zoo.ARCHS` or an `ArchSpec`, e.g. a reduced one
    from `zoo.with_overrides`). `head`: "binary" (DS/B halves) or "fp32". `stage`: 1 = float
    weights in every binary conv (training stage 1), 2 = binary weights. The channel widths
    default to DeepLabv3+'s (256 ASPP/decoder channels, 48 low-level); small models may narrow
    them."""
    if name not in SEGMENTER_NAMES:
        raise ValueError(f"unknown segmenter {name!r}; known: {', '.join(SEGMENTER_NAMES)}")
    if head not in SEG_HEADS:
        raise ValueError(f"head must be one of {SEG_HEADS}, got {head!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for what, v in (
        ("aspp_channels", aspp_channels),
        ("low_level_channels", low_level_channels),
        ("decoder_channels", decoder_channels),
    ):
        if v < 1:
            raise ValueError(f"{what} must be >= 1, got {v}")
    arch = get_arch(backbone)
    net = BinaryNet(arch, num_classes=1, se=se, padding=padding)
    model = DeepLabV3Plus(
        SegBackbone(net, output_stride),
        num_classes,
        head,
        aspp_channels=aspp_channels,
        low_level_channels=low_level_channels,
        decoder_channels=decoder_channels,
    )
    return set_training_stage(model, stage)
