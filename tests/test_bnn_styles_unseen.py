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
# A per-feature BatchNorm1d of a flattened map (XNOR-Net's AlexNet classifier)


class AlexNetClassifier(nn.Module):
    """XNOR-Net-PyTorch's AlexNet classifier on a small map: the features end in a C x H x W map,
    `x.view(N, C * H * W)`, then `BinConv2d(C * H * W, 32, Linear=True)` (BatchNorm1d over the
    flattened features, BinActive, Linear, ReLU), a second one (32 -> 16) and a float Linear."""

    def __init__(self, channels, height, width):
        super().__init__()
        self.input_shape = (3, 2 * height, 2 * width)
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.flat = channels * height * width
        self.classifier = nn.Sequential(
            unseen.BinConv2d(self.flat, 32, Linear=True),
            unseen.BinConv2d(32, 16, Linear=True),
            nn.Linear(16, 10),
        )

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), self.flat)
        return self.classifier(x)


# (C, H, W) of the flattened map: a 1x1 map (no permutation), and maps whose features the engine
# holds in another order than PyTorch's (square, and H != W so that H and W cannot be swapped).
@pytest.mark.parametrize("map_shape", [(8, 1, 1), (8, 3, 3), (4, 2, 3)])
def test_per_feature_batchnorm_of_a_flattened_map_matches_pytorch(map_shape, tmp_path):
    seed = SEED + sum(map_shape)
    torch.manual_seed(seed)
    model = unseen.randomize(AlexNetClassifier(*map_shape), seed=seed)
    with torch.no_grad():  # BN statistics per feature, so that the feature order matters
        for bn in (model.classifier[0].bn, model.classifier[1].bn):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n) * 0.5)
            bn.running_var.copy_(torch.rand(n) + 0.5)
            bn.weight.copy_(torch.randn(n))
            bn.bias.copy_(torch.randn(n) * 0.5)
    c, h, w = model.input_shape
    path, _ = convert_model(model, tmp_path, "alexnet_classifier", (h, w), in_channels=c)
    ops = read_qbw(path).ops_by_type()
    assert ops.get("BFC", 0) >= 2, ops  # both binary Linears run on bits
    x = np.random.default_rng(seed).standard_normal((N_INPUTS, c, h, w)).astype(np.float32)
    engine = qbinfer.load(path).run(x)
    assert_matches(engine, torch_logits(model, x), path, x, f"AlexNet classifier {map_shape}")


def test_per_feature_constants_of_a_flattened_map_match_pytorch(tmp_path):
    """Per-feature Mul, Add and a threshold on a flattened 4x2x3 map, before a binary FC: each
    constant is one value per feature in PyTorch's order."""
    g = torch.Generator().manual_seed(5)
    scale, shift, threshold = (torch.randn(24, generator=g) for _ in range(3))
    weight = torch.randn(10, 24, generator=g).sign()

    class PerFeature(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, 1, 1)

        def forward(self, x):
            x = torch.flatten(F.max_pool2d(self.conv(x), 2), 1) * scale + shift
            signs = torch.where(x >= threshold, 1.0, -1.0)
            return F.linear(signs, weight)

    model = PerFeature().eval()
    path, _ = convert_model(model, tmp_path, "per_feature", (4, 6), in_channels=3)
    assert "BFC" in read_qbw(path).ops_by_type()
    x = np.random.default_rng(5).standard_normal((N_INPUTS, 3, 4, 6)).astype(np.float32)
    engine = qbinfer.load(path).run(x)
    assert_matches(engine, torch_logits(model, x), path, x, "per-feature constants")


def test_per_feature_batchnorm_of_a_flattened_map_passes_check():
    """`--check` (which listed this BatchNorm1d as a blocker before) finds nothing."""
    from weights_tools.convert import check_model

    model = unseen.randomize(AlexNetClassifier(4, 2, 2), seed=0)
    report = check_model(model, input_size=model.input_shape[1:])
    assert report.converts, report.blockers


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
