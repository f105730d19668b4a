"""Operation counts against hand-computed formulas and the paper's Tables 2 and 3."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the tools extra (torch) is needed for weights_tools")

from torch import nn  # noqa: E402

from weights_tools.layers import Stage  # noqa: E402
from weights_tools.ops import count_ops, count_zoo, to_record  # noqa: E402
from weights_tools.zoo import build_model  # noqa: E402

# Paper, Table 2 (BOPs x 1e8) and Table 3 (storage in MB: FP32 FC, 8-bit FC).
PAPER_BOPS = {
    "qb_net_small": 9.3,
    "qb_net_large": 15.5,
    "qsb_net_small": 10.8,
    "qsb_net_large": 16.9,
}
PAPER_STORAGE = {
    "qb_net_small": (9.8, 3.5),
    "qb_net_large": (12.0, 5.8),
    "qsb_net_small": (10.0, 3.9),
    "qsb_net_large": (12.3, 6.2),
}


class _OneStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = Stage(16, (2, 2), multiplier=2, kernel_size=3, se=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.stage(x).mean((2, 3)))


def test_counts_of_a_hand_computed_stage():
    # 16 channels at 8x8 -> DS((2,2), 2) -> 32 channels at 4x4 -> 3x3 binary conv 32->32.
    count = count_ops(_OneStage(), input_size=(8, 8), in_channels=16)
    dw = 2 * 16 * 9 * 4 * 4  # two depthwise 3x3 convs of 16 channels at 4x4
    se = 32 * 4 + 4 * 32  # SE 32 -> 4 -> 32 on the pooled vector
    fc = 32 * 10
    assert count.flops == dw + se + fc
    assert count.bops == 32 * 32 * 9 * 4 * 4
    assert count.ops == count.flops + count.bops / 64
    assert count.binary_params == 32 * 32 * 9
    kinds = sorted({layer.kind for layer in count.layers})
    assert kinds == ["binary_conv", "depthwise", "fc", "se"]


def test_qb_net_small_counts_by_hand():
    # BOPs of QB-Net-Small, layer by layer from Table 1 and the 3x3 rule.
    k3 = 16 * 16 * 9 * 112**2 + 2 * 32 * 32 * 9 * 56**2 + 128 * 128 * 9 * 28**2
    k1 = 128**2 * 28**2 + 6 * 512**2 * 14**2 + 2 * 2048**2 * 7**2
    stem = 3 * 16 * 9 * 112**2
    dw = 9 * (16 * 112**2 + 32 * 56**2 * 2 + 128 * 28**2 * 2 + 512 * 14**2 * 6 + 2048 * 7**2 * 2)
    count = count_ops(build_model("qb_net_small"))
    assert count.bops == k3 + k1
    assert count.flops == stem + dw + 2048 * 1000
    # Full storage: 1 bit per binary weight, 4 bytes per other parameter; the int8 FC saves
    # 3 bytes per weight and pays a 4-byte scale per class.
    model = build_model("qb_net_small")
    n_params = sum(p.numel() for p in model.parameters())
    assert count.params == n_params
    assert (
        count.binary_params
        == 16 * 16 * 9 + 2 * 32 * 32 * 9 + 128 * 128 * 9 + 128**2 + 6 * 512**2 + 2 * 2048**2
    )
    assert count.storage_bytes["fp32"] == count.binary_params // 8 + 4 * (
        n_params - count.binary_params
    )
    assert count.storage_bytes["fp32"] - count.storage_bytes["int8"] == 3 * 2048 * 1000 - 4 * 1000
    assert count.storage_bytes["int8"] == count.storage_bytes["bitplane8"]


@pytest.fixture(scope="module")
def zoo_counts():
    return {c.model: c for c in count_zoo()}


@pytest.mark.parametrize("name", sorted(PAPER_BOPS))
def test_bops_within_one_percent_of_table_2(zoo_counts, name):
    bops = zoo_counts[name].bops / 1e8
    assert abs(bops / PAPER_BOPS[name] - 1) < 0.01, (name, bops)
    # SE changes float work only.
    for se in ("se1", "se2"):
        assert zoo_counts[f"{name}_{se}"].bops == zoo_counts[name].bops
        assert zoo_counts[f"{name}_{se}"].flops > zoo_counts[name].flops


@pytest.mark.parametrize("name", sorted(PAPER_STORAGE))
def test_storage_within_ten_percent_of_table_3(zoo_counts, name):
    fp32, int8 = PAPER_STORAGE[name]
    weights = zoo_counts[name].weights_storage_bytes
    assert abs(weights["fp32"] / 1e6 / fp32 - 1) < 0.10
    assert abs(weights["int8"] / 1e6 / int8 - 1) < 0.10
    full = zoo_counts[name].storage_bytes
    assert full["fp32"] > weights["fp32"] and full["int8"] > weights["int8"]


def test_small_and_large_share_float_work(zoo_counts):
    # Large replaces Small's 512x14x14 blocks by 2048x7x7 ones: the same depthwise MACs.
    assert zoo_counts["qb_net_small"].flops == zoo_counts["qb_net_large"].flops
    assert zoo_counts["qsb_net_small"].flops == zoo_counts["qsb_net_large"].flops


def test_record_compares_with_the_paper(zoo_counts):
    rec = to_record(zoo_counts["qsb_net_large_se1"])
    assert rec["paper"]["bops"]["paper"] == 16.9
    assert rec["paper"]["top1_paper"] == 71.1
    assert to_record(zoo_counts["ablation1"])["paper"]["flops"]["paper"] is None


def test_command_line_json_and_table():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "weights_tools.ops",
            "--json",
            "--models",
            "qb_net_small",
            "--se",
            "none",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (rec,) = json.loads(out)
    assert rec["model"] == "qb_net_small"
    assert rec["ops"] == rec["flops"] + rec["bops"] / 64
    assert set(rec["storage_bytes"]) == {"fp32", "int8", "bitplane8"}
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "weights_tools.ops",
            "--models",
            "qsb_net_large",
            "--input-size",
            "32",
            "32",
            "--num-classes",
            "10",
            "--layers",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "qsb_net_large_se2" in table and "binary_conv" in table
    bad = subprocess.run(
        [sys.executable, "-m", "weights_tools.ops", "--models", "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr
