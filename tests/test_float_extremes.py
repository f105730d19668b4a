"""Float semantics under overflow (docs/format.md, "Float semantics: overflow, inf and NaN"):
every float kernel on every ISA this machine runs, and whole small models loaded with each ISA,
fed +-inf, NaN, +-FLT_MAX, values near overflow (1e38 biases, 1e20 activations whose products
overflow), denormals and +-0, against the portable reference.

  bit-exact families   the same bits as the reference (NaN positions equal, payloads free);
  FC (every encoding)  the same non-finite pattern (which outputs are +inf, -inf, NaN) and the
                       finite outputs within fc.h's tolerance of each other.

The shared kernel test plan (csrc/tests/kernel_test_harness.cc, also run under qemu for NEON)
holds the same extreme cases in C++; this file drives the Python bindings and the engine, so a
divergence in the glue (row splits, fusion, threads) shows here too. The seed is printed and in
every test id; QBINFER_FLOAT_EXTREMES_SEED replays one.
"""

from __future__ import annotations

import os
import zlib
from typing import Callable, Dict, List

import numpy as np
import pytest

import qbinfer
from qbinfer import _core
from qbinfer._testing import kernels as K
from weights_tools.qbw import (
    DType,
    Graph,
    Op,
    OpType,
    Preprocessing,
    Tensor,
    Value,
    read_qbw,
    write_qbw,
)
from weights_tools.reference import run_reference

SEED = int(os.environ.get("QBINFER_FLOAT_EXTREMES_SEED", "20261205"))
ISAS = _core.supported_isas()
F32 = np.float32
FMAX = np.finfo(F32).max

# The palette: what a hostile file or an overflowing activation puts into a kernel.
EXTREMES = np.array(
    [
        np.inf,
        -np.inf,
        np.nan,
        -np.nan,
        FMAX,
        -FMAX,
        1e38,
        -1e38,
        3e38,
        -3e38,
        1e20,
        -1e20,
        1e19,
        -2e19,
        1e-45,
        -1e-45,
        1e-39,
        -3e-39,
        0.0,
        -0.0,
        1.0,
        -2.5,
    ],
    dtype=F32,
)
FINITE_EXTREMES = EXTREMES[np.isfinite(EXTREMES)]


def rng_for(*key: object) -> np.random.Generator:
    # crc32, not hash(): str hashes change per process, and a seed must replay.
    return np.random.default_rng([SEED, *(zlib.crc32(str(k).encode()) for k in key)])


def hostile(rng: np.random.Generator, shape, fraction=0.3, finite=False, scale=1.0) -> np.ndarray:
    """Normal values with about `fraction` of them replaced by extremes."""
    x = (rng.standard_normal(shape) * scale).astype(F32)
    palette = FINITE_EXTREMES if finite else EXTREMES
    mask = rng.random(shape) < fraction
    x[mask] = rng.choice(palette, size=int(mask.sum()))
    return x


def overflowing(rng: np.random.Generator, shape, big=1e20) -> np.ndarray:
    """Every value of magnitude about `big` with random signs: products (big^2) overflow, sums
    of a few overflow, and their order decides where an f32 partial sum turns inf."""
    signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (signs * big * (1 + rng.random(shape))).astype(F32)


def nonfinite_pattern(a: np.ndarray) -> np.ndarray:
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """The same bits, NaN payloads aside (NaN positions must match)."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if got.dtype != F32:
        bad = np.flatnonzero(got.ravel() != want.ravel())
    else:
        gn, wn = np.isnan(got), np.isnan(want)
        gb, wb = got.view(np.uint32), want.view(np.uint32)
        bad = np.flatnonzero(((gn != wn) | (~gn & (gb != wb))).ravel())
    if bad.size:
        i = bad[0]
        raise AssertionError(
            f"{what}: {bad.size} of {got.size} elements differ from the reference (seed {SEED});"
            f" first at flat index {i}: got {got.ravel()[i]!r}, want {want.ravel()[i]!r}"
        )


def assert_same_nonfinite_and_close(
    got: np.ndarray, want: np.ndarray, magnitude: np.ndarray, what: str
) -> None:
    """The same non-finite pattern; finite outputs within 2e-5 * magnitude of each other (each
    is within 1e-5 * magnitude of the exact result, fc.h)."""
    pg, pw = nonfinite_pattern(got), nonfinite_pattern(want)
    bad = np.flatnonzero(pg != pw)
    if bad.size:
        i = bad[0]
        raise AssertionError(
            f"{what}: inf/NaN pattern differs from the reference at {bad.size} of {got.size} "
            f"outputs (seed {SEED}); first at {i}: got {got.ravel()[i]!r}, "
            f"want {want.ravel()[i]!r}"
        )
    fin = pg == 0
    err = np.abs(got[fin].astype(np.float64) - want[fin].astype(np.float64))
    tol = 2e-5 * magnitude[fin]
    over = np.flatnonzero(~(err <= tol))
    if over.size:
        i = over[0]
        raise AssertionError(
            f"{what}: finite output beyond tolerance (seed {SEED}): got "
            f"{got[fin][i]!r}, want {want[fin][i]!r}, magnitude {magnitude[fin][i]!r}"
        )


# ---------------------------------------------------------------------------------------------
# Kernel families through qbinfer._testing.kernels: each case returns {label: output} for one
# ISA (None: the whole-image reference).


def case_bitpack(isa, rng):
    x = hostile(rng, (5, 7, 130))
    th = hostile(rng, (130,))
    return {
        "sign": K.bitpack(x, None, isa=isa or "scalar"),
        "threshold": K.bitpack(x, th, isa=isa or "scalar"),
    }


def case_bconv_epilogue(isa, rng):
    """The binary conv's float epilogue: float(dot) * scale + bias with hostile scale/bias."""
    h, w, ci, co = 4, 5, 70, 19
    words = (ci + 63) // 64
    x_bits = rng.integers(0, 2**63, (h, w, words), dtype=np.uint64)
    w_bits = rng.integers(0, 2**63, (co, 3, 3, words), dtype=np.uint64)
    tail = np.uint64((1 << (ci % 64)) - 1)
    x_bits[..., -1] &= tail
    w_bits[..., -1] &= tail
    scale = hostile(rng, (co,), 0.5)
    bias = hostile(rng, (co,), 0.5)
    return {"bconv2d": K.bconv2d(x_bits, w_bits, ci, scale, bias, isa=isa)}


def case_bfc_epilogue(isa, rng):
    ci, co = 200, 21
    words = (ci + 63) // 64
    x_bits = rng.integers(0, 2**63, (words,), dtype=np.uint64)
    w_bits = rng.integers(0, 2**63, (co, words), dtype=np.uint64)
    tail = np.uint64((1 << (ci % 64)) - 1)
    x_bits[-1] &= tail
    w_bits[:, -1] &= tail
    return {
        "bfc": K.bfc(
            x_bits, w_bits, ci, hostile(rng, (co,), 0.5), hostile(rng, (co,), 0.5), isa=isa
        )
    }


def case_dwconv_f32(isa, rng):
    out = {}
    for stride, mult in ((1, 1), (2, 1), (1, 2)):
        c = 37
        x = hostile(rng, (6, 7, c))
        pre = hostile(rng, (c,), 0.3)
        w = hostile(rng, (mult * c, 9), 0.2)
        scale = hostile(rng, (mult * c,), 0.2)
        bias = hostile(rng, (mult * c,), 0.3)
        out[f"s{stride}m{mult}"] = K.dwconv3x3_f32(
            x, pre, w, scale, bias, stride_h=stride, stride_w=stride, multiplier=mult, isa=isa
        )
        # Activations near 1e20 with 1e20 weights: every product overflows, FMA or not.
        xo = overflowing(rng, (6, 7, c))
        wo = overflowing(rng, (mult * c, 9))
        out[f"overflow s{stride}m{mult}"] = K.dwconv3x3_f32(
            xo, None, wo, np.ones(mult * c, F32), np.full(mult * c, 1e38, F32),
            stride_h=stride, stride_w=stride, multiplier=mult, isa=isa,
        )  # fmt: skip
    return out


def case_dwconv_dilated(isa, rng):
    """The atrous path (dilation > 1): border pixels skip their padded taps, so an infinite
    weight on a tap in the padding must not turn an output into NaN."""
    out = {}
    for d in (2, 5, 9):
        c = 21
        x = hostile(rng, (8, 11, c))
        w = hostile(rng, (c, 9), 0.3)
        scale = hostile(rng, (c,), 0.2)
        bias = hostile(rng, (c,), 0.3)
        out[f"d{d}"] = K.dwconv3x3_f32(
            x, hostile(rng, (c,), 0.3), w, scale, bias, isa=isa, dilation=d
        )
    return out


def case_resize(isa, rng):
    """RESIZE's lerps with extreme inputs (inf - inf, inf * 0 where a weight is 0), both modes."""
    x = hostile(rng, (5, 7, 19))
    out = {}
    for bilinear, half in ((True, True), (True, False), (False, False), (False, True)):
        out[f"b{bilinear}h{half}"] = K.resize(
            x, 11, 16, bilinear, half, 5 / 11, 7 / 16, isa=isa or "scalar"
        )
    out["broadcast"] = K.resize(x[:1, :1], 4, 3, True, True, 0.25, 1 / 3, isa=isa or "scalar")
    return out


def case_dwconv_qs8(isa, rng):
    c = 40
    out = {}
    x = hostile(rng, (5, 6, c))
    pre = hostile(rng, (c,), 0.3)
    out["absmax"] = np.array([K.dwconv_input_absmax(x, pre, isa=isa)], F32)
    for scale_name, s in (("static", 0.05), ("tiny", 1e-38), ("huge", 3e38), ("dynamic", None)):
        if s is not None:
            out[f"quantize {scale_name}"] = K.dwconv_quantize_input(x, pre, s, isa=isa)
        w = rng.integers(-127, 128, (c, 9), dtype=np.int8)
        out[f"conv {scale_name}"] = K.dwconv3x3_qs8(
            x, pre, s, w, hostile(rng, (c,), 0.3), hostile(rng, (c,), 0.3),
            hostile(rng, (c,), 0.3), isa=isa,
        )  # fmt: skip
    return out


def case_conv2d(isa, rng):
    out = {}
    for k, stride, ci, co in ((3, 2, 3, 24), (3, 1, 5, 17), (1, 1, 16, 33)):
        pad = k // 2
        x = hostile(rng, (7, 9, ci))
        w = hostile(rng, (co, k, k, ci), 0.15)
        b = hostile(rng, (co,), 0.3)
        for relu in (False, True):
            out[f"k{k}s{stride} relu={relu}"] = K.conv2d_f32(
                x, w, b, stride, stride, pad, pad, pad, pad, relu=relu, isa=isa
            )
        out[f"overflow k{k}s{stride}"] = K.conv2d_f32(
            overflowing(rng, (7, 9, ci)), overflowing(rng, (co, k, k, ci)),
            np.full(co, -1e38, F32), stride, stride, pad, pad, pad, pad, isa=isa,
        )  # fmt: skip
    return out


def case_elementwise(isa, rng):
    shape = (3, 5, 33)
    c = shape[-1]
    a, b = hostile(rng, shape), hostile(rng, shape)
    s, t = hostile(rng, (c,)), hostile(rng, (c,))
    return {
        "affine": K.affine(a, s, t, isa=isa),
        "affine overflow": K.affine(
            overflowing(rng, shape), np.full(c, 1e20, F32), np.full(c, 1e38, F32), isa=isa
        ),  # fmt: skip
        "prelu": K.prelu(a, s, isa=isa),
        "relu": K.relu(a, isa=isa),
        "sigmoid": K.sigmoid(a, isa=isa),
        "sigmoid wide": K.sigmoid(hostile(rng, shape, 0.1, scale=100.0), isa=isa),
        "add": K.add(a, b, isa=isa),
        "mul_channel": K.mul_channel(a, s, isa=isa),
        "clip": K.clip(a, -1.5, 2.0, isa=isa),
        "clip inf bounds": K.clip(a, -np.inf, 6.0, isa=isa),
        "softmax": K.softmax(hostile(rng, (4, 3, 17), 0.1), isa=isa),
        "log softmax": K.softmax(hostile(rng, (4, 3, 17), 0.1), log=True, isa=isa),
        "softmax huge": K.softmax(overflowing(rng, (4, 3, 17), 1e38), isa=isa),
    }


def case_pool(isa, rng):
    x = hostile(rng, (7, 8, 35), 0.2)
    big = (np.full((7, 8, 35), 1e38, F32) * np.where(rng.random((7, 8, 35)) < 0.8, 1, -1)).astype(
        F32
    )
    return {
        "avgpool": K.avgpool(x, 3, 3, 2, 2, isa=isa),
        "avgpool overflow": K.avgpool(big, 3, 3, 2, 2, isa=isa),
        "global_avgpool": K.global_avgpool(x, isa=isa),
        "global_avgpool overflow": K.global_avgpool(big, isa=isa),
        "maxpool": K.maxpool(x, 3, 3, 2, 2, 1, 1, 1, 1, isa=isa),
        "avgpool2d": K.avgpool2d(x, 3, 3, 2, 2, 1, 1, 1, 1, isa=isa),
        "avgpool2d overflow": K.avgpool2d(big, 3, 3, 1, 1, 1, 1, 1, 1, ceil_mode=True, isa=isa),
    }


def case_epilogue(isa, rng):
    out = {}
    shape = (3, 4, 70)
    c = shape[-1]
    x = hostile(rng, shape)
    for name, kw in (
        ("all", dict(channel_scale=hostile(rng, (c,)), residual=hostile(rng, (3, 4, 35)),
                     prelu_slope=hostile(rng, (c,)), post_scale=hostile(rng, (c,)),
                     post_bias=hostile(rng, (c,)), threshold=hostile(rng, (c,)))),
        ("bias 1e38", dict(channel_scale=np.full(c, 3e38, F32), post_scale=np.full(c, 3e38, F32),
                           post_bias=np.full(c, 1e38, F32), threshold=np.zeros(c, F32))),
        ("bits only", dict(post_scale=hostile(rng, (c,)), post_bias=hostile(rng, (c,)),
                           write_float=False, threshold=hostile(rng, (c,)))),
        ("relu6", dict(clip=(0.0, 6.0))),
        ("clip after all", dict(channel_scale=hostile(rng, (c,)), residual=hostile(rng, (3, 4, 35)),
                                prelu_slope=hostile(rng, (c,)), post_scale=hostile(rng, (c,)),
                                post_bias=hostile(rng, (c,)), threshold=hostile(rng, (c,)),
                                clip=(-1e30, 3e38))),
    ):  # fmt: skip
        floats, bits = K.epilogue(x, isa=isa, **kw)
        out[name] = floats
        if bits is not None:
            out[name + " bits"] = bits
    return out


BIT_EXACT: Dict[str, Callable] = {
    "bitpack": case_bitpack,
    "bconv": case_bconv_epilogue,
    "bfc": case_bfc_epilogue,
    "dwconv_f32": case_dwconv_f32,
    "dwconv_qs8": case_dwconv_qs8,
    "conv2d": case_conv2d,
    "elementwise": case_elementwise,
    "pool": case_pool,
    "epilogue": case_epilogue,
    "dwconv_dilated": case_dwconv_dilated,
    "resize": case_resize,
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("family", list(BIT_EXACT), ids=[f"{f}-seed{SEED}" for f in BIT_EXACT])
def test_bit_exact_family_with_extremes(family, isa):
    print(f"seed {SEED}")
    for rep in range(3):
        want = BIT_EXACT[family](None, rng_for(family, rep))
        got = BIT_EXACT[family](isa, rng_for(family, rep))
        assert got.keys() == want.keys()
        for label in want:
            assert_same_bits(got[label], want[label], f"{family}/{isa} {label} (rep {rep})")


# ---------------------------------------------------------------------------------------------
# FC: a different summation order is allowed, a different inf/NaN pattern is not.


def fc_inputs(rng: np.random.Generator, kind: str, ci: int, co: int):
    if kind == "hostile":
        x, w = hostile(rng, (ci,), 0.05), hostile(rng, (co, ci), 0.02)
        bias = hostile(rng, (co,), 0.3)
    elif kind == "overflowing partial sums":
        # Products of about 1e38 with random signs: a sequential f32 sum overflows where a
        # lane-split one may not (the finding), though the exact sum is finite.
        x = overflowing(rng, (ci,), 1e19)
        w = overflowing(rng, (co, ci), 1e19)
        bias = hostile(rng, (co,), 0.3, finite=True)
    elif kind == "overflowing products":
        x, w = overflowing(rng, (ci,), 1e20), overflowing(rng, (co, ci), 1e20)
        bias = hostile(rng, (co,), 0.3, finite=True)
    elif kind == "bias 1e38":
        x = np.full(ci, 1e38, F32)
        w = (rng.standard_normal((co, ci)) * 0.1).astype(F32)
        bias = np.full(co, 1e38, F32)
    else:  # "near FLT_MAX": sums that land on either side of the f32 overflow threshold
        x = np.full(ci, FMAX / ci, F32)
        w = (1 + rng.standard_normal((co, ci)) * 1e-3).astype(F32)
        bias = (rng.standard_normal(co) * 1e37).astype(F32)
    return x, w, bias


FC_KINDS = ["hostile", "overflowing partial sums", "overflowing products", "bias 1e38", "near"]
FC_SHAPES = [(7, 5), (64, 9), (100, 17), (257, 4), (1000, 10)]


def fc_magnitude(x, w_int_or_f, ws, bias):
    with np.errstate(all="ignore"):
        m = np.abs(w_int_or_f.astype(np.float64)) @ np.abs(x.astype(np.float64))
        return np.abs(ws.astype(np.float64)) * m + np.abs(bias.astype(np.float64))


def bitplanes(codes: np.ndarray) -> np.ndarray:
    co, ci = codes.shape
    words = (ci + 63) // 64
    planes = np.zeros((8, co, words), np.uint64)
    for b in range(8):
        minus_one = ((codes >> b) & 1) == 0
        padded = np.zeros((co, words * 64), bool)
        padded[:, :ci] = minus_one
        bits = padded.reshape(co, words, 64).astype(np.uint64) << np.arange(64, dtype=np.uint64)
        planes[b] = np.bitwise_or.reduce(bits, axis=2)
    return planes


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", FC_KINDS, ids=[f"{k}-seed{SEED}" for k in FC_KINDS])
def test_fc_nonfinite_pattern_matches_reference(kind, isa):
    print(f"seed {SEED}")
    for ci, co in FC_SHAPES:
        rng = rng_for("fc", kind, ci, co)
        x, w, bias = fc_inputs(rng, kind, ci, co)
        what = f"fc/{isa} {kind} in={ci} out={co}"
        ones = np.ones(co, F32)
        assert_same_nonfinite_and_close(
            K.fc_f32(x, w, bias, isa=isa), K.fc_f32(x, w, bias), fc_magnitude(x, w, ones, bias),
            what + " f32",
        )  # fmt: skip
        q = rng.integers(-127, 128, (co, ci), dtype=np.int8)
        ws = hostile(rng, (co,), 0.2, finite=True) if kind == "hostile" else ones * 1e-3
        ws = np.abs(ws).astype(F32)
        with np.errstate(over="ignore"):
            xq = x * F32(1e3) if kind != "hostile" else x
        assert_same_nonfinite_and_close(
            K.fc_qs8(xq, q, ws, bias, isa=isa), K.fc_qs8(xq, q, ws, bias),
            fc_magnitude(xq, q, ws, bias), what + " qs8",
        )  # fmt: skip
        codes = rng.integers(0, 256, (co, ci))
        planes = bitplanes(codes)
        wb = 2 * codes - 255
        assert_same_nonfinite_and_close(
            K.fc_bitplane8(x, planes, ws, bias, isa=isa), K.fc_bitplane8(x, planes, ws, bias),
            fc_magnitude(x, wb, ws, bias), what + " bitplane8",
        )  # fmt: skip


def test_fc_reference_has_no_order_dependent_overflow():
    """The rule's anchor: a sum whose exact value is finite is finite in the reference too, in
    any channel order (the reference sums exact products in double)."""
    x = np.array([1e19, 1e19, 1e19, 1e19], F32)
    w = np.array([[3e19, 3e19, -3e19, -3e19], [3e19, -3e19, 3e19, -3e19]], F32)
    got = K.fc_f32(x, w, np.zeros(2, F32))
    np.testing.assert_array_equal(got, np.zeros(2, F32))
    # Products that overflow f32 are exact in double: 1e20 * 1e20 - 1e20 * 1e20 = 0.
    got = K.fc_f32(np.array([1e20, 1e20], F32), np.array([[1e20, -1e20]], F32), np.zeros(1, F32))
    np.testing.assert_array_equal(got, np.zeros(1, F32))
    # A non-finite input still propagates: inf * 0 is NaN, inf - inf is NaN, inf + x is inf.
    got = K.fc_f32(
        np.array([np.inf, 1.0], F32), np.array([[0.0, 1.0], [1.0, 1.0], [1.0, -np.inf]], F32),
        np.zeros(3, F32),
    )  # fmt: skip
    assert np.isnan(got[0]) and np.isposinf(got[1]) and np.isnan(got[2]), got


# ---------------------------------------------------------------------------------------------
# Whole models through the engine, loaded with each ISA.


def small_model(rng: np.random.Generator, fc: bool) -> Graph:
    """stem CONV2D -> AFFINE (hostile BN: 1e38 biases) -> PRELU -> BITPACK -> BCONV2D ->
    AFFINE -> ADD (residual) -> DWCONV3X3 -> MAXPOOL -> GLOBAL_AVGPOOL; with `fc` instead a
    tame stem -> GLOBAL_AVGPOOL -> AFFINE (hostile head BN) -> FC."""
    h, w, c = 8, 8, 40
    t: List[Tensor] = []

    def tensor(name, arr):
        t.append(Tensor(name, DType.F32 if arr.dtype == F32 else DType.BITS, arr))
        return len(t) - 1

    def finite(shape, frac=0.3):
        return hostile(rng, shape, frac, finite=True)

    bn_bias = finite((c,), 0.2)
    bn_bias[:4] = [1e38, -1e38, 3e38, 1e20]
    words = 1
    wbits = rng.integers(0, 2**63, (c, 3, 3, words), dtype=np.uint64) & np.uint64((1 << c) - 1)
    assert c <= 64
    values = [
        Value("x", DType.F32, h, w, 3),
        Value("stem", DType.F32, h // 2, w // 2, c),
        Value("bn", DType.F32, h // 2, w // 2, c),
        Value("act", DType.F32, h // 2, w // 2, c),
        Value("bits", DType.BITS, h // 2, w // 2, c),
        Value("bconv", DType.F32, h // 2, w // 2, c),
        Value("bn2", DType.F32, h // 2, w // 2, c),
        Value("res", DType.F32, h // 2, w // 2, c),
        Value("dw", DType.F32, h // 2, w // 2, c),
        Value("pool", DType.F32, h // 4, w // 4, c),
        Value("gap", DType.F32, 1, 1, c),
    ]
    ops = [
        Op(OpType.CONV2D, "stem", [0], [1],
           [tensor("stem.w", finite((c, 3, 3, 3), 0.1)), tensor("stem.b", finite((c,)))],
           [3, 3, 2, 2, 1, 1, 1, 1, 0]),
        Op(OpType.AFFINE, "bn", [1], [2],
           [tensor("bn.s", finite((c,))), tensor("bn.b", bn_bias)]),
        Op(OpType.PRELU, "act", [2], [3], [tensor("act.slope", finite((c,)))]),
        Op(OpType.BITPACK, "sign", [3], [4], [tensor("sign.t", finite((c,)))]),
        Op(OpType.BCONV2D, "bconv", [4], [5],
           [tensor("bconv.w", wbits), tensor("bconv.s", finite((c,))),
            tensor("bconv.b", finite((c,)))], [3, 0]),
        Op(OpType.AFFINE, "bn2", [5], [6],
           [tensor("bn2.s", finite((c,))), tensor("bn2.b", finite((c,)))]),
        Op(OpType.ADD, "res", [6, 3], [7]),
        Op(OpType.DWCONV3X3, "dw", [7], [8],
           [None, tensor("dw.w", finite((c, 9), 0.1)), None, tensor("dw.s", finite((c,))),
            tensor("dw.b", finite((c,))), None], [1, 1, 1]),
        Op(OpType.MAXPOOL, "pool", [8], [9], [], [2, 2, 2, 2, 0, 0, 0, 0]),
        Op(OpType.GLOBAL_AVGPOOL, "gap", [9], [10]),
    ]  # fmt: skip
    if fc:
        # The head alone: a tame stem and pool, then a hostile head BN with biases of
        # +-2e37..4e37 and random signs before an FC with weights of +-1..2, so the FC's f32
        # partial sums wander past FLT_MAX in one channel order and not in another (the issue's
        # finding). Hostile features would make every logit NaN and hide it.
        values = values[:2] + [
            Value("gap", DType.F32, 1, 1, c),
            Value("head", DType.F32, 1, 1, c),
            Value("logits", DType.F32, 1, 1, 10),
        ]
        ops = [
            Op(OpType.CONV2D, "stem", [0], [1],
               [tensor("head.stem.w", (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(F32)),
                tensor("head.stem.b", np.zeros(c, F32))], [3, 3, 2, 2, 1, 1, 1, 1, 0]),
            Op(OpType.GLOBAL_AVGPOOL, "gap", [1], [2]),
            Op(OpType.AFFINE, "head", [2], [3],
               [tensor("head.s", np.ones(c, F32)), tensor("head.b", overflowing(rng, (c,), 2e37))]),
            Op(OpType.FC, "fc", [3], [4],
               [tensor("fc.w", overflowing(rng, (10, c), 1.0)), None,
                tensor("fc.b", finite((10,)))], [0]),
        ]  # fmt: skip
    return Graph(
        tensors=t,
        values=values,
        ops=ops,
        input_value=0,
        output_value=len(values) - 1,
        preprocessing=Preprocessing(0, h, w),
    )


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fc", [False, True], ids=[f"features-seed{SEED}", f"fc-seed{SEED}"])
def test_whole_model_with_extremes_matches_scalar(tmp_path, isa, fc):
    print(f"seed {SEED}")
    for rep in range(3):
        rng = rng_for("model", fc, rep)
        path = str(tmp_path / f"m{rep}.qbw")
        write_qbw(path, small_model(rng, fc))
        # Finite images (the hostile weights do the damage), one whose products overflow, one
        # with a few infinities and NaNs.
        x = hostile(rng, (3, 8, 8, 3), 0.05, finite=True)
        x[1] = overflowing(rng, (8, 8, 3), 1e20)
        x[2] = hostile(rng, (8, 8, 3), 0.01)
        if fc:  # one tame image: the head's biases alone decide where the logits overflow
            x[0] = rng.standard_normal((8, 8, 3)).astype(F32)
        want = qbinfer.load(path, threads=1, isa="scalar").run(x, layout="nhwc")
        if fc:
            # The spec (weights_tools/reference.py) overflows the FC where the engine does. Its
            # stem conv runs in float64, so only the images without inf or NaN compare.
            spec = run_reference(read_qbw(path), x[:2].transpose(0, 3, 1, 2))
            assert np.array_equal(nonfinite_pattern(spec), nonfinite_pattern(want[:2])), (
                f"rep {rep}: reference.py {spec.ravel()} vs engine {want[:2].ravel()}"
            )
        for threads in (1, 2):
            got = qbinfer.load(path, threads=threads, isa=isa).run(x, layout="nhwc")
            what = f"model rep {rep} fc={fc} on {isa} threads={threads}"
            if fc:
                # The FC may round differently (fc.h), never overflow differently.
                pg, pw = nonfinite_pattern(got), nonfinite_pattern(want)
                assert np.array_equal(pg, pw), f"{what}: inf/NaN pattern {pg} vs {pw}"
                fin = pw == 0
                scale = np.where(fin, np.abs(want), 0).reshape(len(x), -1).max(axis=1)
                tol = 1e-5 * np.broadcast_to(scale[:, None], (len(x), fin[0].size)).reshape(
                    want.shape
                )
                assert np.all(np.abs(got[fin] - want[fin].astype(np.float64)) <= tol[fin]), what
            else:
                assert_same_bits(np.asarray(got), np.asarray(want), what)
