"""Model.predict for every output kind: a dense (N x C x H x W) output gives a class map in the
image's own frame (checked against PyTorch's argmax on the same preprocessed input), 1-channel
models take grayscale and RGB images, and a list of images is preprocessed once each and run
in batches."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qbinfer
import qbinfer.model as qmodel
from qbinfer.preprocess import preprocess

torch = pytest.importorskip("torch", reason="converting models needs the tools extra")
nn = torch.nn

from weights_tools.convert import to_qbw  # noqa: E402


def photo_like(height, width, seed):
    """A smooth colour image with edges (gradients and discs), so that a resize matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([x / width, y / height, (x + y) / (width + height)], axis=2) * 200
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, height / 2)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


class DenseNet(nn.Module):
    """A small conv-only segmenter: stride 2, 5 classes per output pixel."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.Conv2d(8, 5, 1),
        )

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    torch.manual_seed(0)
    net = DenseNet().eval()
    path = tmp_path_factory.mktemp("dense") / "dense.qbw"
    to_qbw(net, path, input_size=(32, 40), preprocessing={"resize_short": 44})
    return net, qbinfer.load(path)


def pixel_cells(n_in, n_resized, first, n_crop, n_cells):
    """Per image pixel along an axis: the output cell its centre maps to, or -1 (exact)."""
    cells = []
    for y in range(n_in):
        pos = Fraction(2 * y + 1, 2) * Fraction(n_resized, n_in) - first
        cells.append(int(pos * n_cells / n_crop // 1) if 0 <= pos < n_crop else -1)
    return np.array(cells)


@pytest.mark.parametrize("size", [(50, 70), (90, 41), (44, 44), (200, 300), (31, 29)])
def test_dense_output_is_torchs_argmax_in_the_images_frame(dense, size):
    net, model = dense
    h, w = size
    img = photo_like(h, w, seed=h * w)
    got = model.predict(img)
    assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.shape == (h, w)

    spec = model.preprocessing
    x = preprocess(img, spec)  # 1 x 32 x 40 x 3, what predict feeds the engine
    with torch.no_grad():
        logits = net.double()(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)))[0]
    net.float()
    grid = logits.argmax(0).numpy()  # 16 x 20
    top2 = torch.topk(logits, 2, dim=0).values.numpy()
    clear = (top2[0] - top2[1]) > 1e-3  # not a near tie that float32 rounding may flip

    # Where each image pixel lands: through the resize (shorter side to 44, the other rounded),
    # the centre crop of 32 x 40, and the stride-2 grid of 16 x 20 cells.
    nh, nw = (44, round(w * 44 / h)) if h <= w else (round(h * 44 / w), 44)
    top, left = round((nh - 32) / 2), round((nw - 40) / 2)
    rows = pixel_cells(h, nh, top, 32, 16)
    cols = pixel_cells(w, nw, left, 40, 20)
    inside = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    np.testing.assert_array_equal(got == -1, ~inside)
    r, c = np.meshgrid(np.clip(rows, 0, None), np.clip(cols, 0, None), indexing="ij")
    judged = inside & clear[r, c]
    assert judged.sum() > 0.9 * inside.sum()
    np.testing.assert_array_equal(got[judged], grid[r, c][judged])
    # The crop covers the image's middle; a wide or tall image has -1 margins on its long sides.
    assert inside[h // 2, w // 2]


def test_dense_predict_of_a_list_and_through_a_file(dense, tmp_path):
    _, model = dense
    images = [photo_like(60, 80, seed=s) for s in range(3)]
    single = [model.predict(im) for im in images]
    batch = model.predict(images)
    assert len(batch) == 3
    for a, b in zip(batch, single):
        np.testing.assert_array_equal(a, b)
    png = tmp_path / "img.png"
    Image.fromarray(images[0]).save(png)
    np.testing.assert_array_equal(model.predict(png), single[0])


def test_a_list_is_preprocessed_once_per_image_and_run_in_batches(dense, monkeypatch):
    _, model = dense
    calls = {"prepare": 0, "run": []}
    real_prepare, real_run = qmodel.prepare, model.run

    def counting_prepare(*args, **kwargs):
        calls["prepare"] += 1
        return real_prepare(*args, **kwargs)

    def counting_run(x, layout="nchw"):
        calls["run"].append(x.shape[0])
        return real_run(x, layout)

    monkeypatch.setattr(qmodel, "prepare", counting_prepare)
    monkeypatch.setattr(qmodel, "PREDICT_BATCH", 2)
    monkeypatch.setattr(model, "run", counting_run)
    images = [photo_like(40, 50, seed=s) for s in range(5)]
    out = model.predict(images)
    assert len(out) == 5
    assert calls["prepare"] == 5
    assert calls["run"] == [2, 2, 1]


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory):
    """A 1-channel classifier (28 x 28 x 1, 3 classes), as MNIST-like models are."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.PReLU(6),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()
    path = tmp_path_factory.mktemp("gray") / "gray.qbw"
    to_qbw(net, path, input_size=(28, 28), in_channels=1, class_names=["zero", "one", "two"])
    return net, qbinfer.load(path)


def test_one_channel_model_takes_grayscale_and_rgb(gray_model):
    net, model = gray_model
    assert model.input_shape == (28, 28, 1)
    rgb = photo_like(40, 36, seed=7)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R BT.601, Pillow's rule
    want = model.predict(luma, top_k=3)
    assert sorted(name for name, _ in want) == ["one", "two", "zero"]
    for same in (rgb, Image.fromarray(rgb), luma[:, :, None], Image.fromarray(luma)):
        assert model.predict(same, top_k=3) == want
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    assert model.predict(rgba, top_k=3) == want

    # The input the model saw: Pillow's luma, resized (32, the default for a 28 crop) and
    # cropped, normalised with the first mean and std; PyTorch's probabilities on it.
    spec = model.preprocessing
    resized = Image.fromarray(luma).resize((32, round(40 * 32 / 36)), Image.Resampling.BILINEAR)
    px = np.asarray(resized, dtype=np.float32)
    top, left = round((px.shape[0] - 28) / 2), round((px.shape[1] - 28) / 2)
    px = px[top : top + 28, left : left + 28]
    x = (px * np.float32(spec["pixel_scale"]) - np.float32(spec["mean"][0])) / np.float32(
        spec["std"][0]
    )
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(x[None, None])), dim=1)[0].numpy()
    names = model.class_names
    for name, p in want:
        # to a level of the 8-bit resize (its ties may break either way) and float rounding
        assert p == pytest.approx(float(probs[names.index(name)]), abs=2e-3)


def test_models_of_other_channel_counts_are_a_clear_error(tmp_path):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(4, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = tmp_path / "four.qbw"
    to_qbw(net.eval(), path, input_size=(8, 8), in_channels=4)
    model = qbinfer.load(path)
    with pytest.raises(qbinfer.ShapeError, match="1 or 3 input channels, not 4"):
        model.predict(np.zeros((8, 8, 3), np.uint8))


def test_top_k_must_be_a_positive_int(gray_model):
    _, model = gray_model
    img = np.zeros((28, 28), np.uint8)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="top_k"):
            model.predict(img, top_k=bad)
    assert len(model.predict(img, top_k=1)) == 1
    assert model.predict([]) == []


def test_a_file_whose_resize_short_is_huge_predicts_in_bounded_memory(tmp_path):
    """resize_short = 32767 (issue 14): a 640 x 480 image would be resized to 43689 x 32767;
    predict computes only the 32 x 40 crop, and the class map says where that crop lies."""
    import tracemalloc

    torch.manual_seed(3)
    path = tmp_path / "bomb.qbw"
    to_qbw(DenseNet().eval(), path, input_size=(32, 40), preprocessing={"resize_short": 32767})
    model = qbinfer.load(path)
    assert model.preprocessing["resize_short"] == 32767
    img = photo_like(480, 640, seed=11)
    tracemalloc.start()
    try:
        got = model.predict(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    assert got.shape == (480, 640)
    # The crop is 32/32767 of the resized height: the centre pixel at most, the rest outside.
    assert np.count_nonzero(got >= 0) <= 4 and got[0, 0] == -1


def test_classifier_predict_is_the_softmax_of_run_on_the_recipe(tmp_path):
    """predict of an array, a PIL image and a JPEG file: the top classes of the softmax of
    `run` on the recipe's input (computed here in float64 from run's logits), the same on every
    call (predict reads the file's preprocessing, names and output kind once)."""
    model = qbinfer.load(Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw")
    assert model.output_kind == "logits"
    img = photo_like(60, 90, seed=3)
    path = tmp_path / "photo.jpg"
    Image.fromarray(img).save(path, quality=95)
    with Image.open(path) as opened:
        decoded = np.asarray(opened.convert("RGB"))
    names = model.class_names
    for source, pixels in ((img, img), (Image.fromarray(img), img), (path, decoded)):
        x = preprocess(pixels, model.preprocessing, channels=3)
        logits = model.run(x, layout="nhwc")[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")[:4]
        for _ in range(2):
            got = model.predict(source, top_k=4)
            assert [name for name, _ in got] == [names[i] for i in order]
            np.testing.assert_allclose([p for _, p in got], probs[order], rtol=1e-12)
