"""BCONV2D_GENERAL (any kernel, stride and padding): the engine against the numpy reference
(weights_tools/reference.py) on single-op graphs, and the reference against PyTorch's conv of a
padded ±1 input (an oracle written independently of both).

Shapes: channels not a multiple of 64, 1-pixel outputs, 5x5 and 7x7, strides 2 and 3, asymmetric
pads, both pad modes. The seed is printed and can be set with QBINFER_BCONV_GENERAL_SEED.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import qbinfer
from weights_tools.qbw import (
    DType,
    Graph,
    Op,
    OpType,
    Preprocessing,
    Tensor,
    Value,
    pack_signs,
    pack_threshold,
    unpack_signs,
    write_qbw,
)
from weights_tools.reference import evaluate, run_reference

SEED = int(os.environ.get("QBINFER_BCONV_GENERAL_SEED", "20261205"))
print(f"BCONV2D_GENERAL tests: seed {SEED} (QBINFER_BCONV_GENERAL_SEED)")

# (H, W, Ci, Co, kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right); each runs with both
# pad modes.
SHAPES = [
    (9, 11, 70, 5, 3, 3, 2, 2, 1, 1, 1, 1),  # ReActNet's downsampling 3x3, odd sides
    (8, 8, 64, 8, 3, 3, 2, 2, 1, 1, 1, 1),  # even sides: no bottom/right padding tap used
    (10, 13, 200, 20, 3, 3, 2, 2, 1, 1, 1, 1),  # wide: several output-channel groups
    (9, 8, 24, 17, 3, 3, 2, 1, 1, 1, 0, 0),  # 3x3 pads 1 top/left only, strides 2 and 1
    (7, 9, 130, 3, 5, 5, 1, 1, 2, 2, 2, 2),  # 5x5 'same'
    (10, 9, 33, 4, 5, 5, 2, 2, 2, 2, 2, 2),  # 5x5 stride 2
    (12, 10, 65, 4, 7, 7, 2, 2, 3, 3, 3, 3),  # 7x7 stride 2
    (11, 10, 100, 6, 3, 3, 3, 3, 1, 0, 2, 1),  # stride 3, asymmetric pads
    (7, 6, 5, 3, 5, 3, 1, 2, 4, 0, 1, 2),  # non-square kernel and stride
    (3, 3, 129, 7, 3, 3, 2, 2, 0, 0, 0, 0),  # a 1-pixel output, no padding
    (1, 1, 70, 4, 3, 3, 2, 2, 1, 1, 1, 1),  # a 1-pixel image: every tap but one is padding
    (2, 3, 64, 3, 4, 5, 1, 1, 1, 1, 1, 1),  # the kernel as large as the padded input
]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, *key])


def bconv_general_graph(rng, shape, pad_mode):
    """x (f32) -> BITPACK (threshold 0) -> BCONV2D_GENERAL -> output."""
    h, w, ci, co, kh, kw, sh, sw, pt, pl, pb, pr = shape
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    g = Graph(tensors=[], values=[], ops=[], input_value=0, output_value=2)
    g.preprocessing = Preprocessing(0, h, w)
    g.values += [
        Value("x", DType.F32, h, w, ci),
        Value("bits", DType.BITS, h, w, ci),
        Value("y", DType.F32, ho, wo, co),
    ]
    w_pm1 = np.where(rng.random((co, kh, kw, ci)) < 0.5, -1.0, 1.0).astype(np.float32)
    g.tensors += [
        Tensor("thr", DType.F32, np.zeros(ci, np.float32)),
        Tensor("w", DType.BITS, pack_signs(w_pm1)),
        Tensor("scale", DType.F32, rng.uniform(0.5, 1.5, co).astype(np.float32)),
        Tensor("bias", DType.F32, rng.standard_normal(co).astype(np.float32)),
    ]
    g.ops += [
        Op(OpType.BITPACK, "sign", [0], [1], [0]),
        Op(
            OpType.BCONV2D_GENERAL,
            "conv",
            [1],
            [2],
            [1, 2, 3],
            [kh, kw, sh, sw, pt, pl, pb, pr, pad_mode],
        ),
    ]
    return g


@pytest.mark.parametrize("pad_mode", [0, 1], ids=["zero", "one"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_engine_matches_reference(tmp_path, shape, pad_mode):
    rng = _rng(*shape, pad_mode)
    g = bconv_general_graph(rng, shape, pad_mode)
    path = tmp_path / "m.qbw"
    write_qbw(path, g)
    h, w, ci = shape[:3]
    x = rng.standard_normal((3, ci, h, w)).astype(np.float32)
    want = run_reference(g, x)
    # Every ISA's kernel table: the scalar one runs the portable kernel, the others their fast
    # path where the shape has one.
    for isa in qbinfer._core.supported_isas():
        model = qbinfer.load(str(path), isa=isa)
        got = model.run(x)
        assert got.shape == want.shape
        # The dot is exact in both; the epilogue dot*scale + bias is two f32 roundings (an FMA
        # may fuse them: a few ulp).
        np.testing.assert_allclose(
            got, want, rtol=1e-6, atol=1e-5, err_msg=f"isa {isa}, seed {SEED}"
        )
    bconv = [o for o in model.ops() if o["type"] == "BCONV2D_GENERAL"][0]
    co, kh, kw = shape[3:6]
    ho, wo = g.values[2].height, g.values[2].width
    assert bconv["bops"] == co * ci * kh * kw * ho * wo


def test_threads_give_identical_results(tmp_path):
    shape = (17, 15, 100, 9, 3, 3, 2, 2, 1, 1, 1, 1)
    g = bconv_general_graph(_rng(1), shape, 1)
    path = tmp_path / "m.qbw"
    write_qbw(path, g)
    x = _rng(2).standard_normal((2, 100, 17, 15)).astype(np.float32)
    one = qbinfer.load(str(path), threads=1).run(x)
    two = qbinfer.load(str(path), threads=2).run(x)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("pad_mode", [0, 1], ids=["zero", "one"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_reference_matches_torch_conv_of_padded_signs(shape, pad_mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(*shape, pad_mode, 7)
    g = bconv_general_graph(rng, shape, pad_mode)
    h, w, ci, co, kh, kw, sh, sw, pt, pl, pb, pr = shape
    x = rng.standard_normal((2, ci, h, w)).astype(np.float32)
    got = evaluate(g, x)[g.output_value]  # [N, Ho, Wo, Co]

    signs = torch.from_numpy(np.where(x >= 0, 1.0, -1.0))  # BITPACK with threshold 0
    padded = F.pad(signs, (pl, pr, pt, pb), value=float(pad_mode))
    w_pm1 = unpack_signs(g.tensors[1].data, ci, dtype=np.float64)  # [Co, kh, kw, Ci]
    weight = torch.from_numpy(np.ascontiguousarray(w_pm1.transpose(0, 3, 1, 2)))
    dot = F.conv2d(padded, weight, stride=(sh, sw)).numpy()  # exact: small integers in f64
    scale, bias = g.tensors[2].data, g.tensors[3].data
    want = (dot.transpose(0, 2, 3, 1).astype(np.float32) * scale + bias).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_bitpack_threshold_is_the_sign_the_torch_check_uses():
    # The torch check above reads BITPACK with threshold 0 as x >= 0 -> +1; pin that here so a
    # change of the rule fails loudly instead of making the comparison vacuous.
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    assert unpack_signs(pack_threshold(x, 0.0), 3).tolist() == [[-1.0, 1.0, 1.0]]


# ---------------------------------------------------------------------------------------------
# Conversion from PyTorch: strided and 5x5 binary convs become BCONV2D_GENERAL


def _torch_modules():
    torch = pytest.importorskip("torch")
    from bnn_styles import ScaledSignConv, Shift, SignWithClippedSTE
    from torch import nn

    class DownAnd5x5(nn.Module):
        """ReActNet's downsampling unit as its code writes it (shift, sign with an STE, scaled
        binary 3x3 stride 2 with zero padding 1, BN, an avg-pool shortcut, RPReLU), then an
        XNOR-Net style 5x5 binary conv (torch.sign, padding 2) with a residual."""

        input_shape = (3, 16, 16)

        def __init__(self, c: int = 24, classes: int = 10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.move = Shift(c)
            self.down = ScaledSignConv(c, c, 3, stride=2, padding=1)
            self.bn_down = nn.BatchNorm2d(c)
            self.rprelu = nn.Sequential(Shift(c), nn.PReLU(c), Shift(c))
            self.conv5 = ScaledSignConv(c, c, 5, stride=1, padding=2)
            self.bn5 = nn.BatchNorm2d(c)
            self.head = nn.Linear(c, classes)

        def forward(self, x):
            x = self.stem(x)
            y = self.bn_down(self.down(SignWithClippedSTE.apply(self.move(x))))
            y = self.rprelu(y + torch.nn.functional.avg_pool2d(x, 2))
            y = self.bn5(self.conv5(torch.sign(y))) + y
            return self.head(y.mean(dim=(2, 3)))

    class OnePaddedStride2(nn.Module):
        """A sign padded with +1 (F.pad value 1), then a binary 3x3 stride 2 without padding
        (the engine's one padding), and a 7x7 stride 3 binary conv with asymmetric-free pads."""

        input_shape = (3, 16, 16)

        def __init__(self, c: int = 20, classes: int = 10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.down = ScaledSignConv(c, c, 3, stride=2, padding=0)
            self.bn_down = nn.BatchNorm2d(c)
            self.conv7 = ScaledSignConv(c, c, 7, stride=3, padding=3)
            self.bn7 = nn.BatchNorm2d(c)
            self.head = nn.Linear(c, classes)

        def forward(self, x):
            x = self.stem(x)
            s = torch.nn.functional.pad(torch.sign(x), (1, 1, 1, 1), value=1.0)
            y = self.bn_down(self.down(s))
            y = self.bn7(self.conv7(torch.sign(y)))
            return self.head(y.mean(dim=(2, 3)))

    return torch, {"down_and_5x5": DownAnd5x5, "one_padded_stride2_7x7": OnePaddedStride2}


@pytest.mark.parametrize("name", ["down_and_5x5", "one_padded_stride2_7x7"])
def test_pytorch_strided_and_5x5_binary_convs_convert_and_match(name, tmp_path):
    torch, cases = _torch_modules()
    import onnx
    from bnn_styles import randomize

    from weights_tools.convert import export_onnx
    from weights_tools.converter import lower_onnx

    model = randomize(cases[name](), seed=SEED % 1000)
    c, h, w = model.input_shape
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, onnx_path, input_size=(h, w))
    graph = lower_onnx(onnx.load(str(onnx_path)))
    general = [op for op in graph.ops if op.type == OpType.BCONV2D_GENERAL]
    assert len(general) == 2, [op.type.name for op in graph.ops]
    if name == "one_padded_stride2_7x7":
        assert [op.attrs[-1] for op in general] == [1, 0]  # one padding, then zero padding

    x = torch.randn(32, c, h, w, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        want = model(x).numpy()
    qbw_path = tmp_path / "m.qbw"
    write_qbw(qbw_path, graph)
    for label, got in (
        ("reference", run_reference(graph, x.numpy())),
        ("engine", qbinfer.load(str(qbw_path)).run(x.numpy())),
    ):
        rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
        assert np.median(rel) <= 1e-4, (label, np.sort(rel))
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.97, label
