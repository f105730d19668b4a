"""The segmentation trainer (weights_tools.train --task segmentation) and its metrics."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from weights_tools import train as T
from weights_tools.train_segmentation import confusion_matrix, miou, poly_factor

TINY = [
    "--data",
    "scenes",
    "--arch",
    "qsb_net_small",
    "--blocks",
    "N,DS,N,QS,N,QS,N,QS,N",
    "--stem-channels",
    "2",
    "--aspp-channels",
    "8",
    "--low-level-channels",
    "4",
    "--decoder-channels",
    "8",
    "--input-size",
    "32",
    "--epochs",
    "1",
    "--scenes-per-epoch",
    "8",
    "--batch-size",
    "4",
    "--eval-images",
    "4",
    "--threads",
    "1",
]


def test_confusion_matrix_by_hand():
    # pixels (truth, prediction): (0,0) (1,1) (0,1) (255 ignored) (2,0) (2,2)
    truth = torch.tensor([[0, 1, 0], [255, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 0, 2]])
    conf = confusion_matrix(pred, truth, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    m, per_class = miou(conf.numpy())
    # IoU = TP / (TP + FP + FN): class 0: 1 / (1 + 1 + 1); class 1: 1 / (1 + 1 + 0);
    # class 2: 1 / (1 + 0 + 1)
    assert per_class == pytest.approx([100 / 3, 50.0, 50.0])
    assert m == pytest.approx((100 / 3 + 50 + 50) / 3)


def test_miou_leaves_out_absent_classes():
    conf = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]])  # class 1: neither in truth nor predicted
    m, per_class = miou(conf)
    assert math.isnan(per_class[1])
    assert m == pytest.approx((5 / 6 * 100 + 3 / 4 * 100) / 2)


def test_confusion_matrix_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


def test_poly_schedule():
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(50, 100, 1.0) == pytest.approx(0.5)


def test_bad_task():
    with pytest.raises(SystemExit, match="--task"):
        T.main(["--task", "detection"])


def test_train_two_stages_and_rebuild(tmp_path):
    out1, out2 = os.fspath(tmp_path / "s1"), os.fspath(tmp_path / "s2")
    assert T.main(["--task", "segmentation", *TINY, "--stage", "1", "--out", out1]) == 0
    ck1 = torch.load(os.path.join(out1, "model.pth"), weights_only=False)
    assert ck1["meta"]["task"] == "segmentation" and ck1["meta"]["stage"] == 1
    assert 0.0 <= ck1["metrics"]["miou"] <= 100.0
    init = os.path.join(out1, "model.pth")
    args = ["--task=segmentation", *TINY, "--stage", "2", "--init", init, "--out", out2]
    assert T.main(args) == 0
    ck2 = torch.load(os.path.join(out2, "model.pth"), weights_only=False)
    model = T.model_from_meta(ck2["meta"])
    model.load_state_dict(ck2["model"])
    model.eval()
    from weights_tools.layers import BinaryConv2d

    assert all(m.binary_weights for m in model.modules() if isinstance(m, BinaryConv2d))
    # The compact weights the demo reads rebuild the same model.
    from weights_tools.export import load_compact_model, save_compact_weights

    path = os.fspath(tmp_path / "w.npz")
    save_compact_weights(model, ck2["meta"], path)
    again = load_compact_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    with open(os.path.join(out2, "log.jsonl")) as f:
        lines = f.read().splitlines()
    assert any('"event": "end"' in line for line in lines)
