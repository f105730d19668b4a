"""`weights_tools.convert.check_model` / `python -m weights_tools.convert --check`: every blocker
of a model at once, each with its ONNX node, its PyTorch module, what is unsupported and a fix
only where one applies (issue 12, item 4).

The unsupported ops added on purpose are ones the engine has no op for and will not get (Floor,
GELU's Erf, Softplus); whether a strided binary conv or a max pool is a blocker changes as the
engine grows, so the tests on the full ReActNet-style models compare a report with and without
the added op rather than expect a fixed list."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="the tools extra (torch) is needed for weights_tools")
onnx = pytest.importorskip("onnx")

import bnn_styles  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from weights_tools import bnn_zoo  # noqa: E402
from weights_tools.convert import (  # noqa: E402
    ConversionError,
    check_model,
    check_onnx,
    export_onnx,
    main,
    module_path,
    randomize_bn,
    to_qbw,
)
from weights_tools.converter.errors import ISSUE_12_FIX, NO_FIX, NO_OP_FIX  # noqa: E402


class FloorAfter(nn.Module):
    """`inner`, then torch.floor: an op the engine has no counterpart for."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.floor(self.inner(x))


class GeluAfter(nn.Module):
    """`inner`, then GELU (exported as Div, Erf, Add, Mul, Mul: the Erf is the blocker, the
    arithmetic after it only follows from it)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.gelu(self.inner(x))


class SmallReact(nn.Module):
    """ReActNet-style units of tests/bnn_styles.py at stride 1 only (RSign, scaled binary 3x3
    and 1x1 convs, RPReLU, channel doubling): every op is one the engine runs today."""

    input_shape = (3, 16, 16)

    def __init__(self, num_classes: int = 10, softmax: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))
        self.units = nn.Sequential(bnn_styles.ReactUnit(8, 16, 1), bnn_styles.ReactUnit(16, 16, 1))
        self.head = nn.Linear(16, num_classes)
        self.softmax = softmax

    def forward(self, x):
        y = self.head(self.units(self.stem(x)).mean(dim=(2, 3)))
        return torch.softmax(y, dim=1) if self.softmax else y


def small_react(**kw) -> SmallReact:
    return bnn_styles.randomize(SmallReact(**kw), seed=3)


def entries(report):
    return [(b.node, b.op_type, b.module, b.module_class) for b in report.blockers]


def test_module_path_from_exporter_names():
    # The exporter repeats a scope's parent name before an index: 'units' then 'units.1'.
    assert module_path("/feature.1/move11/Expand") == "feature.1.move11"
    assert module_path("/units/units.1/rprelu_b/rprelu_b.0/Add") == "units.1.rprelu_b.0"
    assert module_path("/units/units.1/pw.0/Conv") == "units.1.pw.0"
    assert module_path("/Erf") == ""  # the top-level module
    assert module_path("Conv_12") == ""  # no scopes at all
    # A module called from its grandparent's forward is scoped under the caller only.
    assert module_path("/act/Floor", ["", "units", "units.1", "units.1.act"]) == "units.1.act"


def test_convertible_model_has_an_empty_report(tmp_path):
    model = small_react()
    report = check_model(model, input_size=(16, 16))
    assert report.converts and len(report) == 0, str(report)
    assert "converts" in str(report)
    to_qbw(model, tmp_path / "m.qbw", input_size=(16, 16))  # and the conversion agrees


def test_one_unsupported_op_is_named_with_its_module(tmp_path):
    model = small_react()
    model.units[1].rprelu_a = FloorAfter(model.units[1].rprelu_a)
    report = check_model(model, input_size=(16, 16))
    assert len(report) == 1, str(report)
    (b,) = report.blockers
    assert (b.op_type, b.module, b.module_class) == ("Floor", "units.1.rprelu_a", "FloorAfter")
    assert b.node.endswith("/Floor")
    assert b.fix == NO_OP_FIX
    text = str(report)
    assert b.node in text and "units.1.rprelu_a (FloorAfter)" in text and "Floor" in text
    # The conversion stops at the same node.
    with pytest.raises(ConversionError) as raised:
        to_qbw(model, tmp_path / "m.qbw", input_size=(16, 16))
    assert raised.value.node is not None and raised.value.node.name == b.node


def test_two_unsupported_ops_in_two_modules_are_both_listed(tmp_path):
    model = small_react()
    model.units[0].rprelu_a = FloorAfter(model.units[0].rprelu_a)
    model.units[1].rprelu_b = GeluAfter(model.units[1].rprelu_b)
    report = check_model(model, input_size=(16, 16))
    found = {(b.op_type, b.module, b.module_class) for b in report.blockers}
    # Only the Erf of the GELU: its Add and Muls follow from it and are not blockers of their own.
    assert found == {
        ("Floor", "units.0.rprelu_a", "FloorAfter"),
        ("Erf", "units.1.rprelu_b", "GeluAfter"),
    }, str(report)
    assert len(report) == 2
    # The same model as an ONNX file through the command line: exit code 1, both printed.
    path = tmp_path / "two.onnx"
    export_onnx(model, path, (16, 16))
    from_file = check_onnx(path)
    assert [b.node for b in from_file.blockers] == [b.node for b in report.blockers]
    assert [b.module for b in from_file.blockers] == ["units.0.rprelu_a", "units.1.rprelu_b"]


def test_no_fix_is_suggested_where_none_applies(capsys, tmp_path):
    model = small_react()
    model.units[0].rprelu_b = FloorAfter(model.units[0].rprelu_b)
    model.units[1].shift_b = nn.Sequential(model.units[1].shift_b, nn.Softplus())
    report = check_model(model, input_size=(16, 16))
    assert {b.op_type for b in report.blockers} == {"Floor", "Softplus"}, str(report)
    for b in report.blockers:
        assert b.fix == NO_OP_FIX
    text = str(report)
    # Each entry's fix line says that there is none, and no rewrite or issue note appears.
    fix_lines = [line.strip() for line in text.splitlines() if line.strip().startswith("fix:")]
    assert fix_lines == [f"fix: {NO_OP_FIX}"] * 2
    assert "drop" not in text and "issue 12" not in text and "rewrite" not in text
    assert ISSUE_12_FIX not in text and NO_FIX not in fix_lines


def test_softmax_is_no_blocker_and_a_refused_one_gets_no_made_up_fix():
    # A final softmax (once a blocker with the fix "drop it") and one inside the network are
    # the engine's SOFTMAX now: nothing to report...
    last = check_model(small_react(softmax=True), input_size=(16, 16))
    assert not last.blockers, str(last)
    model = small_react()
    model.units[0].rprelu_b = nn.Sequential(model.units[0].rprelu_b, nn.Softmax(dim=1))
    inner = check_model(model, input_size=(16, 16))
    assert not inner.blockers, str(inner)
    # ...and a softmax over an axis the engine does not normalize (the width) is reported with
    # its module, and no fix, since none is known to apply.
    model = small_react()
    model.units[0].rprelu_b = nn.Sequential(model.units[0].rprelu_b, nn.Softmax(dim=3))
    width = check_model(model, input_size=(16, 16))
    (b,) = width.blockers
    assert b.op_type == "Softmax" and b.module == "units.0.rprelu_b.1", str(width)
    assert b.fix == NO_FIX and "drop" not in str(width)


def test_full_react_style_with_one_added_op_reports_exactly_that_op():
    """The must-show of issue 12: the tests' own ReActNet-style model, unmodified but for one
    unsupported op, gets a report naming exactly that op and its module beyond what the model
    reports anyway (its strided binary convs are blockers until the engine has them)."""
    base = bnn_styles.randomize(bnn_styles.ReactStyle(), seed=1)
    before = entries(check_model(base, input_size=(32, 32)))
    base.units[2].rprelu_a = FloorAfter(base.units[2].rprelu_a)
    report = check_model(base, input_size=(32, 32))
    added = [e for e in entries(report) if e not in before]
    assert len(added) == 1, str(report)
    node, op_type, module, module_class = added[0]
    assert (op_type, module, module_class) == ("Floor", "units.2.rprelu_a", "FloorAfter")
    assert len(report) == len(before) + 1


def test_zoo_reactnet_a_with_one_added_op():
    model = bnn_zoo.reactnet_a(num_classes=10)
    randomize_bn(model, seed=0, input_size=(32, 32))
    before = entries(check_model(model, input_size=(32, 32)))
    for b in before:  # whatever the engine still lacks is named with its module
        assert b[2].startswith("feature.") and b[3], before
    model.feature[5].move21 = nn.Sequential(model.feature[5].move21, nn.Softplus())
    after = check_model(model, input_size=(32, 32))
    added = [e for e in entries(after) if e not in before]
    assert [(e[1], e[2], e[3]) for e in added] == [("Softplus", "feature.5.move21.1", "Softplus")]
    assert len(after) == len(before) + 1, str(after)


def test_command_line_check(tmp_path, capsys):
    ok = main(
        [
            "--check",
            "--random",
            "--arch",
            "qb_net_small",
            "--num-classes",
            "10",
            "--input-size",
            "32",
            "32",
        ]
    )
    out = capsys.readouterr().out
    assert ok == 0 and "converts (no blockers)" in out
    model = small_react()
    model.units[1].rprelu_a = FloorAfter(model.units[1].rprelu_a)
    path = tmp_path / "floor.onnx"
    export_onnx(model, path, (16, 16))
    assert main(["--check", os.fspath(path)]) == 1
    out = capsys.readouterr().out
    assert "1 blocker" in out and "/units/units.1/rprelu_a/Floor" in out
    assert "units.1.rprelu_a" in out and NO_OP_FIX in out
    with pytest.raises(SystemExit):  # no output file and no --check
        main(["--random", "--arch", "qb_net_small"])


def test_command_line_takes_the_bnn_zoo_networks(capsys):
    # binarynet_mlp has its own input (1x28x28) and classes: --arch alone is enough.
    rc = main(["--check", "--random", "--arch", "binarynet_mlp"])
    out = capsys.readouterr().out
    assert rc in (0, 1) and "binarynet_mlp" in out
    assert ("converts" in out) == (rc == 0)


def test_randomize_bn_randomizes_the_zoo_learnable_bias():
    model = bnn_zoo.reactnet_a(num_classes=10)
    randomize_bn(model, seed=0, input_size=(32, 32))
    shifts = [m.bias.detach() for m in model.modules() if isinstance(m, bnn_zoo.LearnableBias)]
    assert shifts and all(float(s.abs().max()) > 0 for s in shifts)


def test_refusals_at_emission_are_all_collected(monkeypatch):
    """Emission stops at the first node it refuses; the check records it, takes the node out and
    emits again. A stand-in emission refusing every PReLU (an engine op, so nothing the engine
    gains changes this test) must give one entry per PReLU, found by emit, with no fix."""
    from weights_tools.converter import pipeline
    from weights_tools.converter.errors import node_label

    real_emit = pipeline.emit

    def refusing_prelu(graph, model_name=""):
        for n in graph.nodes:
            if n.src.op_type == "PRelu":
                raise ConversionError(f"{node_label(n.src)}: refused by the test")
        return real_emit(graph, model_name)

    model = small_react()
    monkeypatch.setattr(pipeline, "emit", refusing_prelu)
    report = check_model(model, input_size=(16, 16))
    prelus = [m for m, mod in model.named_modules() if isinstance(mod, nn.PReLU)]
    assert sorted(b.module for b in report.blockers) == sorted(prelus), str(report)
    for b in report.blockers:
        assert (b.op_type, b.stage, b.problem, b.fix) == (
            "PRelu",
            "emit",
            "refused by the test",
            NO_FIX,
        )
