"""The PyTorch model zoo against the paper's Tables 1, 5 and 6 and SPEC §1."""

import pytest

torch = pytest.importorskip("torch", reason="the tools extra (torch) is needed for weights_tools")

from torch import nn  # noqa: E402

from weights_tools.layers import BinaryConv2d, DSHalf, SignSTE, SqueezeExcite, binary_sign  # noqa: E402
from weights_tools.zoo import (  # noqa: E402
    ABLATION_NAMES,
    MODEL_NAMES,
    KernelRule,
    build_model,
    set_training_stage,
    with_overrides,
)

# Output C x H x W of blocks 1..14 (1 = stem) at 224x224, typed from the paper's Table 1 (Small)
# and Table 5 (Large). QSB models have the same shapes as their QB twins (SPEC §1 table).
_SMALL = (
    [(16, 112, 112), (16, 112, 112), (32, 56, 56), (32, 56, 56), (128, 28, 28), (128, 28, 28)]
    + [(512, 14, 14)] * 6
    + [(2048, 7, 7)] * 2
)
_LARGE = [
    (16, 112, 112),
    (16, 112, 112),
    (32, 56, 56),
    (32, 56, 56),
    (128, 28, 28),
    (128, 28, 28),
    (512, 14, 14),
    (512, 14, 14),
] + [(2048, 7, 7)] * 6
PAPER_SHAPES = {
    "qb_net_small": _SMALL,
    "qsb_net_small": _SMALL,
    "qb_net_large": _LARGE,
    "qsb_net_large": _LARGE,
    # Table 6.
    "ablation3": [(8, 112, 112), (16, 112, 112)] + _SMALL[2:],
    "ablation6": _SMALL[:12] + [(4096, 7, 7)] * 2,
}
PAPER_BLOCK_TYPES = {
    "qb_net_small": ["N", "D", "N", "Q", "N", "Q", "N", "N", "N", "N", "N", "Q", "N"],
    "qsb_net_small": ["N", "DS", "N", "QS", "N", "QS", "N", "N", "N", "N", "N", "QS", "N"],
    "qb_net_large": ["N", "D", "N", "Q", "N", "Q", "N", "Q", "N", "N", "N", "N", "N"],
    "qsb_net_large": ["N", "DS", "N", "QS", "N", "QS", "N", "QS", "N", "N", "N", "N", "N"],
}
ALL_VARIANTS = [(name, se) for name in MODEL_NAMES for se in (None, "se1", "se2")]


def block_outputs(model, x):
    shapes = []
    with torch.no_grad():
        h = model.stem(x)
        shapes.append(tuple(h.shape[1:]))
        for block in model.blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


@pytest.mark.parametrize("name,se", ALL_VARIANTS + [("ablation3", None), ("ablation6", None)])
def test_block_shapes_at_224_match_the_paper(name, se):
    torch.manual_seed(0)
    model = build_model(name, se=se).eval()
    assert block_outputs(model, torch.randn(1, 3, 224, 224)) == PAPER_SHAPES[name]
    if name in PAPER_BLOCK_TYPES:
        assert [b.kind for b in model.blocks] == PAPER_BLOCK_TYPES[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_kernel_rule_3x3_after_narrow_ds_halves(name):
    model = build_model(name)
    for block in model.blocks:
        for stage in block.stages:
            expected = 3 if stage.ds.in_channels <= 32 else 1
            assert stage.b.conv.kernel_size == expected, (block.kind, stage.ds.in_channels)
    if name.startswith("qsb"):
        qs = model.blocks[3]  # block 5: TypeQS 32 -> 128
        assert [s.b.conv.kernel_size for s in qs.stages] == [3, 1]


def test_kernel_rule_is_configurable():
    ablation2 = build_model("ablation2")
    assert all(s.b.conv.kernel_size == 1 for b in ablation2.blocks for s in b.stages)
    ablation4 = build_model("ablation4")
    sizes = [(s.b.channels, s.b.conv.kernel_size) for b in ablation4.blocks for s in b.stages]
    assert all(k == (3 if c <= 128 else 1) for c, k in sizes)
    wide = build_model(with_overrides("qb_net_small", kernel_rule=KernelRule(max_channels=128)))
    assert wide.blocks[6].stages[0].b.conv.kernel_size == 1  # DS in 512 channels
    assert wide.blocks[5].stages[0].b.conv.kernel_size == 3  # DS in 128 channels


@pytest.mark.parametrize("name,se", ALL_VARIANTS)
def test_forward_backward_at_224(name, se):
    torch.manual_seed(1)
    model = build_model(name, se=se).train()
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    assert out.shape == (2, 1000)
    out.logsumexp(1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["stem.0.weight"].abs().sum() > 0  # gradient reaches the stem through every sign


@pytest.mark.parametrize("name", list(MODEL_NAMES) + list(ABLATION_NAMES))
@pytest.mark.parametrize("stage", [1, 2])
def test_forward_backward_at_32_with_10_classes(name, stage):
    torch.manual_seed(2)
    model = build_model(
        name, num_classes=10, stage=stage, se="se2" if name == "qsb_net_large" else None
    )
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    nn.functional.cross_entropy(out, torch.tensor([0, 3, 5, 9])).backward()
    binary_grads = [m.weight.grad for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert all(g is not None and torch.isfinite(g).all() for g in binary_grads)
    assert sum(g.abs().sum() for g in binary_grads) > 0
    assert model.eval()(x).shape == (4, 10)


@pytest.mark.parametrize("size", [(64, 64), (40, 56), (50, 50), (33, 31)])
def test_other_input_sizes(size):
    model = build_model("qsb_net_small", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 7)


def test_sign_forward_zero_is_plus_one():
    x = torch.tensor(
        [-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0, float("nan"), float("inf"), float("-inf")]
    )
    expected = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    assert torch.equal(binary_sign(x), expected)
    assert torch.equal(SignSTE.apply(x.clone().requires_grad_()), expected)


def test_sign_ste_passes_gradient_only_where_abs_at_most_one():
    x = torch.tensor([-3.0, -1.0001, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 3.0], requires_grad=True)
    upstream = torch.arange(1.0, 10.0)
    binary_sign(x).backward(upstream)
    inside = x.detach().abs() <= 1
    assert torch.equal(x.grad, torch.where(inside, upstream, torch.zeros(())))
    assert x.grad[3] == 4.0 and x.grad[0] == 0.0


def test_weight_ste_in_stage_2_and_float_weights_in_stage_1():
    conv = BinaryConv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.5, -2.0, 0.0], [1.5, -0.25, 1.0]]).view(2, 3, 1, 1))
    z = torch.ones(1, 3, 1, 1)
    out = conv(z)
    assert out.flatten().tolist() == [
        1.0 - 1.0 + 1.0,
        1.0 - 1.0 + 1.0,
    ]  # sign(0) = +1 for weights too
    out.sum().backward()
    grad = conv.weight.grad.view(2, 3)
    assert grad.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]  # zero where |w| > 1

    set_training_stage(conv, 1)
    conv.weight.grad = None
    out = conv(z)
    assert torch.allclose(out.flatten(), torch.tensor([-1.5, 2.25]))
    out.sum().backward()
    assert torch.equal(
        conv.weight.grad.view(2, 3), torch.ones(2, 3)
    )  # no clipping on float weights


def test_stage_switch_covers_every_binary_conv():
    model = build_model("qsb_net_small", num_classes=10, stage=1)
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert convs and not any(c.binary_weights for c in convs)
    set_training_stage(model, 2)
    assert all(c.binary_weights for c in convs)
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        set_training_stage(model, 3)


def test_zero_and_one_padding_of_binary_activations():
    torch.manual_seed(3)
    conv0 = BinaryConv2d(5, 4, 3, padding="zero")
    conv1 = BinaryConv2d(5, 4, 3, padding="one")
    conv1.load_state_dict(conv0.state_dict())
    z = binary_sign(torch.randn(2, 5, 6, 7))
    w = binary_sign(conv0.weight.detach())
    with torch.no_grad():
        out0, out1 = conv0(z), conv1(z)
    # Build the reference by hand: pad the ±1 map with the padding value, then a valid conv.
    ref0 = nn.functional.conv2d(nn.functional.pad(z, (1, 1, 1, 1), value=0.0), w) * conv0.alpha
    ref1 = nn.functional.conv2d(nn.functional.pad(z, (1, 1, 1, 1), value=1.0), w) * conv0.alpha
    assert torch.equal(out0, ref0) and torch.equal(out1, ref1)
    assert torch.equal(out0[..., 1:-1, 1:-1], out1[..., 1:-1, 1:-1])  # interiors agree
    assert not torch.equal(out0, out1)  # borders differ
    # Integer dots: every output of a ±1 conv with alpha = 1 is an integer of the parity of K.
    assert torch.equal(out1, out1.round()) and ((out1 + 45) % 2 == 0).all()


def test_model_padding_option_reaches_every_3x3():
    model = build_model("qb_net_small", padding="one")
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.kernel_size == 3]
    assert len(convs) == 4 and all(c.padding == "one" for c in convs)


def test_ds_half_concat_and_shortcut_order():
    torch.manual_seed(4)
    half = DSHalf(3, (2, 2), multiplier=4).eval()
    with torch.no_grad():
        for j, conv in enumerate(half.dw):
            conv.weight.zero_()
            conv.weight[:, 0, 1, 1] = j + 1.0  # conv j multiplies by j + 1 (centre tap)
        half.act.prelu.weight.fill_(1.0)  # identity PReLU; BNs at their init are ~identity
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        v = torch.cat([conv(x) for conv in half.dw], 1)
        out = half(x)
    pooled = nn.functional.avg_pool2d(x, 2)
    eps = half.bn.eps
    scale = (1 + eps) ** -0.5
    for j in range(4):
        block = slice(3 * j, 3 * j + 3)
        assert torch.allclose(v[:, block], (j + 1) * x[:, :, ::2, ::2])
        expected = ((j + 1) * x[:, :, ::2, ::2] * scale + pooled) * scale
        assert torch.allclose(out[:, block], expected, atol=1e-5)


@pytest.mark.parametrize(
    "stride,shape", [((2, 1), (4, 7)), ((1, 2), (7, 4)), ((2, 2), (4, 4)), ((1, 1), (7, 7))]
)
def test_ds_half_strides(stride, shape):
    half = DSHalf(6, stride, multiplier=2)
    assert half(torch.randn(2, 6, 7, 7)).shape == (2, 12) + shape


def test_se_placement():
    se1 = build_model("qsb_net_large", se="se1")
    se2 = build_model("qsb_net_large", se="se2")
    for block in se1.blocks:
        downsamples = any(s.ds.stride != (1, 1) for s in block.stages)
        assert all((s.ds.se is not None) == downsamples for s in block.stages), block.kind
    assert all(s.ds.se is not None for b in se2.blocks for s in b.stages)
    assert all(s.ds.se is None for b in build_model("qsb_net_large").blocks for s in b.stages)
    se = se2.blocks[-1].stages[0].ds.se
    assert isinstance(se, SqueezeExcite) and se.reduce.out_channels == 2048 // 8


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'qb_net_medium'"):
        build_model("qb_net_medium")
    with pytest.raises(ValueError, match="se must be one of"):
        build_model("qb_net_small", se="se3")
    with pytest.raises(ValueError, match="padding must be one of"):
        build_model("qb_net_small", padding="reflect")
    with pytest.raises(ValueError, match="unknown block type"):
        build_model(with_overrides("qb_net_small", blocks=("N", "X")))
