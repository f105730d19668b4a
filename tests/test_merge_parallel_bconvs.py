"""The converter pass merge_parallel_bconvs (weights_tools/converter/passes): ReActNet's
reduction blocks, concat(add(bconv_1(x), r), add(bconv_2(x), r)), become one binary conv with
the stacked weights and an add of a concat of copies of r. The merged model must compute the
same floats as the unmerged one, bit for bit, on every ISA and thread count; patterns that differ
in any input must stay as they are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import helper  # noqa: E402

import qbinfer  # noqa: E402
from weights_tools.convert import export_onnx  # noqa: E402
from weights_tools.converter import pipeline  # noqa: E402
from weights_tools.converter.emit import emit  # noqa: E402
from weights_tools.converter.ir import IRGraph, Node, ValueInfo  # noqa: E402
from weights_tools.converter.passes import merge_parallel_bconvs  # noqa: E402
from weights_tools.converter.translate import translate  # noqa: E402
from weights_tools.qbw import OpType, write_qbw  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bnn_styles  # noqa: E402

SEED = 20261205


def lowered(model_proto, merge: bool):
    passes = [p for p in pipeline.PASSES if merge or p is not merge_parallel_bconvs]
    return emit(pipeline.run_passes(translate(model_proto), passes))


def test_react_style_reduction_blocks_merge_bit_exactly(tmp_path):
    torch.manual_seed(SEED)
    model = bnn_styles.randomize(bnn_styles.ReactStyle(), seed=SEED).eval()
    export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32))
    proto = onnx.load(tmp_path / "m.onnx")
    merged, plain = lowered(proto, True), lowered(proto, False)

    def count(g, t):
        return sum(op.type == t for op in g.ops)

    # ReactStyle has two channel-doubling units: each loses one binary conv and one add, and its
    # concat of two different values becomes a concat of two copies of the shortcut.
    assert count(plain, OpType.BCONV2D) - count(merged, OpType.BCONV2D) == 2
    assert count(plain, OpType.ADD) - count(merged, OpType.ADD) == 2
    for op in merged.ops:
        if op.type == OpType.CONCAT:
            assert len(set(op.inputs)) == 1, op.name

    write_qbw(tmp_path / "merged.qbw", merged)
    write_qbw(tmp_path / "plain.qbw", plain)
    x = np.random.default_rng(SEED).standard_normal((4, 32, 32, 3)).astype(np.float32)
    for isa in qbinfer._core.supported_isas():
        for threads in (1, 2):
            got = qbinfer._core.Model(os.fspath(tmp_path / "merged.qbw"), threads, isa)
            want = qbinfer._core.Model(os.fspath(tmp_path / "plain.qbw"), threads, isa)
            a, b = got.run(x, "nhwc"), want.run(x, "nhwc")
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), f"{isa} {threads}")
    with torch.inference_mode():
        torch_out = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    err = np.linalg.norm(a - torch_out, axis=1) / np.linalg.norm(torch_out, axis=1)
    assert np.median(err) <= 1e-4


def _graph(second_input: str = "bits", second_residual: str = "r", second_k: int = 1):
    """concat(add(bconv(bits), r), add(bconv(second_input), second_residual)), 4 channels,
    2 x 2 map, as the IR has it after fold_affines."""
    rng = np.random.default_rng(SEED)
    src = helper.make_node("Concat", ["a1", "a2"], ["out"], name="cat", axis=1)
    values = {
        n: ValueInfo(n, 4, 2, 2, kind="pm1" if n.startswith("bits") else "f32")
        for n in ("bits", "bits2", "r", "r2", "c1", "c2", "a1", "a2")
    }
    values["out"] = ValueInfo("out", 8, 2, 2)

    def bconv(inp, out, k):
        w = rng.choice([-1, 1], size=(4, 4, k, k)).astype(np.int8)
        p = {"w": w, "k": k, "pad_mode": 0, "scale": rng.random(4), "bias": rng.random(4)}
        return Node("bconv", [inp], out, src, p)

    nodes = [
        bconv("bits", "c1", 1),
        bconv(second_input, "c2", second_k),
        Node("add", ["c1", "r"], "a1", src),
        Node("add", ["r" if second_residual == "r" else second_residual, "c2"], "a2", src),
        Node("concat", ["a1", "a2"], "out", src),
    ]
    return IRGraph(nodes, values, "bits", "out")


def test_merge_stacks_weights_in_concat_order():
    g = _graph()
    w1, w2 = g.nodes[0].p["w"].copy(), g.nodes[1].p["w"].copy()
    s1, s2 = g.nodes[0].p["scale"].copy(), g.nodes[1].p["scale"].copy()
    merge_parallel_bconvs(g)
    kinds = [n.kind for n in g.nodes]
    assert kinds == ["bconv", "concat", "add"]
    conv, copies, add = g.nodes
    np.testing.assert_array_equal(conv.p["w"], np.concatenate([w1, w2]))
    np.testing.assert_array_equal(conv.p["scale"], np.concatenate([s1, s2]))
    assert copies.inputs == ["r", "r"] and g.values[copies.output].c == 8
    assert add.inputs == [conv.output, copies.output] and add.output == "out"
    assert g.values[conv.output].c == 8


@pytest.mark.parametrize(
    "kwargs",
    [{"second_input": "bits2"}, {"second_residual": "r2"}, {"second_k": 3}],
    ids=["other-input", "other-shortcut", "other-kernel"],
)
def test_no_merge_when_the_halves_differ(kwargs):
    g = _graph(**kwargs)
    before = [(n.kind, list(n.inputs), n.output) for n in g.nodes]
    merge_parallel_bconvs(g)
    assert [(n.kind, list(n.inputs), n.output) for n in g.nodes] == before
