"""Every compiled ISA variant of the binary conv and of bitpacking against the portable oracle.

The binary conv's dot is an integer and every variant's epilogue is the same single multiply
then single add, so the variants must agree with the reference bit for bit: outputs are compared
as uint32 bit patterns (np.array_equal on views), never with a tolerance. Bitpacking is compared
word for word.

The variants come from the extension itself (`_kernels.bconv_variants()`, which lists what this
build has and this CPU runs), so a new kernel is tested as soon as it is registered; the known
names that are not runnable here are reported once, as one skip with the reasons.

Random cases take their seed from BASE_SEED and the case index; the seed is in the test id and in
every assertion message, so a failure replays with the same numbers.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from qbinfer._core import _kernels as K

BASE_SEED = 0x5B_C0_17

KNOWN_VARIANTS = ["scalar", "avx2", "avx512", "avx512_vpopcnt", "neon"]
RUNNABLE = K.bconv_variants()
SUPPORTED_ISAS = K.supported_isas()


def not_runnable_reason(name: str) -> str:
    if name == "avx512_vpopcnt" and "avx512" in SUPPORTED_ISAS:
        return (
            "this CPU has AVX-512 but not VPOPCNTDQ: the avx512_vpopcnt variant is compiled "
            "but cannot be executed here (its code is shared with the avx512 variant, which "
            "is tested)"
        )
    return f"the {name} variant is not compiled in this build or not supported by this CPU"


# Only the variants this build has and this CPU runs are parametrised (a compiled variant the CPU
# cannot run would be one skip per case); test_variants_not_runnable_here names the others once.
VARIANTS = [pytest.param(v, id=v) for v in RUNNABLE]


def test_variants_not_runnable_here():
    missing = [v for v in KNOWN_VARIANTS if v not in RUNNABLE]
    assert set(RUNNABLE) <= set(KNOWN_VARIANTS), f"unknown variant in {RUNNABLE}: add it here"
    if missing:
        pytest.skip("; ".join(not_runnable_reason(v) for v in missing))


# The SIMD ISAs this build and CPU run (the suite also runs whole under each QBINFER_ISA).
SIMD_ISAS = [pytest.param(i, id=i) for i in SUPPORTED_ISAS if i != "scalar"]


# --- helpers -----------------------------------------------------------------------------


def pack_bits(minus_one: np.ndarray) -> np.ndarray:
    """The bit contract in numpy: bool [..., C] (True = -1) -> uint64 [..., ceil(C/64)],
    little-endian within each word, tail bits 0."""
    channels = minus_one.shape[-1]
    words = (channels + 63) // 64
    padded = np.zeros(minus_one.shape[:-1] + (words * 64,), dtype=bool)
    padded[..., :channels] = minus_one
    return np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)


def random_case(seed: int, h: int, w: int, ci: int, co: int, k: int, p_minus: float = 0.5):
    rng = np.random.default_rng(seed)
    x = pack_bits(rng.random((h, w, ci)) < p_minus)
    wt = pack_bits(rng.random((co, k, k, ci)) < p_minus)
    scale = rng.standard_normal(co).astype(np.float32)
    bias = rng.standard_normal(co).astype(np.float32)
    return x, wt, scale, bias


def assert_same_floats(got: np.ndarray, want: np.ndarray, msg: str) -> None:
    assert got.dtype == want.dtype == np.float32, f"{msg}: dtypes {got.dtype}, {want.dtype}"
    assert got.shape == want.shape, f"{msg}: shape {got.shape} != {want.shape}"
    same = got.view(np.uint32) == want.view(np.uint32)
    if not same.all():
        i = tuple(int(v) for v in np.argwhere(~same)[0])
        raise AssertionError(
            f"{msg}: {int((~same).sum())} of {same.size} outputs differ; first "
            f"at (y, x, o) = {i}: got {got[i]!r}, want {want[i]!r}"
        )


def check_variant(variant, seed, h, w, ci, co, k, padding, row_ranges=None):
    x, wt, scale, bias = random_case(seed, h, w, ci, co, k)
    want = K.bconv2d(x, wt, ci, scale, bias, padding)
    got = K.bconv2d(x, wt, ci, scale, bias, padding, isa=variant, row_ranges=row_ranges)
    assert_same_floats(
        got,
        want,
        f"{variant} seed={seed} H={h} W={w} Ci={ci} Co={co} k={k} "
        f"padding={padding} row_ranges={row_ranges}",
    )


# --- the ISA list and the override ---------------------------------------------------------


def test_supported_isas_shape():
    assert SUPPORTED_ISAS[0] == "scalar"
    assert len(set(SUPPORTED_ISAS)) == len(SUPPORTED_ISAS)
    assert set(SUPPORTED_ISAS) <= {"scalar", "avx2", "avx512", "neon"}
    assert K.active_isa() in SUPPORTED_ISAS
    if "QBINFER_ISA" not in os.environ:
        assert K.active_isa() == SUPPORTED_ISAS[-1], "without an override the best ISA is used"


def test_every_supported_isa_has_kernels():
    # The plain ISA names reach the selector (bconv_kernels_for / bitpack_kernels_for).
    assert RUNNABLE[0] == "scalar"
    for isa in SUPPORTED_ISAS:
        assert isa in RUNNABLE, f"{isa} is supported but has no binary conv variant"
    assert isinstance(K.has_vpopcntdq(), bool)
    assert ("avx512_vpopcnt" in RUNNABLE) == K.has_vpopcntdq()
    if K.has_vpopcntdq():
        assert "avx512" in SUPPORTED_ISAS


def _active_isa_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QBINFER_ISA=value)
    code = "from qbinfer._core import _kernels as K; print(K.active_isa())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_qbinfer_isa_override_selects_scalar():
    r = _active_isa_in_subprocess("scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"


@pytest.mark.parametrize("value", ["avx9000", "neon" if sys.platform != "darwin" else "avx2"])
def test_qbinfer_isa_override_unsupported_is_a_clear_error(value):
    if value in SUPPORTED_ISAS:
        pytest.skip(f"{value} is supported on this machine")
    r = _active_isa_in_subprocess(value)
    assert r.returncode != 0
    assert "QBINFER_ISA" in r.stderr and "supported: scalar" in r.stderr, r.stderr


def test_unknown_isa_argument_is_value_error():
    x, wt, scale, bias = random_case(1, 2, 2, 8, 3, 1)
    with pytest.raises(ValueError, match="supported"):
        K.bconv2d(x, wt, 8, scale, bias, isa="avx9000")
    with pytest.raises(ValueError, match="supported"):
        K.bitpack(np.zeros((2, 3), np.float32), isa="avx9000")


# --- binary conv: shape sweep ---------------------------------------------------------------

CHANNELS = [1, 16, 31, 32, 33, 63, 64, 65, 100, 128, 200, 512, 2048]
OUT_CHANNELS = [1, 5, 16, 17, 33, 31, 64, 65, 100, 128, 200]
SIDES = [1, 2, 3, 7, 9]


def sweep_cases():
    """Every in-channel count with both kernels and (for 3x3) both paddings; output channels and
    sides rotate through their lists so that each value meets several channel counts."""
    cases = []
    combos = [(1, "zero"), (3, "zero"), (3, "one")]
    for i, (ci, (k, padding)) in enumerate(itertools.product(CHANNELS, combos)):
        co = OUT_CHANNELS[(i * 7) % len(OUT_CHANNELS)]
        h = SIDES[i % len(SIDES)]
        w = SIDES[(i * 3 + 1) % len(SIDES)]
        if ci == 2048:  # keep the oracle quick
            co = min(co, 33)
        cases.append((BCONV_SEED + i, h, w, ci, co, k, padding))
    return cases


BCONV_SEED = BASE_SEED
SWEEP = sweep_cases()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "seed,h,w,ci,co,k,padding",
    SWEEP,
    ids=[f"seed{c[0]}-{c[1]}x{c[2]}-ci{c[3]}-co{c[4]}-k{c[5]}-{c[6]}" for c in SWEEP],
)
def test_bconv_sweep_matches_reference(variant, seed, h, w, ci, co, k, padding):
    check_variant(variant, seed, h, w, ci, co, k, padding)


# Every border configuration of a 3x3 (1, 2 and 3 rows/columns: a pixel can miss a tap on
# both sides at once), for each kernel path (Ci <= 16: taps in pairs; Ci <= 32: the nine-tap
# tree; wider: gathered streams) and channel counts that are not multiples of any tile.
BORDER_CASES = [
    (BASE_SEED + 1000 + i, h, w, ci, co, padding)
    for i, (h, w, (ci, co), padding) in enumerate(
        itertools.product(
            [1, 2, 3], [1, 2, 3], [(16, 17), (9, 40), (31, 5), (33, 17), (100, 33)], ["zero", "one"]
        )
    )
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "seed,h,w,ci,co,padding",
    BORDER_CASES,
    ids=[f"seed{c[0]}-{c[1]}x{c[2]}-ci{c[3]}-co{c[4]}-{c[5]}" for c in BORDER_CASES],
)
def test_bconv_borders_match_reference(variant, seed, h, w, ci, co, padding):
    check_variant(variant, seed, h, w, ci, co, 3, padding)


# Rows wider than the Ci <= 16 path's tile of 256 pixels (tile edges inside a row).
WIDE_ROWS = [
    (BASE_SEED + 1500 + i, h, w, ci, co, padding)
    for i, (h, w, ci, co, padding) in enumerate(
        [
            (2, 300, 16, 5, "zero"),
            (3, 513, 7, 17, "one"),
            (1, 257, 16, 16, "zero"),
            (2, 300, 32, 5, "one"),
            (2, 300, 100, 17, "zero"),
        ]
    )
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "seed,h,w,ci,co,padding",
    WIDE_ROWS,
    ids=[f"seed{c[0]}-{c[1]}x{c[2]}-ci{c[3]}-co{c[4]}-{c[5]}" for c in WIDE_ROWS],
)
def test_bconv_wide_rows_match_reference(variant, seed, h, w, ci, co, padding):
    check_variant(variant, seed, h, w, ci, co, 3, padding)


# The zoo's layer shapes, scaled down in H and W only (the channel structure is what selects a
# kernel path).
ZOO_SHAPES = [
    (9, 8, 16, 16, 3),
    (7, 9, 32, 32, 3),
    (5, 6, 128, 128, 3),
    (6, 5, 128, 128, 1),
    (4, 5, 512, 512, 1),
    (3, 2, 2048, 64, 1),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "index,shape",
    list(enumerate(ZOO_SHAPES)),
    ids=[f"{h}x{w}-ci{ci}-co{co}-k{k}" for h, w, ci, co, k in ZOO_SHAPES],
)
@pytest.mark.parametrize("padding", ["zero", "one"])
def test_bconv_zoo_shapes_match_reference(variant, index, shape, padding):
    h, w, ci, co, k = shape
    check_variant(variant, BASE_SEED + 2000 + index, h, w, ci, co, k, padding)


# --- binary conv: accumulators near overflow -------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("relation", ["equal", "opposite"])
@pytest.mark.parametrize("padding", ["zero", "one"])
def test_bconv_extreme_dots_2048x9(variant, relation, padding):
    """2048 channels, 3x3: every XOR bit 0 (dot +18432) or every bit 1 (dot -18432, the largest
    count every lane and every byte accumulator of a popcount can hold at once)."""
    ci, co, h, w = 2048, 19, 4, 5
    x = pack_bits(np.ones((h, w, ci), bool))
    wt = pack_bits(np.full((co, 3, 3, ci), relation == "equal"))
    scale = np.ones(co, np.float32)
    bias = np.zeros(co, np.float32)
    want = K.bconv2d(x, wt, ci, scale, bias, padding)
    sign = 1 if relation == "equal" else -1
    # Independent check of the oracle at an interior pixel and the corners.
    assert want[1, 1, 0] == sign * 9 * ci
    pad_tap = 0 if padding == "zero" else (ci if relation == "opposite" else -ci)
    assert want[0, 0, 0] == sign * 4 * ci + 5 * pad_tap
    got = K.bconv2d(x, wt, ci, scale, bias, padding, isa=variant)
    assert_same_floats(got, want, f"{variant} {relation} {padding}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_bconv_long_stream_1x1(variant):
    """A 1x1 stream long enough to widen the byte counters several times (16384 channels)."""
    ci = 16384
    rng = np.random.default_rng(BASE_SEED + 3000)
    x = pack_bits(rng.random((2, 3, ci)) < 0.9)
    wt = pack_bits(rng.random((18, 1, 1, ci)) < 0.1)
    scale = rng.standard_normal(18).astype(np.float32)
    bias = rng.standard_normal(18).astype(np.float32)
    want = K.bconv2d(x, wt, ci, scale, bias)
    got = K.bconv2d(x, wt, ci, scale, bias, isa=variant)
    assert_same_floats(got, want, f"{variant} seed={BASE_SEED + 3000} 1x1 Ci={ci}")


# Streams past the kernels' stack buffer (gathered and counted in pieces, a piece boundary inside
# a tap) and on both sides of the 16-bit lane limit (k * k * Ci <= 65535 uses 16-bit lanes).
LONG_STREAMS = [
    (40000, 33, 1, 2, 3, "zero"),  # 16-bit lanes, 1x1 in three pieces
    (4100, 17, 3, 3, 3, "zero"),  # 16-bit lanes, 3x3, piece boundaries inside taps
    (4100, 17, 3, 2, 3, "one"),
    (8200, 20, 3, 2, 3, "zero"),  # 9 * Ci > 65535: 32-bit lanes, in pieces
    (8200, 5, 3, 3, 2, "one"),  # Co <= 16: 32-bit lanes
    (70000, 17, 1, 1, 2, "zero"),  # 1x1 past the 16-bit limit: 32-bit lanes, read in place
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "index,case",
    list(enumerate(LONG_STREAMS)),
    ids=[f"ci{c[0]}-co{c[1]}-k{c[2]}-{c[3]}x{c[4]}-{c[5]}" for c in LONG_STREAMS],
)
def test_bconv_long_streams(variant, index, case):
    ci, co, k, h, w, padding = case
    check_variant(variant, BASE_SEED + 3100 + index, h, w, ci, co, k, padding)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("ci,k", [(7281, 3), (65535, 1)], ids=["3x3-ci7281", "1x1-ci65535"])
def test_bconv_16bit_lane_count_limit(variant, ci, k):
    """Every bit opposite at the largest k * k * Ci that 16-bit lanes take: each lane counts
    65529 (3x3) or 65535 (1x1) ones, the top of the unsigned 16-bit range."""
    co = 40
    x = pack_bits(np.ones((3, 3, ci), bool))
    wt = pack_bits(np.zeros((co, k, k, ci), bool))
    scale = np.ones(co, np.float32)
    bias = np.zeros(co, np.float32)
    want = K.bconv2d(x, wt, ci, scale, bias, "one")
    assert want[1, 1, 0] == -k * k * ci
    got = K.bconv2d(x, wt, ci, scale, bias, "one", isa=variant)
    assert_same_floats(got, want, f"{variant} all opposite, Ci={ci}, k={k}")


# --- binary conv: row ranges ----------------------------------------------------------------

SPLITS = [
    [(0, 9)],
    [(0, 3), (3, 4), (4, 9)],
    [(5, 9), (0, 1), (1, 5)],  # any order
    [(0, 0), (9, 9), (0, 9)],  # empty ranges
    [(y, y + 1) for y in reversed(range(9))],
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("split", SPLITS, ids=[str(s) for s in range(len(SPLITS))])
@pytest.mark.parametrize(
    "ci,k,padding",
    [(100, 3, "zero"), (100, 3, "one"), (16, 3, "zero"), (16, 3, "one"), (200, 1, "zero")],
)
def test_bconv_row_ranges_compose(variant, split, ci, k, padding):
    check_variant(variant, BASE_SEED + 4000 + ci, 9, 7, ci, 21, k, padding, row_ranges=split)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("ci,k", [(16, 3), (100, 3), (512, 1)])
def test_bconv_row_range_writes_only_its_rows(variant, ci, k):
    seed = BASE_SEED + 5000 + ci
    x, wt, scale, bias = random_case(seed, 6, 5, ci, 17, k)
    want = K.bconv2d(x, wt, ci, scale, bias, "zero")
    got = K.bconv2d(x, wt, ci, scale, bias, "zero", isa=variant, row_ranges=[(2, 4)])
    assert np.isnan(got[:2]).all() and np.isnan(got[4:]).all(), (
        f"{variant} seed={seed}: wrote outside rows [2, 4)"
    )
    assert_same_floats(got[2:4], want[2:4], f"{variant} seed={seed} rows [2, 4)")


def test_bconv_bad_row_range_is_value_error():
    x, wt, scale, bias = random_case(1, 3, 3, 8, 2, 3)
    for bad in ([(0, 4)], [(2, 1)], [(-1, 2)]):
        with pytest.raises(ValueError, match="row range"):
            K.bconv2d(x, wt, 8, scale, bias, isa="scalar", row_ranges=bad)


# --- bitpacking ---------------------------------------------------------------------------

BITPACK_CHANNELS = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 200, 513]
SPECIALS = np.array(
    [
        np.nan,
        -np.nan,
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        1e-45,
        -1e-45,
        np.finfo(np.float32).max,
        -np.finfo(np.float32).max,
    ],
    np.float32,
)


def ref_bitpack(x: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    t = np.zeros(x.shape[-1], np.float32) if thresholds is None else thresholds
    with np.errstate(invalid="ignore"):
        return pack_bits(~(x >= t))


def bitpack_input(seed: int, channels: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, channels)).astype(np.float32)
    specials = rng.random(x.shape) < 0.2
    x[specials] = rng.choice(SPECIALS, size=int(specials.sum()))
    t = rng.standard_normal(channels).astype(np.float32)
    t[rng.random(channels) < 0.15] = np.nan
    t[rng.random(channels) < 0.15] = -0.0
    # Values exactly at their threshold pack to +1.
    at = rng.random(x.shape) < 0.15
    x[at] = np.broadcast_to(t, x.shape)[at]
    return x, t


@pytest.mark.parametrize("isa", SIMD_ISAS + [pytest.param("scalar", id="scalar")])
@pytest.mark.parametrize("channels", BITPACK_CHANNELS)
@pytest.mark.parametrize("with_thresholds", [False, True], ids=["sign", "thresholds"])
def test_bitpack_matches_reference(isa, channels, with_thresholds):
    seed = BASE_SEED + 6000 + channels
    x, t = bitpack_input(seed, channels)
    th = t if with_thresholds else None
    want = K.bitpack(x, th, isa="scalar")
    assert np.array_equal(want, ref_bitpack(x, th)), f"scalar vs numpy seed={seed}"
    got = K.bitpack(x, th, isa=isa)
    assert got.dtype == np.uint64 and got.shape == want.shape
    assert np.array_equal(got, want), f"{isa} seed={seed} C={channels} thresholds={with_thresholds}"


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_bitpack_edge_rules(isa):
    # NaN -> -1 (bit 1), -0.0 and 0.0 -> +1 against a 0 threshold, NaN threshold -> all -1.
    x = np.array([np.nan, -0.0, 0.0, -1e-45, 1e-45, -np.inf, np.inf, 2.0, 2.0], np.float32)
    assert int(K.bitpack(x, isa=isa)[0]) == 0b000101001
    t = np.array([0, 0, 0, 0, 0, 0, 0, 2.0, np.nan], np.float32)
    assert int(K.bitpack(x, t, isa=isa)[0]) == 0b100101001
    # All -1: exactly the valid bits are set, the tail stays 0.
    for c in (1, 15, 16, 17, 64, 65, 130):
        got = K.bitpack(np.full((2, c), -1.0, np.float32), isa=isa)
        want = pack_bits(np.ones((2, c), bool))
        assert np.array_equal(got, want), f"{isa} all -1, C={c}"
