"""The published BNNs of weights_tools.bnn_zoo (authors' layouts, state dicts, OPs against the
paper's Table 2) and the ONNX export of the suite's own style models (tests/bnn_styles.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the tools extra (torch) is needed for weights_tools")
onnx = pytest.importorskip("onnx")

from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import bnn_styles  # noqa: E402

from weights_tools.bnn_zoo import BNN_ZOO  # noqa: E402
from weights_tools.convert import export_onnx  # noqa: E402
from weights_tools.ops import count_ops, is_binary_layer  # noqa: E402
from weights_tools.zoo import build_model  # noqa: E402

# Parameter and buffer names (with shapes) of each authors' module layout: ReActNet's
# mobilenet/reactnet.py, Bi-Real Net's BiReal18_34/birealnet.py, torchvision ResNet names with
# XNOR-Net's BinConv2d, BinaryNet's main_mnist.py. HardBinaryConv keeps its weights flat, (N, 1).
EXPECTED_KEYS = {
    "reactnet_a": {
        "feature.0.conv1.weight": (32, 3, 3, 3),
        "feature.0.bn1.running_var": (32,),
        "feature.1.move11.bias": (1, 32, 1, 1),
        "feature.1.binary_3x3.weights": (32 * 32 * 9, 1),
        "feature.1.binary_pw_down1.weights": (32 * 32, 1),
        "feature.1.bn2_2.weight": (32,),
        "feature.1.move23.bias": (1, 64, 1, 1),
        "feature.2.binary_3x3.weights": (64 * 64 * 9, 1),
        "feature.3.binary_pw.weights": (128 * 128, 1),
        "feature.3.prelu1.weight": (128,),
        "feature.13.prelu2.weight": (1024,),
        "feature.13.move23.bias": (1, 1024, 1, 1),
        "fc.weight": (1000, 1024),
    },
    "bireal_net18": {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.binary_conv.weights": (64 * 64 * 9, 1),
        "layer2.0.binary_conv.weights": (128 * 64 * 9, 1),
        "layer2.0.downsample.1.weight": (128, 64, 1, 1),
        "layer2.0.downsample.2.running_var": (128,),
        "layer4.3.bn1.weight": (512,),
        "fc.weight": (1000, 512),
    },
    "bireal_net34": {
        "layer1.5.binary_conv.weights": (64 * 64 * 9, 1),
        "layer2.7.bn1.bias": (128,),
        "layer3.11.binary_conv.weights": (256 * 256 * 9, 1),
        "layer4.0.downsample.1.weight": (512, 256, 1, 1),
        "layer4.5.bn1.num_batches_tracked": (),
    },
    "xnor_net_resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.bn.weight": (64,),
        "layer1.0.conv1.conv.weight": (64, 64, 3, 3),
        "layer1.0.conv1.conv.bias": (64,),
        "layer2.0.conv1.conv.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_mean": (128,),
        "layer4.1.conv2.bn.running_var": (512,),
        "fc.bias": (1000,),
    },
    "binarynet_mlp": {
        "fc1.weight": (6144, 784),
        "fc1.bias": (6144,),
        "bn1.running_mean": (6144,),
        "fc2.weight": (6144, 6144),
        "bn3.weight": (6144,),
        "fc4.weight": (10, 6144),
    },
}
# The networks of this file (BNN_ZOO also holds weights_tools.table3_zoo's: tests/test_table3_zoo.py).
BNN_ZOO_NAMES = tuple(EXPECTED_KEYS)

# Keys no layout of those authors has (catches a zoo that drifts to this project's conventions).
ABSENT_KEYS = {
    "reactnet_a": ["feature.3.binary_pw_down1.weights", "feature.1.binary_3x3.weight"],
    "bireal_net18": ["layer1.0.downsample.1.weight", "layer1.0.binary_conv.weight"],
    "bireal_net34": ["layer1.0.downsample.1.weight"],
    "xnor_net_resnet18": ["layer1.0.downsample.0.weight"],
    "binarynet_mlp": ["bn4.weight"],  # no BN after the last FC
}


def _bn(prefix, c):
    shapes = {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}
    out = {f"{prefix}.{k}": v for k, v in shapes.items()}
    out[f"{prefix}.num_batches_tracked"] = ()
    return out


def _reactnet_layout():
    """Every state-dict entry of the authors' ReActNet-A, from its description: a stem, then 13
    blocks (binary 3x3 on C channels, then a binary 1x1 C->C or two C->C halves when the width
    doubles), the `move` biases, two PReLUs and BNs per block, and the FC."""
    widths = [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    keys = {"feature.0.conv1.weight": (32, 3, 3, 3), **_bn("feature.0.bn1", 32)}
    for i in range(1, 14):
        c, out, p = widths[i - 1], widths[i], f"feature.{i}"
        keys[f"{p}.binary_3x3.weights"] = (c * c * 9, 1)
        keys.update(_bn(f"{p}.bn1", c))
        for move in ("move11", "move12", "move13", "move21"):
            keys[f"{p}.{move}.bias"] = (1, c, 1, 1)
        for move in ("move22", "move23"):
            keys[f"{p}.{move}.bias"] = (1, out, 1, 1)
        keys[f"{p}.prelu1.weight"] = (c,)
        keys[f"{p}.prelu2.weight"] = (out,)
        if out == c:
            keys[f"{p}.binary_pw.weights"] = (c * c, 1)
            keys.update(_bn(f"{p}.bn2", c))
        else:
            for half in ("1", "2"):
                keys[f"{p}.binary_pw_down{half}.weights"] = (c * c, 1)
                keys.update(_bn(f"{p}.bn2_{half}", c))
    keys.update({"fc.weight": (1000, 1024), "fc.bias": (1000,)})
    return keys


def _resnet_layout(blocks, binary_block, downsample):
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            keys.update(binary_block(p, cin, width))
            if j == 0 and cin != width:
                keys.update(downsample(p, cin, width))
            cin = width
    keys.update({"fc.weight": (1000, 512), "fc.bias": (1000,)})
    return keys


def _bireal_block(p, cin, cout):
    return {f"{p}.binary_conv.weights": (cout * cin * 9, 1), **_bn(f"{p}.bn1", cout)}


def _bireal_downsample(p, cin, cout):
    # AvgPool2d (no state), then the 1x1 conv, then BN.
    return {f"{p}.downsample.1.weight": (cout, cin, 1, 1), **_bn(f"{p}.downsample.2", cout)}


def _xnor_block(p, cin, cout):
    keys = {}
    for conv, c_in in (("conv1", cin), ("conv2", cout)):
        keys.update(_bn(f"{p}.{conv}.bn", c_in))
        keys[f"{p}.{conv}.conv.weight"] = (cout, c_in, 3, 3)
        keys[f"{p}.{conv}.conv.bias"] = (cout,)
    return keys


def _xnor_downsample(p, cin, cout):
    # torchvision: the strided 1x1 conv, then BN.
    return {f"{p}.downsample.0.weight": (cout, cin, 1, 1), **_bn(f"{p}.downsample.1", cout)}


def _binarynet_mlp_layout():
    keys = {}
    for i, (n_in, n_out) in enumerate(((784, 6144), (6144, 6144), (6144, 6144), (6144, 10)), 1):
        keys[f"fc{i}.weight"] = (n_out, n_in)
        keys[f"fc{i}.bias"] = (n_out,)
        if i < 4:
            keys.update(_bn(f"bn{i}", n_out))
    return keys


FULL_LAYOUTS = {
    "reactnet_a": _reactnet_layout,
    "bireal_net18": lambda: _resnet_layout((4, 4, 4, 4), _bireal_block, _bireal_downsample),
    "bireal_net34": lambda: _resnet_layout((6, 8, 12, 6), _bireal_block, _bireal_downsample),
    "xnor_net_resnet18": lambda: _resnet_layout((2, 2, 2, 2), _xnor_block, _xnor_downsample),
    "binarynet_mlp": _binarynet_mlp_layout,
}

# The QSB-Net paper's Table 2 (x 1e8): OPs, and BOPs where it gives them.
TABLE2_OPS = {"reactnet_a": 0.87, "bireal_net18": 1.63, "xnor_net_resnet18": 1.67}
TABLE2_BOPS = {"reactnet_a": 48.2, "bireal_net18": 16.8, "xnor_net_resnet18": 17.0}
# docs/ops.md: our counts match Table 2 within these relative tolerances (XNOR-Net's published
# figures count a little more float work than its FP32 stem, shortcuts and FC).
OPS_TOLERANCE = {"reactnet_a": 0.01, "bireal_net18": 0.01, "xnor_net_resnet18": 0.03}
BOPS_TOLERANCE = {"reactnet_a": 0.01, "bireal_net18": 0.01, "xnor_net_resnet18": 0.02}


@pytest.fixture(scope="module")
def zoo_models():
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_model(name, num_classes=BNN_ZOO[name].num_classes).eval()
        return cache[name]

    return get


def _image(name, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *BNN_ZOO[name].input_shape, generator=g)


@pytest.mark.parametrize("name", BNN_ZOO_NAMES)
def test_authors_parameter_names_and_shapes(zoo_models, name):
    state = zoo_models(name).state_dict()
    for key, shape in EXPECTED_KEYS[name].items():
        assert key in state, f"{name}: missing {key}"
        assert tuple(state[key].shape) == shape, (name, key, tuple(state[key].shape))
    for key in ABSENT_KEYS[name]:
        assert key not in state, f"{name}: unexpected {key}"


@pytest.mark.parametrize("name", BNN_ZOO_NAMES)
def test_a_checkpoint_of_the_authors_layout_loads_strictly(zoo_models, name):
    # A state dict with exactly the authors' entries (names and shapes, built from the layout
    # description above, not from the zoo's modules) loads with strict=True and is used as is.
    g = torch.Generator().manual_seed(5)
    layout = FULL_LAYOUTS[name]()
    checkpoint = {
        key: torch.tensor(7)
        if key.endswith("num_batches_tracked")
        else torch.randn(shape, generator=g)
        for key, shape in layout.items()
    }
    model = build_model(name, num_classes=BNN_ZOO[name].num_classes)
    model.load_state_dict(checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint[key]), key


@pytest.mark.parametrize("name", BNN_ZOO_NAMES)
def test_forward_and_strict_reload_from_file(zoo_models, name, tmp_path):
    model = zoo_models(name)
    x = _image(name)
    with torch.no_grad():
        y = model(x)
    classes = BNN_ZOO[name].num_classes
    assert y.shape == (2, classes) and torch.isfinite(y).all()

    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    torch.manual_seed(123)  # different initial weights: the load must replace every one
    fresh = build_model(name, num_classes=classes).eval()
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_binary_layers_use_scaled_signs_in_eval(zoo_models):
    # Eval-mode arithmetic of each binary layer type against its definition: conv/FC of sign(x)
    # with mean|W|_o * sign(W) (ReActNet, Bi-Real Net, XNOR-Net) or sign(W) (BinaryNet).
    x = torch.randn(1, 64, 9, 9)
    reactnet_conv = zoo_models("reactnet_a").feature[2].binary_3x3  # 64 -> 64, stride 2
    bireal_conv = zoo_models("bireal_net18").layer1[0].binary_conv
    xnor_conv = zoo_models("xnor_net_resnet18").layer1[0].conv1.conv
    for conv, stride in ((reactnet_conv, 2), (bireal_conv, 1), (xnor_conv, 1)):
        w = conv.weights.view(conv.shape) if hasattr(conv, "weights") else conv.weight
        alpha = w.abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        bias = getattr(conv, "bias", None)
        want = torch.nn.functional.conv2d(x, alpha * torch.sign(w), bias, stride=stride, padding=1)
        with torch.no_grad():
            got = conv(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    fc2 = zoo_models("binarynet_mlp").fc2
    h = torch.randn(3, 6144)
    with torch.no_grad():
        got = fc2(h)
    want = torch.sign(h) @ torch.sign(fc2.weight).T + fc2.bias
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_training_mode_gradients_reach_the_real_weights():
    # The STEs must pass gradients to the latent real weights (a Bi-Real-18 at a small input).
    model = build_model("bireal_net18", num_classes=5).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    grad = model.layer3[2].binary_conv.weights.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(TABLE2_OPS))
def test_ops_against_table_2(zoo_models, name):
    count = count_ops(zoo_models(name), (224, 224))
    ops, bops = count.ops / 1e8, count.bops / 1e8
    assert abs(ops / TABLE2_OPS[name] - 1) <= OPS_TOLERANCE[name], (name, ops)
    assert abs(bops / TABLE2_BOPS[name] - 1) <= BOPS_TOLERANCE[name], (name, bops)


def test_bireal18_and_mlp_counts_by_hand(zoo_models):
    # Bi-Real-18: every 3x3 conv of the four stages is binary; stem, shortcuts and FC are FP32.
    stages = [(64, 64, 56), (64, 128, 28), (128, 256, 14), (256, 512, 7)]
    bops = sum(
        cout * cin * 9 * size**2 + 3 * cout * cout * 9 * size**2 for cin, cout, size in stages
    )
    shortcuts = sum(cin * cout * size**2 for cin, cout, size in stages[1:])
    flops = 64 * 3 * 49 * 112**2 + shortcuts + 512 * 1000
    count = count_ops(zoo_models("bireal_net18"))
    assert (count.bops, count.flops) == (bops, flops)
    assert count.binary_params == sum(
        cout * cin * 9 + 3 * cout * cout * 9 for cin, cout, _ in stages
    )
    # BinaryNet MLP: fc1 has binary weights but a real input (float work), fc2/fc3 are binary.
    mlp = count_ops(zoo_models("binarynet_mlp"), (28, 28), in_channels=1)
    assert mlp.bops == 2 * 6144 * 6144
    assert mlp.flops == 784 * 6144 + 6144 * 10
    assert mlp.binary_params == 784 * 6144 + 2 * 6144 * 6144
    kinds = [layer.kind for layer in mlp.layers]
    assert kinds == ["fc", "binary_fc", "binary_fc", "fc"]


def test_every_binary_layer_is_marked(zoo_models):
    for name, kinds in (
        # A 3x3 and a 1x1 per block, and a second 1x1 in the five doubling blocks.
        ("reactnet_a", 13 + 13 + 5),
        ("bireal_net18", 16),
        ("xnor_net_resnet18", 16),
    ):
        marked = [m for m in zoo_models(name).modules() if is_binary_layer(m)]
        assert len(marked) == kinds, (name, len(marked))


def test_published_nets_take_no_qbnet_options():
    with pytest.raises(ValueError, match="do not apply"):
        build_model("reactnet_a", se="se1")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("reactnet_b")


# ---------------------------------------------------------------------------------------------
# The suite's own style models


@pytest.mark.parametrize("style", sorted(bnn_styles.STYLES))
def test_style_model_exports_to_onnx(style, tmp_path):
    model = bnn_styles.randomize(bnn_styles.STYLES[style](), seed=7)
    c, h, w = bnn_styles.input_shape(model)
    path = tmp_path / f"{style}.onnx"
    export_onnx(model, path, (h, w), in_channels=c)
    graph = onnx.load(os.fspath(path))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].name == "input" and graph.graph.output[0].name == "logits"

    # The export computes what the model computes (ONNX Runtime when it is installed).
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(8, c, h, w, generator=torch.Generator().manual_seed(1))
    (got,) = ort.InferenceSession(os.fspath(path)).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_randomize_is_seeded_and_randomizes_batchnorm1d():
    a = bnn_styles.randomize(bnn_styles.BinaryMLPStyle(), seed=3).state_dict()
    b = bnn_styles.randomize(bnn_styles.BinaryMLPStyle(), seed=3).state_dict()
    c = bnn_styles.randomize(bnn_styles.BinaryMLPStyle(), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])
    for key in ("bn1.running_mean", "bn1.running_var", "bn1.weight", "bn2.bias"):
        fresh = nn.BatchNorm1d(64).state_dict()[key.split(".", 1)[1]]
        assert not torch.equal(a[key], fresh), key
    assert (a["bn1.running_var"] > 0).all()


@pytest.mark.parametrize("style", sorted(bnn_styles.STYLES))
def test_style_models_are_not_degenerate(style):
    # Random weights must still give image-dependent, varied predictions, or a top-1
    # comparison against them would prove little.
    model = bnn_styles.randomize(bnn_styles.STYLES[style](), seed=11)
    x = torch.randn(64, *bnn_styles.input_shape(model), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        top1 = model(x).argmax(1)
    assert top1.unique().numel() >= 4, style


def test_command_line_reports_published_nets_beside_table_2():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "weights_tools.ops",
            "--json",
            "--models",
            "xnor_net_resnet18",
            "binarynet_mlp",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    xnor, mlp = json.loads(out)  # one record each: no SE variants for published networks
    assert xnor["model"] == "xnor_net_resnet18"
    assert xnor["paper"]["ops"]["paper"] == TABLE2_OPS["xnor_net_resnet18"]
    assert abs(xnor["paper"]["ops"]["diff_pct"]) <= 100 * OPS_TOLERANCE["xnor_net_resnet18"]
    assert mlp["model"] == "binarynet_mlp" and mlp["paper"] == {}
    assert (tuple(mlp["input_size"]), mlp["num_classes"]) == ((28, 28), 10)


def test_randomize_serves_the_published_nets_too():
    # The conversion tests of the zoo networks need the same random-but-plausible parameters.
    model = build_model("bireal_net18", num_classes=10)
    bnn_styles.randomize(model, seed=2)
    assert model.layer1[0].binary_conv.weights.std() > 0.1  # not the authors' 0.001 init
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert model(x).argmax(1).unique().numel() >= 4
    reactnet = bnn_styles.randomize(build_model("reactnet_a", num_classes=10), seed=2)
    assert reactnet.feature[1].move11.bias.abs().sum() > 0
