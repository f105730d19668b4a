"""The Python API: load, run, predict, summary, errors, and the command line."""

import json
import os

import numpy as np
import pytest

import qbinfer

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")

from conftest import convert_model, run_module, run_python, run_qbinfer_main, zoo_model  # noqa: E402

CLASSES = [f"class-{i}" for i in range(10)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """qb_net_small at 32x32 with 10 named classes, its PyTorch twin, and the file path."""
    model = zoo_model("qb_net_small", seed=0)
    path, _ = convert_model(
        model, tmp_path_factory.mktemp("api"), "small", (32, 32), class_names=CLASSES
    )
    return model, path


def test_load_and_properties(small):
    _, path = small
    m = qbinfer.load(path)
    assert isinstance(m, qbinfer.Model)
    assert m.input_shape == (32, 32, 3)
    assert m.num_classes == 10 and m.class_names == CLASSES
    pre = m.preprocessing
    assert tuple(pre["crop"]) == (32, 32) and len(pre["mean"]) == 3 and pre["resize_short"] > 0
    # threads="auto" by default: every CPU this process may use.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert m.threads == usable and "qb_net_small" in repr(m)


def test_run_matches_pytorch_in_both_layouts(small):
    model, path = small
    m = qbinfer.load(path)
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = m.run(x)
    assert out.shape == (5, 10) and out.dtype == np.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-3
    out_nhwc = m.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="nhwc")
    np.testing.assert_array_equal(out, out_nhwc)
    # Non-contiguous input is accepted and gives the same answer.
    np.testing.assert_array_equal(m.run(x[:, :, :, :]), m.run(np.asfortranarray(x)))
    # Every image of a batch is computed independently.
    np.testing.assert_array_equal(out[2:3], m.run(x[2:3]))


def test_run_errors_are_clear(small):
    _, path = small
    m = qbinfer.load(path)
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(qbinfer.DtypeError, match="float32"):
        m.run(x.astype(np.float64))
    with pytest.raises(TypeError):  # DtypeError is a TypeError too
        m.run(x.astype(np.int32))
    with pytest.raises(qbinfer.ShapeError, match="32"):
        m.run(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError):  # ShapeError is a ValueError too
        m.run(np.zeros((1, 32, 32, 3), np.float32))  # NHWC data passed as NCHW
    with pytest.raises(qbinfer.ShapeError, match="batch"):
        m.run(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="layout"):
        m.run(x, layout="chwn")
    with pytest.raises(qbinfer.Error):
        m.run(np.zeros((0, 3, 32, 32), np.float32))
    assert issubclass(qbinfer.FormatError, qbinfer.Error)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        qbinfer.load(tmp_path / "missing.qbw")
    bad = tmp_path / "bad.qbw"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(qbinfer.FormatError, match="magic"):
        qbinfer.load(bad)
    with pytest.raises((ValueError, TypeError)):
        qbinfer.load(bad, threads=0)


def test_predict_inputs(small, tmp_path):
    _, path = small
    m = qbinfer.load(path)
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    top = m.predict(img, top_k=3)
    assert len(top) == 3 and all(name in CLASSES for name, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert len(m.predict(img, top_k=100)) == 10
    # The same picture as a PIL image, a PNG file, a .npy file, and with an alpha channel.
    from PIL import Image

    pil = Image.fromarray(img)
    png = tmp_path / "img.png"
    pil.save(png)
    npy = tmp_path / "img.npy"
    np.save(npy, img)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    for other in (pil, str(png), png, str(npy), rgba):
        assert m.predict(other, top_k=3) == top
    batch = m.predict([img, img], top_k=2)
    assert batch == [top[:2], top[:2]]
    gray = m.predict(img[:, :, 0])
    assert len(gray) == 5
    with pytest.raises(qbinfer.DtypeError, match="uint8"):
        m.predict(img.astype(np.float32))
    with pytest.raises(qbinfer.ShapeError):
        m.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(FileNotFoundError):
        m.predict(str(tmp_path / "nope.png"))


def test_preprocessing_matches_pil_resize(small):
    """Our numpy resize follows PIL's bilinear filter, so files and arrays agree."""
    from PIL import Image

    from qbinfer.preprocess import resize_shorter

    img = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    ours = resize_shorter(img, 37)
    pil = np.asarray(Image.fromarray(img).resize((ours.shape[1], ours.shape[0]), Image.BILINEAR))
    assert ours.shape == pil.shape
    assert np.abs(ours - pil.astype(np.float32)).max() <= 1.0  # PIL rounds to uint8


def test_summary_and_ops(small):
    _, path = small
    m = qbinfer.load(path)
    ops = m.ops()
    types = {op["type"] for op in ops}
    assert {"BCONV2D", "DWCONV3X3", "FC", "CONV2D", "BITPACK"} <= types
    text = m.summary()
    assert "BCONV2D" in text and "total:" in text and "BOPs" in text
    bops = sum(op["bops"] for op in ops)
    from weights_tools.ops import count_ops

    assert bops == count_ops(small[0], (32, 32)).bops


def test_runtime_never_imports_torch(small):
    _, path = small
    code = (
        "import numpy as np, qbinfer\n"
        f"m = qbinfer.load({path!r})\n"
        "print(m.predict(np.zeros((40, 40, 3), np.uint8))[0][0])\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    out = run_python(code, block_torch=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in CLASSES


def test_cli_summary_predict_and_errors(small, tmp_path):
    _, path = small

    def run(*a):
        return run_module("qbinfer", *a)

    out = run("summary", path)
    assert out.returncode == 0 and "BCONV2D" in out.stdout
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((40, 40, 3), np.uint8))
    out = run("predict", path, str(npy), "--top-k", "2")
    assert out.returncode == 0 and out.stdout.count("class-") == 2
    bad = tmp_path / "bad.qbw"
    bad.write_bytes(b"\x00" * 100)
    out = run("summary", str(bad))
    assert out.returncode == 1 and "FormatError" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("extra", [[], ["--fc", "bitplane8", "--depthwise", "int8"]])
def test_demo_json(extra):
    out = run_module(
        "qbinfer",
        "demo",
        "--json",
        "--arch",
        "qb_net_small",
        "--input-size",
        "32",
        "--num-classes",
        "10",
        "--runs",
        "2",
        *extra,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["latency_ms"] > 0 and rec["torch_latency_ms"] > 0 and rec["ort_latency_ms"] > 0
    if not extra:  # quantized runs are compared with the float model only for information
        assert rec["torch_rel_l2"] < 1e-3 and rec["ort_rel_l2"] < 1e-3
    assert len(rec["top5"]) == 5


def test_conversion_demo_runs_from_the_tools_side():
    # The same demo without the runtime's command line: the tools own it, qbinfer dispatches.
    out = run_module(
        "weights_tools.demo_convert",
        "--json",
        "--arch",
        "qb_net_small",
        "--input-size",
        "32",
        "--num-classes",
        "10",
        "--runs",
        "1",
    )
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["torch_rel_l2"] < 1e-3 and rec["ort_rel_l2"] < 1e-3 and rec["convert_s"] >= 0
    assert rec["torch_top1_equal"] and rec["ort_top1_equal"]


def test_demo_model_file_needs_no_torch(small):
    _, path = small
    out = run_qbinfer_main("demo", "--json", "--runs", "1", "--model", path, block_torch=True)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["model"] == "qb_net_small" and rec["image"] == "synthetic"
    assert len(rec["top5"]) == 5 and all(name in CLASSES for name, _ in rec["top5"])
