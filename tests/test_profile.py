"""`Model.profile` and `qbinfer profile`: per-step times named by the PyTorch layers the converter
recorded, a valid Chrome trace and a PNG chart; files without the record still profile."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")  # the model under test is converted from PyTorch

from conftest import convert_model, run_python, run_qbinfer_main, zoo_model  # noqa: E402

import qbinfer  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(qbw path, onnx path, PyTorch model) of QSB-Net-Small at 32x32 with random weights."""
    model = zoo_model("qsb_net_small", seed=3)
    path, onnx_path = convert_model(model, tmp_path_factory.mktemp("profile"), "qs", (32, 32))
    return path, onnx_path, model


def test_converter_records_onnx_nodes_and_modules(converted):
    import onnx

    path, onnx_path, torch_model = converted
    m = qbinfer.load(path)
    sources = m.metadata["op_sources"]
    ops = m.ops()
    assert len(sources) == len(ops)
    onnx_names = {n.name for n in onnx.load(onnx_path).graph.node}
    modules = dict(torch_model.named_modules())
    for op, src in zip(ops, sources):
        # the node the op was emitted from is among its sources, all are real ONNX nodes
        assert op["name"] in src["onnx"] and set(src["onnx"]) <= onnx_names
        assert all(name in modules for name in src["modules"]), src
    # a binary conv's BatchNormalization is folded into it: both are named for that op
    bconv = next(i for i, op in enumerate(ops) if op["type"] == "BCONV2D")
    kinds = {name.rsplit("/", 1)[-1] for name in sources[bconv]["onnx"]}
    assert {"Conv", "BatchNormalization"} <= kinds
    assert type(modules[sources[bconv]["modules"][0]]).__name__ == "BinaryConv2d"


def test_op_sources_fit_the_metadata_budget(converted, tmp_path):
    # The file's metadata string holds at most 65535 bytes: a long record is shortened, first
    # without the ONNX names, then to each op's main module, else left out.
    import onnx

    from weights_tools.converter.emit import op_sources
    from weights_tools.onnx_lowering import lower_onnx

    path, onnx_path, _ = converted
    model = onnx.load(onnx_path)
    graph = lower_onnx(model)
    full = op_sources(model, graph)
    assert full == qbinfer.load(path).metadata["op_sources"]
    modules_only = op_sources(model, graph, max_bytes=len(json.dumps(full)) - 1)
    assert modules_only == [{"modules": src["modules"]} for src in full]
    main_only = op_sources(model, graph, max_bytes=len(json.dumps(modules_only)) - 1)
    assert main_only == [{"modules": src["modules"][:1]} for src in full]
    assert op_sources(model, graph, max_bytes=10) is None
    # a file with the shortest record still names its steps by their modules
    short = str(tmp_path / "short.qbw")
    _rewrite_metadata(path, short, json.dumps({"op_sources": main_only}))
    prof = qbinfer.load(short).profile(runs=1)
    assert prof.named and prof.steps[0].name == full[0]["modules"][0]
    assert prof.steps[0].onnx_nodes == [qbinfer.load(short).ops()[0]["name"]]


def test_profile_steps(converted):
    path, _, torch_model = converted
    m = qbinfer.load(path)
    prof = m.profile(runs=3)
    steps = m._core.steps()
    assert prof.named and len(prof.steps) == len(steps)
    # every op of the file is in exactly one step, as the engine fused them
    covered = sorted(i for s in prof.steps for i in s.ops)
    assert covered == list(range(len(m.ops())))
    assert [s.ops for s in prof.steps] == [list(s["ops"]) for s in steps]
    assert all(s.time_us > 0 for s in prof.steps)
    assert sum(s.share for s in prof.steps) == pytest.approx(1.0)
    starts = [s.start_us for s in prof.steps]
    assert starts == sorted(starts) and starts[0] == 0
    modules = dict(torch_model.named_modules())
    assert all(s.name in modules for s in prof.steps)
    ops = m.ops()
    assert sum(s.float_macs for s in prof.steps) == sum(op["flops"] for op in ops)
    assert sum(s.binary_macs for s in prof.steps) == sum(op["bops"] for op in ops)
    # bytes moved at least cover the weights and the step's output activation
    for s in prof.steps:
        assert s.bytes_moved >= sum(ops[i]["bytes"] for i in s.ops) + 1
    binary = [s for s in prof.steps if s.label.startswith("BCONV2D")]
    assert binary and all(s.binary_gmacs > 0 for s in binary)
    table = str(prof)
    assert all(s.name in table for s in prof.steps)
    json.dumps(prof.to_dict())  # plain data


def test_profile_inputs(converted):
    path, _, _ = converted
    m = qbinfer.load(path)
    h, w, c = m.input_shape
    x = np.random.default_rng(1).standard_normal((2, c, h, w)).astype(np.float32)
    assert len(m.profile(x, runs=1).steps) == len(m._core.steps())
    img = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert len(m.profile(img, runs=1).steps) == len(m._core.steps())
    for runs in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="runs"):
            m.profile(runs=runs)


def _rewrite_metadata(src: str, dst: str, metadata_json: str) -> None:
    from weights_tools.qbw import read_qbw, write_qbw

    graph = read_qbw(src)
    graph.metadata_json = metadata_json
    write_qbw(dst, graph)


@pytest.mark.parametrize(
    "metadata",
    [
        "",  # a file from before the converter recorded its ops' sources
        json.dumps({"op_sources": [{"onnx": 1}]}),  # malformed: ignored, not trusted
        json.dumps({"op_sources": "x"}),
    ],
)
def test_profile_without_sources_names_steps_by_op_types(converted, tmp_path, metadata):
    path, _, _ = converted
    old = str(tmp_path / "old.qbw")
    _rewrite_metadata(path, old, metadata)
    prof = qbinfer.load(old).profile(runs=1)
    assert not prof.named
    assert [s.name for s in prof.steps] == [s.label for s in prof.steps]
    assert "convert it again" in prof.table()


def test_profile_escapes_file_strings(converted, tmp_path):
    path, _, _ = converted
    m = qbinfer.load(path)
    sources = m.metadata["op_sources"]
    sources[0]["modules"] = ["evil\x1b[2J\nforged line"]
    hostile = str(tmp_path / "hostile.qbw")
    _rewrite_metadata(path, hostile, json.dumps({"op_sources": sources}))
    table = qbinfer.load(hostile).profile(runs=1).table()
    assert "\x1b" not in table and "evil\\x1b[2J\\x0aforged line" in table


def test_cli_profile_writes_trace_and_png(converted, tmp_path):
    path, _, torch_model = converted
    trace, png = tmp_path / "trace.json", tmp_path / "profile.png"
    out = run_qbinfer_main("profile", path, "--runs", "2", "--trace", str(trace), "--png", str(png))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    steps = qbinfer.load(path)._core.steps()
    # the table names the PyTorch modules of the model
    modules = dict(torch_model.named_modules())
    rows = out.stdout.splitlines()[2 : 2 + len(steps)]
    assert len(rows) == len(steps)
    assert all(row.split()[6] in modules for row in rows)
    assert "stem.0" in out.stdout and "blocks.0.stages.0.b.conv" in out.stdout
    # a Chrome trace: JSON object format, one complete event per step, back to back
    with open(trace, encoding="utf-8") as f:
        doc = json.load(f)
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(events) == len(steps)
    for a, b in zip(events, events[1:]):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"], abs=1e-2)
    assert all(e["dur"] > 0 and e["name"] in modules for e in events)
    # a PNG that opens, sized for one bar per step
    from PIL import Image

    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 500 and img.size[1] > 300


def test_cli_profile_json(converted):
    path, _, _ = converted
    out = run_qbinfer_main("profile", path, "--runs", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["steps"]) == len(qbinfer.load(path)._core.steps())
    assert doc["total_us"] == pytest.approx(sum(s["time_us"] for s in doc["steps"]))


def test_cli_profile_png_without_matplotlib_is_one_line(converted, tmp_path):
    path, _, _ = converted
    png = tmp_path / "p.png"
    code = (
        "import sys\nsys.modules['matplotlib'] = None\n"
        "from qbinfer.__main__ import main\n"
        f"sys.exit(main(['profile', {path!r}, '--runs', '1', '--png', {str(png)!r}]))\n"
    )
    out = run_python(code)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "matplotlib" in out.stderr and "qbinfer[plot]" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not os.path.exists(png)
