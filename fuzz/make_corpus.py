"""Writes the fuzzing seed corpus, fuzz/corpus/*.qbw (checked in; rerun after adding an op):

- one small valid graph per op and mode: the base cases of tests/test_op_schema.py (the schema's
  own list, which fails when an op has none), so every op's reader and kernel is reached;
- whole converted models (needs the tools extra): the suite's ReActNet-, XNOR-Net- and
  BinaryNet-style BNNs (tests/bnn_styles.py, random weights, about 40 KB each).
  scripts/sanitize.sh adds the shipped digits model (python/qbinfer/models/digits_qbnet.qbw, a
  QB-Net) as a further seed.

    python fuzz/make_corpus.py            # rewrites fuzz/corpus/
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    from test_op_schema import base_cases

    from weights_tools.qbw import write_qbw

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.qbw"):
        old.unlink()
    rng = np.random.default_rng(20261205)
    for name, case in base_cases():
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        write_qbw(OUT / f"op_{slug}.qbw", case.graph(rng))

    import bnn_styles

    from weights_tools.convert import to_qbw

    for style in ("reactnet", "xnor", "binarynet_mlp"):
        m = bnn_styles.randomize(bnn_styles.STYLES[style](), seed=1)
        to_qbw(m, OUT / f"model_{style}_style.qbw", input_size=32)
    for f in sorted(OUT.glob("*.qbw")):
        print(f"{f.stat().st_size:9d}  {f.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
