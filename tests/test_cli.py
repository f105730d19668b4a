"""The `qbinfer` command line as a user meets it, each finding of issue 13 in a subprocess: the exit
code, and no traceback for a user's mistake. Also the converter's command line on a checkpoint
that does not fit, and file-supplied strings printed escaped (issue 14)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_module, run_python, run_qbinfer_main

import qbinfer

torch = pytest.importorskip("torch")  # the models under test are converted from PyTorch

from conftest import convert_model, zoo_model  # noqa: E402

CLASSES = [f"class-{i}" for i in range(10)]


def qbinfer_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m qbinfer ARGS` (the installed console script runs the same main)."""
    return run_module("qbinfer", *args, timeout=timeout)


def assert_clean_error(out: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 1, one line on stderr naming what is wrong, no traceback."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = out.stderr.strip().splitlines()
    error_lines = [line for line in lines if "error" in line]
    assert len(error_lines) == 1, out.stderr
    for word in words:
        assert word in error_lines[0], (word, out.stderr)
    return error_lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """QB-Net-Small at 32x32 with 10 named classes, converted: its .qbw path."""
    model = zoo_model("qb_net_small", seed=5)
    path, _ = convert_model(
        model, tmp_path_factory.mktemp("cli"), "small", (32, 32), class_names=CLASSES
    )
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A directory of 5 PNGs (two in a subdirectory) and a text file to be skipped."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = root / ("sub" if i >= 3 else ".") / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (36 + i, 44, 3), dtype=np.uint8)).save(path)
        paths.append(os.path.normpath(str(path)))
    (root / "notes.txt").write_text("not an image")
    return str(root), sorted(paths)


# -- --version, help ---------------------------------------------------------------------------


def test_version_flag():
    out = qbinfer_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"qbinfer {qbinfer.__version__}"


def _all_parsers():
    from qbinfer.__main__ import build_parser

    parser = build_parser()
    yield "", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub


@pytest.mark.parametrize("command", ["", "demo", "predict", "profile", "summary", "version"])
def test_help_is_plain_text(command):
    out = qbinfer_cli(*([command] if command else []), "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: qbinfer" in out.stdout
    assert "``" not in out.stdout and "`" not in out.stdout  # no RST or Markdown markup


def test_every_option_has_help():
    for name, parser in _all_parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


# -- predict -----------------------------------------------------------------------------------


def test_predict_directory_recursive(small, images):
    root, paths = images
    out = qbinfer_cli("predict", small, root, "--top-k", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == paths  # sorted, txt skipped
    for line in lines:
        assert line.split(": ", 1)[1].count("class-") == 3


def test_predict_json_one_line_per_image(small, images):
    root, paths = images
    out = qbinfer_cli("predict", small, paths[0], root + "/sub", "--json", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["image"] for r in records] == [paths[0]] + [p for p in paths if "sub" in p]
    model = qbinfer.load(small)
    for r in records:
        want = model.predict(r["image"], top_k=2)
        got = [(p["class"], p["probability"]) for p in r["predictions"]]
        assert [n for n, _ in got] == [n for n, _ in want]
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=1e-6)


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_predict_jobs_give_the_serial_results(small, images, jobs):
    root, paths = images
    out = qbinfer_cli("predict", small, root, "--json", "--jobs", jobs, "--chunk", "2")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.strip().splitlines()]
    model = qbinfer.load(small)
    assert [r["image"] for r in records] == paths
    for r in records:
        assert r["predictions"][0]["class"] == model.predict(r["image"], top_k=1)[0][0]


def test_predict_progress_bar_on_stderr(small, images):
    root, paths = images
    out = qbinfer_cli("predict", small, root, "--progress")
    assert out.returncode == 0, out.stderr
    assert f"{len(paths)}/{len(paths)}" in out.stderr and "images/s" in out.stderr
    assert "images/s" not in out.stdout and "[#" not in out.stdout  # the bar is not a result
    quiet = qbinfer_cli("predict", small, root)  # not a terminal: no bar unless asked
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_predict_bad_image_among_good_ones(small, images, tmp_path):
    _, paths = images
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = qbinfer_cli("predict", small, paths[0], str(bad), paths[1])
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert [line.split(": ")[0] for line in out.stdout.strip().splitlines()] == paths[:2]
    assert f"error: {bad}" in out.stderr and "1 of 3 image(s) failed" in out.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["{model}", "{missing}"], ["no such file or directory"]),
        (["{missing}", "{image}"], ["No such file"]),
        (["{damaged}", "{image}"], ["FormatError"]),
        (["{model}", "{emptydir}"], ["no image files"]),
    ],
)
def test_predict_user_mistakes_are_one_line(small, images, tmp_path, args, words):
    damaged = tmp_path / "damaged.qbw"
    damaged.write_bytes(b"QBW0" + b"\x00" * 200)
    (tmp_path / "empty").mkdir()
    fields = dict(
        model=small,
        missing=str(tmp_path / "nope.png"),
        image=images[1][0],
        damaged=str(damaged),
        emptydir=str(tmp_path / "empty"),
    )
    out = qbinfer_cli("predict", *[a.format(**fields) for a in args])
    assert_clean_error(out, "qbinfer predict: error:", *words)


def test_debug_prints_the_traceback(small, tmp_path):
    damaged = tmp_path / "damaged.qbw"
    damaged.write_bytes(b"\x00" * 200)
    out = qbinfer_cli("summary", str(damaged), "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "FormatError" in out.stderr
    out = qbinfer_cli("--debug", "summary", str(damaged))  # before the command works too
    assert out.returncode == 1 and "Traceback" in out.stderr


@pytest.mark.parametrize("bad", [["--top-k", "0"], ["--threads", "many"], ["--jobs", "-2"]])
def test_predict_bad_option_values(small, images, bad):
    out = qbinfer_cli("predict", small, images[1][0], *bad)
    assert out.returncode == 2  # argparse's usage error
    assert "Traceback" not in out.stderr and "error: argument" in out.stderr


def test_predict_dense_model_writes_a_png_class_mask(small, images, tmp_path, monkeypatch, capsys):
    # Model.predict returns a class per pixel for a dense output (another part of the runtime);
    # the command line writes it as a PNG whose palette indices are the classes.
    from PIL import Image

    from qbinfer import model as model_module
    from qbinfer.__main__ import main

    _, paths = images
    maps = {}

    def dense_predict(self, img, top_k=5):
        if isinstance(img, list):
            return [dense_predict(self, one, top_k) for one in img]
        with Image.open(img) as opened:
            h, w = opened.size[::-1]
        maps[img] = (np.arange(h * w).reshape(h, w) % 3).astype(np.int64)
        return maps[img]

    monkeypatch.setattr(model_module.Model, "predict", dense_predict)
    out_dir = tmp_path / "masks"
    assert main(["predict", small, *paths[:2], "--json", "--mask-dir", str(out_dir)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["image"] for r in records] == paths[:2]
    for r in records:
        with Image.open(r["mask"]) as mask:
            assert mask.format == "PNG" and mask.mode == "P"
            np.testing.assert_array_equal(np.asarray(mask), maps[r["image"]])
        assert set(r["classes"]) == {"class-0", "class-1", "class-2"}
        assert sum(r["classes"].values()) == pytest.approx(1.0, abs=1e-4)


# -- summary -----------------------------------------------------------------------------------

LONG_NAME = "/features/" + "/".join(f"stage{i}.block{i}" for i in range(12)) + "/conv/Conv"


@pytest.fixture(scope="module")
def hostile(small, tmp_path_factory):
    """The small model with a very long op name and escape sequences and newlines in its model
    name, an op name and the class names (strings of a file are data)."""
    from weights_tools.qbw import read_qbw, write_qbw

    graph = read_qbw(small)
    graph.model_name = "net\x1b]0;pwned\x07"
    graph.ops[0].name = LONG_NAME
    graph.ops[1].name = "conv\x1b[31mRED\nFAKE: ok"
    graph.class_names = [f"c{i}\x1b[2J\r\nforged" for i in range(len(graph.class_names))]
    path = str(tmp_path_factory.mktemp("hostile") / "hostile.qbw")
    write_qbw(path, graph)
    return path


def test_summary_shows_whole_names(hostile):
    out = qbinfer_cli("summary", hostile)
    assert out.returncode == 0, out.stderr
    assert LONG_NAME in out.stdout


def test_file_strings_are_escaped(hostile, images):
    for args in (["summary", hostile], ["predict", hostile, images[1][0], "--top-k", "2"]):
        out = qbinfer_cli(*args)
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\r" not in out.stdout
        assert "FAKE" not in out.stdout.splitlines()[0] or "\\x1b" in out.stdout
        for line in out.stdout.splitlines():
            assert not line.startswith(("forged", "FAKE")), line  # no line was injected
    out = qbinfer_cli("summary", hostile)
    assert "conv\\x1b[31mRED\\x0aFAKE: ok" in out.stdout and "net\\x1b]0;pwned\\x07" in out.stdout
    out = qbinfer_cli("predict", hostile, images[1][0], "--top-k", "1")
    assert "\\x1b[2J\\x0d\\x0aforged" in out.stdout


def test_summary_into_a_closed_pipe(small):
    # `qbinfer summary m.qbw | head -1`: the reader is gone before the table is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "qbinfer", "summary", small],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr, out.stderr
    assert out.returncode == 128 + signal.SIGPIPE


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs a POSIX shell for the pipe")
def test_summary_piped_into_head(small):
    out = subprocess.run(
        ["/bin/sh", "-c", f'"{sys.executable}" -m qbinfer summary "{small}" | head -1'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("qb_net_small")


# -- demo --------------------------------------------------------------------------------------


def test_demo_unknown_arch_is_one_line():
    out = qbinfer_cli("demo", "--arch", "resnet18")
    assert_clean_error(out, "qbinfer demo: error:", "resnet18", "qsb_net_large")


def test_demo_model_that_fails_conversion_is_one_line():
    # binarynet_mlp flattens its 28x28 input: at the demo's default 224 it does not convert
    out = qbinfer_cli("demo", "--arch", "binarynet_mlp", "--runs", "1")
    assert_clean_error(out, "qbinfer demo: error:", "does not convert", "/Reshape")


def test_demo_tools_side_errors_are_one_line():
    out = run_module("weights_tools.demo_convert", "--arch", "resnet18")
    assert_clean_error(out, "resnet18")


def _near_tie_graph(path: str) -> None:
    """input (1x1x4) -> BITPACK (thresholds 0) -> BFC to 3 outputs: the smallest graph with a
    sign decision."""
    from weights_tools.qbw import (
        DType,
        Graph,
        Op,
        OpType,
        Preprocessing,
        Tensor,
        Value,
        pack_signs,
        write_qbw,
    )

    rng = np.random.default_rng(0)
    w = np.where(rng.standard_normal((3, 4)) >= 0, 1, -1).astype(np.int8)
    graph = Graph(
        tensors=[
            Tensor("t", DType.F32, np.zeros(4, np.float32)),
            Tensor("w", DType.BITS, pack_signs(w)),
            Tensor("s", DType.F32, np.ones(3, np.float32)),
            Tensor("b", DType.F32, np.zeros(3, np.float32)),
        ],
        values=[
            Value("x", DType.F32, 1, 1, 4),
            Value("bits", DType.BITS, 1, 1, 4),
            Value("y", DType.F32, 1, 1, 3),
        ],
        ops=[
            Op(OpType.BITPACK, "sign", [0], [1], [0]),
            Op(OpType.BFC, "fc", [1], [2], [1, 2, 3]),
        ],
        input_value=0,
        output_value=2,
        preprocessing=Preprocessing.for_input_size(1, 1),
    )
    write_qbw(path, graph)


@pytest.mark.parametrize("tie", [True, False])
def test_demo_explains_a_near_tie(tmp_path, tie):
    from weights_tools.demo_convert import explain_difference

    path = str(tmp_path / "tie.qbw")
    _near_tie_graph(path)
    x = np.array([[[[0.0 if tie else 0.5]], [[1.0]], [[-1.0]], [[2.0]]]], np.float32)
    logits = qbinfer.load(path).run(x)
    r = explain_difference(path, x, logits, 0.0309)
    assert r["near_tie"] is tie
    assert r["reference_rel_l2"] < 1e-6  # the engine agrees with the reference interpreter
    if tie:
        assert r["torch_diff_note"].startswith("torch_rel_l2 0.0309: a near-tie sign flip")
        assert "not a bug" in r["torch_diff_note"]
    else:
        assert "unexpected" in r["torch_diff_note"]


def test_demo_report_carries_the_explanation(monkeypatch, capsys):
    # Force the explanation on a model that agrees (a near tie cannot be drawn on purpose at
    # 224): the --json record and the text report both carry it.
    from weights_tools import demo_convert

    monkeypatch.setattr(demo_convert, "TOLERANCE", -1.0)
    common = ["--arch", "qb_net_small", "--input-size", "32", "--num-classes", "10"]
    assert demo_convert.main([*common, "--runs", "1", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert isinstance(rec["near_tie"], bool) and rec["torch_diff_note"].startswith("torch_rel_l2")
    assert rec["reference_rel_l2"] < 1e-3
    assert demo_convert.main([*common, "--runs", "1"]) == 0
    assert rec["torch_diff_note"].split(":")[0] in capsys.readouterr().out


# -- the converter's command line --------------------------------------------------------------


def test_convert_checkpoint_of_another_arch(tmp_path):
    from weights_tools.zoo import build_model

    ckpt = tmp_path / "qsb_small_se1.pth"
    torch.save(build_model("qsb_net_small", se="se1").state_dict(), ckpt)
    out = run_module(
        "weights_tools.convert", str(ckpt), "--arch", "qb_net_large", "-o", str(tmp_path / "x")
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) <= 8, out.stderr  # a summary, not 300 keys
    assert "missing keys" in out.stderr and "unexpected keys" in out.stderr
    best = [line for line in out.stderr.splitlines() if "fits best" in line]
    assert best and best[0].split("fits best: ")[1].startswith("--arch qsb_net_small --se se1 ")
    assert not (tmp_path / "x").exists()


def test_convert_checkpoint_with_another_head(tmp_path):
    from weights_tools.zoo import build_model

    ckpt = tmp_path / "ten.pth"
    torch.save(build_model("qb_net_small", num_classes=10).state_dict(), ckpt)
    out = run_module(
        "weights_tools.convert", str(ckpt), "--arch", "qb_net_small", "-o", str(tmp_path / "x")
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "fc.weight (10, 2048) vs (1000, 2048)" in out.stderr and "--num-classes" in out.stderr


def test_convert_missing_checkpoint(tmp_path):
    out = run_module(
        "weights_tools.convert",
        str(tmp_path / "none.pth"),
        "--arch",
        "qb_net_small",
        "-o",
        str(tmp_path / "x"),
    )
    assert_clean_error(out, "none.pth")


def test_runtime_cli_imports_no_torch(small, images):
    # predict, summary and profile run on an installation without the tools extra
    for args in (["summary", small], ["predict", small, images[1][0]], ["profile", small]):
        out = run_qbinfer_main(*args, "--debug", block_torch=True)
        assert out.returncode == 0, (args, out.stderr)


def test_unexpected_errors_say_how_to_get_the_traceback(small):
    code = (
        "import sys\nfrom qbinfer import model\n"
        "def boom(*a, **k):\n    raise ZeroDivisionError('x')\n"
        "model.Model.summary = boom\nmodel.Model.ops = boom\n"
        "from qbinfer.__main__ import main\n"
        f"sys.exit(main(['summary', {small!r}]))\n"
    )
    out = run_python(code)
    line = assert_clean_error(out, "ZeroDivisionError")
    assert "--debug" in line
