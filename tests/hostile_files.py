"""Crafted .qbw files that are valid but cost far more than their size (issue 14, item 2), shared
by tests/test_hostile_resources.py and benchmarks/test_bench_load.py.

Each builder returns the file's bytes. The writer here follows docs/format.md directly and packs
each record with one struct call, so that a file of 600k ops is written in about a second (the
general writers, weights_tools.qbw and tests/test_engine_format.Graph, take several times that).
numpy only: no torch, no weights_tools."""

from __future__ import annotations

import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"\x89QBW\r\n\x1a\n"
F32 = 0
CONV2D, DWCONV3X3, AFFINE, PRELU, ADD, AVGPOOL, CONCAT, FC = 1, 2, 5, 6, 9, 11, 13, 14
MAXPOOL, CLIP, SOFTMAX, AVGPOOL2D = 15, 16, 19, 20
ABSENT = 0xFFFFFFFF
_HEADER = struct.Struct("<8sHHIQQQQQ")


class Writer:
    """Tensors, values and ops appended in file order, serialized without checks."""

    def __init__(self) -> None:
        self.tensor_records: List[bytes] = []
        self.data = bytearray()
        self.value_records: List[bytes] = []
        self.op_records: List[bytes] = []
        self.n_values = 0

    @staticmethod
    def _string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<I", len(b)) + b

    def tensor(self, name: str, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        offset = len(self.data)
        self.data += arr.tobytes()
        self.data += b"\0" * (-len(self.data) % 64)
        dims = b"".join(struct.pack("<Q", d) for d in arr.shape)
        self.tensor_records.append(
            self._string(name)
            + struct.pack("<II", F32, arr.ndim)
            + dims
            + struct.pack("<QQ", offset, arr.nbytes)
        )
        return len(self.tensor_records) - 1

    def value(self, name: str, h: int, w: int, c: int) -> int:
        self.value_records.append(self._string(name) + struct.pack("<IIII", F32, h, w, c))
        self.n_values += 1
        return self.n_values - 1

    def op(
        self,
        type_: int,
        name: str,
        inputs: Sequence[int],
        output: int,
        tensors: Sequence[Optional[int]] = (),
        attrs: Sequence[int] = (),
    ) -> int:
        ts = [ABSENT if t is None else t for t in tensors]
        self.op_records.append(
            struct.pack("<I", type_)
            + self._string(name)
            + struct.pack(
                f"<I{len(inputs)}II1II{len(ts)}II{len(attrs)}q",
                len(inputs),
                *inputs,
                1,
                output,
                len(ts),
                *ts,
                len(attrs),
                *attrs,
            )
        )
        return output

    def serialize(self, input_value: int, output_value: int) -> bytes:
        meta = bytearray()
        meta += self._string("tests/hostile_files") + self._string("hostile")
        meta += struct.pack("<I", len(self.tensor_records)) + b"".join(self.tensor_records)
        meta += struct.pack("<I", len(self.value_records)) + b"".join(self.value_records)
        meta += struct.pack("<II", input_value, output_value)
        meta += struct.pack("<I", len(self.op_records)) + b"".join(self.op_records)
        # Preprocessing: no resize; the crop is the input value's size (read back from its record).
        rec = self.value_records[input_value]
        (name_len,) = struct.unpack_from("<I", rec)
        _, h, w, _ = struct.unpack_from("<IIII", rec, 4 + name_len)
        meta += struct.pack("<III7f", 0, h, w, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 1 / 255)
        meta += struct.pack("<I", 0)  # no class names
        meta += self._string("")  # metadata_json
        data_offset = 64 + len(meta) + (-(64 + len(meta)) % 64)
        file_size = data_offset + len(self.data)
        body = bytes(meta) + b"\0" * (data_offset - 64 - len(meta)) + bytes(self.data)
        head56 = _HEADER.pack(
            MAGIC, 1, 0, 64, file_size, 64, len(meta), data_offset, len(self.data)
        )
        crc = zlib.crc32(body, zlib.crc32(head56))
        return head56 + struct.pack("<II", crc, 0) + body


def shared_conv_weight(n_convs: int = 200, channels: int = 256) -> Tuple[bytes, np.ndarray]:
    """`n_convs` CONV2D 3x3 (pad 1) ops in a row on a 1x1 image, all reading one weight tensor
    of channels x 3 x 3 x channels floats (2.4 MB at 256 channels). On a 1x1 image only the
    centre tap meets a pixel (the others meet the zero padding), and it is a permutation matrix,
    so the output is the input with its channels permuted n_convs times: exact in float32.
    Returns the file and the expected output of an input vector (as the index map)."""
    rng = np.random.default_rng(14)
    perm = rng.permutation(channels)
    weight = rng.standard_normal((channels, 3, 3, channels)).astype(np.float32)
    weight[:, 1, 1, :] = 0.0
    weight[np.arange(channels), 1, 1, perm] = 1.0  # out[o] = in[perm[o]]
    w = Writer()
    tw = w.tensor("shared.w", weight)
    tb = w.tensor("zero.b", np.zeros(channels, np.float32))
    x = w.value("x", 1, 1, channels)
    y = x
    for i in range(n_convs):
        y = w.op(
            CONV2D,
            f"conv{i}",
            [y],
            w.value(f"conv{i}", 1, 1, channels),
            [tw, tb],
            [3, 3, 1, 1, 1, 1, 1, 1, 0],
        )
    # n_convs applications of out = in[perm]: index map perm composed with itself.
    index = np.arange(channels)
    for _ in range(n_convs):
        index = index[perm]
    return w.serialize(x, y), index


def concat_fanout(
    n_concats: int, copies: int = 48, size: int = 128, channels: int = 8
) -> Tuple[bytes, int]:
    """`n_concats` CONCATs, each of `copies` copies of the input (size x size x channels), then
    an ADD chain that sums them: every CONCAT output is live until its ADD, so the arena holds
    all of them at once (n_concats * copies * size^2 * channels * 4 bytes; 3 GiB for 128 CONCATs
    at the defaults) from a file of a few tens of KB. The output is n_concats times the input
    repeated `copies` times along channels. Returns the file and the planned activation bytes
    of the CONCAT outputs alone (a lower bound of the arena)."""
    w = Writer()
    x = w.value("x", size, size, channels)
    wide = copies * channels
    cats = [
        w.op(CONCAT, f"cat{i}", [x] * copies, w.value(f"cat{i}", size, size, wide))
        for i in range(n_concats)
    ]
    total = cats[0]
    for i, c in enumerate(cats[1:]):
        total = w.op(ADD, f"sum{i}", [total, c], w.value(f"sum{i}", size, size, wide))
    return w.serialize(x, total), n_concats * size * size * wide * 4


def prelu_affine_fanout(n_pairs: int, channels: int = 8) -> Tuple[bytes, np.ndarray]:
    """`n_pairs` PRELU -> AFFINE pairs that all read the input (1x1xC): each pair is an
    element-wise chain the fusion planner could run in place over the input, which the planner
    must refuse for every pair but the last (the input is read later). Before the planner
    precomputed the last reads, that check walked the input's readers once per pair: quadratic.
    The output is the last pair's AFFINE; 300k pairs make a file of about 42 MB. Returns the
    file and (slope, scale, bias) of every pair."""
    rng = np.random.default_rng(300)
    slope = rng.standard_normal(channels).astype(np.float32)
    scale = rng.standard_normal(channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    w = Writer()
    ts, tsc, tb = w.tensor("slope", slope), w.tensor("scale", scale), w.tensor("bias", bias)
    x = w.value("x", 1, 1, channels)
    y = x
    for i in range(n_pairs):
        p = w.op(PRELU, f"p{i}", [x], w.value(f"p{i}", 1, 1, channels), [ts])
        y = w.op(AFFINE, f"a{i}", [p], w.value(f"a{i}", 1, 1, channels), [tsc, tb])
    return w.serialize(x, y), np.stack([slope, scale, bias])


def clip_chain(n_ops: int, channels: int = 8) -> Tuple[bytes, np.ndarray]:
    """`n_ops` CLIPs in a chain (1xC), all reading one bounds tensor: an op type with a tensor
    of its own shape (two bounds, not one per channel), so the engine's per-op structures are
    not those of the PRELU/AFFINE file. 600k CLIPs make a file of about 42 MB. Returns the file
    and the bounds."""
    bounds = np.array([-0.75, 1.25], np.float32)
    w = Writer()
    tb = w.tensor("bounds", bounds)
    x = w.value("x", 1, 1, channels)
    y = x
    for i in range(n_ops):
        y = w.op(CLIP, f"c{i}", [y], w.value(f"c{i}", 1, 1, channels), [tb])
    return w.serialize(x, y), bounds


def op_chain(
    op_type: int,
    n_ops: int,
    shape: Tuple[int, int, int] = (1, 1, 8),
    attrs: Sequence[int] = (),
    tensors: Sequence[Optional[np.ndarray]] = (),
) -> bytes:
    """`n_ops` ops of one type in a chain, each reading the previous one's output, every value
    of `shape` (h, w, c), every op with the same `attrs` and reading the same tensors (one per
    slot in slot order, None for an absent slot; stored once, shared by all ops). Names are
    short ("o<i>") so that the file is mostly op records: 600k ops of a type with 8 attributes
    make about 75 MB. The op-dense files of the per-op memory tests."""
    w = Writer()
    slots = [ABSENT if t is None else w.tensor(f"t{k}", t) for k, t in enumerate(tensors)]
    h, wd, c = shape
    x = w.value("x", h, wd, c)
    # Writer.op and Writer.value, record by record, with what is the same for every op packed
    # once: the file of 600k ops is written in a second or two instead of five.
    value_tail = struct.pack("<IIII", F32, h, wd, c)
    op_head = struct.pack("<I", op_type)
    op_tail = struct.pack(f"<I{len(slots)}II{len(attrs)}q", len(slots), *slots, len(attrs), *attrs)
    io = struct.Struct("<IIII")  # 1 input, its value; 1 output, its value
    for i in range(n_ops):
        name = Writer._string(f"o{i}")
        w.value_records.append(name + value_tail)
        w.op_records.append(op_head + name + io.pack(1, i, 1, i + 1) + op_tail)
    w.n_values += n_ops
    return w.serialize(x, n_ops)


def maxpool_chain(n_ops: int, size: int = 4, channels: int = 8) -> bytes:
    """MAXPOOL 2x2, stride 1, one row and column of padding above and left: the output keeps
    the input's size, and pixel (y, x) is the max of input pixels (y-1..y, x-1..x). After at
    least 2 * size ops, pixel (y, x) holds the max over input rows 0..y and columns 0..x."""
    return op_chain(MAXPOOL, n_ops, (size, size, channels), [2, 2, 1, 1, 1, 1, 0, 0])


def avgpool2d_chain(n_ops: int, channels: int = 8) -> bytes:
    """AVGPOOL2D 1x1, stride 1, no padding, floor mode: each op divides each pixel by 1 (the
    output is the input)."""
    return op_chain(AVGPOOL2D, n_ops, (2, 2, channels), [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def avgpool_chain(n_ops: int, channels: int = 8) -> bytes:
    """AVGPOOL 1x1, stride 1 (the output is the input)."""
    return op_chain(AVGPOOL, n_ops, (2, 2, channels), [1, 1, 1, 1])


def concat_chain(n_ops: int, channels: int = 8) -> bytes:
    """CONCATs of one input each (the smallest CONCAT: the output is the input)."""
    return op_chain(CONCAT, n_ops, (1, 1, channels))


def softmax_chain(n_ops: int, channels: int = 8) -> bytes:
    """SOFTMAX (probabilities) applied again and again: each application divides the spread
    of the values by about the channel count, so after a few tens of ops every channel holds
    1 / channels."""
    return op_chain(SOFTMAX, n_ops, (1, 1, channels), [0])


def _permutation(channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(channels)


def chain_permuted(perm: np.ndarray, n_ops: int) -> np.ndarray:
    """The channel index map of `n_ops` applications of out[o] = in[perm[o]]."""
    index = np.arange(len(perm))
    for _ in range(n_ops % _order(perm)):
        index = index[perm]
    return index


def _order(perm: np.ndarray) -> int:
    """The least k >= 1 with perm applied k times the identity."""
    index, k = perm.copy(), 1
    while not np.array_equal(index, np.arange(len(perm))):
        index, k = index[perm], k + 1
    return k


def conv2d_1x1_chain(n_ops: int, channels: int = 8) -> Tuple[bytes, np.ndarray]:
    """CONV2D 1x1 (stride 1, no padding) ops sharing one permutation weight (out[o] =
    in[perm[o]]) and a zero bias: exact in float32. Returns the file and perm."""
    perm = _permutation(channels, 21)
    weight = np.zeros((channels, 1, 1, channels), np.float32)
    weight[np.arange(channels), 0, 0, perm] = 1.0
    attrs = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    blob = op_chain(CONV2D, n_ops, (1, 1, channels), attrs, [weight, np.zeros(channels, "f4")])
    return blob, perm


def fc_chain(n_ops: int, channels: int = 8) -> Tuple[bytes, np.ndarray]:
    """FC (fp32) ops sharing one permutation weight and a zero bias, as conv2d_1x1_chain.
    Returns the file and perm."""
    perm = _permutation(channels, 22)
    weight = np.zeros((channels, channels), np.float32)
    weight[np.arange(channels), perm] = 1.0
    blob = op_chain(FC, n_ops, (1, 1, channels), [0], [weight, None, np.zeros(channels, "f4")])
    return blob, perm


def dwconv3x3_chain(n_ops: int, channels: int = 8) -> bytes:
    """DWCONV3X3 (f32, stride 1, multiplier 1) on a 1x1 image: only the centre tap meets a
    pixel (the others meet the zero padding). Centre 1, other taps random, scale -1, bias 0:
    each op negates its input (exact), so the output is (-1)^n_ops times the input."""
    weight = np.random.default_rng(23).standard_normal((channels, 9)).astype(np.float32)
    weight[:, 4] = 1.0
    minus_one = np.full(channels, -1.0, np.float32)
    zero = np.zeros(channels, np.float32)
    slots = [None, weight, None, minus_one, zero, None]
    return op_chain(DWCONV3X3, n_ops, (1, 1, channels), [1, 1, 1], slots)
