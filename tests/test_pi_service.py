"""examples/raspberry-pi/qbinfer-classify.py, the directory-watching service of
docs/raspberry-pi.md: run with --once on an inbox of held-out digits (.npy, no Pillow needed)
and a damaged file, its JSON lines must equal Model.predict on the same images, and every file
must be moved out of the inbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import qbinfer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "raspberry-pi", "qbinfer-classify.py")
MODELS = os.path.join(os.path.dirname(qbinfer.__file__), "models")


def test_classify_inbox_once(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with np.load(os.path.join(MODELS, "digits_holdout.npz"), allow_pickle=False) as z:
        images = z["images"][:4]
    for i, im in enumerate(images):
        np.save(inbox / f"digit{i}.npy", im)
    (inbox / "broken.npy").write_bytes(b"not an array")
    (inbox / "notes.txt").write_text("not an image: left alone")
    qbw = os.path.join(MODELS, "digits_qbnet.qbw")

    proc = subprocess.run(
        [sys.executable, SCRIPT, qbw, str(inbox), "--once", "--top-k", "2", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(s) for s in (inbox / "results.jsonl").read_text().splitlines()]
    by_file = {r["file"]: r for r in lines}
    assert sorted(by_file) == ["broken.npy"] + [f"digit{i}.npy" for i in range(4)]

    model = qbinfer.load(qbw, threads=1)
    for i, im in enumerate(images):
        want = model.predict(im, top_k=2)
        got = by_file[f"digit{i}.npy"]["top"]
        assert [name for name, _ in got] == [name for name, _ in want]
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-6)
        assert (inbox / "done" / f"digit{i}.npy").exists()
    assert "error" in by_file["broken.npy"] and "top" not in by_file["broken.npy"]
    assert (inbox / "failed" / "broken.npy").exists()
    assert sorted(p.name for p in inbox.iterdir()) == [
        "done",
        "failed",
        "notes.txt",
        "results.jsonl",
    ]
