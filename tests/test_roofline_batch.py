"""The roofline tool (benchmarks/roofline.py) and its bandwidth ceilings, the bitplane8 FC packed
at load, and batches: a batch's outputs are those of its images run one at a time (issue 16)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qbinfer
from qbinfer import _core, _testing

ROOT = Path(__file__).resolve().parent.parent
DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"


def load_roofline():
    spec = importlib.util.spec_from_file_location("roofline", ROOT / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ bandwidth ceilings
def test_read_bandwidth_is_measured_for_every_isa_this_cpu_runs():
    for isa in _core.supported_isas():
        small = _testing.bench.read_bandwidth(isa, 16 * 1024, 0.05)
        assert small > 1e8, f"{isa}: {small} bytes/s from a 16 KiB buffer"
    # An ISA this CPU does not run reads nothing (the same rule as bench.peak).
    missing = [i for i in ("avx2", "avx512", "neon") if i not in _core.supported_isas()]
    for isa in missing:
        assert _testing.bench.read_bandwidth(isa, 16 * 1024, 0.05) == 0.0


def test_a_buffer_in_l1_reads_faster_than_one_in_dram():
    isa = _core.supported_isas()[-1]
    l1 = max(_testing.bench.read_bandwidth(isa, 16 * 1024, 0.05) for _ in range(3))
    dram = min(_testing.bench.read_bandwidth(isa, 256 * 2**20, 0.05) for _ in range(2))
    assert l1 > 1.5 * dram, (l1, dram)


# ------------------------------------------------------------------------ the roofline model
def test_level_for_picks_the_smallest_level_that_holds_the_bytes():
    rl = load_roofline()
    caches = {"L1": 100, "L2": 1000, "L3": 10000}
    assert [rl.level_for(n, caches) for n in (0, 100, 101, 1000, 1001, 10000, 10001)] == [
        "L1",
        "L1",
        "L2",
        "L2",
        "L3",
        "L3",
        "DRAM",
    ]


def test_step_roofline_is_the_larger_of_compute_and_memory():
    rl = load_roofline()
    ceil = {
        "binary_macs_per_s": 1e12,
        "float_macs_per_s": 1e11,
        "read_bytes_per_s": {"L1": 4e11, "L2": 2e11, "L3": 1e11, "DRAM": 1e10},
        "cache_bytes": {"L1": 2**15, "L2": 2**19, "L3": 2**25},
    }
    # Compute bound: 1e9 binary MACs (1 ms) + 1e7 float MACs (0.1 ms); 1 MB of weights from L3
    # (10 us) and 100 KB of activations in L2 (0.5 us).
    s = {"binary_macs": 1e9, "float_macs": 1e7, "weight_bytes": 10**6}
    s.update(activation_bytes=10**5, time_us=2200.0)
    r = rl.step_roofline(s, "L3", ceil)
    assert r["bound"] == "compute" and r["activation_level"] == "L2"
    assert r["roofline_s"] == pytest.approx(1e-3 + 1e-4)
    assert r["weights_s"] == pytest.approx(1e-5) and r["activations_s"] == pytest.approx(5e-7)
    assert r["efficiency"] == pytest.approx(1.1e-3 / 2.2e-3)
    # Memory bound: no MACs, 64 MB of activations (DRAM: 6.4 ms).
    s = {"binary_macs": 0, "float_macs": 0, "weight_bytes": 0, "activation_bytes": 64 * 10**6}
    s["time_us"] = 12800.0
    r = rl.step_roofline(s, "L3", ceil)
    assert r["bound"] == "memory" and r["activation_level"] == "DRAM"
    assert r["roofline_s"] == pytest.approx(6.4e-3) and r["efficiency"] == pytest.approx(0.5)


def test_roofline_tool_reports_every_ceiling_and_step(tmp_path):
    out = tmp_path / "roofline.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "roofline.py"), str(DIGITS)]
        + ["--runs", "5", "--repeats", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for text in ("CPU:", "XOR+popcount", "FMA", "read L1", "read L2", "read L3", "read DRAM"):
        assert text in r.stdout, text
    report = json.loads(out.read_text())
    ceil = report["ceilings"]
    assert set(ceil["read_bytes_per_s"]) == {"L1", "L2", "L3", "DRAM"}
    assert all(v > 0 for v in ceil["read_bytes_per_s"].values())
    assert ceil["binary_macs_per_s"] > 0 and ceil["float_macs_per_s"] > 0
    (model,) = report["models"]
    steps = model["steps"]
    assert len(steps) == len(_core.Model(str(DIGITS), 1).steps())
    ops = qbinfer.load(DIGITS, threads=1).ops()
    assert sum(s["binary_macs"] for s in steps) == sum(op["bops"] for op in ops)
    assert sum(s["weight_bytes"] for s in steps) == sum(op["bytes"] for op in ops)
    for s in steps:
        assert s["roofline_s"] >= s["binary_s"] + s["float_s"] - 1e-15
        assert s["roofline_s"] >= s["weights_s"] + s["activations_s"] - 1e-15
        assert s["activation_bytes"] >= 0
    assert model["roofline_s"] == pytest.approx(sum(s["roofline_s"] for s in steps))
    assert model["efficiency"] == pytest.approx(model["roofline_s"] / model["measured_s"])


# ------------------------------------------------------------------------ batches, packed FC
@pytest.fixture(scope="module")
def bitplane_model_path(tmp_path_factory):
    """qb_net_small at 224x224 with the bitplane8 FC (1024 -> 1000: its head is split across
    threads)."""
    pytest.importorskip("torch", reason="building the test model needs the tools extra")
    from conftest import convert_model, zoo_model

    model = zoo_model("qb_net_small", seed=5, num_classes=1000)
    path, _ = convert_model(
        model, tmp_path_factory.mktemp("batch"), "small224bp8", (224, 224), fc="bitplane8"
    )
    return path


def test_bitplane8_fc_is_packed_at_load(bitplane_model_path):
    m = _core.Model(bitplane_model_path, 1)
    (fc,) = [s for s in m.steps() if s["label"] == "FC"]
    (op,) = [op for op in m.ops() if op["type"].startswith("FC")]
    # One int8 code per weight: the bytes of the planes (8 bits a weight).
    in_features = int(np.prod(op["inputs"][0]))
    assert fc["packed_bytes"] == in_features * op["output"][-1]


@pytest.mark.parametrize("batch", [8, 32])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_equals_its_images_run_one_at_a_time(bitplane_model_path, threads, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    m = _core.Model(bitplane_model_path, threads)
    alone = np.concatenate([m.run(x[i : i + 1]) for i in range(batch)])
    for _ in range(2):  # the second call reuses the arenas of the first
        np.testing.assert_array_equal(m.run(x), alone)
