"""A numpy interpreter of a .qbw graph: the oracle the C++ engine is tested against.

Written for clarity, not speed: every op is the formula of docs/format.md, run on a whole batch
(values are NHWC arrays with the batch first; bits values are u64 words [N, H, W, words(C)],
exactly what the engine holds).

Arithmetic, per op:

- Exact by construction (the engine must match bit for bit): BITPACK (`!(x >= t)` on f32),
  the integer dot of BCONV2D and BFC, and the int32 accumulator of INT8 DWCONV3X3 with its f32
  quantization of the input (`nearbyint` half to even = `np.rint`, true f32 division), and
  the selections MAXPOOL and CLIP (NaN payloads and signed zeros included), and AVGPOOL2D,
  whose f32 sum order is part of the format (the same adds and the one division), and RESIZE
  (its coordinates and the products and sums of its lerps, in f32 in the format's order; a
  1 x 1 input is copied).
- f32, one IEEE operation at a time as documented (the engine may contract a multiply and an
  add into an FMA, so compare with a tolerance of a few ulp): the epilogue `dot*scale + bias` of
  BCONV2D, BFC and of INT8 DWCONV3X3, AFFINE, PRELU, RELU, ADD, MUL_CHANNEL, the pre_bias add.
- Float64 inside the op, rounded to f32 once at its output (the engine sums in f32 in its own
  order, so compare with a relative tolerance): CONV2D, FP32 DWCONV3X3, AVGPOOL,
  GLOBAL_AVGPOOL, SIGMOID, FC (every encoding: the dot in float64, then its weight_scale and
  bias in f32, as the engine does, so inf and NaN land where the engine's do), SOFTMAX (the
  engine's formula and order, with its exps and their sum in its own precision: see
  `_softmax`).

    >>> logits = run_reference(read_qbw("model.qbw"), x_nchw)   # float32 [N, 3, H, W] -> [N, O]
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from .qbw import (
    FCEncoding,
    Graph,
    Op,
    OpType,
    avgpool2d_out_size,
    full_attrs,
    pack_threshold,
    unpack_signs,
)

__all__ = [
    "run_reference",
    "evaluate",
    "quantize_dw_input",
    "NearTies",
    "near_tie_images",
    "Observer",
]

f32 = np.float32

# observer(op_index, op, input arrays) is called before each op runs (e.g. for calibration).
Observer = Callable[[int, Op, List[np.ndarray]], None]


def run_reference(
    graph: Graph, x_nchw: np.ndarray, observer: Optional[Observer] = None
) -> np.ndarray:
    """Run the graph on a float32 NCHW batch; returns the logits [N, O] (float32), or an
    N x C x H x W array when the graph's output is not 1 x 1 (as the engine does)."""
    values = evaluate(graph, x_nchw, observer=observer)
    out = values[graph.output_value]
    if out.shape[1:3] == (1, 1):
        return out.reshape(out.shape[0], -1)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def evaluate(
    graph: Graph, x_nchw: np.ndarray, observer: Optional[Observer] = None, keep_all: bool = False
) -> Dict[int, np.ndarray]:
    """Run the graph; returns {value index: array} for the output (and every value if
    `keep_all`). f32 values are [N, H, W, C] float32, bits values [N, H, W, words] uint64."""
    x = np.asarray(x_nchw)
    if x.dtype != np.float32 or x.ndim != 4:
        raise ValueError(f"input must be float32 NCHW, got {x.dtype} with shape {x.shape}")
    inp = graph.values[graph.input_value]
    if x.shape[1:] != (inp.channels, inp.height, inp.width):
        raise ValueError(
            f"input shape {x.shape[1:]} != the graph's (C, H, W) "
            f"{(inp.channels, inp.height, inp.width)}"
        )
    last_use = {}
    for i, op in enumerate(graph.ops):
        for v in op.inputs:
            last_use[v] = i
    env: Dict[int, np.ndarray] = {graph.input_value: np.ascontiguousarray(x.transpose(0, 2, 3, 1))}
    for i, op in enumerate(graph.ops):
        args = [env[v] for v in op.inputs]
        if observer is not None:
            observer(i, op, args)
        out = _OPS[op.type](graph, op, args)
        want = graph.values[op.outputs[0]]
        assert out.shape[1:3] == (want.height, want.width), (op.name, out.shape, want.shape)
        env[op.outputs[0]] = out
        if not keep_all:
            for v in set(op.inputs):
                if last_use.get(v) == i and v != graph.output_value:
                    del env[v]
    return env if keep_all else {graph.output_value: env[graph.output_value]}


class NearTies:
    """An observer that flags the images on which another implementation may legitimately take
    a different rounding decision: a BITPACK input within `sign_rel` * max|x - t| of its
    threshold (a sign within rounding distance of 0, SPEC §6), or an INT8 depthwise input whose
    u / s lies within `code_abs` of a rounding boundary k + 1/2. Such a decision can flip between
    two correct implementations, and the flip then spreads through the network; the other images
    must agree closely. `images` is a bool [N] after the run.

        ties = NearTies(graph)
        logits = run_reference(graph, x, observer=ties)
        keep = ~ties.images
    """

    def __init__(self, graph: Graph, sign_rel: float = 1e-6, code_abs: float = 1e-5):
        self.graph, self.sign_rel, self.code_abs = graph, sign_rel, code_abs
        self.images: Optional[np.ndarray] = None

    def __call__(self, index: int, op: Op, args: List[np.ndarray]) -> None:
        n = args[0].shape[0]
        if self.images is None:
            self.images = np.zeros(n, dtype=bool)
        if op.type == OpType.BITPACK:
            d = np.abs(args[0].astype(np.float64) - _tensor(self.graph, op, 0)).reshape(n, -1)
            scale = d.max(axis=1, keepdims=True)
            self.images |= (d <= self.sign_rel * scale).any(axis=1)
        elif op.type == OpType.DWCONV3X3 and _tensor(self.graph, op, 1).dtype == np.int8:
            pre_bias = _tensor(self.graph, op, 0)
            u = args[0] if pre_bias is None else (args[0] + pre_bias).astype(f32)
            s, _ = quantize_dw_input(u, float(_tensor(self.graph, op, 5)[0]))
            r = np.abs((u / s).astype(np.float64)).reshape(n, -1)
            near = np.abs(r - np.floor(r) - 0.5) <= self.code_abs
            self.images |= (near & (r < 127.5)).any(axis=1)


def near_tie_images(
    graph: Graph, x_nchw: np.ndarray, sign_rel: float = 1e-6, code_abs: float = 1e-5
):
    """(logits, bool [N]): the reference's logits and the images with a near-tie decision (see
    `NearTies`)."""
    ties = NearTies(graph, sign_rel, code_abs)
    logits = run_reference(graph, x_nchw, observer=ties)
    return logits, ties.images


# ---------------------------------------------------------------------------------------------
# helpers


def _tensor(graph: Graph, op: Op, i: int) -> Optional[np.ndarray]:
    return graph.tensor(op, i)


def _taps(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int):
    """Yield (dy, dx, window) for each kernel tap of a padded NHWC input: window[n, i, j, c] =
    xp[n, i*sh + dy, j*sw + dx, c]."""
    for dy in range(kh):
        for dx in range(kw):
            yield (
                dy,
                dx,
                xp[:, dy : dy + sh * (ho - 1) + 1 : sh, dx : dx + sw * (wo - 1) + 1 : sw, :],
            )


def _matmul_taps(win: np.ndarray, w_tap: np.ndarray) -> np.ndarray:
    """win [N, Ho, Wo, Ci] @ w_tap[Co, Ci].T, through BLAS (both operands made contiguous)."""
    n, ho, wo, ci = win.shape
    flat = np.ascontiguousarray(win).reshape(-1, ci)
    return (flat @ np.ascontiguousarray(w_tap.T)).reshape(n, ho, wo, -1)


def _pad(x: np.ndarray, top: int, left: int, bottom: int, right: int, value=0) -> np.ndarray:
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


# ---------------------------------------------------------------------------------------------
# ops


def _conv2d(graph: Graph, op: Op, args):
    (x,) = args
    kh, kw, sh, sw, pt, pl, pb, pr, act = op.attrs
    w = _tensor(graph, op, 0).astype(np.float64)  # [Co, kh, kw, Ci]
    b = _tensor(graph, op, 1).astype(np.float64)
    n, h, wd, _ = x.shape
    ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    xp = _pad(x.astype(np.float64), pt, pl, pb, pr)
    acc = np.zeros((n, ho, wo, w.shape[0]))
    for dy, dx, win in _taps(xp, kh, kw, sh, sw, ho, wo):
        acc += _matmul_taps(win, w[:, dy, dx, :])
    acc += b
    if act == 1:
        acc = np.maximum(acc, 0.0)
    return acc.astype(f32)


def _dw_geometry(x: np.ndarray, op: Op):
    sh, sw, k, d = full_attrs(op)
    _, h, w, _ = x.shape
    return sh, sw, k, d, -(-h // sh), -(-w // sw)


def _dwconv3x3(graph: Graph, op: Op, args):
    """u = x + pre_bias (f32); zero padding = dilation d (1 unless given), taps d apart; output
    channel j*C + c = conv j of channel c."""
    (x,) = args
    sh, sw, k, d, ho, wo = _dw_geometry(x, op)
    pre_bias = _tensor(graph, op, 0)
    u = x if pre_bias is None else (x + pre_bias).astype(f32)
    weight = _tensor(graph, op, 1)  # [k*C, 9], tap index dy*3 + dx
    scale, bias = _tensor(graph, op, 3), _tensor(graph, op, 4)
    if weight.dtype == np.int8:
        return _dwconv3x3_int8(graph, op, u, weight, scale, bias, sh, sw, k, ho, wo)
    up = _pad(np.tile(u, (1, 1, 1, k)).astype(np.float64), d, d, d, d)
    acc = np.zeros(up.shape[:1] + (ho, wo, up.shape[3]))
    if d == 1:
        taps = _taps(up, 3, 3, sh, sw, ho, wo)
    else:  # stride 1 (the format's rule): tap (dy, dx) is the window at (dy*d, dx*d)
        taps = (
            (dy, dx, up[:, dy * d : dy * d + ho, dx * d : dx * d + wo, :])
            for dy in range(3)
            for dx in range(3)
        )
    for dy, dx, win in taps:
        acc += win * weight[:, dy * 3 + dx].astype(np.float64)
    return (acc * scale.astype(np.float64) + bias.astype(np.float64)).astype(f32)


def quantize_dw_input(u: np.ndarray, input_scale: float):
    """The INT8 depthwise input quantization: u (f32 [N, H, W, C], already x + pre_bias) ->
    (s [N, 1, 1, 1] f32, qu int32). s = input_scale when > 0, else per image max|u| / 127 (1 if
    u is all zero); qu = clamp(nearbyint(u / s), -127, 127), f32 division, half to even."""
    n = u.shape[0]
    if input_scale > 0:
        s = np.full((n, 1, 1, 1), input_scale, dtype=f32)
    else:
        amax = np.abs(u).reshape(n, -1).max(axis=1).astype(f32)
        s = np.where(amax > 0, amax / f32(127), f32(1)).astype(f32).reshape(n, 1, 1, 1)
    qu = np.clip(np.rint(u / s), -127, 127).astype(np.int32)
    return s, qu


def _dwconv3x3_int8(graph, op, u, q_weight, scale, bias, sh, sw, k, ho, wo):
    weight_scale = _tensor(graph, op, 2)
    s, qu = quantize_dw_input(u, float(_tensor(graph, op, 5)[0]))
    qp = _pad(np.tile(qu, (1, 1, 1, k)), 1, 1, 1, 1)
    acc = np.zeros(qp.shape[:1] + (ho, wo, qp.shape[3]), dtype=np.int32)
    for dy, dx, win in _taps(qp, 3, 3, sh, sw, ho, wo):
        acc += win * q_weight[:, dy * 3 + dx].astype(np.int32)
    combined = (s * weight_scale).astype(f32)  # s * weight_scale[o], f32
    return ((acc.astype(f32) * combined) * scale + bias).astype(f32)


def _bitpack(graph: Graph, op: Op, args):
    (x,) = args
    return pack_threshold(x, _tensor(graph, op, 0))


def _bconv2d(graph: Graph, op: Op, args):
    """dot over ±1 activations and weights (exact integers); for k = 3 a tap outside the image
    is 0 (zero padding) or +1 (one padding); out = f32(dot) * scale + bias in f32."""
    (bits,) = args
    k, pad_mode = op.attrs
    x_value = graph.values[op.inputs[0]]
    # ±1 as float32: every partial sum is an integer of magnitude <= k*k*Ci < 2^24, which
    # float32 holds exactly, so the BLAS matmul gives the exact dot whatever its summation order.
    assert k * k * x_value.channels < 2**24
    a = unpack_signs(bits, x_value.channels, dtype=np.float32)  # [N, H, W, Ci]
    w_bits = _tensor(graph, op, 0)  # [Co, k, k, words]
    w = unpack_signs(w_bits, x_value.channels, dtype=np.float32)  # [Co, k, k, Ci]
    scale, bias = _tensor(graph, op, 1), _tensor(graph, op, 2)
    n, h, wd, _ = a.shape
    p = (k - 1) // 2
    ap = _pad(a, p, p, p, p, value=1 if pad_mode == 1 else 0)
    dot = np.zeros((n, h, wd, w.shape[0]), dtype=f32)
    for dy, dx, win in _taps(ap, k, k, 1, 1, h, wd):
        dot += _matmul_taps(win, w[:, dy, dx, :])
    return (dot * scale + bias).astype(f32)


def _bconv2d_general(graph: Graph, op: Op, args):
    """BCONV2D with any kernel, stride and pads: a tap in the padding is 0 (zero padding) or +1
    (one padding); PyTorch's conv output size; out = f32(dot) * scale + bias in f32."""
    (bits,) = args
    kh, kw, sh, sw, pt, pl, pb, pr, pad_mode = op.attrs
    channels = graph.values[op.inputs[0]].channels
    # Exact in float32 (as in _bconv2d): every partial sum is an integer below 2^24.
    assert kh * kw * channels < 2**24
    a = unpack_signs(bits, channels, dtype=np.float32)  # [N, H, W, Ci]
    w = unpack_signs(_tensor(graph, op, 0), channels, dtype=np.float32)  # [Co, kh, kw, Ci]
    scale, bias = _tensor(graph, op, 1), _tensor(graph, op, 2)
    n, h, wd, _ = a.shape
    ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    ap = _pad(a, pt, pl, pb, pr, value=1 if pad_mode == 1 else 0)
    dot = np.zeros((n, ho, wo, w.shape[0]), dtype=f32)
    for dy, dx, win in _taps(ap, kh, kw, sh, sw, ho, wo):
        dot += _matmul_taps(win, w[:, dy, dx, :])
    return (dot * scale + bias).astype(f32)


def _affine(graph: Graph, op: Op, args):
    (x,) = args
    return (x * _tensor(graph, op, 0) + _tensor(graph, op, 1)).astype(f32)


def _prelu(graph: Graph, op: Op, args):
    (x,) = args
    return np.where(x >= 0, x, x * _tensor(graph, op, 0)).astype(f32)


def _relu(graph: Graph, op: Op, args):
    (x,) = args
    return np.where(x > 0, x, f32(0)).astype(f32)


def _sigmoid(graph: Graph, op: Op, args):
    (x,) = args
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(f32)


def _add(graph: Graph, op: Op, args):
    a, b = args
    return (a + b).astype(f32)


def _mul_channel(graph: Graph, op: Op, args):
    x, s = args
    return (x * s).astype(f32)  # s is [N, 1, 1, C]


def _avgpool(graph: Graph, op: Op, args):
    """No padding, ceil mode; a window averages the pixels it covers (edge windows may be cut)."""
    (x,) = args
    kh, kw, sh, sw = op.attrs
    n, h, w, c = x.shape
    ho, wo = -(-(h - kh) // sh) + 1, -(-(w - kw) // sw) + 1
    out = np.empty((n, ho, wo, c), dtype=f32)
    x64 = x.astype(np.float64)
    for i in range(ho):
        r0, r1 = i * sh, min(i * sh + kh, h)
        for j in range(wo):
            c0, c1 = j * sw, min(j * sw + kw, w)
            out[:, i, j, :] = x64[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return out


def _global_avgpool(graph: Graph, op: Op, args):
    (x,) = args
    return x.astype(np.float64).mean(axis=(1, 2), keepdims=True).astype(f32)


def _concat(graph: Graph, op: Op, args):
    return np.concatenate(args, axis=-1)


def _fc(graph: Graph, op: Op, args):
    (x,) = args
    (encoding,) = op.attrs
    n = x.shape[0]
    v = x.reshape(n, -1).astype(np.float64)  # [N, H*W*C]: NHWC order, the engine's
    weight = _tensor(graph, op, 0)
    bias = _tensor(graph, op, 2)
    # The dot in double (its products are exact there, so no partial sum overflows), rounded to
    # f32 once; then weight_scale and the bias in f32, one rounding each: the engine's order, so
    # an output is inf or NaN exactly where the engine's is (docs/format.md, "Float semantics").
    with np.errstate(over="ignore", invalid="ignore"):
        if encoding == FCEncoding.FP32:
            return ((v @ weight.astype(np.float64).T).astype(f32) + bias).reshape(n, 1, 1, -1)
        if encoding == FCEncoding.INT8:
            dot = v @ weight.astype(np.float64).T
        elif encoding == FCEncoding.BITPLANE8:
            planes = unpack_signs(weight, v.shape[1], dtype=np.float64)  # [8, O, C] of ±1
            # The integer weights 2B - 255 first, as the engine does: summing per-plane dots
            # would turn one inf input into inf - inf = NaN.
            w_int = sum((2.0**b) * planes[b] for b in range(8))
            dot = v @ w_int.T
        elif encoding == FCEncoding.BINARY:
            signs = unpack_signs(weight, v.shape[1], dtype=np.float64)  # [O, C] of ±1
            dot = v @ signs.T
        else:
            raise ValueError(f"unknown FC encoding {encoding}")
        out = _tensor(graph, op, 1) * dot.astype(f32) + bias
    return out.astype(f32).reshape(n, 1, 1, -1)


def _maxpool(graph: Graph, op: Op, args):
    """Floor mode over the padded input; padding is -inf so it never wins. NaN: a window with a
    NaN gives its first NaN in window order (rows, then columns), as the engine's kernels do."""
    (x,) = args
    kh, kw, sh, sw, pt, pl, pb, pr = op.attrs
    n, h, w, c = x.shape
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.empty((n, ho, wo, c), dtype=f32)
    for i in range(ho):
        r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + kh, h)
        for j in range(wo):
            c0, c1 = max(j * sw - pl, 0), min(j * sw - pl + kw, w)
            win = x[:, r0:r1, c0:c1, :].reshape(n, -1, c)  # pixels in row-major window order
            # argmax returns the first NaN if there is one, else the first maximum: exactly the
            # engine's rule, so the chosen pixel (payload, sign of zero) is the same bit for bit.
            pick = win.argmax(axis=1)[:, None, :]
            out[:, i, j, :] = np.take_along_axis(win, pick, axis=1)[:, 0]
    return out


def _clip(graph: Graph, op: Op, args):
    """x < lo ? lo : (x > hi ? hi : x): NaN compares false both times and passes through."""
    (x,) = args
    lo, hi = _tensor(graph, op, 0).astype(f32)
    return np.where(x < lo, lo, np.where(x > hi, hi, x)).astype(f32)


def _bfc(graph: Graph, op: Op, args):
    """Binary FC: the (H, W, C) bits read as one vector of H*W*C signs (NHWC order); dot over
    ±1 activations and weights (exact integers); out = f32(dot) * scale + bias in f32, the
    BCONV2D epilogue."""
    (bits,) = args  # [N, H, W, words(C)]
    n = bits.shape[0]
    c = graph.values[op.inputs[0]].channels
    a = unpack_signs(bits, c, dtype=np.float64).reshape(n, -1)  # [N, H*W*C] of ±1
    weight = _tensor(graph, op, 0)  # [O, H*W*words(C)]: H*W pixels of words(C) words
    w = unpack_signs(weight.reshape(weight.shape[0], -1, bits.shape[-1]), c, dtype=np.float64)
    w = w.reshape(weight.shape[0], -1)  # [O, H*W*C] of ±1
    # float64 holds every partial sum (|sum| <= H*W*C < 2^31) exactly, so the dot is exact.
    dot = (a @ w.T).astype(f32)
    scale, bias = _tensor(graph, op, 1), _tensor(graph, op, 2)
    return (dot * scale + bias).astype(f32).reshape(n, 1, 1, -1)


def _softmax(graph: Graph, op: Op, args):
    """SOFTMAX over the channels of each pixel, docs/format.md's formula in float64:
    m = max (NaN if any is NaN), z = x − m, s = Σ exp(z); exp(z) / s, or z − log(s) when
    `log` is 1. Rounded to f32 once, so it is the exact result to within one rounding: the
    engine (f32 exps, double sum) is within the tolerance docs/format.md states for SOFTMAX.
    NaN, +inf and rows of −inf only give NaN rows, as in the engine and PyTorch."""
    (x,) = args
    (log,) = op.attrs
    with np.errstate(invalid="ignore", over="ignore"):  # inf − inf, and f32 overflow to −inf
        z = x.astype(np.float64) - x.max(axis=-1, keepdims=True).astype(np.float64)
        e = np.exp(z)
        s = e.sum(axis=-1, keepdims=True)
        out = z - np.log(s) if log else e / s
        return out.astype(f32)


def _avgpool2d_divisors(size, pad_a, pad_b, kernel, stride, count_include_pad, out_size):
    """Per output index along one axis: AVGPOOL2D's divisor factor (docs/format.md)."""
    start = np.arange(out_size) * stride  # in padded coordinates
    if count_include_pad:
        return np.minimum(start + kernel, pad_a + size + pad_b) - start
    return np.minimum(start + kernel - pad_a, size) - np.maximum(start - pad_a, 0)


def _avgpool2d(graph: Graph, op: Op, args):
    """PyTorch's avg_pool2d (docs/format.md, AVGPOOL2D), bit for bit: the window sums are f32
    adds in the format's order (rows, then columns, from +0.0), then one f32 division. Summing
    a zero-padded input over the whole window in that order gives the same bits: padding adds
    +0.0, which leaves a sum that started at +0.0 unchanged."""
    (x,) = args
    kh, kw, sh, sw, pt, pl, pb, pr, ceil, include_pad = op.attrs
    n, h, w, c = x.shape
    ho = avgpool2d_out_size(h, pt, pb, kh, sh, ceil == 1)
    wo = avgpool2d_out_size(w, pl, pr, kw, sw, ceil == 1)
    assert ho is not None and wo is not None
    # zeros wide enough for every window, the ceil-mode ones past pad_bottom / pad_right too
    below = max(0, (ho - 1) * sh + kh - h - pt)
    right = max(0, (wo - 1) * sw + kw - w - pl)
    xp = np.zeros((n, pt + h + below, pl + w + right, c), dtype=f32)
    xp[:, pt : pt + h, pl : pl + w, :] = x
    acc = np.zeros((n, ho, wo, c), dtype=f32)
    for dy in range(kh):
        for dx in range(kw):
            acc += xp[:, dy : dy + (ho - 1) * sh + 1 : sh, dx : dx + (wo - 1) * sw + 1 : sw, :]
    rows = _avgpool2d_divisors(h, pt, pb, kh, sh, include_pad, ho)
    cols = _avgpool2d_divisors(w, pl, pr, kw, sw, include_pad, wo)
    divisor = (rows[:, None] * cols[None, :]).astype(f32)  # exact below 2^24
    return (acc / divisor[None, :, :, None]).astype(f32)


def _resize_axis(ratio, n: int, m: int, bilinear: bool, half_pixel: bool):
    """RESIZE along one axis of n input pixels to m (docs/format.md): per output index the
    input indices i0, i1, the weights l0, l1 (f32) and whether the pair collapsed (i1 == i0),
    each f32 operation rounded once as the engine's resize_axis (kernels/resize/resize.h)."""
    r = f32(ratio)
    o = np.arange(m, dtype=f32)
    last = n - 1
    if not bilinear:
        src = r * (o + f32(0.5)) if half_pixel else r * o
        i = np.minimum(np.floor(src), f32(last)).astype(np.int64)
        return i, i, np.ones(m, f32), np.zeros(m, f32), np.ones(m, bool)
    src = (r * (o + f32(0.5)) - f32(0.5)) if half_pixel else r * o
    src = np.where(src > 0, src, f32(0)).astype(f32)
    i0 = np.minimum(np.floor(src), f32(last)).astype(np.int64)
    i1 = np.minimum(i0 + 1, last)
    l1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    return i0, i1, (f32(1) - l1).astype(f32), l1, i1 == i0


def _resize(graph: Graph, op: Op, args):
    """RESIZE, bit for bit: columns first, a*l0 + b*l1 per axis in f32 (a alone where the pair
    collapses), as docs/format.md says."""
    (x,) = args
    oh, ow, mode, coords = op.attrs
    ratio = _tensor(graph, op, 0)
    _, h, w, _ = x.shape
    bilinear, half_pixel = mode == 1, coords == 1
    y0, y1, ly0, ly1, cy = _resize_axis(ratio[0], h, oh, bilinear, half_pixel)
    x0, x1, lx0, lx1, cx = _resize_axis(ratio[1], w, ow, bilinear, half_pixel)
    lx0, lx1, cx = lx0[None, None, :, None], lx1[None, None, :, None], cx[None, None, :, None]
    ly0, ly1, cy = ly0[None, :, None, None], ly1[None, :, None, None], cy[None, :, None, None]
    r0, r1 = x[:, y0], x[:, y1]
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.where(cx, r0[:, :, x0], r0[:, :, x0] * lx0 + r0[:, :, x1] * lx1)
        bot = np.where(cx, r1[:, :, x0], r1[:, :, x0] * lx0 + r1[:, :, x1] * lx1)
        out = np.where(cy, top, top * ly0 + bot * ly1)
    return out.astype(f32)


_OPS = {
    OpType.CONV2D: _conv2d,
    OpType.DWCONV3X3: _dwconv3x3,
    OpType.BITPACK: _bitpack,
    OpType.BCONV2D: _bconv2d,
    OpType.AFFINE: _affine,
    OpType.PRELU: _prelu,
    OpType.RELU: _relu,
    OpType.SIGMOID: _sigmoid,
    OpType.ADD: _add,
    OpType.MUL_CHANNEL: _mul_channel,
    OpType.AVGPOOL: _avgpool,
    OpType.GLOBAL_AVGPOOL: _global_avgpool,
    OpType.CONCAT: _concat,
    OpType.FC: _fc,
    OpType.MAXPOOL: _maxpool,
    OpType.CLIP: _clip,
    OpType.BFC: _bfc,
    OpType.BCONV2D_GENERAL: _bconv2d_general,
    OpType.SOFTMAX: _softmax,
    OpType.AVGPOOL2D: _avgpool2d,
    OpType.RESIZE: _resize,
}
assert set(_OPS) == set(OpType)
