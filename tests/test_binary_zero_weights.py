"""Binary convs and FCs whose weights hold exact zeros (PyTorch's sign(0) = 0 of a 0.0 weight).

torch's default init and torch.randn give an exact 0.0 with probability about 2^-24 per weight, so
large BNNs often hold a few: such a layer is ternary, and the converter runs it exactly as two
binary layers on the same bits, summed (docs/converter.md). Here zeros are planted on purpose
(corner taps that meet the padding, a whole output channel, scattered ones) in 1x1, 3x3, strided,
5x5 and +1-padded binary convs and in binary FCs, and the engine and the reference interpreter of
the .qbw are compared with PyTorch.
"""

import numpy as np
import pytest

import qbinfer

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from bnn_styles import randomize  # noqa: E402
from test_engine_e2e import assert_matches  # noqa: E402
from torch import nn  # noqa: E402

from weights_tools.convert import export_onnx  # noqa: E402
from weights_tools.converter import ConversionError, lower_onnx  # noqa: E402
from weights_tools.qbw import OpType, read_qbw, write_qbw  # noqa: E402
from weights_tools.reference import run_reference  # noqa: E402

SEED = 1205


def pm1(x):
    """The sign of an activation as a bit holds it: +1 at 0 (no activation is exactly 0 here)."""
    return torch.where(x >= 0, 1.0, -1.0)


class TernaryConvNet(nn.Module):
    """A float stem, then a binary conv (weights alpha_o * sign(W) when `scaled`, else sign(W))
    of kernel k, stride s, padding p (zero padding, or +1 padding with F.pad when `one_pad`),
    BN, global pooling, a binary FC (sign(W2)) on the pooled sign, BN1d, a float head."""

    def __init__(self, k, stride, pad, one_pad=False, scaled=True, c=20, hidden=48, classes=10):
        super().__init__()
        self.k, self.stride, self.pad, self.one_pad, self.scaled = k, stride, pad, one_pad, scaled
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.weight = nn.Parameter(torch.randn(c + 4, c, k, k))
        self.bn = nn.BatchNorm2d(c + 4)
        self.fc_weight = nn.Parameter(torch.randn(hidden, c + 4))
        self.bn_fc = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, classes)

    def binary_weight(self):
        w = torch.sign(self.weight)
        if self.scaled:
            w = w * self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return w

    def forward(self, x):
        s = pm1(self.stem(x))
        if self.one_pad:
            s = F.pad(s, (1, 1, 1, 1), value=1.0)
        y = self.bn(F.conv2d(s, self.binary_weight(), stride=self.stride, padding=self.pad))
        v = pm1(y.mean(dim=(2, 3)))
        v = self.bn_fc(F.linear(v, torch.sign(self.fc_weight)))
        return self.head(v)


def plant_zeros(model: TernaryConvNet, seed: int) -> int:
    """Zeros in the binary conv: every corner tap of output channel 0 (taps that meet the padding),
    all of output channel 1, and scattered ones; in the binary FC: a few per row of some rows and
    one whole row. Returns the number planted in the conv."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.weight
        k = w.shape[-1]
        for dy in (0, k - 1):
            for dx in (0, k - 1):
                w[0, :, dy, dx] = 0.0
        w[1] = 0.0
        flat = w.view(-1)
        flat[torch.randint(flat.numel(), (17,), generator=g)] = 0.0
        fc = model.fc_weight
        fc[0] = 0.0
        fc.view(-1)[torch.randint(fc.numel(), (9,), generator=g)] = 0.0
        return int((w == 0).sum())


def convert(model, tmp_path, size):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, onnx_path, input_size=size)
    warnings = []
    graph = lower_onnx(onnx.load(str(onnx_path)), warnings=warnings)
    path = tmp_path / "m.qbw"
    write_qbw(path, graph)
    return graph, str(path), warnings


CASES = {
    "1x1": dict(k=1, stride=1, pad=0),
    "3x3": dict(k=3, stride=1, pad=1),
    "3x3_stride2": dict(k=3, stride=2, pad=1),
    "5x5": dict(k=5, stride=1, pad=2),
    "5x5_stride2_unscaled": dict(k=5, stride=2, pad=2, scaled=False),
    "3x3_one_padding": dict(k=3, stride=1, pad=0, one_pad=True),
    "3x3_one_padding_stride2": dict(k=3, stride=2, pad=0, one_pad=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_planted_zero_weights_convert_exactly(case, tmp_path):
    seed = SEED + sorted(CASES).index(case)
    model = TernaryConvNet(**CASES[case])
    randomize(model, seed=seed)
    planted = plant_zeros(model, seed)
    model.eval()
    graph, path, warnings = convert(model, tmp_path, (12, 12))

    conv_ops = [op for op in graph.ops if op.type in (OpType.BCONV2D, OpType.BCONV2D_GENERAL)]
    fc_ops = [op for op in graph.ops if op.type == OpType.BFC]
    assert len(conv_ops) == 2 and len(fc_ops) == 2, [op.type.name for op in graph.ops]
    # The two halves of each layer read the same bits with the same padding.
    for a, b in (conv_ops, fc_ops):
        assert a.inputs == b.inputs and a.attrs == b.attrs
    # One warning per ternary layer, with the count of zeros and the cost.
    conv_warning = [w for w in warnings if f"{planted} of the" in w and "binary conv" in w]
    assert len(conv_warning) == 1 and "2x the cost" in conv_warning[0], warnings
    assert sum("binary FC" in w for w in warnings) == 1, warnings

    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(x).numpy()
    engine = qbinfer.load(path).run(x.numpy())
    ref = run_reference(read_qbw(path), x.numpy())
    assert_matches(engine, want, path, x.numpy(), f"{case} vs pytorch")
    assert_matches(ref, want, path, x.numpy(), f"{case} reference vs pytorch")
    # The engine and the reference: exact integer dots, the same float epilogues.
    np.testing.assert_allclose(engine, ref, rtol=1e-5, atol=1e-5)


def test_without_zeros_one_binary_op_per_layer(tmp_path):
    """The split is only for layers that hold zeros: the same model without them has one binary
    op per layer and no warning about zeros."""
    model = randomize(TernaryConvNet(k=3, stride=1, pad=1), seed=SEED)
    with torch.no_grad():
        for w in (model.weight, model.fc_weight):
            w[w == 0] = 1e-3
    graph, _, warnings = convert(model, tmp_path, (8, 8))
    binary = [op.type for op in graph.ops if op.type in (OpType.BCONV2D, OpType.BFC)]
    assert binary == [OpType.BCONV2D, OpType.BFC]
    assert not any("exactly 0" in w for w in warnings), warnings


def test_mixed_magnitudes_are_refused_naming_the_cause(tmp_path):
    """Float weights on a sign (two magnitudes in one output channel) are not binary: the message
    says that, not something about zeros."""
    model = randomize(TernaryConvNet(k=3, stride=1, pad=1), seed=SEED)

    class FloatWeights(TernaryConvNet):
        def binary_weight(self):
            return self.weight

    bad = FloatWeights(k=3, stride=1, pad=1)
    bad.load_state_dict(model.state_dict())
    bad.eval()
    onnx_path = tmp_path / "bad.onnx"
    export_onnx(bad, onnx_path, input_size=(8, 8))
    with pytest.raises(ConversionError, match="not of one magnitude per output channel"):
        lower_onnx(onnx.load(str(onnx_path)))


def test_xnor_net_resnet18_with_exact_zero_weights_converts(tmp_path):
    """torch.manual_seed(0), then bnn_styles.randomize(seed=1): two exact-zero weights in
    layer3.1.conv2 of XNOR-Net ResNet-18 (a case found in the wild, not planted)."""
    from weights_tools.bnn_zoo import XnorWeightConv2d
    from weights_tools.zoo import build_model

    torch.manual_seed(0)
    model = randomize(build_model("xnor_net_resnet18"), seed=1)
    zeros = {
        name: int((m.weight == 0).sum())
        for name, m in model.named_modules()
        if isinstance(m, XnorWeightConv2d)
    }
    zeros = {k: v for k, v in zeros.items() if v}
    assert zeros, "the seed no longer gives exact zeros: pick another that does"
    graph, path, warnings = convert(model, tmp_path, (32, 32))
    for name in zeros:
        assert any(f"{zeros[name]} of the" in w for w in warnings), (name, warnings)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        want = model(x).numpy()
    assert_matches(qbinfer.load(path).run(x.numpy()), want, path, x.numpy(), "xnor_net_resnet18")
