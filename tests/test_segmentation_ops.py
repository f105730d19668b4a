"""The engine and converter side of DeepLabv3+ segmentation (issue 18): dilated depthwise 3x3
(DWCONV3X3's dilation), RESIZE (ONNX Resize / F.interpolate), and a dense N x classes x H x W
output through Model.run and predict.

What is compared, and how closely:
  kernels      every ISA's dilated depthwise conv and resize against the portable reference, bit
               for bit, through the kernel test plan (csrc/tests/kernel_test_harness.cc, families
               dwconv_dilated and resize; scripts/test-aarch64.sh runs them under qemu).
  reference    the engine (every ISA, 1 and 2 threads) against weights_tools.reference: RESIZE
               bit for bit (its f32 operations are the format's); the f32 depthwise conv, which
               the reference sums in float64, within 1e-5 relative to the sum of |terms|.
  PyTorch      single ops within 1e-5 (|diff| <= 1e-5 * (1 + |want|)): both sides round f32
               products and sums, in their own orders (PyTorch's bilinear kernel weighs the four
               pixels in another order; a collapsed pair at a border is read unweighted here).
               Whole networks with binary layers: a sign whose input is within rounding of 0 may
               flip (SPEC 6), so per-pixel argmax agreement >= 99.5% and a median (over images)
               logits relative L2 <= 1e-4.
The seed of every random case is SEED (printed in failures).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import qbinfer  # noqa: E402
from qbinfer import _testing  # noqa: E402
from weights_tools.convert import ConversionError, to_qbw  # noqa: E402
from weights_tools.layers import BHalf, BPReLU, DSHalf, LearnableBias  # noqa: E402
from weights_tools.qbw import OpType, full_attrs, read_qbw, write_qbw  # noqa: E402
from weights_tools.reference import run_reference  # noqa: E402

SEED = 20261218
ISAS = qbinfer._core.supported_isas()


def run_engine(path, x, isa, threads=1):
    """The engine's NCHW output for an NCHW batch."""
    model = qbinfer.Model(path, threads=threads, isa=isa)
    return model.run(np.ascontiguousarray(x))


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def close(got, want, what, tol=1e-5):
    if got.ndim == 2 and want.ndim == 4 and want.shape[2:] == (1, 1):
        want = want.reshape(got.shape)  # a 1 x 1 output is N x C, as a classifier's
    err = np.abs(got.astype(np.float64) - want) / (1.0 + np.abs(want))
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(err <= tol), f"{what}: max error {err.max():.3g} (seed {SEED})"


def randomize_bn(model, rng):
    """Random BN statistics and affine (eval mode), so a fold that drops one shows."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.5, n).astype(np.float32)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))
            m.weight.data.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            m.bias.data.copy_(torch.from_numpy(rng.normal(0, 0.3, n).astype(np.float32)))
    return model.eval()


def convert(model, tmp_path, hw, name="m", **kw):
    path = tmp_path / f"{name}.qbw"
    torch.manual_seed(0)
    to_qbw(model.eval(), path, input_size=hw, in_channels=model_channels(model), **kw)
    return path


def model_channels(model):
    return getattr(model, "in_channels", 3)


# --------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "family,variant",
    [(f, v) for f in ("dwconv_dilated", "resize") for v in _testing.kernel_variants(f)],
)
def test_kernel_family_every_isa(family, variant):
    """The new kernels of every ISA this machine runs against the portable reference, bit for
    bit (random shapes; the harness prints the failing case)."""
    report = _testing.run_kernel_tests(seed=SEED, family=family, isa=variant, scale=0.5)
    assert report["cases"] > 0
    assert report["failures"] == 0, f"{family}/{variant} seed {SEED}: " + "\n".join(
        report["messages"]
    )


def test_kernel_families_are_listed_for_every_isa():
    """The AVX-512 entries run the AVX2 code (not the reference) and every x86 ISA has one."""
    for family in ("dwconv_dilated", "resize"):
        compiled = _testing.kernel_variants(family, runnable_only=False)
        assert compiled[0] == "scalar"
        if "avx2" in compiled:
            assert "avx512" in compiled, family


# ----------------------------------------------------------------------- dilated depthwise


class Atrous(nn.Module):
    """A float depthwise 3x3 conv at rate d (DeepLab's atrous conv), BN, ReLU."""

    def __init__(self, c, d, bias=True):
        super().__init__()
        self.in_channels = c
        self.dw = nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=bias)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.dw(x)))


@pytest.mark.parametrize(
    "rate,hw,c",
    [
        (2, (9, 7), 5),
        (3, (13, 13), 17),
        (6, (17, 11), 8),
        (12, (25, 25), 3),
        (18, (9, 40), 4),
        (36, (13, 13), 9),
        (24, (1, 1), 16),
        (4, (2, 30), 33),
    ],
)
def test_dilated_depthwise_matches_pytorch(tmp_path, rate, hw, c):
    """Conv2d(groups=C, dilation=d, padding=d) + BN + ReLU converts to one DWCONV3X3 with
    dilation d (a fused ReLU chain in the engine), including rates larger than the image (all
    taps but the centre in the padding); every ISA and thread count agrees with PyTorch and the
    reference."""
    rng = np.random.default_rng(SEED + rate)
    torch.manual_seed(SEED + rate)
    model = randomize_bn(Atrous(c, rate), rng)
    path = convert(model, tmp_path, hw)
    g = read_qbw(path)
    dws = [op for op in g.ops if op.type == OpType.DWCONV3X3]
    assert len(dws) == 1 and full_attrs(dws[0])[3] == rate
    assert list(dws[0].attrs) == [1, 1, 1, rate]
    x = rng.standard_normal((2, c, *hw)).astype(np.float32)
    want = torch_out(model, x)
    ref = run_reference(g, x)
    close(ref, want, f"reference rate {rate}")
    for isa, threads in itertools.product(ISAS, (1, 2)):
        got = run_engine(path, x, isa, threads)
        close(got, want, f"rate {rate} {hw} C={c} isa={isa} threads={threads}")


def test_undilated_depthwise_is_written_as_before(tmp_path):
    """A depthwise conv of rate 1 is written with its three attributes, as before the dilation
    existed: files without atrous convs are unchanged (and older readers still read them)."""
    torch.manual_seed(1)
    model = randomize_bn(Atrous(4, 1), np.random.default_rng(1))
    g = read_qbw(convert(model, tmp_path, (6, 6)))
    (dw,) = [op for op in g.ops if op.type == OpType.DWCONV3X3]
    assert list(dw.attrs) == [1, 1, 1]
    assert full_attrs(dw) == [1, 1, 1, 1]


def _dw_graph(tmp_path, attrs, h=7, w=6, c=4, int8=False):
    """One DWCONV3X3 (stride 1) with the given attribute list, written without validation."""
    from weights_tools.qbw import DType, Graph, Op, Preprocessing, Tensor, Value

    rng = np.random.default_rng(SEED)
    sh, sw = (list(attrs) + [1, 1])[:2]
    values = [Value("x", DType.F32, h, w, c), Value("y", DType.F32, -(-h // sh), -(-w // sw), c)]
    wt = (
        Tensor("w", DType.I8, rng.integers(-127, 128, (c, 9)).astype(np.int8))
        if int8
        else Tensor("w", DType.F32, rng.standard_normal((c, 9)).astype(np.float32))
    )
    tensors = [
        wt,
        Tensor("s", DType.F32, rng.uniform(0.5, 1.5, c).astype(np.float32)),
        Tensor("b", DType.F32, rng.standard_normal(c).astype(np.float32)),
    ]
    slots = [None, 0, None, 1, 2, None]
    if int8:
        tensors += [
            Tensor("ws", DType.F32, np.full(c, 0.01, np.float32)),
            Tensor("is", DType.F32, np.zeros(1, np.float32)),
        ]
        slots = [None, 0, 3, 1, 2, 4]
    ops = [Op(OpType.DWCONV3X3, "dw", [0], [1], slots, list(attrs))]
    g = Graph(tensors, values, ops, 0, 1, Preprocessing.for_input_size(h, w), model_name="dw")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "dw.qbw"
    write_qbw(path, g, validate=False)
    return path, g


def test_dilation_attribute_one_equals_omitted(tmp_path):
    """A record with dilation 1 written out runs bit for bit as the 3-attribute record."""
    x = np.random.default_rng(SEED).standard_normal((1, 4, 7, 6)).astype(np.float32)
    p3, _ = _dw_graph(tmp_path / "a", [1, 1, 1])
    p4, _ = _dw_graph(tmp_path / "b", [1, 1, 1, 1])
    for isa in ISAS:
        a, b = run_engine(p3, x, isa), run_engine(p4, x, isa)
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), isa)


@pytest.mark.parametrize(
    "attrs,int8,match",
    [
        ([2, 2, 1, 2], False, "dilation 2 needs stride 1x1"),
        ([1, 2, 1, 3], False, "dilation 3 needs stride 1x1"),
        ([1, 1, 1, 2], True, "dilation 2 needs f32 weights"),
        ([1, 1, 1, 0], False, "dilation"),
        ([1, 1], False, "attr"),
    ],
)
def test_dilation_rules_refused_by_both_readers(tmp_path, attrs, int8, match):
    from weights_tools.qbw import QbwFormatError, validate_graph

    path, g = _dw_graph(tmp_path, attrs, int8=int8)
    with pytest.raises(qbinfer.FormatError, match=match):
        qbinfer.Model(path)
    with pytest.raises(QbwFormatError, match=match if "attr" not in match else "attribute"):
        validate_graph(g)


def test_group_depthwise_keeps_rates_apart(tmp_path):
    """Depthwise convs of one input at different rates, side by side in a Concat, are not
    merged into one multiplier-2 op (which has one rate); equal rates are."""

    class TwoRates(nn.Module):
        in_channels = 3

        def __init__(self, d1, d2):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding=d1, dilation=d1, groups=3, bias=False)
            self.b = nn.Conv2d(3, 3, 3, padding=d2, dilation=d2, groups=3, bias=False)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    x = np.random.default_rng(SEED).standard_normal((1, 3, 11, 10)).astype(np.float32)
    for d1, d2, n_ops in ((2, 3, 2), (4, 4, 1)):
        torch.manual_seed(d1 + d2)
        model = TwoRates(d1, d2).eval()
        path = convert(model, tmp_path, (11, 10), f"r{d1}{d2}")
        dws = [op for op in read_qbw(path).ops if op.type == OpType.DWCONV3X3]
        assert len(dws) == n_ops, (d1, d2)
        close(run_engine(path, x, ISAS[-1]), torch_out(model, x), f"rates {d1},{d2}")


def test_int8_depthwise_refuses_dilation(tmp_path):
    torch.manual_seed(2)
    model = Atrous(4, 2).eval()
    with pytest.raises(ConversionError, match="depthwise='int8' has no dilated kernel"):
        to_qbw(model, tmp_path / "m.qbw", input_size=(8, 8), in_channels=4, depthwise="int8")


def test_dilated_dense_or_binary_conv_is_refused(tmp_path):
    class Dense(nn.Module):
        in_channels = 3

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=2, dilation=2)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ConversionError, match="float depthwise 3x3 convs only"):
        to_qbw(Dense().eval(), tmp_path / "m.qbw", input_size=(8, 8))


# ------------------------------------------------------------------------------------ resize


class Interp(nn.Module):
    """F.interpolate as given, of the input (or, like_input, of a max pool of it, resized back
    to the input's size): only ops the reference computes bit for bit as the engine does."""

    in_channels = 3

    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x):
        kw = dict(self.kw)
        y = x
        if kw.pop("like_input", False):  # size=x.shape[-2:] after a stride-2 pool
            y = F.max_pool2d(x, 2, ceil_mode=True)
            kw["size"] = x.shape[-2:]
        return F.interpolate(y, **kw)


RESIZES = [
    dict(scale_factor=2, mode="bilinear", align_corners=False),
    dict(scale_factor=2, mode="bilinear", align_corners=True),
    dict(scale_factor=4, mode="bilinear", align_corners=False),
    dict(scale_factor=1.5, mode="bilinear", align_corners=False),
    dict(scale_factor=0.5, mode="bilinear", align_corners=False),
    dict(size=(17, 23), mode="bilinear", align_corners=False),
    dict(size=(17, 23), mode="bilinear", align_corners=True),
    dict(size=(3, 2), mode="bilinear", align_corners=False),
    dict(size=(1, 1), mode="bilinear", align_corners=True),
    dict(scale_factor=2, mode="nearest"),
    dict(scale_factor=3, mode="nearest"),
    dict(size=(13, 5), mode="nearest"),
    dict(like_input=True, mode="bilinear", align_corners=False),
    dict(like_input=True, mode="bilinear", align_corners=True),
    dict(like_input=True, mode="nearest"),
]


def _resize_case_valid(kw, hw):
    """PyTorch refuses an empty output; the 2 x 2 pool of like_input needs a 2 x 2 input."""
    s = kw.get("scale_factor", 1)
    return hw[0] * s >= 1 and hw[1] * s >= 1 and not (kw.get("like_input") and hw == (1, 1))


RESIZE_CASES = [
    (kw, hw) for kw in RESIZES for hw in [(7, 9), (1, 1), (6, 6)] if _resize_case_valid(kw, hw)
]


@pytest.mark.parametrize(
    "kw,hw", RESIZE_CASES, ids=[f"{sorted(k.items())}-{hw}" for k, hw in RESIZE_CASES]
)
def test_resize_matches_pytorch_and_reference(tmp_path, kw, hw):
    """F.interpolate (scale_factor or size=, including size=x.shape[-2:], whose Shape/Slice
    subgraph is folded) -> RESIZE: every ISA and thread count equals the numpy reference bit for
    bit and PyTorch within 1e-5."""
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    model = Interp(**kw).eval()
    path = convert(model, tmp_path, hw)
    g = read_qbw(path)
    assert OpType.RESIZE in [op.type for op in g.ops]
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    want = torch_out(model, x)
    ref = run_reference(g, x)
    close(ref, want, f"reference {kw} {hw}")
    for isa, threads in itertools.product(ISAS, (1, 2)):
        got = run_engine(path, x, isa, threads)
        np.testing.assert_array_equal(
            got.view(np.uint32), ref.view(np.uint32), f"{kw} {hw} isa={isa} threads={threads}"
        )


class PoolingBranch(nn.Module):
    """ASPP's image-pooling branch beside a 1x1 branch: AdaptiveAvgPool2d(1) -> 1x1 conv -> BN
    -> ReLU -> interpolate to H x W, concatenated."""

    in_channels = 3

    def __init__(self, align_corners=False):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU()
        )
        self.align_corners = align_corners

    def forward(self, x):
        p = self.pool(x)
        p = F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return torch.cat([self.branch(x), p], 1)


@pytest.mark.parametrize("align_corners", [False, True])
def test_aspp_pooling_branch_is_an_exact_broadcast(tmp_path, align_corners):
    rng = np.random.default_rng(SEED + 3)
    torch.manual_seed(SEED + 3)
    model = randomize_bn(PoolingBranch(align_corners), rng)
    path = convert(model, tmp_path, (11, 13))
    g = read_qbw(path)
    (rs,) = [op for op in g.ops if op.type == OpType.RESIZE]
    src = g.values[rs.inputs[0]]
    assert (src.height, src.width) == (1, 1) and list(rs.attrs[:2]) == [11, 13]
    x = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    want = torch_out(model, x)
    for isa in ISAS:
        got = run_engine(path, x, isa)
        close(got, want, f"isa={isa}")
        pooled = got[:, 6:]
        # every pixel holds the pooled branch's one value, bit for bit
        np.testing.assert_array_equal(pooled, np.broadcast_to(pooled[:, :, :1, :1], pooled.shape))


def test_resize_refusals(tmp_path):
    class Cubic(nn.Module):
        in_channels = 3

        def forward(self, x):
            return F.interpolate(x * 2, scale_factor=2, mode="bicubic")

    with pytest.raises(ConversionError, match="Resize mode 'cubic' is not supported"):
        to_qbw(Cubic().eval(), tmp_path / "m.qbw", input_size=(4, 4))


# ----------------------------------------------------------------------- a mini DeepLab


class AtrousDS(nn.Module):
    """A DS half at rate d: bias, depthwise 3x3 at dilation d, BN, residual, BPReLU."""

    def __init__(self, c, d):
        super().__init__()
        self.beta = LearnableBias(c)
        self.dw = nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = BPReLU(c)

    def forward(self, x):
        return self.act(self.bn(self.dw(self.beta(x))) + x)


class SepConv(nn.Module):
    """DeepLab's atrous separable conv: depthwise at rate d, BN, ReLU, 1x1, BN, ReLU."""

    def __init__(self, ci, co, d):
        super().__init__()
        self.dw = nn.Conv2d(ci, ci, 3, padding=d, dilation=d, groups=ci, bias=False)
        self.bn1 = nn.BatchNorm2d(ci)
        self.pw = nn.Conv2d(ci, co, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)

    def forward(self, x):
        return F.relu(self.bn2(self.pw(F.relu(self.bn1(self.dw(x))))))


class MiniDeepLab(nn.Module):
    """A DeepLabv3+-shaped net on binary layers (weights_tools.layers): stem, a strided DS half
    and binary B halves, atrous DS halves (rates 2 and 4), ASPP (1x1, separable rates 2/3/6, image
    pooling), the decoder's low-level projection, concat and upsampling to the input."""

    in_channels = 3

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16))
        self.ds = DSHalf(16, (2, 2), 2)
        self.b1 = BHalf(32, 3)
        self.a1, self.b2 = AtrousDS(32, 2), BHalf(32, 1)
        self.a2, self.b3 = AtrousDS(32, 4), BHalf(32, 1)
        self.aspp0 = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.aspp = nn.ModuleList(SepConv(32, 16, d) for d in (2, 3, 6))
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.project = nn.Sequential(
            nn.Conv2d(80, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.low = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.decode = SepConv(24, 16, 1)
        self.classify = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        low = self.stem(x)
        f = self.b3(self.a2(self.b2(self.a1(self.b1(self.ds(low))))))
        p = F.interpolate(self.pool(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        a = torch.cat([self.aspp0(f), *[m(f) for m in self.aspp], p], 1)
        a = self.project(a)
        a = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.decode(torch.cat([a, self.low(low)], 1))
        return F.interpolate(
            self.classify(y), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


def segmentation_agreement(got, want):
    """(per-pixel argmax agreement, median over images of the logits' relative L2)."""
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    rel = [np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(got, want)]
    return agree, float(np.median(rel))


@pytest.mark.parametrize("hw", [(65, 65), (48, 80)])
def test_mini_deeplab_matches_pytorch(tmp_path, hw):
    rng = np.random.default_rng(SEED + 4)
    torch.manual_seed(SEED + 4)
    model = randomize_bn(MiniDeepLab(), rng)
    path = convert(model, tmp_path, hw)
    types = [op.type for op in read_qbw(path).ops]
    assert OpType.RESIZE in types and OpType.BCONV2D in types
    x = rng.standard_normal((4, 3, *hw)).astype(np.float32)
    want = torch_out(model, x)
    for isa in ISAS:
        got = run_engine(path, x, isa, threads=2)
        assert got.shape == (4, 5, *hw)
        agree, rel = segmentation_agreement(got, want)
        assert agree >= 0.995 and rel <= 1e-4, f"isa={isa}: agreement {agree}, rel L2 {rel}"


def test_dense_output_through_run_and_predict(tmp_path):
    """Model.run gives N x classes x H x W at the input's size; predict an int32 class map of
    the image's own size, the argmax of the run's logits where the image is the model's input
    size (no resize)."""
    rng = np.random.default_rng(SEED + 5)
    torch.manual_seed(SEED + 5)
    model = randomize_bn(MiniDeepLab(classes=4), rng)
    # the short side resized to the input size: a 33 x 33 image is neither resized nor cropped
    path = convert(model, tmp_path, (33, 33), preprocessing={"resize_short": 33})
    m = qbinfer.Model(path)
    img = rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)
    cmap = m.predict(img)
    assert isinstance(cmap, np.ndarray) and cmap.dtype == np.int32 and cmap.shape == (33, 33)
    assert cmap.min() >= 0 and cmap.max() < 4
    from qbinfer.preprocess import prepare

    x = prepare(img, m.preprocessing, channels=3)[0]
    logits = m.run(x, layout="nhwc")  # NHWC in, NHWC out
    assert logits.shape == (1, 33, 33, 4)
    np.testing.assert_array_equal(cmap, logits[0].argmax(-1))
    nchw = m.run(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert nchw.shape == (1, 4, 33, 33)
    np.testing.assert_array_equal(nchw, logits.transpose(0, 3, 1, 2))
    # another image size: the map has the image's size (the sides the centre crop cut are -1)
    wide = m.predict(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert wide.shape == (40, 50) and wide.dtype == np.int32
    assert wide.max() < 4 and (wide >= 0).any() and (wide[:, 0] == -1).all()
    if os.environ.get("QBINFER_SHOW"):
        print(np.bincount(cmap.ravel(), minlength=4))


ONNX_RESIZES = [
    # mode, coordinate_transformation_mode, nearest_mode, sizes (H, W) or None for scales 2
    ("nearest", "half_pixel", "round_prefer_ceil", (13, 9)),  # PyTorch's nearest-exact
    ("nearest", "asymmetric", "floor", (13, 9)),
    ("nearest", "asymmetric", "floor", None),
    ("linear", "pytorch_half_pixel", "floor", (13, 9)),
    ("linear", "pytorch_half_pixel", "floor", (1, 9)),
    ("linear", "half_pixel", "floor", None),
    ("linear", "asymmetric", "floor", (13, 9)),
    ("linear", "align_corners", "floor", (1, 4)),
]


@pytest.mark.parametrize("case", ONNX_RESIZES, ids=[str(c) for c in ONNX_RESIZES])
def test_onnx_resize_modes_match_onnxruntime(tmp_path, case):
    """Hand-built Resize nodes of the modes PyTorch's exporter does not write at opset 17
    (nearest-exact, pytorch_half_pixel, asymmetric linear) against ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from weights_tools.converter import lower_onnx

    mode, coords, nearest_mode, sizes = case
    c, h, w = 3, 5, 7
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if sizes is None:
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
        ins = ["x", "roi", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, c, *sizes], np.int64), "sizes"))
        ins = ["x", "roi", "", "sizes"]
    node = helper.make_node(
        "Resize",
        ins,
        ["y"],
        name="resize",
        mode=mode,
        coordinate_transformation_mode=coords,
        nearest_mode=nearest_mode,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # batch 1: the constant sizes above say N = 1
    x = np.random.default_rng(SEED).standard_normal((1, c, h, w)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    g = lower_onnx(model)
    assert [op.type for op in g.ops] == [OpType.RESIZE]
    ref = run_reference(g, x)
    close(ref, want, f"reference {case}")
    write_qbw(tmp_path / "m.qbw", g)
    for isa in ISAS:
        got = run_engine(tmp_path / "m.qbw", x, isa)
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), f"{isa}")


@pytest.mark.parametrize(
    "hw,out,bilinear,align_corners",
    [
        ((5, 7), (13, 9), True, False),
        ((5, 7), (13, 9), True, True),
        ((1, 1), (9, 11), True, False),
        ((6, 4), (12, 8), False, False),
        ((9, 9), (4, 3), True, False),
    ],
)
def test_resize_kernel_each_isa_against_pytorch(hw, out, bilinear, align_corners):
    """Each ISA's RESIZE kernel through qbinfer._testing (whole image and by row ranges) on a
    C = 37 map (vector tails) against PyTorch's F.interpolate; all ISAs agree bit for bit."""
    from qbinfer._testing import kernels as K

    rng = np.random.default_rng(SEED + 6)
    x = rng.standard_normal((*hw, 37)).astype(np.float32)
    mode = "bilinear" if bilinear else "nearest"
    kw = {"align_corners": align_corners} if bilinear else {}
    with torch.no_grad():
        want = F.interpolate(
            torch.from_numpy(x.transpose(2, 0, 1)[None].copy()), out, mode=mode, **kw
        )
    want = want[0].numpy().transpose(1, 2, 0)
    (n_h, n_w), (m_h, m_w) = hw, out
    if align_corners:
        ratio = [np.float32(n - 1) / np.float32(m - 1) if m > 1 else 0.0 for n, m in zip(hw, out)]
    else:
        ratio = [np.float32(n_h) / np.float32(m_h), np.float32(n_w) / np.float32(m_w)]
    args = (x, m_h, m_w, bilinear, bilinear and not align_corners, *[float(r) for r in ratio])
    first = None
    for isa in ISAS:
        got = K.resize(*args, isa=isa)
        close(got, want, f"isa={isa}")
        split = K.resize(*args, isa=isa, row_ranges=[(0, 1), (1, m_h)])
        np.testing.assert_array_equal(split.view(np.uint32), got.view(np.uint32), isa)
        first = got if first is None else first
        np.testing.assert_array_equal(got.view(np.uint32), first.view(np.uint32), isa)
