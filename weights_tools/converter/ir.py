"""The converter's intermediate graph: NCHW, one node per engine-level op, parameters as numpy.

Translation (`translate.py`) builds it from ONNX, the rewrite passes (`passes/`) edit it in
place, emission (`emit.py`) writes it as a `weights_tools.qbw.Graph` in NHWC.

Node kinds and their params (all per output channel unless said otherwise):

- ``conv``: float conv; ``w`` [Co, Ci, kh, kw] float64, ``b`` [Co], ``stride``, ``pads``
  (top, left, bottom, right), ``relu`` (bool, a fused ReLU).
- ``dwconv``: 3x3 depthwise conv; ``w`` [k*C, 9] float32, ``scale``, ``bias`` (the output
  affine), ``pre_bias`` ([C] or None, added to the input), ``stride``, ``k`` (multiplier).
- ``sign``: ``threshold`` [C]; the ±1 of ``x >= threshold``. Becomes ``bitpack``.
- ``bitpack``: ``threshold`` [C] float32; packed bits of ``x >= threshold``.
- ``bconv``: binary conv on bits; ``w`` [Co, Ci, k, k] int8 ±1, ``k``, ``pad_mode`` (0: zero,
  1: one padding), ``scale``, ``bias``.
- ``bfc``: binary fully connected on bits; ``w`` [O, I] int8 ±1, ``scale``, ``bias`` (the
  output affine: scale holds alpha_o of scaled weights alpha_o * sign(W)). I = C*H*W when the
  input is a flattened map, columns in PyTorch's order c*H*W + y*W + x (emission permutes them).
- ``affine``: ``scale``, ``bias``, ``pure_add`` (True when it is one Add/Sub of a constant, so
  the scale is exactly 1 and ``x*1 + c`` is ``x + c``).
- ``clip``: ``lo``, ``hi`` (floats); only before a sign (`passes.drop_clip_before_sign`), emission
  refuses any other.
- ``prelu``: ``slope``. ``avgpool``: ``kernel``, ``stride``. ``fc``: ``w`` [O, I] (as ``bfc``), ``b`` [O],
  optional ``encoding`` ("binary" or "int8": an SE layer's compact weights, see `se_weights`).
- ``maxpool``: ``kernel``, ``stride``, ``pads`` (top, left, bottom, right; floor mode, the
  end pads already widened for ceil mode). ``clip``: ``lo``, ``hi`` (floats, lo <= hi).
- ``softmax``: ``log`` (bool: LogSoftmax); over the channels of each pixel.
- ``avgpool2d``: ``kernel``, ``stride``, ``pads`` (top, left, bottom, right, as in the model),
  ``ceil_mode``, ``count_include_pad`` (bools): PyTorch's avg_pool2d (AVGPOOL2D); an average
  pool that AVGPOOL computes the same is an ``avgpool`` instead.
- ``resize``: ``out_size`` (H, W), ``bilinear`` (else nearest), ``half_pixel`` (else corner
  coordinates), ``ratio`` float32 [2] (input pixels per output pixel, as PyTorch computes it):
  RESIZE.
- ``dwconv`` also has ``dilation`` (the atrous rate d >= 1; d > 1 only at stride 1, padding d).
- no params: ``relu``, ``sigmoid``, ``add``, ``mul_channel``, ``gap``, ``concat``.

Every node has one output (every engine op has one); values are named by their ONNX names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import onnx

__all__ = ["Node", "ValueInfo", "IRGraph"]


@dataclass
class ValueInfo:
    """A dynamic ONNX tensor, per image: channels, height, width, its ONNX rank (4, or 2 for a
    (N, C) vector, or a (N, C*H*W) flattened map that keeps the map's c, h, w), and what it holds: 'f32', 'pm1' (the ±1 output of a sign) or 'pm1pad'
    (that output padded with +1 by a Pad)."""

    name: str
    c: int
    h: int
    w: int
    rank: int = 4
    kind: str = "f32"
    source: Optional[str] = None  # for 'pm1pad': the padded sign value
    # for 'pm1': the sign's ±1 times this scalar (`torch.sign(x) * alpha`, a scaled binary
    # activation), which the binary conv or FC reading it takes into its weights
    pm1_scale: float = 1.0

    @property
    def features(self) -> int:
        """The length of the value read as a vector: C*H*W."""
        return self.c * self.h * self.w

    @property
    def flat_map(self) -> bool:
        """A (N, C*H*W) flattening of an H x W map (H*W > 1): the engine keeps the map's NHWC
        data, so only ops that do not depend on the element order (and an FC, whose weight
        columns are permuted to match) may read it."""
        return self.rank == 2 and (self.h, self.w) != (1, 1)


@dataclass(eq=False)
class Node:
    """One op of the intermediate graph; `src` is the ONNX node it came from (for names and
    error messages), `p` its parameters (see the module doc)."""

    kind: str
    inputs: List[str]
    output: str
    src: onnx.NodeProto
    p: Dict[str, Any] = field(default_factory=dict)
    # appended to the name when one ONNX node becomes several engine ops (the two halves of a
    # binary conv with zero weights), so that each op and its tensors have a name of their own
    suffix: str = ""

    @property
    def name(self) -> str:
        return (self.src.name or f"{self.src.op_type}:{self.src.output[0]}") + self.suffix


@dataclass
class IRGraph:
    """Nodes in a topological order, the values they read and write, the graph's input and
    output value names, and notes for the user."""

    nodes: List[Node]
    values: Dict[str, ValueInfo]
    input_name: str
    output_name: str
    warnings: List[str] = field(default_factory=list)

    def producers(self) -> Dict[str, Node]:
        return {n.output: n for n in self.nodes}

    def consumers(self) -> Dict[str, List[Node]]:
        uses: Dict[str, List[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                uses.setdefault(i, []).append(n)
        return uses

    def replace_uses(self, old: str, new: str) -> None:
        """Every read of value `old` (and the graph output) reads `new` instead."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        if self.output_name == old:
            self.output_name = new

    def remove(self, node: Node) -> None:
        self.nodes.remove(node)

    def single_use(self, name: str, uses: Dict[str, List[Node]]) -> bool:
        """`name` has exactly one reader and is not the graph output: its producer may be
        changed to suit that reader."""
        return len(uses.get(name, [])) == 1 and name != self.output_name
