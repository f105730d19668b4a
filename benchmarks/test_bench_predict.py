"""predict against run: what preprocessing adds to the model's own time (issue 13, item 1: at
most run + 3 ms on a 640x480 JPEG, run + 15 ms on a 1920x1080 frame).

    python -m pytest benchmarks/test_bench_predict.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name \\
        --benchmark-timer=time.process_time

(process time: on a shared machine it leaves out the time other processes hold the core; with
one engine thread and single-threaded BLAS products it equals the wall time on an idle one.)

Models: QSB-Net-Large at 224 (random weights, converted once and cached, see
bench_util.zoo_file) and the shipped digits model (32x32), one thread. Images: scikit-learn's
china.jpg photo resized to 640x480 and 1920x1080 and saved as JPEG (quality 90). Per model and
image size, one group: `run` on the preprocessed batch of one, `predict` of the decoded image
(an RGB array: the preprocessing alone), `predict` of the JPEG file (decoding included), the
decoding alone (Pillow: open, convert to RGB), and predict with the numpy-only resize (the path
taken without Pillow)."""

from pathlib import Path

import numpy as np
import pytest
from bench_util import zoo_file

import qbinfer
from qbinfer import preprocess as pp

Image = pytest.importorskip("PIL.Image", reason="JPEG files need Pillow")

SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    datasets = pytest.importorskip("sklearn.datasets", reason="the photos come with scikit-learn")
    china = Image.fromarray(datasets.load_sample_images().images[0])
    folder = tmp_path_factory.mktemp("jpegs")
    out = {}
    for name, size in SIZES.items():
        path = folder / f"china-{name}.jpg"
        china.resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
        out[name] = path
    return out


def model_path(name):
    if name == "digits":
        return str(DIGITS)
    pytest.importorskip("torch", reason="converting the zoo needs the tools extra")
    return zoo_file(name)[0]


def decode(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("what", ["run", "predict_array", "predict_jpeg", "decode", "numpy_path"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", ["qsb_net_large", "digits"])
def test_predict_against_run(benchmark, jpegs, name, size, what):
    model = qbinfer.load(model_path(name), threads=1)
    path = jpegs[size]
    img = decode(path)
    channels = model.input_shape[2]
    x = pp.preprocess(img, model.preprocessing, channels=channels)
    for _ in range(3):  # warm the arena, the caches and Pillow's decoder
        model.run(x, layout="nhwc")
        model.predict(img)
    fns = {
        "run": lambda: model.run(x, layout="nhwc"),
        "predict_array": lambda: model.predict(img),
        "predict_jpeg": lambda: model.predict(path),
        "decode": lambda: decode(path),
        "numpy_path": lambda: model.run(
            pp.preprocess(img, model.preprocessing, channels=channels, backend="numpy"),
            layout="nhwc",
        ),
    }
    benchmark.group = f"{name} {size}"
    benchmark.extra_info.update(model=name, image=size, what=what, isa=model.isa)
    benchmark(fns[what])
    benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1e3, 3)
