"""BNNs in the idioms of public code that the rest of the suite does not use
(tests/bnn_styles_unseen.py: ReActNet's ResNet variant, Bi-Real Net with a Hardtanh STE, IR-Net's
ResNet-20, XNOR-Net's NIN, BinaryNet.pytorch's VGG, a rounding binarizer, Real-to-Bin-like gated
blocks), each converted unchanged and run by the engine against PyTorch eval on 32 inputs,
judged image by image (conftest.assert_matches). Then the patterns those models needed, each on
its own: the exact thresholds of the comparison and rounding binarizers at their boundaries, the
exporter fixes of `weights_tools.export_tracing`, and strided Slice / zero-channel Pad.
"""

import numpy as np
import pytest

import qbinfer

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")
ort = pytest.importorskip("onnxruntime")

import bnn_styles_unseen as unseen  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import assert_matches, convert_model, torch_logits  # noqa: E402
from torch import nn  # noqa: E402

from weights_tools.convert import ConversionError, export_onnx, to_qbw  # noqa: E402
from weights_tools.qbw import read_qbw  # noqa: E402

# IR-Net calls `BinaryQuantize().apply(...)` on an instance, as its code does; torch warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")

SEED = 20261206
N_INPUTS = 32
BINARY_OPS = {"BCONV2D", "BCONV2D_GENERAL", "BFC"}


@pytest.mark.parametrize("style", sorted(unseen.STYLES))
def test_unseen_style_converts_unchanged_and_matches_pytorch(style, tmp_path):
    seed = SEED + sorted(unseen.STYLES).index(style)
    torch.manual_seed(seed)
    model = unseen.randomize(unseen.STYLES[style](), seed=seed)
    c, h, w = model.input_shape
    path, _ = convert_model(model, tmp_path, style, (h, w), in_channels=c)
    ops = read_qbw(path).ops_by_type()
    # converted as a BNN: its binary layers run on bits, not as float convs of ±1 values
    assert BINARY_OPS & set(ops), f"{style}: no binary op in {ops}"
    x = np.random.default_rng(seed).standard_normal((N_INPUTS, c, h, w)).astype(np.float32)
    engine = qbinfer.load(path).run(x)
    figures = assert_matches(engine, torch_logits(model, x), path, x, f"{style} (seed {seed})")
    assert figures["top1"] >= 0.97 or figures["differ"] > 0


# ---------------------------------------------------------------------------------------------
# Binarizer idioms at their exact thresholds


class BinarizerProbe(nn.Module):
    """binarize(x) read by a binary 1x1 conv with ±1 weights: the engine's output is an exact
    integer, so any threshold off by one float shows."""

    def __init__(self, binarize, channels=8):
        super().__init__()
        self.binarize = binarize
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(16, channels, 1, 1, generator=g).sign())

    def forward(self, x):
        return F.conv2d(self.binarize(x), self.weight)


def _boundary_inputs(threshold: float, channels: int = 8) -> np.ndarray:
    """Every pixel a float32 at or next to `threshold`, 0 and ±tiny values, and spread values."""
    t = np.float32(threshold)
    near = [t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))]
    specials = [0.0, -0.0, 1e-45, -1e-45, 2.0**-24, 2.0**-25, -(2.0**-24), 1.0, -1.0, 0.5, -0.5]
    pool = np.array(near + specials, dtype=np.float32)
    rng = np.random.default_rng(1)
    x = rng.choice(pool, size=(4, channels, 5, 5)).astype(np.float32)
    return x


BINARIZERS = {
    # (the binarizer, the float32 threshold t with value +1 iff x >= t)
    "where_gt": (lambda x: torch.where(x > 0, 1.0, -1.0), float(np.nextafter(np.float32(0), 1))),
    "where_lt_ones_like": (
        lambda x: torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x)),
        0.0,
    ),
    "where_le": (
        lambda x: torch.where(x <= 0.25, -1.0, 1.0),
        float(np.nextafter(np.float32(0.25), 1)),
    ),
    "gt_float": (lambda x: x.gt(0).float().mul(2).sub(1), float(np.nextafter(np.float32(0), 1))),
    "not_lt": (lambda x: (~(x < 0)).float() * 2 - 1, 0.0),
    "const_first_lt": (
        lambda x: torch.where(0.5 < x, 1.0, -1.0),
        float(np.nextafter(np.float32(0.5), 1)),
    ),
    "round_clip": (
        lambda x: x.add(1).div(2).clamp(0, 1).round().mul(2).add(-1),
        float(np.nextafter(np.float32(2.0**-24), 1)),
    ),
}


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_binarizer_idiom_is_exact_at_its_threshold(name, tmp_path):
    binarize, threshold = BINARIZERS[name]
    model = BinarizerProbe(binarize).eval()
    x = _boundary_inputs(threshold)
    with torch.no_grad():
        signs = binarize(torch.from_numpy(x)).numpy()
    # the threshold stated above is what PyTorch computes (so the test checks the converter)
    np.testing.assert_array_equal(signs, np.where(x >= np.float32(threshold), 1.0, -1.0))
    path, _ = convert_model(model, tmp_path, name, (5, 5), in_channels=8)
    assert "BCONV2D" in read_qbw(path).ops_by_type()
    np.testing.assert_array_equal(qbinfer.load(path).run(x), torch_logits(model, x))


def test_round_binarizer_of_three_levels_is_refused(tmp_path):
    model = BinarizerProbe(lambda x: x.clamp(-1, 1).round()).eval()
    with pytest.raises(ConversionError, match="Round.*not two"):
        to_qbw(model, tmp_path / "m.qbw", input_size=(5, 5), in_channels=8)


# ---------------------------------------------------------------------------------------------
# Exporter fixes (weights_tools/export_tracing.py)


def _onnx_matches_pytorch(model, shape, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_size=shape[1:], in_channels=shape[0])
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, torch_logits(model, x), rtol=1e-4, atol=1e-4)


def test_data_assignment_binarization_is_exported(tmp_path):
    """BinaryNet.pytorch's `input.data = Binarize(input.data)`: without the fix the exported
    conv reads the unbinarized input."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), unseen.BinarizeConv2d(8, 8, 3, padding=1, bias=False)
    ).eval()
    _onnx_matches_pytorch(model, (3, 6, 6), tmp_path)


def test_multi_output_autograd_function_is_exported(tmp_path):
    """XNOR-Net's BinActive returns (sign, mean) but computes the mean first: without the fix
    the exported conv reads the mean."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            bits, _ = unseen.BinActive.apply(x)
            return self.conv(bits)

    _onnx_matches_pytorch(Net().eval(), (4, 6, 6), tmp_path)


def test_autograd_functions_run_normally_after_an_export(tmp_path):
    export_onnx(
        BinarizerProbe(lambda x: unseen.BinaryQuantize.apply(x, None, None)),
        tmp_path / "m.onnx",
        (4, 4),
        in_channels=8,
    )
    x = torch.randn(5, requires_grad=True)
    (unseen.BinaryQuantize.apply(x, torch.tensor([10.0]), torch.tensor([0.1])).sum()).backward()
    assert x.grad is not None  # apply is the real one again: autograd ran the backward


# ---------------------------------------------------------------------------------------------
# Slice and zero-channel Pad (ResNet-20's option-A shortcut)


class Shortcut(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 3, 3)),
        lambda x: x[:, 1:5, ::3, :],
        lambda x: F.pad(x, (0, 0, 0, 0, 0, 2)),
        lambda x: x[:, ::2],
    ],
    ids=["option_a", "channels_rows", "pad_after", "channel_step"],
)
def test_slice_and_zero_channel_pad_are_exact(fn, tmp_path):
    model = Shortcut(fn).eval()
    path, _ = convert_model(model, tmp_path, "s", (7, 7), in_channels=6)
    x = np.random.default_rng(2).standard_normal((3, 6, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(
        qbinfer.load(path).run(x), torch_logits(model, x), rtol=1e-6, atol=1e-6
    )


def test_slice_with_an_offset_is_refused_clearly(tmp_path):
    model = Shortcut(lambda x: x[:, :, 1::2, 1::2]).eval()
    with pytest.raises(ConversionError, match="only rows and columns from the first"):
        to_qbw(model, tmp_path / "m.qbw", input_size=(7, 7), in_channels=6)


# ---------------------------------------------------------------------------------------------
# What still does not convert: a per-feature BatchNorm1d of a flattened map


def test_per_feature_batchnorm_of_a_flattened_map_is_listed_by_check():
    """XNOR-Net-PyTorch's AlexNet classifier (`BinConv2d(256 * 6 * 6, 4096, Linear=True)`: BN1d
    over the flattened map's features, BinActive, Linear). The engine has no per-element affine;
    `--check` names the node and the module."""
    from weights_tools.convert import check_model

    class AlexNetTail(nn.Module):
        input_shape = (3, 8, 8)

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                unseen.BinConv2d(4 * 4 * 4, 16, Linear=True), nn.Linear(16, 10)
            )

        def forward(self, x):
            x = self.features(x)
            x = x.view(x.size(0), 4 * 4 * 4)
            return self.classifier(x)

    report = check_model(unseen.randomize(AlexNetTail(), seed=0), input_size=(8, 8))
    assert not report.converts
    [blocker] = report.blockers
    assert blocker.op_type == "BatchNormalization"
    assert blocker.module == "classifier.0.bn"
    assert "C*H*W features" in blocker.problem


# ---------------------------------------------------------------------------------------------
# Smaller idioms: a scaled binary activation and the ways code pools before its FC


class SmallBinaryNet(nn.Module):
    """Float stem, sign (maybe scaled), binary 3x3 conv, BN, then `head` from the map to
    the logits."""

    input_shape = (3, 12, 12)

    def __init__(self, head, activation_scale=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16))
        self.weight = nn.Parameter(torch.randn(16, 16, 3, 3))
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)
        self.head = head
        self.activation_scale = activation_scale

    def forward(self, x):
        a = torch.sign(self.stem(x))
        if self.activation_scale is not None:
            a = a * self.activation_scale
        y = self.bn(F.conv2d(a, self.weight.sign(), padding=1))
        return self.fc(self.head(y))


HEADS = {
    "squeeze": (lambda y: F.adaptive_avg_pool2d(y, 1).squeeze(), None),
    "avg_pool_of_its_size": (lambda y: F.avg_pool2d(y, y.size()[2:]).view(y.size(0), -1), None),
    "mean_of_means": (lambda y: y.mean(3).mean(2), None),
    "scaled_activation": (lambda y: y.mean((2, 3)), 0.37),
    "negative_activation_scale": (lambda y: y.mean((2, 3)), -1.5),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_small_idiom_converts_and_matches_pytorch(name, tmp_path):
    import bnn_styles

    head, scale = HEADS[name]
    model = bnn_styles.randomize(SmallBinaryNet(head, scale), seed=7)
    path, _ = convert_model(model, tmp_path, name, (12, 12))
    assert "BCONV2D" in read_qbw(path).ops_by_type()
    x = np.random.default_rng(7).standard_normal((N_INPUTS, 3, 12, 12)).astype(np.float32)
    assert_matches(qbinfer.load(path).run(x), torch_logits(model, x), path, x, name)
