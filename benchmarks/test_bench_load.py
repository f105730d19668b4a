"""Load time of op-dense files (issue 14, item 2: load time linear in the file, a 40 MB file
loads in under 2 s): 300k PRELU -> AFFINE pairs that all read the input (tests/hostile_files.py,
about 42 MB), with load-time fusion on and off, and a quarter of it (75k pairs) to see the
growth, which is linear when four times the ops take about four times as long.

    python -m pytest benchmarks/test_bench_load.py --benchmark-only \\
        --benchmark-columns=median,min,rounds --benchmark-timer=time.process_time

(process time: on a shared machine it leaves out the time other processes hold the core.)"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile_files as hf  # noqa: E402

from qbinfer import _core  # noqa: E402


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
