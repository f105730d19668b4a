"""Load-time fusion and intra-op threads: the fused engine gives bit-identical logits to the
unfused one (QBINFER_FUSION=0), for every thread count, on the zoo, on non-zoo nets and on
hand-built graphs that probe where a chain must stop (a second reader, the graph output, an
epilogue step out of order, an in-place base read later)."""

import os
import warnings

import numpy as np
import pytest
from test_engine_format import (
    ADD,
    AFFINE,
    AVGPOOL,
    BCONV2D,
    BITPACK,
    BITS,
    CLIP,
    CONCAT,
    CONV2D,  # noqa: E402
    DWCONV3X3,
    FC,
    GLOBAL_AVGPOOL,
    MUL_CHANNEL,
    PRELU,
    RELU,
    SIGMOID,
    Graph,
    pack_minus_one,
    randn,
    rng_for,
    save,
)

from qbinfer import _core

SEED = 20261128


def load(path, threads=1, fuse=True, monkeypatch=None):
    if fuse:
        monkeypatch.delenv("QBINFER_FUSION", raising=False)
    else:
        monkeypatch.setenv("QBINFER_FUSION", "0")
    # split="always": every step split over every thread, small as these graphs are.
    m = _core.Model(path, threads, split="always")
    assert m.fused == fuse
    return m


def assert_fused_equals_unfused(path, x, monkeypatch, layout="nchw", threads=(1, 2, 3)):
    """Unfused (one thread) is the reference: fused with every thread count, as a batch of one
    (intra-op split) and as a whole batch (images in parallel), is bit-identical."""
    ref = load(path, 1, False, monkeypatch).run(x, layout)
    for t in threads:
        for fuse in (True, False):
            m = load(path, t, fuse, monkeypatch)
            got = m.run(x, layout)
            np.testing.assert_array_equal(got, ref, err_msg=f"threads={t} fused={fuse}")
            np.testing.assert_array_equal(
                m.run(x[:1], layout), ref[:1], err_msg=f"threads={t} fused={fuse} batch of 1"
            )
    return load(path, 1, True, monkeypatch), load(path, 1, False, monkeypatch)


def labels(model):
    return [s["label"] for s in model.steps()]


# --------------------------------------------------------------------------------------------
# Converted PyTorch models
# --------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch", reason="building test models needs the tools extra")

from conftest import (  # noqa: E402
    convert_model,
    random_inputs,
    zoo_model,
)

from weights_tools.convert import randomize_bn  # noqa: E402
from weights_tools.zoo import MODEL_NAMES, build_model  # noqa: E402


@pytest.mark.parametrize(
    "name,se",
    [(n, None) for n in MODEL_NAMES] + [("qb_net_small", "se1"), ("qsb_net_large", "se2")],
)
def test_zoo_fused_equals_unfused(tmp_path, monkeypatch, name, se):
    seed = SEED + MODEL_NAMES.index(name)
    model = zoo_model(name, seed, se=se)
    path = convert_model(model, tmp_path, name, (32, 32))[0]
    fused, unfused = assert_fused_equals_unfused(
        path, random_inputs((6, 3, 32, 32), seed), monkeypatch
    )

    got = labels(fused)
    assert len(labels(unfused)) == len(unfused.ops()) > len(got)
    # Every B half: binary conv + its tail; every DS half: depthwise + tail + the bits.
    assert got.count("BCONV2D+ADD+PRELU+AFFINE") == labels(unfused).count("BCONV2D")
    assert "BITPACK" not in got and "ADD" not in got and "PRELU" not in got
    if se is None:
        assert "DWCONV3X3+ADD+PRELU+AFFINE+BITPACK" in got
        assert "DWCONV3X3+ADD+PRELU+AFFINE+BITPACK+CONCAT" in got  # the repeated shortcut
        assert "CONCAT" not in got
    else:
        # The SE reads the whole depthwise output first; its tail is one in-place pass.
        assert any(lab.startswith("MUL_CHANNEL+ADD+PRELU+AFFINE+BITPACK") for lab in got)
        assert any(s["inplace"] for s in fused.steps())
    # Fused intermediates take no arena bytes; repacked weights are 64-byte multiples.
    assert fused.arena_bytes <= unfused.arena_bytes
    assert all(s["packed_bytes"] % 64 == 0 for s in fused.steps())


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_float_conv_and_its_relu6_run_as_one_step(tmp_path, monkeypatch, name):
    # CONV2D -> CLIP (ReLU6) is one step: the conv kernel clips the rows as it writes them
    # (Conv2DKernels::run_rows_clip), bit-identical to the two ops apart. Every CONV2D that a
    # CLIP alone reads (the stem, every pointwise / expansion conv) fuses; MobileNetV2's linear
    # projections stay CONV2D. DWCONV3X3 -> CLIP is one step too (the clip is the epilogue's
    # step 5b, on each block of rows the depthwise kernel wrote): no CLIP is left alone.
    torch.manual_seed(SEED)
    model = build_model(name, num_classes=10)
    randomize_bn(model, seed=SEED)
    path = convert_model(model.eval(), tmp_path, name, (32, 32))[0]
    fused, unfused = assert_fused_equals_unfused(
        path, random_inputs((3, 3, 32, 32), SEED), monkeypatch
    )
    got, ref = labels(fused), labels(unfused)
    pairs = sum(a == "CONV2D" and b == "CLIP" for a, b in zip(ref, ref[1:]))
    assert pairs >= 14 and got.count("CONV2D+CLIP") == pairs, got
    dw_pairs = sum(a == "DWCONV3X3" and b == "CLIP" for a, b in zip(ref, ref[1:]))
    assert dw_pairs == ref.count("DWCONV3X3") == ref.count("CLIP") - pairs >= 9, ref
    assert got.count("DWCONV3X3+CLIP") == dw_pairs, got
    assert "CLIP" not in got and "DWCONV3X3" not in got, got
    assert got.count("CONV2D") == ref.count("CONV2D") - pairs, got
    assert len(got) == len(ref) - pairs - dw_pairs, got


def test_non_zoo_nets_fused_equals_unfused(tmp_path, monkeypatch):
    from test_engine_e2e import OddNet, SingleBinaryConv

    torch.manual_seed(SEED)
    odd = OddNet()
    randomize_bn(odd, seed=SEED)
    odd.eval()
    path = convert_model(odd, tmp_path, "oddnet", (20, 28))[0]
    fused, _ = assert_fused_equals_unfused(path, random_inputs((5, 3, 20, 28), SEED), monkeypatch)
    assert any(lab.startswith("BCONV2D+") for lab in labels(fused))

    torch.manual_seed(SEED + 1)
    single = SingleBinaryConv(130, 33, 3, "zero").eval()
    path = convert_model(single, tmp_path, "single", (5, 6), in_channels=130)[0]
    assert_fused_equals_unfused(path, random_inputs((3, 130, 5, 6), SEED), monkeypatch)


@pytest.mark.parametrize(
    "fc,depthwise,calibrate",
    [
        ("bitplane8", "int8", False),
        ("int8", "int8", True),
    ],
)
def test_quantized_paths_fused_equals_unfused(tmp_path, monkeypatch, fc, depthwise, calibrate):
    torch.manual_seed(SEED)
    model = build_model("qsb_net_small", num_classes=10, se="se1")
    randomize_bn(model, seed=SEED)
    model.eval()
    calibration = random_inputs((4, 3, 32, 32), SEED + 7) if calibrate else None
    path = convert_model(
        model, tmp_path, "quant", (32, 32), fc=fc, depthwise=depthwise, calibration=calibration
    )[0]
    assert_fused_equals_unfused(path, random_inputs((4, 3, 32, 32), SEED + 3), monkeypatch)


# --------------------------------------------------------------------------------------------
# Hand-built graphs: where a chain must stop
# --------------------------------------------------------------------------------------------
def vec(g, rng, name, c, scale=1.0):
    return g.tensor(name, randn(rng, c, scale=scale))


def bconv(g, rng, name, bits, h, w, ci, co, k=3, pad=0):
    w_pm1 = np.where(rng.random((co, k, k, ci)) < 0.5, -1, 1)
    return g.op(
        BCONV2D,
        name,
        [bits],
        g.value(name, h, w, co),
        [
            g.tensor(name + ".w", pack_minus_one(w_pm1 < 0)),
            vec(g, rng, name + ".s", co, 0.05),
            vec(g, rng, name + ".b", co),
        ],
        [k, pad],
    )


def tail(g, rng, name, x, shape, ops=("prelu", "affine")):
    for op in ops:
        if op == "prelu":
            x = g.op(
                PRELU,
                f"{name}.prelu",
                [x],
                g.value(f"{name}.prelu", *shape),
                [vec(g, rng, f"{name}.slope", shape[2], 0.3)],
            )
        elif op == "affine":
            x = g.op(
                AFFINE,
                f"{name}.bn",
                [x],
                g.value(f"{name}.bn", *shape),
                [vec(g, rng, f"{name}.bs", shape[2]), vec(g, rng, f"{name}.bb", shape[2])],
            )
        elif op == "relu":
            x = g.op(RELU, f"{name}.relu", [x], g.value(f"{name}.relu", *shape))
    return x


def head(g, x, c):
    g.op(GLOBAL_AVGPOOL, "gap", [x], g.value("gap", 1, 1, c))
    g.output_value = len(g.values) - 1


def test_binary_chain_packs_bits_for_the_next_binary_conv(tmp_path, monkeypatch):
    """B half -> B half (no DS between): the first two chains write only bits (their floats have
    no other reader); the third keeps its floats, which a residual add reads too."""
    rng = rng_for(101)
    h, w, c = 9, 7, 70
    g = Graph("bb")
    x = g.value("x", h, w, c)
    b0 = g.op(BITPACK, "sign0", [x], g.value("b0", h, w, c, BITS), [vec(g, rng, "t0", c, 0.2)])
    y = bconv(g, rng, "conv1", b0, h, w, c, c)
    y = g.op(ADD, "add1", [x, y], g.value("add1", h, w, c))
    y = tail(g, rng, "t1", y, (h, w, c))
    b1 = g.op(BITPACK, "sign1", [y], g.value("b1", h, w, c, BITS), [vec(g, rng, "t1t", c, 0.2)])
    z = bconv(g, rng, "conv2", b1, h, w, c, 64, k=1)
    z = tail(g, rng, "t2", z, (h, w, 64), ("affine",))
    b2 = g.op(BITPACK, "sign2", [z], g.value("b2", h, w, 64, BITS), [vec(g, rng, "t2t", 64, 0.2)])
    u = bconv(g, rng, "conv3", b2, h, w, 64, 64, pad=1)
    u = tail(g, rng, "t3", u, (h, w, 64), ("affine",))
    b3 = g.op(BITPACK, "sign3", [u], g.value("b3", h, w, 64, BITS), [vec(g, rng, "t3t", 64, 0.2)])
    v = bconv(g, rng, "conv4", b3, h, w, 64, 64, k=1)
    v = g.op(ADD, "add4", [v, u], g.value("add4", h, w, 64))
    head(g, v, 64)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 4, h, w, c), monkeypatch, "nhwc")
    got = labels(fused)
    assert got == [
        "BITPACK",
        "BCONV2D+ADD+PRELU+AFFINE+BITPACK",
        "BCONV2D+AFFINE+BITPACK",
        "BCONV2D+AFFINE+BITPACK",
        "BCONV2D+ADD",
        "GLOBAL_AVGPOOL",
    ], got


def dwconv_plus_input(g, rng, x, h, w, c):
    """x -> DWCONV3X3 "dw" (random weights, scale and bias) -> ADD "add" of x: a residual
    block's start, whose ADD begins an epilogue chain."""
    dw = g.op(
        DWCONV3X3,
        "dw",
        [x],
        g.value("dw", h, w, c),
        [
            None,
            g.tensor("dw.w", randn(rng, c, 9)),
            None,
            vec(g, rng, "dw.s", c),
            vec(g, rng, "dw.b", c),
            None,
        ],
        [1, 1, 1],
    )
    return g.op(ADD, "add", [dw, x], g.value("add", h, w, c))


def test_chains_stop_at_a_second_reader_and_the_graph_output(tmp_path, monkeypatch):
    rng = rng_for(102)
    h, w, c = 6, 5, 12
    g = Graph("readers")
    x = g.value("x", h, w, c)
    s = dwconv_plus_input(g, rng, x, h, w, c)
    p = tail(g, rng, "t", s, (h, w, c), ("prelu",))
    # `add` has a second reader: the chain is DWCONV+ADD only... and PRELU starts its own.
    q = g.op(ADD, "again", [s, p], g.value("again", h, w, c))
    # AFFINE -> PRELU is the epilogue's mid affine and PReLU; a second PRELU is out of order.
    a = tail(g, rng, "u", q, (h, w, c), ("affine", "prelu"))
    a = tail(g, rng, "v", a, (h, w, c), ("prelu",))
    g.output_value = a
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 3, h, w, c), monkeypatch, "nhwc")
    got = labels(fused)
    assert got[0] == "DWCONV3X3+ADD", got
    # The graph output ends the last chain; PRELU after PRELU is out of the epilogue's order.
    assert got[-2] == "ADD+AFFINE+PRELU" and got[-1] == "PRELU", got


def test_inplace_chain_only_when_its_base_is_dead(tmp_path, monkeypatch):
    """An element-wise chain updates its first input in place, so only when nothing reads that
    input later; here one base is read again (no fusion), another is not (fused, in place)."""
    rng = rng_for(103)
    h, w, c = 5, 4, 20
    g = Graph("inplace")
    x = g.value("x", h, w, c)
    r = g.op(RELU, "r", [x], g.value("r", h, w, c))
    s = g.op(GLOBAL_AVGPOOL, "se.gap", [r], g.value("se.gap", 1, 1, c))
    s = g.op(SIGMOID, "se.sig", [s], g.value("se.sig", 1, 1, c))
    m1 = g.op(MUL_CHANNEL, "mul1", [r, s], g.value("mul1", h, w, c))
    t1 = tail(g, rng, "t1", m1, (h, w, c))
    keep = g.op(ADD, "reads_r_again", [t1, r], g.value("keep", h, w, c))  # r read after mul1
    m2 = g.op(MUL_CHANNEL, "mul2", [keep, s], g.value("mul2", h, w, c))
    t2 = tail(g, rng, "t2", m2, (h, w, c))
    b = g.op(BITPACK, "sign", [t2], g.value("bits", h, w, c, BITS), [vec(g, rng, "thr", c, 0.1)])
    y = bconv(g, rng, "conv", b, h, w, c, 8, k=1)
    head(g, y, 8)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 3, h, w, c), monkeypatch, "nhwc")
    steps = fused.steps()
    got = labels(fused)
    assert "MUL_CHANNEL+PRELU+AFFINE" not in got, got  # its base `r` is read later
    inplace = [s["label"] for s in steps if s["inplace"]]
    assert "MUL_CHANNEL+PRELU+AFFINE+BITPACK" in inplace, got


def test_concat_of_different_values_stays_a_concat(tmp_path, monkeypatch):
    rng = rng_for(104)
    h, w, c = 8, 6, 10
    g = Graph("concat")
    x = g.value("x", h, w, c)
    dw = g.op(
        DWCONV3X3,
        "dw",
        [x],
        g.value("dw", 4, 3, 2 * c),
        [
            vec(g, rng, "pb", c, 0.2),
            g.tensor("dw.w", randn(rng, 2 * c, 9)),
            None,
            vec(g, rng, "dw.s", 2 * c),
            vec(g, rng, "dw.b", 2 * c),
            None,
        ],
        [2, 2, 2],
    )
    p = g.op(AVGPOOL, "pool", [x], g.value("pool", 4, 3, c), attrs=[2, 2, 2, 2])
    r = g.op(RELU, "relu", [p], g.value("relu", 4, 3, c))
    cat = g.op(CONCAT, "cat", [p, r], g.value("cat", 4, 3, 2 * c))
    s = g.op(ADD, "add", [cat, dw], g.value("add", 4, 3, 2 * c))  # conv result second
    t = tail(g, rng, "t", s, (4, 3, 2 * c))
    b = g.op(BITPACK, "sign", [t], g.value("bits", 4, 3, 2 * c, BITS), [vec(g, rng, "thr", 2 * c)])
    y = bconv(g, rng, "conv", b, 4, 3, 2 * c, 2 * c)
    y = g.op(ADD, "add2", [y, t], g.value("add2", 4, 3, 2 * c))
    head(g, y, 2 * c)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 3, h, w, c), monkeypatch, "nhwc")
    got = labels(fused)
    assert "CONCAT" in got and "DWCONV3X3+ADD+PRELU+AFFINE+BITPACK" in got, got
    assert "BCONV2D+ADD" in got, got


def test_stem_fc_and_large_elementwise_split_across_threads(tmp_path, monkeypatch):
    """Ops that are not chains (CONV2D rows, element-wise by pixels, FC by outputs) give the
    same bits split across threads as on one."""
    rng = rng_for(105)
    h, w = 70, 66
    g = Graph("wide")
    x = g.value("x", h, w, 3)
    y = g.op(
        CONV2D,
        "stem",
        [x],
        g.value("stem", 35, 33, 32),
        [g.tensor("sw", randn(rng, 32, 3, 3, 3, scale=0.3)), vec(g, rng, "sb", 32)],
        [3, 3, 2, 2, 1, 1, 1, 1, 1],
    )
    y = g.op(SIGMOID, "sig", [y], g.value("sig", 35, 33, 32))
    y = g.op(ADD, "twice", [y, y], g.value("twice", 35, 33, 32))
    p = g.op(GLOBAL_AVGPOOL, "gap", [y], g.value("gap", 1, 1, 32))
    g.op(
        FC,
        "fc",
        [p],
        g.value("out", 1, 1, 9000),
        [g.tensor("fw", randn(rng, 9000, 32)), None, vec(g, rng, "fb", 9000)],
        [0],
    )
    g.output_value = len(g.values) - 1
    path = save(tmp_path, g)
    assert_fused_equals_unfused(
        path, randn(rng, 3, h, w, 3), monkeypatch, "nhwc", threads=(1, 2, 4)
    )


def test_fusion_switch_and_step_listing(tmp_path, monkeypatch):
    g = Graph("tiny")
    rng = rng_for(106)
    x = g.value("x", 4, 4, 8)
    y = tail(g, rng, "t", x, (4, 4, 8), ("prelu", "affine"))
    head(g, y, 8)
    path = save(tmp_path, g)
    m = load(path, 1, True, monkeypatch)
    assert [s["label"] for s in m.steps()] == ["PRELU+AFFINE", "GLOBAL_AVGPOOL"]
    step = m.steps()[0]
    assert step["kind"] == "epilogue_chain" and step["inplace"] and step["ops"] == [0, 1]
    m0 = load(path, 1, False, monkeypatch)
    assert [s["kind"] for s in m0.steps()] == ["op"] * 3
    assert m.isa == m0.isa == _core.active_isa()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_threaded_model_survives_fork(tmp_path, monkeypatch):
    """After fork() the child has none of the pool's workers: it runs every part itself, with
    the same results, instead of waiting forever."""
    g = Graph("fork")
    rng = rng_for(107)
    x = g.value("x", 40, 30, 64)
    y = tail(g, rng, "t", x, (40, 30, 64), ("prelu", "affine"))
    head(g, y, 64)
    m = load(save(tmp_path, g), 2, True, monkeypatch)
    xs = randn(rng, 1, 40, 30, 64)
    want = m.run(xs, "nhwc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()"
        pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just an exit code
        code = 0 if np.array_equal(m.run(xs, "nhwc"), want) else 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(m.run(xs, "nhwc"), want)


def test_affine_between_shortcut_and_prelu_joins_the_chain(tmp_path, monkeypatch):
    """ReActNet's RPReLU after a shortcut: ADD -> AFFINE (learnable bias) -> PRELU -> AFFINE runs
    in the conv's epilogue (the first AFFINE as its mid affine), bit-identical to the ops run
    one by one; an AFFINE with no PRELU after it stays the post affine."""
    rng = rng_for(104)
    h, w, c = 7, 6, 24
    g = Graph("rprelu")
    x = g.value("x", h, w, c)
    s = dwconv_plus_input(g, rng, x, h, w, c)
    t = tail(g, rng, "t", s, (h, w, c), ("affine", "prelu", "affine"))
    u = g.op(ADD, "add2", [t, x], g.value("add2", h, w, c))
    v = tail(g, rng, "u", u, (h, w, c), ("affine",))
    head(g, v, c)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 3, h, w, c), monkeypatch, "nhwc")
    got = labels(fused)
    assert got[0] == "DWCONV3X3+ADD+AFFINE+PRELU+AFFINE", got
    assert got[1] == "ADD+AFFINE", got


def test_relu_then_affine_before_the_shortcut_joins_the_conv_chain(tmp_path, monkeypatch):
    """QuickNet's block, BCONV2D -> RELU -> AFFINE (its BN after the ReLU) -> ADD -> BITPACK, runs
    as one step (the ReLU and that AFFINE as the epilogue's first steps), bit-identical to the ops
    one by one. A RELU with a second reader, a RELU after a step already taken and an AFFINE
    right after a conv (no ReLU before it) keep their old plans."""
    rng = rng_for(105)
    h, w, c = 8, 7, 70
    g = Graph("quicknet_block")
    x = g.value("x", h, w, c)
    b0 = g.op(BITPACK, "sign0", [x], g.value("b0", h, w, c, BITS), [vec(g, rng, "t0", c, 0.2)])
    y = bconv(g, rng, "conv1", b0, h, w, c, c, pad=1)
    y = tail(g, rng, "q1", y, (h, w, c), ("relu", "affine"))
    y = g.op(ADD, "add1", [y, x], g.value("add1", h, w, c))
    b1 = g.op(BITPACK, "sign1", [y], g.value("b1", h, w, c, BITS), [vec(g, rng, "t1", c, 0.2)])
    # RELU -> AFFINE -> ADD -> PRELU -> AFFINE: every step but the channel scale and the mid.
    z = bconv(g, rng, "conv2", b1, h, w, c, c, pad=1)
    z = tail(g, rng, "q2", z, (h, w, c), ("relu", "affine"))
    z = g.op(ADD, "add2", [z, y], g.value("add2", h, w, c))
    z = tail(g, rng, "q2p", z, (h, w, c), ("prelu", "affine"))
    b2 = g.op(BITPACK, "sign2", [z], g.value("b2", h, w, c, BITS), [vec(g, rng, "t2", c, 0.2)])
    # An AFFINE straight after the conv is still its post affine: the RELU after it stops.
    u = bconv(g, rng, "conv3", b2, h, w, c, c, pad=1)
    u = tail(g, rng, "q3", u, (h, w, c), ("affine", "relu"))
    # A RELU whose input a second op reads stays apart.
    v = g.op(
        DWCONV3X3,
        "dw",
        [u],
        g.value("dw", h, w, c),
        [
            None,
            g.tensor("dw.w", randn(rng, c, 9)),
            None,
            vec(g, rng, "dw.s", c),
            vec(g, rng, "dw.b", c),
            None,
        ],
        [1, 1, 1],
    )
    r = g.op(RELU, "dw.relu", [v], g.value("dw.relu", h, w, c))
    s = g.op(ADD, "add4", [r, v], g.value("add4", h, w, c))
    head(g, s, c)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(path, randn(rng, 3, h, w, c), monkeypatch, "nhwc")
    got = labels(fused)
    assert got[:5] == [
        "BITPACK",
        "BCONV2D+RELU+AFFINE+ADD+BITPACK",
        "BCONV2D+RELU+AFFINE+ADD+PRELU+AFFINE+BITPACK",
        "BCONV2D+AFFINE",
        "RELU",
    ], got
    assert "DWCONV3X3+RELU" not in got, got


# --------------------------------------------------------------------------------------------
# DWCONV3X3 -> CLIP (the MobileNets' depthwise conv and its ReLU6): the clip in the epilogue
# --------------------------------------------------------------------------------------------
CLIP_BOUNDS = [
    (0.0, 6.0),  # ReLU6
    (-0.5, 1.25),  # asymmetric
    (-3.0, -1.0),  # entirely below zero
    (0.75, 0.75),  # one point
    (-np.inf, 0.5),
    (-1.0, np.inf),
    (-0.0, 0.0),  # signed zeros: equal as numbers, valid either way round
    (0.0, -0.0),
]


def clip_op(g, name, x, shape, bounds):
    lo_hi = g.tensor(name + ".bounds", np.array(bounds, np.float32))
    return g.op(CLIP, name, [x], g.value(name, *shape), [lo_hi])


def dwconv_op(g, rng, name, x, h, w, c, k=1, stride=(1, 1), dilation=1, int8=False, pre_bias=True):
    """A DWCONV3X3 with random weights (f32, or INT8 with a dynamic input scale); returns its
    output value and shape."""
    kc = k * c
    ho, wo = -(-h // stride[0]), -(-w // stride[1])
    pb = g.tensor(name + ".pb", randn(rng, c, scale=0.3)) if pre_bias else None
    if int8:
        weights = [
            g.tensor(name + ".w", rng.integers(-127, 128, (kc, 9)).astype(np.int8)),
            g.tensor(name + ".ws", (rng.random(kc) * 0.05 + 0.01).astype(np.float32)),
        ]
        in_scale = g.tensor(name + ".in_scale", np.zeros(1, np.float32))
    else:
        weights = [g.tensor(name + ".w", randn(rng, kc, 9)), None]
        in_scale = None
    out = g.op(
        DWCONV3X3,
        name,
        [x],
        g.value(name, ho, wo, kc),
        [pb, *weights, vec(g, rng, name + ".s", kc), vec(g, rng, name + ".b", kc), in_scale],
        [stride[0], stride[1], k, dilation],
    )
    return out, (ho, wo, kc)


def hostile_input(rng, n, h, w, c):
    """Random images with NaN, +-inf, +-0 and huge values sprinkled in (a NaN or an infinity
    reaches every output its taps touch, and 3e38 * weights overflows)."""
    x = randn(rng, n, h, w, c, scale=2.0)
    flat = x.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38], np.float32)
    count = max(1, flat.size // 40)
    flat[rng.integers(0, flat.size, count)] = rng.choice(specials, count)
    return x


@pytest.mark.parametrize("case", range(16))
def test_dwconv_then_clip_is_one_step_and_bit_identical(tmp_path, monkeypatch, case):
    """DWCONV3X3 (plain, strided, dilated, with a channel multiplier, INT8) whose only reader is
    a CLIP runs as one step, the CLIP as the epilogue's last step, bit-identical to the two ops
    apart (NaN, infinities and signed zeros included) for every thread count."""
    rng = rng_for(110, case)
    bounds = CLIP_BOUNDS[case % len(CLIP_BOUNDS)]
    h, w = (int(v) for v in rng.integers(1, 12, 2))
    c = int(rng.choice([1, 3, 8, 13, 16, 24, 40, 64]))
    k = int(rng.choice([1, 1, 2, 3]))
    kind = case % 4  # 0 plain, 1 strided, 2 dilated, 3 INT8
    stride = [(1, 1), tuple(int(v) for v in rng.choice([1, 2], 2)), (1, 1), (2, 2)][kind]
    dilation = int(rng.integers(2, 5)) if kind == 2 else 1
    g = Graph("dw_clip")
    x = g.value("x", h, w, c)
    y, shape = dwconv_op(
        g, rng, "dw", x, h, w, c, k, stride, dilation, int8=kind == 3, pre_bias=case % 3 != 0
    )
    g.output_value = clip_op(g, "relu6", y, shape, bounds)
    path = save(tmp_path, g)
    inputs = hostile_input(rng, 3, h, w, c)
    fused, unfused = assert_fused_equals_unfused(path, inputs, monkeypatch, "nhwc")
    assert labels(fused) == ["DWCONV3X3+CLIP"], labels(fused)
    assert labels(unfused) == ["DWCONV3X3", "CLIP"]
    # The clip did run: every output within the bounds, or NaN.
    out = fused.run(inputs, "nhwc")
    kept = out[~np.isnan(out)]
    assert ((kept >= bounds[0]) & (kept <= bounds[1])).all(), (bounds, kept.min(), kept.max())


def test_dwconv_clip_fusion_stops_where_it_must(tmp_path, monkeypatch):
    """The depthwise output read a second time stays its own step (and so does its CLIP); a
    second CLIP after a fused one is out of the epilogue's order; an AFFINE between the conv
    and the CLIP joins, and the BITPACK after the CLIP packs from the clipped values (the floats
    then unwritten, as nothing else reads them)."""
    rng = rng_for(111)
    h, w, c = 7, 9, 24
    g = Graph("dw_clip_stops")
    x = g.value("x", h, w, c)
    # A second reader: dw -> CLIP and dw -> ADD.
    d1, shape = dwconv_op(g, rng, "dw1", x, h, w, c)
    c1 = clip_op(g, "clip1", d1, shape, (0.0, 6.0))
    a1 = g.op(ADD, "add1", [c1, d1], g.value("add1", *shape))
    # Fused, then a second CLIP: out of order, its own step.
    d2, shape = dwconv_op(g, rng, "dw2", a1, h, w, c)
    c2 = clip_op(g, "clip2", d2, shape, (-1.0, 2.0))
    c3 = clip_op(g, "clip3", c2, shape, (0.0, 1.5))
    # DW -> AFFINE -> CLIP -> BITPACK: one step; the bits feed a binary conv.
    d3, shape = dwconv_op(g, rng, "dw3", c3, h, w, c, k=2, stride=(2, 1))
    t3 = tail(g, rng, "t3", d3, shape, ("affine",))
    c4 = clip_op(g, "clip4", t3, shape, (0.0, 6.0))
    bits = g.op(
        BITPACK, "sign", [c4], g.value("bits", *shape, BITS), [vec(g, rng, "thr", shape[2], 2.0)]
    )
    y = bconv(g, rng, "conv", bits, shape[0], shape[1], shape[2], 16, k=1)
    head(g, y, 16)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(
        path, hostile_input(rng, 3, h, w, c), monkeypatch, "nhwc"
    )
    assert labels(fused) == [
        "DWCONV3X3",
        "CLIP",
        "ADD",
        "DWCONV3X3+CLIP",
        "CLIP",
        "DWCONV3X3+AFFINE+CLIP+BITPACK",
        "BCONV2D",
        "GLOBAL_AVGPOOL",
    ], labels(fused)


def test_chain_with_every_epilogue_step(tmp_path, monkeypatch):
    """The longest chain: a binary conv, then one op for each of the epilogue's 8 steps (RELU,
    AFFINE, MUL_CHANNEL, ADD of a repeated shortcut, AFFINE, PRELU, AFFINE, CLIP), the BITPACK
    and the absorbed CONCAT: 11 ops in one step, bit-identical to the ops one by one."""
    rng = rng_for(112)
    h, w, rc, reps = 6, 5, 24, 3
    c = rc * reps
    g = Graph("every_step")
    x = g.value("x", h, w, rc)
    se = g.op(GLOBAL_AVGPOOL, "se.gap", [x], g.value("se.gap", 1, 1, rc))
    se = g.op(SIGMOID, "se.sig", [se], g.value("se.sig", 1, 1, rc))
    se = g.op(CONCAT, "se.cat", [se] * reps, g.value("se.cat", 1, 1, c))
    b0 = g.op(BITPACK, "sign0", [x], g.value("b0", h, w, rc, BITS), [vec(g, rng, "t0", rc, 0.2)])
    y = bconv(g, rng, "conv1", b0, h, w, rc, c, pad=1)
    y = tail(g, rng, "q", y, (h, w, c), ("relu", "affine"))
    y = g.op(MUL_CHANNEL, "se.mul", [y, se], g.value("se.mul", h, w, c))
    short = g.op(CONCAT, "short", [x] * reps, g.value("short", h, w, c))
    y = g.op(ADD, "add", [y, short], g.value("add", h, w, c))
    y = tail(g, rng, "r", y, (h, w, c), ("affine", "prelu", "affine"))
    y = clip_op(g, "clip", y, (h, w, c), (-0.5, 1.5))
    b1 = g.op(BITPACK, "sign1", [y], g.value("b1", h, w, c, BITS), [vec(g, rng, "t1", c, 0.3)])
    z = bconv(g, rng, "conv2", b1, h, w, c, 8, k=1)
    head(g, z, 8)
    path = save(tmp_path, g)
    fused, _ = assert_fused_equals_unfused(
        path, hostile_input(rng, 3, h, w, rc), monkeypatch, "nhwc"
    )
    chain = "BCONV2D+RELU+AFFINE+MUL_CHANNEL+ADD+AFFINE+PRELU+AFFINE+CLIP+BITPACK+CONCAT"
    assert chain in labels(fused), labels(fused)
