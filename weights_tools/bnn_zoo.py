"""Published binary networks as their authors' public PyTorch code lays them out.

ReActNet-A, Bi-Real Net-18/34, an XNOR-Net ResNet-18 and a BinaryNet MLP, written so that a
checkpoint saved from the authors' modules loads here with `load_state_dict(strict=True)`: the
same module tree, attribute names, parameter shapes and binarizers (including their eval-mode
arithmetic, straight-through estimators and the places where sign(0) = 0). Nothing here follows
the conventions of `layers.py`; these models are what people arrive with, and the converter has
to take them as they are.

    >>> from weights_tools.zoo import build_model
    >>> model = build_model("reactnet_a", num_classes=1000)     # 224x224x3 input

Layouts mirrored (read, not copied):
- `reactnet_a`: liuzechun/ReActNet, mobilenet/*/reactnet.py (`feature` ModuleList, LearnableBias
  `move11`...`move23`, HardBinaryConv with a flat `weights` parameter, approx-sign activation).
- `bireal_net18`, `bireal_net34`: liuzechun/Bi-Real-net, pytorch_implementation/BiReal18_34.
- `xnor_net_resnet18`: torchvision's ResNet-18 names (`conv1`, `layer1.0.conv1`, `downsample`)
  with jiecaoyu/XNOR-Net-PyTorch's `BinConv2d` (BN -> sign -> conv -> ReLU) for each 3x3 conv;
  those authors publish no ResNet, so this is the usual way their layer is put into one.
- `binarynet_mlp`: itayhubara/BinaryNet.pytorch, main_mnist.py (`fc1`..`fc4`, `bn1`..`bn3`,
  `htanh1`..`htanh3`, 28x28x1 input, hidden width 3 * 2048).

Every model marks the layers whose multiply-accumulates are binary (both operands +-1) with the
class attribute `binary_macs = True`; `weights_tools.ops` counts those as BOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BnnZooEntry",
    "BNN_ZOO",
    "BNN_ZOO_NAMES",
    "ReActNet",
    "BiRealNet",
    "XnorResNet",
    "BinaryNetMLP",
    "reactnet_a",
    "bireal_net18",
    "bireal_net34",
    "xnor_net_resnet18",
    "binarynet_mlp",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _approx_sign_surrogate(x: torch.Tensor) -> torch.Tensor:
    """The piecewise quadratic of Bi-Real Net / ReActNet: -1 below -1, x^2 + 2x on [-1, 0),
    2x - x^2 on [0, 1), +1 from 1 on. Its derivative 2 - 2|x| is the approx-sign gradient."""
    below = (x < -1).float()
    neg = (x < 0).float()
    under_one = (x < 1).float()
    left = -below + (x * x + 2 * x) * (1 - below)
    middle = left * neg + (2 * x - x * x) * (1 - neg)
    return middle * under_one + (1 - under_one)


class ApproxSignActivation(nn.Module):
    """torch.sign forward (sign(0) = 0), approx-sign gradient through the detach trick.

    `always_ste=True` is Bi-Real Net's version (the detach arithmetic also runs in eval mode,
    where it equals the sign up to rounding); `False` is ReActNet's (plain sign in eval mode).
    """

    def __init__(self, always_ste: bool):
        super().__init__()
        self.always_ste = always_ste

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hard = torch.sign(x)
        if not (self.training or self.always_ste):
            return hard
        soft = _approx_sign_surrogate(x)
        return hard.detach() - soft.detach() + soft


class LearnableBias(nn.Module):
    """ReActNet's `move` layers: a per-channel shift, parameter `bias` of shape (1, C, 1, 1)."""

    def __init__(self, out_chn: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, out_chn, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.expand_as(x)


class HardBinaryConv(nn.Module):
    """Bi-Real Net / ReActNet binary conv: real weights kept flat in `weights` (shape (N, 1)),
    used as mean|W| * sign(W) per output channel, with a clipped-identity weight STE.

    `scale_after_conv=True` (ReActNet's eval mode): conv with sign(W), then multiply the output
    by the per-channel scale. `False` (Bi-Real Net, every mode): conv with the STE expression
    of the scaled weights, whose value is mean|W| * sign(W) up to rounding.
    """

    binary_macs = True

    def __init__(
        self,
        in_chn: int,
        out_chn: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        scale_after_conv: bool = False,
    ):
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.number_of_weights = in_chn * out_chn * kernel_size * kernel_size
        self.shape = (out_chn, in_chn, kernel_size, kernel_size)
        self.scale_after_conv = scale_after_conv
        # The authors' initialisation: small positive uniform values.
        self.weights = nn.Parameter(torch.rand(self.number_of_weights, 1) * 0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real = self.weights.view(self.shape)
        scale = real.abs().mean(dim=(1, 2, 3), keepdim=True)
        if self.scale_after_conv and not self.training:
            y = F.conv2d(x, torch.sign(real), stride=self.stride, padding=self.padding)
            return y * scale.reshape(-1, 1, 1)
        scaled_sign = scale.detach() * torch.sign(real)
        clipped = torch.clamp(real, -1.0, 1.0)
        w = scaled_sign.detach() - clipped.detach() + clipped
        return F.conv2d(x, w, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


# ---------------------------------------------------------------------------------------------
# ReActNet-A (MobileNetV1 backbone; depthwise-separable convs replaced by binary 3x3 + 1x1)

_REACTNET_WIDTHS = (32, 64, 128, 128, 256, 256) + (512,) * 6 + (1024, 1024)


class ReActStem(nn.Module):
    """FP32 3x3 stride-2 conv + BN (the authors' `firstconv3x3`), no activation."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, oup, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


class ReActBlock(nn.Module):
    """One ReActNet-A block: binary 3x3 (maybe stride 2) and binary 1x1, each with a real shortcut,
    RSign (`move` + sign) before and RPReLU (`move` + PReLU + `move`) after. Doubling the channels
    runs two 1x1 convs on the same input and concatenates them, each with the block input as its
    shortcut; a stride-2 block average-pools its shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        if planes not in (inplanes, 2 * inplanes):
            raise ValueError(f"ReActNet blocks keep or double channels, got {inplanes}->{planes}")
        self.move11 = LearnableBias(inplanes)
        self.binary_3x3 = HardBinaryConv(inplanes, inplanes, 3, stride, 1, scale_after_conv=True)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.move12 = LearnableBias(inplanes)
        self.prelu1 = nn.PReLU(inplanes)
        self.move13 = LearnableBias(inplanes)
        self.move21 = LearnableBias(inplanes)
        if inplanes == planes:
            self.binary_pw = HardBinaryConv(inplanes, planes, 1, 1, 0, scale_after_conv=True)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.binary_pw_down1 = HardBinaryConv(
                inplanes, inplanes, 1, 1, 0, scale_after_conv=True
            )
            self.binary_pw_down2 = HardBinaryConv(
                inplanes, inplanes, 1, 1, 0, scale_after_conv=True
            )
            self.bn2_1 = nn.BatchNorm2d(inplanes)
            self.bn2_2 = nn.BatchNorm2d(inplanes)
        self.move22 = LearnableBias(planes)
        self.prelu2 = nn.PReLU(planes)
        self.move23 = LearnableBias(planes)
        self.binary_activation = ApproxSignActivation(always_ste=False)
        self.stride = stride
        self.inplanes = inplanes
        self.planes = planes
        if inplanes != planes:
            # Present (without parameters) in every doubling block, used only at stride 2.
            self.pooling = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.bn1(self.binary_3x3(self.binary_activation(self.move11(x))))
        shortcut = self.pooling(x) if self.stride == 2 else x
        mid = self.move13(self.prelu1(self.move12(shortcut + spatial)))

        bits = self.binary_activation(self.move21(mid))
        if self.inplanes == self.planes:
            out = self.bn2(self.binary_pw(bits)) + mid
        else:
            first = self.bn2_1(self.binary_pw_down1(bits)) + mid
            second = self.bn2_2(self.binary_pw_down2(bits)) + mid
            out = torch.cat([first, second], dim=1)
        return self.move23(self.prelu2(self.move22(out)))


class ReActNet(nn.Module):
    """ReActNet-A: `feature[0]` the FP32 stem, `feature[1..13]` the binary blocks, then global
    average pool (`pool1`) and the FP32 `fc`. A block halves the resolution where the width
    changes, except 32 -> 64 (the MobileNetV1 layout)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        widths = _REACTNET_WIDTHS
        self.feature = nn.ModuleList([ReActStem(3, widths[0], 2)])
        for prev, width in zip(widths[:-1], widths[1:]):
            stride = 2 if prev != width and width != 64 else 1
            self.feature.append(ReActBlock(prev, width, stride))
        self.pool1 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.feature:
            x = layer(x)
        x = self.pool1(x)
        return self.fc(x.view(x.size(0), -1))


# ---------------------------------------------------------------------------------------------
# Bi-Real Net (ResNet-18/34 with a real-valued shortcut around every binary conv)


class BiRealBlock(nn.Module):
    """sign -> binary 3x3 conv -> BN, plus the (maybe downsampled) input."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None
    ):
        super().__init__()
        self.binary_activation = ApproxSignActivation(always_ste=True)
        self.binary_conv = HardBinaryConv(inplanes, planes, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.binary_conv(self.binary_activation(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class BiRealNet(nn.Module):
    """FP32 7x7 stride-2 stem + BN + 3x3 max pool, four stages of `BiRealBlock`s, global
    average pool, FP32 FC. A stage's first block downsamples its shortcut with a 2x2 average
    pool, an FP32 1x1 conv and BN."""

    def __init__(self, layers: Sequence[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=stride),
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=1, bias=False),
                nn.BatchNorm2d(planes),
            )
        stage: List[nn.Module] = [BiRealBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [BiRealBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


# ---------------------------------------------------------------------------------------------
# XNOR-Net ResNet-18


class BinActive(torch.autograd.Function):
    """XNOR-Net's activation binarizer: torch's sign forward, identity gradient on |x| < 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.sign()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad = grad_output.clone()
        grad[x.ge(1)] = 0
        grad[x.le(-1)] = 0
        return grad


class XnorWeightConv2d(nn.Conv2d):
    """nn.Conv2d whose weights are binarized in forward: alpha_o * sign(W), alpha_o = mean|W| of
    output channel o (XNOR-Net's weight scale); gradients pass straight through to W."""

    binary_macs = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        binary = alpha * self.weight.sign()
        w = self.weight + (binary - self.weight).detach()
        return self._conv_forward(x, w, self.bias)


class BinConv2d(nn.Module):
    """jiecaoyu's XNOR-Net layer: BN (eps 1e-4) -> sign -> binary conv (with bias) -> ReLU.

    XNOR-Net's activation scale K (a box filter over mean|x|) is left out, as in that
    public code and in most later re-implementations."""

    def __init__(
        self,
        input_channels: int,
        output_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ):
        super().__init__()
        self.layer_type = "BinConv2d"
        self.bn = nn.BatchNorm2d(input_channels, eps=1e-4, momentum=0.1, affine=True)
        self.conv = XnorWeightConv2d(
            input_channels, output_channels, kernel_size=kernel_size, stride=stride, padding=padding
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(BinActive.apply(self.bn(x))))


class XnorBasicBlock(nn.Module):
    """ResNet basic block with both 3x3 convs binary; FP32 1x1 stride-2 downsampling shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None
    ):
        super().__init__()
        self.conv1 = BinConv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1)
        self.conv2 = BinConv2d(planes, planes, kernel_size=3, stride=1, padding=1)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + residual


class XnorResNet(nn.Module):
    """torchvision ResNet layout: FP32 7x7 stem + BN + ReLU + max pool, binary stages, average
    pool, FP32 FC."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        stage: List[nn.Module] = [XnorBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [XnorBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------------------------
# BinaryNet (Courbariaux, Hubara et al.) MLP


class Binarize(torch.autograd.Function):
    """BinaryNet's deterministic binarizer: torch's sign forward, plain identity gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.sign()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad_output


class BinarizeLinear(nn.Linear):
    """nn.Linear with sign(W) and, unless it reads the raw image, sign(x); real bias added after.

    The reference code decides "raw image" by the input width (784); here it is the constructor
    flag `binarize_input`. A layer with a real input has float x binary MACs: not BOPs.
    torch's sign(0) = 0 is kept: PyTorch's default init of the 80 M weights gives a handful of
    exact zeros (1 in fc1, a few in fc2/fc3 for seed 0), which a 1-bit weight cannot say."""

    binary_weights = True  # stored at 1 bit whatever its input (weights_tools.ops)

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, binarize_input: bool = True
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.binarize_input = binarize_input

    @property
    def binary_macs(self) -> bool:
        return self.binarize_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binarize_input:
            x = Binarize.apply(x)
        out = F.linear(x, Binarize.apply(self.weight))
        if self.bias is not None:
            out = out + self.bias.view(1, -1).expand_as(out)
        return out


class BinaryNetMLP(nn.Module):
    """784 -> 3 x (binary FC 6144, BN1d, Hardtanh) -> FP32 FC -> log-softmax, on 28x28x1 images.

    fc1 binarizes only its weights (the image stays real); fc2 and fc3 binarize the Hardtanh
    output; fc4 is an ordinary nn.Linear. Dropout sits before bn3, as in the reference."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, infl_ratio: int = 3):
        super().__init__()
        self.infl_ratio = infl_ratio
        hidden = 2048 * infl_ratio
        self.fc1 = BinarizeLinear(28 * 28, hidden, binarize_input=False)
        self.htanh1 = nn.Hardtanh()
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = BinarizeLinear(hidden, hidden)
        self.htanh2 = nn.Hardtanh()
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = BinarizeLinear(hidden, hidden)
        self.htanh3 = nn.Hardtanh()
        self.bn3 = nn.BatchNorm1d(hidden)
        self.fc4 = nn.Linear(hidden, num_classes)
        self.logsoftmax = nn.LogSoftmax(dim=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 28 * 28)
        x = self.htanh1(self.bn1(self.fc1(x)))
        x = self.htanh2(self.bn2(self.fc2(x)))
        x = self.htanh3(self.bn3(self.drop(self.fc3(x))))
        return self.logsoftmax(self.fc4(x))


# ---------------------------------------------------------------------------------------------
# Registry


def reactnet_a(num_classes: int = 1000) -> ReActNet:
    return ReActNet(num_classes=num_classes)


def bireal_net18(num_classes: int = 1000) -> BiRealNet:
    return BiRealNet((4, 4, 4, 4), num_classes=num_classes)


def bireal_net34(num_classes: int = 1000) -> BiRealNet:
    return BiRealNet((6, 8, 12, 6), num_classes=num_classes)


def xnor_net_resnet18(num_classes: int = 1000) -> XnorResNet:
    return XnorResNet((2, 2, 2, 2), num_classes=num_classes)


def binarynet_mlp(num_classes: int = 10) -> BinaryNetMLP:
    return BinaryNetMLP(num_classes=num_classes)


@dataclass(frozen=True)
class BnnZooEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    input_shape: Tuple[int, int, int] = (3, 224, 224)  # C, H, W
    num_classes: int = 1000  # of the data set the network is published for
    paper_ops_e8: Optional[float] = None  # QSB-Net paper, Table 2 (ImageNet, 224x224)
    paper_flops_e8: Optional[float] = None
    paper_bops_e8: Optional[float] = None
    paper_storage_mb: Optional[float] = None  # Table 3 "Parameters (Mbytes)"


_IMAGENET = (3, 224, 224)

# Paper figures: the QSB-Net paper's Table 2 (FLOPs, BOPs, OPs) and Table 3 (storage), which
# quote the original papers. Bi-Real Net-34 and the BinaryNet MLP are in neither table.
BNN_ZOO: Dict[str, BnnZooEntry] = {
    e.name: e
    for e in (
        BnnZooEntry(
            "reactnet_a",
            reactnet_a,
            "ReActNet-A (MobileNetV1)",
            _IMAGENET,
            paper_ops_e8=0.87,
            paper_flops_e8=0.12,
            paper_bops_e8=48.2,
            paper_storage_mb=7.7,
        ),
        BnnZooEntry(
            "bireal_net18",
            bireal_net18,
            "Bi-Real Net-18",
            _IMAGENET,
            paper_ops_e8=1.63,
            paper_flops_e8=1.54,
            paper_bops_e8=16.8,
            paper_storage_mb=4.2,
        ),
        BnnZooEntry("bireal_net34", bireal_net34, "Bi-Real Net-34", _IMAGENET),
        BnnZooEntry(
            "xnor_net_resnet18",
            xnor_net_resnet18,
            "XNOR-Net (ResNet-18)",
            _IMAGENET,
            paper_ops_e8=1.67,
            paper_flops_e8=1.41,
            paper_bops_e8=17.0,
            paper_storage_mb=4.2,
        ),
        BnnZooEntry("binarynet_mlp", binarynet_mlp, "BinaryNet MLP (MNIST)", (1, 28, 28), 10),
    )
}


def _register_table3_networks() -> None:
    """The other networks of the QSB-Net paper's Table 3 (weights_tools.table3_zoo): QuickNet
    (three sizes), Real-to-Bin ResNet-18, the FP32 MobileNets and QSB-Net-Large(SE1) by its
    table name. Paper figures from Table 3 (storage, OPs) and Table 2 (Real-to-Bin's FLOPs and
    BOPs); Larq Zoo quotes no OPs for QuickNet."""
    from . import table3_zoo as t3

    for e in (
        BnnZooEntry(
            "quicknet_small", t3.quicknet_small, "QuickNet-Small (Larq Zoo)", paper_storage_mb=4.0
        ),
        BnnZooEntry("quicknet", t3.quicknet, "QuickNet (Larq Zoo)", paper_storage_mb=4.2),
        BnnZooEntry("quicknet_large", t3.quicknet_large, "QuickNet-Large (Larq Zoo)"),
        BnnZooEntry(
            "real_to_bin_resnet18",
            t3.real_to_bin_resnet18,
            "Real-to-Bin (ResNet-18)",
            paper_ops_e8=1.83,
            paper_flops_e8=1.56,
            # Table 2 prints 1.68; OPs = FLOPs + BOPs / 64 = 1.83 holds for 16.8 (a typo there).
            paper_bops_e8=16.8,
            paper_storage_mb=5.4,
        ),
        BnnZooEntry(
            "mobilenet_v1",
            t3.mobilenet_v1,
            "MobileNetV1 (FP32)",
            paper_ops_e8=5.75,
            paper_flops_e8=5.75,
            paper_storage_mb=16.9,
        ),
        BnnZooEntry(
            "mobilenet_v2",
            t3.mobilenet_v2,
            "MobileNetV2 (FP32)",
            paper_ops_e8=3.0,
            paper_flops_e8=3.0,
            paper_storage_mb=14.0,
        ),
        BnnZooEntry(
            "qsb_net_large_se1",
            t3.qsb_net_large_se1,
            "QSB-Net-Large (SE1)",
            # Table 2's figures (Table 3 prints 0.69 OPs, Table 2's figure for SE2).
            paper_ops_e8=0.64,
            paper_flops_e8=0.37,
            paper_bops_e8=16.9,
            paper_storage_mb=12.4,
        ),
    ):
        BNN_ZOO[e.name] = e


_register_table3_networks()
BNN_ZOO_NAMES = tuple(BNN_ZOO)


def build_bnn(name: str, num_classes: int = 1000) -> nn.Module:
    try:
        entry = BNN_ZOO[name]
    except KeyError:
        raise ValueError(f"unknown BNN zoo model {name!r}; known: {', '.join(BNN_ZOO)}") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = entry.builder(num_classes=num_classes)
    if not isinstance(getattr(type(model), "name", None), property):
        # Read by weights_tools.ops. A zoo BinaryNet (qsb_net_large_se1) names itself.
        model.name = name  # type: ignore[assignment]
    return model
