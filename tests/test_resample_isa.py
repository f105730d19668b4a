"""The engine's preprocessing kernel (`_core._resample_normalize`, csrc/engine/resample*.cc)
across its implementations and memory layouts, the zero-copy read of a PIL image's memory
(`preprocess._pillow_memory`), and predict's post-processing (`_core._top_probabilities`).

* Every ISA the CPU runs against the portable one ("scalar") on random images and filters,
  within a stated float tolerance (the AVX2 sums use FMA: one rounding per tap, not two).
* Within one ISA, the pixels' layout never changes a bit: RGB packed, RGB in 4-byte pixels
  (Pillow's RGBX, an RGBA array) and grayscale repeated into RGB give the same values.
* A PIL image read in place gives the pixels of the image copied out, also once the image is
  closed, and an image whose rows Pillow keeps in several blocks is copied instead.
"""

import os

import numpy as np
import pytest
from PIL import Image

import qbinfer
from qbinfer import preprocess as pp

core = qbinfer._core
ISAS = core.supported_isas()
# Random cases per test; QBINFER_TEST_SEED replays a failure (the seed is printed).
SEED = int(os.environ.get("QBINFER_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
CASES = 40


def random_axis(rng, n_in):
    """A random recipe filter for an axis of n_in pixels: a random output size and crop."""
    n_out = int(rng.integers(1, 3 * n_in + 2))
    count = int(rng.integers(1, n_out + 1))
    first = int(rng.integers(0, n_out - count + 1))
    start, stop, lo, w = pp._axis_filter(n_in, n_out, first, count)
    return start, stop, lo, w


def random_case(rng, channels):
    h, w = (int(v) for v in rng.integers(1, 70, 2))
    img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    r0, r1, row_lo, row_w = random_axis(rng, h)
    c0, c1, col_lo, col_w = random_axis(rng, w)
    return img[r0:r1, c0:c1], (row_lo, row_w, col_lo, col_w)


UNIT = (1.0, np.zeros(3, np.float32), np.ones(3, np.float32))
IMAGENET = (
    float(np.float32(1 / 255)),
    np.float32([0.485, 0.456, 0.406]),
    np.float32([0.229, 0.224, 0.225]),
)


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "scalar"] or ["none"])
def test_every_isa_matches_the_portable_kernel(isa):
    if isa == "none":
        pytest.skip("this CPU runs only the portable kernel")
    print(f"seed {SEED} (QBINFER_TEST_SEED={SEED} replays it)")
    rng = np.random.default_rng(SEED)
    for case in range(CASES):
        channels = (1, 3)[case % 2]
        window, filters = random_case(rng, channels)
        for out_channels in sorted({channels, 3}):
            for scale, mean, std in (UNIT, IMAGENET):
                norm = (out_channels, scale, mean, std)
                want = core._resample_normalize(window, *filters, *norm, isa="scalar")
                got = core._resample_normalize(window, *filters, *norm, isa=isa)
                assert got.shape == want.shape == (len(filters[0]), len(filters[2]), out_channels)
                # A value is a weighted mean (weights >= 0, summing to 1) of values <= 255,
                # made by one operation per tap of each axis: each rounds by at most
                # 255 * 2^-24, in either implementation. The normalisation scales that by
                # 1 / (255 * 0.224) at most, and rounds its results (|x| < 3) once more.
                taps = filters[1].shape[1] + filters[3].shape[1]
                tol = 2 * taps * 255 * 2.0**-24
                if scale != 1.0:
                    tol = tol / (255 * 0.224) + 4 * 3 * 2.0**-24
                np.testing.assert_allclose(
                    got, want, rtol=0, atol=tol, err_msg=f"seed {SEED} case {case} {isa}"
                )


@pytest.mark.parametrize("isa", ISAS)
def test_the_pixel_layout_never_changes_a_value(isa):
    print(f"seed {SEED} (QBINFER_TEST_SEED={SEED} replays it)")
    rng = np.random.default_rng(SEED)
    for case in range(CASES):
        rgb, filters = random_case(rng, 3)
        h, w = rgb.shape[:2]
        rgbx = np.empty((h, w, 4), np.uint8)
        rgbx[:, :, :3] = rgb
        rgbx[:, :, 3] = rng.integers(0, 256, (h, w))  # the padding byte is never used
        gray = rgb[:, :, 1:2].copy()
        for norm in ((3,) + UNIT, (3,) + IMAGENET):
            want = core._resample_normalize(np.ascontiguousarray(rgb), *filters, *norm, isa=isa)
            four = rgbx[:, :, :3]
            assert four.strides[1] == 4
            np.testing.assert_array_equal(
                core._resample_normalize(four, *filters, *norm, isa=isa),
                want,
                err_msg=f"seed {SEED} case {case}",
            )
            gray3 = np.repeat(gray, 3, axis=2)
            np.testing.assert_array_equal(
                core._resample_normalize(gray, *filters, *norm, isa=isa),
                core._resample_normalize(gray3, *filters, *norm, isa=isa),
                err_msg=f"seed {SEED} case {case}",
            )


def test_unknown_or_unsupported_isa_is_refused():
    img = np.zeros((4, 4, 3), np.uint8)
    first, ones = np.arange(4, dtype=np.int64), np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match="ISA"):
        core._resample_normalize(img, first, ones, first, ones, 3, *UNIT, isa="sse9")
    with pytest.raises(qbinfer.ShapeError, match="4 bytes apart"):
        wide = np.zeros((4, 4, 5), np.uint8)[:, :, :3]  # RGB pixels 5 bytes apart
        core._resample_normalize(wide, first, ones, first, ones, 3, *UNIT)


# -- a PIL image's memory, read in place --------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_pillow_memory_is_the_image_and_outlives_it(mode):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    want = np.asarray(img)
    view = pp._pillow_memory(img)
    if view is None:  # pragma: no cover - Pillow before 11.2 has no Arrow export
        pytest.skip("this Pillow cannot export its memory")
    assert view.shape == (37, 53, 4 if mode == "RGB" else 1) and not view.flags.writeable
    got = view[:, :, :3] if mode == "RGB" else view[:, :, 0]
    np.testing.assert_array_equal(got, want)
    img.close()
    del img  # the view holds the exported memory, not the image object
    np.testing.assert_array_equal(view[:, :, :3] if mode == "RGB" else view[:, :, 0], want)


def test_an_image_in_several_blocks_is_copied_with_the_same_pixels(monkeypatch):
    spec = {
        "resize_short": 64,
        "crop": (56, 48),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "pixel_scale": 1 / 255,
    }
    pixels = np.random.default_rng(8).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    in_one_block = Image.fromarray(pixels)
    want = pp.preprocess(pixels, spec)
    np.testing.assert_array_equal(pp.preprocess(in_one_block, spec), want)
    block_size = Image.core.get_block_size()
    Image.core.set_block_size(4096)  # a block per row or two: rows not contiguous
    try:
        scattered = Image.fromarray(pixels)
        with pytest.raises(ValueError):
            scattered.__arrow_c_array__()
        assert pp._pillow_memory(scattered) is None
        np.testing.assert_array_equal(pp.preprocess(scattered, spec), want)
        gray = Image.fromarray(pixels[:, :, 0])
        np.testing.assert_array_equal(
            pp.preprocess(gray, spec, channels=1), pp.preprocess(pixels[:, :, 0], spec, channels=1)
        )
    finally:
        Image.core.set_block_size(block_size)


# -- predict's post-processing ------------------------------------------------------------------


def reference_top(outputs, softmax, k):
    """numpy: the float64 softmax (or the values), then a stable sort of -p (NaN last)."""
    p = outputs.astype(np.float64)
    if softmax:
        p = np.exp(p - p.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(p, order, axis=1)


@pytest.mark.parametrize("softmax", [True, False])
def test_top_probabilities_are_numpys(softmax):
    rng = np.random.default_rng(9)
    for case in range(200):
        n, c, k = int(rng.integers(1, 4)), int(rng.integers(1, 60)), int(rng.integers(1, 9))
        # Few distinct values: many ties, which go to the lower index.
        out = rng.integers(-3, 4, (n, c)).astype(np.float32) * np.float32(0.75)
        if case % 10 == 0:
            out[0, rng.integers(0, c)] = np.nan
        best, probs = core._top_probabilities(out, softmax, k)
        want_best, want_probs = reference_top(out, softmax, k)
        np.testing.assert_array_equal(best, want_best, err_msg=str(out))
        np.testing.assert_allclose(probs, want_probs, rtol=1e-12, err_msg=str(out))
    with pytest.raises(qbinfer.ShapeError, match="N x C"):
        core._top_probabilities(np.zeros((2, 0), np.float32), True, 1)
