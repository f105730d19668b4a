"""Average pooling as PyTorch's avg_pool2d in every combination (AVGPOOL2D, and AVGPOOL where it
computes the same): the converter's choice between the two, the engine on every ISA and thread
count against PyTorch and against weights_tools.reference, each ISA's kernel through
qbinfer._testing, and the refusals.

Tolerances. Against the numpy reference the engine is bit-exact: docs/format.md fixes
AVGPOOL2D's f32 summation order and its one division, and the reference performs exactly those
operations. Against PyTorch (which sums in its own order) every output is within
1e-6 + 1e-6·|want| on N(0, 1) inputs: a window sums at most 25 terms, so the f32 rounding of
either sum is a few ulp of values of order 1.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

import qbinfer  # noqa: E402
from qbinfer._testing import kernels as K  # noqa: E402
from weights_tools.convert import export_onnx, to_qbw  # noqa: E402
from weights_tools.converter import ConversionError, lower_onnx  # noqa: E402
from weights_tools.qbw import OpType, read_qbw, write_qbw  # noqa: E402
from weights_tools.reference import run_reference  # noqa: E402

SEED = 20261205
C = 3
RTOL = ATOL = 1e-6
# tiny, odd and even maps (H, W); W != H so that a swapped axis shows
MAPS = [(1, 1), (2, 3), (7, 5), (8, 6)]
ISAS = qbinfer._core.supported_isas()


def torch_pool(x, kernel, stride, pad, ceil_mode, count_include_pad):
    """PyTorch's avg_pool2d on an NCHW numpy batch (symmetric pads, as PyTorch has them)."""
    with torch.no_grad():
        return F.avg_pool2d(
            torch.from_numpy(x), kernel, stride, pad, ceil_mode, count_include_pad
        ).numpy()


def onnx_pool(shape, kernel, stride, pads, ceil_mode, count_include_pad):
    """One AveragePool node as PyTorch's exporter writes it (opset 17, explicit pads)."""
    node = helper.make_node(
        "AveragePool",
        ["x"],
        ["y"],
        name="pool",
        kernel_shape=list(kernel),
        strides=list(stride),
        pads=list(pads),
        ceil_mode=int(ceil_mode),
        count_include_pad=int(count_include_pad),
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run_engine(path, x, isa, threads):
    """The engine's output for an NCHW batch: NHWC (N x C for a 1 x 1 map), as run gives it."""
    model = qbinfer._core.Model(os.fspath(path), threads, isa)
    return model.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "nhwc")


def expects_old_avgpool(h, w, kernel, stride, pad, ceil_mode):
    """AVGPOOL (ceil mode, no padding, the covered pixels as divisor) gives PyTorch's result
    exactly when there is no padding and PyTorch's output size is AVGPOOL's ceil-mode size
    (without padding both of PyTorch's divisors are the covered pixel count, so
    count_include_pad does not matter)."""
    if pad != 0:
        return False
    (kh, kw), (sh, sw) = kernel, stride
    want = torch_pool(np.zeros((1, 1, h, w), np.float32), kernel, stride, 0, ceil_mode, True)
    return want.shape[2:] == (-(-(h - kh) // sh) + 1, -(-(w - kw) // sw) + 1)


def combos(k):
    """Every pad 0..k/2 (PyTorch's limit), both modes and divisors, every map PyTorch accepts."""
    for pad, ceil_mode, include, (h, w) in itertools.product(
        range(k // 2 + 1), (False, True), (False, True), MAPS
    ):
        if h + 2 * pad >= k and w + 2 * pad >= k:
            yield pad, ceil_mode, include, h, w


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_every_combination_matches_pytorch(tmp_path, kernel, stride):
    """ONNX AveragePool (as exported) -> converter -> .qbw -> engine, every ISA and 1 and 2
    threads: equal to PyTorch within the stated tolerance, to the numpy reference bit for bit
    (AVGPOOL2D), to ONNX Runtime within the tolerance; the op chosen is AVGPOOL exactly where
    it computes the same."""
    rng = np.random.default_rng(SEED + 10 * kernel + stride)
    n_cases = 0
    for pad, ceil_mode, include, h, w in combos(kernel):
        what = f"k={kernel} s={stride} p={pad} ceil={ceil_mode} cip={include} map={h}x{w}"
        k2, s2 = (kernel, kernel), (stride, stride)
        x = rng.standard_normal((2, C, h, w)).astype(np.float32)
        want = torch_pool(x, kernel, stride, pad, ceil_mode, include)
        model = onnx_pool((C, h, w), k2, s2, [pad] * 4, ceil_mode, include)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(
            sess.run(None, {"x": x})[0], want, rtol=RTOL, atol=ATOL, err_msg=what
        )

        g = lower_onnx(model)
        old = expects_old_avgpool(h, w, k2, s2, pad, ceil_mode)
        assert [op.type for op in g.ops] == [OpType.AVGPOOL if old else OpType.AVGPOOL2D], what
        ref = run_reference(g, x)  # NCHW, or N x C for a 1 x 1 map
        assert ref.size == want.size, what
        ref = ref.reshape(want.shape)
        np.testing.assert_allclose(ref, want, rtol=RTOL, atol=ATOL, err_msg=what)

        path = tmp_path / "m.qbw"
        write_qbw(path, g)
        for isa, threads in itertools.product(ISAS, (1, 2)):
            got = run_engine(path, x, isa, threads).reshape(want.shape[0], *want.shape[2:], C)
            got = got.transpose(0, 3, 1, 2)
            label = f"{what} isa={isa} threads={threads}"
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=label)
            if not old:
                np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), label)
        n_cases += 1
    assert n_cases >= 8  # the grid is not silently empty


# Non-square kernels, strides and pads, and asymmetric ONNX pads (PyTorch cannot write those:
# PyTorch's result is computed on an input padded explicitly, which equals them when the pads
# are counted; ONNX Runtime is the judge otherwise).
ASYM = [
    # kernel, stride, pads (top, left, bottom, right), ceil_mode, count_include_pad, (H, W)
    ((3, 2), (2, 1), (1, 0, 1, 0), False, True, (7, 6)),
    ((3, 2), (2, 1), (1, 1, 1, 1), True, False, (8, 5)),
    ((2, 5), (1, 3), (1, 2, 1, 2), True, True, (4, 9)),
    ((5, 1), (3, 1), (2, 0, 2, 0), True, True, (6, 2)),
    ((3, 3), (2, 2), (0, 0, 1, 1), False, True, (8, 8)),  # TF-style SAME padding
    ((3, 3), (2, 2), (1, 1, 2, 2), True, False, (9, 9)),
    ((4, 4), (3, 3), (2, 1, 0, 3), True, True, (5, 7)),
]


@pytest.mark.parametrize("case", ASYM, ids=lambda c: f"k{c[0]}-s{c[1]}-p{c[2]}-{c[3]}-{c[4]}")
def test_asymmetric_shapes_match_onnxruntime_and_pytorch(tmp_path, case):
    kernel, stride, pads, ceil_mode, include, (h, w) = case
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((2, C, h, w)).astype(np.float32)
    model = onnx_pool((C, h, w), kernel, stride, pads, ceil_mode, include)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    pt, pl, pb, pr = pads
    if pt == pb and pl == pr:
        torch_want = torch_pool(x, kernel, stride, (pt, pl), ceil_mode, include)
        np.testing.assert_allclose(want, torch_want, rtol=RTOL, atol=ATOL)
    g = lower_onnx(model)
    assert [op.type for op in g.ops] == [OpType.AVGPOOL2D]
    assert list(g.ops[0].attrs) == [*kernel, *stride, *pads, int(ceil_mode), int(include)]
    ref = run_reference(g, x).reshape(want.shape)
    np.testing.assert_allclose(ref, want, rtol=RTOL, atol=ATOL)
    write_qbw(tmp_path / "m.qbw", g)
    for isa, threads in itertools.product(ISAS, (1, 2)):
        got = run_engine(tmp_path / "m.qbw", x, isa, threads)
        got = got.reshape(x.shape[0], *want.shape[2:], C).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), f"{isa}")


@pytest.mark.parametrize(
    "kernel, stride, pads, ceil_mode, include, hw, c",
    [
        ((3, 3), (2, 2), (1, 1), False, True, (112, 112), 16),  # splits across threads
        ((2, 2), (2, 2), (0, 0), False, True, (57, 57), 64),
        ((5, 5), (3, 3), (2, 2), True, True, (13, 11), 33),
        ((3, 3), (1, 1), (1, 1), True, False, (9, 7), 17),
        ((2, 3), (3, 1), (1, 1), True, True, (1, 1), 7),
    ],
)
def test_kernel_variants_match_pytorch(kernel, stride, pads, ceil_mode, include, hw, c):
    """Each ISA's AVGPOOL2D kernel through qbinfer._testing, whole image and by row ranges,
    against PyTorch; all ISAs agree bit for bit."""
    rng = np.random.default_rng(SEED + 2)
    x = rng.standard_normal((*hw, c)).astype(np.float32)
    x[0, 0, 0] = np.inf
    want = torch_pool(x.transpose(2, 0, 1)[None].copy(), kernel, stride, pads, ceil_mode, include)
    want = want[0].transpose(1, 2, 0)
    args = (*kernel, *stride, pads[0], pads[1], pads[0], pads[1], ceil_mode, include)
    first = None
    for isa in ISAS:
        got = K.avgpool2d(x, *args, isa=isa)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=isa)
        ho = got.shape[0]
        split = [(ho // 2, ho), (0, ho // 3), (ho // 3, ho // 2)]
        rows = K.avgpool2d(x, *args, isa=isa, row_ranges=split)
        np.testing.assert_array_equal(rows.view(np.uint32), got.view(np.uint32), isa)
        if first is None:
            first = got
        np.testing.assert_array_equal(got.view(np.uint32), first.view(np.uint32), isa)


def test_kernel_entry_refuses_bad_pads():
    x = np.zeros((4, 4, 2), np.float32)
    with pytest.raises(ValueError, match=r"pads must be in \[0, kernel - 1\]"):
        K.avgpool2d(x, 2, 2, 2, 2, 2, 0, 0, 0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        K.avgpool2d(np.zeros((1, 1, 2), np.float32), 3, 3, 1, 1, 1, 0, 0, 0)


def test_divisor_counts_padding_but_not_past_it():
    """Hand-computed values, not the code under test: a 4x4 map of ones, kernel 3, stride 2,
    pad 1, ceil mode. In padded coordinates (6 rows: pad, 4 input rows, pad) the windows start
    at rows 0, 2 and 4 and cover 2, 3 and 1 input rows; the last runs one row past the bottom
    padding, so counting padding divides by 3, 3 and 2 rows (not 3), and the same for columns.
    Each value is the f32 division of the two exact integers."""
    x = np.ones((4, 4, 1), np.float32)
    covered, counted = np.array([2, 3, 1]), np.array([3, 3, 2])
    want = np.float32(np.outer(covered, covered)) / np.float32(np.outer(counted, counted))
    got = K.avgpool2d(x, 3, 3, 2, 2, 1, 1, 1, 1, True, True)
    np.testing.assert_array_equal(got[..., 0], want)
    torch_want = torch_pool(x.transpose(2, 0, 1)[None].copy(), 3, 2, 1, True, True)[0, 0]
    np.testing.assert_allclose(torch_want, want, rtol=RTOL)
    got = K.avgpool2d(x, 3, 3, 2, 2, 1, 1, 1, 1, True, False)
    np.testing.assert_array_equal(got, np.ones((3, 3, 1), np.float32))


class DownsampleNet(nn.Module):
    """Average pools as BNN code writes them, on a 45x45 input: Bi-Real Net / ReActNet's
    downsampling shortcut (AvgPool2d(2, 2) then a 1x1 conv and BN) on an odd map in floor mode,
    nn.AvgPool2d(3, stride=2, padding=1), a ceil-mode pool without padding on an odd map (an
    AVGPOOL, as before AVGPOOL2D), a padded ceil-mode pool whose last window runs past the
    padding, a padded pool that does not count the padding, and AdaptiveAvgPool2d(2) where it
    is exactly an AvgPool; then a 1x1 conv, the global mean and an FC."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, 2), nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12)
        )
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.pool_ceil = nn.AvgPool2d(2, 2, ceil_mode=True)
        self.pool_pad_ceil = nn.AvgPool2d(3, 2, 1, ceil_mode=True)
        self.pool_excl = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.adaptive = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Conv2d(12, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))  # 45
        x = self.shortcut(x)  # 22: floor mode drops the last row and column
        x = self.pool(x)  # 11
        x = self.pool_ceil(x)  # 6
        x = self.pool_pad_ceil(x)  # 4
        x = self.pool_excl(x)  # 4
        x = F.relu(self.head(self.adaptive(x)))  # 2
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def test_bnn_style_pools_convert_and_match_pytorch(tmp_path):
    torch.manual_seed(SEED)
    model = randomize_bn(DownsampleNet(), SEED)
    to_qbw(model, tmp_path / "m.qbw", input_size=(45, 45))
    g = read_qbw(tmp_path / "m.qbw")
    pools = [(op.type, tuple(op.attrs)) for op in g.ops if "pool" in op.type.name.lower()]
    assert pools == [
        (OpType.AVGPOOL2D, (2, 2, 2, 2, 0, 0, 0, 0, 0, 1)),
        (OpType.AVGPOOL2D, (3, 3, 2, 2, 1, 1, 1, 1, 0, 1)),
        (OpType.AVGPOOL, (2, 2, 2, 2)),
        (OpType.AVGPOOL2D, (3, 3, 2, 2, 1, 1, 1, 1, 1, 1)),
        (OpType.AVGPOOL2D, (3, 3, 1, 1, 1, 1, 1, 1, 0, 0)),
        (OpType.AVGPOOL, (2, 2, 2, 2)),
        (OpType.GLOBAL_AVGPOOL, ()),
    ]
    x = np.random.default_rng(SEED).standard_normal((8, 3, 45, 45)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert rel_l2(run_reference(g, x), want) <= 1e-5
    for isa, threads in itertools.product(ISAS, (1, 2)):
        got = qbinfer.load(tmp_path / "m.qbw", threads=threads, isa=isa).run(x)
        assert rel_l2(got, want) <= 1e-5, f"isa={isa} threads={threads}"


@pytest.mark.parametrize(
    "module, hw",
    [
        (nn.AvgPool2d(2, 2), (8, 6)),  # windows that fit
        (nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), (7, 5)),
        (nn.AvgPool2d((3, 2), (1, 2), ceil_mode=True, count_include_pad=False), (6, 7)),
        (nn.AdaptiveAvgPool2d((2, 3)), (6, 9)),
    ],
)
def test_pools_that_converted_before_still_give_avgpool(tmp_path, module, hw):
    """Pools the converter took before AVGPOOL2D existed (no padding; windows that fit, or ceil
    mode with count_include_pad=False) are still the same AVGPOOL record, so their .qbw files
    are unchanged byte for byte."""
    export_onnx(nn.Sequential(module), tmp_path / "m.onnx", hw, in_channels=3)
    g = lower_onnx(onnx.load(tmp_path / "m.onnx"))
    assert [op.type for op in g.ops] == [OpType.AVGPOOL]
    x = np.random.default_rng(SEED).standard_normal((2, 3, *hw)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_reference(g, x).reshape(want.shape), want, rtol=RTOL, atol=ATOL)


def _refused(kw, why, shape=(C, 5, 6)):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="y", **kw)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ConversionError, match=rf"'y' \(AveragePool\).*{why}"):
        lower_onnx(model)


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
        (dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"), "auto_pad SAME"),
        (dict(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), "smaller than the kernel"),
        (dict(kernel_shape=[7, 2]), "larger than the padded input"),
    ],
)
def test_refusals_name_the_node(kw, why):
    _refused(kw, why)


def test_dropped_ceil_window_then_more_layers(tmp_path):
    """nn.AvgPool2d(2, 2, padding=1, ceil_mode=True) on an odd map: ceil mode would add a last
    window starting in the padding, which PyTorch and ONNX Runtime drop and ONNX shape
    inference (and the exporter's declared output shape) keep. The layers after it convert
    with PyTorch's shapes and the model matches PyTorch."""
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.AvgPool2d(2, 2, padding=1, ceil_mode=True),  # 9 -> 5, not 6
        nn.Conv2d(6, 4, 1),
        nn.ReLU(),
        nn.AvgPool2d(2, 2, padding=1, ceil_mode=True, count_include_pad=False),  # 5 -> 3
    ).eval()
    x = np.random.default_rng(SEED).standard_normal((2, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert want.shape == (2, 4, 3, 3)
    export_onnx(model, tmp_path / "m.onnx", (9, 9), in_channels=3)
    g = lower_onnx(onnx.load(tmp_path / "m.onnx"))
    assert [op.type for op in g.ops if op.type == OpType.AVGPOOL2D] == [OpType.AVGPOOL2D] * 2
    ref = run_reference(g, x)
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
    write_qbw(tmp_path / "m.qbw", g)
    for isa in ISAS:
        got = run_engine(tmp_path / "m.qbw", x, isa, 2).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=isa)
