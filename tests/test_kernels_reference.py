"""The portable microkernels (qbinfer._testing.kernels) against independent references.

References: PyTorch for convolutions, pools, concat and element-wise ops; numpy float64 for
the FC encodings. The binary conv and the integer part of the INT8 depthwise conv must match
exactly; so must copies and single-rounding ops (concat, affine, relu, prelu, add,
mul_channel).

Float tolerance ("1e-5 relative"): |got - ref| <= 1e-5 * M, where ref is computed in float64
and M is the same expression evaluated on absolute values (e.g. sum |u * w| * |scale| +
|bias| for a conv). f32 rounding error is proportional to M, not to |ref|, which can be ~0
where terms cancel; the kernels' actual error is below 1e-6 * M.

Random cases take their seed from BASE_SEED and the case index; it is in the test id and in
every assertion message, so a failure replays with the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qbinfer
from qbinfer._testing import kernels as K

torch = pytest.importorskip("torch", reason="the kernel references use PyTorch")
F = torch.nn.functional

BASE_SEED = 0x6B_E2_A1

RTOL = 1e-5
F32 = np.float32

# Each family draws its case seeds from its own range: seed = <FAMILY>_SEED + case index.
BCONV_SEED = BASE_SEED
DW_SEED = BASE_SEED + 2000
QS8_SEED = BASE_SEED + 3000
CONV_SEED = BASE_SEED + 5000
POOL_SEED = BASE_SEED + 6000


# --- helpers -----------------------------------------------------------------------------


def to_nchw(x_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_hwc, np.float64)).permute(2, 0, 1)[None]


def from_nchw(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).contiguous().numpy()


def assert_within_magnitude(got, ref, magnitude, msg, rtol=RTOL):
    """|got - ref| <= rtol * magnitude, elementwise (see the module docstring)."""
    assert got.dtype == np.float32, f"{msg}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{msg}: shape {got.shape} != {ref.shape}"
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= rtol * magnitude)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {bad.size} values off by more than {rtol} x magnitude;"
            f" first at {i}: got {got[i]!r}, want {ref[i]!r}, magnitude {magnitude[i]!r}"
        )


def assert_bits_equal(got, want, msg):
    assert got.dtype == want.dtype == np.float32, f"{msg}: dtypes {got.dtype}, {want.dtype}"
    assert got.shape == want.shape, f"{msg}: shape {got.shape} != {want.shape}"
    same = got.view(np.uint32) == want.view(np.uint32)
    if not same.all():
        i = tuple(np.argwhere(~same)[0])
        raise AssertionError(
            f"{msg}: {int((~same).sum())} of {same.size} floats differ; first "
            f"at {i}: got {got[i]!r}, want {want[i]!r}"
        )


def pack_bits(minus_one: np.ndarray) -> np.ndarray:
    """The bit contract in numpy, written independently of qbinfer.bitpack: bool [..., C]
    (True = -1) -> little-endian uint64 words [..., ceil(C/64)], tail bits 0."""
    channels = minus_one.shape[-1]
    words = (channels + 63) // 64
    padded = np.zeros(minus_one.shape[:-1] + (words * 64,), dtype=bool)
    padded[..., :channels] = minus_one
    return np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little")).view("<u8")


def random_pm1(rng, shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def random_f32(rng, shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def case_ids(cases, base, fmt):
    """Test ids that start with the case's seed, base + index."""
    return [f"seed{base + i}-" + fmt(*c) for i, c in enumerate(cases)]


# --- binary conv -------------------------------------------------------------------------


def torch_binary_dot(a_hwc, w_okkc, kernel, padding):
    """Exact integer dot of ±1 tensors via float64 conv: a [H,W,Ci], w [Co,k,k,Ci]."""
    a = to_nchw(a_hwc)
    w = torch.from_numpy(w_okkc.astype(np.float64)).permute(0, 3, 1, 2)
    if kernel == 3 and padding == "one":
        a, pad = F.pad(a, (1, 1, 1, 1), value=1.0), 0
    else:
        pad = kernel // 2
    dot = from_nchw(F.conv2d(a, w, padding=pad))
    as_int = np.rint(dot).astype(np.int64)
    assert (as_int == dot).all()
    return as_int


def check_bconv(a, w, kernel, padding, scale, bias, msg):
    """Both packings, the exact dot (unit epilogue), then the float epilogue bit for bit."""
    co, ci = w.shape[0], a.shape[-1]
    a_bits, w_bits = qbinfer.bitpack(a), qbinfer.bitpack(w)
    np.testing.assert_array_equal(a_bits, pack_bits(a < 0), err_msg=msg)
    np.testing.assert_array_equal(w_bits, pack_bits(w < 0), err_msg=msg)
    dot = torch_binary_dot(a, w, kernel, padding)

    unit = K.bconv2d(a_bits, w_bits, ci, np.ones(co, np.float32), np.zeros(co, np.float32), padding)
    np.testing.assert_array_equal(unit, dot.astype(np.float32), err_msg=f"{msg} (dot)")

    got = K.bconv2d(a_bits, w_bits, ci, scale, bias, padding)
    want = dot.astype(np.float32) * scale + bias  # float32: rounded multiply, rounded add
    assert_bits_equal(got, want, msg)


BCONV_CHANNELS = [1, 3, 40, 63, 64, 65, 72, 127, 128, 130, 200]
BCONV_HW = [(1, 1), (1, 7), (2, 3), (3, 2), (7, 7), (3, 1), (2, 2), (7, 3), (5, 6), (3, 3)]
BCONV_CASES = [
    (ci, k, pad, BCONV_HW[n % len(BCONV_HW)])
    for n, (ci, k, pad) in enumerate(
        (ci, k, pad) for ci in BCONV_CHANNELS for k in (1, 3) for pad in ("zero", "one")
    )
]


@pytest.mark.parametrize(
    "index,in_channels,kernel,padding,hw",
    [(i, *c) for i, c in enumerate(BCONV_CASES)],
    ids=case_ids(
        BCONV_CASES, BCONV_SEED, lambda ci, k, pad, hw: f"Ci{ci}-k{k}-{pad}-{hw[0]}x{hw[1]}"
    ),
)
def test_bconv_matches_torch_exactly(index, in_channels, kernel, padding, hw):
    seed = BCONV_SEED + index
    rng = np.random.default_rng(seed)
    co = int(rng.integers(1, 70))
    a = random_pm1(rng, hw + (in_channels,))
    w = random_pm1(rng, (co, kernel, kernel, in_channels))
    scale = random_f32(rng, co, 0.1)
    bias = random_f32(rng, co)
    check_bconv(
        a,
        w,
        kernel,
        padding,
        scale,
        bias,
        f"seed={seed} Ci={in_channels} Co={co} k={kernel} {padding} HxW={hw}",
    )


@pytest.mark.parametrize("padding", ["zero", "one"])
def test_bconv_near_overflow(padding):
    """|dot| reaches 9 * 2048 = 18432: every activation -1, and output channels whose taps are
    all +1, all -1, all equal to the activation, or random."""
    seed = BASE_SEED + 1000
    rng = np.random.default_rng(seed)
    ci, h, w_ = 2048, 4, 5
    a = np.full((h, w_, ci), -1.0, np.float32)
    a[0, 0] = random_pm1(rng, ci)  # one pixel breaks the symmetry at a corner
    w = random_pm1(rng, (6, 3, 3, ci))
    w[0], w[1], w[2] = 1.0, -1.0, -1.0
    w[3, :, :, : ci // 2] = -1.0
    scale = random_f32(rng, 6, 1e-3)
    bias = random_f32(rng, 6)
    dot = torch_binary_dot(a, w, 3, padding)
    assert np.abs(dot).max() == 9 * ci
    check_bconv(a, w, 3, padding, scale, bias, f"seed={seed} Ci=2048 {padding}")


def test_bconv_kernel1_ignores_padding_mode():
    rng = np.random.default_rng(BASE_SEED + 1001)
    a_bits = qbinfer.bitpack(random_pm1(rng, (3, 4, 70)))
    w_bits = qbinfer.bitpack(random_pm1(rng, (5, 1, 1, 70)))
    s, b = random_f32(rng, 5), random_f32(rng, 5)
    np.testing.assert_array_equal(
        K.bconv2d(a_bits, w_bits, 70, s, b, "zero"), K.bconv2d(a_bits, w_bits, 70, s, b, "one")
    )


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    st.integers(1, 140),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 4),
    st.sampled_from([1, 3]),
    st.sampled_from(["zero", "one"]),
    st.integers(0, 2**32 - 1),
)
def test_bconv_property(in_channels, h, w, co, kernel, padding, seed):
    rng = np.random.default_rng(seed)
    a = random_pm1(rng, (h, w, in_channels))
    wt = random_pm1(rng, (co, kernel, kernel, in_channels))
    check_bconv(
        a,
        wt,
        kernel,
        padding,
        random_f32(rng, co),
        random_f32(rng, co),
        f"seed={seed} Ci={in_channels} {h}x{w} Co={co} k={kernel} {padding}",
    )


# --- depthwise ---------------------------------------------------------------------------

STRIDES = [(1, 1), (2, 2), (2, 1), (1, 2)]
DW_SIZES = [(7, 5), (1, 1), (1, 4), (4, 1), (2, 2), (8, 8), (9, 6), (3, 3), (2, 7)]
DW_CASES = [
    (stride, size, [1, 3, 16, 33][n % 4], [1, 2, 4][n % 3], n % 2 == 0)
    for n, (stride, size) in enumerate((s, z) for s in STRIDES for z in DW_SIZES)
]


def torch_depthwise(u_hwc, w_rows, stride, multiplier):
    """The model's DS half: `multiplier` depthwise convs (groups=C, zero padding 1) of the
    same input, concatenated along channels. float64, so exact for integer inputs."""
    c = u_hwc.shape[-1]
    u = to_nchw(u_hwc)
    w = torch.from_numpy(np.asarray(w_rows, np.float64)).reshape(multiplier * c, 1, 3, 3)
    outs = [
        F.conv2d(u, w[j * c : (j + 1) * c], stride=stride, padding=1, groups=c)
        for j in range(multiplier)
    ]
    return from_nchw(torch.cat(outs, dim=1))


def biased_input(x, pre_bias):
    """u = x + pre_bias, rounded in float32 as the model materialises it."""
    if pre_bias is None:
        return x
    return (torch.from_numpy(x) + torch.from_numpy(pre_bias)).numpy()


@pytest.mark.parametrize(
    "index,stride,size,channels,multiplier,with_pre_bias",
    [(i, *c) for i, c in enumerate(DW_CASES)],
    ids=case_ids(
        DW_CASES,
        DW_SEED,
        lambda s, z, c, k, pb: (
            f"s{s[0]}{s[1]}-{z[0]}x{z[1]}-C{c}-k{k}" + ("-prebias" if pb else "")
        ),
    ),
)
def test_dwconv_f32_matches_torch(index, stride, size, channels, multiplier, with_pre_bias):
    seed = DW_SEED + index
    rng = np.random.default_rng(seed)
    kc = multiplier * channels
    x = random_f32(rng, size + (channels,))
    pre_bias = random_f32(rng, channels) if with_pre_bias else None
    w = random_f32(rng, (kc, 9))
    scale, bias = random_f32(rng, kc), random_f32(rng, kc)
    msg = (
        f"seed={seed} stride={stride} size={size} C={channels} k={multiplier} "
        f"pre_bias={with_pre_bias}"
    )

    got = K.dwconv3x3_f32(x, pre_bias, w, scale, bias, *stride, multiplier)
    u = biased_input(x, pre_bias)
    conv = torch_depthwise(u, w, stride, multiplier)
    ref = conv * scale.astype(np.float64) + bias
    magnitude = torch_depthwise(np.abs(u), np.abs(w), stride, multiplier) * np.abs(scale) + np.abs(
        bias
    )
    expected_hw = (-(-size[0] // stride[0]), -(-size[1] // stride[1]))
    assert got.shape == expected_hw + (kc,), msg
    assert_within_magnitude(got, ref, magnitude, msg)


def test_dwconv_f32_noncontiguous_input_is_copied():
    rng = np.random.default_rng(BASE_SEED + 2999)
    x = random_f32(rng, (5, 6, 8)).transpose(1, 0, 2)
    args = (None, random_f32(rng, (16, 9)), random_f32(rng, 16), random_f32(rng, 16), 2, 1, 2)
    np.testing.assert_array_equal(
        K.dwconv3x3_f32(x, *args), K.dwconv3x3_f32(np.ascontiguousarray(x), *args)
    )


def torch_fake_quant(u_hwc, s):
    """qu = clamp(round_half_even(u / s), -127, 127), the division in float32 element by
    element (a full divisor tensor, so no reciprocal shortcut can apply)."""
    u = torch.from_numpy(u_hwc)
    q = torch.clamp(torch.round(u / torch.full_like(u, float(s))), -127, 127)
    return q.numpy()


def dynamic_scale(u):
    s = np.float32(np.abs(u).max()) / np.float32(127)  # float32 division
    return s if s > 0 else np.float32(1)


# mode: "static" (a random calibrated scale), "ties" (a power-of-two scale and inputs on
# the half-step grid, so u / s is exactly k + 0.5 often, and beyond the clamp range),
# "dynamic" (None: max|u| / 127).
QS8_CASES = [
    (stride, size, mode, [1, 2, 4][n % 3], [3, 16, 33][n % 3])
    for n, (stride, size, mode) in enumerate(
        (s, z, m)
        for s in STRIDES
        for z in [(7, 5), (1, 1), (8, 6)]
        for m in ("static", "ties", "dynamic")
    )
]


@pytest.mark.parametrize(
    "index,stride,size,mode,multiplier,channels",
    [(i, *c) for i, c in enumerate(QS8_CASES)],
    ids=case_ids(
        QS8_CASES, QS8_SEED, lambda s, z, m, k, c: f"s{s[0]}{s[1]}-{z[0]}x{z[1]}-{m}-C{c}-k{k}"
    ),
)
def test_dwconv_qs8_matches_torch_fake_quant(index, stride, size, mode, multiplier, channels):
    seed = QS8_SEED + index
    rng = np.random.default_rng(seed)
    kc = multiplier * channels
    if mode == "ties":
        s = np.float32(2.0**-5)
        x = (rng.integers(-600, 600, size + (channels,)) * (s / 2)).astype(np.float32)
        pre_bias = (rng.integers(-20, 20, channels) * (s / 2)).astype(np.float32)
    else:
        x = random_f32(rng, size + (channels,), 2.0)
        pre_bias = random_f32(rng, channels, 0.5) if index % 2 else None
        s = np.float32(rng.uniform(0.005, 0.03))  # small enough that some inputs clamp
    u = biased_input(x, pre_bias)
    if mode == "dynamic":
        assert K.dwconv_input_absmax(x, pre_bias) == np.float32(np.abs(u).max())
        s = dynamic_scale(u)
    input_scale = None if mode == "dynamic" else float(s)
    w = rng.integers(-127, 128, (kc, 9)).astype(np.int8)
    w[0, :2] = (-127, 127)
    w_scale = np.abs(random_f32(rng, kc, 0.01)) + np.float32(1e-3)
    scale, bias = random_f32(rng, kc), random_f32(rng, kc)
    msg = f"seed={seed} stride={stride} size={size} mode={mode} C={channels} k={multiplier} s={s!r}"

    qu = torch_fake_quant(u, s)
    if mode == "ties":
        assert (np.abs(u / s - np.trunc(u / s)) == 0.5).any(), msg  # ties really occur
    acc = torch_depthwise(qu, w, stride, multiplier)
    acc_int = np.rint(acc).astype(np.int64)
    assert (acc_int == acc).all(), msg

    # Integer part exact: with a unit epilogue, out / (s * w_scale) is the accumulator.
    unit = K.dwconv3x3_qs8(
        x,
        pre_bias,
        input_scale,
        w,
        w_scale,
        np.ones(kc, np.float32),
        np.zeros(kc, np.float32),
        *stride,
        multiplier,
    )
    requant = (np.float32(s) * w_scale).astype(np.float64)
    rebuilt = unit.astype(np.float64) / requant
    assert np.abs(rebuilt - np.rint(rebuilt)).max() < 0.05, msg
    np.testing.assert_array_equal(np.rint(rebuilt).astype(np.int64), acc_int, err_msg=msg)

    got = K.dwconv3x3_qs8(x, pre_bias, input_scale, w, w_scale, scale, bias, *stride, multiplier)
    ref = acc * requant * scale + bias
    magnitude = np.abs(acc) * requant * np.abs(scale) + np.abs(bias)
    assert_within_magnitude(got, ref, magnitude, msg)


@pytest.mark.parametrize("input_scale", [0.1, 0.3, 3.0, 0.0123])
def test_dwconv_qs8_quantizes_by_true_division(input_scale):
    """Values within two ulps of the half-way points k + 0.5, where nearbyint(u / s) and a
    reciprocal shortcut nearbyint(u * (1 / s)) disagree. A 1x1 image and a centre-tap-only
    weight of 1 make each output q * s, so the codes read back exactly."""
    s = np.float32(input_scale)
    half_points = ((np.arange(-135, 135) + 0.5) * np.float64(s)).astype(np.float32)
    up, down = [half_points], [half_points]
    for _ in range(2):
        up.append(np.nextafter(up[-1], np.float32(np.inf)))
        down.append(np.nextafter(down[-1], np.float32(-np.inf)))
    u = np.concatenate(up + down[1:])
    want = torch_fake_quant(u.reshape(1, 1, -1), s)
    shortcut = np.clip(np.round(u * (np.float32(1) / s)), -127, 127)
    assert (want.reshape(-1) != shortcut).any()  # the case really tells the two apart

    n = u.size
    w = np.zeros((n, 9), np.int8)
    w[:, 4] = 1
    ones = np.ones(n, np.float32)
    got = K.dwconv3x3_qs8(u.reshape(1, 1, n), None, float(s), w, ones, ones, np.zeros(n, F32))
    np.testing.assert_array_equal(
        np.rint(got.astype(np.float64) / s), want, err_msg=f"input_scale={s!r}"
    )


def test_dwconv_qs8_all_zero_input_uses_scale_one():
    x = np.zeros((3, 4, 5), np.float32)
    assert K.dwconv_input_absmax(x) == 0.0
    w = np.full((5, 9), 7, np.int8)
    bias = np.arange(5, dtype=np.float32)
    got = K.dwconv3x3_qs8(x, None, None, w, np.ones(5, np.float32), np.ones(5, np.float32), bias)
    np.testing.assert_array_equal(got, np.broadcast_to(bias, (3, 4, 5)))


def test_dwconv_input_absmax_is_exact_and_ignores_nan():
    rng = np.random.default_rng(BASE_SEED + 3999)
    x = random_f32(rng, (4, 5, 7))
    b = random_f32(rng, 7)
    assert K.dwconv_input_absmax(x, b) == np.abs(biased_input(x, b)).max()
    x[1, 1, 1] = np.nan
    x[2, 2, 2] = -50.0
    assert K.dwconv_input_absmax(x, None) == 50.0


# --- fully connected ---------------------------------------------------------------------

FC_IN = [1, 63, 64, 65, 2048]
FC_CASES = [(c, o) for c in FC_IN for o in (1, 10, 37)]
FC_SEED = {"f32": BASE_SEED + 4000, "qs8": BASE_SEED + 4100, "bitplane8": BASE_SEED + 4200}


def fc_ids(encoding):
    return case_ids(FC_CASES, FC_SEED[encoding], lambda c, o: f"C{c}-O{o}")


@pytest.mark.parametrize(
    "index,in_features,out_features", [(i, *c) for i, c in enumerate(FC_CASES)], ids=fc_ids("f32")
)
def test_fc_f32(index, in_features, out_features):
    seed = FC_SEED["f32"] + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, in_features)
    w = random_f32(rng, (out_features, in_features), 0.05)
    bias = random_f32(rng, out_features)
    got = K.fc_f32(x, w, bias)
    ref = w.astype(np.float64) @ x.astype(np.float64) + bias
    magnitude = np.abs(w).astype(np.float64) @ np.abs(x) + np.abs(bias)
    assert_within_magnitude(got, ref, magnitude, f"seed={seed} C={in_features} O={out_features}")


@pytest.mark.parametrize(
    "index,in_features,out_features", [(i, *c) for i, c in enumerate(FC_CASES)], ids=fc_ids("qs8")
)
def test_fc_qs8(index, in_features, out_features):
    seed = FC_SEED["qs8"] + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, in_features)
    q = rng.integers(-127, 128, (out_features, in_features)).astype(np.int8)
    w_scale = np.abs(random_f32(rng, out_features, 0.01))
    bias = random_f32(rng, out_features)
    got = K.fc_qs8(x, q, w_scale, bias)
    ref = w_scale * (q.astype(np.float64) @ x) + bias
    magnitude = w_scale * (np.abs(q).astype(np.float64) @ np.abs(x)) + np.abs(bias)
    assert_within_magnitude(got, ref, magnitude, f"seed={seed} C={in_features} O={out_features}")


@pytest.mark.parametrize(
    "index,in_features,out_features",
    [(i, *c) for i, c in enumerate(FC_CASES)],
    ids=fc_ids("bitplane8"),
)
def test_fc_bitplane8(index, in_features, out_features):
    seed = FC_SEED["bitplane8"] + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, in_features)
    codes = rng.integers(0, 256, (out_features, in_features)).astype(np.uint8)
    codes[0, 0] = 0
    if out_features > 1:
        codes[1] = 255
    # docs/format.md: plane b holds the ±1 digit 2*bit_b(B) - 1; stored bit = 1 - bit_b(B).
    planes = np.stack([pack_bits(((codes >> b) & 1) == 0) for b in range(8)])
    w_scale = np.abs(random_f32(rng, out_features, 1e-3))
    bias = random_f32(rng, out_features)
    msg = f"seed={seed} C={in_features} O={out_features}"

    got = K.fc_bitplane8(x, planes, w_scale, bias)
    w = w_scale[:, None].astype(np.float64) * (2.0 * codes - 255.0)
    ref = x.astype(np.float64) @ w.T + bias
    magnitude = np.abs(x).astype(np.float64) @ np.abs(w).T + np.abs(bias)
    assert_within_magnitude(got, ref, magnitude, msg)


# --- dense conv --------------------------------------------------------------------------


def torch_conv2d(x_hwc, w_okkc, bias, stride, pads, relu):
    """pads = (top, left, bottom, right), zero padding; float64."""
    x = F.pad(to_nchw(x_hwc), (pads[1], pads[3], pads[0], pads[2]))
    w = torch.from_numpy(w_okkc.astype(np.float64)).permute(0, 3, 1, 2)
    y = F.conv2d(
        x, w, None if bias is None else torch.from_numpy(bias.astype(np.float64)), stride=stride
    )
    return from_nchw(torch.relu(y) if relu else y)


# (size, Ci, Co, (kh, kw), stride, pads)
CONV_CASES = [
    ((32, 32), 3, 16, (3, 3), (2, 2), (1, 1, 1, 1)),  # the stem
    ((15, 17), 3, 16, (3, 3), (2, 2), (1, 1, 1, 1)),  # the stem on odd sizes
    ((1, 1), 5, 4, (1, 1), (1, 1), (0, 0, 0, 0)),  # a 1x1 conv on a pooled vector
    ((1, 1), 2, 3, (3, 3), (1, 1), (1, 1, 1, 1)),
    ((6, 7), 4, 9, (3, 1), (1, 2), (2, 0, 1, 0)),
    ((5, 5), 1, 1, (2, 3), (2, 1), (0, 2, 1, 1)),
    ((9, 4), 8, 5, (3, 3), (1, 1), (0, 0, 0, 0)),
    ((8, 8), 7, 12, (5, 5), (3, 2), (2, 2, 2, 2)),
    ((2, 9), 3, 2, (1, 3), (1, 1), (0, 2, 0, 2)),
]


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize(
    "index,size,ci,co,kernel,stride,pads",
    [(i, *c) for i, c in enumerate(CONV_CASES)],
    ids=case_ids(
        CONV_CASES,
        CONV_SEED,
        lambda z, ci, co, k, s, p: (
            f"{z[0]}x{z[1]}-{ci}to{co}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, p))}"
        ),
    ),
)
def test_conv2d_f32_matches_torch(index, size, ci, co, kernel, stride, pads, relu):
    seed = CONV_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, size + (ci,))
    w = random_f32(rng, (co,) + kernel + (ci,), 0.3)
    bias = random_f32(rng, co) if index % 3 else None
    msg = f"seed={seed} size={size} {ci}->{co} k={kernel} s={stride} pads={pads} relu={relu}"
    got = K.conv2d_f32(x, w, bias, *stride, *pads, relu=relu)
    ref = torch_conv2d(x, w, bias, stride, pads, relu)
    magnitude = torch_conv2d(
        np.abs(x), np.abs(w), None if bias is None else np.abs(bias), stride, pads, False
    )
    assert_within_magnitude(got, ref, magnitude, msg)


# --- pools and concat --------------------------------------------------------------------

POOL_CASES = [
    (k, s, z)
    for k, s in [
        ((2, 2), (2, 2)),
        ((2, 1), (2, 1)),
        ((1, 2), (1, 2)),
        ((3, 3), (2, 2)),
        ((3, 2), (1, 1)),
    ]
    for z in [(7, 7), (8, 8), (7, 8), (8, 7), (3, 5), (4, 3)]
]


@pytest.mark.parametrize(
    "index,kernel,stride,size",
    [(i, *c) for i, c in enumerate(POOL_CASES)],
    ids=case_ids(
        POOL_CASES, POOL_SEED, lambda k, s, z: f"k{k[0]}{k[1]}-s{s[0]}{s[1]}-{z[0]}x{z[1]}"
    ),
)
def test_avgpool_matches_torch_ceil_mode(index, kernel, stride, size):
    seed = POOL_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, size + (5,))
    got = K.avgpool(x, *kernel, *stride)
    ref = from_nchw(
        F.avg_pool2d(to_nchw(x), kernel, stride, ceil_mode=True, count_include_pad=False)
    )
    magnitude = from_nchw(
        F.avg_pool2d(to_nchw(np.abs(x)), kernel, stride, ceil_mode=True, count_include_pad=False)
    )
    assert_within_magnitude(
        got, ref, magnitude, f"seed={seed} kernel={kernel} stride={stride} size={size}"
    )


GAP_SIZES = [(1, 1), (7, 7), (3, 5), (14, 14)]
GAP_SEED = BASE_SEED + 6500


@pytest.mark.parametrize(
    "index,size",
    list(enumerate(GAP_SIZES)),
    ids=case_ids(GAP_SIZES, GAP_SEED, lambda h, w: f"{h}x{w}"),
)
def test_global_avgpool_matches_torch(index, size):
    seed = GAP_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, size + (70,))
    got = K.global_avgpool(x)
    ref = F.adaptive_avg_pool2d(to_nchw(x), 1)[0, :, 0, 0].numpy()
    magnitude = F.adaptive_avg_pool2d(to_nchw(np.abs(x)), 1)[0, :, 0, 0].numpy()
    assert_within_magnitude(got, ref, magnitude, f"seed={seed} size={size}")


def test_concat_matches_torch_cat_with_repeats():
    seed = BASE_SEED + 6900
    rng = np.random.default_rng(seed)
    a, b = random_f32(rng, (3, 5, 7)), random_f32(rng, (3, 5, 64))
    c = random_f32(rng, (10, 6, 1))[::2, ::2]  # non-contiguous, copied by the binding
    for inputs in ([a], [a, b], [a, a, a, a], [b, a, b], [c, c]):
        got = K.concat(inputs)
        want = torch.cat([torch.from_numpy(np.ascontiguousarray(t)) for t in inputs], -1)
        assert_bits_equal(got, want.numpy(), f"seed={seed} shapes={[t.shape for t in inputs]}")
    assert K.concat((a, b)).shape == (3, 5, 71)


# --- element-wise ------------------------------------------------------------------------

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, -3e38], np.float32)


def elementwise_input(seed, shape=(4, 3, 11)):
    rng = np.random.default_rng(seed)
    x = random_f32(rng, shape, 3.0)
    flat = x.reshape(-1)
    flat[: SPECIALS.size] = SPECIALS
    return rng, x


def check_exact_both_ways(call, want, msg):
    """Out of place and in place (out == in) must both equal the reference."""
    for inplace in (False, True):
        got = call(inplace)
        assert got.dtype == np.float32 and got.shape == want.shape, msg
        np.testing.assert_array_equal(got, want, err_msg=f"{msg} inplace={inplace}")


def test_affine_matches_torch():
    seed = BASE_SEED + 7000
    rng, x = elementwise_input(seed)
    s, b = random_f32(rng, 11), random_f32(rng, 11)
    t = torch.from_numpy(x)
    want = (t * torch.from_numpy(s) + torch.from_numpy(b)).numpy()  # two roundings, no FMA
    check_exact_both_ways(lambda ip: K.affine(x, s, b, inplace=ip), want, f"seed={seed}")


def test_prelu_matches_torch():
    seed = BASE_SEED + 7001
    rng, x = elementwise_input(seed)
    slope = random_f32(rng, 11)
    want = from_nchw(F.prelu(torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(slope)))
    check_exact_both_ways(lambda ip: K.prelu(x, slope, inplace=ip), want, f"seed={seed}")


def test_relu_matches_torch():
    seed = BASE_SEED + 7002
    _, x = elementwise_input(seed)
    want = torch.relu(torch.from_numpy(x)).numpy()
    check_exact_both_ways(lambda ip: K.relu(x, inplace=ip), want, f"seed={seed}")


def test_add_matches_torch():
    seed = BASE_SEED + 7003
    rng, a = elementwise_input(seed)
    b = random_f32(rng, a.shape)
    want = (torch.from_numpy(a) + torch.from_numpy(b)).numpy()
    check_exact_both_ways(lambda ip: K.add(a, b, inplace=ip), want, f"seed={seed}")


def test_mul_channel_matches_torch():
    seed = BASE_SEED + 7004
    rng, x = elementwise_input(seed)
    s = random_f32(rng, 11)
    want = (torch.from_numpy(x) * torch.from_numpy(s)).numpy()
    check_exact_both_ways(lambda ip: K.mul_channel(x, s, inplace=ip), want, f"seed={seed}")


def test_sigmoid_matches_torch():
    """Within 1e-5 relative of float64 (exp differs by an ulp between libms); atol 1e-30
    covers results below float32's normal range, where the f32 exp has overflowed to 0."""
    seed = BASE_SEED + 7005
    _, x = elementwise_input(seed)
    x.reshape(-1)[-6:] = [-1000, -100, -88.5, 88.5, 100, 1000]
    ref = torch.sigmoid(torch.from_numpy(x.astype(np.float64))).numpy()
    for inplace in (False, True):
        got = K.sigmoid(x, inplace=inplace)
        np.testing.assert_allclose(
            got, ref, rtol=RTOL, atol=1e-30, err_msg=f"seed={seed} inplace={inplace}"
        )


def test_elementwise_accepts_any_rank():
    x = np.arange(6, dtype=np.float32) - 3
    np.testing.assert_array_equal(K.relu(x.reshape(2, 3)), np.maximum(x, 0).reshape(2, 3))
    np.testing.assert_array_equal(K.relu(np.array(-2.0, np.float32)), 0.0)
    assert K.add(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 4)
    np.testing.assert_array_equal(K.mul_channel(x, np.full(6, 2, np.float32)), 2 * x)


# --- binding errors ----------------------------------------------------------------------


def z(shape, dtype=F32):
    return np.zeros(shape, dtype)


def bits(shape, fill=0):
    return np.full(shape, fill, np.uint64)


def dw_f32(**over):
    args = dict(
        x=z((4, 4, 3)),
        pre_bias=None,
        w=z((6, 9)),
        scale=z(6),
        bias=z(6),
        stride_h=1,
        stride_w=1,
        multiplier=2,
    )
    args.update(over)
    return K.dwconv3x3_f32(**args)


def dw_qs8(**over):
    args = dict(
        x=z((4, 4, 3)),
        pre_bias=None,
        input_scale=0.1,
        w=z((6, 9), np.int8),
        w_scale=z(6),
        scale=z(6),
        bias=z(6),
        stride_h=1,
        stride_w=1,
        multiplier=2,
    )
    args.update(over)
    return K.dwconv3x3_qs8(**args)


def bconv(**over):
    args = dict(
        x_bits=bits((3, 3, 2)),
        w_bits=bits((4, 3, 3, 2)),
        in_channels=70,
        scale=z(4),
        bias=z(4),
        padding="zero",
    )
    args.update(over)
    return K.bconv2d(**args)


ERRORS = {
    "bconv-x-float": (
        lambda: bconv(x_bits=z((3, 3, 2))),
        TypeError,
        "x_bits must have dtype uint64",
    ),
    "bconv-x-list": (lambda: bconv(x_bits=[[1]]), TypeError, r"x_bits must be a numpy\.ndarray"),
    "bconv-words": (
        lambda: bconv(in_channels=200),
        ValueError,
        r"x_bits must have shape \(H, W, 4\)",
    ),
    "bconv-x-rank": (lambda: bconv(x_bits=bits((3, 2))), ValueError, "x_bits must have shape"),
    "bconv-empty": (lambda: bconv(x_bits=bits((0, 3, 2))), ValueError, "named sizes >= 1"),
    "bconv-kernel2": (lambda: bconv(w_bits=bits((4, 2, 2, 2))), ValueError, "k 1 or 3"),
    "bconv-not-square": (lambda: bconv(w_bits=bits((4, 3, 1, 2))), ValueError, "k 1 or 3"),
    "bconv-padding": (lambda: bconv(padding="reflect"), ValueError, "'zero' or 'one'"),
    "bconv-channels0": (lambda: bconv(in_channels=0), ValueError, "in_channels must be >= 1"),
    "bconv-channels-neg": (lambda: bconv(in_channels=-5), ValueError, "in_channels must be >= 1"),
    "bconv-channels-huge": (lambda: bconv(in_channels=2**40), ValueError, "too large"),
    "bconv-scale-shape": (lambda: bconv(scale=z(3)), ValueError, r"scale must have shape \(4,\)"),
    "bconv-bias-dtype": (
        lambda: bconv(bias=z(4, np.float64)),
        TypeError,
        "bias must have dtype float32",
    ),
    "bconv-x-tail": (lambda: bconv(x_bits=bits((3, 3, 2), 1 << 63)), ValueError, "past channel 70"),
    "bconv-w-tail": (
        lambda: bconv(w_bits=bits((4, 3, 3, 2), 1 << 6)),
        ValueError,
        "w_bits has bits set",
    ),
    "bconv-swapped": (lambda: bconv(x_bits=bits((3, 3, 2)).astype(">u8")), TypeError, "uint64"),
    "dw-x-f64": (
        lambda: dw_f32(x=z((4, 4, 3), np.float64)),
        TypeError,
        "x must have dtype float32",
    ),
    "dw-x-rank": (lambda: dw_f32(x=z((4, 3))), ValueError, r"x must have shape \(H, W, C\)"),
    "dw-stride": (lambda: dw_f32(stride_h=3), ValueError, r"stride must be .*got \(3, 1\)"),
    "dw-stride0": (lambda: dw_f32(stride_w=0), ValueError, "stride must be"),
    "dw-multiplier": (
        lambda: dw_f32(multiplier=3),
        ValueError,
        r"multiplier \* C = 3 \* 3 rows, got 6",
    ),
    "dw-multiplier0": (lambda: dw_f32(multiplier=0), ValueError, "multiplier must be >= 1"),
    "dw-w-taps": (
        lambda: dw_f32(w=z((6, 3, 3))),
        ValueError,
        r"w must have shape \(multiplier \* C, 9\)",
    ),
    "dw-pre-bias": (lambda: dw_f32(pre_bias=z(6)), ValueError, r"pre_bias must have shape \(3,\)"),
    "dw-scale": (lambda: dw_f32(scale=z(3)), ValueError, r"scale must have shape \(6,\)"),
    "qs8-w-float": (lambda: dw_qs8(w=z((6, 9))), TypeError, "w must have dtype int8"),
    "qs8-w-uint8": (lambda: dw_qs8(w=z((6, 9), np.uint8)), TypeError, "w must have dtype int8"),
    "qs8-w-128": (lambda: dw_qs8(w=np.full((6, 9), -128, np.int8)), ValueError, r"\[-127, 127\]"),
    "qs8-scale-zero": (
        lambda: dw_qs8(input_scale=0.0),
        ValueError,
        "input_scale must be finite and > 0",
    ),
    "qs8-scale-neg": (lambda: dw_qs8(input_scale=-1.0), ValueError, "input_scale must be"),
    "qs8-scale-nan": (lambda: dw_qs8(input_scale=float("nan")), ValueError, "input_scale must be"),
    "qs8-scale-inf": (lambda: dw_qs8(input_scale=float("inf")), ValueError, "input_scale must be"),
    "qs8-scale-huge": (lambda: dw_qs8(input_scale=1e300), ValueError, "input_scale must be"),
    "qs8-scale-underflow": (lambda: dw_qs8(input_scale=1e-300), ValueError, "input_scale must be"),
    "qs8-scale-str": (lambda: dw_qs8(input_scale="0.1"), TypeError, "input_scale must be a float"),
    "qs8-w-scale": (lambda: dw_qs8(w_scale=z(5)), ValueError, r"w_scale must have shape \(6,\)"),
    "absmax-0d": (lambda: K.dwconv_input_absmax(z(())), ValueError, "rank >= 1"),
    "absmax-pre-bias": (lambda: K.dwconv_input_absmax(z((2, 3)), z(2)), ValueError, "pre_bias"),
    "fc-x-rank": (
        lambda: K.fc_f32(z((1, 4)), z((2, 4)), z(2)),
        ValueError,
        r"x must have shape \(C,\)",
    ),
    "fc-w-shape": (
        lambda: K.fc_f32(z(4), z((2, 5)), z(2)),
        ValueError,
        r"w must have shape \(O, 4\)",
    ),
    "fc-bias": (
        lambda: K.fc_f32(z(4), z((2, 4)), z(3)),
        ValueError,
        r"bias must have shape \(2,\)",
    ),
    "fc-w-int": (
        lambda: K.fc_f32(z(4), z((2, 4), np.int8), z(2)),
        TypeError,
        "w must have dtype float32",
    ),
    "qs8fc-w-float": (
        lambda: K.fc_qs8(z(4), z((2, 4)), z(2), z(2)),
        TypeError,
        "w must have dtype int8",
    ),
    "qs8fc-w-scale": (
        lambda: K.fc_qs8(z(4), z((2, 4), np.int8), z(1), z(2)),
        ValueError,
        "w_scale",
    ),
    "bp8-planes-7": (
        lambda: K.fc_bitplane8(z(4), bits((7, 2, 1)), z(2), z(2)),
        ValueError,
        r"planes must have shape \(8, O, 1\)",
    ),
    "bp8-words": (
        lambda: K.fc_bitplane8(z(65), bits((8, 2, 1)), z(2), z(2)),
        ValueError,
        r"planes must have shape \(8, O, 2\)",
    ),
    "bp8-tail": (
        lambda: K.fc_bitplane8(z(4), bits((8, 2, 1), 16), z(2), z(2)),
        ValueError,
        "past channel 4",
    ),
    "bp8-planes-f32": (lambda: K.fc_bitplane8(z(4), z((8, 2, 1)), z(2), z(2)), TypeError, "uint64"),
    "conv-ci": (
        lambda: K.conv2d_f32(z((4, 4, 3)), z((2, 3, 3, 4))),
        ValueError,
        r"w must have shape \(Co, kh, kw, 3\)",
    ),
    "conv-pad": (
        lambda: K.conv2d_f32(z((4, 4, 3)), z((2, 3, 3, 3)), pad_top=3),
        ValueError,
        r"pad_top must be in \[0, 2\]",
    ),
    "conv-pad-neg": (
        lambda: K.conv2d_f32(z((4, 4, 3)), z((2, 3, 3, 3)), pad_right=-1),
        ValueError,
        "pad_right",
    ),
    "conv-stride": (
        lambda: K.conv2d_f32(z((4, 4, 3)), z((2, 3, 3, 3)), stride_h=0),
        ValueError,
        "stride_h must be >= 1",
    ),
    "conv-small": (
        lambda: K.conv2d_f32(z((1, 4, 3)), z((2, 3, 3, 3))),
        ValueError,
        "smaller than the kernel",
    ),
    "conv-bias": (
        lambda: K.conv2d_f32(z((4, 4, 3)), z((2, 3, 3, 3)), z(3)),
        ValueError,
        r"bias must have shape \(2,\)",
    ),
    "affine-scale": (
        lambda: K.affine(z((2, 3)), z(2), z(3)),
        ValueError,
        r"scale must have shape \(3,\)",
    ),
    "affine-0ch": (lambda: K.affine(z((2, 0)), z(0), z(0)), ValueError, "at least one channel"),
    "prelu-slope": (lambda: K.prelu(z((2, 3)), z((1, 3))), ValueError, "slope must have shape"),
    "relu-f64": (lambda: K.relu(z(3, np.float64)), TypeError, "x must have dtype float32"),
    "sigmoid-list": (lambda: K.sigmoid([1.0]), TypeError, r"numpy\.ndarray"),
    "add-shape": (lambda: K.add(z((2, 3)), z((3, 2))), ValueError, "same shape"),
    "add-broadcast": (lambda: K.add(z((2, 3)), z(3)), ValueError, "same shape"),
    "mul-channel": (
        lambda: K.mul_channel(z((2, 3)), z(2)),
        ValueError,
        r"s must have shape \(3,\)",
    ),
    "avgpool-small": (
        lambda: K.avgpool(z((1, 4, 2)), 2, 2, 2, 2),
        ValueError,
        "smaller than the kernel",
    ),
    "avgpool-kernel0": (
        lambda: K.avgpool(z((4, 4, 2)), 0, 2, 2, 2),
        ValueError,
        "kernel_h must be >= 1",
    ),
    "avgpool-stride": (lambda: K.avgpool(z((5, 5, 2)), 1, 1, 3, 3), ValueError, "stride <= kernel"),
    "avgpool-rank": (lambda: K.avgpool(z((4, 4)), 2, 2, 2, 2), ValueError, "x must have shape"),
    "gap-rank": (lambda: K.global_avgpool(z((4, 4, 2, 1))), ValueError, "x must have shape"),
    "concat-empty": (lambda: K.concat([]), ValueError, "must not be empty"),
    "concat-array": (lambda: K.concat(z((2, 3))), TypeError, "list or tuple"),
    "concat-leading": (lambda: K.concat([z((2, 3, 4)), z((2, 2, 4))]), ValueError, r"inputs\[1\]"),
    "concat-rank": (lambda: K.concat([z((2, 3, 4)), z((2, 3))]), ValueError, "leading shape"),
    "concat-dtype": (
        lambda: K.concat([z((2, 3)), z((2, 3), np.float64)]),
        TypeError,
        r"inputs\[1\] must have dtype float32",
    ),
    # An ISA argument names a supported ISA (qbinfer::isa_from_name); the message lists them.
    "isa-bconv": (lambda: bconv(isa="avx9000"), ValueError, r"isa 'avx9000' .*supported: scalar"),
    "isa-bitpack": (
        lambda: K.bitpack(z((2, 3)), isa="avx9000"),
        ValueError,
        r"isa 'avx9000' is not an ISA name",
    ),
    "isa-dwconv": (lambda: dw_f32(isa="sse9"), ValueError, r"isa 'sse9'"),
    "isa-epilogue": (lambda: K.epilogue(z((2, 2, 3)), isa=""), ValueError, r"isa ''"),
    "epilogue-clip-reversed": (
        lambda: K.epilogue(z((2, 2, 3)), clip=(1.0, 0.5)),
        ValueError,
        r"clip must be \(lo, hi\) with lo <= hi",
    ),
    "epilogue-clip-nan": (
        lambda: K.epilogue(z((2, 2, 3)), clip=(np.nan, 1.0)),
        ValueError,
        "neither NaN",
    ),
    "bconv-row-range-past-end": (
        lambda: bconv(isa="scalar", row_ranges=[(0, 4)]),
        ValueError,
        "row range",
    ),
    "bconv-row-range-reversed": (
        lambda: bconv(isa="scalar", row_ranges=[(2, 1)]),
        ValueError,
        "row range",
    ),
    "bconv-row-range-negative": (
        lambda: bconv(isa="scalar", row_ranges=[(-1, 2)]),
        ValueError,
        "row range",
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_binding_errors_raise(name):
    call, exc, pattern = ERRORS[name]
    with pytest.raises(exc, match=pattern):
        call()


def test_wrong_integer_argument_type_is_type_error():
    with pytest.raises(TypeError):
        K.avgpool(z((4, 4, 2)), 2.5, 2, 2, 2)
    with pytest.raises(TypeError):
        bconv(in_channels="70")


# --- fused epilogue ------------------------------------------------------------------------

EPI_SEED = BASE_SEED + 7000
EPI_SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, -3e38, 0.5, -0.5, 2.5, 1e10], F32
)


def epilogue_numpy(x, cs, res, slope, ps, pb, threshold, clip=None):
    """The steps of epilogue.h in numpy float32 (one IEEE operation each), independently of
    qbinfer: the oracle of the scalar kernel (every SIMD variant is held to the scalar one bit
    for bit by the kernel test plan, tests/test_kernels_simd.py)."""
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
        if clip is not None:
            # The CLIP op: both selects test v itself (NaN compares false and passes through).
            lo, hi = (np.float32(b) for b in clip)
            v = np.where(v < lo, lo, np.where(v > hi, hi, v))
        packed = None
        if threshold is not None:
            words = (c + 63) // 64
            padded = np.zeros((v.shape[0], words * 64), bool)
            padded[:, :c] = ~(v >= threshold)
            packed = (
                np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little"))
                .view("<u8")
                .reshape(x.shape[:-1] + (words,))
            )
    return v.reshape(x.shape), packed


def assert_same_float_bits(got, want, msg):
    """Equal bit for bit, NaN positions equal (payloads free)."""
    assert got.shape == want.shape, f"{msg}: shape {got.shape} != {want.shape}"
    gn, wn = np.isnan(got), np.isnan(want)
    same = np.where(gn | wn, gn == wn, got.view(np.uint32) == want.view(np.uint32))
    if not same.all():
        i = tuple(np.argwhere(~same)[0])
        raise AssertionError(f"{msg}: first difference at {i}: got {got[i]!r}, want {want[i]!r}")


# The clip step's bounds (lo <= hi, neither NaN): ReLU6, asymmetric, a single point, half and
# fully infinite, and signed zeros both ways round (equal as numbers, so both are valid).
EPI_CLIPS = [
    (0.0, 6.0),
    (-0.75, 2.5),
    (0.5, 0.5),
    (-np.inf, 0.25),
    (-1.0, np.inf),
    (-np.inf, np.inf),
    (-0.0, 0.0),
    (0.0, -0.0),
]


@pytest.mark.parametrize("channels", [1, 3, 7, 16, 17, 33, 64, 66, 100, 130, 192])
def test_epilogue_matches_numpy_every_step_subset(channels):
    seed = EPI_SEED + channels
    rng = np.random.default_rng(seed)
    hw = (3, 5)
    x = (rng.standard_normal(hw + (channels,)) * 2).astype(F32)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, EPI_SPECIALS.size)] = EPI_SPECIALS
    threshold = rng.standard_normal(channels).astype(F32)
    threshold[::5] = 0.0
    threshold[1::7] = -0.0
    if channels > 2:
        threshold[2] = np.nan
    x.reshape(-1, channels)[::3] = threshold  # ties: values equal to their threshold
    cs, slope, ps, pb = (rng.standard_normal(channels).astype(F32) for _ in range(4))
    slope[::4] = -0.0
    pb[::3] = -0.0
    # residual_channels: the whole width and the proper divisors the models repeat.
    for rc in [channels] + [channels // k for k in (2, 3, 4) if channels % k == 0]:
        residual = rng.standard_normal(hw + (rc,)).astype(F32)
        residual.reshape(-1)[:4] = [np.nan, -0.0, np.inf, 0.0]
        for subset in range(64):
            on = [bool(subset >> i & 1) for i in range(6)]
            clip = EPI_CLIPS[(subset + rc) % len(EPI_CLIPS)] if on[5] else None
            args = dict(
                channel_scale=cs if on[0] else None,
                residual=residual if on[1] else None,
                prelu_slope=slope if on[2] else None,
                post_scale=ps if on[3] else None,
                post_bias=pb if on[3] else None,
                threshold=threshold if on[4] else None,
            )
            msg = f"seed={seed} C={channels} rc={rc} subset={subset:06b} clip={clip}"
            want_f, want_b = epilogue_numpy(x, *args.values(), clip=clip)
            for write_float in (True, False):
                got_f, got_b = K.epilogue(
                    x, **args, write_float=write_float, isa="scalar", clip=clip
                )
                assert_same_float_bits(got_f, want_f if write_float else x, msg)
                if on[4]:
                    assert np.array_equal(got_b, want_b), f"{msg}: bits"
                else:
                    assert got_b is None, msg


# --- max pool and clip: every runnable variant against PyTorch ---------------------------------

MAXPOOL_SEED = BASE_SEED + 7000
MAXPOOL_CASES = [
    # (kernel, stride, padding, ceil_mode, (H, W))
    (3, 2, 1, False, (16, 16)),  # the ResNet stem
    (3, 2, 1, True, (15, 14)),
    (2, 2, 0, False, (7, 5)),
    (2, 2, 0, True, (7, 5)),
    ((3, 2), (1, 2), (1, 1), True, (6, 6)),
    ((5, 3), (3, 1), (2, 0), False, (9, 4)),
    (2, 3, 0, False, (7, 8)),  # stride > kernel
    (3, 1, 1, False, (1, 1)),
]


def torch_padding_for_engine(size, kernel, stride, padding, ceil_mode):
    """PyTorch's output size, and the (start, end) pads for which the engine's floor mode gives
    the same windows (docs/format.md, MAXPOOL)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return padding, max(0, (out - 1) * stride + kernel - size - padding)


@pytest.mark.parametrize(
    "index,case",
    list(enumerate(MAXPOOL_CASES)),
    ids=case_ids(MAXPOOL_CASES, MAXPOOL_SEED, lambda k, s, p, c, z: f"k{k}-s{s}-p{p}-c{int(c)}"),
)
def test_maxpool_matches_torch(index, case):
    kernel, stride, padding, ceil_mode, size = case
    seed = MAXPOOL_SEED + index
    rng = np.random.default_rng(seed)
    x = random_f32(rng, size + (13,))
    x.reshape(-1)[rng.integers(0, x.size, 3)] = np.nan  # PyTorch propagates NaN
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    pt, pb = torch_padding_for_engine(size[0], kh, sh, ph, ceil_mode)
    pl, pr = torch_padding_for_engine(size[1], kw, sw, pw, ceil_mode)
    want = from_nchw(F.max_pool2d(to_nchw(x), kernel, stride, padding, ceil_mode=ceil_mode))
    for isa in qbinfer._core.supported_isas():
        msg = f"seed={seed} {case} isa={isa}"
        got = K.maxpool(x, kh, kw, sh, sw, pt, pl, pb, pr, isa=isa)
        np.testing.assert_array_equal(got, want, err_msg=msg)  # NaN at the same places
        ho = want.shape[0]
        split = [(ho // 2, ho), (0, ho // 2)]  # the row entry point, upper half first
        rows = K.maxpool(x, kh, kw, sh, sw, pt, pl, pb, pr, isa=isa, row_ranges=split)
        np.testing.assert_array_equal(rows, want, err_msg=msg + " rows")


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.0, 1.0), (-0.5, np.inf)])
def test_clip_matches_torch(bounds):
    rng = np.random.default_rng(MAXPOOL_SEED + 100)
    x = random_f32(rng, (5, 7, 19), scale=4.0)
    x.reshape(-1)[:5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    lo, hi = bounds
    want = torch.clamp(torch.from_numpy(x), lo, hi).numpy()
    if bounds == (0.0, 6.0):
        np.testing.assert_array_equal(F.relu6(torch.from_numpy(x)).numpy(), want)
    for isa in qbinfer._core.supported_isas():
        np.testing.assert_array_equal(K.clip(x, lo, hi, isa=isa), want, err_msg=isa)
        y = x.copy()
        np.testing.assert_array_equal(K.clip(y, lo, hi, inplace=True, isa=isa), want)


# --- binary FC ---------------------------------------------------------------------------

BFC_SEED = BASE_SEED + 8000
# (C, O): channel counts around a word and the SIMD vectors, outputs around the 4-row tile.
BFC_CASES = [(1, 1), (63, 5), (64, 4), (65, 9), (200, 3), (256, 8), (4097, 6)]


@pytest.mark.parametrize("index,c,o", [(i, *co) for i, co in enumerate(BFC_CASES)])
def test_bfc(index, c, o):
    """The portable binary FC against the ±1 dot in numpy integers: f32(dot) * scale + bias,
    one f32 multiply then one f32 add (numpy's float32 arithmetic rounds each), bit for bit;
    and every runnable ISA the same."""
    seed = BFC_SEED + index
    rng = np.random.default_rng(seed)
    a = rng.random(c) < 0.5  # True = -1
    w = rng.random((o, c)) < 0.5
    w[0] = ~a  # an all-disagreeing row: dot = -C
    scale = rng.standard_normal(o).astype(F32)
    bias = rng.standard_normal(o).astype(F32)
    pm = lambda m: np.where(m, -1, 1).astype(np.int64)  # noqa: E731
    dot = pm(w) @ pm(a)
    want = dot.astype(F32) * scale + bias
    for isa in [None, *qbinfer._core.supported_isas()]:
        got = K.bfc(pack_bits(a), pack_bits(w), c, scale, bias, isa=isa)
        np.testing.assert_array_equal(got, want, err_msg=f"seed={seed} C={c} O={o} isa={isa}")


def test_bfc_rejects_bad_arguments():
    z = np.zeros(2, F32)
    with pytest.raises(ValueError, match="w_bits"):
        K.bfc(np.zeros(1, np.uint64), np.zeros((2, 2), np.uint64), 64, z, z)
    with pytest.raises(ValueError, match="past channel"):
        K.bfc(np.full(1, 1 << 63, np.uint64), np.zeros((2, 1), np.uint64), 5, z, z)
