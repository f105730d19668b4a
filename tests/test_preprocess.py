"""The preprocessing recipe (qbinfer.preprocess): both implementations against an independent,
dense float64 rendering of the documented recipe, on photos and on random sizes; image modes;
the bounds on image size and on a file's resize_short; the crop geometry used by dense predict."""

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import qbinfer
from qbinfer import preprocess as pp


def imagenet_spec(resize_short=256, crop=(224, 224)):
    return {
        "resize_short": resize_short,
        "crop": crop,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "pixel_scale": 1.0 / 255.0,
    }


# -- the recipe, written out from docs (dense matrices, float64: slow, obviously right) -------


def recipe_weights(n_in, n_out):
    """n_out x n_in: output i centred at (i + 0.5) n_in / n_out takes input j with the triangle
    max(0, 1 - |j + 0.5 - c| / max(n_in / n_out, 1)), rows normalised to sum 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        c = (i + 0.5) * scale
        for j in range(n_in):
            m[i, j] = max(0.0, 1.0 - abs(j + 0.5 - c) / support)
        m[i] /= m[i].sum()
    return m


def recipe_pixels(px, resize_short, crop):
    """Resize (shorter side, Python-rounded longer side) and centre crop of H x W x C, float64."""
    h, w = px.shape[:2]
    if resize_short == 0 or min(h, w) == resize_short:
        nh, nw = h, w
    elif h <= w:
        nh, nw = resize_short, max(1, round(w * resize_short / h))
    else:
        nh, nw = max(1, round(h * resize_short / w)), resize_short
    x = px.astype(np.float64)
    if (nh, nw) != (h, w):
        x = np.einsum("oh,hwc->owc", recipe_weights(h, nh), x)
        x = np.einsum("pw,owc->opc", recipe_weights(w, nw), x)
    top, left = round((nh - crop[0]) / 2), round((nw - crop[1]) / 2)
    return x[top : top + crop[0], left : left + crop[1]]


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos (china.jpg, flower.jpg), 427 x 640 RGB."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is in the dev extra")
    return datasets.load_sample_images().images


PHOTO_SPECS = [
    (256, (224, 224)),  # ImageNet's eval recipe: downscale 1.67
    (37, (32, 32)),  # a small model: downscale 11.5, wide filters
    (500, (480, 480)),  # upscale
    (300, (280, 200)),  # a crop that is not square
    (0, (400, 600)),  # no resize
]


@pytest.mark.parametrize("resize_short,crop", PHOTO_SPECS)
def test_both_paths_give_the_recipe_on_photos(photos, resize_short, crop):
    spec = imagenet_spec(resize_short, crop)
    for photo in photos:
        want = recipe_pixels(photo, resize_short, crop)
        numpy_px, _ = pp.resize_crop(photo, spec, backend="numpy")
        pil_px, _ = pp.resize_crop(photo, spec, backend="pillow")
        engine_px, _ = pp.resize_crop(photo, spec, backend="engine")
        assert numpy_px.dtype == engine_px.dtype == np.float32 and pil_px.dtype == np.uint8
        assert numpy_px.shape == pil_px.shape == engine_px.shape == want.shape
        # numpy and the engine compute the recipe in float32, never rounded.
        assert np.abs(numpy_px - want).max() < 1e-3
        assert np.abs(engine_px - want).max() < 1e-3
        # The default is the engine.
        np.testing.assert_array_equal(pp.resize_crop(photo, spec)[0], engine_px)
        # Pillow rounds to 8 bits after each axis: within 1 level, about a quarter on average
        # (what two roundings give; a biased filter would show here first).
        diff = np.abs(pil_px - want)
        assert diff.max() <= 1.0 + 1e-6
        assert diff.mean() < 0.32


def test_pillow_crop_region_equals_full_resize_then_crop(photos):
    """Resizing only the crop's region (box=) gives the pixels of the full resize that the
    training transforms (weights_tools.data: ResizeShorter, CenterCrop) cut, to a level."""
    bilinear = Image.Resampling.BILINEAR
    for photo in photos:
        for resize_short, crop in PHOTO_SPECS[:4]:
            px, geo = pp.resize_crop(photo, imagenet_spec(resize_short, crop), backend="pillow")
            full = np.asarray(
                Image.fromarray(photo).resize((geo.resized_width, geo.resized_height), bilinear)
            )
            cut = full[geo.top : geo.top + crop[0], geo.left : geo.left + crop[1]]
            # They differ only where the exact value is a tie (x.5 levels: with a downscale of
            # 5/3 many are), which Pillow's two code paths break differently.
            assert np.abs(px.astype(int) - cut).max() <= 1
            assert np.mean(px != cut) < 0.05


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    crop_h=st.integers(1, 24),
    crop_w=st.integers(1, 24),
    extra=st.integers(0, 60),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_both_paths_give_the_recipe_on_random_sizes(h, w, crop_h, crop_w, extra, channels, seed):
    resize_short = max(crop_h, crop_w) + extra
    px = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    spec = imagenet_spec(resize_short, (crop_h, crop_w))
    want = recipe_pixels(px, resize_short, (crop_h, crop_w))
    if want.shape[:2] != (crop_h, crop_w):  # the resized image is smaller than the crop
        with pytest.raises(qbinfer.ShapeError, match="smaller than"):
            pp.resize_crop(px, spec, channels=channels)
        return
    got_numpy, _ = pp.resize_crop(px, spec, channels=channels, backend="numpy")
    got_pil, _ = pp.resize_crop(px, spec, channels=channels, backend="pillow")
    got_engine, _ = pp.resize_crop(px, spec, channels=channels, backend="engine")
    assert np.abs(got_numpy - want).max() < 1e-3
    assert np.abs(got_pil - want).max() <= 1.0 + 1e-6
    assert np.abs(got_engine - want).max() < 1e-3
    # Normalised in the same pass: the recipe's float32 arithmetic on those pixels, exactly.
    x = pp.preprocess(px, spec, channels=channels, backend="engine")[0]
    mean, std = (np.float32(spec[k][:channels]) for k in ("mean", "std"))
    np.testing.assert_array_equal(x, (got_engine * np.float32(1 / 255) - mean) / std)


def test_normalize_is_the_recipes_float32_arithmetic(photos):
    spec = imagenet_spec()
    x = pp.preprocess(photos[0], spec, backend="pillow")[0]
    px, _ = pp.resize_crop(photos[0], spec, backend="pillow")
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    want = (px.astype(np.float32) * np.float32(1 / 255) - mean) / std
    assert x.dtype == np.float32 and x.shape == (224, 224, 3)
    np.testing.assert_array_equal(x, want)
    # The numpy path normalises its unrounded floats the same way, and so does the engine in
    # the pass that resizes (the default: a 3-channel model given a photo and a PIL image).
    for backend in ("numpy", "engine", "auto"):
        xn = pp.preprocess(photos[0], spec, backend=backend)[0]
        pn, _ = pp.resize_crop(photos[0], spec, backend=backend)
        np.testing.assert_array_equal(xn, (pn * np.float32(1 / 255) - mean) / std)
    np.testing.assert_array_equal(pp.preprocess(Image.fromarray(photos[0]), spec)[0], xn)


# -- image kinds --------------------------------------------------------------------------------


def test_image_kinds_reach_the_same_pixels(photos, tmp_path):
    spec = imagenet_spec(40, (32, 32))
    rgb = photos[1][::4, ::4].copy()
    base = pp.preprocess(rgb, spec)
    rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=2)
    wide = rgb.astype(np.uint16) * 257  # 16-bit: v * 257 is v again in 8 bits
    for same in (rgba, Image.fromarray(rgb), Image.fromarray(rgba), wide):
        np.testing.assert_array_equal(pp.preprocess(same, spec), base)
    # A palette image: its own colours, as its RGB conversion.
    pal = Image.fromarray(rgb).quantize(64)
    np.testing.assert_array_equal(pp.preprocess(pal, spec), pp.preprocess(pal.convert("RGB"), spec))
    # Grayscale: repeated into three channels; a 16-bit grayscale PNG file as its 8-bit values.
    gray = rgb[:, :, 1]
    g3 = pp.preprocess(np.repeat(gray[:, :, None], 3, axis=2), spec)
    for same in (gray, gray[:, :, None], Image.fromarray(gray)):
        np.testing.assert_array_equal(pp.preprocess(same, spec), g3)
    png16 = tmp_path / "gray16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(png16)
    with Image.open(png16) as opened:
        assert opened.mode in ("I;16", "I")
    np.testing.assert_array_equal(pp.preprocess(png16, spec), g3)
    # numpy: the same up to float32 rounding (BLAS may order the sums by the matrix shape).
    g3_numpy = pp.preprocess(np.repeat(gray[:, :, None], 3, axis=2), spec, backend="numpy")
    np.testing.assert_allclose(
        pp.preprocess(str(png16), spec, backend="numpy"), g3_numpy, rtol=0, atol=1e-5
    )


def test_sixteen_bit_rounds_to_nearest_level():
    v = np.arange(0, 65536, dtype=np.uint16)
    eight = pp.to_pixels(v.reshape(256, 256), channels=1)[:, :, 0].ravel()
    want = np.floor(v.astype(np.float64) * 255 / 65535 + 0.5)
    np.testing.assert_array_equal(eight, want)


def test_one_channel_takes_gray_and_rgb_as_pillows_luma(photos):
    spec = imagenet_spec(40, (32, 32))
    rgb = photos[0][::4, ::4].copy()
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(pp.to_pixels(rgb, channels=1)[:, :, 0], luma)
    want = pp.preprocess(luma, spec, channels=1)
    assert want.shape == (1, 32, 32, 1)
    for same in (rgb, Image.fromarray(rgb), luma[:, :, None], Image.fromarray(luma)):
        for backend in ("pillow", "numpy", "engine"):
            got = pp.preprocess(same, spec, channels=1, backend=backend)
            assert got.shape == (1, 32, 32, 1)
            np.testing.assert_allclose(got, want, atol=1.01 / 255 / 0.229)
    # A 1-channel model normalises with the first mean and std.
    px, _ = pp.resize_crop(luma, spec, channels=1)
    np.testing.assert_array_equal(
        want[0],
        (px.astype(np.float32) * np.float32(1 / 255) - np.float32(0.485)) / np.float32(0.229),
    )


def test_bad_images_are_clear_errors():
    spec = imagenet_spec(40, (32, 32))
    with pytest.raises(qbinfer.DtypeError, match="uint8"):
        pp.preprocess(np.zeros((40, 40, 3), np.float32), spec)
    with pytest.raises(qbinfer.ShapeError, match="H x W x 3"):
        pp.preprocess(np.zeros((40, 40, 2), np.uint8), spec)
    with pytest.raises(qbinfer.ShapeError, match="smaller than the 32x32 crop"):
        pp.preprocess(np.zeros((20, 20, 3), np.uint8), imagenet_spec(0, (32, 32)))
    with pytest.raises(qbinfer.DtypeError, match="mode 'F'"):
        pp.preprocess(Image.new("F", (40, 40)), spec)
    with pytest.raises(qbinfer.ShapeError, match="1 or 3 input channels"):
        pp.preprocess(np.zeros((40, 40, 3), np.uint8), spec, channels=4)
    with pytest.raises(ValueError, match="backend"):
        pp.preprocess(np.zeros((40, 40, 3), np.uint8), spec, backend="opencv")


# -- bounds -------------------------------------------------------------------------------------


def test_image_size_is_capped_before_any_copy(tmp_path, monkeypatch):
    # A 2^31-pixel view of one pixel: refused from its shape, nothing allocated.
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (65536, 32768, 3))
    with pytest.raises(qbinfer.ShapeError, match="MAX_IMAGE_PIXELS"):
        pp.preprocess(huge, imagenet_spec())
    # A file is refused from its header, before it is decoded.
    monkeypatch.setattr(pp, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 40)).save(path)
    with pytest.raises(qbinfer.ShapeError, match="50 = 2,000 pixels exceeds the limit of 1,000"):
        pp.preprocess(path, imagenet_spec(40, (32, 32)))


@pytest.mark.parametrize("backend", ["numpy", "pillow", "engine"])
def test_a_huge_resize_short_costs_only_the_crop(backend):
    """resize_short = 32767 on a 640 x 480 image means a 43689 x 32767 resized image (16 GiB as
    float32): only the crop's pixels are computed, and they are the recipe's."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    spec = imagenet_spec(32767, (224, 224))
    tracemalloc.start()
    try:
        px, geo = pp.resize_crop(img, spec, backend=backend)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (geo.resized_height, geo.resized_width) == (32767, 43689)
    assert peak < 16 * 2**20  # numpy's own allocations (Pillow's are not traced, and small)
    # The crop of a 68x upscale: each output pixel interpolates 2 x 2 input pixels around the
    # image's centre; spot-check against the recipe's formula on the window it reads.
    h0, w0 = int(geo.top * 480 / 32767), int(geo.left * 640 / 43689)
    window = img[h0 - 2 : h0 + 8, w0 - 2 : w0 + 8].astype(np.float64)
    ys = (np.arange(geo.top, geo.top + 224) + 0.5) * 480 / 32767 - 0.5 - (h0 - 2)
    xs = (np.arange(geo.left, geo.left + 224) + 0.5) * 640 / 43689 - 0.5 - (w0 - 2)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    want = (
        window[y0][:, x0] * (1 - fy) * (1 - fx)
        + window[y0 + 1][:, x0] * fy * (1 - fx)
        + window[y0][:, x0 + 1] * (1 - fy) * fx
        + window[y0 + 1][:, x0 + 1] * fy * fx
    )
    assert np.abs(px - want).max() <= (1.0 + 1e-6 if backend == "pillow" else 1e-3)


@pytest.mark.parametrize("shape", [(20000, 1, 3), (1, 20000, 3), (3, 17000, 3)])
def test_extreme_aspect_ratios_stay_small(shape):
    img = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    spec = imagenet_spec(256, (224, 224))
    tracemalloc.start()
    try:
        got = pp.resize_crop(img, spec, backend="numpy")[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    pil = pp.resize_crop(img, spec, backend="pillow")[0]
    assert np.abs(got - pil).max() <= 1.0 + 1e-3
    assert np.abs(pp.resize_crop(img, spec, backend="engine")[0] - got).max() < 1e-3


def test_resize_shorter_is_the_recipe_on_the_whole_image(photos):
    got = pp.resize_shorter(photos[0], 100)
    want = recipe_pixels(photos[0], 100, (100, 150))
    assert got.shape == (100, 150, 3)
    assert np.abs(got - want).max() < 1e-3


# -- crop geometry: where the model's output grid lies in the image ----------------------------


def reference_cells(n_in, n_resized, first, n_crop, n_cells):
    """Per image pixel: the grid cell its centre falls in, or -1 (exact rational arithmetic)."""
    out = []
    for y in range(n_in):
        pos = Fraction(2 * y + 1, 2) * Fraction(n_resized, n_in) - first
        cell = pos * n_cells / n_crop
        out.append(int(cell // 1) if 0 <= pos < n_crop else -1)
    return out


@pytest.mark.parametrize(
    "size,spec_args,grid",
    [
        ((427, 640), (256, (224, 224)), (28, 28)),
        ((480, 640), (0, (480, 480)), (60, 60)),
        ((100, 60), (64, (64, 48)), (64, 48)),
        ((37, 41), (300, (200, 300)), (7, 9)),
    ],
)
def test_to_frame_places_the_grid_where_the_crop_was(size, spec_args, grid):
    h, w = size
    geo = pp.CropGeometry.of(h, w, imagenet_spec(*spec_args))
    cells = np.arange(grid[0] * grid[1], dtype=np.int32).reshape(grid)
    frame = geo.to_frame(cells)
    assert frame.shape == (h, w) and frame.dtype == np.int32
    rows = reference_cells(h, geo.resized_height, geo.top, geo.crop_height, grid[0])
    cols = reference_cells(w, geo.resized_width, geo.left, geo.crop_width, grid[1])
    for y in range(0, h, 3):
        for x in range(0, w, 3):
            want = -1 if rows[y] < 0 or cols[x] < 0 else rows[y] * grid[1] + cols[x]
            assert frame[y, x] == want, (y, x)
    # Every cell shows up somewhere when the image has at least as many pixels as the grid.
    if geo.crop_height * h >= grid[0] * geo.resized_height:
        assert set(np.unique(frame)) - {-1} == set(range(cells.size))


def test_without_pillow_arrays_take_the_engine_path(photos, monkeypatch):
    spec = imagenet_spec()
    want = pp.preprocess(photos[0], spec)
    monkeypatch.setattr(pp, "_pillow", lambda: None)  # as when `import PIL` fails
    np.testing.assert_array_equal(pp.preprocess(photos[0], spec), want)
    np.testing.assert_allclose(
        pp.preprocess(photos[0], spec, backend="numpy"), want, rtol=0, atol=1e-5
    )
    with pytest.raises(qbinfer.Error, match="needs Pillow"):
        pp.preprocess(photos[0], spec, backend="pillow")


def test_engine_reads_strided_and_flipped_arrays_as_copies(photos):
    """The engine reads the window under the crop in place when its pixels are packed, and a
    copy otherwise: the pixels do not depend on the array's memory layout."""
    spec = imagenet_spec(100, (96, 80))
    rgb = photos[1]
    want = pp.preprocess(np.ascontiguousarray(rgb[::-1, ::-1]), spec)
    np.testing.assert_array_equal(pp.preprocess(rgb[::-1, ::-1], spec), want)
    fortran = np.asfortranarray(rgb[::-1, ::-1])
    np.testing.assert_array_equal(pp.preprocess(fortran, spec), want)
    wide = np.zeros((rgb.shape[0], rgb.shape[1] * 2, 3), np.uint8)
    wide[:, ::2] = rgb  # every other column: the pixels 6 bytes apart
    np.testing.assert_array_equal(pp.preprocess(wide[:, ::2], spec), pp.preprocess(rgb, spec))


def test_engine_kernel_refuses_bad_filters():
    core = qbinfer._core
    img = np.zeros((10, 12, 3), np.uint8)
    ones = np.ones((4, 2), np.float32)
    first = np.arange(4, dtype=np.int64)
    unit = (3, 1.0, np.zeros(3, np.float32), np.ones(3, np.float32))
    assert core._resample_normalize(img, first, ones, first, ones, *unit).shape == (4, 4, 3)
    with pytest.raises(qbinfer.ShapeError, match="rows output 1 starts at input 10"):
        core._resample_normalize(img, np.array([0, 10, 2, 3]), ones, first, ones, *unit)
    with pytest.raises(qbinfer.ShapeError, match="columns output 0 starts at input -1"):
        core._resample_normalize(img, first, ones, np.array([-1, 0, 1, 2]), ones, *unit)
    with pytest.raises(qbinfer.ShapeError, match="first \\(n,\\) and weights"):
        core._resample_normalize(img, first, ones[:3], first, ones, *unit)
    with pytest.raises(qbinfer.DtypeError, match="uint8"):
        core._resample_normalize(img.astype(np.float32), first, ones, first, ones, *unit)
    with pytest.raises(qbinfer.ShapeError, match="packed pixels"):
        core._resample_normalize(img[:, ::2], first, ones, first, ones, *unit)
    with pytest.raises(qbinfer.ShapeError, match="cannot make 1 output channels of 3"):
        core._resample_normalize(img, first, ones, first, ones, 1, *unit[1:])
    with pytest.raises(qbinfer.ShapeError, match="mean and std need 3"):
        core._resample_normalize(img, first, ones, first, ones, 3, 1.0, unit[2][:2], unit[3])
