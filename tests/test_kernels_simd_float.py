"""The float/int8 kernel families on every ISA this build and CPU run, against the scalar ones.

For each ISA in qbinfer._core._kernels.supported_isas() ('scalar' included: its packed/row
entries against the whole-image references):

  bit-exact (same bits, NaN payloads aside)  depthwise f32 and INT8 (and their input absmax and
                                             quantization), the fused epilogue (floats and
                                             bits), the dense conv (the stem), pools,
                                             element-wise kernels;
  within the stated tolerance                FC: |got - exact| <= 1e-5 * M, M the same sum over
                                             |terms| (fc.h); the scalar dense conv is also held
                                             to that against float64.

Row-range entry points run over split ranges, and over a partial range that must leave the other
rows untouched. Inputs that a kernel reads directly are also placed against a PROT_NONE page (at
their end, then at their start), so a kernel that reads one byte outside them crashes the test
(bit_contract.h: no kernel reads past its input).

Random cases take their seed from BASE_SEED, a per-family offset and the case index; it is in the
test id and in every assertion message, so a failure replays with the same numbers.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import re

import numpy as np
import pytest

from qbinfer._core import _kernels as K

BASE_SEED = 0x51_3D_F0
RTOL = 1e-5


def _isas() -> list[str]:
    if hasattr(K, "supported_isas"):
        return list(K.supported_isas())
    # Older builds: guess from the CPU flags (the bindings still refuse what is unsupported).
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isas = ["scalar"]
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        isas.append("avx512")
    return isas


ISAS = _isas()
CHANNELS = [1, 3, 7, 15, 16, 17, 31, 33, 64, 100, 130]
STRIDES = [(1, 1), (2, 2), (2, 1), (1, 2)]
MULTIPLIERS = [1, 2, 4]
# Odd and even sizes, 1 included, every one visited by several channel/stride combinations.
SIZES = [
    (1, 1),
    (1, 6),
    (5, 1),
    (2, 3),
    (3, 2),
    (7, 5),
    (5, 9),
    (9, 4),
    (4, 7),
    (11, 3),
    (6, 6),
    (3, 13),
]


# --- helpers -------------------------------------------------------------------------------


def random_f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_same_bits(got, want, msg):
    """Equal bit for bit; NaN positions must match (their payloads are not part of the
    contract), and +0.0 / -0.0 are told apart."""
    assert got.dtype == want.dtype and got.shape == want.shape, (
        f"{msg}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    )
    if got.dtype != np.float32:
        if not np.array_equal(got, want):
            i = tuple(np.argwhere(got != want)[0])
            raise AssertionError(f"{msg}: first difference at {i}: {got[i]!r} != {want[i]!r}")
        return
    gn, wn = np.isnan(got), np.isnan(want)
    same = np.where(gn | wn, gn == wn, got.view(np.uint32) == want.view(np.uint32))
    if not same.all():
        i = tuple(np.argwhere(~same)[0])
        raise AssertionError(
            f"{msg}: {int((~same).sum())} of {same.size} values differ; first at "
            f"{i}: got {got[i]!r}, want {want[i]!r}"
        )


def assert_within(got, exact, magnitude, msg, rtol=RTOL):
    """|got - exact| <= rtol * magnitude elementwise (exact and magnitude in float64)."""
    assert got.dtype == np.float32 and got.shape == exact.shape, msg
    err = np.abs(got.astype(np.float64) - exact)
    bad = ~(err <= rtol * magnitude)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{msg}: {int(bad.sum())} values off by more than {rtol} x "
            f"magnitude; first at {i}: got {got[i]!r}, want {exact[i]!r}, "
            f"magnitude {magnitude[i]!r}"
        )


def row_splits(rows, seed):
    """A few contiguous splits of [0, rows), given out of order."""
    rng = np.random.default_rng(seed)
    cuts = sorted(set(rng.integers(0, rows + 1, 3).tolist()) | {0, rows})
    ranges = list(zip(cuts[:-1], cuts[1:]))
    rng.shuffle(ranges)
    return [(int(a), int(b)) for a, b in ranges]


# A copy of an array pressed against an inaccessible page (PROT_NONE), so reading one byte
# past its end (at_end=True) or before its start (at_end=False) faults.
_PAGE = mmap.PAGESIZE
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _mprotect = _libc.mprotect
    _mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):  # not a POSIX libc: no guard pages
    _mprotect = None


def guarded(a, at_end=True):
    a = np.ascontiguousarray(a)
    if _mprotect is None or a.nbytes == 0:
        return a
    data_pages = -(-a.nbytes // _PAGE)
    buf = mmap.mmap(-1, (data_pages + 2) * _PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    for page in (base, base + (data_pages + 1) * _PAGE):
        if _mprotect(page, _PAGE, 0) != 0:
            return a
    offset = _PAGE + (data_pages * _PAGE - a.nbytes if at_end else 0)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    return out


def both_guards(a):
    return [guarded(a, True), guarded(a, False)]


# --- depthwise f32 -------------------------------------------------------------------------

DW_SEED = BASE_SEED
DW_CASES = [
    (c, stride, k, pre, SIZES[n % len(SIZES)])
    for n, (c, stride, k, pre) in enumerate(
        itertools.product(CHANNELS, STRIDES, MULTIPLIERS, [False, True])
    )
]


def dw_inputs(rng, size, channels, k, with_pre_bias):
    x = random_f32(rng, size + (channels,))
    pre_bias = random_f32(rng, channels) if with_pre_bias else None
    w = random_f32(rng, (k * channels, 9))
    return x, pre_bias, w, random_f32(rng, k * channels), random_f32(rng, k * channels)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "index,channels,stride,multiplier,with_pre_bias,size",
    [(i, *c) for i, c in enumerate(DW_CASES)],
    ids=[
        f"seed{DW_SEED + i}-C{c}-s{s[0]}{s[1]}-k{k}-{z[0]}x{z[1]}" + ("-prebias" if pb else "")
        for i, (c, s, k, pb, z) in enumerate(DW_CASES)
    ],
)
def test_dwconv_f32_bit_exact(isa, index, channels, stride, multiplier, with_pre_bias, size):
    seed = DW_SEED + index
    rng = np.random.default_rng(seed)
    x, pre_bias, w, scale, bias = dw_inputs(rng, size, channels, multiplier, with_pre_bias)
    msg = (
        f"isa={isa} seed={seed} C={channels} stride={stride} k={multiplier} size={size} "
        f"pre_bias={with_pre_bias}"
    )
    want = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, multiplier)
    got = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, multiplier, isa=isa)
    assert_same_bits(got, want, msg)
    ranges = row_splits(want.shape[0], seed)
    got = K.dwconv3x3_f32(
        x, pre_bias, w, scale, bias, *stride, multiplier, isa=isa, row_ranges=ranges
    )
    assert_same_bits(got, want, f"{msg} row_ranges={ranges}")


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_f32_zero_signs_infinities_and_partial_rows(isa):
    """Padded taps are skipped, never added as 0 * w: an infinite weight on a border tap must
    not turn border outputs into NaN. Zero products and -0.0 inputs keep the reference's signs.
    A partial row range writes only its rows."""
    seed = DW_SEED + 999
    rng = np.random.default_rng(seed)
    for channels, stride, k in [(17, (1, 1), 2), (33, (2, 2), 4), (16, (2, 1), 1), (5, (1, 2), 2)]:
        x = random_f32(rng, (6, 7, channels))
        x[::2, ::3] = -0.0
        x[1, 1] = 0.0
        w = random_f32(rng, (k * channels, 9))
        w[::3, 0] = np.inf  # top-left tap: in the padding for the first row and column
        w[1::3, 8] = -np.inf
        w[2::3, 4] = -0.0
        scale = random_f32(rng, k * channels)
        bias = np.where(rng.random(k * channels) < 0.5, -0.0, 0.0).astype(np.float32)
        for pre_bias in (None, np.zeros(channels, np.float32), -np.zeros(channels, np.float32)):
            msg = f"isa={isa} seed={seed} C={channels} stride={stride} k={k} pre_bias={pre_bias}"
            want = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, k)
            got = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, k, isa=isa)
            assert_same_bits(got, want, msg)
            part = K.dwconv3x3_f32(
                x, pre_bias, w, scale, bias, *stride, k, isa=isa, row_ranges=[(1, 2)]
            )
            assert np.isnan(part[:1]).all() and np.isnan(part[2:]).all(), msg
            assert_same_bits(part[1:2], want[1:2], msg)


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_reads_nothing_outside_its_input(isa):
    rng = np.random.default_rng(DW_SEED + 998)
    for channels, stride, k, size in [
        (1, (1, 1), 1, (1, 1)),
        (3, (2, 2), 2, (5, 3)),
        (17, (2, 1), 4, (3, 5)),
        (33, (1, 2), 1, (4, 4)),
        (16, (2, 2), 1, (2, 2)),
        (7, (1, 2), 2, (1, 6)),
    ]:
        x, pre_bias, w, scale, bias = dw_inputs(rng, size, channels, k, True)
        want = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, k)
        wq = rng.integers(-127, 128, w.shape).astype(np.int8)
        w_scale = np.abs(random_f32(rng, k * channels)) + np.float32(0.01)
        want_q = K.dwconv3x3_qs8(x, pre_bias, 0.02, wq, w_scale, scale, bias, *stride, k)
        for xg, pg, wg, wqg in zip(
            both_guards(x), both_guards(pre_bias), both_guards(w), both_guards(wq)
        ):
            got = K.dwconv3x3_f32(xg, pg, wg, guarded(scale), guarded(bias), *stride, k, isa=isa)
            assert_same_bits(got, want, f"isa={isa} C={channels} stride={stride} k={k}")
            got = K.dwconv3x3_qs8(
                xg,
                pg,
                0.02,
                wqg,
                guarded(w_scale),
                guarded(scale),
                guarded(bias),
                *stride,
                k,
                isa=isa,
            )
            assert_same_bits(got, want_q, f"isa={isa} qs8 C={channels} stride={stride} k={k}")


# --- depthwise INT8 ------------------------------------------------------------------------

QS8_SEED = BASE_SEED + 3000
QS8_CASES = [
    (c, stride, k, ["static", "dynamic", "ties"][n % 3], SIZES[(n * 5) % len(SIZES)])
    for n, (c, stride, k) in enumerate(itertools.product(CHANNELS, STRIDES, MULTIPLIERS))
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "index,channels,stride,multiplier,mode,size",
    [(i, *c) for i, c in enumerate(QS8_CASES)],
    ids=[
        f"seed{QS8_SEED + i}-C{c}-s{s[0]}{s[1]}-k{k}-{m}-{z[0]}x{z[1]}"
        for i, (c, s, k, m, z) in enumerate(QS8_CASES)
    ],
)
def test_dwconv_qs8_bit_exact(isa, index, channels, stride, multiplier, mode, size):
    seed = QS8_SEED + index
    rng = np.random.default_rng(seed)
    kc = multiplier * channels
    if mode == "ties":  # u / s often exactly k + 0.5, and beyond the clamp
        s = np.float32(2.0**-5)
        x = (rng.integers(-600, 600, size + (channels,)) * (s / 2)).astype(np.float32)
        pre_bias = (rng.integers(-20, 20, channels) * (s / 2)).astype(np.float32)
    else:
        x = random_f32(rng, size + (channels,), 2.0)
        pre_bias = random_f32(rng, channels, 0.5) if index % 2 else None
        s = np.float32(rng.uniform(0.005, 0.03))
    input_scale = None if mode == "dynamic" else float(s)
    w = rng.integers(-127, 128, (kc, 9)).astype(np.int8)
    w[0, :2] = (-127, 127)
    w_scale = np.abs(random_f32(rng, kc, 0.01)) + np.float32(1e-3)
    scale, bias = random_f32(rng, kc), random_f32(rng, kc)
    msg = f"isa={isa} seed={seed} C={channels} stride={stride} k={multiplier} mode={mode}"
    args = (x, pre_bias, input_scale, w, w_scale, scale, bias, *stride, multiplier)
    want = K.dwconv3x3_qs8(*args)
    assert_same_bits(K.dwconv3x3_qs8(*args, isa=isa), want, msg)
    ranges = row_splits(want.shape[0], seed)
    assert_same_bits(
        K.dwconv3x3_qs8(*args, isa=isa, row_ranges=ranges), want, f"{msg} row_ranges={ranges}"
    )


SPECIALS = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        1e-45,
        -1e-45,
        3e38,
        -3e38,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        126.5,
        -126.5,
        127.5,
        1e10,
    ],
    np.float32,
)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_dwconv_quantize_and_absmax_bit_exact(isa, channels):
    seed = QS8_SEED + 900 + channels
    rng = np.random.default_rng(seed)
    x = random_f32(rng, (3, 5, channels), 40.0)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, SPECIALS.size)] = SPECIALS
    pre_bias = random_f32(rng, channels)
    msg = f"isa={isa} seed={seed} C={channels}"
    for pb in (None, pre_bias):
        finite = np.where(np.isinf(x), np.float32(0), x)
        for arr in (finite, x):
            want = K.dwconv_input_absmax(arr, pb, isa="scalar")
            got = K.dwconv_input_absmax(arr, pb, isa=isa)
            assert_same_bits(np.float32(got), np.float32(want), f"{msg} absmax")
        for s in (1.0, 0.37, 2.0**-3, 1e-30):
            want = K.dwconv_quantize_input(x, pb, s, isa="scalar")
            for xg in both_guards(x):
                assert_same_bits(
                    K.dwconv_quantize_input(xg, pb, s, isa=isa), want, f"{msg} quantize s={s}"
                )


# --- fused epilogue -----------------------------------------------------------------------

EPI_SEED = BASE_SEED + 5000
STEP_NAMES = ("channel_scale", "residual", "prelu", "post", "bits")


def epilogue_numpy(x, cs, res, slope, ps, pb, threshold):
    """The steps of epilogue.h in numpy float32 (one IEEE operation each), independently of
    qbinfer: the oracle the scalar kernel itself is checked against."""
    c = x.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        v = x.reshape(-1, c).copy()
        if cs is not None:
            v = v * cs
        if res is not None:
            r = res.reshape(v.shape[0], -1)
            v = v + np.tile(r, (1, c // r.shape[1]))
        if slope is not None:
            v = np.where(v >= 0, v, slope * v)
        if ps is not None:
            v = v * ps
            v = v + pb
        bits = None
        if threshold is not None:
            minus = ~(v >= threshold)
            words = (c + 63) // 64
            padded = np.zeros((v.shape[0], words * 64), bool)
            padded[:, :c] = minus
            bits = (
                np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little"))
                .view("<u8")
                .reshape(x.shape[:-1] + (words,))
            )
    return v.reshape(x.shape), bits


def epilogue_inputs(rng, channels, pixels_hw):
    x = random_f32(rng, pixels_hw + (channels,), 2.0)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, SPECIALS.size)] = SPECIALS
    threshold = random_f32(rng, channels)
    threshold[::5] = 0.0
    threshold[1::7] = -0.0
    if channels > 2:
        threshold[2] = np.nan
    # Ties: values equal to their channel's threshold.
    x.reshape(-1, channels)[::3] = threshold
    return x, threshold


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels", CHANNELS + [66, 192])
def test_epilogue_bit_exact_every_step_subset(isa, channels):
    seed = EPI_SEED + channels
    rng = np.random.default_rng(seed)
    hw = (3, 5)
    x, threshold = epilogue_inputs(rng, channels, hw)
    cs, slope = random_f32(rng, channels), random_f32(rng, channels)
    ps, pb = random_f32(rng, channels), random_f32(rng, channels)
    slope[::4] = -0.0
    pb[::3] = -0.0
    # residual_channels: the whole width, and every proper divisor repeat the models use (and
    # ones that split a vector: 33 of 66, 3 of 15...).
    rcs = [channels] + [channels // k for k in (2, 3, 4) if channels % k == 0]
    pixels = hw[0] * hw[1]
    for rc in rcs:
        residual = random_f32(rng, hw + (rc,))
        residual.reshape(-1)[:4] = [np.nan, -0.0, np.inf, 0.0]
        for subset in range(32):
            on = [bool(subset >> i & 1) for i in range(5)]
            args = dict(
                channel_scale=cs if on[0] else None,
                residual=residual if on[1] else None,
                prelu_slope=slope if on[2] else None,
                post_scale=ps if on[3] else None,
                post_bias=pb if on[3] else None,
                threshold=threshold if on[4] else None,
            )
            steps = "+".join(n for n, o in zip(STEP_NAMES, on) if o) or "none"
            msg = f"isa={isa} seed={seed} C={channels} rc={rc} steps={steps}"
            want_f, want_b = epilogue_numpy(
                x,
                args["channel_scale"],
                args["residual"],
                args["prelu_slope"],
                args["post_scale"],
                args["post_bias"],
                args["threshold"],
            )
            for write_float in (True, False):
                ranges = row_splits(pixels, seed + subset)
                got_f, got_b = K.epilogue(
                    x, **args, write_float=write_float, isa=isa, pixel_ranges=ranges
                )
                assert_same_bits(
                    got_f,
                    want_f if write_float else x,
                    f"{msg} write_float={write_float} ranges={ranges}",
                )
                if on[4]:
                    assert_same_bits(got_b, want_b, f"{msg} bits ranges={ranges}")
                else:
                    assert got_b is None, msg


@pytest.mark.parametrize("isa", ISAS)
def test_epilogue_partial_range_and_bounds(isa):
    """A pixel range writes only its pixels' floats and bit words, reads nothing outside its
    inputs, and sets tail bits to 0."""
    seed = EPI_SEED + 999
    rng = np.random.default_rng(seed)
    for channels, rc in [(1, 1), (17, 17), (66, 33), (64, 16), (130, 65), (100, 25)]:
        x, threshold = epilogue_inputs(rng, channels, (2, 4))
        residual = random_f32(rng, (2, 4, rc))
        slope, ps, pb = (random_f32(rng, channels) for _ in range(3))
        want_f, want_b = epilogue_numpy(x, None, residual, slope, ps, pb, threshold)
        msg = f"isa={isa} seed={seed} C={channels} rc={rc}"
        for xg, rg in zip(both_guards(x), both_guards(residual)):
            got_f, got_b = K.epilogue(
                xg,
                residual=rg,
                prelu_slope=guarded(slope),
                post_scale=guarded(ps),
                post_bias=guarded(pb),
                threshold=guarded(threshold),
                isa=isa,
                pixel_ranges=[(3, 6)],
            )
            inside = np.zeros(8, bool)
            inside[3:6] = True
            f = got_f.reshape(8, channels)
            b = got_b.reshape(8, -1)
            assert_same_bits(f[inside], want_f.reshape(8, channels)[inside], msg)
            assert_same_bits(f[~inside], x.reshape(8, channels)[~inside], msg)
            assert_same_bits(b[inside], want_b.reshape(8, -1)[inside], msg)
            assert (b[~inside] == np.uint64(2**64 - 1)).all(), f"{msg}: wrote outside its range"


# --- dense conv ----------------------------------------------------------------------------

CONV_SEED = BASE_SEED + 7000
CONV_CASES = [
    # (H, W, Ci, Co, kh, kw, stride, pads (top, left, bottom, right), relu)
    (224, 224, 3, 16, 3, 3, (2, 2), (1, 1, 1, 1), True),  # the stem
    (33, 31, 3, 16, 3, 3, (2, 2), (1, 1, 1, 1), True),
    (9, 9, 3, 17, 3, 3, (2, 2), (1, 1, 1, 1), False),
    (1, 1, 3, 16, 3, 3, (2, 2), (1, 1, 1, 1), True),
    (2, 3, 5, 33, 3, 3, (1, 1), (1, 1, 1, 1), True),
    (7, 20, 1, 1, 3, 3, (1, 1), (0, 0, 0, 0), False),
    (17, 13, 4, 20, 3, 2, (2, 1), (2, 1, 0, 0), True),
    (6, 40, 3, 8, 3, 3, (1, 2), (1, 0, 1, 2), False),
    (1, 1, 130, 100, 1, 1, (1, 1), (0, 0, 0, 0), False),  # a 1x1 conv on a pooled vector
    (5, 4, 64, 31, 1, 1, (1, 1), (0, 0, 0, 0), True),
]


def conv_exact(x, w, b, stride, pads, relu):
    """float64 dense conv (NHWC, [Co][kh][kw][Ci]) and the sum of |terms| + |bias|."""
    pt, pl, pbm, pr = pads
    xp = np.pad(x.astype(np.float64), ((pt, pbm), (pl, pr), (0, 0)))
    co, kh, kw, _ = w.shape
    ho = (xp.shape[0] - kh) // stride[0] + 1
    wo = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((ho, wo, co))
    mag = np.zeros((ho, wo, co))
    wd = w.astype(np.float64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[
                ky : ky + stride[0] * (ho - 1) + 1 : stride[0],
                kx : kx + stride[1] * (wo - 1) + 1 : stride[1],
            ]
            out += patch @ wd[:, ky, kx, :].T
            mag += np.abs(patch) @ np.abs(wd[:, ky, kx, :]).T
    out += b
    mag += np.abs(b)
    if relu:
        out = np.maximum(out, 0)
    return out, mag


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "index,case",
    list(enumerate(CONV_CASES)),
    ids=[
        f"seed{CONV_SEED + i}-{c[0]}x{c[1]}x{c[2]}-Co{c[3]}-k{c[4]}{c[5]}-s{c[6][0]}{c[6][1]}"
        for i, c in enumerate(CONV_CASES)
    ],
)
def test_conv2d_bit_exact(isa, index, case):
    h, w_, ci, co, kh, kw, stride, pads, relu = case
    seed = CONV_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, (h, w_, ci))
    x[::3, ::2] = -0.0
    w = random_f32(rng, (co, kh, kw, ci))
    w[::2, 0, 0] = np.inf  # a padded tap must be skipped, not added as 0 * inf = NaN
    b = random_f32(rng, co)
    msg = f"isa={isa} seed={seed} case={case}"
    want = K.conv2d_f32(x, w, b, *stride, *pads, relu=relu)
    got = K.conv2d_f32(x, w, b, *stride, *pads, relu=relu, isa=isa)
    assert_same_bits(got, want, msg)
    ranges = row_splits(want.shape[0], seed)
    got = K.conv2d_f32(
        guarded(x), guarded(w), guarded(b), *stride, *pads, relu=relu, isa=isa, row_ranges=ranges
    )
    assert_same_bits(got, want, f"{msg} row_ranges={ranges}")
    got = K.conv2d_f32(
        guarded(x, False),
        guarded(w, False),
        b,
        *stride,
        *pads,
        relu=relu,
        isa=isa,
        row_ranges=[(0, 1)],
    )
    assert np.isnan(got[1:]).all(), f"{msg}: wrote outside row range (0, 1)"


@pytest.mark.parametrize(
    "index,case",
    list(enumerate(CONV_CASES[1:], 1)),
    ids=[f"seed{CONV_SEED + i}" for i in range(1, len(CONV_CASES))],
)
def test_conv2d_reference_within_tolerance_of_float64(index, case):
    """The oracle itself against float64 (finite weights): 1e-5 of the sum of |terms|."""
    h, w_, ci, co, kh, kw, stride, pads, relu = case
    rng = np.random.default_rng(CONV_SEED + index)
    x, w, b = random_f32(rng, (h, w_, ci)), random_f32(rng, (co, kh, kw, ci)), random_f32(rng, co)
    exact, mag = conv_exact(x, w, b, stride, pads, relu)
    assert_within(
        K.conv2d_f32(x, w, b, *stride, *pads, relu=relu),
        exact,
        mag,
        f"seed={CONV_SEED + index} case={case}",
    )


# --- FC ------------------------------------------------------------------------------------

FC_SEED = BASE_SEED + 8000
FC_CASES = list(itertools.product([1, 3, 15, 16, 17, 63, 64, 65, 130, 2048], [1, 3, 4, 5, 9]))


def bitplanes(codes, in_features):
    """8 sign planes of unsigned codes [O, C]: stored bit 1 (= -1 digit) where bit b of the code
    is 0."""
    words = (in_features + 63) // 64
    planes = np.zeros((8, codes.shape[0], words), np.uint64)
    for b in range(8):
        padded = np.zeros((codes.shape[0], words * 64), bool)
        padded[:, :in_features] = ((codes >> b) & 1) == 0
        planes[b] = np.packbits(padded, axis=-1, bitorder="little").view("<u8")
    return planes


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "index,in_features,out_features",
    [(i, *c) for i, c in enumerate(FC_CASES)],
    ids=[f"seed{FC_SEED + i}-C{c}-O{o}" for i, (c, o) in enumerate(FC_CASES)],
)
def test_fc_within_tolerance(isa, index, in_features, out_features):
    seed = FC_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, in_features)
    bias = random_f32(rng, out_features)
    msg = f"isa={isa} seed={seed} C={in_features} O={out_features}"
    xd = x.astype(np.float64)

    w = random_f32(rng, (out_features, in_features))
    exact = w.astype(np.float64) @ xd + bias
    mag = np.abs(w.astype(np.float64)) @ np.abs(xd) + np.abs(bias)
    assert_within(
        K.fc_f32(guarded(x), guarded(w), guarded(bias), isa=isa), exact, mag, f"{msg} f32"
    )

    q = rng.integers(-127, 128, (out_features, in_features)).astype(np.int8)
    ws = np.abs(random_f32(rng, out_features, 0.01)) + np.float32(1e-4)
    qd = q.astype(np.float64)
    exact = ws * (qd @ xd) + bias
    mag = ws * (np.abs(qd) @ np.abs(xd)) + np.abs(bias)
    assert_within(
        K.fc_qs8(guarded(x, False), guarded(q), guarded(ws), bias, isa=isa),
        exact,
        mag,
        f"{msg} qs8",
    )

    codes = rng.integers(0, 256, (out_features, in_features))
    codes[0, 0] = 0
    codes[-1, -1] = 255
    wd = (2 * codes - 255).astype(np.float64)
    exact = ws * (wd @ xd) + bias
    mag = ws * (np.abs(wd) @ np.abs(xd)) + np.abs(bias)
    planes = bitplanes(codes, in_features)
    assert_within(
        K.fc_bitplane8(guarded(x), guarded(planes), ws, bias, isa=isa),
        exact,
        mag,
        f"{msg} bitplane8",
    )


# --- pools and element-wise ----------------------------------------------------------------

POOL_SEED = BASE_SEED + 9000
POOL_CASES = [
    (k, s, z, c)
    for (k, s), z, c in itertools.product(
        [((2, 2), (2, 2)), ((2, 1), (2, 1)), ((1, 2), (1, 2)), ((3, 3), (2, 2)), ((3, 2), (1, 1))],
        [(7, 7), (8, 8), (7, 8), (3, 5)],
        [1, 17, 64],
    )
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "index,kernel,stride,size,channels",
    [(i, *c) for i, c in enumerate(POOL_CASES)],
    ids=[
        f"seed{POOL_SEED + i}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-{z[0]}x{z[1]}-C{c}"
        for i, (k, s, z, c) in enumerate(POOL_CASES)
    ],
)
def test_pools_bit_exact(isa, index, kernel, stride, size, channels):
    seed = POOL_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, size + (channels,))
    msg = f"isa={isa} seed={seed} kernel={kernel} stride={stride} size={size} C={channels}"
    want = K.avgpool(x, *kernel, *stride)
    assert_same_bits(K.avgpool(guarded(x), *kernel, *stride, isa=isa), want, msg)
    ranges = row_splits(want.shape[0], seed)
    assert_same_bits(
        K.avgpool(guarded(x, False), *kernel, *stride, isa=isa, row_ranges=ranges),
        want,
        f"{msg} row_ranges={ranges}",
    )
    assert_same_bits(K.global_avgpool(guarded(x), isa=isa), K.global_avgpool(x), msg)


EW_SEED = BASE_SEED + 9500


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_elementwise_bit_exact(isa, channels):
    seed = EW_SEED + channels
    rng = np.random.default_rng(seed)
    x = random_f32(rng, (3, 5, channels), 3.0)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, SPECIALS.size)] = SPECIALS
    s, b = random_f32(rng, channels), random_f32(rng, channels)
    y = random_f32(rng, x.shape)
    msg = f"isa={isa} seed={seed} C={channels}"
    for inplace in (False, True):
        m = f"{msg} inplace={inplace}"
        assert_same_bits(K.affine(x, s, b, inplace=inplace, isa=isa), K.affine(x, s, b), m)
        assert_same_bits(K.prelu(x, s, inplace=inplace, isa=isa), K.prelu(x, s), m)
        assert_same_bits(K.mul_channel(x, s, inplace=inplace, isa=isa), K.mul_channel(x, s), m)
        assert_same_bits(K.relu(x, inplace=inplace, isa=isa), K.relu(x), m)
        assert_same_bits(K.add(x, y, inplace=inplace, isa=isa), K.add(x, y), m)
        assert_same_bits(K.sigmoid(x, inplace=inplace, isa=isa), K.sigmoid(x), m)
    assert_same_bits(K.affine(guarded(x), guarded(s), guarded(b), isa=isa), K.affine(x, s, b), msg)
    assert_same_bits(K.add(guarded(x, False), guarded(y), isa=isa), K.add(x, y), msg)


# --- ISA selection -------------------------------------------------------------------------


def test_unsupported_isa_is_a_value_error():
    z = np.zeros((2, 2, 3), np.float32)
    for bad in ("neon", "sse9", ""):
        if bad in ISAS:
            continue
        with pytest.raises(ValueError, match=re.escape(f"isa '{bad}'")):
            K.dwconv3x3_f32(
                z,
                None,
                np.zeros((3, 9), np.float32),
                np.zeros(3, np.float32),
                np.zeros(3, np.float32),
                isa=bad,
            )
        with pytest.raises(ValueError, match="isa"):
            K.epilogue(z, isa=bad)


def test_scalar_is_always_supported():
    assert ISAS[0] == "scalar"
