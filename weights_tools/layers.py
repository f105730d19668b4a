"""Building blocks of QB-Net / QSB-Net (SPEC §1), in PyTorch.

Every layer here is written so that its ONNX export is a plain pattern the converter can lower
(`Add` for a learnable bias, a sign made of `GreaterOrEqual`/`Where`, `Conv`, `Concat`, `Mul`,
`BatchNormalization`, `PRelu`), and so that its eval-mode arithmetic is what the engine
reproduces: sign(0) = +1, zero or one padding of binary activations, per-channel alpha.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SignSTE",
    "binary_sign",
    "LearnableBias",
    "BinaryConv2d",
    "BPReLU",
    "SqueezeExcite",
    "SE_WEIGHT_KINDS",
    "int8_row_weights",
    "DSHalf",
    "BHalf",
    "Stage",
    "Block",
    "PADDING_MODES",
]

PADDING_MODES = ("zero", "one")


class SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1 and the straight-through estimator.

    Forward: +1 where x >= 0, else -1 (torch.sign would give 0 at 0, which a bit cannot say;
    NaN maps to -1, like the engine's `!(x >= t)` bit rule). Backward: the incoming gradient
    where |x| <= 1, zero elsewhere (the clipped identity of BinaryNet / XNOR-Net).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return _sign_forward(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() <= 1).to(grad_output.dtype)


def _sign_forward(x: torch.Tensor) -> torch.Tensor:
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(0) = +1 with STE gradients while training; a plain `Where` graph otherwise.

    The autograd Function is skipped when no gradient is needed so that the ONNX export shows
    the bare `GreaterOrEqual -> Where` pattern instead of an opaque custom op.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return SignSTE.apply(x)
    return _sign_forward(x)


class LearnableBias(nn.Module):
    """Per-channel bias added before a sign or a depthwise conv (ReActNet's "move"), init 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class BinaryConv2d(nn.Module):
    """Binary convolution: stride 1, 1x1 or 3x3 ('same' size), ±1 weights, per-channel alpha.

    The input is expected to hold ±1 already (the caller applies `binary_sign`). With
    `binary_weights=False` (training stage 1) the float weights are used as they are; with True
    (stage 2 and inference) the weights are sign(W) with sign(0) = +1 and STE gradients.

    `padding="zero"` pads the ±1 activations with 0 as PyTorch's conv does (what checkpoints from
    other PyTorch code expect); `padding="one"` pads with +1, which is what packed bits can store.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: str = "zero"
    ):
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"binary conv kernel must be 1 or 3, got {kernel_size}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.binary_weights = True
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        # Small uniform init keeps |W| <= 1 so the weight STE passes gradient from the start.
        nn.init.uniform_(self.weight, -0.1, 0.1)
        self.alpha = nn.Parameter(torch.ones(1, out_channels, 1, 1))

    def effective_weight(self) -> torch.Tensor:
        return binary_sign(self.weight) if self.binary_weights else self.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        if self.kernel_size == 3:
            if self.padding == "one":
                z = F.pad(z, (1, 1, 1, 1), value=1.0)
                out = F.conv2d(z, w)
            else:
                out = F.conv2d(z, w, padding=1)
        else:
            out = F.conv2d(z, w)
        return out * self.alpha

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding!r}, binary_weights={self.binary_weights}"
        )


class BPReLU(nn.Module):
    """PReLU with a per-channel slope, then BN (the paper's "BPReLU")."""

    def __init__(self, channels: int):
        super().__init__()
        self.prelu = nn.PReLU(channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.prelu(x))


SE_WEIGHT_KINDS = ("fp32", "int8", "binary")


class _RoundSTE(torch.autograd.Function):
    """Round half to even with the straight-through (identity) gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad_output


def int8_row_weights(w: torch.Tensor) -> torch.Tensor:
    """Per-output-row symmetric INT8 fake quantization of a weight [O, ...]: s_o = max|w_o| / 127,
    q = clamp(round(w / s_o), -127, 127) (half to even), returns q * s_o (a row of zeros stays 0).

    The engine's FC int8 mode computes s_o * sum q * x: the converter finds q and s_o again from
    these values (every row on its grid, `weights_tools.converter.se_weights`). Gradients pass
    straight through the rounding (and through s_o).
    """
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(
        (-1,) + (1,) * (w.dim() - 1)
    )
    r = (
        _RoundSTE.apply(w / safe)
        if torch.is_grad_enabled() and w.requires_grad
        else torch.round(w / safe)
    )
    return torch.clamp(r, -127, 127) * safe


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 gap(x) + b1) + b2), written with 1x1 convs so the graph stays 4-D.

    `weights` chooses how W1 and W2 are stored and trained (the SE input and biases stay real):
    "fp32" as they are; "int8" per-row symmetric INT8 (`int8_row_weights`, straight-through
    rounding); "binary" sign(W) times a learnable per-row scale alpha (sign(0) = +1, the binary
    convs' STE; alpha starts at the row's mean |W|), 1 bit per weight in the engine's FC
    binary mode. The converter recognises either grid in the exported weights and writes the FC
    mode that holds it.
    """

    def __init__(self, channels: int, reduction: int = 8, weights: str = "fp32"):
        super().__init__()
        if weights not in SE_WEIGHT_KINDS:
            raise ValueError(f"SE weights must be one of {SE_WEIGHT_KINDS}, got {weights!r}")
        hidden = max(1, channels // reduction)
        self.weights = weights
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)
        if weights == "binary":
            self.reduce_alpha = nn.Parameter(_mean_abs_rows(self.reduce.weight))
            self.expand_alpha = nn.Parameter(_mean_abs_rows(self.expand.weight))

    def effective_weight(self, which: str) -> torch.Tensor:
        """The weight [O, I, 1, 1] that layer `which` ("reduce" or "expand") computes with."""
        w = getattr(self, which).weight
        if self.weights == "int8":
            return int8_row_weights(w)
        if self.weights == "binary":
            return binary_sign(w) * getattr(self, which + "_alpha")
        return w

    def _fc(self, which: str, s: torch.Tensor) -> torch.Tensor:
        conv = getattr(self, which)
        if self.weights == "fp32":
            return conv(s)
        return F.conv2d(s, self.effective_weight(which), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.sigmoid(self._fc("expand", F.relu(self._fc("reduce", s))))
        return x * s

    def extra_repr(self) -> str:
        return f"weights={self.weights!r}"


def _mean_abs_rows(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().mean(dim=(1, 2, 3), keepdim=True).clone()


def _check_stride(stride: Sequence[int]) -> tuple[int, int]:
    s = (int(stride[0]), int(stride[1]))
    if s not in ((1, 1), (2, 2), (2, 1), (1, 2)):
        raise ValueError(f"depthwise stride must be (1,1), (2,2), (2,1) or (1,2), got {s}")
    return s


class DSHalf(nn.Module):
    """DS(s, k): bias, k parallel FP32 depthwise 3x3 convs concatenated, BN, optional SE,
    shortcut (average-pooled when strided, repeated k times), then BPReLU.

    Channel order of the concat: block j holds conv j of all C input channels, and the shortcut is
    repeated in the same order (`x.repeat(1, k, 1, 1)`).

    Strided shortcut pooling uses ceil_mode with count_include_pad=False so that odd spatial sizes
    still match the depthwise output size (ceil(H/s)): an edge window averages only the pixels it
    covers. At even sizes (224, 64, 32) this is ordinary 2x2 average pooling.
    """

    def __init__(
        self,
        in_channels: int,
        stride: Sequence[int],
        multiplier: int,
        se: bool = False,
        se_reduction: int = 8,
        se_weights: str = "fp32",
    ):
        super().__init__()
        if multiplier < 1:
            raise ValueError(f"channel multiplier must be >= 1, got {multiplier}")
        self.in_channels = in_channels
        self.stride = _check_stride(stride)
        self.multiplier = multiplier
        self.out_channels = in_channels * multiplier
        self.beta = LearnableBias(in_channels)
        self.dw = nn.ModuleList(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                stride=self.stride,
                padding=1,
                groups=in_channels,
                bias=False,
            )
            for _ in range(multiplier)
        )
        self.bn = nn.BatchNorm2d(self.out_channels)
        self.se = SqueezeExcite(self.out_channels, se_reduction, se_weights) if se else None
        self.act = BPReLU(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.beta(x)
        v = (
            torch.cat([conv(u) for conv in self.dw], dim=1)
            if self.multiplier > 1
            else self.dw[0](u)
        )
        v = self.bn(v)
        if self.se is not None:
            v = self.se(v)
        shortcut = x
        if self.stride != (1, 1):
            shortcut = F.avg_pool2d(
                x,
                kernel_size=self.stride,
                stride=self.stride,
                ceil_mode=True,
                count_include_pad=False,
            )
        if self.multiplier > 1:
            shortcut = shortcut.repeat(1, self.multiplier, 1, 1)
        return self.act(v + shortcut)


class BHalf(nn.Module):
    """B half: z = sign(y + gamma); t = BN(alpha * binconv(z)); out = BPReLU(t + y)."""

    def __init__(self, channels: int, kernel_size: int, padding: str = "zero"):
        super().__init__()
        self.channels = channels
        self.gamma = LearnableBias(channels)
        self.conv = BinaryConv2d(channels, channels, kernel_size, padding)
        self.bn = nn.BatchNorm2d(channels)
        self.act = BPReLU(channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = binary_sign(self.gamma(y))
        t = self.bn(self.conv(z))
        return self.act(t + y)


class Stage(nn.Module):
    """One DS half followed by one B half."""

    def __init__(
        self,
        in_channels: int,
        stride: Sequence[int],
        multiplier: int,
        kernel_size: int,
        padding: str = "zero",
        se: bool = False,
        se_reduction: int = 8,
        se_weights: str = "fp32",
    ):
        super().__init__()
        self.ds = DSHalf(
            in_channels,
            stride,
            multiplier,
            se=se,
            se_reduction=se_reduction,
            se_weights=se_weights,
        )
        self.b = BHalf(self.ds.out_channels, kernel_size, padding)
        self.out_channels = self.ds.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.ds(x))


class Block(nn.Module):
    """A block of the zoo's tables (TypeN, TypeD, ...): a sequence of stages."""

    def __init__(self, kind: str, stages: Sequence[Stage]):
        super().__init__()
        self.kind = kind
        self.stages = nn.ModuleList(stages)
        self.out_channels = stages[-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
