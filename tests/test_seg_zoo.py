"""DeepLabv3+ on the zoo backbones (weights_tools.seg_zoo): shapes, dilation placement, export."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from conftest import randomise_segmenter
from torch import nn

from weights_tools import zoo
from weights_tools.layers import BinaryConv2d, DSHalf
from weights_tools.seg_zoo import SeparableConv, build_segmenter
from weights_tools.zoo import ARCHS, MODEL_NAMES

HEADS = ("binary", "fp32")


def _ceil_halvings(size: int, n: int) -> int:
    for _ in range(n):
        size = math.ceil(size / 2)
    return size


def test_reexported_from_zoo():
    assert zoo.build_segmenter is build_segmenter
    assert "build_segmenter" in zoo.__all__


@pytest.mark.parametrize("size", [129, 513])
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", MODEL_NAMES)
def test_shapes(backbone, head, output_stride, size):
    # The meta device propagates shapes without computing: the full-size models at 513x513 would
    # take minutes each on a CPU. Numerical runs are in the tests below, on reduced backbones.
    with torch.device("meta"):
        model = build_segmenter(
            "deeplabv3plus",
            backbone=backbone,
            num_classes=21,
            output_stride=output_stride,
            se=None,
            head=head,
        ).eval()
        x = torch.empty(1, 3, size, size)
        low, high = model.backbone(x)
        out = model(x)
    assert tuple(out.shape) == (1, 21, size, size)
    # The stem and every downsampling conv are 3x3, stride 2, padding 1: ceil(size / 2) each.
    assert tuple(low.shape[-2:]) == (_ceil_halvings(size, 2),) * 2
    assert low.shape[1] == 32  # block 4 of every zoo model
    assert tuple(high.shape[-2:]) == (_ceil_halvings(size, int(math.log2(output_stride))),) * 2
    assert high.shape[1] == 2048


def _expected_dilations(arch_name: str, output_stride: int):
    """Per block: (replaced?, dilation) from the architecture table, written independently of
    seg_zoo: the last log2(32 / OS) downsampling blocks run at stride 1, each keeps the dilation
    before it and doubles it for every block after it."""
    names = ARCHS[arch_name].blocks
    down = [i for i, b in enumerate(names) if b in ("D", "Q", "DS", "QS")]
    n_replaced = int(math.log2(32 // output_stride))
    replaced = set(down[len(down) - n_replaced :])
    out, dilation = [], 1
    for i in range(len(names)):
        out.append((i in replaced, dilation))
        if i in replaced:
            dilation *= 2
    return out


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("backbone", MODEL_NAMES)
def test_dilation_placement(backbone, output_stride):
    with torch.device("meta"):
        model = build_segmenter(backbone=backbone, output_stride=output_stride, head="fp32")
    expected = _expected_dilations(backbone, output_stride)
    original = zoo.BinaryNet(ARCHS[backbone], num_classes=1)
    assert len(model.backbone.blocks) == len(expected)
    for i, (block, orig_block, (replaced, dilation)) in enumerate(
        zip(model.backbone.blocks, original.blocks, expected)
    ):
        for stage, orig_stage in zip(block.stages, orig_block.stages):
            want_stride = (1, 1) if replaced else orig_stage.ds.stride
            assert stage.ds.stride == want_stride, f"block {i + 2}"
            for conv in stage.ds.dw:
                assert conv.stride == want_stride, f"block {i + 2}"
                assert conv.dilation == (dilation, dilation), f"block {i + 2}"
                assert conv.padding == (dilation, dilation), f"block {i + 2}"
            assert stage.b.conv.kernel_size == orig_stage.b.conv.kernel_size
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    separable = [b for b in model.aspp.branches if isinstance(b, SeparableConv)]
    assert [s.depthwise[0].dilation for s in separable] == [(r, r) for r in rates]
    assert [s.depthwise[0].padding for s in separable] == [(r, r) for r in rates]


def test_binary_head_is_built_from_ds_and_b_halves():
    with torch.device("meta"):
        model = build_segmenter(backbone="qsb_net_small", head="binary")
    separable = [b for b in model.aspp.branches if isinstance(b, SeparableConv)]
    for s, rate in zip(separable, (6, 12, 18)):
        assert isinstance(s.depthwise, DSHalf)
        assert s.depthwise.dw[0].dilation == (rate, rate)
        assert isinstance(s.pointwise.conv, BinaryConv2d)
    head_binary = [m for m in model.aspp.modules() if isinstance(m, BinaryConv2d)]
    head_binary += [m for m in model.decoder.modules() if isinstance(m, BinaryConv2d)]
    # ASPP: 1x1 branch, 3 separable pointwise, projection; decoder: low-level, 2 separable.
    assert len(head_binary) == 8
    assert all(m.binary_weights for m in head_binary)
    # What stays FP32: image pooling conv and the classifier.
    assert type(model.aspp.branches[-1].conv) is nn.Conv2d
    assert type(model.decoder.classifier) is nn.Conv2d and model.decoder.classifier.bias is not None
    with torch.device("meta"):
        fp32 = build_segmenter(backbone="qsb_net_small", head="fp32")
    assert not [m for m in fp32.aspp.modules() if isinstance(m, BinaryConv2d)]
    assert not [m for m in fp32.decoder.modules() if isinstance(m, BinaryConv2d)]


def test_training_stage():
    with torch.device("meta"):
        model = build_segmenter(backbone="qb_net_small", stage=1)
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert convs and not any(m.binary_weights for m in convs)
    zoo.set_training_stage(model, 2)
    assert all(m.binary_weights for m in convs)


def test_errors():
    with pytest.raises(ValueError, match="unknown segmenter"):
        build_segmenter("pspnet")
    with pytest.raises(ValueError, match="head"):
        build_segmenter(head="int8")
    with pytest.raises(ValueError, match="output_stride"):
        build_segmenter(output_stride=4)
    with pytest.raises(ValueError, match="unknown model"):
        build_segmenter(backbone="resnet50")
    # A backbone whose dilated block would need a dilated binary 3x3 conv.
    # Stem 1 channel, four doublings to 16: the N after the last D has 16 channels (3x3 binary).
    narrow = zoo.with_overrides(
        "qb_net_small", stem_channels=1, blocks=("N", "D", "N", "D", "D", "D", "N")
    )
    with pytest.raises(ValueError, match="3x3 binary conv"):
        build_segmenter(backbone=narrow, output_stride=16)
    # Too few downsampling blocks for the requested stride: stem + one D = stride 4.
    shallow = zoo.with_overrides("qb_net_small", blocks=("N", "D", "N"))
    with pytest.raises(ValueError, match="output stride 8"):
        build_segmenter(backbone=shallow, output_stride=8)


SMALL = zoo.with_overrides(
    "qsb_net_small", stem_channels=4, blocks=("N", "DS", "N", "QS", "N", "QS", "N", "QS", "N")
)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("head", HEADS)
def test_onnx_export_matches_pytorch(tmp_path, head, output_stride):
    import onnx
    import onnxruntime as ort

    from weights_tools.convert import export_onnx

    torch.manual_seed(0)
    model = build_segmenter(
        backbone=SMALL,
        num_classes=11,
        output_stride=output_stride,
        head=head,
        aspp_channels=32,
        low_level_channels=16,
        decoder_channels=32,
    )
    randomise_segmenter(model, 1, mean_scale=0.1, bias_scale=0.1)
    path = os.fspath(tmp_path / "seg.onnx")
    export_onnx(model, path, input_size=(96, 96))
    graph = onnx.load(path).graph
    ops = {n.op_type for n in graph.node}
    assert "Resize" in ops and "GlobalAveragePool" in ops
    dilations = set()
    for node in graph.node:
        if node.op_type == "Conv":
            for a in node.attribute:
                if a.name == "dilations":
                    dilations.add(tuple(a.ints))
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    assert {(r, r) for r in rates} | {(2, 2)} <= dilations
    x = np.random.default_rng(2).standard_normal((5, 3, 96, 96)).astype(np.float32)
    # Graph optimizations off: ORT's Conv+Mul+BN fusion rounds differently. Even unfused, its
    # convs sum in another order than PyTorch's, so a sign input within rounding distance of 0
    # may flip (SPEC §6) and change one image's logits: hence the median image and the pixel
    # agreement, as in the classification tests.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    got = ort.InferenceSession(path, options).run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 11, 96, 96)
    rel = [np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(got, want)]
    assert np.median(rel) < 1e-4, rel
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99


def test_full_size_forward_and_backward():
    # One full backbone computed for real (the shape test uses the meta device): finite logits
    # and gradients through the STE signs to the stem.
    torch.manual_seed(0)
    model = build_segmenter(backbone="qsb_net_large", num_classes=5, head="binary", stage=1)
    model.train()
    x = torch.randn(2, 3, 65, 65)
    y = torch.randint(0, 5, (2, 65, 65))
    y[:, :3] = 255
    out = model(x)
    assert out.shape == (2, 5, 65, 65) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y, ignore_index=255).backward()
    assert model.backbone.stem[0].weight.grad is not None
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
