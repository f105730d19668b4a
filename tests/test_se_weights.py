"""Compact SE weights (issue 19, item 4): the SE FCs as FP32, INT8 or binary (sign x per-row
scale, STE-trained) in the zoo, the converter (FC modes int8 and binary) and the engine.

1. The SE layer: binary weights are one magnitude per row (the learnable alpha), INT8 weights lie
   on their per-row grid, and gradients reach the latent weights (STE) and alpha.
2. QSB-Net-Large (SE1) with each SE weight kind, random weights and randomised BN: converted, the
   SE FCs are written in the expected FC mode, and the engine matches PyTorch (median per-image
   relative L2 <= 1e-4, differing images only at near ties: conftest.assert_matches); once at
   224x224 with binary SE weights.
3. The FC binary mode on its own: a one-op file against numpy on every ISA this CPU runs, random
   shapes (the seed is printed), plus the kernel test plan's fc_binary family per variant.
4. Hostile files: the binary mode's tensor forms with wrong sizes, dtypes or tail bits are refused
   by both the Python validator (QbwFormatError) and the engine's loader (FormatError).
5. The storage report: QSB-Net-Large (SE1) with binary SE weights within 10% of Table 3.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import qbinfer
from qbinfer import _core, _testing

torch = pytest.importorskip("torch", reason="building test models needs the tools extra")

from conftest import (  # noqa: E402
    assert_matches,
    convert_model,
    pack_bits,
    random_inputs,
    torch_logits,
    zoo_model,
)

from weights_tools.layers import SqueezeExcite  # noqa: E402
from weights_tools.qbw import (  # noqa: E402
    DType,
    FCEncoding,
    Graph,
    Op,
    OpType,
    Preprocessing,
    QbwFormatError,
    Tensor,
    Value,
    read_qbw,
    validate_graph,
    write_qbw,
)

SEED = int(os.environ.get("QBINFER_SE_TEST_SEED", "20261205"))
KINDS = ("fp32", "int8", "binary")


# ---------------------------------------------------------------------------------------------
# 1. The SE layer


@pytest.mark.parametrize("kind", ["int8", "binary"])
def test_se_layer_weights_and_gradients(kind):
    torch.manual_seed(SEED)
    se = SqueezeExcite(64, 8, weights=kind)
    for which in ("reduce", "expand"):
        w = se.effective_weight(which).detach().reshape(getattr(se, which).weight.shape[0], -1)
        if kind == "binary":
            alpha = getattr(se, which + "_alpha").detach().reshape(-1, 1)
            assert torch.equal(w.abs(), alpha.abs().expand_as(w)), which
        else:
            scale = w.abs().amax(dim=1, keepdim=True) / 127
            q = w / scale
            assert torch.allclose(q, q.round(), atol=1e-3), which
            assert q.abs().max() <= 127.001
    x = torch.randn(4, 64, 5, 5)
    se(x).square().sum().backward()
    for which in ("reduce", "expand"):
        grad = getattr(se, which).weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"no STE gradient reaches {which}"
        if kind == "binary":
            assert getattr(se, which + "_alpha").grad.abs().sum() > 0


def test_se_weight_kind_is_checked():
    with pytest.raises(ValueError, match="SE weights must be one of"):
        SqueezeExcite(16, weights="int4")


# ---------------------------------------------------------------------------------------------
# 2. Engine vs PyTorch


def _se_fc_encodings(path: str):
    graph = read_qbw(path)
    return [FCEncoding(op.attrs[0]) for op in graph.ops if op.type == OpType.FC]


@pytest.mark.parametrize("kind", KINDS)
def test_qsb_net_large_se1_matches_pytorch(tmp_path, kind):
    seed = SEED + KINDS.index(kind)
    model = zoo_model("qsb_net_large", seed, se="se1", se_weights=kind)
    n_se = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    path, _ = convert_model(model, tmp_path, f"se1_{kind}", (32, 32))
    encodings = _se_fc_encodings(path)
    want = {"fp32": None, "int8": FCEncoding.INT8, "binary": FCEncoding.BINARY}[kind]
    if want is None:  # FP32 SE FCs stay 1x1 convs; only the head is an FC
        assert encodings == [FCEncoding.FP32]
    else:  # two FCs per SE, then the FP32 head
        assert encodings == [want] * (2 * n_se) + [FCEncoding.FP32], encodings
    x = random_inputs((16, 3, 32, 32), seed)
    engine = qbinfer.load(path).run(x)
    assert_matches(engine, torch_logits(model, x), path, x, f"SE1 {kind} (seed {seed})")


def test_binary_se_with_an_int8_head(tmp_path):
    """fc="int8" re-encodes the FP32 head only: the SE FCs keep their binary mode, and the engine
    matches the reference interpreter of the file."""
    from weights_tools.reference import run_reference

    model = zoo_model("qsb_net_small", SEED, se="se1", se_weights="binary")
    path, _ = convert_model(model, tmp_path, "se1_binary_int8_head", (32, 32), fc="int8")
    n_se = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    assert _se_fc_encodings(path) == [FCEncoding.BINARY] * (2 * n_se) + [FCEncoding.INT8]
    x = random_inputs((8, 3, 32, 32), SEED)
    engine = qbinfer.load(path).run(x)
    ref = run_reference(read_qbw(path), x)
    assert_matches(engine, ref, path, x, f"SE1 binary, int8 head vs reference (seed {SEED})")


def test_qsb_net_large_se1_binary_at_224(tmp_path):
    model = zoo_model("qsb_net_large", SEED, num_classes=1000, se="se1", se_weights="binary")
    path, _ = convert_model(model, tmp_path, "se1_binary_224", (224, 224))
    assert FCEncoding.BINARY in _se_fc_encodings(path)
    x = random_inputs((2, 3, 224, 224), SEED)
    engine = qbinfer.load(path).run(x)
    assert_matches(engine, torch_logits(model, x), path, x, f"SE1 binary at 224 (seed {SEED})")


# ---------------------------------------------------------------------------------------------
# 3. The FC binary mode on every ISA


def _fc_binary_graph(c: int, co: int, signs, scale, bias, shape=None) -> Graph:
    """x (1, 1, c) -> FC binary -> (1, 1, co); `signs` bool [co, c] (True = -1) or words."""
    h, w, cin = shape or (1, 1, c)
    words = signs if signs.dtype == np.uint64 else pack_bits(signs)
    return Graph(
        tensors=[
            Tensor("fc.weight", DType.BITS, words),
            Tensor("fc.weight_scale", DType.F32, np.asarray(scale, dtype=np.float32)),
            Tensor("fc.bias", DType.F32, np.asarray(bias, dtype=np.float32)),
        ],
        values=[Value("x", DType.F32, h, w, cin), Value("y", DType.F32, 1, 1, co)],
        ops=[Op(OpType.FC, "fc", [0], [1], [0, 1, 2], [int(FCEncoding.BINARY)])],
        input_value=0,
        output_value=1,
        preprocessing=Preprocessing(0, h, w),
    )


def test_fc_binary_op_against_numpy_on_every_isa(tmp_path):
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED} (QBINFER_SE_TEST_SEED), ISAs {_core.supported_isas()}")
    for case in range(12):
        c = int(rng.choice([1, 7, 31, 63, 64, 65, 100, 128, 200, 257, 1024]))
        co = int(rng.integers(1, 40))
        minus = rng.random((co, c)) < 0.5
        scale = rng.uniform(0.01, 2.0, co).astype(np.float32)
        bias = rng.standard_normal(co).astype(np.float32)
        path = str(tmp_path / f"fc{case}.qbw")
        write_qbw(path, _fc_binary_graph(c, co, minus, scale, bias))
        x = rng.standard_normal((3, c, 1, 1)).astype(np.float32)
        signs = np.where(minus, -1.0, 1.0)
        dot = x.reshape(3, c).astype(np.float64) @ signs.T
        exact = scale.astype(np.float64) * dot + bias
        magnitude = scale * (np.abs(x.reshape(3, c)).astype(np.float64).sum(1, keepdims=True))
        tol = 1e-5 * (magnitude + np.abs(bias))  # fc.h's tolerance
        for isa in _core.supported_isas():
            got = qbinfer.load(path, isa=isa).run(x).reshape(3, co)
            err = np.abs(got - exact)
            assert np.all(err <= tol), (
                f"seed {SEED} case {case} c={c} co={co} isa={isa}: max error {err.max():.3g}"
            )


@pytest.mark.parametrize("variant", _testing.kernel_variants("fc_binary"))
def test_fc_binary_kernel_plan(variant):
    report = _testing.run_kernel_tests(seed=SEED, family="fc_binary", isa=variant, scale=1.0)
    print(f"fc_binary/{variant}: {report['cases']} cases, seed {SEED}")
    assert report["cases"] > 0
    assert report["failures"] == 0, "\n".join(report["messages"])


# ---------------------------------------------------------------------------------------------
# 4. Hostile files


def _hostile_cases():
    c, co = 70, 5
    rng = np.random.default_rng(SEED)
    minus = rng.random((co, c)) < 0.5
    good = pack_bits(minus)  # [5, 2] words
    scale, bias = np.ones(co), np.zeros(co)
    tail = good.copy()
    tail[0, -1] |= np.uint64(1) << np.uint64(63)  # a bit past channel 70
    cases = {
        "one row too few": _fc_binary_graph(c, co, good[:-1], scale, bias),
        "one word too many": _fc_binary_graph(
            c, co, np.concatenate([good, good[:, :1]], axis=1), scale, bias
        ),
        "flat words": _fc_binary_graph(c, co, good.reshape(-1), scale, bias),
        "tail bits set": _fc_binary_graph(c, co, tail, scale, bias),
        "weight_scale too short": _fc_binary_graph(c, co, good, scale[:-1], bias),
        "bias too long": _fc_binary_graph(c, co, good, scale, np.zeros(co + 1)),
        # the weights fit C = 70, but binary rows pack the channels of one pixel only
        "input is a map": _fc_binary_graph(c, co, good, scale, bias, shape=(2, 1, 70)),
    }
    no_scale = _fc_binary_graph(c, co, good, scale, bias)
    no_scale.ops[0].tensors[1] = None
    cases["weight_scale absent"] = no_scale
    f32_weight = _fc_binary_graph(c, co, good, scale, bias)
    f32_weight.tensors[0] = Tensor("fc.weight", DType.F32, np.ones((co, c), np.float32))
    cases["f32 weights in binary mode"] = f32_weight
    return cases


HOSTILE = _hostile_cases()


def test_valid_binary_fc_file_loads(tmp_path):
    rng = np.random.default_rng(SEED)
    graph = _fc_binary_graph(70, 5, rng.random((5, 70)) < 0.5, np.ones(5), np.zeros(5))
    validate_graph(graph)
    path = str(tmp_path / "ok.qbw")
    write_qbw(path, graph)
    qbinfer.load(path)


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_binary_fc_is_refused(tmp_path, what):
    graph = HOSTILE[what]
    with pytest.raises(QbwFormatError) as python_error:
        validate_graph(graph)
    path = str(tmp_path / "hostile.qbw")
    write_qbw(path, graph, validate=False)
    with pytest.raises(qbinfer.FormatError) as engine_error:
        qbinfer.load(path)
    if what == "input is a map":  # refused by the rule, not by a size
        for error in (python_error, engine_error):
            assert "binary weights need a (1, 1, C) input" in str(error.value), error.value


# ---------------------------------------------------------------------------------------------
# 5. Storage against Table 3


def test_binary_se_storage_within_ten_percent_of_table_3():
    from weights_tools.ops import count_zoo, to_record

    counts = {
        c.model: c
        for c in count_zoo(["qsb_net_large"], ("se1",), se_weights=("fp32", "int8", "binary"))
    }
    binary = to_record(counts["qsb_net_large_se1_binary"])["paper"]
    for key, paper in (("storage_mb_fp32_fc", 12.4), ("storage_mb_int8_fc", 6.3)):
        assert binary[key]["paper"] == paper
        assert abs(binary[key]["ours"] / paper - 1) < 0.10, (key, binary[key])
    # The SE FCs' 1.4 M weights: 4 bytes, 1 byte or 1 bit each (+ a 4-byte scale per row).
    fp32 = counts["qsb_net_large_se1"].weights_storage_bytes["fp32"]
    int8 = counts["qsb_net_large_se1_int8"].weights_storage_bytes["fp32"]
    bits = counts["qsb_net_large_se1_binary"].weights_storage_bytes["fp32"]
    model = zoo_model("qsb_net_large", SEED, num_classes=1000, se="se1")
    convs = [
        c for m in model.modules() if isinstance(m, SqueezeExcite) for c in (m.reduce, m.expand)
    ]
    n = sum(c.weight.numel() for c in convs)
    rows = sum(c.weight.shape[0] for c in convs)
    assert fp32 - int8 == 3 * n - 4 * rows
    assert fp32 - bits == 4 * n - (n + 7) // 8 - 4 * rows
