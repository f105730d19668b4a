"""The .qbw reader and the graph executor of qbinfer._core (csrc/format, csrc/engine).

Files are written by a small numpy serializer in this file (independent of weights_tools, and
able to write files that break every rule of docs/format.md). Valid graphs are run and compared
with numpy; hostile files are loaded in subprocesses, so a crash is a test failure and not the
end of the test run. Random cases derive their seed from BASE_SEED; the seed is in the test id.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from qbinfer import _core, _testing

BASE_SEED = 0x0B1F_F11E

# --------------------------------------------------------------------------------------------
# A minimal .qbw serializer (docs/format.md), deliberately without validation.
# --------------------------------------------------------------------------------------------
MAGIC = b"\x89QBW\r\n\x1a\n"
F32, I8, BITS = 0, 1, 2
ABSENT = 0xFFFFFFFF
(
    CONV2D,
    DWCONV3X3,
    BITPACK,
    BCONV2D,
    AFFINE,
    PRELU,
    RELU,
    SIGMOID,
    ADD,
    MUL_CHANNEL,
    AVGPOOL,
    GLOBAL_AVGPOOL,
    CONCAT,
    FC,
    MAXPOOL,
    CLIP,
) = range(1, 17)
BFC = 18  # code 17: BCONV2D_GENERAL
AVGPOOL2D = 20  # code 19: SOFTMAX
OP_NAMES = {
    1: "CONV2D",
    2: "DWCONV3X3",
    3: "BITPACK",
    4: "BCONV2D",
    5: "AFFINE",
    6: "PRELU",
    7: "RELU",
    8: "SIGMOID",
    9: "ADD",
    10: "MUL_CHANNEL",
    11: "AVGPOOL",
    12: "GLOBAL_AVGPOOL",
    13: "CONCAT",
    14: "FC",
    15: "MAXPOOL",
    16: "CLIP",
    18: "BFC",
    19: "SOFTMAX",
    20: "AVGPOOL2D",
    21: "RESIZE",
}
NP_DTYPE = {F32: np.dtype("<f4"), I8: np.dtype("i1"), BITS: np.dtype("<u8")}


def words(c):
    return (c + 63) // 64


def pack_minus_one(minus_one):
    """bool [..., C] (True = -1) -> uint64 [..., words(C)], the bit contract, tail bits 0."""
    c = minus_one.shape[-1]
    padded = np.zeros(minus_one.shape[:-1] + (words(c) * 64,), dtype=bool)
    padded[..., :c] = minus_one
    return np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little")).view("<u8")


class Graph:
    """Tensors, values and ops, serialized exactly as given (no checks)."""

    def __init__(self, name="tiny"):
        self.producer = "test_engine_format"
        self.model_name = name
        self.tensors = []  # dict(name, dtype, dims, data bytes, offset=None)
        self.values = []  # (name, dtype, h, w, c)
        self.ops = []  # dict(type, name, inputs, outputs, tensors, attrs)
        self.input_value = 0
        self.output_value = 0
        self.preproc = None  # (resize_short, crop_h, crop_w, mean3, std3, pixel_scale)
        self.class_names = []
        self.metadata_json = '{"test": true}'
        self.version = (1, 0)
        self.extra_meta = b""  # bytes appended after metadata_json (minor-version fields)

    def tensor(self, name, arr, dtype=None, dims=None):
        arr = np.asarray(arr)
        if dtype is None:
            dtype = {np.dtype("float32"): F32, np.dtype("int8"): I8, np.dtype("uint64"): BITS}[
                arr.dtype
            ]
        data = np.ascontiguousarray(arr, dtype=NP_DTYPE[dtype]).tobytes()
        self.tensors.append(
            dict(
                name=name,
                dtype=dtype,
                dims=list(dims or arr.shape),
                data=data,
                offset=None,
                nbytes=None,
            )
        )
        return len(self.tensors) - 1

    def value(self, name, h, w, c, dtype=F32):
        self.values.append((name, dtype, h, w, c))
        return len(self.values) - 1

    def op(self, type_, name, inputs, output, tensors=(), attrs=()):
        self.ops.append(
            dict(
                type=type_,
                name=name,
                inputs=list(inputs),
                outputs=[output],
                tensors=[ABSENT if t is None else t for t in tensors],
                attrs=list(attrs),
            )
        )
        return output

    def serialize(self, marks=None):
        """The file as bytes. `marks`, if a list, receives (label, file offset) at every
        header field and record boundary of the meta section."""
        meta = bytearray()

        def mark(label):
            if marks is not None:
                marks.append((label, 64 + len(meta)))

        def u32(v):
            meta.extend(struct.pack("<I", v & 0xFFFFFFFF))

        def string(s):
            b = s.encode() if isinstance(s, str) else s
            u32(len(b))
            meta.extend(b)

        # Data layout first (offsets go into the tensor records).
        data = bytearray()
        for t in self.tensors:
            if t["offset"] is None:
                t["_offset"] = len(data)
                data.extend(t["data"])
                data.extend(b"\0" * (-len(data) % 64))
            else:
                t["_offset"] = t["offset"]
        mark("producer")
        string(self.producer)
        mark("model_name")
        string(self.model_name)
        mark("n_tensors")
        u32(len(self.tensors))
        for i, t in enumerate(self.tensors):
            mark(f"tensor {i}")
            string(t["name"])
            u32(t["dtype"])
            u32(len(t["dims"]))
            for d in t["dims"]:
                meta.extend(struct.pack("<Q", d & (2**64 - 1)))
            meta.extend(struct.pack("<Q", t["_offset"] & (2**64 - 1)))
            nbytes = len(t["data"]) if t["nbytes"] is None else t["nbytes"]
            meta.extend(struct.pack("<Q", nbytes & (2**64 - 1)))
        mark("n_values")
        u32(len(self.values))
        for i, (name, dtype, h, w, c) in enumerate(self.values):
            mark(f"value {i}")
            string(name)
            for x in (dtype, h, w, c):
                u32(x)
        mark("input_value")
        u32(self.input_value)
        u32(self.output_value)
        mark("n_ops")
        u32(len(self.ops))
        for i, op in enumerate(self.ops):
            mark(f"op {i}")
            u32(op["type"])
            string(op["name"])
            for key in ("inputs", "outputs", "tensors"):
                mark(f"op {i} {key}")
                u32(len(op[key]))
                for x in op[key]:
                    u32(x)
            mark(f"op {i} attrs")
            u32(len(op["attrs"]))
            for a in op["attrs"]:
                meta.extend(struct.pack("<q", a))
        mark("preprocessing")
        pre = self.preproc
        if pre is None:
            _, _, h, w, _ = self.values[self.input_value]
            pre = (0, h, w, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255)
        resize, ch, cw, mean, std, scale = pre
        u32(resize)
        u32(ch)
        u32(cw)
        meta.extend(struct.pack("<7f", *mean, *std, scale))
        mark("n_classes")
        u32(len(self.class_names))
        for i, n in enumerate(self.class_names):
            mark(f"class name {i}")
            string(n)
        mark("metadata_json")
        string(self.metadata_json)
        meta.extend(self.extra_meta)
        mark("meta end")

        meta_size = len(meta)
        data_offset = 64 + meta_size + (-(64 + meta_size) % 64)
        file_size = data_offset + len(data)
        body = bytes(meta) + b"\0" * (data_offset - 64 - meta_size) + bytes(data)
        return (
            make_header(file_size, meta_size, data_offset, len(data), body, version=self.version)
            + body
        )


HEADER = struct.Struct("<8sHHIQQQQQII")


def make_header(
    file_size,
    meta_size,
    data_offset,
    data_size,
    body,
    version=(1, 0),
    magic=MAGIC,
    header_size=64,
    meta_offset=64,
    reserved=0,
    checksum=None,
):
    head56 = HEADER.pack(
        magic,
        version[0],
        version[1],
        header_size,
        file_size,
        meta_offset,
        meta_size,
        data_offset,
        data_size,
        0,
        0,
    )[:56]
    crc = zlib.crc32(body, zlib.crc32(head56)) if checksum is None else checksum
    return head56 + struct.pack("<II", crc, reserved)


def fix_crc(blob):
    """Recompute the header checksum of (possibly edited) file bytes."""
    blob = bytearray(blob)
    blob[56:60] = struct.pack("<I", zlib.crc32(bytes(blob[64:]), zlib.crc32(bytes(blob[:56]))))
    return bytes(blob)


def header_fields(blob):
    return dict(
        zip(
            [
                "magic",
                "major",
                "minor",
                "header_size",
                "file_size",
                "meta_offset",
                "meta_size",
                "data_offset",
                "data_size",
                "checksum",
                "reserved",
            ],
            HEADER.unpack(blob[:64]),
        )
    )


def with_header(blob, **fields):
    """The same file with some header fields replaced and the CRC recomputed."""
    h = header_fields(blob)
    h.update(fields)
    head = HEADER.pack(
        h["magic"],
        h["major"],
        h["minor"],
        h["header_size"],
        h["file_size"],
        h["meta_offset"],
        h["meta_size"],
        h["data_offset"],
        h["data_size"],
        0,
        h["reserved"],
    )
    return fix_crc(head + blob[64:])


# --------------------------------------------------------------------------------------------
# numpy references of the ops (NHWC, one image).
# --------------------------------------------------------------------------------------------
def ref_conv2d(x, w, b, stride, pads, relu):
    co, kh, kw, ci = w.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((pt, pb), (pl, pr), (0, 0)))
    ho = (xp.shape[0] - kh) // stride[0] + 1
    wo = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((ho, wo, co))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[
                ky : ky + (ho - 1) * stride[0] + 1 : stride[0],
                kx : kx + (wo - 1) * stride[1] + 1 : stride[1],
            ]
            out += patch @ w[:, ky, kx, :].astype(np.float64).T
    out += b
    return np.maximum(out, 0) if relu else out


def dw_taps(u, stride):
    """(Ho, Wo, 9, C) windows of a 3x3 conv with zero padding 1."""
    h, w, c = u.shape
    up = np.pad(u, ((1, 1), (1, 1), (0, 0)))
    ho, wo = -(-h // stride[0]), -(-w // stride[1])
    taps = [
        up[
            ky : ky + (ho - 1) * stride[0] + 1 : stride[0],
            kx : kx + (wo - 1) * stride[1] + 1 : stride[1],
        ]
        for ky in range(3)
        for kx in range(3)
    ]
    return np.stack(taps, axis=2)


def ref_dwconv_f32(x, pre_bias, w, scale, bias, stride, k):
    u = (x + pre_bias).astype(np.float32) if pre_bias is not None else x
    taps = dw_taps(u.astype(np.float64), stride)  # Ho, Wo, 9, C
    c = x.shape[2]
    out = np.concatenate(
        [
            np.einsum("hwtc,ct->hwc", taps, w[j * c : (j + 1) * c].astype(np.float64))
            for j in range(k)
        ],
        axis=2,
    )
    return out * scale + bias


def ref_dwconv_i8(x, pre_bias, q, wscale, scale, bias, stride, k, input_scale):
    """Bit-for-bit the contract: f32 quantization, exact int dot, f32 epilogue in order."""
    u = (x + pre_bias).astype(np.float32) if pre_bias is not None else x.astype(np.float32)
    if input_scale > 0:
        s = np.float32(input_scale)
    else:
        s = np.float32(np.abs(u).max()) / np.float32(127)
        s = s if s > 0 else np.float32(1)
    qu = np.clip(np.rint(u / s), -127, 127).astype(np.int64)
    taps = dw_taps(qu, stride)
    c = x.shape[2]
    acc = np.concatenate(
        [
            np.einsum("hwtc,ct->hwc", taps, q[j * c : (j + 1) * c].astype(np.int64))
            for j in range(k)
        ],
        axis=2,
    )
    requant = (s * wscale).astype(np.float32)
    return ((acc.astype(np.float32) * requant).astype(np.float32) * scale).astype(np.float32) + bias


def ref_bconv(a_pm1, w_pm1, scale, bias, k, pad_mode):
    """a_pm1 (H, W, Ci) in {-1, +1}; w_pm1 (Co, k, k, Ci); exact integer dot."""
    h, w, _ = a_pm1.shape
    p = k // 2
    ap = np.pad(
        a_pm1.astype(np.int64),
        ((p, p), (p, p), (0, 0)),
        constant_values=(1 if pad_mode == 1 else 0),
    )
    dot = np.zeros((h, w, w_pm1.shape[0]), np.int64)
    for ky in range(k):
        for kx in range(k):
            dot += ap[ky : ky + h, kx : kx + w] @ w_pm1[:, ky, kx, :].astype(np.int64).T
    return (dot.astype(np.float32) * scale).astype(np.float32) + bias


def ref_avgpool(x, kh, kw, sh, sw):
    h, w, c = x.shape
    ho, wo = -(-(h - kh) // sh) + 1, -(-(w - kw) // sw) + 1
    out = np.zeros((ho, wo, c))
    for oy in range(ho):
        for ox in range(wo):
            out[oy, ox] = x[oy * sh : min(oy * sh + kh, h), ox * sw : min(ox * sw + kw, w)].mean(
                (0, 1)
            )
    return out


def rng_for(*key):
    return np.random.default_rng([BASE_SEED, *key])


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save(tmp_path, graph_or_bytes, name="m.qbw"):
    path = tmp_path / name
    path.write_bytes(
        graph_or_bytes if isinstance(graph_or_bytes, bytes) else graph_or_bytes.serialize()
    )
    return str(path)


# --------------------------------------------------------------------------------------------
# Small graphs
# --------------------------------------------------------------------------------------------
def stem_graph(rng, h=9, w=11, classes=5, co=8):
    """CONV2D 3x3 s2 p1 relu -> GLOBAL_AVGPOOL -> FC fp32 (and its numpy reference)."""
    g = Graph("stem")
    cw, cb = randn(rng, co, 3, 3, 3, scale=0.3), randn(rng, co)
    fw, fb = randn(rng, classes, co), randn(rng, classes)
    x = g.value("x", h, w, 3)
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    y = g.op(
        CONV2D,
        "stem.conv",
        [x],
        g.value("stem", ho, wo, co),
        [g.tensor("stem.w", cw), g.tensor("stem.b", cb)],
        [3, 3, 2, 2, 1, 1, 1, 1, 1],
    )
    p = g.op(GLOBAL_AVGPOOL, "pool", [y], g.value("pool", 1, 1, co))
    g.op(
        FC,
        "fc",
        [p],
        g.value("logits", 1, 1, classes),
        [g.tensor("fc.w", fw), None, g.tensor("fc.b", fb)],
        [0],
    )
    g.input_value, g.output_value = x, len(g.values) - 1
    g.class_names = [f"class_{i}" for i in range(classes)]
    g.preproc = (12, h, w, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 1 / 255)

    def ref(img):  # img NHWC (H, W, 3)
        y = ref_conv2d(img, cw, cb, (2, 2), (1, 1, 1, 1), True)
        return fw.astype(np.float64) @ y.mean((0, 1)) + fb

    return g, ref


def assert_close(got, want, tol=1e-5, msg=""):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=msg)


# --------------------------------------------------------------------------------------------
# Valid files: properties and numerics
# --------------------------------------------------------------------------------------------
def test_crc32_matches_zlib():
    rng = rng_for(1)
    for n in [0, 1, 7, 8, 9, 63, 64, 1000, 4099]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _testing.crc32(data) == zlib.crc32(data), n
        assert _testing.crc32(data[n // 2 :], _testing.crc32(data[: n // 2])) == zlib.crc32(data), n


def test_stem_graph_properties_and_run(tmp_path):
    rng = rng_for(2)
    g, ref = stem_graph(rng)
    path = save(tmp_path, g)
    m = _core.Model(path)
    assert m.input_shape == (9, 11, 3)
    assert m.num_classes == 5
    assert m.class_names == [f"class_{i}" for i in range(5)]
    assert m.model_name == "stem" and m.producer == "test_engine_format"
    assert json.loads(m.metadata_json) == {"test": True}
    assert m.format_version == (1, 0)
    assert m.threads == 1
    pre = m.preprocessing
    assert pre["resize_short"] == 12 and pre["crop"] == (9, 11)
    assert pre["mean"] == pytest.approx((0.5, 0.4, 0.3)) and pre["std"] == pytest.approx(
        (0.2, 0.25, 0.3)
    )
    assert pre["pixel_scale"] == pytest.approx(1 / 255)
    assert m.weights_bytes == sum(len(t["data"]) for t in g.tensors)
    assert m.arena_bytes > 0 and m.arena_bytes % 64 == 0

    x = randn(rng, 4, 3, 9, 11)  # NCHW
    out = m.run(x)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    want = np.stack([ref(img.transpose(1, 2, 0)) for img in x])
    assert_close(out, want, 1e-4)
    # NHWC gives the same numbers; so does a non-contiguous view.
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(m.run(nhwc, layout="nhwc"), out)
    np.testing.assert_array_equal(m.run(x.transpose(0, 2, 3, 1), "nhwc"), out)
    np.testing.assert_array_equal(m.run(nhwc.transpose(0, 3, 1, 2)), out)
    np.testing.assert_array_equal(m.run(x[1:2]), out[1:2])


def test_ops_summary(tmp_path):
    g, _ = stem_graph(rng_for(3), h=9, w=11, classes=5, co=8)
    ops = _core.Model(save(tmp_path, g)).ops()
    assert [o["type"] for o in ops] == ["CONV2D", "GLOBAL_AVGPOOL", "FC"]
    conv, pool, fc = ops
    assert conv["index"] == 0 and conv["name"] == "stem.conv"
    assert conv["inputs"] == [(9, 11, 3)] and conv["output"] == (5, 6, 8)
    assert conv["params"] == 8 * 27 + 8 and conv["bytes"] == (8 * 27 + 8) * 4
    assert conv["flops"] == 8 * 3 * 9 * 5 * 6 and conv["bops"] == 0
    assert conv["attrs"] == dict(
        kernel_h=3,
        kernel_w=3,
        stride_h=2,
        stride_w=2,
        pad_top=1,
        pad_left=1,
        pad_bottom=1,
        pad_right=1,
        activation=1,
    )
    assert conv["tensors"][0] == {"name": "stem.w", "dtype": "f32", "shape": (8, 3, 3, 3)}
    assert pool["params"] == 0 and pool["flops"] == 0 and pool["attrs"] == {}
    assert fc["flops"] == 5 * 8 and fc["params"] == 5 * 8 + 5 and fc["attrs"] == {"encoding": 0}
    assert fc["tensors"][1] is None


def test_threads_give_identical_results(tmp_path):
    rng = rng_for(4)
    g, _ = stem_graph(rng)
    path = save(tmp_path, g)
    x = randn(rng, 7, 3, 9, 11)
    base = _core.Model(path, 1).run(x)
    for threads in (2, 3, 8):
        m = _core.Model(path, threads=threads, split="always")  # split however small
        assert m.threads == threads
        for _ in range(2):  # the second call reuses the workers and arenas
            np.testing.assert_array_equal(m.run(x), base, err_msg=f"threads={threads}")
        np.testing.assert_array_equal(m.run(x[:1]), base[:1])


@pytest.mark.parametrize("threads", [0, -1, 100000])
def test_bad_thread_count(tmp_path, threads):
    g, _ = stem_graph(rng_for(5))
    with pytest.raises(ValueError, match="threads"):
        _core.Model(save(tmp_path, g), threads)


def test_run_argument_errors(tmp_path):
    g, _ = stem_graph(rng_for(6))
    m = _core.Model(save(tmp_path, g))
    x = np.zeros((2, 3, 9, 11), np.float32)
    with pytest.raises(_core.DtypeError, match="float64"):
        m.run(x.astype(np.float64))
    with pytest.raises(TypeError, match="float32"):  # DtypeError is a TypeError
        m.run(x.astype(">f4"))
    with pytest.raises(_core.DtypeError, match="list"):
        m.run([[1.0]])
    with pytest.raises(_core.ShapeError, match=r"rank-4.*\(3, 9, 11\)"):
        m.run(x[0])
    with pytest.raises(ValueError, match=r"\(3, 9, 11\).*got \(9, 11, 3\).*layout='nhwc'"):
        m.run(np.zeros((2, 9, 11, 3), np.float32))
    with pytest.raises(_core.ShapeError, match=r"'nhwc'.*\(9, 11, 3\)"):
        m.run(x, layout="nhwc")
    with pytest.raises(_core.ShapeError, match="empty"):
        m.run(x[:0])
    with pytest.raises(ValueError, match="layout"):
        m.run(x, layout="chw")
    assert issubclass(_core.ShapeError, _core.Error) and issubclass(_core.ShapeError, ValueError)
    assert issubclass(_core.DtypeError, _core.Error) and issubclass(_core.DtypeError, TypeError)
    assert issubclass(_core.FormatError, _core.Error) and issubclass(_core.Error, Exception)


def test_path_like(tmp_path):
    g, ref = stem_graph(rng_for(7))
    path = save(tmp_path, g)
    x = randn(rng_for(7, 1), 2, 3, 9, 11)
    got = _core.Model(tmp_path / "m.qbw").run(x)  # os.PathLike names the same file as str
    assert_close(got, np.stack([ref(img.transpose(1, 2, 0)) for img in x]), 1e-4)
    np.testing.assert_array_equal(got, _core.Model(path).run(x))


@pytest.mark.parametrize(
    "ci,co,k,pad_mode", [(3, 5, 3, 0), (70, 9, 3, 1), (64, 4, 1, 0), (130, 3, 3, 0), (1, 2, 3, 1)]
)
def test_bitpack_bconv(tmp_path, ci, co, k, pad_mode):
    """BITPACK -> BCONV2D -> GLOBAL_AVGPOOL -> FC: exact integer dots, both paddings."""
    rng = rng_for(8, ci, co, k, pad_mode)
    h, w = 5, 6
    g = Graph()
    thr = randn(rng, ci, scale=0.5)
    w_pm1 = np.where(rng.random((co, k, k, ci)) < 0.5, -1, 1)
    scale, bias = randn(rng, co), randn(rng, co)
    fw, fb = np.eye(co, dtype=np.float32), np.zeros(co, np.float32)
    x = g.value("x", h, w, ci)
    b = g.op(BITPACK, "sign", [x], g.value("bits", h, w, ci, BITS), [g.tensor("thr", thr)])
    y = g.op(
        BCONV2D,
        "bconv",
        [b],
        g.value("y", h, w, co),
        [g.tensor("bw", pack_minus_one(w_pm1 < 0)), g.tensor("bs", scale), g.tensor("bb", bias)],
        [k, pad_mode],
    )
    # The output of BCONV2D is itself the graph output when the image is 1x1; here pool it.
    p = g.op(GLOBAL_AVGPOOL, "gap", [y], g.value("gap", 1, 1, co))
    g.op(
        FC, "fc", [p], g.value("out", 1, 1, co), [g.tensor("fw", fw), None, g.tensor("fb", fb)], [0]
    )
    g.output_value = len(g.values) - 1
    m = _core.Model(save(tmp_path, g))
    xs = randn(rng, 3, h, w, ci)
    xs[0, 0, 0, 0] = thr[0]  # a tie packs to +1
    out = m.run(xs, "nhwc")
    for img, got in zip(xs, out):
        a = np.where(img >= thr, 1, -1)
        want = ref_bconv(a, w_pm1, scale, bias, k, pad_mode).mean((0, 1))
        assert_close(got, want, 1e-5, f"ci={ci} co={co} k={k}")
    bops = [o for o in m.ops() if o["type"] == "BCONV2D"][0]["bops"]
    assert bops == co * ci * k * k * h * w


def dw_graph(rng, h, w, c, k, stride, int8, input_scale=0.0, pre_bias=True):
    g = Graph()
    kc = k * c
    pb = randn(rng, c, scale=0.3) if pre_bias else None
    wf = randn(rng, kc, 9)
    scale, bias = randn(rng, kc), randn(rng, kc)
    x = g.value("x", h, w, c)
    ho, wo = -(-h // stride[0]), -(-w // stride[1])
    y = g.value("dw", ho, wo, kc)
    if int8:
        q = rng.integers(-127, 128, (kc, 9)).astype(np.int8)
        ws = (rng.random(kc).astype(np.float32) * 0.05 + 0.01).astype(np.float32)
        tensors = [
            g.tensor("pb", pb) if pre_bias else None,
            g.tensor("w", q),
            g.tensor("ws", ws),
            g.tensor("s", scale),
            g.tensor("b", bias),
            g.tensor("in_scale", np.array([input_scale], np.float32)),
        ]
    else:
        tensors = [
            g.tensor("pb", pb) if pre_bias else None,
            g.tensor("w", wf),
            None,
            g.tensor("s", scale),
            g.tensor("b", bias),
            None,
        ]
    g.op(DWCONV3X3, "dw", [x], y, tensors, [stride[0], stride[1], k])
    g.op(GLOBAL_AVGPOOL, "gap", [y], g.value("gap", 1, 1, kc))
    g.output_value = len(g.values) - 1

    def ref(img):
        if int8:
            full = ref_dwconv_i8(img, pb, q, ws, scale, bias, stride, k, input_scale)
        else:
            full = ref_dwconv_f32(img, pb, wf, scale, bias, stride, k)
        return full.astype(np.float64).mean((0, 1))

    return g, ref


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 1), (1, 2)])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("int8", [False, True], ids=["f32", "i8"])
def test_dwconv(tmp_path, stride, k, int8):
    rng = rng_for(9, *stride, k, int8)
    g, ref = dw_graph(rng, 7, 6, 5, k, stride, int8, pre_bias=(k != 2))
    m = _core.Model(save(tmp_path, g))
    xs = randn(rng, 2, 7, 6, 5)
    out = m.run(xs, "nhwc")
    for img, got in zip(xs, out):
        assert_close(got, ref(img), 1e-5)
    dw = m.ops()[0]
    assert dw["flops"] == k * 5 * 9 * -(-7 // stride[0]) * -(-6 // stride[1])
    # a 3-attribute record: the dilation it omits is reported with its default
    assert dw["attrs"] == {
        "stride_h": stride[0],
        "stride_w": stride[1],
        "multiplier": k,
        "dilation": 1,
    }


def test_dwconv_int8_static_scale_and_zero_input(tmp_path):
    rng = rng_for(10)
    g, ref = dw_graph(rng, 5, 5, 3, 2, (2, 2), True, input_scale=0.02)
    m = _core.Model(save(tmp_path, g))
    xs = randn(rng, 2, 5, 5, 3)
    out = m.run(xs, "nhwc")
    for img, got in zip(xs, out):
        assert_close(got, ref(img), 1e-5)
    # Dynamic scale on an all-zero u: s = 1, every code 0, the output is the bias.
    g, ref = dw_graph(rng, 4, 4, 3, 1, (1, 1), True, pre_bias=False)
    m = _core.Model(save(tmp_path, g, "zero.qbw"))
    zero = np.zeros((1, 4, 4, 3), np.float32)
    assert_close(m.run(zero, "nhwc")[0], ref(zero[0]), 1e-6)


@pytest.mark.parametrize(
    "c,o", [(1, 3), (63, 5), (64, 4), (65, 9), (200, 17), (4097, 6), (2048, 2048)]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_bitpack_bfc(tmp_path, c, o, threads):
    """BITPACK (1, 1, C) -> BFC: the exact ±1 dot, then f32(dot) * scale + bias in f32 (two
    rounded operations, as numpy's float32 does them), bit for bit on every ISA."""
    rng = rng_for(18, c, o)
    g = Graph()
    thr = randn(rng, c, scale=0.5)
    w_pm1 = np.where(rng.random((o, c)) < 0.5, -1, 1)
    w_pm1[0] = 1  # an all-agreeing and an all-disagreeing row: dot = +-C at the bounds
    scale, bias = randn(rng, o), randn(rng, o)
    x = g.value("x", 1, 1, c)
    b = g.op(BITPACK, "sign", [x], g.value("bits", 1, 1, c, BITS), [g.tensor("thr", thr)])
    g.op(
        BFC,
        "bfc",
        [b],
        g.value("out", 1, 1, o),
        [g.tensor("w", pack_minus_one(w_pm1 < 0)), g.tensor("s", scale), g.tensor("b", bias)],
    )
    g.output_value = len(g.values) - 1
    path = save(tmp_path, g)
    xs = randn(rng, 4, 1, 1, c)
    xs[1] = np.where(thr >= 0, -1.0, 1.0) * (np.abs(thr) + 1)  # packs to -1 where w_pm1[0] = 1
    xs[1, 0, 0] = np.where(np.arange(c) % 2 == 0, 1e9, -1e9)
    xs[0, 0, 0, 0] = thr[0]  # a tie packs to +1
    for isa in _core.supported_isas():
        m = _core.Model(path, threads, isa, split="always")
        out = m.run(xs, "nhwc")
        for img, got in zip(xs, out):
            a = np.where(img.reshape(c) >= thr, 1, -1)
            dot = (w_pm1 @ a).astype(np.float32)
            want = dot * scale + bias
            np.testing.assert_array_equal(got.reshape(o), want, err_msg=f"isa {isa}")
    op = [r for r in m.ops() if r["type"] == "BFC"][0]
    assert op["bops"] == o * c and op["params"] == o * c + 2 * o


@pytest.mark.parametrize("encoding", [0, 1, 2], ids=["fp32", "int8", "bitplane8"])
@pytest.mark.parametrize("c", [5, 64, 100])
def test_fc_encodings(tmp_path, encoding, c):
    rng = rng_for(11, encoding, c)
    o = 7
    g = Graph()
    x = g.value("x", 1, 1, c)
    bias = randn(rng, o)
    wscale = (rng.random(o) * 0.01 + 0.001).astype(np.float32)
    if encoding == 0:
        wf = randn(rng, o, c)
        weight, ws_t = g.tensor("w", wf), None
        w_eff = wf.astype(np.float64)
    elif encoding == 1:
        q = rng.integers(-127, 128, (o, c)).astype(np.int8)
        weight, ws_t = g.tensor("w", q), g.tensor("ws", wscale)
        w_eff = wscale[:, None].astype(np.float64) * q
    else:
        codes = rng.integers(0, 256, (o, c)).astype(np.uint8)
        bits = (codes[None] >> np.arange(8, dtype=np.uint8)[:, None, None]) & 1  # 8, O, C
        weight, ws_t = g.tensor("planes", pack_minus_one(bits == 0)), g.tensor("ws", wscale)
        w_eff = wscale[:, None].astype(np.float64) * (2.0 * codes - 255)
    g.op(FC, "fc", [x], g.value("out", 1, 1, o), [weight, ws_t, g.tensor("b", bias)], [encoding])
    g.output_value = 1
    m = _core.Model(save(tmp_path, g))
    xs = randn(rng, 3, 1, 1, c)
    want = xs.reshape(3, c).astype(np.float64) @ w_eff.T + bias
    assert_close(m.run(xs, "nhwc"), want, 1e-4)
    op = m.ops()[0]
    assert op["flops"] == o * c and op["params"] == o * c + o + (o if encoding else 0)


def test_elementwise_pool_concat_block(tmp_path):
    """A DS half + B half shaped graph touching every remaining op (SE included)."""
    rng = rng_for(12)
    h, w, c = 7, 5, 6
    g = Graph("block")
    beta_t = randn(rng, c, scale=0.2)
    dw = randn(rng, 2 * c, 9)
    bn_s, bn_b = randn(rng, 2 * c), randn(rng, 2 * c)
    se1_w, se1_b = randn(rng, 3, 1, 1, 2 * c), randn(rng, 3)
    se2_w, se2_b = randn(rng, 2 * c, 1, 1, 3), randn(rng, 2 * c)
    slope = randn(rng, 2 * c, scale=0.2)
    aff_s, aff_b = randn(rng, 2 * c), randn(rng, 2 * c)
    ho, wo = 4, 3
    x = g.value("x", h, w, c)
    v = g.op(
        DWCONV3X3,
        "ds.dw",
        [x],
        g.value("v", ho, wo, 2 * c),
        [
            g.tensor("beta", beta_t),
            g.tensor("dw", dw),
            None,
            g.tensor("bn_s", bn_s),
            g.tensor("bn_b", bn_b),
            None,
        ],
        [2, 2, 2],
    )
    gap = g.op(GLOBAL_AVGPOOL, "se.gap", [v], g.value("se.gap", 1, 1, 2 * c))
    s1 = g.op(
        CONV2D,
        "se.fc1",
        [gap],
        g.value("se.h", 1, 1, 3),
        [g.tensor("se1w", se1_w), g.tensor("se1b", se1_b)],
        [1, 1, 1, 1, 0, 0, 0, 0, 1],
    )
    s2 = g.op(
        CONV2D,
        "se.fc2",
        [s1],
        g.value("se.z", 1, 1, 2 * c),
        [g.tensor("se2w", se2_w), g.tensor("se2b", se2_b)],
        [1, 1, 1, 1, 0, 0, 0, 0, 0],
    )
    sg = g.op(SIGMOID, "se.sig", [s2], g.value("se.s", 1, 1, 2 * c))
    vs = g.op(MUL_CHANNEL, "se.mul", [v, sg], g.value("vs", ho, wo, 2 * c))
    pool = g.op(AVGPOOL, "short.pool", [x], g.value("xp", ho, wo, c), attrs=[2, 2, 2, 2])
    cat = g.op(CONCAT, "short.cat", [pool, pool], g.value("short", ho, wo, 2 * c))
    add = g.op(ADD, "add", [vs, cat], g.value("sum", ho, wo, 2 * c))
    pr = g.op(PRELU, "prelu", [add], g.value("pr", ho, wo, 2 * c), [g.tensor("slope", slope)])
    af = g.op(
        AFFINE,
        "bn",
        [pr],
        g.value("af", ho, wo, 2 * c),
        [g.tensor("aff_s", aff_s), g.tensor("aff_b", aff_b)],
    )
    rl = g.op(RELU, "relu", [af], g.value("rl", ho, wo, 2 * c))
    p2 = g.op(AVGPOOL, "pool2", [rl], g.value("p2", 2, 3, 2 * c), attrs=[3, 1, 2, 1])
    # A second CONCAT, of other values in an order that matters: each CONCAT must read its
    # own inputs (whatever slots the arena gave them).
    q = g.op(SIGMOID, "q", [p2], g.value("q", 2, 3, 2 * c))
    c2 = g.op(CONCAT, "cat2", [p2, q, p2], g.value("cat2", 2, 3, 6 * c))
    g.op(GLOBAL_AVGPOOL, "head", [c2], g.value("out", 1, 1, 6 * c))
    g.output_value = len(g.values) - 1
    m = _core.Model(save(tmp_path, g))

    def ref(img):
        vv = ref_dwconv_f32(img, beta_t, dw, bn_s, bn_b, (2, 2), 2)
        z = ref_conv2d(vv.mean((0, 1))[None, None], se1_w, se1_b, (1, 1), (0, 0, 0, 0), True)
        z = ref_conv2d(z, se2_w, se2_b, (1, 1), (0, 0, 0, 0), False)
        vv = vv * (1 / (1 + np.exp(-z)))
        xp = ref_avgpool(img.astype(np.float64), 2, 2, 2, 2)
        s = vv + np.concatenate([xp, xp], axis=2)
        s = np.where(s >= 0, s, slope * s) * aff_s + aff_b
        s = ref_avgpool(np.maximum(s, 0), 3, 1, 2, 1)
        return np.concatenate([s, 1 / (1 + np.exp(-s)), s], axis=2).mean((0, 1))

    xs = randn(rng, 3, h, w, c)
    out = m.run(xs, "nhwc")
    for img, got in zip(xs, out):
        assert_close(got, ref(img), 1e-4)
    types = [o["type"] for o in m.ops()]
    # BITPACK, BCONV2D, FC and BFC have their own tests above; MAXPOOL and CLIP their
    # single-op tests (test_maxpool_*, test_clip_*); SOFTMAX tests/test_softmax.py, AVGPOOL2D
    # tests/test_avgpool.py, RESIZE tests/test_segmentation_ops.py.
    assert set(types) == set(OP_NAMES.values()) - {
        "BITPACK",
        "BCONV2D",
        "FC",
        "BFC",
        "MAXPOOL",
        "CLIP",
        "SOFTMAX",
        "AVGPOOL2D",
        "RESIZE",
    }


def test_arena_reuses_memory(tmp_path):
    """A chain of RELUs needs two slots, not one per value; every slot is 64-aligned."""
    g = Graph()
    n, shape = 12, (8, 8, 16)
    prev = g.value("x", *shape)
    for i in range(n):
        prev = g.op(RELU, f"relu{i}", [prev], g.value(f"v{i}", *shape))
    g.op(GLOBAL_AVGPOOL, "gap", [prev], g.value("out", 1, 1, 16))
    g.output_value = len(g.values) - 1
    m = _core.Model(save(tmp_path, g))
    value_bytes = 8 * 8 * 16 * 4
    assert m.arena_bytes <= 2 * value_bytes + 64
    x = randn(rng_for(13), 2, *shape)
    assert_close(m.run(x, "nhwc"), np.maximum(x, 0).mean((1, 2)), 1e-6)


def test_unused_values_and_minor_version_extension(tmp_path):
    """Values no op reads are allowed; a minor version may append meta fields."""
    rng = rng_for(14)
    g, ref = stem_graph(rng)
    g.op(RELU, "dangling", [1], g.value("unused", 5, 6, 8))
    g.version = (1, 3)
    g.extra_meta = b"future fields"
    # A non-square crop needs resize_short >= its shorter side only.
    g.preproc = (10, 9, 11, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 1.0)
    m = _core.Model(save(tmp_path, g))
    assert m.format_version == (1, 3)
    x = randn(rng, 1, 3, 9, 11)
    assert_close(m.run(x)[0], ref(x[0].transpose(1, 2, 0)), 1e-4)


def test_undecodable_strings_do_not_raise(tmp_path):
    g, _ = stem_graph(rng_for(15))
    g.model_name = b"caf\xe9"
    g.class_names[0] = b"\xff\xfe"
    m = _core.Model(save(tmp_path, g))
    assert m.model_name == "caf\ufffd" and m.class_names[0] == "\ufffd\ufffd"


# --------------------------------------------------------------------------------------------
# Hostile files, each loaded in a subprocess
# --------------------------------------------------------------------------------------------
LOAD_ONE = "import sys; from qbinfer import _core; _core.Model(sys.argv[1]); print('LOADED')"

# Loads many files; one JSON line per file. Anything but a clean load or a qbinfer.Error
# (MemoryError, SystemError, a crash) is reported by the caller.
LOAD_MANY = r"""
import json, sys
from qbinfer import _core
for path in sys.argv[1:]:
    try:
        _core.Model(path)
        res = {"path": path, "ok": True}
    except _core.Error as e:
        res = {"path": path, "ok": False, "type": type(e).__name__, "msg": str(e)}
    except BaseException as e:
        res = {"path": path, "ok": False, "type": "UNEXPECTED " + type(e).__name__, "msg": str(e)}
    print(json.dumps(res), flush=True)
"""


def assert_load_fails(path, exc="FormatError", match=None):
    r = subprocess.run(
        [sys.executable, "-c", LOAD_ONE, path], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, (
        f"expected a Python exception (rc 1), got rc {r.returncode} "
        f"(negative = signal)\nstdout {r.stdout}\nstderr {r.stderr[-3000:]}"
    )
    last = r.stderr.strip().splitlines()[-1]
    prefix = (
        f"qbinfer._core.{exc}: "
        if exc in ("FormatError", "ShapeError", "DtypeError")
        else f"{exc}: "
    )
    assert last.startswith(prefix), last
    message = last[len(prefix) :]
    if match is not None:
        assert match in message, f"{match!r} not in {message!r}"
    return message


def load_many(tmp_path, blobs):
    """{label: result dict} for each (label, bytes), loaded in one subprocess."""
    paths = {}
    for i, (label, blob) in enumerate(blobs):
        p = tmp_path / f"case{i}.qbw"
        p.write_bytes(blob)
        paths[str(p)] = label
    r = subprocess.run(
        [sys.executable, "-c", LOAD_MANY, *paths], capture_output=True, text=True, timeout=600
    )
    results = {}
    for line in r.stdout.splitlines():
        res = json.loads(line)
        results[paths[res["path"]]] = res
    if r.returncode != 0:
        done = len(results)
        crashed = list(paths.values())[done] if done < len(paths) else "?"
        pytest.fail(f"loader died with rc {r.returncode} on case {crashed!r}\n{r.stderr[-3000:]}")
    assert len(results) == len(paths)
    return results


def rich_graph(rng):
    """Many op types in one valid graph: the target of the truncation and fuzz tests."""
    g = Graph("rich")
    x = g.value("x", 9, 11, 3)
    y = g.op(
        CONV2D,
        "stem",
        [x],
        g.value("stem", 5, 6, 8),
        [g.tensor("stem.w", randn(rng, 8, 3, 3, 3)), g.tensor("stem.b", randn(rng, 8))],
        [3, 3, 2, 2, 1, 1, 1, 1, 1],
    )
    kc = 16
    d = g.op(
        DWCONV3X3,
        "ds.dw",
        [y],
        g.value("ds", 3, 6, kc),
        [
            g.tensor("ds.beta", randn(rng, 8)),
            g.tensor("ds.w", rng.integers(-127, 128, (kc, 9)).astype(np.int8)),
            g.tensor("ds.ws", np.full(kc, 0.01, np.float32)),
            g.tensor("ds.s", randn(rng, kc)),
            g.tensor("ds.b", randn(rng, kc)),
            g.tensor("ds.in", np.zeros(1, np.float32)),
        ],
        [2, 1, 2],
    )
    bits = g.op(
        BITPACK,
        "b.sign",
        [d],
        g.value("b.bits", 3, 6, kc, BITS),
        [g.tensor("b.thr", randn(rng, kc))],
    )
    w_pm1 = rng.random((kc, 3, 3, kc)) < 0.5
    bc = g.op(
        BCONV2D,
        "b.conv",
        [bits],
        g.value("b.conv", 3, 6, kc),
        [
            g.tensor("b.w", pack_minus_one(w_pm1)),
            g.tensor("b.s", randn(rng, kc)),
            g.tensor("b.bias", randn(rng, kc)),
        ],
        [3, 0],
    )
    s = g.op(ADD, "b.add", [bc, d], g.value("b.sum", 3, 6, kc))
    s = g.op(
        PRELU, "b.prelu", [s], g.value("b.pr", 3, 6, kc), [g.tensor("b.slope", randn(rng, kc))]
    )
    p = g.op(AVGPOOL, "pool", [s], g.value("pool", 2, 3, kc), attrs=[2, 2, 2, 2])
    c = g.op(CONCAT, "cat", [p, p], g.value("cat", 2, 3, 2 * kc))
    gap = g.op(GLOBAL_AVGPOOL, "gap", [c], g.value("gap", 1, 1, 2 * kc))
    codes = rng.integers(0, 256, (4, 2 * kc)).astype(np.uint8)
    planes = (codes[None] >> np.arange(8, dtype=np.uint8)[:, None, None]) & 1
    g.op(
        FC,
        "fc",
        [gap],
        g.value("logits", 1, 1, 4),
        [
            g.tensor("fc.planes", pack_minus_one(planes == 0)),
            g.tensor("fc.ws", np.full(4, 0.01, np.float32)),
            g.tensor("fc.b", randn(rng, 4)),
        ],
        [2],
    )
    g.output_value = len(g.values) - 1
    g.class_names = ["cat", "dog", "emu", "yak"]
    return g


@pytest.fixture(scope="module")
def good():
    """A valid file with the boundary marks of its meta section."""
    g = rich_graph(rng_for(20))
    marks = []
    blob = g.serialize(marks)
    return g, blob, marks


def test_good_file_loads(tmp_path, good):
    _, blob, _ = good
    assert load_many(tmp_path, [("good", blob)])["good"]["ok"]


def test_missing_file(tmp_path):
    msg = assert_load_fails(str(tmp_path / "nope.qbw"), "FileNotFoundError")
    assert "nope.qbw" in msg


def test_directory(tmp_path):
    assert_load_fails(str(tmp_path), "IsADirectoryError")


def test_zero_length_file(tmp_path):
    assert_load_fails(save(tmp_path, b""), match="0 bytes, smaller than the 64-byte header")


def test_bad_magic(tmp_path, good):
    _, blob, _ = good
    assert_load_fails(save(tmp_path, b"GIF89a" + blob[6:]), match="bad magic")
    # A text-mode transfer turns \r\n into \n.
    assert_load_fails(save(tmp_path, blob[:4] + b"\n\x1a\n" + blob[8:], "t.qbw"), match="text-mode")


def test_future_major_version(tmp_path, good):
    _, blob, _ = good
    assert_load_fails(
        save(tmp_path, with_header(blob, major=2)),
        match="file format 2.0 is newer than this qbinfer reads (1.x)",
    )
    assert_load_fails(
        save(tmp_path, with_header(blob, major=0, minor=9), "old.qbw"),
        match="file format 0.9 is not one this qbinfer reads (1.x)",
    )


def test_file_size_mismatch(tmp_path, good):
    _, blob, _ = good
    assert_load_fails(save(tmp_path, blob + b"\0" * 64), match="trailing bytes")
    assert_load_fails(save(tmp_path, blob[:-64], "short.qbw"), match="truncated")


def test_checksum_mismatch_names_both_crcs(tmp_path, good):
    _, blob, _ = good
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x10
    msg = assert_load_fails(save(tmp_path, bytes(bad)), match="checksum mismatch")
    stored = struct.unpack("<I", blob[56:60])[0]
    assert f"0x{stored:08X}" in msg


def test_truncation_at_every_boundary(tmp_path, good):
    """Cut the file at each header field, each meta record, each tensor payload and at
    random points: never loads, always a FormatError."""
    g, blob, marks = good
    cuts = {0, 1, 7, 8, 63, 64, len(blob) - 1}
    cuts.update(range(8, 64, 4))
    cuts.update(off for _, off in marks)
    h = header_fields(blob)
    offset = h["data_offset"]
    cuts.update(offset + t["_offset"] for t in g.tensors)
    rng = rng_for(21)
    cuts.update(int(c) for c in rng.integers(1, len(blob), 40))
    cuts = sorted(c for c in cuts if c < len(blob))
    results = load_many(tmp_path, [(c, blob[:c]) for c in cuts])
    for cut, res in results.items():
        assert not res["ok"] and res["type"] == "FormatError", (cut, res)
        assert (
            "smaller than the 64-byte header" in res["msg"]
            if cut < 64
            else "truncated" in res["msg"] or "bad magic" in res["msg"]
        ), (cut, res)
    # The one representative through the full subprocess/return-code path.
    assert_load_fails(save(tmp_path, blob[:100]), match="truncated")


def test_meta_cut_at_every_record(tmp_path, good):
    """A consistent header around a meta section cut short at each record boundary (CRC
    valid): the cursor reports which record it was reading."""
    _, blob, marks = good
    cases = []
    labels = {}
    for label, off in marks:
        for delta in (0, 2):
            cut = off + delta
            if cut >= 64 + header_fields(blob)["meta_size"]:
                continue
            cases.append((cut, with_header(blob, meta_size=cut - 64)))
            labels[cut] = label
    results = load_many(tmp_path, cases)
    for cut, res in results.items():
        assert not res["ok"] and res["type"] == "FormatError", (cut, res)
        assert "truncated meta section" in res["msg"] or "unread" in res["msg"], (cut, res)
    # Spot checks of the "where".
    op3 = [off for label, off in marks if label == "op 3 inputs"][0]
    res = load_many(tmp_path, [("x", with_header(blob, meta_size=op3 + 2 - 64))])["x"]
    assert "while reading op 3 'b.conv' n_inputs: need 4 bytes" in res["msg"], res


def test_random_flips_are_caught_by_the_crc(tmp_path, good):
    _, blob, _ = good
    rng = rng_for(22)
    cases = []
    for i in range(150):
        b = bytearray(blob)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= int(rng.integers(1, 256))
        cases.append(((i, pos), bytes(b)))
    for key, res in load_many(tmp_path, cases).items():
        assert not res["ok"] and res["type"] == "FormatError", (key, res)


def test_random_flips_with_crc_recomputed(tmp_path, good):
    """With a valid CRC the parser and validators see the damage: any outcome but a clean
    load or a FormatError (a crash, MemoryError, SystemError) fails."""
    _, blob, _ = good
    rng = rng_for(23)
    meta_end = 64 + header_fields(blob)["meta_size"]
    cases = []
    for i in range(400):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            # Mostly the header and meta section, where the structure is.
            pos = (
                int(rng.integers(8, meta_end))
                if rng.random() < 0.9
                else int(rng.integers(0, len(b)))
            )
            if rng.random() < 0.5:
                b[pos] ^= 1 << int(rng.integers(0, 8))
            else:
                b[pos] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(0, 256))]))
        cases.append((i, fix_crc(bytes(b))))
    n_loaded = 0
    for key, res in load_many(tmp_path, cases).items():
        assert res["ok"] or res["type"] == "FormatError", (key, res)
        n_loaded += res["ok"]
    assert n_loaded < len(cases) // 2  # most flips must be caught


def test_random_u32_and_u64_overwrites(tmp_path, good):
    """Absurd counts, offsets and dims: overwrite aligned words of the meta section with
    extreme integers (CRC recomputed)."""
    _, blob, marks = good
    rng = rng_for(24)
    meta_end = 64 + header_fields(blob)["meta_size"]
    extremes = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 1000001, 65536]
    cases = []
    for i in range(250):
        b = bytearray(blob)
        pos = int(rng.integers(64, meta_end - 4))
        if rng.random() < 0.5:
            b[pos : pos + 4] = struct.pack("<I", extremes[int(rng.integers(0, len(extremes)))])
        elif pos + 8 <= meta_end:
            big = [2**64 - 1, 2**63, 2**32, 2**40, 2**64 - 64]
            b[pos : pos + 8] = struct.pack("<Q", big[int(rng.integers(0, len(big)))])
        cases.append((i, fix_crc(bytes(b))))
    for key, res in load_many(tmp_path, cases).items():
        assert res["ok"] or res["type"] == "FormatError", (key, res)


# Structured violations, each built by the serializer with one rule broken.
def _stem(mutate):
    g, _ = stem_graph(rng_for(30))
    mutate(g)
    return g.serialize()


def _set(obj, key, value):
    obj[key] = value


def _dw(mutate, int8=True):
    g, _ = dw_graph(rng_for(31), 5, 6, 3, 2, (2, 1), int8)
    mutate(g)
    return g.serialize()


def _bconv(mutate, ci=70):
    rng = rng_for(32)
    g = Graph()
    x = g.value("x", 3, 3, ci)
    w_pm1 = np.where(rng.random((4, 3, 3, ci)) < 0.5, -1, 1)
    b = g.op(
        BITPACK,
        "sign",
        [x],
        g.value("bits", 3, 3, ci, BITS),
        [g.tensor("thr", np.zeros(ci, np.float32))],
    )
    y = g.op(
        BCONV2D,
        "bconv",
        [b],
        g.value("y", 3, 3, 4),
        [
            g.tensor("bw", pack_minus_one(w_pm1 < 0)),
            g.tensor("bs", np.ones(4, np.float32)),
            g.tensor("bb", np.zeros(4, np.float32)),
        ],
        [3, 0],
    )
    g.op(GLOBAL_AVGPOOL, "gap", [y], g.value("out", 1, 1, 4))
    g.output_value = 3
    mutate(g)
    return g.serialize()


def _set_tail_bit(g):
    words_arr = np.frombuffer(g.tensors[1]["data"], "<u8").copy()
    words_arr[1] |= np.uint64(1) << np.uint64(63)  # channel 127 of row 0 (ci = 70)
    g.tensors[1]["data"] = words_arr.tobytes()


def _pool(attrs, out_shape):
    g = Graph()
    x = g.value("x", 5, 5, 2)
    p = g.op(AVGPOOL, "pool", [x], g.value("p", *out_shape, 2), attrs=attrs)
    g.op(GLOBAL_AVGPOOL, "gap", [p], g.value("out", 1, 1, 2))
    g.output_value = 2
    return g.serialize()


def _maxpool(attrs, out_shape):
    g = Graph()
    x = g.value("x", 5, 5, 2)
    g.op(MAXPOOL, "pool", [x], g.value("p", *out_shape, 2), attrs=attrs)
    g.output_value = 1
    return g.serialize()


def _avgpool2d(attrs, out_shape):
    g = Graph()
    x = g.value("x", 5, 5, 2)
    g.op(AVGPOOL2D, "pool", [x], g.value("p", *out_shape, 2), attrs=attrs)
    g.output_value = 1
    return g.serialize()


def _clip(bounds, n_bounds=2):
    g = Graph()
    x = g.value("x", 3, 3, 2)
    t = g.tensor("bounds", np.float32(bounds[:n_bounds]))
    g.op(CLIP, "relu6", [x], g.value("y", 3, 3, 2), [t])
    g.output_value = 1
    return g.serialize()


def _concat(out_c):
    g = Graph()
    x = g.value("x", 2, 2, 3)
    c = g.op(CONCAT, "cat", [x, x], g.value("c", 2, 2, out_c))
    g.op(GLOBAL_AVGPOOL, "gap", [c], g.value("out", 1, 1, out_c))
    g.output_value = 2
    return g.serialize()


def _fc_with(encoding, weight):
    g = Graph()
    x = g.value("x", 1, 1, 70)
    g.op(
        FC,
        "head",
        [x],
        g.value("out", 1, 1, 3),
        [
            g.tensor("w", weight),
            g.tensor("ws", np.ones(3, np.float32)),
            g.tensor("b", np.zeros(3, np.float32)),
        ],
        [encoding],
    )
    g.output_value = 1
    return g.serialize()


def _tensor0_at(offset):
    def mutate(g):
        g.tensors[0]["offset"] = offset

    return mutate


STRUCTURED = {
    # header
    "header_size": (lambda b: with_header(b, header_size=80), "header_size is 80"),
    "reserved": (lambda b: with_header(b, reserved=7), "reserved header field"),
    "meta_offset": (lambda b: with_header(b, meta_offset=128), "meta_offset is 128"),
    "meta past data": (lambda b: with_header(b, meta_size=2**64 - 8), "runs past data_offset"),
    "data_offset unaligned": (
        lambda b: with_header(
            b,
            data_offset=header_fields(b)["data_offset"] + 8,
            data_size=header_fields(b)["data_size"] - 8,
        ),
        "not a multiple of 64",
    ),
    "data_size overflow": (
        lambda b: with_header(b, data_size=2**64 - 64),
        "does not end at file_size",
    ),
    # tensor table
    "tensor dtype": (
        lambda b: _stem(lambda g: _set(g.tensors[0], "dtype", 9)),
        "unknown dtype code 9",
    ),
    "tensor ndim 0": (
        lambda b: _stem(lambda g: _set(g.tensors[1], "dims", [])),
        "ndim 0 is not in 1..4",
    ),
    "tensor ndim 5": (
        lambda b: _stem(lambda g: _set(g.tensors[1], "dims", [1, 1, 1, 1, 8])),
        "ndim 5 is not in 1..4",
    ),
    "tensor dim 0": (lambda b: _stem(lambda g: _set(g.tensors[1], "dims", [8, 0])), "dim 1 is 0"),
    "tensor dims overflow": (
        lambda b: _stem(lambda g: _set(g.tensors[1], "dims", [2**40, 2**40])),
        "overflows 64 bits",
    ),
    "tensor nbytes": (lambda b: _stem(lambda g: _set(g.tensors[1], "nbytes", 36)), "nbytes 36"),
    "tensor offset unaligned": (
        lambda b: _stem(_tensor0_at(1000)),
        "tensor 0 'stem.w': offset 1000 is not a multiple of 64",
    ),
    "tensor offset huge": (lambda b: _stem(_tensor0_at(2**64 - 64)), "run past the data section"),
    "tensor past data": (lambda b: _stem(_tensor0_at(1 << 20)), "run past the data section"),
    "tensors overlap": (
        lambda b: _stem(lambda g: _set(g.tensors[1], "offset", 0)),
        "overlaps tensor",
    ),
    "n_tensors limit": (
        lambda b: _patch_count(b, "n_tensors", 1_000_001),
        "exceeds the limit 1000000",
    ),
    "n_tensors vs bytes": (lambda b: _patch_count(b, "n_tensors", 900_000), "needs at least"),
    "string too long": (
        lambda b: _stem(lambda g: setattr(g, "producer", "p" * 70000)),
        "string length 70000 exceeds the limit 65535",
    ),
    # values
    "value dtype i8": (
        lambda b: _stem(lambda g: g.values.__setitem__(1, ("stem", 1, 5, 6, 8))),
        "not a value dtype",
    ),
    "value zero dim": (
        lambda b: _stem(lambda g: g.values.__setitem__(1, ("stem", 0, 0, 6, 8))),
        "has a zero dimension",
    ),
    "value huge": (
        lambda b: _stem(lambda g: g.values.__setitem__(1, ("stem", 0, 2**32 - 1, 2**32 - 1, 8))),
        "GiB a value may take",
    ),
    # graph
    "input index": (lambda b: _stem(lambda g: setattr(g, "input_value", 99)), "input_value 99"),
    "output index": (
        lambda b: _stem(lambda g: setattr(g, "output_value", 2**32 - 1)),
        "output_value 4294967295",
    ),
    "input bits": (
        lambda b: _stem(lambda g: g.values.__setitem__(0, ("x", 2, 9, 11, 3))),
        "must be f32",
    ),
    "no ops": (lambda b: _stem(lambda g: setattr(g, "ops", [])), "n_ops is 0"),
    "op value index": (
        lambda b: _stem(lambda g: _set(g.ops[1], "inputs", [77])),
        "op 1 'pool': input 0 is value 77",
    ),
    "op tensor index": (
        lambda b: _stem(lambda g: _set(g.ops[0], "tensors", [0, 50])),
        "tensor slot 1 is 50",
    ),
    "not topological": (lambda b: _stem(lambda g: g.ops.reverse()), "no earlier op produces"),
    "two producers": (
        lambda b: _stem(lambda g: _set(g.ops[1], "outputs", [1])),
        "already produced by op 0",
    ),
    "input produced": (
        lambda b: _stem(lambda g: _set(g.ops[2], "outputs", [0])),
        "writes the graph input",
    ),
    "output unproduced": (lambda b: _stem(lambda g: g.ops.pop()), "is produced by no op"),
    "unknown op code": (
        lambda b: _stem(lambda g: _set(g.ops[1], "type", 99)),
        "op 1 'pool': unknown op code 99",
    ),
    "two outputs": (
        lambda b: _stem(
            lambda g: [g.values.append(("extra", 0, 1, 1, 8)), _set(g.ops[1], "outputs", [2, 4])]
        ),
        "has 2 outputs, expected 1",
    ),
    # preprocessing / classes / trailing bytes
    "std zero": (
        lambda b: _stem(lambda g: setattr(g, "preproc", (0, 9, 11, (0, 0, 0), (1, 0, 1), 1.0))),
        "std[1]",
    ),
    "std nan": (
        lambda b: _stem(
            lambda g: setattr(g, "preproc", (0, 9, 11, (0, 0, 0), (1, 1, math.nan), 1.0))
        ),
        "std[2]",
    ),
    "mean inf": (
        lambda b: _stem(
            lambda g: setattr(g, "preproc", (0, 9, 11, (math.inf, 0, 0), (1, 1, 1), 1.0))
        ),
        "mean[0] is not finite",
    ),
    "pixel_scale": (
        lambda b: _stem(lambda g: setattr(g, "preproc", (0, 9, 11, (0, 0, 0), (1, 1, 1), -1.0))),
        "pixel_scale",
    ),
    "crop": (
        lambda b: _stem(lambda g: setattr(g, "preproc", (0, 8, 11, (0, 0, 0), (1, 1, 1), 1.0))),
        "differs from the input size",
    ),
    "resize < crop": (
        lambda b: _stem(lambda g: setattr(g, "preproc", (5, 9, 11, (0, 0, 0), (1, 1, 1), 1.0))),
        "smaller than the crop",
    ),
    "class count": (
        lambda b: _stem(lambda g: g.class_names.pop()),
        "4 class names for an output of 5",
    ),
    "trailing meta 1.0": (
        lambda b: _stem(lambda g: setattr(g, "extra_meta", b"xx")),
        "2 unread bytes",
    ),
    # op-level rules
    "conv attrs count": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [3, 3, 2, 2])),
        "op 0 CONV2D 'stem.conv': has 4 attrs, expected 9",
    ),
    "conv stride 0": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [3, 3, 0, 2, 1, 1, 1, 1, 1])),
        "stride_h = 0",
    ),
    "conv pad >= kernel": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [3, 3, 2, 2, 3, 1, 1, 1, 1])),
        "pad_top = 3 is not in [0, 2]",
    ),
    "conv activation": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [3, 3, 2, 2, 1, 1, 1, 1, 2])),
        "activation = 2",
    ),
    "conv output shape": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [3, 3, 1, 1, 1, 1, 1, 1, 1])),
        "output 'stem' has shape (5, 6, 8), expected (9, 11, 8)",
    ),
    "conv weight dims": (
        lambda b: _stem(lambda g: _set(g.tensors[0], "dims", [8, 9, 3])),
        "has dims [8, 9, 3], expected [8, 3, 3, 3]",
    ),
    "conv weight kernel": (
        lambda b: _stem(lambda g: _set(g.ops[0], "attrs", [1, 1, 2, 2, 0, 0, 0, 0, 1])),
        "weight) = tensor 0 'stem.w' has dims [8, 3, 3, 3], expected [8, 1, 1, 3]",
    ),
    "conv bias absent": (
        lambda b: _stem(lambda g: _set(g.ops[0], "tensors", [0, ABSENT])),
        "tensor slot 1 (bias) is absent but required",
    ),
    "conv bias dtype": (
        lambda b: _stem(
            lambda g: _set(g.tensors[1], "dtype", I8) or _set(g.tensors[1], "dims", [32])
        ),
        "is i8, expected f32",
    ),
    "fc encoding": (lambda b: _stem(lambda g: _set(g.ops[2], "attrs", [4])), "encoding = 4"),
    "fc fp32 with scale": (
        lambda b: _stem(lambda g: _set(g.ops[2], "tensors", [2, 3, 3])),
        "must be absent with fp32 encoding",
    ),
    # An FC reads an (H, W, C) map as H*W*C features: a weight for C features does not fit it.
    "fc on pixels, weight of one pixel": (
        lambda b: _stem(lambda g: _set(g.ops[2], "inputs", [1])),
        "has dims",
    ),
    "pool output": (
        lambda b: _stem(lambda g: g.values.__setitem__(2, ("pool", 0, 1, 1, 7))),
        "expected (1, 1, 8)",
    ),
    "dw stride": (lambda b: _dw(lambda g: _set(g.ops[0], "attrs", [3, 1, 2])), "stride_h = 3"),
    "dw output": (
        lambda b: _dw(lambda g: _set(g.ops[0], "attrs", [1, 1, 2])),
        "expected (5, 6, 6)",
    ),
    "dw multiplier 0": (
        lambda b: _dw(lambda g: _set(g.ops[0], "attrs", [2, 1, 0])),
        "multiplier = 0",
    ),
    "dw negative input_scale": (
        lambda b: _dw(lambda g: _set(g.tensors[5], "data", np.float32([-1]).tobytes())),
        "input_scale",
    ),
    "dw nan input_scale": (
        lambda b: _dw(lambda g: _set(g.tensors[5], "data", np.float32([math.nan]).tobytes())),
        "input_scale",
    ),
    "dw i8 without scale": (
        lambda b: _dw(lambda g: g.ops[0]["tensors"].__setitem__(2, ABSENT)),
        "weight_scale) is absent but required",
    ),
    "dw f32 with input_scale": (
        lambda b: _dw(lambda g: g.ops[0]["tensors"].__setitem__(5, 2), int8=False),
        "must be absent with f32 weights",
    ),
    "dw 5 slots": (
        lambda b: _dw(lambda g: g.ops[0]["tensors"].pop()),
        "has 5 tensor slots, expected 6",
    ),
    "bconv kernel 2": (
        lambda b: _bconv(lambda g: _set(g.ops[1], "attrs", [2, 0])),
        "is not 1 or 3",
    ),
    "bconv pad_mode": (lambda b: _bconv(lambda g: _set(g.ops[1], "attrs", [3, 5])), "pad_mode = 5"),
    "bconv f32 input": (
        lambda b: _bconv(lambda g: _set(g.ops[1], "inputs", [0])),
        "input 0 'x' is f32, expected bits",
    ),
    "bconv weight words": (
        lambda b: _bconv(lambda g: _set(g.tensors[1], "dims", [4, 3, 6])),
        "has dims [4, 3, 6], expected [4, 3, 3, 2]",
    ),
    "bconv tail bits": (lambda b: _bconv(_set_tail_bit), "bits set past channel 70"),
    "bitpack output f32": (
        lambda b: _bconv(lambda g: g.values.__setitem__(1, ("bits", 0, 3, 3, 70))),
        "output 'bits' is f32, expected bits",
    ),
    "avgpool output": (lambda b: _pool([2, 2, 2, 2], (2, 2)), "expected (3, 3, 2)"),
    "avgpool window past end": (
        lambda b: _pool([1, 1, 3, 3], (3, 3)),
        "window start past the input",
    ),
    "avgpool kernel > input": (
        lambda b: _pool([6, 1, 1, 1], (1, 5)),
        "kernel_h = 6 is not in [1, 5]",
    ),
    "maxpool output": (lambda b: _maxpool([3, 3, 2, 2, 1, 1, 1, 1], (2, 2)), "expected (3, 3, 2)"),
    "maxpool pad = kernel": (
        lambda b: _maxpool([2, 2, 2, 2, 2, 0, 0, 0], (4, 2)),
        "pad_top = 2 is not in [0, 1]",
    ),
    "maxpool window > padded input": (
        lambda b: _maxpool([9, 1, 1, 1, 1, 0, 1, 0], (1, 5)),
        "larger than the padded input 7x5",
    ),
    "avgpool2d output": (
        lambda b: _avgpool2d([3, 3, 2, 2, 1, 1, 1, 1, 0, 1], (2, 2)),
        "expected (3, 3, 2)",
    ),
    "avgpool2d ceil output": (  # ceil mode: 3 windows of 2 on 5 rows, none dropped
        lambda b: _avgpool2d([2, 2, 2, 2, 0, 0, 0, 0, 1, 0], (2, 2)),
        "expected (3, 3, 2)",
    ),
    "avgpool2d pad = kernel": (
        lambda b: _avgpool2d([2, 2, 2, 2, 0, 0, 2, 0, 0, 0], (4, 2)),
        "pad_bottom = 2 is not in [0, 1]",
    ),
    "avgpool2d ceil_mode": (
        lambda b: _avgpool2d([2, 2, 2, 2, 0, 0, 0, 0, 2, 0], (2, 2)),
        "ceil_mode = 2",
    ),
    "avgpool2d window > padded input": (
        lambda b: _avgpool2d([9, 1, 1, 1, 1, 0, 1, 0, 0, 0], (1, 5)),
        "exceeds the padded input height 7",
    ),
    "clip lo > hi": (lambda b: _clip([1.0, -1.0]), "lo <= hi"),
    "clip nan bound": (lambda b: _clip([math.nan, 6.0]), "lo <= hi"),
    "clip one bound": (lambda b: _clip([0.0, 6.0], 1), "expected [2]"),
    "concat channels": (lambda b: _concat(5), "expected (2, 2, 6)"),
    "fc bitplane dims": (
        lambda b: _fc_with(2, np.zeros((8, 3, 1), np.uint64)),
        "expected [8, 3, 2]",
    ),
    "fc bitplane tail": (
        lambda b: _fc_with(2, np.full((8, 3, 2), 2**63, np.uint64)),
        "bits set past channel 70",
    ),
    "fc int8 dtype": (lambda b: _fc_with(1, np.zeros((3, 70), np.float32)), "is f32, expected i8"),
}


def _patch_count(blob, field, value):
    """Overwrite a u32 count of the good file at its mark (CRC recomputed)."""
    g, _ = stem_graph(rng_for(30))
    marks = []
    raw = bytearray(g.serialize(marks))
    off = dict(marks)[field]
    raw[off : off + 4] = struct.pack("<I", value)
    return fix_crc(bytes(raw))


def test_structured_violations(tmp_path, good):
    _, blob, _ = good
    cases = [(name, make(blob)) for name, (make, _) in STRUCTURED.items()]
    results = load_many(tmp_path, cases)
    failures = []
    for name, (_, expected) in STRUCTURED.items():
        res = results[name]
        if res["ok"] or res["type"] != "FormatError" or expected not in res["msg"]:
            failures.append(f"{name}: expected FormatError with {expected!r}, got {res}")
        elif not res["msg"].startswith(str(tmp_path)):
            failures.append(f"{name}: message does not name the file: {res['msg']}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "name",
    ["tensor offset unaligned", "not topological", "bconv tail bits", "dw stride", "std nan"],
)
def test_structured_violation_return_code(tmp_path, good, name):
    """A few of the above through the plain `python -c` path: exit status 1, message on the
    last line of the traceback."""
    _, blob, _ = good
    make, expected = STRUCTURED[name]
    assert_load_fails(save(tmp_path, make(blob)), match=expected)


# --------------------------------------------------------------------------------------------
# MAXPOOL and CLIP: single-op graphs, bit-exact against numpy (they only select inputs)
# --------------------------------------------------------------------------------------------
def ref_maxpool(x, kernel, stride, pads):
    """One NHWC image, padding -inf, floor mode. argmax picks a window's first NaN if it has
    one, else its first maximum: the engine's documented rule, so bits (NaN payloads, the sign
    of a zero) can be compared exactly."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    xp = np.pad(x, ((pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    ho, wo = (xp.shape[0] - kh) // sh + 1, (xp.shape[1] - kw) // sw + 1
    c = x.shape[2]
    out = np.empty((ho, wo, c), np.float32)
    for i in range(ho):
        for j in range(wo):
            win = xp[i * sh : i * sh + kh, j * sw : j * sw + kw].reshape(-1, c)
            out[i, j] = win[win.argmax(axis=0), np.arange(c)]
    return out


def with_specials(rng, x):
    """x with a few NaNs of distinct payloads and signs, infinities and signed zeros."""
    x = x.copy()
    flat = x.reshape(-1).view(np.uint32)
    idx = rng.integers(0, flat.size, size=max(1, flat.size // 40))
    specials = np.array(
        [0x7FC00001, 0xFFC00002, 0x7FC00ABC, 0x7F800000, 0xFF800000, 0x80000000, 0], np.uint32
    )
    flat[idx] = specials[rng.integers(0, specials.size, size=idx.size)]
    return x


def same_bits(got, want, msg=""):
    got, want = np.ascontiguousarray(got, np.float32), np.ascontiguousarray(want, np.float32)
    assert got.shape == want.shape, msg
    diff = np.nonzero(got.view(np.uint32) != want.view(np.uint32))
    assert diff[0].size == 0, f"{msg}: {diff[0].size} values differ, first at {diff}"


# (H, W, C, kernel, stride, pads (top, left, bottom, right)): the ResNet stem, 2x2/2 in floor
# and ceil mode (ceil = a larger bottom/right pad), stride > kernel, asymmetric kernels and pads,
# one-pixel inputs, channels off the vector widths, and one image large enough to be split
# across threads by output rows.
MAXPOOL_CASES = [
    (16, 16, 8, (3, 3), (2, 2), (1, 1, 1, 1)),
    (15, 13, 17, (3, 3), (2, 2), (1, 1, 1, 1)),
    (9, 7, 3, (2, 2), (2, 2), (0, 0, 0, 0)),
    (9, 7, 3, (2, 2), (2, 2), (0, 0, 1, 1)),
    (14, 14, 5, (3, 3), (2, 2), (1, 1, 2, 2)),
    (8, 11, 1, (1, 1), (3, 2), (0, 0, 0, 0)),
    (5, 6, 9, (2, 3), (3, 1), (1, 2, 0, 1)),
    (1, 1, 70, (3, 3), (1, 1), (1, 1, 1, 1)),
    (1, 5, 4, (3, 1), (1, 2), (2, 0, 2, 0)),
    (7, 7, 33, (4, 4), (1, 1), (3, 0, 0, 3)),
    (112, 112, 16, (3, 3), (2, 2), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("case", MAXPOOL_CASES, ids=lambda c: "x".join(map(str, c[:3])))
def test_maxpool_matches_numpy_bit_exact(tmp_path, case):
    h, w, c, kernel, stride, pads = case
    rng = rng_for(40, h, w, c)
    ref0 = ref_maxpool(np.zeros((h, w, c), np.float32), kernel, stride, pads)
    g = Graph()
    x = g.value("x", h, w, c)
    g.op(MAXPOOL, "pool", [x], g.value("y", *ref0.shape), attrs=[*kernel, *stride, *pads])
    g.output_value = 1
    path = save(tmp_path, g)
    xs = randn(rng, 3, h, w, c)
    xs[1] = with_specials(rng, xs[1])
    xs[2] = np.where(rng.random((h, w, c)) < 0.5, np.float32(0.0), np.float32(-0.0))
    want = np.stack([ref_maxpool(img, kernel, stride, pads) for img in xs])
    for threads in (1, 2):
        m = _core.Model(path, threads, split="always")
        got = m.run(xs, "nhwc")  # N, Ho, Wo, C (N, C when the output is 1 x 1)
        same_bits(got, want.reshape(got.shape), f"threads={threads} {case}")
    assert m.ops()[0]["type"] == "MAXPOOL"


@pytest.mark.parametrize(
    "bounds", [(0.0, 6.0), (-1.0, 1.0), (0.0, np.inf), (-np.inf, 0.25), (0.5, 0.5), (-0.0, 0.0)]
)
def test_clip_matches_numpy_bit_exact(tmp_path, bounds):
    rng = rng_for(41)
    lo, hi = np.float32(bounds[0]), np.float32(bounds[1])
    for h, w, c in [(3, 5, 7), (1, 1, 1), (64, 64, 17)]:  # the last one splits across threads
        g = Graph()
        x = g.value("x", h, w, c)
        g.op(CLIP, "clip", [x], g.value("y", h, w, c), [g.tensor("bounds", np.float32([lo, hi]))])
        g.output_value = 1
        path = save(tmp_path, g)
        xs = randn(rng, 2, h, w, c, scale=4.0)
        xs[1] = with_specials(rng, xs[1])
        # Both tests on the input; NaN compares false and passes through unchanged.
        want = np.where(xs < lo, lo, np.where(xs > hi, hi, xs))
        for threads in (1, 2):
            got = _core.Model(path, threads, split="always").run(xs, "nhwc")
            same_bits(
                got, want.reshape(got.shape), f"bounds={bounds} shape={(h, w, c)} threads={threads}"
            )
