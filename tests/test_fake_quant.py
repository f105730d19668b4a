"""INT8 quantization-aware training (weights_tools.fake_quant): the fake-quant forward is the
engine's INT8 depthwise and INT8 / bitplane8 FC arithmetic, the converter stores the trained
scales, and the shipped INT8 digits model keeps the FP32 model's accuracy in the engine.

The layers are random, with values placed where the arithmetic decides: depthwise inputs and
weights exactly at rounding midpoints (n + 1/2 times the scale: half to even), at the clamp
(±127.5, ±128 and far beyond) and bitplane8 weights at the midpoints of their code B. Scales are
powers of two in the bit-exact tests so that these values are exact floats; a random-scale test
checks the integer parts exactly and the floats to a few ulp. Each test prints its seed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import qbinfer
from weights_tools.convert import fc_bitplane8, fc_int8, to_qbw
from weights_tools.fake_quant import (
    FakeQuantDepthwiseConv2d,
    FakeQuantLinear,
    InputQuantizer,
    calibrate,
    quantize_model,
)
from weights_tools.qbw import DType, OpType, read_qbw, unpack_signs
from weights_tools.reference import quantize_dw_input, run_reference

ISAS = qbinfer._core.supported_isas()
MODELS = os.path.join(os.path.dirname(qbinfer.__file__), "models")


def run_engine(path, x_nchw, isa):
    """The engine's output for an NCHW batch: NHWC for a map, N x C for a vector."""
    model = qbinfer._core.Model(os.fspath(path), 1, isa)
    return model.run(np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), "nhwc")


class DepthwiseOnly(nn.Module):
    """u = x + beta; k depthwise 3x3 convs of u, concatenated (the zoo's DS half without its BN,
    so that the engine's epilogue is `* 1 + 0` and its output is the INT8 arithmetic alone)."""

    def __init__(self, channels, stride, k):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.dw = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
            for _ in range(k)
        )

    def forward(self, x):
        u = x + self.beta
        return torch.cat([conv(u) for conv in self.dw], dim=1)


def midpoint_weights(rng, rows, taps, scale_exp, levels=127, bitplane=False):
    """[rows, taps] float32 weights whose row scale max|w| / levels is 2^scale_exp[row], with
    many values exactly at a rounding midpoint of their code (and one at ±levels)."""
    w = np.empty((rows, taps), np.float64)
    for r in range(rows):
        step = 2.0 ** scale_exp[r]
        if bitplane:  # B's midpoints: w / step = 2B - 254 + ... even integers
            n = 2 * rng.integers(-127, 128, taps)
        else:
            n = rng.integers(-levels, levels, taps) + 0.5
        random_part = rng.uniform(-levels, levels, taps)
        n = np.where(rng.random(taps) < 0.6, n, random_part)
        n[rng.integers(taps)] = levels * rng.choice([-1, 1])  # the row's max, exactly ±levels
        w[r] = n * step
    return w.astype(np.float32)


def midpoint_inputs(rng, shape, s, beta):
    """x (float32) with u = x + beta at rounding midpoints, integers, the clamp and beyond, in
    units of the input scale s (a power of two: all exact)."""
    kind = rng.integers(0, 4, shape)
    n = np.select(
        [kind == 0, kind == 1, kind == 2],
        [
            rng.integers(-130, 130, shape) + 0.5,  # midpoints, some past the clamp
            rng.choice([-128.0, -127.5, 127.5, 128.0, -300.0, 300.0, 127.0, -127.0], shape),
            rng.integers(-127, 128, shape).astype(np.float64),
        ],
        rng.uniform(-140, 140, shape).round(3),
    )
    planned = (n * s).astype(np.float32)
    x = (planned - beta).astype(np.float32)
    u = (x + beta).astype(np.float32)  # what the engine's pre_bias add gives
    exact = kind < 3  # multiples of s/2 and beta: both adds are exact there
    assert np.array_equal(u[exact], planned[exact])
    assert np.any(u / np.float32(s) == np.round(u / np.float32(s)) + 0.5)  # midpoints present
    return x, u


DW_CASES = [  # (seed, channels, height, width, stride, multiplier)
    (0, 8, 7, 9, (1, 1), 1),
    (1, 16, 8, 8, (2, 2), 2),
    (2, 5, 6, 11, (2, 1), 1),
    (3, 12, 9, 5, (1, 2), 3),
    (4, 3, 1, 1, (1, 1), 2),
]


@pytest.mark.parametrize("seed,channels,height,width,stride,k", DW_CASES)
def test_depthwise_fake_quant_is_the_engine_bit_for_bit(
    tmp_path, seed, channels, height, width, stride, k
):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = DepthwiseOnly(channels, stride, k)
    s = 2.0 ** int(rng.integers(-8, -2))
    beta = (rng.integers(-6, 7, channels) * s / 2).astype(np.float32)
    with torch.no_grad():
        model.beta.copy_(torch.from_numpy(beta).view(1, -1, 1, 1))
        for conv in model.dw:
            exps = rng.integers(-14, -4, channels)
            conv.weight.copy_(
                torch.from_numpy(midpoint_weights(rng, channels, 9, exps)).view(-1, 1, 3, 3)
            )
    raw = [conv.weight.detach().numpy().reshape(channels, 9).copy() for conv in model.dw]
    quantize_model(model, dw=True, fc=None, input_scale="calibrated")
    quant = model.dw[0].input_quant
    assert all(conv.input_quant is quant for conv in model.dw)  # one scale per engine op
    with torch.no_grad():
        quant.scale.fill_(s)
        quant.initialized.fill_(True)
    model.eval()

    # the weight codes are the converter's post-training codes of the same weights (midpoints:
    # half to even in both), and its input codes are the reference interpreter's
    x, u = midpoint_inputs(rng, (3, channels, height, width), s, beta.reshape(1, -1, 1, 1))
    for conv, w in zip(model.dw, raw):
        q, ws = fc_int8(w)
        np.testing.assert_array_equal(conv.weight_codes().numpy().reshape(channels, 9), q)
        np.testing.assert_array_equal(conv.weight_scale().numpy(), ws)
    qu, s_used = quant(torch.from_numpy(u))
    _, ref_qu = quantize_dw_input(u.transpose(0, 2, 3, 1), s)
    np.testing.assert_array_equal(qu.numpy().transpose(0, 2, 3, 1), ref_qu)
    assert float(s_used) == s

    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    path = tmp_path / "dw.qbw"
    report = to_qbw(model, path, input_size=(height, width), in_channels=channels, depthwise="int8")
    graph = read_qbw(path)
    (op,) = [o for o in graph.ops if o.type == OpType.DWCONV3X3]
    assert [o.type for o in graph.ops] == [OpType.DWCONV3X3], report
    # the stored codes are the trained ones, block j = conv j, and the stored scale is s
    stored = graph.tensors[op.tensors[1]]
    assert stored.dtype == DType.I8
    codes = np.concatenate([conv.weight_codes().numpy().reshape(channels, 9) for conv in model.dw])
    np.testing.assert_array_equal(stored.data, codes)
    assert float(graph.tensors[op.tensors[5]].data[0]) == s
    assert json.loads(graph.metadata_json)["depthwise_input_scale"] == "trained"

    want_nhwc = want.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(run_reference(graph, x).reshape(want.shape), want)
    combined = np.float32(s) * np.concatenate([c.weight_scale().numpy() for c in model.dw])
    for isa in ISAS:
        got = run_engine(path, x, isa).reshape(want_nhwc.shape)
        # integer parts: s and every weight scale are powers of two, so out / (s * ws) is the
        # engine's int32 accumulator, exactly
        acc_engine = got / combined
        acc_torch = want_nhwc / combined
        assert np.array_equal(acc_engine, np.round(acc_engine)), isa
        np.testing.assert_array_equal(acc_engine, acc_torch, err_msg=f"{isa} seed {seed}")
        np.testing.assert_array_equal(got.view(np.uint32), want_nhwc.view(np.uint32), err_msg=isa)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_depthwise_random_scales_integer_parts_exact(tmp_path, seed):
    """Random (not power-of-two) weights and input scale: the stored codes are the trained codes
    exactly, the input codes the reference's, and the outputs within a few f32 ulp (the
    converter re-derives the weight scale from weight_scale * q, which may differ in its last
    bit)."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    channels, k = 10, 2
    model = DepthwiseOnly(channels, (1, 1), k)
    with torch.no_grad():
        model.beta.normal_(0, 0.3)
        for conv in model.dw:
            conv.weight.normal_(0, 0.5)
    quantize_model(model, dw=True, input_scale="learned")
    x = torch.from_numpy(rng.standard_normal((4, channels, 6, 7)).astype(np.float32))
    calibrate(model, [x])
    with torch.no_grad():
        model.dw[0].input_quant.scale.mul_(0.73)  # a trained scale: some inputs now clamp
        want = model(x).numpy().transpose(0, 2, 3, 1)
    path = tmp_path / "dw.qbw"
    to_qbw(model, path, input_size=(6, 7), in_channels=channels, depthwise="int8")
    graph = read_qbw(path)
    (op,) = graph.ops
    codes = np.concatenate([conv.weight_codes().numpy().reshape(channels, 9) for conv in model.dw])
    np.testing.assert_array_equal(graph.tensors[op.tensors[1]].data, codes)
    s = float(model.dw[0].input_quant.scale.detach())
    assert float(graph.tensors[op.tensors[5]].data[0]) == np.float32(s)
    u = (x.numpy() + model.beta.detach().numpy()).astype(np.float32)
    with torch.no_grad():
        qu, _ = model.dw[0].input_quant(torch.from_numpy(u))
    assert np.abs(qu.numpy()).max() == 127  # the clamp is reached
    np.testing.assert_array_equal(
        qu.numpy().transpose(0, 2, 3, 1), quantize_dw_input(u.transpose(0, 2, 3, 1), s)[1]
    )
    for isa in ISAS:
        got = run_engine(path, x.numpy(), isa).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=isa)


@pytest.mark.parametrize("encoding", ["int8", "bitplane8"])
@pytest.mark.parametrize("seed,in_features,out_features", [(20, 37, 5), (21, 300, 17), (22, 64, 1)])
def test_fc_fake_quant_is_the_engine(tmp_path, encoding, seed, in_features, out_features):
    """The FC: codes equal the converter's (midpoints included), the output equals the reference
    kernel's (float64 dot, one f32 rounding, then scale and bias) bit for bit, and every engine
    variant within fc.h's bound of it."""
    print(f"seed {seed} {encoding}")
    rng = np.random.default_rng(seed)
    levels = 127 if encoding == "int8" else 255
    exps = rng.integers(-12, -4, out_features)
    w = midpoint_weights(rng, out_features, in_features, exps, levels, encoding == "bitplane8")
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.normal_(0, 0.1)
    model = nn.Sequential(nn.Flatten(), linear)
    quantize_model(model, dw=False, fc=encoding)
    fq = model[1]
    assert isinstance(fq, FakeQuantLinear)
    if encoding == "int8":
        q, ws = fc_int8(w)
        want_codes = q.astype(np.float64)
    else:
        _, ws, b = fc_bitplane8(w)
        want_codes = 2.0 * b - 255
    np.testing.assert_array_equal(fq.weight_codes().numpy(), want_codes)
    np.testing.assert_array_equal(fq.weight_scale().numpy(), ws)

    x = rng.standard_normal((6, in_features, 1, 1)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    path = tmp_path / "fc.qbw"
    to_qbw(model, path, input_size=(1, 1), in_channels=in_features, fc=encoding)
    graph = read_qbw(path)
    (op,) = graph.ops
    stored = graph.tensors[op.tensors[0]]
    if encoding == "int8":
        np.testing.assert_array_equal(stored.data, want_codes)
    else:
        planes = unpack_signs(stored.data, in_features, dtype=np.float64)
        np.testing.assert_array_equal(sum(2.0**i * planes[i] for i in range(8)), want_codes)
    np.testing.assert_array_equal(run_reference(graph, x).reshape(want.shape), want)
    bound = 1e-5 * (
        np.abs(ws)[None] * (np.abs(x.reshape(6, -1)) @ np.abs(want_codes).T)
        + np.abs(linear.bias.detach().numpy())[None]
    )
    for isa in ISAS:
        got = run_engine(path, x, isa).reshape(want.shape)
        assert np.all(np.abs(got - want) <= bound + 1e-30), isa


def test_fake_quant_gradients_are_straight_through():
    """Gradients reach the weights, the input and the learned scale; none past the clamp."""
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False)
    fq = FakeQuantDepthwiseConv2d(conv, InputQuantizer("learned"))
    x = torch.randn(2, 4, 5, 5) * 3
    fq.train()
    fq(x)  # starts the scale from this batch's max|u|
    with torch.no_grad():
        fq.input_quant.scale.mul_(0.5)  # half the inputs beyond the clamp now
    x.requires_grad_(True)
    fq(x).sum().backward()
    s = float(fq.input_quant.scale.detach())
    outside = (x.detach().abs() / s) > 127
    assert outside.any() and (~outside).any()
    assert torch.all(x.grad[outside] == 0)
    assert torch.count_nonzero(x.grad[~outside]) > 0
    assert conv.weight.grad is not None and torch.count_nonzero(conv.weight.grad) > 0
    assert fq.input_quant.scale.grad is not None and float(fq.input_quant.scale.grad) != 0


def test_trained_scales_conversion_of_a_zoo_model(tmp_path):
    """A zoo model with INT8 DS convs and FC: the .qbw holds each trained input scale (not a
    calibrated one) on the op of its convs, and the engine follows PyTorch's fake-quant."""
    from weights_tools.convert import randomize_bn
    from weights_tools.zoo import build_model

    torch.manual_seed(3)
    model = build_model("qb_net_small", num_classes=10)
    randomize_bn(model, 3, (32, 32))
    quantize_model(model, dw=True, fc="int8", input_scale="learned")
    x = torch.randn(8, 3, 32, 32)
    calibrate(model, [x])
    trained = {}
    with torch.no_grad():
        for i, (path, m) in enumerate(model.named_modules()):
            if isinstance(m, FakeQuantDepthwiseConv2d) and path.endswith("dw.0"):
                m.input_quant.scale.mul_(0.8 + 0.05 * (i % 5))  # "trained" away from calibration
                trained[path.rsplit(".dw.", 1)[0]] = float(m.input_quant.scale.detach())
    out = tmp_path / "m.qbw"
    with pytest.raises(ValueError, match="trained as int8"):
        to_qbw(model, out, input_size=(32, 32), fc="bitplane8", depthwise="int8")
    to_qbw(model, out, input_size=(32, 32), fc="int8", depthwise="int8")
    graph = read_qbw(out)
    sources = json.loads(graph.metadata_json)["op_sources"]
    dw_ops = [(i, op) for i, op in enumerate(graph.ops) if op.type == OpType.DWCONV3X3]
    assert len(dw_ops) == len(trained) > 0
    for i, op in dw_ops:
        module = sources[i]["modules"][0]
        assert float(graph.tensors[op.tensors[5]].data[0]) == np.float32(
            trained[module.rsplit(".dw.", 1)[0]]
        ), module
    (fc_op,) = [op for op in graph.ops if op.type == OpType.FC]
    np.testing.assert_array_equal(
        graph.tensors[fc_op.tensors[0]].data, model.fc.weight_codes().numpy()
    )
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    got = qbinfer.load(str(out)).run(x.numpy())
    rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    # random BNNs are chaotic (a sign or an input code at a near tie may flip): most images
    # agree to float rounding
    assert np.median(rel) < 1e-4, rel


def shipped_record(name):
    with open(os.path.join(MODELS, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def test_shipped_int8_digits_model_keeps_the_fp32_accuracy():
    """The INT8 digits model (trained INT8 depthwise and FC): engine accuracy on the held-out
    set within 0.3 points of the FP32 model's, and within 0.5 of PyTorch's fake-quant model."""
    from weights_tools.export import eval_inputs, load_compact_model, torch_logits

    fp32 = shipped_record("digits_qbnet")
    int8 = shipped_record("digits_qbnet_int8")
    model = qbinfer.load(os.path.join(MODELS, int8["model"]))
    graph = read_qbw(os.path.join(MODELS, int8["model"]))
    dw = [op for op in graph.ops if op.type == OpType.DWCONV3X3]
    assert dw and all(graph.tensors[op.tensors[1]].dtype == DType.I8 for op in dw)
    assert all(float(graph.tensors[op.tensors[5]].data[0]) > 0 for op in dw)  # not dynamic
    assert json.loads(graph.metadata_json)["depthwise_input_scale"] == "trained"
    with np.load(os.path.join(MODELS, fp32["holdout"])) as z:
        images, labels = z["images"], z["labels"]
    torch_model = load_compact_model(os.path.join(MODELS, int8["weights"]))
    x = eval_inputs(images, torch_model.meta["data"])
    acc_engine = 100.0 * float(np.mean(model.run(x).argmax(1) == labels))
    acc_torch = 100.0 * float(np.mean(torch_logits(torch_model, x).argmax(1) == labels))
    fp32_engine = 100.0 * float(
        np.mean(qbinfer.load(os.path.join(MODELS, fp32["model"])).run(x).argmax(1) == labels)
    )
    print(
        f"FP32 engine {fp32_engine:.2f}%, INT8 engine {acc_engine:.2f}%, INT8 torch {acc_torch:.2f}%"
    )
    assert abs(acc_engine - fp32_engine) <= 0.3
    assert abs(acc_engine - acc_torch) <= 0.5
    assert os.path.getsize(os.path.join(MODELS, int8["model"])) < os.path.getsize(
        os.path.join(MODELS, fp32["model"])
    )


# ---------------------------------------------------------------------------------------------
# Training and conversion commands


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_int8_training_stages_resume_and_convert(tmp_path):
    """--int8-dw trains stage 1 with INT8 depthwise convs (scales in the checkpoint); --stage
    int8 fine-tunes an FP32 stage-2 model (lr 1e-4, calibrated first) and resumes bit for bit;
    its model converts with the trained scales."""
    from test_train import TINY, _write_folder

    from weights_tools import train as T
    from weights_tools.export import main as export_main

    data = tmp_path / "data"
    _write_folder(data / "train", 8, seed=1)
    _write_folder(data / "val", 4, seed=2)

    def run(out, *extra):
        return T.train([*TINY, "--data", str(data), "--out", str(tmp_path / out), *extra])

    small = ["--batch-size", "8", "--seed", "3"]  # 4 steps per epoch
    r1 = run("s1q", "--stage", "1", "--epochs", "1", "--int8-dw", *small)
    assert r1["meta"]["int8"] == {"dw": True, "fc": None, "input_scale": "learned"}
    s1q = _state(tmp_path / "s1q" / "model.pth")["model"]
    scales = [k for k in s1q if k.endswith("input_quant.scale")]
    assert scales and all(bool(s1q[k.replace(".scale", ".initialized")]) for k in scales)

    run("s1", "--stage", "1", "--epochs", "1", *small)
    run("s2", "--stage", "2", "--epochs", "1", "--init", str(tmp_path / "s1" / "model.pth"), *small)
    fine = [
        "--stage",
        "int8",
        "--epochs",
        "2",
        "--int8-fc",
        "bitplane8",
        "--int8-calibration-images",
        "16",
        "--init",
        str(tmp_path / "s2" / "model.pth"),
        *small,
    ]
    straight = run("q", *fine, "--max-steps", "6")
    assert straight["meta"]["int8"]["fc"] == "bitplane8" and straight["meta"]["stage"] == 2
    log = (tmp_path / "q" / "train.log").read_text()
    assert "Adam lr 0.0001" in log and "calibrated" in log
    run("q_split", *fine, "--max-steps", "3")
    run("q_split", *fine, "--max-steps", "6", "--resume", "auto")
    a = _state(tmp_path / "q" / "checkpoint.pth")
    b = _state(tmp_path / "q_split" / "checkpoint.pth")
    assert a["model"].keys() == b["model"].keys()
    assert any(".input_quant." in k for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k

    # the export converts with the trained encodings and scales
    run("q_done", *fine)
    assert (
        export_main(
            [
                str(tmp_path / "q_done" / "model.pth"),
                "--out-dir",
                str(tmp_path / "ship"),
                "--name",
                "m",
            ]
        )
        == 0
    )
    graph = read_qbw(tmp_path / "ship" / "m.qbw")
    meta = json.loads(graph.metadata_json)
    assert (meta["fc"], meta["depthwise"], meta["depthwise_input_scale"]) == (
        "bitplane8",
        "int8",
        "trained",
    )
    saved = _state(tmp_path / "q_done" / "model.pth")["model"]
    want = sorted(
        float(np.float32(saved[k])) for k in saved if k.endswith("dw.0.input_quant.scale")
    )
    got = sorted(
        float(graph.tensors[op.tensors[5]].data[0])
        for op in graph.ops
        if op.type == OpType.DWCONV3X3
    )
    assert got == want


def test_convert_command_reads_trained_scales(tmp_path):
    """`python -m weights_tools.convert CKPT --arch ... --depthwise int8 --int8-scales trained`
    stores the checkpoint's input scales; without --int8-scales the same weights calibrate or run
    dynamic, and the fake-quant keys do not fit the plain model."""
    from weights_tools.convert import main as convert_main
    from weights_tools.zoo import build_model

    torch.manual_seed(7)
    model = build_model("qb_net_small", num_classes=4)
    quantize_model(model, dw=True, fc="int8", input_scale="running-max")
    calibrate(model, [torch.randn(4, 3, 32, 32)])
    ckpt = tmp_path / "ck.pth"
    meta = {"int8": {"dw": True, "fc": "int8", "input_scale": "running-max"}}
    torch.save({"model": model.state_dict(), "meta": meta}, ckpt)
    out = tmp_path / "m.qbw"
    args = [str(ckpt), "--arch", "qb_net_small", "--num-classes", "4", "--input-size", "32", "32"]
    assert (
        convert_main(
            [
                *args,
                "--depthwise",
                "int8",
                "--fc",
                "int8",
                "--int8-scales",
                "trained",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    graph = read_qbw(out)
    got = sorted(
        float(graph.tensors[op.tensors[5]].data[0])
        for op in graph.ops
        if op.type == OpType.DWCONV3X3
    )
    want = sorted(
        float(np.float32(m.input_quant.scale.detach()))
        for p, m in model.named_modules()
        if isinstance(m, FakeQuantDepthwiseConv2d) and p.endswith("dw.0")
    )
    assert got == want
    (fc,) = [op for op in graph.ops if op.type == OpType.FC]
    np.testing.assert_array_equal(
        graph.tensors[fc.tensors[0]].data, model.fc.weight_codes().numpy()
    )
    assert convert_main([*args, "--depthwise", "int8", "-o", str(tmp_path / "plain.qbw")]) == 1


def test_demo_reports_the_int8_model(tmp_path):
    """`qbinfer demo --model .../digits_qbnet_int8.qbw` runs it on the held-out set and measures
    PyTorch's fake-quant model beside it; `--image` keeps the one-image run."""
    from conftest import run_qbinfer_main

    path = os.path.join(MODELS, "digits_qbnet_int8.qbw")
    out = run_qbinfer_main("demo", "--json", "--runs", "1", "--model", path)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["qbw"] == path and rec["images"] == 450
    assert rec["accuracy_torch_source"] == "measured"
    assert abs(rec["accuracy_engine"] - shipped_record("digits_qbnet")["accuracy_engine"]) <= 0.3
    assert abs(rec["accuracy_engine"] - rec["accuracy_torch"]) <= 0.5
    image = tmp_path / "digit.npy"
    with np.load(os.path.join(MODELS, "digits_holdout.npz")) as z:
        np.save(image, z["images"][0])
    out = run_qbinfer_main("demo", "--json", "--runs", "1", "--model", path, "--image", str(image))
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert "top5" in rec and "images" not in rec
