"""SOFTMAX (op 19): softmax / log-softmax over the channels of each pixel.

1. The kernel (qbinfer._testing.kernels.softmax, every variant) against exact math in float64
   within docs/format.md's SOFTMAX tolerance, and against PyTorch's float32 softmax within
   twice it (both sides are within it of the exact value): random rows at magnitudes from 1e-3
   to 1e6, C = 1 and C = 10000, NaN / inf rows as PyTorch gives them, in place.
2. The engine on hand-built graphs ((1, 1, C) vectors and (H, W, C) maps) against the numpy
   reference (weights_tools/reference.py), on every ISA.
3. `Model.output_kind` and `predict`: logits, probabilities and log-probabilities of the same
   network give the same probabilities.
4. The converter: PyTorch models ending in nn.LogSoftmax / nn.Softmax / F.log_softmax(dim=1),
   and with a per-pixel softmax inside, convert and match PyTorch (median per-image relative
   L2 <= 1e-4, top-1 agreement >= 97%); the axes and opsets it cannot run are refused.

Random data is seeded (SEED below, printed in failure messages).
"""

from __future__ import annotations

import numpy as np
import pytest

import qbinfer
from qbinfer import _core
from weights_tools.qbw import DType, Graph, Op, OpType, Preprocessing, Tensor, Value, write_qbw
from weights_tools.reference import run_reference

SEED = 20261205
LOG_REL, LOG_ABS = 1e-6, 1e-6  # log-softmax: |out - l| <= 1e-6 * |l| + 1e-6
PROB_REL, PROB_ABS = 1e-6, 1e-9  # softmax: |out - p| <= 1e-6 * p + 1e-9

_testing = pytest.importorskip("qbinfer._testing")
kernels = _testing.kernels


def exact(x: np.ndarray, log: bool) -> np.ndarray:
    """Softmax over the last axis in float64 from the float32 inputs (the test's own formula):
    NaN rows where any input is NaN or the shift is inf - inf, as PyTorch gives them."""
    z64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = z64 - z64.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1, keepdims=True))
        out = z - lse if log else np.exp(z - lse)
        # What a float32 result can hold: a log-probability below -FLT_MAX is -inf.
        return np.where(np.abs(out) > np.finfo(np.float32).max, np.sign(out) * np.inf, out)


def assert_within(got, want, log: bool, factor: float = 1.0, what: str = "") -> None:
    """got within `factor` times the SOFTMAX tolerance of want; NaN and infinities equal."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN places")
    inf = np.isinf(want) | np.isinf(got)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: infinities")
    ok = ~np.isnan(want) & ~inf
    rel, abs_ = (LOG_REL, LOG_ABS) if log else (PROB_REL, PROB_ABS)
    err = np.abs(got[ok] - want[ok])
    bound = factor * (rel * np.abs(want[ok]) + abs_)
    if err.size and not np.all(err <= bound):
        i = int(np.argmax(err / bound))
        pytest.fail(
            f"{what} (seed {SEED}): error {err[i]:.3g} > bound {bound[i]:.3g} at "
            f"got {got[ok][i]!r}, want {want[ok][i]!r}"
        )


def random_rows(rng: np.random.Generator, rows: int, c: int, scale: float) -> np.ndarray:
    return (rng.standard_normal((rows, c)) * scale).astype(np.float32)


VARIANTS = _testing.kernel_variants("elementwise")


# ---------------------------------------------------------------------------------------------
# 1. The kernel


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("c", [1, 2, 10, 1000, 10000])
def test_kernel_against_exact_math(isa, log, c):
    rng = np.random.default_rng([SEED, c, int(log)])
    for scale in (1e-3, 1.0, 30.0, 1e3, 1e6):
        x = random_rows(rng, 3, c, scale)
        got = kernels.softmax(x, log=log, isa=isa)
        assert_within(got, exact(x, log), log, what=f"{isa} C={c} scale {scale}")
        # Every variant runs the one portable function: the same bits, in place too.
        np.testing.assert_array_equal(got, kernels.softmax(x, log=log))
        np.testing.assert_array_equal(kernels.softmax(x, log=log, inplace=True, isa=isa), got)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_kernel_one_channel_and_probabilities_sum_to_one(log):
    x = np.array([[-3e38], [0.0], [7.5], [3e38], [-1e-30]], np.float32)
    got = kernels.softmax(x, log=log)
    np.testing.assert_array_equal(got, np.zeros_like(x) if log else np.ones_like(x))
    rng = np.random.default_rng(SEED)
    p = kernels.softmax(random_rows(rng, 4, 10000, 5.0))
    assert np.all(np.abs(p.astype(np.float64).sum(axis=1) - 1) < 1e-5)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_kernel_special_values_as_pytorch(log):
    torch = pytest.importorskip("torch")
    inf, nan = np.inf, np.nan
    rows = [
        [inf, 1.0, 2.0],  # inf - inf: all NaN
        [-inf, 1.0, 2.0],  # 0 / -inf at the -inf
        [-inf, -inf, -inf],  # all NaN
        [nan, 1.0, 2.0],  # all NaN
        [1.0, 2.0, nan],  # a NaN after the maximum too
        [3e38, -3e38, 0.0],  # x - m overflows: -inf log-probability
        [1e-45, -1e-45, 0.0],  # denormals: uniform
        [88.0, 88.0, -104.0],  # e^-192: a zero probability, a finite log-probability
    ]
    x = np.array(rows, np.float32)
    got = kernels.softmax(x, log=log)
    fn = torch.log_softmax if log else torch.softmax
    want = fn(torch.from_numpy(x), dim=1).numpy()
    assert_within(got, want, log, factor=2.0, what="special values vs torch")
    assert_within(got, exact(x, log), log, what="special values vs exact")


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("c", [1, 10, 10000])
def test_kernel_against_pytorch(log, c):
    """PyTorch's float32 result and ours are each within the tolerance of the exact value, so
    within twice it of each other."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng([SEED, 7, c])
    fn = torch.log_softmax if log else torch.softmax
    for scale in (1e-3, 1.0, 30.0, 1e3, 1e6):
        x = random_rows(rng, 8, c, scale)
        want = fn(torch.from_numpy(x), dim=1).numpy()
        assert_within(kernels.softmax(x, log=log), want, log, factor=2.0, what=f"torch {scale}")


# ---------------------------------------------------------------------------------------------
# 2. The engine on hand-built graphs


def softmax_graph(h: int, w: int, c: int, log: bool) -> Graph:
    """x (h, w, c) -> RELU -> SOFTMAX: the softmax reads an op's output, not the graph input."""
    return Graph(
        tensors=[],
        values=[
            Value("x", DType.F32, h, w, c),
            Value("r", DType.F32, h, w, c),
            Value("y", DType.F32, h, w, c),
        ],
        ops=[
            Op(OpType.RELU, "relu", [0], [1]),
            Op(OpType.SOFTMAX, "softmax", [1], [2], [], [int(log)]),
        ],
        input_value=0,
        output_value=2,
        preprocessing=Preprocessing(0, h, w),
    )


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 10), (1, 1, 10000), (5, 7, 19), (40, 40, 33)])
def test_engine_matches_the_reference(tmp_path, log, shape):
    """Every ISA and thread count; (40, 40, 33) is large enough to be split across threads."""
    h, w, c = shape
    path = str(tmp_path / "softmax.qbw")
    graph = softmax_graph(h, w, c, log)
    write_qbw(path, graph)
    rng = np.random.default_rng([SEED, h, w, c])
    x = rng.standard_normal((3, c, h, w)) * np.array([1.0, 50.0, 1e4])[:, None, None, None]
    x = x.astype(np.float32)
    x[0, 0, 0, 0] = -np.inf  # a -inf channel in one pixel of one image
    want = run_reference(graph, x)
    relu = np.maximum(x, 0).transpose(0, 2, 3, 1)  # NHWC, what the softmax reads
    first = None
    for isa in _core.supported_isas():
        for threads in (1, 2):
            got = qbinfer.load(path, threads=threads, isa=isa).run(x)
            got_nhwc = got.reshape(3, c, h, w).transpose(0, 2, 3, 1) if got.ndim == 4 else got
            want_nhwc = want.reshape(3, c, h, w).transpose(0, 2, 3, 1) if want.ndim == 4 else want
            label = f"{isa}, {threads} threads"
            assert_within(got_nhwc, want_nhwc.reshape(got_nhwc.shape), log, what=label)
            assert_within(got_nhwc, exact(relu, log).reshape(got_nhwc.shape), log, what=label)
            if first is None:
                first = got
            np.testing.assert_array_equal(got, first, err_msg=f"{label}: not the same bits")


def test_engine_reports_the_op(tmp_path):
    path = str(tmp_path / "s.qbw")
    write_qbw(path, softmax_graph(1, 1, 10, True))
    m = qbinfer.load(path)
    op = m.ops()[-1]
    assert op["type"] == "SOFTMAX" and op["attrs"] == {"log": 1}
    assert op["params"] == 0 and op["bytes"] == 0


# ---------------------------------------------------------------------------------------------
# 3. What the output is, and predict's probabilities


def classifier(c_out: int, head: str, rng: np.random.Generator) -> Graph:
    """4x4x3 image -> GLOBAL_AVGPOOL -> FC (3 -> c_out) -> nothing / SOFTMAX / log-SOFTMAX."""
    weight = (rng.standard_normal((c_out, 3)) * 3).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    values = [
        Value("x", DType.F32, 4, 4, 3),
        Value("gap", DType.F32, 1, 1, 3),
        Value("logits", DType.F32, 1, 1, c_out),
    ]
    ops = [
        Op(OpType.GLOBAL_AVGPOOL, "gap", [0], [1]),
        Op(OpType.FC, "fc", [1], [2], [0, None, 1], [0]),
    ]
    if head != "logits":
        values.append(Value("out", DType.F32, 1, 1, c_out))
        ops.append(Op(OpType.SOFTMAX, "head", [2], [3], [], [int(head == "log_probabilities")]))
    return Graph(
        tensors=[Tensor("w", DType.F32, weight), Tensor("b", DType.F32, bias)],
        values=values,
        ops=ops,
        input_value=0,
        output_value=len(values) - 1,
        preprocessing=Preprocessing(0, 4, 4),
    )


def test_output_kind_and_predict_probabilities(tmp_path):
    kinds = ("logits", "probabilities", "log_probabilities")
    models = {}
    for kind in kinds:
        path = str(tmp_path / f"{kind}.qbw")
        write_qbw(path, classifier(6, kind, np.random.default_rng(SEED)))  # same weights
        models[kind] = qbinfer.load(path)
        assert models[kind].output_kind == kind
    img = np.random.default_rng(SEED + 1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    logits = models["logits"].predict(img, top_k=6)
    names = [n for n, _ in logits]
    probs = np.array([p for _, p in logits])
    assert abs(probs.sum() - 1) < 1e-6 and np.all(np.diff(probs) <= 0)
    for kind in kinds[1:]:
        got = models[kind].predict(img, top_k=6)
        assert [n for n, _ in got] == names, kind
        np.testing.assert_allclose([p for _, p in got], probs, rtol=1e-5, atol=1e-7, err_msg=kind)


def test_output_kind_is_the_op_writing_the_output(tmp_path):
    """A SOFTMAX that does not write the output (here one feeding a RELU) leaves logits."""
    rng = np.random.default_rng(SEED)
    g = classifier(4, "probabilities", rng)
    g.values.append(Value("after", DType.F32, 1, 1, 4))
    g.ops.append(Op(OpType.RELU, "after", [3], [4]))
    g.output_value = 4
    path = str(tmp_path / "inner.qbw")
    write_qbw(path, g)
    assert qbinfer.load(path).output_kind == "logits"


# ---------------------------------------------------------------------------------------------
# 4. The converter

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

N_IMAGES = 32


def match_pytorch(model, tmp_path, name, size=(8, 8), in_channels=3):
    """Convert `model` and check the engine against PyTorch on N_IMAGES random images: median
    per-image relative L2 <= 1e-4 and top-1 agreement >= 97%. Returns the .qbw's op types."""
    from weights_tools.convert import to_qbw
    from weights_tools.qbw import read_qbw

    model.eval()
    path = str(tmp_path / f"{name}.qbw")
    to_qbw(model, path, input_size=size, in_channels=in_channels)
    x = np.random.default_rng([SEED, len(name)]).standard_normal((N_IMAGES, in_channels, *size))
    x = x.astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy().reshape(N_IMAGES, -1)
    got = qbinfer.load(path).run(x).reshape(N_IMAGES, -1)
    per_image = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.median(per_image) <= 1e-4, f"{name}: per-image rel L2 {per_image}"
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.97, name
    return [op.type.name for op in read_qbw(path).ops]


class Head(nn.Module):
    """conv -> BN -> sign -> binary 3x3 conv -> BN -> GAP -> FC -> `end` (a BNN's classifier)."""

    def __init__(self, end, classes=10):
        super().__init__()
        from weights_tools.layers import binary_sign

        self.sign = binary_sign
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.bconv = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, classes)
        self.end = end
        with torch.no_grad():
            self.bconv.weight.copy_(torch.sign(self.bconv.weight) + (self.bconv.weight == 0))
            rng = torch.Generator().manual_seed(SEED)
            for bn in (self.bn, self.bn2):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=rng) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=rng) + 0.5)

    def forward(self, x):
        y = self.bn2(self.bconv(self.sign(self.bn(self.conv(x)))))
        return self.end(self.fc(y.mean(dim=(2, 3))))


@pytest.mark.parametrize(
    "name,end",
    [
        ("logsoftmax", nn.LogSoftmax(dim=1)),
        ("softmax", nn.Softmax(dim=1)),
        ("f_log_softmax", lambda y: F.log_softmax(y, dim=1)),
        ("torch_softmax_last_dim", lambda y: torch.softmax(y, dim=-1)),
    ],
)
def test_converts_a_classifier_ending_in_softmax(tmp_path, name, end):
    torch.manual_seed(SEED)
    types = match_pytorch(Head(end), tmp_path, name)
    assert types[-1] == "SOFTMAX" and "BCONV2D" in types, types
    expected = "probabilities" if "log" not in name else "log_probabilities"
    assert qbinfer.load(str(tmp_path / f"{name}.qbw")).output_kind == expected


class PixelSoftmax(nn.Module):
    """A softmax over the channels of every pixel inside the network (an attention-like map),
    then the head ends in log-softmax: SOFTMAX twice, per pixel and per vector."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = torch.softmax(self.conv(x) * 3, dim=1)
        y = self.conv2(a * 10).mean(dim=(2, 3))
        return F.log_softmax(self.fc(y), dim=1)


def test_converts_a_per_pixel_softmax_inside_the_network(tmp_path):
    torch.manual_seed(SEED)
    types = match_pytorch(PixelSoftmax(), tmp_path, "pixel", size=(6, 7))
    assert types.count("SOFTMAX") == 2, types


def test_zoo_binarynet_mlp_ends_in_logsoftmax(tmp_path):
    """weights_tools.bnn_zoo's BinaryNet MLP (the authors' main_mnist.py, LogSoftmax at the end),
    narrowed (infl_ratio 1 would be 2048 wide; the structure is the same at 64), with its
    exact-zero weights made nonzero (a 1-bit weight holds ±1 only: the converter refuses 0).
    Its x.view(-1, 784) reads a (784, 1, 1) input here: the view of a 28x28 map (NHWC order)
    is a conversion of its own, tested with it."""
    from weights_tools import bnn_zoo
    from weights_tools.convert import randomize_bn

    torch.manual_seed(SEED)
    model = bnn_zoo.BinaryNetMLP(num_classes=10, infl_ratio=1)
    hidden = 64
    for i, (cin, cout) in enumerate([(784, hidden), (hidden, hidden), (hidden, hidden)], 1):
        layer = bnn_zoo.BinarizeLinear(cin, cout, binarize_input=i > 1)
        setattr(model, f"fc{i}", layer)
        setattr(model, f"bn{i}", nn.BatchNorm1d(cout))
    model.fc4 = nn.Linear(hidden, 10)
    with torch.no_grad():
        for layer in (model.fc1, model.fc2, model.fc3):
            layer.weight.add_((layer.weight == 0).float() * 1e-3)
    randomize_bn(model, seed=SEED, input_size=(1, 1), in_channels=784)
    types = match_pytorch(model, tmp_path, "binarynet_mlp", size=(1, 1), in_channels=784)
    assert types[-1] == "SOFTMAX" and "BFC" in types, types


def onnx_softmax(op_type: str, axis, opset: int, h: int, w: int, flatten: bool):
    """x (N, 4, h, w) [-> GlobalAveragePool -> Flatten] -> op_type(axis) [-> GlobalAveragePool],
    an (N, C) output either way."""
    import onnx
    from onnx import TensorProto, helper

    nodes, value = [], "x"
    if flatten:
        nodes += [helper.make_node("GlobalAveragePool", ["x"], ["g"])]
        nodes += [helper.make_node("Flatten", ["g"], ["f"], axis=1)]
        value = "f"
    kw = {} if axis is None else {"axis": axis}
    nodes.append(helper.make_node(op_type, [value], ["s"], name="the_softmax", **kw))
    out = "s"
    if not flatten:
        nodes += [helper.make_node("GlobalAveragePool", ["s"], ["p"])]
        nodes += [helper.make_node("Flatten", ["p"], ["y"], axis=1)]
        out = "y"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, h, w])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    "op_type,axis,opset,h,w,flatten",
    [
        ("Softmax", None, 13, 1, 1, True),  # default axis -1 of (N, C)
        ("LogSoftmax", 1, 11, 1, 1, True),  # opset 11, (N, C): the channels
        ("Softmax", None, 11, 1, 1, False),  # opset 11 default axis 1 of (N, C, 1, 1)
        ("LogSoftmax", 1, 13, 3, 5, False),  # per pixel
        ("Softmax", -3, 17, 3, 5, False),  # per pixel, negative axis
    ],
)
def test_onnx_axes_that_convert_match_onnxruntime(op_type, axis, opset, h, w, flatten):
    import onnxruntime as ort

    from weights_tools.converter import lower_onnx

    model = onnx_softmax(op_type, axis, opset, h, w, flatten)
    graph = lower_onnx(model)
    assert [op.type.name for op in graph.ops].count("SOFTMAX") == 1
    assert graph.ops[[op.type.name for op in graph.ops].index("SOFTMAX")].attrs == [
        int(op_type == "LogSoftmax")
    ]
    x = (np.random.default_rng(SEED).standard_normal((5, 4, h, w)) * 4).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = run_reference(graph, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "axis,opset,h,w,flatten,message",
    [
        (3, 13, 3, 5, False, r"axis 3 of a rank-4 value is not supported"),
        (-1, 13, 3, 5, False, r"axis -1 of a rank-4 value"),  # opset 13's default on a map: W
        (0, 13, 1, 1, True, r"axis 0 of a rank-2 value"),  # over the batch
        (1, 11, 3, 5, False, r"opset 11 on a 4x3x5 map normalizes over C, H and W together"),
    ],
)
def test_onnx_axes_that_do_not_convert_are_refused(axis, opset, h, w, flatten, message):
    from weights_tools.converter import ConversionError, lower_onnx

    model = onnx_softmax("Softmax", axis, opset, h, w, flatten)
    with pytest.raises(ConversionError, match=r"'the_softmax' \(Softmax\): .*" + message):
        lower_onnx(model)
