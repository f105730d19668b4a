"""Unit tests of the converter's translation table and rewrite passes (weights_tools/converter),
each on a small hand-built ONNX graph: the pattern is rewritten, a near miss is left alone, and
the lowered graph (all passes, run by the numpy reference) matches ONNX Runtime on the model."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from weights_tools.converter import PASSES, ConversionError, lower_onnx  # noqa: E402
from weights_tools.converter.ir import IRGraph  # noqa: E402
from weights_tools.converter.passes import (  # noqa: E402
    depthwise_pre_bias,
    fold_affines,
    fuse_relu,
    group_depthwise,
    remove_dead,
    sign_to_bitpack,
)
from weights_tools.converter.translate import TRANSLATORS, translate  # noqa: E402
from weights_tools.qbw import OpType  # noqa: E402
from weights_tools.reference import run_reference  # noqa: E402

C, H, W = 4, 5, 6


def _model(
    nodes: Sequence[onnx.NodeProto],
    consts: Dict[str, np.ndarray],
    out: str = "y",
    in_shape=("N", C, H, W),
) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _node(op: str, ins: List[str], out: str, **kw) -> onnx.NodeProto:
    return helper.make_node(op, ins, [out], name=out, **kw)


def _sign(x: str, out: str, t: str = "zero") -> List[onnx.NodeProto]:
    """Where(x >= t, 1, -1), the sign the zoo's binary_sign exports."""
    return [
        _node("GreaterOrEqual", [x, t], out + "_ge"),
        _node("Where", [out + "_ge", "one", "mone"], out),
    ]


def _sign_consts() -> Dict[str, np.ndarray]:
    return {
        "zero": np.array(0.0, np.float32),
        "one": np.array(1.0, np.float32),
        "mone": np.array(-1.0, np.float32),
    }


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


def _pm1(rng, *shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def _f32(rng, *shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _kinds(graph: IRGraph) -> List[str]:
    return [n.kind for n in graph.nodes]


def _by_kind(graph: IRGraph, kind: str):
    found = [n for n in graph.nodes if n.kind == kind]
    assert len(found) == 1, _kinds(graph)
    return found[0]


def _matches_onnxruntime(model: onnx.ModelProto, tol: float = 1e-5, x=None) -> None:
    """All passes, emitted, run by the numpy reference == ONNX Runtime on the model."""
    x = _f32(_rng(7), 3, C, H, W) if x is None else x
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = run_reference(lower_onnx(model), x)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=tol, atol=tol)


def _binary_conv(x: str, out: str, rng, co: int = 3, k: int = 1) -> tuple:
    w = _pm1(rng, co, C, k, k)
    pads = [k // 2] * 4
    return _node("Conv", [x, out + "_w"], out, pads=pads), {out + "_w": w}


# -- translation ---------------------------------------------------------------------------------


def test_translation_table_has_one_function_per_supported_op():
    for op in ("Conv", "BatchNormalization", "Add", "Where", "GreaterOrEqual", "Gemm", "Pad"):
        assert callable(TRANSLATORS[op])


def test_untranslatable_op_names_the_onnx_node():
    model = _model([_node("Softsign", ["x"], "y")], {})
    with pytest.raises(ConversionError, match=r"'y' \(Softsign\).*not supported"):
        translate(model)


def test_translate_sign_pattern_and_aliases():
    rng = _rng()
    conv, w = _binary_conv("s", "y", rng)
    model = _model(
        [_node("Identity", ["x"], "xi"), *_sign("xi", "s"), conv], {**_sign_consts(), **w}
    )
    graph = translate(model)
    assert _kinds(graph) == ["sign", "bconv"]
    sign = graph.nodes[0]
    assert sign.inputs == ["x"]  # through the Identity alias
    assert graph.values["s"].kind == "pm1"
    np.testing.assert_array_equal(sign.p["threshold"], np.zeros(C, np.float32))


# -- sign_to_bitpack -------------------------------------------------------------------------------


def _added_sign_model(threshold: float, op: str = "Add", seed: int = 0):
    rng = _rng(seed)
    conv, w = _binary_conv("s", "y", rng)
    c = _f32(rng, 1, C, 1, 1)
    consts = {**_sign_consts(), **w, "c": c, "t": np.array(threshold, np.float32)}
    return _model([_node(op, ["x", "c"], "u"), *_sign("u", "s", "t"), conv], consts), c


def test_sign_to_bitpack_reads_through_a_constant_add():
    model, c = _added_sign_model(0.0)
    graph = translate(model)
    sign_to_bitpack(graph)
    bitpack = _by_kind(graph, "bitpack")
    assert bitpack.inputs == ["x"]
    np.testing.assert_array_equal(bitpack.p["threshold"], -c.reshape(-1))
    _matches_onnxruntime(model)


def test_sign_to_bitpack_reads_through_a_constant_sub():
    model, c = _added_sign_model(0.0, op="Sub")
    graph = translate(model)
    sign_to_bitpack(graph)
    bitpack = _by_kind(graph, "bitpack")
    assert bitpack.inputs == ["x"]
    np.testing.assert_array_equal(bitpack.p["threshold"], c.reshape(-1))
    _matches_onnxruntime(model)


@pytest.mark.parametrize("case", ["threshold", "mul"])
def test_sign_to_bitpack_near_miss_keeps_the_affine(case):
    # a nonzero threshold after the add, or a Mul (not a pure add): the bitpack reads the affine
    model, _ = (
        _added_sign_model(0.25, "Add") if case == "threshold" else _added_sign_model(0.0, "Mul")
    )
    graph = translate(model)
    sign_to_bitpack(graph)
    bitpack = _by_kind(graph, "bitpack")
    assert bitpack.inputs == ["u"]
    want = 0.25 if case == "threshold" else 0.0
    np.testing.assert_array_equal(bitpack.p["threshold"], np.full(C, want, np.float32))
    _matches_onnxruntime(model)


def test_sign_to_bitpack_merges_identical_signs_only():
    rng = _rng(1)
    conv_a, wa = _binary_conv("sa", "a", rng)
    conv_b, wb = _binary_conv("sb", "b", rng)
    conv_c, wc = _binary_conv("sc", "c", rng)
    consts = {**_sign_consts(), **wa, **wb, **wc, "t": np.array(0.5, np.float32)}
    nodes = [
        *_sign("x", "sa"),
        *_sign("x", "sb"),
        *_sign("x", "sc", "t"),  # another threshold: not merged
        conv_a,
        conv_b,
        conv_c,
        _node("Add", ["a", "b"], "ab"),
        _node("Add", ["ab", "c"], "y"),
    ]
    model = _model(nodes, consts)
    graph = translate(model)
    sign_to_bitpack(graph)
    assert _kinds(graph).count("bitpack") == 2
    readers = {n.output: n.inputs[0] for n in graph.nodes if n.kind == "bconv"}
    assert readers["a"] == readers["b"] == "sa" and readers["c"] == "sc"
    _matches_onnxruntime(model)


# -- depthwise_pre_bias ------------------------------------------------------------------------------


def _dw_model(before: str, seed: int = 0):
    rng = _rng(seed)
    c = _f32(rng, 1, C, 1, 1)
    w = _f32(rng, C, 1, 3, 3)
    nodes = [
        _node(before, ["x", "c"], "u"),
        _node("Conv", ["u", "w"], "y", group=C, pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, {"c": c, "w": w}), c


def test_depthwise_pre_bias_takes_the_add():
    model, c = _dw_model("Add")
    graph = translate(model)
    depthwise_pre_bias(graph)
    dw = _by_kind(graph, "dwconv")
    assert dw.inputs == ["x"]
    np.testing.assert_array_equal(dw.p["pre_bias"], c.reshape(-1))
    _matches_onnxruntime(model)


def test_depthwise_pre_bias_near_miss_mul():
    model, _ = _dw_model("Mul")
    graph = translate(model)
    depthwise_pre_bias(graph)
    dw = _by_kind(graph, "dwconv")
    assert dw.inputs == ["u"] and dw.p["pre_bias"] is None
    _matches_onnxruntime(model)


# -- remove_dead --------------------------------------------------------------------------------------


def test_remove_dead_drops_the_unread_add():
    model, _ = _added_sign_model(0.0)
    graph = translate(model)
    sign_to_bitpack(graph)
    assert "affine" in _kinds(graph)
    remove_dead(graph)
    assert _kinds(graph) == ["bitpack", "bconv"]


def test_remove_dead_keeps_an_add_read_elsewhere():
    rng = _rng(2)
    conv, w = _binary_conv("s", "b", rng, co=C)
    consts = {**_sign_consts(), **w, "c": _f32(rng, 1, C, 1, 1)}
    nodes = [_node("Add", ["x", "c"], "u"), *_sign("u", "s"), conv, _node("Add", ["b", "u"], "y")]
    model = _model(nodes, consts)
    graph = translate(model)
    sign_to_bitpack(graph)
    remove_dead(graph)
    assert sorted(_kinds(graph)) == ["add", "affine", "bconv", "bitpack"]
    _matches_onnxruntime(model)


# -- group_depthwise ------------------------------------------------------------------------------------


def _dw_concat_model(second_input: str, extra_reader: bool = False, seed: int = 0):
    rng = _rng(seed)
    consts = {f"w{j}": _f32(rng, C, 1, 3, 3) for j in range(3)}
    nodes = [
        _node("Relu", ["x"], "r"),
        _node("Conv", ["x", "w0"], "d0", group=C, pads=[1, 1, 1, 1]),
        _node("Conv", [second_input, "w1"], "d1", group=C, pads=[1, 1, 1, 1]),
        _node("Conv", ["x", "w2"], "d2", group=C, pads=[1, 1, 1, 1]),
        _node("Concat", ["d0", "d1", "d2"], "cat", axis=1),
    ]
    if extra_reader:
        nodes += [
            _node("Concat", ["d1", "d1", "d1"], "d1x3", axis=1),
            _node("Add", ["cat", "d1x3"], "y"),
        ]
    else:
        nodes[-1] = _node("Concat", ["d0", "d1", "d2"], "y", axis=1)
    return _model(nodes, consts), consts


def test_group_depthwise_merges_adjacent_convs_of_one_input():
    model, consts = _dw_concat_model("x")
    graph = translate(model)
    remove_dead(graph)  # the unread Relu
    group_depthwise(graph)
    assert _kinds(graph) == ["dwconv"]
    dw = graph.nodes[0]
    assert dw.p["k"] == 3 and graph.output_name == dw.output and graph.values[dw.output].c == 3 * C
    want = np.concatenate([consts[f"w{j}"].reshape(C, 9) for j in range(3)])
    np.testing.assert_array_equal(dw.p["w"], want)
    _matches_onnxruntime(model)


@pytest.mark.parametrize("case", ["other_input", "read_elsewhere"])
def test_group_depthwise_near_miss(case):
    model, _ = _dw_concat_model(
        "r" if case == "other_input" else "x", extra_reader=case == "read_elsewhere"
    )
    graph = translate(model)
    remove_dead(graph)
    group_depthwise(graph)
    # the middle conv reads another input (or has another reader): no two adjacent convs merge
    assert _kinds(graph).count("dwconv") == 3
    assert all(n.p["k"] == 1 for n in graph.nodes if n.kind == "dwconv")
    _matches_onnxruntime(model)


# -- fold_affines ------------------------------------------------------------------------------------------


def _conv_bn_model(extra_reader: bool, seed: int = 0):
    rng = _rng(seed)
    consts = {
        "w": _f32(rng, C, C, 3, 3),
        "b": _f32(rng, C),
        "gamma": rng.uniform(0.5, 1.5, C).astype(np.float32),
        "beta": _f32(rng, C),
        "mean": _f32(rng, C),
        "var": rng.uniform(0.5, 1.5, C).astype(np.float32),
    }
    nodes = [
        _node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]),
        _node(
            "BatchNormalization",
            ["c", "gamma", "beta", "mean", "var"],
            "bn" if extra_reader else "y",
        ),
    ]
    if extra_reader:
        nodes.append(_node("Add", ["bn", "c"], "y"))
    return _model(nodes, consts), consts


def test_fold_affines_folds_batchnorm_into_the_conv():
    model, k = _conv_bn_model(extra_reader=False)
    graph = translate(model)
    fold_affines(graph)
    conv = _by_kind(graph, "conv")
    assert _kinds(graph) == ["conv"] and conv.output == "y"
    s = k["gamma"].astype(np.float64) / np.sqrt(k["var"].astype(np.float64) + 1e-5)
    np.testing.assert_allclose(conv.p["w"], k["w"] * s[:, None, None, None], rtol=1e-12)
    np.testing.assert_allclose(conv.p["b"], (k["b"] - k["mean"]) * s + k["beta"], rtol=1e-6)
    _matches_onnxruntime(model, tol=1e-4)


def test_fold_affines_composes_affines_and_binary_conv_scales():
    rng = _rng(3)
    conv, w = _binary_conv("s", "b", rng, k=3)
    consts = {**_sign_consts(), **w, "m": _f32(rng, 1, 3, 1, 1), "a": _f32(rng, 1, 3, 1, 1)}
    nodes = [*_sign("x", "s"), conv, _node("Mul", ["b", "m"], "bm"), _node("Add", ["bm", "a"], "y")]
    model = _model(nodes, consts)
    graph = translate(model)
    fold_affines(graph)
    bconv = _by_kind(graph, "bconv")
    assert "affine" not in _kinds(graph) and bconv.output == "y"
    np.testing.assert_allclose(bconv.p["scale"], consts["m"].reshape(-1), rtol=1e-7)
    np.testing.assert_allclose(bconv.p["bias"], consts["a"].reshape(-1), rtol=1e-7)
    _matches_onnxruntime(model, tol=1e-4)


def test_fold_affines_near_miss_conv_read_twice():
    model, _ = _conv_bn_model(extra_reader=True)
    graph = translate(model)
    fold_affines(graph)
    assert sorted(_kinds(graph)) == ["add", "affine", "conv"]
    _matches_onnxruntime(model, tol=1e-4)


# -- fuse_relu ---------------------------------------------------------------------------------------------


def test_fuse_relu_into_float_conv():
    rng = _rng(4)
    model = _model(
        [_node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), _node("Relu", ["c"], "y")],
        {"w": _f32(rng, C, C, 3, 3)},
    )
    graph = translate(model)
    fuse_relu(graph)
    assert _kinds(graph) == ["conv"] and graph.nodes[0].p["relu"] and graph.nodes[0].output == "y"
    _matches_onnxruntime(model)


@pytest.mark.parametrize("case", ["depthwise", "read_twice"])
def test_fuse_relu_near_miss(case):
    rng = _rng(5)
    if case == "depthwise":
        nodes = [
            _node("Conv", ["x", "w"], "c", group=C, pads=[1, 1, 1, 1]),
            _node("Relu", ["c"], "y"),
        ]
        consts = {"w": _f32(rng, C, 1, 3, 3)}
    else:
        nodes = [
            _node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]),
            _node("Relu", ["c"], "r"),
            _node("Add", ["r", "c"], "y"),
        ]
        consts = {"w": _f32(rng, C, C, 3, 3)}
    model = _model(nodes, consts)
    graph = translate(model)
    fuse_relu(graph)
    assert "relu" in _kinds(graph)
    assert not any(n.p.get("relu") for n in graph.nodes)
    _matches_onnxruntime(model)


# -- the pipeline --------------------------------------------------------------------------------------------


def test_pipeline_order_and_every_pass_is_documented():
    names = [p.__name__ for p in PASSES]
    assert names.index("sign_to_bitpack") < names.index("fold_affines")
    assert names.index("depthwise_pre_bias") < names.index("fold_affines")
    assert names.index("fold_affines") < names.index("fuse_relu")
    assert names[-1] == "remove_dead"
    for p in PASSES:
        doc = __import__(p.__module__, fromlist=["_"]).__doc__ or ""
        assert "Pattern" in doc and "Exact" in doc, p.__module__


def test_onnx_lowering_reexports_the_public_api():
    from weights_tools import onnx_lowering
    from weights_tools.converter import fold_onnx_constants

    assert onnx_lowering.lower_onnx is lower_onnx
    assert onnx_lowering.ConversionError is ConversionError
    assert onnx_lowering.fold_onnx_constants is fold_onnx_constants


# -- BNN styles as public PyTorch code writes them (issue 12, item 1) ----------------------------------


def _scalar(v, dtype=np.float32):
    return np.array(v, dtype)


def _sign_conv_model(sign_nodes, consts, seed=0, k=3):
    """sign pattern writing 's', then a binary conv to 'y'."""
    conv, w = _binary_conv("s", "y", _rng(seed), k=k)
    return _model([*sign_nodes, conv], {**consts, **w})


def _no_zeros(seed=7):
    x = _f32(_rng(seed), 3, C, H, W)
    x[x == 0] = 0.5
    return x


def test_onnx_sign_is_a_bitpack_and_warns_only_after_a_relu():
    model = _sign_conv_model([_node("Sign", ["x"], "s")], {})
    notes: List[str] = []
    lower_onnx(model, warnings=notes)
    assert notes == []
    graph = translate(model)
    assert _kinds(graph) == ["sign", "bconv"]
    _matches_onnxruntime(model, x=_no_zeros())

    relu_model = _sign_conv_model([_node("Relu", ["x"], "r"), _node("Sign", ["r"], "s")], {})
    notes = []
    lower_onnx(relu_model, warnings=notes)
    assert len(notes) == 1 and "'s' (Sign)" in notes[0] and "exactly 0" in notes[0]


def test_onnx_sign_at_exactly_zero_is_plus_one():
    # PyTorch's sign(0) = 0; the engine's sign is x >= 0: at an exact 0 it matches Where(x >= 0,
    # 1, -1), not Sign (docs/converter.md)
    x = _no_zeros()
    x[:, :, 1:3, 2:4] = 0.0
    sign_model = _sign_conv_model([_node("Sign", ["x"], "s")], {})
    where_model = _sign_conv_model(_sign("x", "s"), _sign_consts())
    got = run_reference(lower_onnx(sign_model), x)
    for model, equal in ((where_model, True), (sign_model, False)):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, {"x": x})[0]
        assert np.allclose(got.reshape(want.shape), want, atol=1e-5) == equal


def test_cast_times_two_minus_one_is_a_sign():
    nodes = [
        _node("GreaterOrEqual", ["x", "zero"], "ge"),
        _node("Cast", ["ge"], "f", to=TensorProto.FLOAT),
        _node("Mul", ["f", "two"], "f2"),
        _node("Sub", ["f2", "one"], "s"),
    ]
    consts = {"zero": _scalar(0.0), "two": _scalar(2.0), "one": _scalar(1.0)}
    model = _sign_conv_model(nodes, consts)
    assert _kinds(translate(model)) == ["sign", "bconv"]
    _matches_onnxruntime(model)


def test_cast_near_miss_is_refused():
    nodes = [
        _node("GreaterOrEqual", ["x", "zero"], "ge"),
        _node("Cast", ["ge"], "f", to=TensorProto.FLOAT),
        _node("Mul", ["f", "three"], "f2"),
        _node("Sub", ["f2", "one"], "s"),
    ]
    consts = {"zero": _scalar(0.0), "three": _scalar(3.0), "one": _scalar(1.0)}
    with pytest.raises(ConversionError, match=r"'conv|GreaterOrEqual|'y' \(Conv\)"):
        lower_onnx(_sign_conv_model(nodes, consts))


def test_where_with_int_scalars_then_cast_is_a_sign():
    nodes = [
        _node("GreaterOrEqual", ["x", "zero"], "ge"),
        _node("Where", ["ge", "one", "mone"], "wi"),
        _node("Cast", ["wi"], "s", to=TensorProto.FLOAT),
    ]
    consts = {"zero": _scalar(0.0), "one": _scalar(1, np.int64), "mone": _scalar(-1, np.int64)}
    model = _sign_conv_model(nodes, consts)
    assert _kinds(translate(model)) == ["sign", "bconv"]
    _matches_onnxruntime(model)


def test_where_ones_like_is_a_sign():
    nodes = [
        _node("GreaterOrEqual", ["x", "zero"], "ge"),
        _node("Shape", ["x"], "shape"),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            name="ones",
            value=numpy_helper.from_array(np.ones(1, np.float32)),
        ),
        _node("Neg", ["ones"], "mones"),
        _node("Where", ["ge", "ones", "mones"], "s"),
    ]
    model = _sign_conv_model(nodes, {"zero": _scalar(0.0)})
    assert _kinds(translate(model)) == ["sign", "bconv"]
    _matches_onnxruntime(model)


def _ste_nodes(b_input: str = "poly"):
    """ReActNet's approx-sign STE shape: sign(x).detach() - poly(x).detach() + poly(x), where
    poly uses ops the engine lacks (Less, Cast, x*x)."""
    return [
        _node("Sign", ["x"], "fwd"),
        _node("Less", ["x", "zero"], "lt"),
        _node("Cast", ["lt"], "ltf", to=TensorProto.FLOAT),
        _node("Mul", ["x", "x"], "xx"),
        _node("Mul", ["xx", "ltf"], "poly"),
        _node("Sub", ["fwd", "poly"], "d"),
        _node("Add", ["d", b_input], "s"),
    ]


def test_ste_detach_arithmetic_is_its_forward_value():
    model = _sign_conv_model(_ste_nodes(), {"zero": _scalar(0.0)})
    graph = translate(model)
    assert _kinds(graph) == ["sign", "bconv"]
    # the rewrite is exact up to PyTorch's own rounding of (a - b) + b
    _matches_onnxruntime(model, tol=1e-4, x=_no_zeros())


def test_ste_near_miss_is_left_alone():
    from weights_tools.converter.passes import ste_identity

    model = _sign_conv_model(_ste_nodes(b_input="x"), {"zero": _scalar(0.0)})
    before = model.SerializeToString()
    ste_identity(model.graph)
    assert model.SerializeToString() == before
    # refused where the unrewritten estimator is computed: Less is now a comparison the converter
    # takes (a sign pattern), the polynomial's product of activations is not
    with pytest.raises(ConversionError, match=r"\((Less|Mul)\)"):
        lower_onnx(model)


@pytest.mark.parametrize(
    "form",
    ["(a-b)+b", "b+(a-b)", "(a+b)-b", "(b+a)-b", "a+(b-b)", "(b-b)+a"],
)
def test_every_ste_form_is_its_forward_value(form):
    # a = sign(x) (the forward value), b = a Clip the engine could run but must not: after the
    # rewrite nothing reads b, so the graph is exactly sign -> bconv.
    a_plus = {
        "(a-b)+b": [_node("Sub", ["fwd", "b"], "d"), _node("Add", ["d", "b"], "s")],
        "b+(a-b)": [_node("Sub", ["fwd", "b"], "d"), _node("Add", ["b", "d"], "s")],
        "(a+b)-b": [_node("Add", ["fwd", "b"], "d"), _node("Sub", ["d", "b"], "s")],
        "(b+a)-b": [_node("Add", ["b", "fwd"], "d"), _node("Sub", ["d", "b"], "s")],
        "a+(b-b)": [_node("Sub", ["b", "b"], "d"), _node("Add", ["fwd", "d"], "s")],
        "(b-b)+a": [_node("Sub", ["b", "b"], "d"), _node("Add", ["d", "fwd"], "s")],
    }[form]
    nodes = [_node("Sign", ["x"], "fwd"), _node("Clip", ["x", "lo", "hi"], "b"), *a_plus]
    model = _sign_conv_model(nodes, {"lo": _scalar(-1.0), "hi": _scalar(1.0)})
    assert _kinds(translate(model)) == ["sign", "bconv"]
    _matches_onnxruntime(model, tol=1e-4, x=_no_zeros())


@pytest.mark.parametrize(
    "form",
    [
        # b - c + b: not the same b twice
        [_node("Sub", ["fwd", "b"], "d"), _node("Add", ["d", "x"], "s")],
        # (a + b) - c
        [_node("Add", ["fwd", "b"], "d"), _node("Sub", ["d", "x"], "s")],
        # a + (b - c)
        [_node("Sub", ["b", "x"], "d"), _node("Add", ["fwd", "d"], "s")],
        # (a + b) - b, but a + b is read twice (it is a value of the model, not an STE term)
        [
            _node("Add", ["fwd", "b"], "d"),
            _node("Sub", ["d", "b"], "s0"),
            _node("Add", ["s0", "d"], "s"),
        ],
    ],
    ids=["a-b+c", "a+b-c", "a+(b-c)", "shared-sum"],
)
def test_ste_look_alikes_are_left_alone(form):
    from weights_tools.converter.passes import ste_identity

    nodes = [_node("Sign", ["x"], "fwd"), _node("Clip", ["x", "lo", "hi"], "b"), *form]
    model = _sign_conv_model(nodes, {"lo": _scalar(-1.0), "hi": _scalar(1.0)})
    before = model.SerializeToString()
    ste_identity(model.graph)
    assert model.SerializeToString() == before


def test_expand_as_bias_is_a_constant_add():
    bias = _f32(_rng(3), 1, C, 1, 1)
    nodes = [
        _node("Shape", ["x"], "shape"),
        _node("Expand", ["bias", "shape"], "bx"),
        _node("Add", ["x", "bx"], "u"),
        *_sign("u", "s"),
    ]
    model = _sign_conv_model(nodes, {**_sign_consts(), "bias": bias})
    graph = translate(model)
    assert _kinds(graph) == ["affine", "sign", "bconv"]
    np.testing.assert_array_equal(graph.nodes[0].p["bias"], bias.reshape(-1))
    _matches_onnxruntime(model)


def test_expand_as_another_shape_is_refused():
    nodes = [
        _node("GlobalAveragePool", ["x"], "g"),
        _node("Shape", ["x"], "shape"),
        _node("Expand", ["bias", "shape"], "bx"),
        _node("Add", ["g", "bx"], "y"),  # (C,1,1) + (C,H,W): a broadcast the engine lacks
    ]
    model = _model(nodes, {"bias": _f32(_rng(3), 1, C, 1, 1)})
    with pytest.raises(ConversionError, match=r"'y' \(Add\).*shape of 'x'"):
        lower_onnx(model)


def _clip_sign_model(lo: float, hi: float):
    nodes = [_node("Clip", ["x", "lo", "hi"], "c"), _node("Sign", ["c"], "s")]
    return _sign_conv_model(nodes, {"lo": _scalar(lo), "hi": _scalar(hi)})


def test_hardtanh_before_a_sign_is_dropped():
    model = _clip_sign_model(-1.0, 1.0)
    graph = translate(model)
    assert graph.warnings == []
    assert _kinds(graph) == ["clip", "sign", "bconv"]
    from weights_tools.converter.passes import drop_clip_before_sign

    drop_clip_before_sign(graph)
    assert _by_kind(graph, "sign").inputs == ["x"]
    remove_dead(graph)
    assert "clip" not in _kinds(graph)
    _matches_onnxruntime(model, x=_no_zeros())


def test_clip_at_zero_before_a_sign_is_kept():
    # clip(x, 0, 6) >= 0 always: not the sign of x; the clip is kept (a CLIP op) and the sign
    # of its exact zeros is warned about (PyTorch's sign(0) = 0, the engine's +1)
    model = _clip_sign_model(0.0, 6.0)
    graph = translate(model)
    assert len(graph.warnings) == 1 and "exactly 0" in graph.warnings[0]
    from weights_tools.converter.passes import drop_clip_before_sign

    drop_clip_before_sign(graph)
    assert _by_kind(graph, "sign").inputs == ["c"]
    qbw = lower_onnx(model)
    clip = next(op for op in qbw.ops if op.type == OpType.CLIP)
    np.testing.assert_array_equal(qbw.tensors[clip.tensors[0]].data, np.float32([0.0, 6.0]))


def test_scaled_binary_weights_fold_alpha_into_the_scale():
    rng = _rng(5)
    signs = _pm1(rng, 3, C, 3, 3)
    alpha = rng.uniform(0.1, 2.0, (3, 1, 1, 1)).astype(np.float32)
    nodes = [_node("Sign", ["x"], "s"), _node("Conv", ["s", "w"], "y", pads=[1, 1, 1, 1])]
    model = _model(nodes, {"w": alpha * signs})
    bconv = _by_kind(translate(model), "bconv")
    np.testing.assert_array_equal(bconv.p["w"], signs.astype(np.int8))
    np.testing.assert_array_equal(bconv.p["scale"], alpha.reshape(-1))
    _matches_onnxruntime(model, tol=1e-4, x=_no_zeros())

    uneven = alpha * signs
    uneven[0, 0, 0, 0] *= 1.5
    with pytest.raises(ConversionError, match=r"'y' \(Conv\).*alpha"):
        lower_onnx(_model(nodes, {"w": uneven}))


def test_weights_binarized_in_forward_with_an_ste():
    # ReActNet's weights: (alpha * sign(W)).detach() - clamp(W).detach() + clamp(W); folded in
    # float32 as written, a few weights come out 1 ulp off alpha (checked below), so the STE
    # must be rewritten before folding
    rng = _rng(6)
    w = _f32(rng, 3, C, 3, 3)
    alpha = np.abs(w).mean(axis=(1, 2, 3), keepdims=True).astype(np.float32)
    scaled = alpha * np.where(w > 0, 1, -1).astype(np.float32)
    assert np.any((scaled - w) + w != scaled)
    nodes = [
        _node("Sign", ["x"], "s"),
        _node("Sign", ["w"], "wsign"),
        _node("Mul", ["alpha", "wsign"], "wb"),
        _node("Clip", ["w", "mone", "one"], "wc"),
        _node("Sub", ["wb", "wc"], "wd"),
        _node("Add", ["wd", "wc"], "wste"),
        _node("Conv", ["s", "wste"], "y", pads=[1, 1, 1, 1]),
    ]
    consts = {"w": w, "alpha": alpha, "one": _scalar(1.0), "mone": _scalar(-1.0)}
    model = _model(nodes, consts)
    bconv = _by_kind(translate(model), "bconv")
    np.testing.assert_array_equal(bconv.p["w"], np.where(w > 0, 1, -1))
    np.testing.assert_array_equal(bconv.p["scale"], alpha.reshape(-1))
    _matches_onnxruntime(model, tol=1e-4, x=_no_zeros())


def test_strided_binary_conv_is_the_general_binary_conv():
    nodes = [
        _node("Sign", ["x"], "s"),
        _node("Conv", ["s", "w"], "y", pads=[1] * 4, strides=[2, 2]),
    ]
    model = _model(nodes, {"w": _pm1(_rng(), 3, C, 3, 3)})
    bconv = _by_kind(translate(model), "bconv")
    assert bconv.p["general"] and bconv.p["stride"] == (2, 2) and bconv.p["pads"] == (1,) * 4


def test_same_3x3_binary_conv_stays_bconv2d():
    nodes = [_node("Sign", ["x"], "s"), _node("Conv", ["s", "w"], "y", pads=[1] * 4)]
    model = _model(nodes, {"w": _pm1(_rng(), 3, C, 3, 3)})
    assert not _by_kind(translate(model), "bconv").p["general"]


def test_grouped_binary_conv_names_the_node():
    nodes = [
        _node("Sign", ["x"], "s"),
        _node("Conv", ["s", "w"], "y", pads=[1] * 4, group=C),
    ]
    model = _model(nodes, {"w": _pm1(_rng(), C, 1, 3, 3)})
    with pytest.raises(ConversionError, match=r"'y' \(Conv\).*group"):
        lower_onnx(model)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        dict(kernel_shape=[3, 2], strides=[1, 2], pads=[2, 1, 0, 1], ceil_mode=1),
        dict(kernel_shape=[2, 3], strides=[3, 3]),
    ],
)
def test_max_pool_matches_onnxruntime(kw):
    model = _model([_node("MaxPool", ["x"], "y", **kw)], {})
    assert _kinds(translate(model)) == ["maxpool"]
    _matches_onnxruntime(model, tol=0.0)


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
        (dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"), "auto_pad"),
        (dict(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), "smaller than the kernel"),
        (
            dict(kernel_shape=[2, 2], strides=[3, 3], pads=[0, 0, 1, 1], ceil_mode=1),
            "starts in the padding",
        ),
    ],
)
def test_max_pool_refusals_name_the_node(kw, why):
    nodes = [_node("MaxPool", ["x"], "y", **kw)]
    with pytest.raises(ConversionError, match=rf"'y' \(MaxPool\).*{why}"):
        lower_onnx(_model(nodes, {}))


def test_clip_elsewhere_is_a_clip_op():
    # ReLU6 then Hardtanh, read by no sign: both become CLIP ops, equal to ONNX Runtime
    nodes = [
        _node("Clip", ["x", "zero", "six"], "r6"),
        _node("Clip", ["r6", "mone", "one"], "y"),
    ]
    consts = {"zero": _scalar(0.0), "six": _scalar(6.0), "mone": _scalar(-1.0), "one": _scalar(1.0)}
    model = _model(nodes, consts)
    qbw = lower_onnx(model)
    assert [op.type for op in qbw.ops] == [OpType.CLIP, OpType.CLIP]
    x = _f32(_rng(8), 3, C, H, W) * 8.0
    _matches_onnxruntime(model, tol=0.0, x=x)
    with pytest.raises(ConversionError, match=r"'y' \(Clip\).*min <= max"):
        lower_onnx(_model([_node("Clip", ["x", "one", "mone"], "y")], consts))


# -- small PyTorch BNNs written in the public code's styles, end to end ------------------------------


def _torch_bnn_cases():
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    class LearnableBias(nn.Module):  # ReActNet's move: x + bias.expand_as(x)
        def __init__(self, c):
            super().__init__()
            self.bias = nn.Parameter(torch.randn(1, c, 1, 1) * 0.3)

        def forward(self, x):
            return x + self.bias.expand_as(x)

    class ApproxSign(nn.Module):  # the piecewise-polynomial STE of Bi-Real Net / ReActNet
        def forward(self, x):
            out_forward = torch.sign(x)
            m1, m2, m3 = (x < -1).float(), (x < 0).float(), (x < 1).float()
            out1 = -1 * m1 + (x * x + 2 * x) * (1 - m1)
            out2 = out1 * m2 + (-x * x + 2 * x) * (1 - m2)
            out3 = out2 * m3 + 1 * (1 - m3)
            return out_forward.detach() - out3.detach() + out3

    class SignFunction(torch.autograd.Function):  # a custom autograd Function
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sign(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() <= 1).float()

    class ScaledBinaryConv(nn.Module):  # mean|W| * sign(W) with a clamp STE
        def __init__(self, cin, cout, k):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.1)
            self.padding = k // 2

        def forward(self, x):
            w = self.weight
            alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
            binary = alpha * torch.sign(w)
            clipped = torch.clamp(w, -1.0, 1.0)
            return F.conv2d(x, binary.detach() - clipped.detach() + clipped, padding=self.padding)

    class XnorConv(nn.Module):  # sign(W) convolution, output times a per-channel alpha
        def __init__(self, cin, cout):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))

        def forward(self, x):
            alpha = self.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
            return F.conv2d(x, torch.sign(self.weight), padding=1) * alpha

    def bn(c):
        b = nn.BatchNorm2d(c)
        b.weight.data.uniform_(0.5, 1.5)
        b.bias.data.normal_(0, 0.3)
        b.running_mean.normal_(0, 0.5)
        b.running_var.uniform_(2.0, 8.0)
        return b

    class ReActStyle(nn.Module):
        def __init__(self, c=16, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), bn(c))
            self.move11, self.act1 = LearnableBias(c), ApproxSign()
            self.conv3x3, self.bn1 = ScaledBinaryConv(c, c, 3), bn(c)
            self.move12, self.prelu1, self.move13 = LearnableBias(c), nn.PReLU(c), LearnableBias(c)
            self.move21, self.act2 = LearnableBias(c), ApproxSign()
            self.pointwise, self.bn2 = ScaledBinaryConv(c, c, 1), bn(c)
            self.fc = nn.Linear(c, classes)

        def forward(self, x):
            x = self.stem(x)
            out = self.bn1(self.conv3x3(self.act1(self.move11(x)))) + x
            out = self.move13(self.prelu1(self.move12(out)))
            out = self.bn2(self.pointwise(self.act2(self.move21(out)))) + out
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))

    class BiRealStyle(nn.Module):
        def __init__(self, c=16, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), bn(c))
            self.hardtanh = nn.Hardtanh()
            self.conv1, self.bn1 = XnorConv(c, c), bn(c)
            self.conv2, self.bn2 = ScaledBinaryConv(c, c, 3), bn(c)
            self.fc = nn.Linear(c, classes)

        def forward(self, x):
            x = self.stem(x)
            x = self.bn1(self.conv1(SignFunction.apply(self.hardtanh(x)))) + x
            b = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
            x = self.bn2(self.conv2(b)) + x
            x = self.bn1(self.conv1((x >= 0).float() * 2 - 1)) + x
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return torch, {"reactnet_style": ReActStyle, "bireal_xnor_style": BiRealStyle}


@pytest.mark.parametrize("name", ["reactnet_style", "bireal_xnor_style"])
def test_pytorch_bnn_styles_convert_and_match(name, tmp_path):
    torch, cases = _torch_bnn_cases()
    from weights_tools.convert import export_onnx

    torch.manual_seed(0)
    model = cases[name]().eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_size=(8, 8))
    notes: List[str] = []
    graph = lower_onnx(onnx.load(str(path)), warnings=notes)
    assert notes == []
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    got = run_reference(graph, x.numpy())
    rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.median(rel) <= 1e-4, rel
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.97
    kinds = [op.type.name for op in graph.ops]
    assert "BCONV2D" in kinds and "BITPACK" in kinds


def test_pytorch_strided_binary_conv_converts(tmp_path):
    torch, cases = _torch_bnn_cases()
    from torch import nn

    from weights_tools.convert import export_onnx

    class Strided(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

        def forward(self, x):
            w = torch.sign(self.weight)
            return torch.nn.functional.conv2d(torch.sign(x), w, stride=2, padding=1).mean((2, 3))

    path = tmp_path / "m.onnx"
    model = Strided().eval()
    export_onnx(model, path, input_size=(8, 8))
    graph = lower_onnx(onnx.load(str(path)))
    assert "BCONV2D_GENERAL" in [op.type.name for op in graph.ops]
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(run_reference(graph, x.numpy()), want, rtol=1e-5, atol=1e-5)
