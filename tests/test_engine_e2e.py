"""The engine end to end: zoo models and a non-zoo BNN, converted and run, against PyTorch eval,
ONNX Runtime on the exported ONNX file, and the numpy reference interpreter of the .qbw graph.

SPEC §6: integer dots are exact, float parts differ by rounding, and a sign input within rounding
distance of 0 may flip, so whole models are compared by relative L2 error of the logits (<= 1e-3)
and top-1 agreement (>= 97%) over 32 random inputs; single blocks, where both sides see the same
float input, are held to 1e-5.

A flip changes one image's logits by far more than 1e-3 (two correct engines, PyTorch and ONNX
Runtime, disagree the same way on such images). So every image that differs by more must hold a
near tie — a sign input within 1e-6 of its threshold, relative to the layer's range, or an INT8
code at a rounding boundary, found by the reference interpreter — and the median image must still
match to 1e-4.
"""

import numpy as np
import pytest

import qbinfer

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")
ort = pytest.importorskip("onnxruntime")

from conftest import (  # noqa: E402
    assert_matches,
    convert_model,
    ort_logits,
    random_inputs,
    top1_agreement,
    torch_logits,
    zoo_model,
)
from torch import nn  # noqa: E402

from weights_tools.convert import randomize_bn  # noqa: E402
from weights_tools.layers import BHalf, BinaryConv2d, DSHalf, Stage, binary_sign  # noqa: E402
from weights_tools.qbw import read_qbw  # noqa: E402
from weights_tools.reference import run_reference  # noqa: E402
from weights_tools.zoo import MODEL_NAMES, build_model  # noqa: E402

SEED = 20261127
N_INPUTS = 32


@pytest.mark.parametrize("se", [None, "se1", "se2"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zoo_model_matches_pytorch_and_onnxruntime(tmp_path, name, se):
    seed = SEED + MODEL_NAMES.index(name) * 10 + (0 if se is None else int(se[-1]))
    model = zoo_model(name, seed, se=se)
    path, onnx_path = convert_model(model, tmp_path, name, (32, 32))
    x = random_inputs((N_INPUTS, 3, 32, 32), seed)
    engine = qbinfer.load(path).run(x)
    for label, ref in (
        ("pytorch", torch_logits(model, x)),
        ("onnxruntime", ort_logits(onnx_path, x)),
    ):
        assert_matches(engine, ref, path, x, f"{name} se={se} vs {label} (seed {seed})")


@pytest.mark.parametrize("name", ["qb_net_small", "qsb_net_large"])
def test_zoo_model_at_224(tmp_path, name):
    torch.manual_seed(SEED)
    model = build_model(name, num_classes=1000)
    randomize_bn(model, seed=SEED)
    model.eval()
    path, _ = convert_model(model, tmp_path, name, (224, 224))
    x = random_inputs((4, 3, 224, 224), SEED)
    engine = qbinfer.load(path).run(x)
    assert_matches(engine, torch_logits(model, x), path, x, f"{name} at 224")


class OddNet(nn.Module):
    """Not from the zoo: odd widths (40, 72), 3x3 and 1x1 binary convs, every depthwise stride,
    a one-padded 3x3, an SE, and a plain float head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 40, 3, stride=1, padding=1), nn.BatchNorm2d(40), nn.ReLU()
        )
        self.s1 = Stage(40, (2, 1), multiplier=1, kernel_size=3)
        self.s2 = Stage(40, (1, 2), multiplier=2, kernel_size=1, padding="one", se=True)  # 80
        self.ds = DSHalf(80, (2, 2), multiplier=1)
        self.b = BHalf(80, 3, padding="one")
        self.reduce = nn.Conv2d(80, 72, 1)
        self.s3 = Stage(72, (1, 1), multiplier=1, kernel_size=3)
        self.head = nn.Linear(72, 7)

    def forward(self, x):
        x = self.stem(x)
        x = self.b(self.ds(self.s2(self.s1(x))))
        x = self.s3(self.reduce(x))
        return self.head(x.mean((2, 3)))


def test_non_zoo_bnn_converts_and_matches(tmp_path):
    torch.manual_seed(SEED)
    model = OddNet()
    randomize_bn(model, seed=SEED)
    model.eval()
    path, onnx_path = convert_model(model, tmp_path, "oddnet", (20, 28))
    x = random_inputs((N_INPUTS, 3, 20, 28), SEED + 1)
    engine = qbinfer.load(path).run(x)
    for label, ref in (
        ("pytorch", torch_logits(model, x)),
        ("onnxruntime", ort_logits(onnx_path, x)),
    ):
        assert_matches(engine, ref, path, x, f"oddnet vs {label}")


class SingleBinaryConv(nn.Module):
    """bias -> sign -> binary conv, alpha = 1 and no BN: the engine's output is the integer dot."""

    def __init__(self, channels, out_channels, kernel, padding):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(1, channels, 1, 1))
        self.conv = BinaryConv2d(channels, out_channels, kernel, padding)
        nn.init.uniform_(self.conv.weight, -1, 1)

    def forward(self, x):
        return self.conv(binary_sign(x + self.bias))


@pytest.mark.parametrize(
    "channels,out_channels,kernel,padding",
    [
        (3, 5, 3, "zero"),
        (40, 72, 3, "one"),
        (65, 64, 1, "zero"),
        (130, 33, 3, "zero"),
        (2048, 16, 3, "zero"),
    ],
)
def test_single_binary_conv_dot_is_exact(tmp_path, channels, out_channels, kernel, padding):
    torch.manual_seed(SEED + channels)
    model = SingleBinaryConv(channels, out_channels, kernel, padding).eval()
    path, _ = convert_model(model, tmp_path, "single", (5, 6), in_channels=channels)
    x = random_inputs((4, channels, 5, 6), SEED)
    engine = qbinfer.load(path).run(x)
    ref = torch_logits(model, x)
    assert engine.shape == ref.shape == (4, out_channels, 5, 6)
    np.testing.assert_array_equal(engine, ref)


@pytest.mark.parametrize(
    "stride,multiplier,se",
    [((1, 1), 1, False), ((2, 2), 4, True), ((2, 1), 2, False), ((1, 2), 2, True)],
)
@pytest.mark.parametrize("kernel,padding", [(3, "zero"), (1, "zero"), (3, "one")])
def test_single_stage_within_1e_5(tmp_path, stride, multiplier, se, kernel, padding):
    """One DS half + B half with random BN: the float output matches PyTorch to 1e-5 wherever no
    sign input sits within rounding distance of zero (checked by the PyTorch side's margins)."""
    seed = SEED + 100 * multiplier + kernel
    torch.manual_seed(seed)
    stage = Stage(24, stride, multiplier, kernel, padding=padding, se=se)
    randomize_bn(stage, seed=seed)
    stage.eval()
    path, _ = convert_model(stage, tmp_path, "stage", (9, 8), in_channels=24)
    x = random_inputs((4, 24, 9, 8), seed)
    engine = qbinfer.load(path).run(x)
    ref = torch_logits(stage, x)
    with torch.no_grad():
        ds_out = stage.ds(torch.from_numpy(x))
        margin = (ds_out + stage.b.gamma.bias).abs().min().item()
    assert margin > 1e-6, f"a sign input sits at {margin:.1e} from 0; pick another seed ({seed})"
    np.testing.assert_allclose(engine, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize(
    "fc,depthwise,calibrate",
    [
        ("int8", "fp32", False),
        ("bitplane8", "fp32", False),
        ("fp32", "int8", False),
        ("fp32", "int8", True),
        ("bitplane8", "int8", True),
    ],
)
def test_quantized_paths_match_the_reference_interpreter(tmp_path, fc, depthwise, calibrate):
    torch.manual_seed(SEED)
    model = build_model("qsb_net_small", num_classes=10, se="se1")
    randomize_bn(model, seed=SEED)
    model.eval()
    calibration = random_inputs((8, 3, 32, 32), SEED + 7) if calibrate else None
    path, _ = convert_model(
        model, tmp_path, "quant", (32, 32), fc=fc, depthwise=depthwise, calibration=calibration
    )
    x = random_inputs((N_INPUTS, 3, 32, 32), SEED + 3)
    engine = qbinfer.load(path).run(x)
    assert_matches(
        engine, run_reference(read_qbw(path), x), path, x, f"fc={fc} dw={depthwise}", tol=1e-4
    )


def test_threads_give_identical_results(tmp_path):
    torch.manual_seed(SEED)
    model = build_model("qb_net_large", num_classes=10)
    randomize_bn(model, seed=SEED)
    model.eval()
    path, _ = convert_model(model, tmp_path, "threads", (32, 32))
    x = random_inputs((6, 3, 32, 32), SEED)
    one = qbinfer.load(path, threads=1).run(x)
    for n in (2, 3):  # every step split over n threads (load caps n to the CPUs; _core does not)
        np.testing.assert_array_equal(qbinfer._core.Model(path, n, split="always").run(x), one)


# ---------------------------------------------------------------------------------------------
# Binary FC (BFC): a BinaryNet-style MLP whose hidden Linear layers read a sign


class _SignSTE(torch.autograd.Function):
    """BinaryNet's binarizer: sign with +1 at 0 (x >= 0) forward, clipped identity backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class _BinaryLinear(nn.Linear):
    """A Linear on binarized inputs with weights binarized in forward: sign(W), or
    alpha_o * sign(W) with alpha_o = mean |W| of output row o (XNOR-Net's scaling)."""

    def __init__(self, cin, cout, scaled=False, bias=True):
        super().__init__(cin, cout, bias=bias)
        self.scaled = scaled

    def forward(self, x):
        w = _SignSTE.apply(self.weight)
        if self.scaled:
            w = w * self.weight.abs().mean(1, keepdim=True)
        return nn.functional.linear(_SignSTE.apply(x), w, self.bias)


class _BinaryMLP(nn.Module):
    """Flatten -> Linear(fp32) -> BN1d -> Hardtanh -> binary Linear -> BN1d -> Hardtanh ->
    binary Linear (scaled, no bias) -> BN1d -> Linear: every hidden FC is a BFC, with widths
    that are not multiples of 64. (A Hardtanh right before the float head would be a CLIP, an
    op of its own; the Hardtanhs before signs are dropped.)"""

    input_shape = (432, 1, 1)  # for bnn_styles.randomize

    def __init__(self, classes=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(432, 200),
            nn.BatchNorm1d(200),
            nn.Hardtanh(),
            _BinaryLinear(200, 130),
            nn.BatchNorm1d(130),
            nn.Hardtanh(),
            _BinaryLinear(130, 65, scaled=True, bias=False),
            nn.BatchNorm1d(65),
            nn.Linear(65, classes),
        )

    def forward(self, x):
        return self.net(x)


def test_binarynet_mlp_converts_to_bfc_and_matches(tmp_path):
    """On (C, 1, 1) inputs: the Flatten of a spatial map (C, H, W) is another conversion (the
    FC's weights permuted for NHWC), tested on its own."""
    import bnn_styles  # the suite's randomizer (random weights and BN statistics)

    for name, model, c in (("mlp", bnn_styles.randomize(_BinaryMLP(), seed=SEED), 432),):
        path, onnx_path = convert_model(model, tmp_path, name, (1, 1), in_channels=c)
        types = [op.type.name for op in read_qbw(path).ops]
        assert "BFC" in types and types.count("FC") == 2, types  # first and last FC stay float
        x = random_inputs((N_INPUTS, c, 1, 1), SEED + 5)
        ref = torch_logits(model, x)
        for threads in (1, 2):
            engine = qbinfer.load(path, threads=threads).run(x)
            assert_matches(engine, ref, path, x, f"{name} vs pytorch, {threads} thread(s)")
            assert top1_agreement(engine, ref) >= 0.97
        assert_matches(qbinfer.load(path).run(x), ort_logits(onnx_path, x), path, x, name)
        # The reference interpreter agrees with the engine (exact dots, same epilogue).
        np.testing.assert_allclose(
            qbinfer.load(path).run(x), run_reference(read_qbw(path), x), rtol=1e-5, atol=1e-5
        )
