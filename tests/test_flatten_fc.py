"""Flatten / Reshape of a spatial map before an FC: (N, C, H, W) -> (N, C*H*W) -> Linear.

The engine keeps the map in NHWC order and FC / BFC read an (H, W, C) input as one vector
(docs/format.md), so the converter permutes the FC's weight columns from PyTorch's order
c*H*W + y*W + x; a binary FC's weight rows are packed like the input bits (words(C) per pixel, with
tail bits). Engine-level tests check the extended FC / BFC against the reference interpreter
(bit for bit for BFC) and the validators' new rules; model-level tests convert each way PyTorch
code writes the flattening and compare with PyTorch.
"""

import numpy as np
import pytest

import qbinfer
from weights_tools.qbw import (
    DType,
    FCEncoding,
    Graph,
    Op,
    OpType,
    Preprocessing,
    QbwFormatError,
    Tensor,
    Value,
    pack_signs,
    read_qbw,
    serialize_qbw,
    validate_graph,
    write_qbw,
)
from weights_tools.reference import run_reference

SEED = 4521


def _bfc_graph(rng, h, w, c, co):
    """input f32 (H, W, C) -> BITPACK (threshold 0) -> BFC over the whole map -> (1, 1, Co)."""
    weight = np.where(rng.random((co, h, w, c)) < 0.5, 1, -1)
    packed = pack_signs(weight).reshape(co, -1)  # [Co, H*W*words(C)]
    values = [
        Value("x", DType.F32, h, w, c),
        Value("bits", DType.BITS, h, w, c),
        Value("y", DType.F32, 1, 1, co),
    ]
    tensors = [
        Tensor("t", DType.F32, np.zeros(c, np.float32)),
        Tensor("w", DType.BITS, packed),
        Tensor("s", DType.F32, rng.uniform(0.5, 1.5, co).astype(np.float32)),
        Tensor("b", DType.F32, rng.standard_normal(co).astype(np.float32)),
    ]
    ops = [
        Op(OpType.BITPACK, "pack", [0], [1], [0]),
        Op(OpType.BFC, "bfc", [1], [2], [1, 2, 3]),
    ]
    return Graph(tensors, values, ops, 0, 2, Preprocessing.for_input_size(h, w)), weight


@pytest.mark.parametrize(
    "h,w,c", [(1, 1, 70), (3, 2, 1), (2, 3, 5), (4, 4, 64), (2, 2, 65), (3, 3, 130), (5, 1, 200)]
)
def test_engine_bfc_over_a_map_is_exact(h, w, c, tmp_path):
    """Both engine paths (whole words: one pixel or C % 64 == 0; per-pixel tail bits otherwise)
    against the reference, bit for bit, and the reference against a plain ±1 dot."""
    rng = np.random.default_rng(SEED + h * 1000 + w * 100 + c)
    co = 75  # more than one chunk of the tail path's 64 outputs
    graph, weight = _bfc_graph(rng, h, w, c, co)
    path = tmp_path / "bfc.qbw"
    write_qbw(path, graph)
    x = rng.standard_normal((6, c, h, w)).astype(np.float32)
    want = run_reference(graph, x)
    for threads in (1, 2):
        got = qbinfer.load(str(path), threads=threads).run(x)
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    signs = np.where(x.transpose(0, 2, 3, 1) >= 0, 1, -1).reshape(6, -1)  # NHWC features
    dot = signs @ weight.reshape(co, -1).T
    scale, bias = graph.tensors[2].data, graph.tensors[3].data
    np.testing.assert_array_equal(
        want.reshape(6, co), (dot.astype(np.float32) * scale + bias).astype(np.float32)
    )


def test_engine_fc_over_a_map(tmp_path):
    """A float FC reading an (H, W, C) map: the NHWC data as one vector of H*W*C features."""
    rng = np.random.default_rng(SEED)
    h, w, c, co = 3, 4, 5, 7
    weight = rng.standard_normal((co, h * w * c)).astype(np.float32)
    graph = Graph(
        [
            Tensor("w", DType.F32, weight),
            Tensor("b", DType.F32, rng.standard_normal(co).astype(np.float32)),
        ],
        [Value("x", DType.F32, h, w, c), Value("y", DType.F32, 1, 1, co)],
        [Op(OpType.FC, "fc", [0], [1], [0, None, 1], [int(FCEncoding.FP32)])],
        0,
        1,
        Preprocessing.for_input_size(h, w),
    )
    path = tmp_path / "fc.qbw"
    write_qbw(path, graph)
    x = rng.standard_normal((4, c, h, w)).astype(np.float32)
    want = x.transpose(0, 2, 3, 1).reshape(4, -1).astype(np.float64) @ weight.T + graph.tensors[
        1
    ].data.astype(np.float64)
    ref = run_reference(graph, x).reshape(4, co)
    got = qbinfer.load(str(path)).run(x).reshape(4, co)
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _refused_by_both(graph, tmp_path, match):
    with pytest.raises(QbwFormatError, match=match):
        validate_graph(graph)
    path = tmp_path / "bad.qbw"
    path.write_bytes(serialize_qbw(graph, validate=False))
    with pytest.raises(Exception, match=match):
        qbinfer.load(str(path))


def test_bfc_tail_bits_are_checked_in_every_pixel(tmp_path):
    """A set tail bit in a middle pixel's last word (not only in the row's last word) is refused
    by both readers."""
    graph, _ = _bfc_graph(np.random.default_rng(SEED), 2, 2, 5, 3)
    data = graph.tensors[1].data.copy()
    data[1, 1] |= np.uint64(1) << np.uint64(40)  # pixel 1 of row 1, past channel 5
    graph.tensors[1] = Tensor("w", DType.BITS, data)
    _refused_by_both(graph, tmp_path, "tail bits")


def test_bitplane8_fc_needs_a_1x1_input(tmp_path):
    """bitplane8 planes pack C features per row, so an FC over a map must be fp32 or int8."""
    rng = np.random.default_rng(SEED)
    graph = Graph(
        [
            Tensor("w", DType.BITS, np.zeros((8, 3, 1), np.uint64)),
            Tensor("s", DType.F32, np.ones(3, np.float32)),
            Tensor("b", DType.F32, rng.standard_normal(3).astype(np.float32)),
        ],
        [Value("x", DType.F32, 2, 2, 5), Value("y", DType.F32, 1, 1, 3)],
        [Op(OpType.FC, "fc", [0], [1], [0, 1, 2], [int(FCEncoding.BITPLANE8)])],
        0,
        1,
        Preprocessing.for_input_size(2, 2),
    )
    _refused_by_both(graph, tmp_path, r"bitplane8 weights need a \(1, 1, C\) input")


# ---------------------------------------------------------------------------------------------
# From PyTorch

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")
onnx = pytest.importorskip("onnx")

import bnn_styles  # noqa: E402
from bnn_styles import input_shape, randomize  # noqa: E402
from test_engine_e2e import assert_matches  # noqa: E402
from torch import nn  # noqa: E402

from weights_tools.bnn_zoo import BinaryNetMLP  # noqa: E402
from weights_tools.convert import check_model, export_onnx  # noqa: E402
from weights_tools.converter import ConversionError, lower_onnx  # noqa: E402

FLATTENS = {
    "view_size0": lambda x: x.view(x.size(0), -1),
    "torch_flatten": lambda x: torch.flatten(x, 1),
    "nn_flatten": nn.Flatten(),
    "reshape_n": lambda x: x.reshape(x.shape[0], -1),
    "view_minus1": lambda x: x.view(-1, x[0].numel()),
}


def pm1(x):
    return torch.where(x >= 0, 1.0, -1.0)


class FlattenNet(nn.Module):
    """A float stem (conv, BN, ReLU, max pool) to a C x 4 x 4 map, flattened by `flatten`, then
    a float FC (`binary` False) or a sign and a binary FC (sign(W), BN1d, a float head). With
    `sign_first` the sign is taken on the map, before the flattening."""

    input_shape = (3, 8, 8)

    def __init__(self, flatten, c=5, binary=False, sign_first=False, hidden=40, classes=10):
        super().__init__()
        self.flatten, self.binary, self.sign_first = flatten, binary, sign_first
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.stem_bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c * 16, hidden if binary else classes)
        if binary:
            self.bn = nn.BatchNorm1d(hidden)
            self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        x = self.stem(x)
        if not self.binary:
            return self.fc(self.flatten(x))
        x = self.stem_bn(x)  # centred, so that the signs are not all +1 after the ReLU
        v = self.flatten(pm1(x)) if self.sign_first else pm1(self.flatten(x))
        v = self.bn(nn.functional.linear(v, torch.sign(self.fc.weight), self.fc.bias))
        return self.head(v)


def convert(model, tmp_path, warnings=None):
    c, h, w = input_shape(model)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, onnx_path, input_size=(h, w), in_channels=c)
    graph = lower_onnx(onnx.load(str(onnx_path)), warnings=warnings)
    path = tmp_path / "m.qbw"
    write_qbw(path, graph)
    return graph, str(path)


def check_matches(model, tmp_path, seed, label, warnings=None):
    graph, path = convert(model, tmp_path, warnings)
    x = torch.randn(32, *input_shape(model), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(x).numpy()
    got = qbinfer.load(path).run(x.numpy())
    assert_matches(got, want, path, x.numpy(), label)
    np.testing.assert_allclose(got, run_reference(read_qbw(path), x.numpy()), rtol=1e-5, atol=1e-5)
    return graph


@pytest.mark.parametrize("how", sorted(FLATTENS))
def test_float_fc_after_flatten(how, tmp_path):
    seed = SEED + sorted(FLATTENS).index(how)
    model = randomize(FlattenNet(FLATTENS[how]), seed=seed)
    graph = check_matches(model, tmp_path, seed, how)
    (fc,) = [op for op in graph.ops if op.type == OpType.FC]
    assert graph.values[fc.inputs[0]].shape == (4, 4, 5)  # the map itself, no copy


@pytest.mark.parametrize("c", [5, 64, 70])
@pytest.mark.parametrize("sign_first", [False, True])
@pytest.mark.parametrize("how", ["view_size0", "nn_flatten"])
def test_binary_fc_after_flatten(how, sign_first, c, tmp_path):
    seed = SEED + c + 7 * sign_first
    model = randomize(FlattenNet(FLATTENS[how], c=c, binary=True, sign_first=sign_first), seed=seed)
    graph = check_matches(model, tmp_path, seed, f"{how} sign_first={sign_first} c={c}")
    bfcs = [op for op in graph.ops if op.type == OpType.BFC]
    assert len(bfcs) in (1, 2)  # 2: the BFC's weights hold an exact zero (a ternary FC)
    assert graph.values[bfcs[0].inputs[0]].shape == (4, 4, c)


class UnflattenNet(nn.Module):
    """x.view(N, -1), then back to (N, C, H, W) before a conv: the same data throughout."""

    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, 1, 1)
        self.conv = nn.Conv2d(6, 4, 3, 1, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = self.stem(x)
        y = y.view(y.size(0), -1).view(y.size(0), 6, 8, 8)
        return self.fc(self.conv(y).mean(dim=(2, 3)))


def test_flatten_and_back(tmp_path):
    check_matches(randomize(UnflattenNet(), seed=SEED), tmp_path, SEED, "unflatten")


class BatchNormOnFlatMap(nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 3, 2, 1)
        self.bn = nn.BatchNorm1d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.bn(torch.flatten(self.stem(x), 1)))


class FlatOutput(nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 3, 2, 1)

    def forward(self, x):
        return torch.flatten(self.stem(x), 1)


def test_batchnorm1d_of_a_flattened_map_converts_through_a_feature_fc(tmp_path):
    """A BatchNorm1d of the 2x4x4 map's 32 features: laid out in PyTorch's order by an added FC
    (the BN folded into it), which the converter reports in a warning."""
    warnings: list = []
    graph = check_matches(
        randomize(BatchNormOnFlatMap(), seed=SEED), tmp_path, SEED, "bn1d", warnings
    )
    assert [op.type for op in graph.ops] == [OpType.CONV2D, OpType.FC, OpType.FC]
    assert any("32x32 weights" in w for w in warnings), warnings


def test_a_flattened_map_as_the_output_is_refused(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(FlatOutput().eval(), onnx_path, input_size=(8, 8))
    with pytest.raises(ConversionError, match="flattened 2x4x4 map"):
        lower_onnx(onnx.load(str(onnx_path)))


# ---------------------------------------------------------------------------------------------
# BinaryNet: the suite's MLP styles and the zoo's layout of the authors' main_mnist.py


@pytest.mark.parametrize("style", ["binarynet_mlp", "binarynet_mlp_flatten"])
def test_binary_mlp_styles_convert_and_match(style, tmp_path):
    seed = SEED + len(style)
    model = randomize(bnn_styles.STYLES[style](), seed=seed)
    graph = check_matches(model, tmp_path, seed, style)
    assert any(op.type == OpType.BFC for op in graph.ops)


def _binarynet(seed, infl_ratio=1):
    """The zoo's BinaryNet MLP (hidden width 2048 * infl_ratio), random weights and BN, with
    exact zeros planted in the binary FCs fc2 and fc3 (torch.sign(W) of them is 0)."""
    model = randomize(BinaryNetMLP(infl_ratio=infl_ratio), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for fc in (model.fc2, model.fc3):
            flat = fc.weight.view(-1)
            flat[torch.randint(flat.numel(), (5,), generator=g)] = 0.0
    return model


def test_binarynet_mlp_has_no_blocker():
    report = check_model(_binarynet(SEED), input_size=(28, 28), in_channels=1)
    assert report.converts, str(report)


def test_binarynet_mlp_converts_and_matches(tmp_path):
    """x.view(-1, 784), a float-input FC with sign(W) weights, binary FCs with sign(x) and sign(W)
    (exact zeros in both: two BFCs each), BN1d, Hardtanh, Dropout, a float head, LogSoftmax (the
    log-probabilities are compared)."""
    warnings = []
    model = _binarynet(SEED)
    graph = check_matches(model, tmp_path, SEED, "binarynet_mlp", warnings)
    assert sum(op.type == OpType.BFC for op in graph.ops) == 4
    assert sum("binary FC are exactly 0" in w for w in warnings) == 2, warnings


# The zoo entry itself (hidden width 6144) is tests/test_bnn_e2e.py's.
