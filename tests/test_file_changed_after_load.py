"""A model file truncated, overwritten in place or deleted after `qbinfer.load` (issue 14): the
loaded model keeps giving the results it gave before, never a signal and never the results
of the new bytes. `load` reads the whole file once into memory it owns and validates that copy
(docs/format.md, "What load reads"); nothing reads the file afterwards.

Each case runs in a fresh interpreter, so a crash (SIGBUS from a mapping whose file shrank)
shows as a negative return code instead of killing pytest. The child loads the model, records
what the model gives (logits of a batch, a prediction from an image, the metadata, the
summary, a profile), changes the file, records the same again and loads the file afresh; it
prints JSON. The parent checks the records against logits it computes itself from the
original file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qbinfer

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"

# What a loaded model gives, reduced to comparable JSON. Shared by the parent (exec) and the
# children, so both compute it from the same inputs.
OBSERVE = """
import numpy as np

def observe(m):
    h, w, c = m.input_shape
    x = np.random.default_rng(0).standard_normal((3, c, h, w)).astype(np.float32)
    # a uint8 image of another size: predict resizes and crops it as the file says
    img = np.random.default_rng(1).integers(0, 256, (h + 9, w + 4, 3), dtype=np.uint8)
    profile = m.profile(x[:1], runs=1)
    return {
        "logits": m.run(x).tobytes().hex(),
        "predict": [[name, float(p)] for name, p in m.predict(img, top_k=3)],
        "class_names": m.class_names,
        "metadata": m.metadata,
        "name": m.name,
        "summary": m.summary().split("\\n", 1)[1],  # its first line names the path
        "profile_steps": [s.label for s in profile.steps],
    }
"""

CHILD = (
    OBSERVE
    + """
import json, os, sys
import qbinfer

path, change, replacement = sys.argv[1], sys.argv[2], sys.argv[3]
m = qbinfer.load(path, threads=1)
before = observe(m)
if change == "truncate_half":
    os.truncate(path, os.path.getsize(path) // 2)
elif change == "truncate_zero":
    os.truncate(path, 0)
elif change == "write_in_place":  # the same inode, new bytes over the old, no truncation
    with open(path, "r+b") as f:
        f.write(open(replacement, "rb").read())
elif change == "cp":  # what `cp other.qbw model.qbw` does: truncate, then write
    with open(path, "wb") as f:
        f.write(open(replacement, "rb").read())
elif change == "delete":
    os.remove(path)
else:
    raise SystemExit("unknown change " + change)
after = observe(m)
try:
    reloaded = {"logits": observe(qbinfer.load(path, threads=1))["logits"]}
except Exception as e:  # what a fresh load says about the changed file
    reloaded = {"error": type(e).__name__, "message": str(e)}
print(json.dumps({"before": before, "after": after, "reloaded": reloaded}))
"""
)


def expected(path) -> dict:
    namespace: dict = {}
    exec(OBSERVE, namespace)
    return namespace["observe"](qbinfer.load(str(path), threads=1))


def changed_variant(tmp_path: Path, name: str, longer_name: bool) -> Path:
    """The shipped model with the sign of its output op's float tensors flipped (other logits),
    and with `longer_name` a longer model name (another file size)."""
    from weights_tools.qbw import DType, read_qbw, write_qbw

    graph = read_qbw(DIGITS)
    last = graph.ops[-1]
    for t in last.tensors:
        if t is not None and graph.tensors[t].dtype == DType.F32:
            graph.tensors[t].data = -graph.tensors[t].data
    if longer_name:
        graph.model_name += "-" * 4000
    path = tmp_path / name
    write_qbw(str(path), graph)
    return path


@pytest.fixture(scope="module")
def replacements(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replacements")
    size = DIGITS.stat().st_size
    same = changed_variant(tmp, "same_size.qbw", longer_name=False)
    bigger = changed_variant(tmp, "bigger.qbw", longer_name=True)
    noise = tmp / "noise.qbw"
    noise.write_bytes(np.random.default_rng(2).integers(0, 256, size, dtype=np.uint8).tobytes())
    assert same.stat().st_size == size and bigger.stat().st_size > size
    return {"same_size_model": same, "bigger_model": bigger, "random_bytes": noise}


CASES = [
    ("truncate_half", None),
    ("truncate_zero", None),
    ("write_in_place", "same_size_model"),
    ("cp", "same_size_model"),
    ("cp", "bigger_model"),
    ("write_in_place", "random_bytes"),
    ("cp", "random_bytes"),
    ("delete", None),
]


@pytest.mark.parametrize("change,replacement", CASES, ids=[f"{c}-{r}" for c, r in CASES])
def test_a_loaded_model_ignores_its_file(tmp_path, replacements, change, replacement):
    path = tmp_path / "model.qbw"
    path.write_bytes(DIGITS.read_bytes())
    other = replacements[replacement] if replacement else DIGITS
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), change, str(other)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])  # < 0: killed by a signal
    record = json.loads(out.stdout)
    want = expected(DIGITS)
    # profile timings differ run to run; its steps do not
    assert record["before"] == want
    assert record["after"] == want, "the loaded model changed with its file"

    # A fresh load sees the file as it is now: a clear error, or the new model.
    reloaded = record["reloaded"]
    if change == "delete":
        assert reloaded["error"] == "FileNotFoundError"
    elif replacement in (None, "random_bytes"):
        assert reloaded["error"] == "FormatError", reloaded
        assert str(path) in reloaded["message"]
    else:
        new = expected(other)["logits"]
        assert new != want["logits"]  # the replacement really gives other logits
        assert reloaded == {"logits": new}


def test_a_model_from_bytes_ignores_the_buffer():
    """load(bytes-like) copies the buffer: changing it afterwards changes nothing."""
    data = bytearray(DIGITS.read_bytes())
    m = qbinfer.load(data, threads=1)
    namespace: dict = {}
    exec(OBSERVE, namespace)
    before = namespace["observe"](m)
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    del data[100:]
    assert namespace["observe"](m) == before == expected(DIGITS)
