"""The test suite's own small BNNs in the four public styles (ReActNet, Bi-Real Net, XNOR-Net,
BinaryNet), written independently of `weights_tools.bnn_zoo` and on purpose in other idioms, the
way another user would write them: binarizers as custom autograd Functions,
`torch.where(x >= 0, 1., -1.)`, `torch.where(x >= 0, ones_like, -ones_like)`,
`(x >= 0).float() * 2 - 1`, `torch.sign`, detach-arithmetic STEs, `x + bias.expand_as(x)`,
Hardtanh before a sign, per-output-channel scaled weights, stride-2 binary 3x3 convs, a 5x5
binary conv, max-pool stems, float shortcuts and a binary MLP behind a Flatten / Reshape.

Each model is small (8-32 channels, 32x32 input) so that export and conversion take seconds,
and carries `input_shape` (C, H, W). `randomize(model, seed)` gives it random weights and
randomised BN statistics; `STYLES` maps a style name to its builder.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from weights_tools.convert import randomize_bn

# ---------------------------------------------------------------------------------------------
# Binarizers, each in a different idiom


class SignWithClippedSTE(torch.autograd.Function):
    """torch.sign forward; gradient passed where |x| <= 1."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).float()


def sign_where_ones_like(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def sign_where_scalar(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0)


def sign_compare_cast(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).float() * 2 - 1


def approx_sign_ste(x: torch.Tensor) -> torch.Tensor:
    """ReActNet's estimator, written out: value sign(x), gradient of a piecewise quadratic."""
    quad = torch.where(x < 0, x * x + 2 * x, 2 * x - x * x)
    soft = torch.where(x < -1, -torch.ones_like(x), torch.where(x < 1, quad, torch.ones_like(x)))
    return torch.sign(x).detach() - soft.detach() + soft


def hardtanh_ste_compare(x: torch.Tensor) -> torch.Tensor:
    """Value (x >= 0) * 2 - 1, gradient of Hardtanh (the BinaryNet clipped identity)."""
    clipped = F.hardtanh(x)
    return sign_compare_cast(x).detach() + clipped - clipped.detach()


def scaled_sign_weight(w: torch.Tensor) -> torch.Tensor:
    """alpha_o * sign(W) with alpha_o = mean |W| over output channel o, STE to W."""
    alpha = w.abs().flatten(1).mean(1).view(-1, *([1] * (w.dim() - 1)))
    return w + (alpha * sign_where_scalar(w) - w).detach()


# ---------------------------------------------------------------------------------------------
# Style 1: ReActNet (RSign, RPReLU, binary 3x3 incl. stride 2, binary 1x1, concat doubling)


class Shift(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x + self.bias.expand_as(x)


class ScaledSignConv(nn.Module):
    """Binary conv with real weights in `weight`; eval: conv(x, sign W) * alpha afterwards."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.1)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        alpha = self.weight.abs().mean(dim=[1, 2, 3]).view(1, -1, 1, 1)
        y = F.conv2d(x, torch.sign(self.weight), stride=self.stride, padding=self.padding)
        return y * alpha


class ReactUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.double = stride, cout == 2 * cin
        self.shift_a = Shift(cin)
        self.conv3 = ScaledSignConv(cin, cin, 3, stride, 1)
        self.bn_a = nn.BatchNorm2d(cin)
        self.rprelu_a = nn.Sequential(Shift(cin), nn.PReLU(cin), Shift(cin))
        self.shift_b = Shift(cin)
        n_pw = 2 if self.double else 1
        self.pw = nn.ModuleList([ScaledSignConv(cin, cin, 1) for _ in range(n_pw)])
        self.bn_b = nn.ModuleList([nn.BatchNorm2d(cin) for _ in range(n_pw)])
        self.rprelu_b = nn.Sequential(Shift(cout), nn.PReLU(cout), Shift(cout))

    def forward(self, x):
        y = self.bn_a(self.conv3(SignWithClippedSTE.apply(self.shift_a(x))))
        short = F.avg_pool2d(x, 2) if self.stride == 2 else x
        y = self.rprelu_a(y + short)
        bits = approx_sign_ste(self.shift_b(y))
        outs = [bn(pw(bits)) + y for pw, bn in zip(self.pw, self.bn_b)]
        return self.rprelu_b(torch.cat(outs, 1) if self.double else outs[0])


class ReactStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8))
        self.units = nn.Sequential(
            ReactUnit(8, 16, 1), ReactUnit(16, 16, 2), ReactUnit(16, 32, 2), ReactUnit(32, 32, 1)
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.units(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# Style 2: Bi-Real Net (sign + binary conv + BN + real shortcut per conv, max-pool stem,
# AvgPool + 1x1 conv + BN downsampling)


class WhereSignConv2d(nn.Conv2d):
    """Conv2d whose forward binarizes the weights (scaled) and, with `binarize_input`, the input
    with the Hardtanh-gradient compare-and-cast sign."""

    def forward(self, x):
        x = hardtanh_ste_compare(x)
        return self._conv_forward(x, scaled_sign_weight(self.weight), self.bias)


class BiRealUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = WhereSignConv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.AvgPool2d(2, stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        return self.bn(self.conv(x)) + (x if self.down is None else self.down(x))


class BiRealStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.body = nn.Sequential(
            BiRealUnit(16, 16, 1), BiRealUnit(16, 32, 2), BiRealUnit(32, 32, 1)
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.body(self.pool(self.bn1(self.conv1(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# Style 3: XNOR-Net (BN -> Hardtanh -> sign -> scaled binary conv, a 5x5 binary conv, max pools,
# FP32 first and last layers, float 1x1 stride-2 shortcut)


class XnorUnit(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.clip = nn.Hardtanh()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.1)
        self.stride, self.pad = stride, k // 2

    def forward(self, x):
        x = torch.sign(self.clip(self.norm(x)))
        w = scaled_sign_weight(self.weight)
        return F.relu(F.conv2d(x, w, stride=self.stride, padding=self.pad))


class XnorStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.first = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.b5 = XnorUnit(16, 16, 5)
        self.b3s2 = XnorUnit(16, 32, 3, stride=2)
        self.b3 = XnorUnit(32, 32, 3)
        self.shortcut = nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
        self.pool = nn.MaxPool2d(2)
        self.last_bn = nn.BatchNorm2d(32)
        self.classifier = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        x = self.first(x)
        x = x + self.b5(x)
        x = self.b3(self.b3s2(x)) + self.shortcut(x)
        x = self.last_bn(self.pool(x))
        return self.classifier(x.flatten(1))


# ---------------------------------------------------------------------------------------------
# Style 4: BinaryNet MLP (FP32 conv front, Reshape of the spatial map, binary FCs with BN1d and
# Hardtanh, FP32 last FC)


class SignLinear(nn.Linear):
    def forward(self, x):
        return F.linear(sign_where_scalar(x), sign_where_ones_like(self.weight), self.bias)


class BinaryMLPStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.MaxPool2d(2)
        )
        self.fc1 = SignLinear(8 * 8 * 8, 64)
        self.bn1 = nn.BatchNorm1d(64)
        self.act1 = nn.Hardtanh()
        self.fc2 = SignLinear(64, 64)
        self.bn2 = nn.BatchNorm1d(64)
        self.act2 = nn.Hardtanh()
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.front(x)
        x = x.reshape(x.size(0), -1)
        x = self.act1(self.bn1(self.fc1(x)))
        x = self.act2(self.bn2(self.fc2(x)))
        return self.fc3(x)


class BinaryMLPFlattenStyle(nn.Module):
    """Pure MLP on a 1x16x16 image through nn.Flatten, first FC with a real input."""

    input_shape = (1, 16, 16)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256, 96),
            nn.BatchNorm1d(96),
            nn.Hardtanh(),
            SignLinear(96, 96),
            nn.BatchNorm1d(96),
            nn.Hardtanh(),
            nn.Linear(96, num_classes),
        )

    def forward(self, x):
        return self.net(x)


STYLES: Dict[str, Callable[[], nn.Module]] = {
    "reactnet": ReactStyle,
    "bireal": BiRealStyle,
    "xnor": XnorStyle,
    "binarynet_mlp": BinaryMLPStyle,
    "binarynet_mlp_flatten": BinaryMLPFlattenStyle,
}


def input_shape(model: nn.Module) -> Tuple[int, int, int]:
    return tuple(getattr(model, "input_shape", (3, 32, 32)))  # type: ignore[return-value]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (any parameter of 2+ dimensions: also the zoo's flat (N, 1) binary
    weights), biases, shifts and PReLU slopes, then random BN affines and BN statistics
    measured on random inputs (weights_tools.convert.randomize_bn, BatchNorm1d included), and a
    last-FC bias that balances the classes. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.PReLU):
                module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=g))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue  # randomize_bn below
            else:
                for p in module.parameters(recurse=False):
                    if p.dim() == 4 and p.shape[0] == 1:
                        # A learnable per-channel shift, (1, C, 1, 1): ours or ReActNet's `move`.
                        p.copy_(0.2 * torch.randn(p.shape, generator=g))
                    elif p.dim() >= 2:
                        fan_in = p[0].numel()
                        p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
                    else:
                        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    c, h, w = input_shape(model)
    randomize_bn(model, seed=seed, input_size=(h, w), in_channels=c)
    _center_logits(model, g, (c, h, w))
    return model.eval()


def _center_logits(model: nn.Module, g: torch.Generator, shape: Tuple[int, int, int]) -> None:
    """Set the last FC's bias so that the mean logit of random images is about equal for every
    class. Without it, offsets that survive global pooling (shifts, PReLU) make one or two
    classes win for every image, and a top-1 comparison would test almost nothing."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    if head.bias is None:
        return
    seen = []
    handle = head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model.eval()(torch.randn(64, *shape, generator=g))
            logits = F.linear(seen[0], head.weight)
            spread = logits.std(0).mean()
            head.bias.copy_(
                -logits.mean(0) + 0.1 * spread * torch.randn(head.bias.shape, generator=g)
            )
    finally:
        handle.remove()
