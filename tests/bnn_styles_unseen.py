"""A second set of small BNNs in the styles of public BNN code, written apart from
`tests/bnn_styles.py` and `weights_tools/bnn_zoo.py` and in the idioms those do not use: the
networks a new user arrives with that the converter's authors had not looked at.

- `reactnet_resnet`: ReActNet's ResNet-18 variant (Real-to-Bin-like blocks: `move0`, approx
  sign with `.type(torch.float32)` masks, HardBinaryConv whose scale is three nested
  `torch.mean(..., keepdim=True)` of `abs(W)`, `out += residual`, `move1`/PReLU/`move2`),
  downsampling by AvgPool2d(2) + 1x1 conv + BN, `x.view(x.size(0), -1)`.
- `bireal_hardtanh`: Bi-Real Net blocks with a Hardtanh STE written as
  `x_clip + (sign(x) - x_clip).detach()`, a max-pool stem in ceil mode, an autograd Function
  weight binarizer, `nn.Flatten`.
- `irnet_resnet20`: IR-Net's CIFAR ResNet-20 (1w1a): weights standardised in forward
  (`bw = w - mean`, `bw / std`), signed by an autograd Function taking the EDE tensors k and t,
  scaled by `2 ** round(log2(mean |bw|))`; option-A shortcuts (`x[:, :, ::2, ::2]` and a zero
  channel `F.pad`), Hardtanh after every add, `F.avg_pool2d(out, out.size()[3])`.
- `xnor_nin`: XNOR-Net-PyTorch's CIFAR network-in-network: BN(affine=False, eps=1e-4), BinActive
  returning (sign, mean|x|), Dropout, a conv with bias whose weights the training loop has set to
  `alpha * sign(W)` (BinOp), padded AvgPool, a 5x5 binary conv, `x.view(x.size(0), 10)`.
- `xnor_forward_scale`: the XNOR weight scale computed in forward (the older mean over one dim
  at a time), a `torch.where(x >= 0, tensor(1.), tensor(-1.))` binarizer with the scale of the
  activations ignored, binary FCs after a flattened map with per-feature BatchNorm1d.
- `binarynet_vgg`: BinaryNet.pytorch's VGG for CIFAR: BinarizeConv2d/BinarizeLinear that
  binarize `input.data` and `self.weight.data` in forward, bias added as
  `out += bias.view(1, -1, 1, 1).expand_as(out)`, MaxPool between a binary conv and its BN,
  Hardtanh(inplace=True), `x.view(-1, C * 4 * 4)`, a last BatchNorm1d(affine=False), LogSoftmax.
- `binarynet_resnet`: BinaryNet.pytorch's resnet_binary for CIFAR: `residual = x.clone()` before
  the block's first conv binarizes `x.data` in place, a binary 1x1 stride-2 downsample, a
  binarized first conv on the float image, AvgPool2d(8), BatchNorm1d, a binary last FC.
- `binarynet_mlp_round`: a BinaryNet MLP whose binarizer is the deterministic rounding form
  `x.add(1).div(2).clamp(0, 1).round().mul(2).add(-1)`, with Dropout.
- `real2bin_gated`: Real-to-Bin-like blocks: BN, sign as `where(x > 0)`, `where(x < 0, -1, 1)`
  and `x.gt(0).float().mul(2).sub(1)`, a binary conv with sign(W) and a learnable scale, a
  sigmoid gate computed from the block's real input by two FCs, PReLU, the real shortcut.

`randomize(model, seed)` gives random weights and randomised BN statistics; `STYLES` maps a
name to its builder. Each model carries `input_shape` (C, H, W).
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

# ---------------------------------------------------------------------------------------------
# ReActNet ResNet-18 variant


class LearnableBias(nn.Module):
    def __init__(self, out_chn):
        super(LearnableBias, self).__init__()
        self.bias = nn.Parameter(torch.zeros(1, out_chn, 1, 1), requires_grad=True)

    def forward(self, x):
        out = x + self.bias.expand_as(x)
        return out


class BinaryActivation(nn.Module):
    def __init__(self):
        super(BinaryActivation, self).__init__()

    def forward(self, x):
        out_forward = torch.sign(x)
        mask1 = x < -1
        mask2 = x < 0
        mask3 = x < 1
        out1 = (-1) * mask1.type(torch.float32) + (x * x + 2 * x) * (1 - mask1.type(torch.float32))
        out2 = out1 * mask2.type(torch.float32) + (-x * x + 2 * x) * (1 - mask2.type(torch.float32))
        out3 = out2 * mask3.type(torch.float32) + 1 * (1 - mask3.type(torch.float32))
        out = out_forward.detach() - out3.detach() + out3
        return out


class HardBinaryConv(nn.Module):
    def __init__(self, in_chn, out_chn, kernel_size=3, stride=1, padding=1):
        super(HardBinaryConv, self).__init__()
        self.stride = stride
        self.padding = padding
        self.number_of_weights = in_chn * out_chn * kernel_size * kernel_size
        self.shape = (out_chn, in_chn, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.rand(self.shape) * 0.001, requires_grad=True)

    def forward(self, x):
        real_weights = self.weight
        scaling_factor = torch.mean(
            torch.mean(torch.mean(abs(real_weights), dim=3, keepdim=True), dim=2, keepdim=True),
            dim=1,
            keepdim=True,
        )
        scaling_factor = scaling_factor.detach()
        binary_weights_no_grad = scaling_factor * torch.sign(real_weights)
        cliped_weights = torch.clamp(real_weights, -1.0, 1.0)
        binary_weights = binary_weights_no_grad.detach() - cliped_weights.detach() + cliped_weights
        y = F.conv2d(x, binary_weights, stride=self.stride, padding=self.padding)
        return y


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ReActBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super(ReActBasicBlock, self).__init__()
        self.move0 = LearnableBias(inplanes)
        self.binary_activation = BinaryActivation()
        self.binary_conv = HardBinaryConv(inplanes, planes, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.move1 = LearnableBias(planes)
        self.prelu = nn.PReLU(planes)
        self.move2 = LearnableBias(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.move0(x)
        out = self.binary_activation(out)
        out = self.binary_conv(out)
        out = self.bn1(out)
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        out = self.move1(out)
        out = self.prelu(out)
        out = self.move2(out)
        return out


class ReActResNet(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, layers=(1, 1, 1), num_classes=10):
        super(ReActResNet, self).__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(ReActBasicBlock, 16, layers[0])
        self.layer2 = self._make_layer(ReActBasicBlock, 32, layers[1], stride=2)
        self.layer3 = self._make_layer(ReActBasicBlock, 64, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=stride),
                conv1x1(self.inplanes, planes * block.expansion),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return x


# ---------------------------------------------------------------------------------------------
# Bi-Real Net with a Hardtanh STE, a ceil-mode max-pool stem and an autograd weight binarizer


class WeightBinarizer(Function):
    """alpha * sign(W) forward, identity gradient (a Function whose forward takes the scale)."""

    @staticmethod
    def forward(ctx, weight, alpha):
        return weight.sign() * alpha

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


class HardtanhSign(nn.Module):
    def forward(self, x):
        x_clip = F.hardtanh(x)
        return x_clip + (torch.sign(x) - x_clip).detach()


class BiRealConv(nn.Conv2d):
    def forward(self, input):
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
        w = WeightBinarizer.apply(self.weight, alpha)
        return F.conv2d(input, w, self.bias, self.stride, self.padding)


class BiRealBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.sign = HardtanhSign()
        self.conv = BiRealConv(inplanes, planes, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.bn(self.conv(self.sign(x))) + identity


class BiRealHardtanh(nn.Module):
    input_shape = (3, 44, 44)

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.layer1 = nn.Sequential(BiRealBlock(16, 16), BiRealBlock(16, 16))
        down = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(16, 32, 1, bias=False),
            nn.BatchNorm2d(32),
        )
        self.layer2 = nn.Sequential(BiRealBlock(16, 32, 2, down), BiRealBlock(32, 32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(self.flatten(self.pool(x)))


# ---------------------------------------------------------------------------------------------
# IR-Net ResNet-20 (CIFAR, 1w1a)


class BinaryQuantize(Function):
    @staticmethod
    def forward(ctx, input, k, t):
        ctx.save_for_backward(input, k, t)
        out = torch.sign(input)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        input, k, t = ctx.saved_tensors
        grad_input = k * t * (1 - torch.pow(torch.tanh(input * t), 2)) * grad_output
        return grad_input, None, None


class IRConv2d(nn.Conv2d):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
    ):
        super(IRConv2d, self).__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.k = torch.tensor([10]).float()
        self.t = torch.tensor([0.1]).float()

    def forward(self, input):
        w = self.weight
        a = input
        bw = w - w.view(w.size(0), -1).mean(-1).view(w.size(0), 1, 1, 1)
        bw = bw / bw.view(bw.size(0), -1).std(-1).view(bw.size(0), 1, 1, 1)
        sw = (
            torch.pow(
                torch.tensor([2] * bw.size(0)).float(),
                (torch.log(bw.abs().view(bw.size(0), -1).mean(-1)) / math.log(2)).round().float(),
            )
            .view(bw.size(0), 1, 1, 1)
            .detach()
        )
        bw = BinaryQuantize().apply(bw, self.k, self.t)
        ba = BinaryQuantize().apply(a, self.k, self.t)
        bw = bw * sw
        output = F.conv2d(ba, bw, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return output


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super(LambdaLayer, self).__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class IRBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super(IRBasicBlock, self).__init__()
        self.conv1 = IRConv2d(
            in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = IRConv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0)
            )

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        out += self.shortcut(x)
        out = F.hardtanh(out)
        x1 = out
        out = self.bn2(self.conv2(out))
        out += x1
        out = F.hardtanh(out)
        return out


class IRResNet20(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_blocks=(1, 1, 1), num_classes=10):
        super(IRResNet20, self).__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.bn2 = nn.BatchNorm1d(64)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(IRBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.hardtanh(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.bn2(out)
        out = self.linear(out)
        return out


# ---------------------------------------------------------------------------------------------
# XNOR-Net NIN (CIFAR), weights binarized by the training loop (BinOp)


class BinActive(Function):
    """sign(x) forward, and the mean |x| over channels (XNOR's K, unused by the conv)."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        mean = torch.mean(input.abs(), 1, keepdim=True)
        input = input.sign()
        return input, mean

    @staticmethod
    def backward(ctx, grad_output, grad_mean):
        (input,) = ctx.saved_tensors
        grad_input = grad_output.clone()
        grad_input[input.ge(1)] = 0
        grad_input[input.le(-1)] = 0
        return grad_input


class BinConv2d(nn.Module):
    def __init__(
        self,
        input_channels,
        output_channels,
        kernel_size=-1,
        stride=-1,
        padding=-1,
        dropout=0,
        Linear=False,
    ):
        super(BinConv2d, self).__init__()
        self.layer_type = "BinConv2d"
        self.dropout_ratio = dropout
        self.Linear = Linear
        if dropout != 0:
            self.dropout = nn.Dropout(dropout)
        if not self.Linear:
            self.bn = nn.BatchNorm2d(input_channels, eps=1e-4, momentum=0.1, affine=True)
            self.conv = nn.Conv2d(
                input_channels, output_channels, kernel_size=kernel_size, stride=stride,
                padding=padding,
            )  # fmt: skip
        else:
            self.bn = nn.BatchNorm1d(input_channels, eps=1e-4, momentum=0.1, affine=True)
            self.linear = nn.Linear(input_channels, output_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.bn(x)
        x, mean = BinActive.apply(x)
        if self.dropout_ratio != 0:
            x = self.dropout(x)
        if not self.Linear:
            x = self.conv(x)
        else:
            x = self.linear(x)
        x = self.relu(x)
        return x


class XnorNIN(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes=10):
        super(XnorNIN, self).__init__()
        self.xnor = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=5, stride=1, padding=2),
            nn.BatchNorm2d(48, eps=1e-4, momentum=0.1, affine=False),
            nn.ReLU(inplace=True),
            BinConv2d(48, 40, kernel_size=1, stride=1, padding=0),
            BinConv2d(40, 24, kernel_size=1, stride=1, padding=0),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            BinConv2d(24, 48, kernel_size=5, stride=1, padding=2, dropout=0.5),
            BinConv2d(48, 48, kernel_size=1, stride=1, padding=0),
            BinConv2d(48, 48, kernel_size=1, stride=1, padding=0),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
            BinConv2d(48, 48, kernel_size=3, stride=1, padding=1, dropout=0.5),
            BinConv2d(48, 48, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(48, eps=1e-4, momentum=0.1, affine=False),
            nn.Conv2d(48, num_classes, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=8, stride=1, padding=0),
        )

    def forward(self, x):
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.BatchNorm1d):
                if hasattr(m.weight, "data"):
                    m.weight.data.clamp_(min=0.01)
        x = self.xnor(x)
        x = x.view(x.size(0), 10)
        return x


def binop_binarize(model: nn.Module) -> None:
    """What XNOR-Net-PyTorch's BinOp does to the binary layers' weights before evaluation:
    W <- sign(W) * (||W||_1 / n) per output channel, the mean written as its sums."""
    for m in model.modules():
        if isinstance(m, BinConv2d):
            layer = m.linear if m.Linear else m.conv
            W = layer.weight.data
            n = W[0].nelement()
            s = W.size()
            if len(s) == 4:
                alpha = W.norm(1, 3, keepdim=True).sum(2, keepdim=True).sum(1, keepdim=True).div(n)
            else:
                alpha = W.norm(1, 1, keepdim=True).div(n)
            layer.weight.data = W.sign().mul(alpha.expand(s))


# ---------------------------------------------------------------------------------------------
# XNOR weight scale in forward, binary FCs after a flattened map with BatchNorm1d per feature


def where_sign(x):
    return torch.where(x >= 0, torch.tensor(1.0), torch.tensor(-1.0))


class XnorScaledConv(nn.Conv2d):
    def forward(self, x):
        x = where_sign(x)
        w = self.weight
        alpha = (
            w.abs().mean(dim=3, keepdim=True).mean(dim=2, keepdim=True).mean(dim=1, keepdim=True)
        )
        return F.conv2d(x, w.sign() * alpha, self.bias, self.stride, self.padding)


class XnorScaledLinear(nn.Linear):
    def forward(self, x):
        x = where_sign(x)
        alpha = self.weight.abs().mean(dim=1, keepdim=True)
        return F.linear(x, self.weight.sign() * alpha, self.bias)


class XnorForwardScale(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.BatchNorm2d(32, eps=1e-4),
            XnorScaledConv(32, 48, kernel_size=3, stride=1, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.BatchNorm2d(48, eps=1e-4),
        )
        self.classifier = nn.Sequential(
            XnorScaledLinear(48 * 4 * 4, 64),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(64, eps=1e-3),
            nn.Dropout(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), 48 * 4 * 4)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# BinaryNet.pytorch VGG (CIFAR) and MLP: binarization through `.data` in forward


def Binarize(tensor, quant_mode="det"):
    if quant_mode == "det":
        return tensor.sign()
    return (
        tensor.add_(1)
        .div_(2)
        .add_(torch.rand(tensor.size()).add(-0.5))
        .clamp_(0, 1)
        .round()
        .mul_(2)
        .add_(-1)
    )


class BinarizeLinear(nn.Linear):
    def __init__(self, *kargs, **kwargs):
        super(BinarizeLinear, self).__init__(*kargs, **kwargs)

    def forward(self, input):
        if input.size(1) != 784:
            input.data = Binarize(input.data)
        if not hasattr(self.weight, "org"):
            self.weight.org = self.weight.data.clone()
        self.weight.data = Binarize(self.weight.org)
        out = nn.functional.linear(input, self.weight)
        if self.bias is not None:
            self.bias.org = self.bias.data.clone()
            out += self.bias.view(1, -1).expand_as(out)
        return out


class BinarizeConv2d(nn.Conv2d):
    def __init__(self, *kargs, **kwargs):
        super(BinarizeConv2d, self).__init__(*kargs, **kwargs)

    def forward(self, input):
        if input.size(1) != 3:
            input.data = Binarize(input.data)
        if not hasattr(self.weight, "org"):
            self.weight.org = self.weight.data.clone()
        self.weight.data = Binarize(self.weight.org)
        out = nn.functional.conv2d(
            input, self.weight, None, self.stride, self.padding, self.dilation, self.groups
        )
        if self.bias is not None:
            self.bias.org = self.bias.data.clone()
            out += self.bias.view(1, -1, 1, 1).expand_as(out)
        return out


class VGG_Cifar10(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes=10):
        super(VGG_Cifar10, self).__init__()
        self.infl_ratio = 1
        r = self.infl_ratio
        self.features = nn.Sequential(
            BinarizeConv2d(3, 16 * r, kernel_size=3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(16 * r),
            nn.Hardtanh(inplace=True),
            BinarizeConv2d(16 * r, 16 * r, kernel_size=3, padding=1, bias=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.BatchNorm2d(16 * r),
            nn.Hardtanh(inplace=True),
            BinarizeConv2d(16 * r, 32 * r, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(32 * r),
            nn.Hardtanh(inplace=True),
            BinarizeConv2d(32 * r, 32 * r, kernel_size=3, padding=1, bias=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.BatchNorm2d(32 * r),
            nn.Hardtanh(inplace=True),
            BinarizeConv2d(32 * r, 64, kernel_size=3, padding=1, bias=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.BatchNorm2d(64),
            nn.Hardtanh(inplace=True),
        )
        self.classifier = nn.Sequential(
            BinarizeLinear(64 * 4 * 4, 128, bias=True),
            nn.BatchNorm1d(128),
            nn.Hardtanh(inplace=True),
            BinarizeLinear(128, 128, bias=True),
            nn.BatchNorm1d(128),
            nn.Hardtanh(inplace=True),
            BinarizeLinear(128, num_classes, bias=True),
            nn.BatchNorm1d(num_classes, affine=False),
            nn.LogSoftmax(dim=1),
        )

    def forward(self, x):
        x = self.features(x)
        x = x.view(-1, 64 * 4 * 4)
        x = self.classifier(x)
        return x


class BinaryNetBasicBlock(nn.Module):
    """BinaryNet.pytorch's resnet_binary block: `residual = x.clone()` before conv1 binarizes
    `x.data` in place, a binary 1x1 stride-2 downsample, BN + Hardtanh after the add."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, do_bntan=True):
        super(BinaryNetBasicBlock, self).__init__()
        self.conv1 = BinarizeConv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.tanh1 = nn.Hardtanh(inplace=True)
        self.conv2 = BinarizeConv2d(planes, planes, 3, 1, 1, bias=False)
        self.tanh2 = nn.Hardtanh(inplace=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.do_bntan = do_bntan
        self.stride = stride

    def forward(self, x):
        residual = x.clone()
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.tanh1(out)
        out = self.conv2(out)
        if self.downsample is not None:
            if residual.data.max() > 1:
                raise RuntimeError("the residual should be within the Hardtanh range")
            residual = self.downsample(residual)
        out += residual
        if self.do_bntan:
            out = self.bn2(out)
            out = self.tanh2(out)
        return out


class ResNetBinaryCifar(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes=10, inflate=1):
        super(ResNetBinaryCifar, self).__init__()
        self.inflate = inflate
        self.inplanes = 16 * self.inflate
        self.conv1 = BinarizeConv2d(3, 16 * self.inflate, 3, 1, 1, bias=False)
        self.maxpool = lambda x: x
        self.bn1 = nn.BatchNorm2d(16 * self.inflate)
        self.tanh1 = nn.Hardtanh(inplace=True)
        self.tanh2 = nn.Hardtanh(inplace=True)
        self.layer1 = self._make_layer(16 * self.inflate, 1)
        self.layer2 = self._make_layer(32 * self.inflate, 1, stride=2)
        self.layer3 = self._make_layer(64 * self.inflate, 1, stride=2, do_bntan=False)
        self.avgpool = nn.AvgPool2d(8)
        self.bn2 = nn.BatchNorm1d(64 * self.inflate)
        self.bn3 = nn.BatchNorm1d(10)
        self.logsoftmax = nn.LogSoftmax(dim=1)
        self.fc = BinarizeLinear(64 * self.inflate, num_classes)

    def _make_layer(self, planes, blocks, stride=1, do_bntan=True):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                BinarizeConv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BinaryNetBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        for _ in range(1, blocks - 1):
            layers.append(BinaryNetBasicBlock(self.inplanes, planes))
        layers.append(BinaryNetBasicBlock(self.inplanes, planes, do_bntan=do_bntan))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.bn1(x)
        x = self.tanh1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.bn2(x)
        x = self.tanh2(x)
        x = self.fc(x)
        x = self.bn3(x)
        x = self.logsoftmax(x)
        return x


def round_sign(x):
    return x.add(1).div(2).clamp(0, 1).round().mul(2).add(-1)


class RoundSignLinear(nn.Linear):
    def forward(self, input):
        return F.linear(round_sign(input), round_sign(self.weight), self.bias)


class BinaryMLPRound(nn.Module):
    input_shape = (1, 16, 16)

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(256, 96)
        self.bn1 = nn.BatchNorm1d(96)
        self.drop = nn.Dropout(0.2)
        self.fc2 = RoundSignLinear(96, 96)
        self.bn2 = nn.BatchNorm1d(96)
        self.fc3 = nn.Linear(96, num_classes)
        self.logsoftmax = nn.LogSoftmax(dim=1)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.drop(F.hardtanh(self.bn1(self.fc1(x))))
        x = F.hardtanh(self.bn2(self.fc2(x)))
        return self.logsoftmax(self.fc3(x))


# ---------------------------------------------------------------------------------------------
# Real-to-Bin-like blocks with a gating branch, and more binarizer idioms


def sign_greater(x):
    return torch.where(x > 0, 1.0, -1.0)


def sign_less(x):
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def sign_gt_cast(x):
    return x.gt(0).float().mul(2).sub(1)


class GatedBinaryBlock(nn.Module):
    """BN -> sign -> binary conv -> learnable per-channel scale -> gate (SE-like, computed from
    the block's real input) -> PReLU, plus the real shortcut."""

    def __init__(self, planes, binarize):
        super().__init__()
        self.bn = nn.BatchNorm2d(planes)
        self.binarize = binarize
        self.conv = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.alpha = nn.Parameter(torch.ones(1, planes, 1, 1))
        self.fc1 = nn.Linear(planes, planes // 4)
        self.fc2 = nn.Linear(planes // 4, planes)
        self.prelu = nn.PReLU(planes)

    def forward(self, x):
        b, c = x.size(0), x.size(1)
        gate = F.adaptive_avg_pool2d(x, 1).view(b, c)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate)))).view(b, c, 1, 1)
        w = self.conv.weight
        out = F.conv2d(self.binarize(self.bn(x)), w.sign(), padding=1) * self.alpha
        return self.prelu(out * gate) + x


class RealToBinGated(nn.Module):
    input_shape = (3, 24, 24)

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.MaxPool2d(3, 2, 1),
        )
        self.blocks = nn.Sequential(
            GatedBinaryBlock(32, sign_greater),
            GatedBinaryBlock(32, sign_less),
            GatedBinaryBlock(32, sign_gt_cast),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean([2, 3]))


STYLES: Dict[str, Callable[[], nn.Module]] = {
    "reactnet_resnet": ReActResNet,
    "bireal_hardtanh": BiRealHardtanh,
    "irnet_resnet20": IRResNet20,
    "xnor_nin": XnorNIN,
    "xnor_forward_scale": XnorForwardScale,
    "binarynet_vgg": VGG_Cifar10,
    "binarynet_mlp_round": BinaryMLPRound,
    "real2bin_gated": RealToBinGated,
    "binarynet_resnet": ResNetBinaryCifar,
}


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """bnn_styles.randomize (random weights, shifts, PReLU slopes, BN statistics measured on
    random inputs, centred logits), then XNOR's BinOp for the NIN, whose training loop leaves
    the binary layers' weights as alpha * sign(W)."""
    import bnn_styles

    if any(isinstance(m, nn.Linear) for m in model.modules()):
        bnn_styles.randomize(model, seed=seed)
    else:  # no FC head to centre (the NIN ends in a conv and a pool)
        from weights_tools.convert import randomize_bn

        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                fan_in = p[0].numel() if p.dim() >= 2 else 10
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        c, h, w = model.input_shape
        randomize_bn(model, seed=seed, input_size=(h, w), in_channels=c)
    binop_binarize(model)
    return model.eval()
