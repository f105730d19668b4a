"""Load time of op-dense files (issue 14, item 2: load time linear in the file, a 40 MB file
loads in under 2 s): 300k PRELU -> AFFINE pairs that all read the input (tests/hostile_files.py,
about 42 MB), with load-time fusion on and off, and a quarter of it (75k pairs) to see the
growth, which is linear when four times the ops take about four times as long; and a zoo
model (QSB-Net-Large at 224, converted once by bench_util.zoo_file), whose load the compact
per-op structures must not slow down. Each load's peak RSS growth (VmHWM after the load less
VmRSS before it, in a fresh child process) is recorded with it (extra_info).

    python -m pytest benchmarks/test_bench_load.py --benchmark-only \\
        --benchmark-columns=median,min,rounds --benchmark-timer=time.process_time

(process time: on a shared machine it leaves out the time other processes hold the core.)"""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile_files as hf  # noqa: E402
from bench_util import zoo_file  # noqa: E402

from qbinfer import _core  # noqa: E402

# A fresh process loads the file once: its peak RSS growth over the load, in bytes.
LOAD_CHILD = """
import sys
from qbinfer import _core
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
before = status("VmRSS:")
_core.Model(sys.argv[1], 1)
print(status("VmHWM:") - before)
"""


def load_rss_growth(path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_CHILD, str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    out = {}
    for n in (75_000, 300_000):
        blob, _ = hf.prelu_affine_fanout(n)
        path = folder / f"pairs_{n}.qbw"
        path.write_bytes(blob)
        out[n] = (path, len(blob))
    return out


@pytest.mark.parametrize("fusion", ["on", "off"])
@pytest.mark.parametrize("pairs", [75_000, 300_000])
def test_load_prelu_affine_pairs(benchmark, pair_files, monkeypatch, pairs, fusion):
    path, size = pair_files[pairs]
    monkeypatch.setenv("QBINFER_FUSION", "1" if fusion == "on" else "0")
    benchmark.group = "load of PRELU->AFFINE pairs reading one value"
    benchmark.extra_info.update(pairs=pairs, file_mb=round(size / 1e6, 1), fusion=fusion)
    model = benchmark.pedantic(_core.Model, args=(str(path), 1), rounds=3, iterations=1)
    assert model.fused == (fusion == "on")
    benchmark.extra_info["median_s"] = round(benchmark.stats.stats.median, 3)
    benchmark.extra_info["peak_rss_growth_mib"] = round(load_rss_growth(path) / 2**20, 1)


def test_load_qsb_net_large(benchmark):
    path, _ = zoo_file("qsb_net_large")
    benchmark.group = "load of a zoo model"
    benchmark.extra_info.update(
        model="qsb_net_large", size=224, file_mb=round(Path(path).stat().st_size / 1e6, 1)
    )
    model = benchmark.pedantic(_core.Model, args=(path, 1), rounds=7, iterations=1)
    assert model.num_classes == 1000
    benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1e3, 1)
    benchmark.extra_info["peak_rss_growth_mib"] = round(load_rss_growth(path) / 2**20, 1)
