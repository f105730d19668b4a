"""Quantization-aware training for the engine's INT8 depthwise convs and INT8 / bitplane8 FC.

The forward of each module here is the engine's integer arithmetic (docs/converter.md,
"Depthwise INT8" and "FC encodings"), not an approximation of it:

Depthwise 3x3 (`FakeQuantDepthwiseConv2d`), per output channel o and input u = x + pre_bias:

    weight_scale[o] = f32(max|w[o]| / 127)                      (in float64, as the converter)
    q[o]            = clamp(rint(w[o] / weight_scale[o]), -127, 127)   (float64 division)
    qu              = clamp(rint(u / s), -127, 127)             (f32 division, half to even)
    acc             = sum over the 9 taps of qu * q             (exact: |acc| <= 9*127*127 < 2^24)
    out             = f32(acc) * f32(s * weight_scale[o])       (one f32 multiply)

which is what the engine computes before its `* scale + bias` epilogue (the BN after the conv,
folded into it by the converter). The conv of the integer tensors runs in float32 with autocast
off: every product and partial sum is an integer below 2^24, so it is exact in any order.

FC (`FakeQuantLinear`), per output row o, on the float input x (the engine's FC does not
quantize its input):

    int8:       weight_scale[o] = f32(max|w[o]| / 127),  w_int = clamp(rint(w / weight_scale), ±127)
    bitplane8:  weight_scale[o] = f32(max|w[o]| / 255),
                B = clamp(rint((w / weight_scale + 255) / 2), 0, 255),  w_int = 2B - 255
    out[o]      = weight_scale[o] * f32(sum_c x[c] * w_int[o][c]) + bias[o]

with the dot in float64 rounded to f32 once: the engine's reference kernel (fc_reference.cc) to
the bit; the engine's SIMD kernels sum in f32 and stay within fc.h's 1e-5 bound of it.

Gradients are straight-through: rint passes the gradient where the value is inside the clamp
(zero outside), the weight codes pass w's gradient scaled by 1 / weight_scale (as if q = w /
weight_scale). The per-tensor input scale s (`InputQuantizer`) is, by `mode`:

* "learned": a parameter trained with LSQ's gradient (Esser et al. 2020: the clamp and round
  give d(s*qu)/ds = qu - u/s inside the range, ±127 outside; its gradient scaled by
  1/sqrt(127 * elements per image)); started from the first batch's max|u| / 127;
* "calibrated": max|u| / 127 over calibration images, as the converter's calibrated mode
  computes it (`calibrate`), then fixed;
* "running-max": max|u| / 127 with max|u| a running average (momentum 0.1, as BN's statistics)
  of each training batch's max|u|, the first batch's max to start.

    >>> from weights_tools.fake_quant import quantize_model, calibrate
    >>> quantize_model(model, dw=True, fc="int8", input_scale="learned")
    >>> calibrate(model, batches)          # optional: start s at the converter's calibration
    >>> ... train ...
    >>> to_qbw(model, "m.qbw", depthwise="int8", fc="int8")   # the trained scales, see convert.py

For conversion, `dequantized_copy(model)` gives the plain model the exporter sees (depthwise and
FC weights replaced by weight_scale * q, so the converter's own per-row quantization gives back
exactly q: each value is an integer multiple of the scale, far from a rounding midpoint) and the
trained input scale of each depthwise conv by module path, which the converter stores instead of
calibrating (`convert.onnx_to_qbw(..., trained_input_scales=...)`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "INPUT_SCALE_MODES",
    "FC_MODES",
    "InputQuantizer",
    "FakeQuantDepthwiseConv2d",
    "FakeQuantLinear",
    "quantize_model",
    "calibrate",
    "dequantized_copy",
    "int8_config",
    "weight_scale",
    "weight_codes",
    "is_depthwise3x3",
]

INPUT_SCALE_MODES = ("learned", "calibrated", "running-max")
FC_MODES = ("int8", "bitplane8")
LEVELS = {"int8": 127, "bitplane8": 255}
QMAX = 127  # the depthwise input and weight clamp: [-127, 127]


# ---------------------------------------------------------------------------------------------
# The converter's per-row weight quantization, in torch


def weight_scale(w: torch.Tensor, levels: int) -> torch.Tensor:
    """Per output row (dim 0) f32(max|w| / levels), computed in float64 as the converter's
    `_row_scale` does (0 for a row of zeros)."""
    amax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1).double()
    return (amax / levels).float()


def weight_codes(w: torch.Tensor, scale: torch.Tensor, encoding: str) -> torch.Tensor:
    """The integer weights (float64 tensor of integers) the converter stores for `w`: int8's q in
    [-127, 127], or bitplane8's 2B - 255. The division is in float64, as `convert.fc_int8`."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).double().reshape(shape)
    t = w.detach().double() / safe
    if encoding == "int8":
        return torch.clamp(torch.round(t), -QMAX, QMAX)
    if encoding == "bitplane8":
        return 2 * torch.clamp(torch.round((t + 255) / 2), 0, 255) - 255
    raise ValueError(f"unknown weight encoding {encoding!r}; known: {', '.join(FC_MODES)}")


class _WeightCodesSTE(torch.autograd.Function):
    """Forward: the integer codes (exact, as float32 or float64); backward: grad / scale."""

    @staticmethod
    def forward(ctx, w, scale, encoding: str, dtype: torch.dtype):  # type: ignore[override]
        ctx.save_for_backward(scale)
        return weight_codes(w, scale, encoding).to(dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        shape = (-1,) + (1,) * (grad.dim() - 1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(shape)
        return (grad / safe.to(grad.dtype)).to(torch.float32), None, None, None


class _RoundClampSTE(torch.autograd.Function):
    """clamp(rint(t), -127, 127) (torch.round is half to even); gradient passed where
    |t| <= 127, zero where the clamp holds the value."""

    @staticmethod
    def forward(ctx, t):  # type: ignore[override]
        inside = t.abs() <= QMAX
        ctx.save_for_backward(inside)
        return torch.clamp(torch.round(t), -QMAX, QMAX)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype)


def _global_max(t: torch.Tensor) -> torch.Tensor:
    """max over the processes of a torchrun job (every rank runs the same forwards, so the
    collectives pair up); `t` itself in a single process. Keeps the ranks' scales equal: DDP
    broadcasts parameters only once, before the first batch sets them."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


class _GradScale(torch.autograd.Function):
    """Identity forward (the same values, bit for bit); gradient times `factor`."""

    @staticmethod
    def forward(ctx, x, factor: float):  # type: ignore[override]
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * ctx.factor, None


# ---------------------------------------------------------------------------------------------
# Modules


class InputQuantizer(nn.Module):
    """The per-tensor input scale s of one engine depthwise op, and the quantization
    qu = clamp(rint(u / s), -127, 127). One quantizer is shared by the k depthwise convs that read
    the same input (a DS half with multiplier k), as the engine's op has one input scale.

    State (in the state_dict, so checkpoints and resume carry it): `scale` (a parameter, trained
    only in "learned" mode), `amax` (the running or calibrated max|u|) and `initialized`."""

    def __init__(self, mode: str = "learned", momentum: float = 0.1):
        super().__init__()
        if mode not in INPUT_SCALE_MODES:
            raise ValueError(
                f"input scale mode must be one of {', '.join(INPUT_SCALE_MODES)}, got {mode!r}"
            )
        self.mode = mode
        self.momentum = momentum
        self.scale = nn.Parameter(torch.ones(()), requires_grad=mode == "learned")
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.observing = False  # calibrate(): record max|u|, run the FP32 conv

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    @torch.no_grad()
    def observe(self, u: torch.Tensor) -> None:
        self.amax.copy_(torch.maximum(self.amax, u.detach().abs().max().float()))

    @torch.no_grad()
    def set_from_amax(self, amax: Optional[torch.Tensor] = None) -> None:
        """s = f32(amax) / f32(127) in f32 (the converter's `calibrate_depthwise`); an input that
        was 0 everywhere gets s = 1 (the engine's dynamic rule for an all-zero input)."""
        if amax is not None:
            self.amax.copy_(amax)
        a = self.amax.float()
        s = a / torch.tensor(127.0, dtype=torch.float32) if float(a) > 0 else torch.ones(())
        self.scale.copy_(s)
        self.initialized.fill_(True)

    def current_scale(self, u: torch.Tensor) -> torch.Tensor:
        """s for this forward, updating the running max in training ("running-max") and starting
        an uninitialised quantizer from this batch's max|u|."""
        if not bool(self.initialized):
            self.set_from_amax(_global_max(u.detach().abs().max().float()))
        elif self.training and self.mode == "running-max":
            with torch.no_grad():
                batch = _global_max(u.detach().abs().max().float())
                self.amax.mul_(1 - self.momentum).add_(self.momentum * batch)
            self.set_from_amax()
        s = self.scale
        if self.mode == "learned" and self.training and torch.is_grad_enabled():
            s = _GradScale.apply(s, 1.0 / math.sqrt(QMAX * max(1, u[0].numel())))
        # A learned scale that went to 0 or below would divide by 0: keep it positive (exact
        # for any s above the bound).
        return torch.clamp(s, min=1e-12)

    def forward(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(qu: float32 tensor of integers in [-127, 127], s: f32 scalar tensor)."""
        s = self.current_scale(u)
        return _RoundClampSTE.apply(u / s), s


class FakeQuantDepthwiseConv2d(nn.Module):
    """A depthwise 3x3 conv (groups = channels, padding 1, no bias) computed as the engine's
    INT8 DWCONV3X3 up to its epilogue (module doc). Keeps the conv's `weight` parameter (same
    state_dict name) and reads its input scale from `input_quant` (shared by sibling convs)."""

    def __init__(self, conv: nn.Conv2d, input_quant: InputQuantizer):
        super().__init__()
        if not is_depthwise3x3(conv):
            raise ValueError(f"not a 3x3 depthwise conv with padding 1 and no bias: {conv}")
        self.channels = conv.in_channels
        self.stride = conv.stride
        self.weight = conv.weight
        self.input_quant = input_quant

    def extra_repr(self) -> str:
        return f"{self.channels}, stride={tuple(self.stride)}"

    def weight_scale(self) -> torch.Tensor:
        return weight_scale(self.weight, QMAX)

    def weight_codes(self) -> torch.Tensor:
        return weight_codes(self.weight, self.weight_scale(), "int8")

    def dequantized_weight(self) -> torch.Tensor:
        return (self.weight_codes() * self.weight_scale().double().view(-1, 1, 1, 1)).float()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # f32 throughout: under fp16 autocast the integer sums (up to 145161) would not fit.
        with torch.autocast(u.device.type, enabled=False):
            u = u.float()
            if self.input_quant.observing:
                self.input_quant.observe(u)
                return F.conv2d(u, self.weight, None, self.stride, 1, 1, self.channels)
            qu, s = self.input_quant(u)
            ws = self.weight_scale().to(u.device)
            q = _WeightCodesSTE.apply(self.weight, ws, "int8", torch.float32)
            acc = F.conv2d(qu, q, None, self.stride, 1, 1, self.channels)
            combined = s * ws  # f32(s * weight_scale[o]): the engine's one combined factor
            return acc * combined.view(1, -1, 1, 1)


class FakeQuantLinear(nn.Module):
    """nn.Linear computed as the engine's INT8 or bitplane8 FC (module doc). Same `weight` and
    `bias` state_dict names as the Linear it replaces."""

    def __init__(self, linear: nn.Linear, encoding: str = "int8"):
        super().__init__()
        if encoding not in FC_MODES:
            raise ValueError(f"FC encoding must be one of {', '.join(FC_MODES)}, got {encoding!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.encoding = encoding
        self.weight = linear.weight
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = linear.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, encoding={self.encoding!r}"

    def weight_scale(self) -> torch.Tensor:
        return weight_scale(self.weight, LEVELS[self.encoding])

    def weight_codes(self) -> torch.Tensor:
        return weight_codes(self.weight, self.weight_scale(), self.encoding)

    def dequantized_weight(self) -> torch.Tensor:
        return (self.weight_codes() * self.weight_scale().double().view(-1, 1)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            ws = self.weight_scale().to(x.device)
            w_int = _WeightCodesSTE.apply(self.weight, ws, self.encoding, torch.float64)
            # float64 dot of exact products, rounded to f32 once (fc_reference.cc), then the
            # scale and the bias in f32, one rounding each
            dot = (x.double() @ w_int.t()).float()
            out = ws * dot
            return out if self.bias is None else out + self.bias.float()


# ---------------------------------------------------------------------------------------------
# Whole models


def is_depthwise3x3(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.groups == m.in_channels == m.out_channels
        and m.kernel_size == (3, 3)
        and m.padding == (1, 1)
        and m.dilation == (1, 1)
        and m.bias is None
        and m.padding_mode == "zeros"
    )


def _set_child(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new) if not name.isdigit() else parent.__setitem__(int(name), new)


def quantize_model(
    model: nn.Module,
    dw: bool = True,
    fc: Optional[str] = None,
    input_scale: str = "learned",
) -> nn.Module:
    """Switch `model` (in place) to fake-quant: with `dw`, every 3x3 depthwise conv (k convs of
    one input, as the zoo's DS halves hold in a ModuleList `dw`, share one input scale); with
    `fc` ("int8" or "bitplane8"), every nn.Linear. Weights and their state_dict names stay; the
    new state is each depthwise conv's `input_quant.{scale,amax,initialized}`. The settings are
    recorded in `model.int8_config` (what `int8_config` returns). Returns the model."""
    if fc is not None and fc not in FC_MODES:
        raise ValueError(f"fc must be None or one of {', '.join(FC_MODES)}, got {fc!r}")
    if input_scale not in INPUT_SCALE_MODES:
        raise ValueError(
            f"input_scale must be one of {', '.join(INPUT_SCALE_MODES)}, got {input_scale!r}"
        )
    if dw:
        shared: Dict[str, InputQuantizer] = {}
        for path, m in list(model.named_modules()):
            if not is_depthwise3x3(m):
                continue
            parent, _, index = path.rpartition(".")
            # sibling convs in a ModuleList named `dw` read the same input (the DS half's u)
            key = parent if parent.endswith("dw") and index.isdigit() else path
            quant = shared.setdefault(key, InputQuantizer(input_scale))
            _set_child(model, path, FakeQuantDepthwiseConv2d(m, quant))
    if fc is not None:
        for path, m in list(model.named_modules()):
            if isinstance(m, nn.Linear):
                _set_child(model, path, FakeQuantLinear(m, fc))
    model.int8_config = {"dw": bool(dw), "fc": fc, "input_scale": input_scale}  # type: ignore[assignment]
    return model


def int8_config(model: nn.Module) -> Optional[Dict[str, Any]]:
    """The `quantize_model` settings of `model`, or None for a model without fake-quant."""
    cfg = getattr(model, "int8_config", None)
    if cfg is not None:
        return dict(cfg)
    if any(isinstance(m, (FakeQuantDepthwiseConv2d, FakeQuantLinear)) for m in model.modules()):
        fcs = {m.encoding for m in model.modules() if isinstance(m, FakeQuantLinear)}
        return {
            "dw": any(isinstance(m, FakeQuantDepthwiseConv2d) for m in model.modules()),
            "fc": fcs.pop() if len(fcs) == 1 else None,
            "input_scale": None,
        }
    return None


def input_quantizers(model: nn.Module) -> List[InputQuantizer]:
    seen: Dict[int, InputQuantizer] = {}
    for m in model.modules():
        if isinstance(m, InputQuantizer):
            seen.setdefault(id(m), m)
    return list(seen.values())


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every depthwise input scale to max|u| / 127 over `batches` (float NCHW tensors,
    preprocessed), with every depthwise conv in FP32 while observing: the converter's
    calibrated mode to the bit (the FC's quantization does not change what a conv sees before
    it). Runs in eval mode (BN statistics untouched) and restores the mode. Returns the number
    of images seen."""
    quants = input_quantizers(model)
    was_training = model.training
    model.eval()
    for q in quants:
        q.amax.zero_()
        q.observing = True
    n = 0
    try:
        device = next(model.parameters()).device
        for x in batches:
            model(x.to(device))
            n += int(x.shape[0])
    finally:
        for q in quants:
            q.observing = False
        model.train(was_training)
    if n == 0:
        raise ValueError("calibrate: no calibration images")
    for q in quants:
        q.set_from_amax(_global_max(q.amax))
    return n


@torch.no_grad()
def dequantized_copy(model: nn.Module) -> Tuple[nn.Module, Dict[str, float]]:
    """(a deep copy of `model` with plain modules in place of the fake-quant ones: depthwise
    nn.Conv2d and nn.Linear holding weight_scale * q, what the ONNX exporter sees; {module path
    of each depthwise conv: its trained input scale s}). The converter's own quantization of
    the dequantized weights gives back exactly q (module doc)."""
    plain = copy.deepcopy(model)
    scales: Dict[str, float] = {}
    for path, m in list(plain.named_modules()):
        if isinstance(m, FakeQuantDepthwiseConv2d):
            if not bool(m.input_quant.initialized):
                raise ValueError(
                    f"{path}: its input scale was never set (run the model on data, or "
                    "calibrate it, before converting)"
                )
            conv = nn.Conv2d(
                m.channels, m.channels, 3, m.stride, 1, groups=m.channels, bias=False
            ).to(m.weight.device)
            conv.weight.copy_(m.dequantized_weight())
            scales[path] = float(torch.clamp(m.input_quant.scale.detach(), min=1e-12))
            _set_child(plain, path, conv)
        elif isinstance(m, FakeQuantLinear):
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            lin = lin.to(m.weight.device)
            lin.weight.copy_(m.dequantized_weight())
            if m.bias is not None:
                lin.bias.copy_(m.bias)
            _set_child(plain, path, lin)
    if hasattr(plain, "int8_config"):
        del plain.int8_config
    return plain, scales
