"""predict against run: what preprocessing adds to the model's own time (issue 13, item 1: at
most run + 3 ms on a 640x480 JPEG, run + 15 ms on a 1920x1080 frame).

    python -m pytest benchmarks/test_bench_predict.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name \\
        --benchmark-timer=time.process_time

(process time: on a shared machine it leaves out the time other processes hold the core; with
one engine thread it equals the wall time on an idle one.)

Models: QSB-Net-Large at 224 (random weights, converted once and cached, see
bench_util.zoo_file) and the shipped digits model (32x32), one thread. Images: scikit-learn's
china.jpg photo resized to 640x480 and 1920x1080 and saved as JPEG (quality 90). Per model and
image size, one group: `run` on the preprocessed batch of one; `predict` of the decoded image
(an RGB array: the preprocessing alone) and of the JPEG file (decoding included); the decoding
alone as predict pays it (Pillow: open and decode); and predict's preprocessing done by Pillow's
resize and by the numpy-only resize (the other `backend`s) followed by `run`.

Every benchmark but `run` also times one `run` before each of its rounds (untimed by the
benchmark: pytest-benchmark's setup): on a loaded machine `run` itself drifts from minute to
minute, so what predict adds is read from rounds measured side by side. extra_info then holds
`run_side_by_side_ms` (the median of those runs) and `over_run_ms`, the median over rounds of
(this round's time - the run just before it); the test prints both.
"""

import statistics
import time
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


def decode_rgb(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def decode(path):
    """What predict pays to read a file before preprocessing: open it, decode it."""
    with Image.open(path) as img:
        img.load()


ROUNDS = {"qsb_net_large": 60, "digits": 300}


@pytest.mark.parametrize(
    "what", ["run", "predict_array", "predict_jpeg", "decode", "pillow_path", "numpy_path"]
)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", ["qsb_net_large", "digits"])
def test_predict_against_run(benchmark, jpegs, name, size, what):
    model = qbinfer.load(model_path(name), threads=1)
    path = jpegs[size]
    img = decode_rgb(path)
    channels = model.input_shape[2]
    spec = model.preprocessing
    x = pp.preprocess(img, spec, channels=channels)
    for _ in range(3):  # warm the arena, the caches and Pillow's decoder
        model.run(x, layout="nhwc")
        model.predict(img)
        model.predict(path)

    def run():
        return model.run(x, layout="nhwc")

    fns = {
        "run": run,
        "predict_array": lambda: model.predict(img),
        "predict_jpeg": lambda: model.predict(path),
        "decode": lambda: decode(path),
        "pillow_path": lambda: model.run(
            pp.preprocess(img, spec, channels=channels, backend="pillow"), layout="nhwc"
        ),
        "numpy_path": lambda: model.run(
            pp.preprocess(img, spec, channels=channels, backend="numpy"), layout="nhwc"
        ),
    }
    benchmark.group = f"{name} {size}"
    benchmark.extra_info.update(model=name, image=size, what=what, isa=model.isa)
    if what == "run":
        benchmark(run)
    else:
        runs = []

        def time_one_run():
            start = time.process_time()
            run()
            runs.append(time.process_time() - start)

        benchmark.pedantic(fns[what], setup=time_one_run, rounds=ROUNDS[name], warmup_rounds=3)
        times = benchmark.stats.stats.data
        paired = [t - r for t, r in zip(times, runs[-len(times) :])]
        run_ms = statistics.median(runs) * 1e3
        over_ms = statistics.median(paired) * 1e3
        benchmark.extra_info.update(
            run_side_by_side_ms=round(run_ms, 3), over_run_ms=round(over_ms, 3)
        )
        print(
            f"\n{name} {size} {what}: run {run_ms:.3f} ms side by side, {over_ms:+.3f} ms over it"
        )
    benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1e3, 3)
