"""qbinfer.bitpack against an independent numpy encoding of the bit contract.

Random cases derive their seed from BASE_SEED and the case index; the seed is in the
test id and in every assertion message, so a failure replays with the same numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qbinfer

BASE_SEED = 0x5EED_B17


def ref_bitpack(x: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """The contract in numpy: bit 1 iff not (x >= t), little-endian 64-bit words,
    zero tail bits."""
    channels = x.shape[-1]
    t = np.zeros(channels, np.float32) if thresholds is None else thresholds
    minus_one = ~(x >= t)
    words = (channels + 63) // 64
    padded = np.zeros(x.shape[:-1] + (words * 64,), dtype=bool)
    padded[..., :channels] = minus_one
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def assert_packs_like_ref(x, thresholds=None, msg=""):
    got = qbinfer.bitpack(x, thresholds)
    want = ref_bitpack(x, thresholds)
    assert got.dtype == np.uint64, msg
    assert got.shape == want.shape, f"{msg} shape {got.shape} != {want.shape}"
    assert got.flags.c_contiguous, msg
    np.testing.assert_array_equal(got, want, err_msg=msg)
    assert_tail_zero(got, x.shape[-1], msg)
    return got


def assert_tail_zero(packed, channels, msg=""):
    if channels % 64:
        tail = packed[..., -1] >> np.uint64(channels % 64)
        assert not tail.any(), f"{msg} tail bits set past channel {channels}"


CHANNELS = [1, 63, 64, 65, 127, 128, 200, 2048]
LEADING = [(), (1,), (3,), (1, 1, 1), (2, 5, 7), (1, 3, 9)]
CASES = [(c, lead) for c in CHANNELS for lead in LEADING]


def random_input(rng, shape, thresholds=None):
    """Normal values plus exact ties with the threshold and signed zeros, since the
    edges are where an off-by-one comparison would hide."""
    x = rng.standard_normal(shape).astype(np.float32)
    t = np.zeros(shape[-1], np.float32) if thresholds is None else thresholds
    tie = rng.random(shape) < 0.1
    x[tie] = np.broadcast_to(t, shape)[tie]
    x[rng.random(shape) < 0.05] = -0.0
    return x


@pytest.mark.parametrize("with_thresholds", [False, True], ids=["sign", "thresh"])
@pytest.mark.parametrize(
    "index,channels,leading",
    [(i, c, lead) for i, (c, lead) in enumerate(CASES)],
    ids=[
        f"seed{BASE_SEED + i}-C{c}-{'x'.join(map(str, lead)) or 'rank1'}"
        for i, (c, lead) in enumerate(CASES)
    ],
)
def test_random_shapes(index, channels, leading, with_thresholds):
    seed = BASE_SEED + index
    rng = np.random.default_rng(seed)
    shape = leading + (channels,)
    t = rng.standard_normal(channels).astype(np.float32) if with_thresholds else None
    x = random_input(rng, shape, t)
    assert_packs_like_ref(x, t, msg=f"seed={seed} shape={shape} thresholds={with_thresholds}")


@pytest.mark.parametrize("channels", CHANNELS)
def test_all_minus_one_fills_exactly_the_valid_bits(channels):
    got = qbinfer.bitpack(np.full((2, 3, channels), -1.0, np.float32))
    full, rest = divmod(channels, 64)
    assert (got[..., :full] == np.uint64(2**64 - 1)).all()
    if rest:
        assert (got[..., -1] == np.uint64((1 << rest) - 1)).all()


SUBNORMAL = np.float32(1e-45)  # smallest positive float32 subnormal

# (x, threshold, expected bit); bit 1 means -1.
SPECIAL = [
    (0.0, 0.0, 0),
    (-0.0, 0.0, 0),  # IEEE: -0.0 >= 0.0
    (0.0, -0.0, 0),
    (np.nan, 0.0, 1),
    (-np.nan, 0.0, 1),
    (np.inf, 0.0, 0),
    (-np.inf, 0.0, 1),
    (np.inf, np.inf, 0),
    (-np.inf, -np.inf, 0),
    (1.0, np.nan, 1),  # a NaN threshold makes everything -1
    (SUBNORMAL, 0.0, 0),  # would flip under DAZ
    (-SUBNORMAL, 0.0, 1),
    (0.0, SUBNORMAL, 1),
    (0.25, 0.25, 0),  # equal to the threshold: +1
    (np.nextafter(np.float32(0.25), np.float32(-1)), 0.25, 1),
    (np.nextafter(np.float32(0.25), np.float32(1)), 0.25, 0),
    (-3.5, -3.5, 0),
    (np.float32(3e38), np.inf, 1),
]


def test_special_values_explicit():
    x = np.array([s[0] for s in SPECIAL], np.float32)
    t = np.array([s[1] for s in SPECIAL], np.float32)
    want = [s[2] for s in SPECIAL]
    word = int(qbinfer.bitpack(x, t)[0])
    got = [(word >> i) & 1 for i in range(len(SPECIAL))]
    bad = [(SPECIAL[i][:2], got[i], want[i]) for i in range(len(SPECIAL)) if got[i] != want[i]]
    assert not bad, f"(x, t), got, want: {bad}"
    assert word >> len(SPECIAL) == 0
    assert_packs_like_ref(x, t)


def test_special_values_without_thresholds():
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, SUBNORMAL, -SUBNORMAL, 1, -1], np.float32)
    assert int(qbinfer.bitpack(x)[0]) == 0b101010100
    assert_packs_like_ref(x)


def test_special_values_spread_over_words():
    rng = np.random.default_rng(BASE_SEED)
    pool = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, SUBNORMAL, -SUBNORMAL, 1, -1], np.float32)
    x = rng.choice(pool, size=(4, 5, 130))
    t = rng.choice(pool[[0, 1, 3, 4, 5, 7]], size=130)
    assert_packs_like_ref(x, t, msg=f"seed={BASE_SEED}")


def test_empty_leading_axis():
    got = qbinfer.bitpack(np.zeros((0, 4, 70), np.float32))
    assert got.shape == (0, 4, 2) and got.dtype == np.uint64


def test_input_is_not_modified():
    x = np.array([[1.0, -2.0, np.nan]], np.float32)
    before = x.copy()
    qbinfer.bitpack(x)
    np.testing.assert_array_equal(x, before)


def _base(seed, shape):
    return random_input(np.random.default_rng(seed), shape)


NONCONTIGUOUS = {
    "spatial-stride": lambda: _base(1, (2, 9, 7, 65))[:, ::2],
    "channel-stride": lambda: _base(2, (3, 5, 260))[..., ::2],
    "reversed": lambda: _base(3, (5, 129))[::-1, ::-1],
    "nchw-transposed": lambda: _base(4, (2, 70, 3, 5)).transpose(0, 2, 3, 1),
    "fortran": lambda: np.asfortranarray(_base(5, (7, 65))),
    "broadcast": lambda: np.broadcast_to(_base(6, (1, 200)), (4, 200)),
}


def _unaligned(shape):
    x = _base(7, shape)
    buf = bytearray(x.nbytes + 1)
    y = np.frombuffer(buf, dtype=np.float32, offset=1, count=x.size).reshape(shape)
    y[...] = x
    assert not y.flags.aligned
    return y


NONCONTIGUOUS["unaligned"] = lambda: _unaligned((3, 67))


@pytest.mark.parametrize("name", sorted(NONCONTIGUOUS))
def test_noncontiguous_input(name):
    x = NONCONTIGUOUS[name]()
    assert not (x.flags.c_contiguous and x.flags.aligned)
    channels = x.shape[-1]
    t = _base(8, (2 * channels,))[::2]  # thresholds non-contiguous too
    assert_packs_like_ref(x, msg=name)
    assert_packs_like_ref(x, t, msg=name)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=70),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    ),
    st.booleans(),
)
def test_property_matches_reference(x, use_thresholds):
    t = None
    if use_thresholds:
        # Thresholds drawn from x's own values so ties are common.
        t = np.resize(x.ravel(), x.shape[-1]).astype(np.float32)
    assert_packs_like_ref(x, t)


# --- errors ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16, np.uint8, ">f4"])
def test_wrong_dtype_is_type_error(dtype):
    x = np.zeros((2, 3), dtype=dtype)
    with pytest.raises(
        TypeError, match=r"x must have dtype float32, got " + re.escape(str(x.dtype))
    ):
        qbinfer.bitpack(x)


def test_wrong_threshold_dtype_is_type_error():
    with pytest.raises(TypeError, match=r"thresholds must have dtype float32, got float64"):
        qbinfer.bitpack(np.zeros((2, 3), np.float32), np.zeros(3))


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, "abc"])
def test_non_array_is_type_error(bad):
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        qbinfer.bitpack(bad)
    with pytest.raises(TypeError, match=r"thresholds must be a numpy\.ndarray"):
        qbinfer.bitpack(np.zeros(2, np.float32), bad)


@pytest.mark.parametrize(
    "t_shape,shown",
    [((4,), r"\(4,\)"), ((2,), r"\(2,\)"), ((1, 3), r"\(1, 3\)"), ((), r"\(\)")],
)
def test_wrong_threshold_shape_is_value_error(t_shape, shown):
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"shape \(3,\).*x of shape \(5, 3\).*got shape " + shown):
        qbinfer.bitpack(x, np.zeros(t_shape, np.float32))


def test_zero_dim_is_value_error():
    with pytest.raises(ValueError, match="rank >= 1.*0-d"):
        qbinfer.bitpack(np.array(1.0, np.float32))


@pytest.mark.parametrize("shape", [(0,), (4, 0), (2, 3, 0)])
def test_zero_channels_is_value_error(shape):
    with pytest.raises(ValueError, match=r"zero channels.*shape"):
        qbinfer.bitpack(np.zeros(shape, np.float32))
