"""Compact weights of a float FC: sign x per-row scale (FC binary mode) or a per-row INT8 grid
(FC int8 mode), recognised in the exported values of a layer trained that way.

The SE layers of the zoo (`weights_tools.layers.SqueezeExcite`, `se_weights="binary"` or
"int8") compute with weights alpha_o * sign(W) or s_o * q (q integer in [-127, 127]); the ONNX
export holds those products. A row is binary when all its weights have one magnitude (exactly:
alpha_o * ±1 is exact in float32), and on the INT8 grid when w / (max|w| / 127) lies within
`INT8_GRID_TOLERANCE` of integers everywhere (s_o * q rounds to float32, so the quotient is an
integer up to about 127 * 2^-23). Either form is exact or within float32 rounding of the
weights it replaces, so recognising it never costs accuracy; a float row of three or more
weights lands on either grid by chance with vanishing probability.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["INT8_GRID_TOLERANCE", "binary_rows", "int8_rows", "compact_encoding"]

INT8_GRID_TOLERANCE = 1e-3


def binary_rows(w: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(pm1 int8 [O, I] of ±1, scale float32 [O]) with w = scale_o * pm1 exactly (for float32
    w), or None when some row holds two magnitudes or a non-finite weight. A row of zeros gets
    +1 signs and scale 0."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size == 0 or not np.all(np.isfinite(w)):
        return None
    magnitude = np.abs(w)
    scale = magnitude[:, 0]
    if not np.all(magnitude == scale[:, None]):
        return None
    pm1 = np.where(w >= 0, 1, -1).astype(np.int8)  # +1 at zeros (sign(0) = +1, -0.0 too)
    return pm1, scale.astype(np.float32)


def int8_rows(w: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(q int8 [O, I] in [-127, 127], scale float32 [O]) with w ≈ scale_o * q, or None when
    some row is not on its INT8 grid (scale_o = max|w_o| / 127, as `fc_int8` of the converter
    and `layers.int8_row_weights` define it)."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size == 0 or not np.all(np.isfinite(w)):
        return None
    scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
    ratio = w / safe
    q = np.rint(ratio)
    if not np.all(np.abs(ratio - q) <= INT8_GRID_TOLERANCE) or np.abs(q).max() > 127:
        return None
    return q.astype(np.int8), scale


def compact_encoding(w: np.ndarray) -> Optional[str]:
    """ "binary" or "int8" when every row of w [O, I] is on that grid (binary first: it is also
    an INT8 grid, at 1/8 of the size), else None."""
    if binary_rows(w) is not None:
        return "binary"
    if int8_rows(w) is not None:
        return "int8"
    return None
