"""Threads and concurrency, measured (figures in docs/benchmarks.md, "Threads and concurrent
calls"):

1. per model (every zoo model with random weights: the paper's four at 224, the published BNNs
   of weights_tools.bnn_zoo at their input shapes; and the shipped digits model),
   batch 1: median milliseconds of `run` with threads=1, threads="auto" and threads=2, the
   configurations alternating run by run so that a change in the machine's load hits them
   alike; "auto" must never be slower than one thread, and 2 threads should be >= 1.7x faster
   than one on QB-Net-Large;
2. one Model (threads=1) shared by 1, 2 and 4 Python threads: images per second of `run`,
   and the outputs compared with serial calls.

    python benchmarks/bench_threads.py                 # everything
    python benchmarks/bench_threads.py --only threads  # or: --only concurrency
    python benchmarks/bench_threads.py --json out.json

Not a test: timings depend on the machine and its load, so nothing here asserts a speed;
the verdict lines say whether this run met the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_util import bnn_zoo_file, is_bnn_zoo, zoo_file

import qbinfer
from qbinfer import _core, _testing

ZOO = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")


def bnn_zoo_names() -> tuple:
    from weights_tools.bnn_zoo import BNN_ZOO

    return tuple(BNN_ZOO)


DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"


def model_paths(names):
    out = {}
    for name in names:
        if name == "digits":
            out[name] = DIGITS
        elif is_bnn_zoo(name):
            out[name] = bnn_zoo_file(name)[0]
        else:
            out[name] = zoo_file(name)[0]
    return out


def image_for(model, seed=0):
    h, w, c = model.input_shape
    return np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)


def alternating_times(models: dict, x, rounds: int, inner: int) -> dict:
    """Milliseconds of every run of each model, the models taking turns: every round runs each
    model `inner` times (timing each run), in an order that rotates from round to round."""
    times = {k: [] for k in models}
    keys = list(models)
    for m in models.values():  # warm: arenas, caches, the pool's workers
        for _ in range(3):
            m.run(x)
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            m = models[k]
            for _ in range(inner):
                t0 = time.perf_counter()
                m.run(x)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def half_spread(runs: list) -> float:
    """How far the medians of the first and second half of one configuration's runs differ,
    relative: the noise of the machine at the time, against which a ratio is judged."""
    half = len(runs) // 2
    a, b = statistics.median(runs[:half]), statistics.median(runs[half:])
    return abs(a / b - 1.0)


def bench_threads(names, rounds: int) -> list:
    rows = []
    for name, path in model_paths(names).items():
        configs = {
            "1": qbinfer.load(path, threads=1),
            "auto": qbinfer.load(path, threads="auto"),
            "2": qbinfer.load(path, threads=2),
        }
        x = image_for(configs["1"])
        ref = configs["1"].run(x)
        for k, m in configs.items():  # the same bits whatever the threads
            if not np.array_equal(m.run(x), ref):
                raise SystemExit(f"{name}: threads={k} gave different logits")
        inner = 20 if name == "digits" else 3
        times = alternating_times(configs, x, rounds, inner)
        med = {k: statistics.median(v) for k, v in times.items()}
        steps = configs["auto"]._core.steps()
        row = {
            "model": name,
            "ms_1": med["1"],
            "ms_auto": med["auto"],
            "ms_2": med["2"],
            "auto_threads": configs["auto"].threads,
            "split_steps": sum(1 for s in steps if s["parts"] > 1),
            "steps": len(steps),
            "noise_1": half_spread(times["1"]),
        }
        rows.append(row)
        print(
            f"{name:<14} 1t {row['ms_1']:8.3f} ms   auto({row['auto_threads']}) "
            f"{row['ms_auto']:8.3f} ms   2t {row['ms_2']:8.3f} ms   "
            f"auto/1 {row['ms_auto'] / row['ms_1']:.2f}   1/2t {row['ms_1'] / row['ms_2']:.2f}x   "
            f"split steps {row['split_steps']}/{row['steps']}   "
            f"1t halves differ {100 * row['noise_1']:.1f}%",
            flush=True,
        )
    return rows


def throughput(model, x, callers: int, seconds: float) -> tuple:
    """Images per second of `callers` Python threads calling model.run(x) for `seconds`, and
    whether every output equalled the serial one."""
    expected = model.run(x)
    counts = [0] * callers
    same = [True] * callers
    start = threading.Barrier(callers + 1)
    stop = threading.Event()

    def worker(i):
        start.wait()
        while not stop.is_set():
            out = model.run(x)
            same[i] = same[i] and np.array_equal(out, expected)
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts) * x.shape[0] / elapsed, all(same)


def bench_concurrency(names, rounds: int, seconds: float) -> list:
    rows = []
    for name, path in model_paths(names).items():
        model = qbinfer.load(path, threads=1)
        x = image_for(model)
        per = {1: [], 2: [], 4: []}
        identical = True
        for _ in range(rounds):  # alternate the caller counts, as above
            for callers in per:
                ips, same = throughput(model, x, callers, seconds)
                per[callers].append(ips)
                identical = identical and same
        med = {k: statistics.median(v) for k, v in per.items()}
        row = {
            "model": name,
            "ips_1": med[1],
            "ips_2": med[2],
            "ips_4": med[4],
            "speedup_4": med[4] / med[1],
            "identical": identical,
            "arenas": model._core.workspaces,
        }
        rows.append(row)
        print(
            f"{name:<14} images/s: 1 caller {med[1]:9.1f}   2 {med[2]:9.1f}   4 {med[4]:9.1f}   "
            f"4/1 {row['speedup_4']:.2f}x   identical {identical}   arenas {row['arenas']}",
            flush=True,
        )
    return rows


def machine() -> dict:
    info = {"platform": platform.platform(), "usable_cpus": _core.usable_cpus()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info["load_average"] = os.getloadavg()
    info["isa"] = _core.active_isa()
    return info


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(ZOO + bnn_zoo_names() + ("digits",)))
    p.add_argument("--only", choices=("threads", "concurrency"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seconds", type=float, default=1.0, help="per concurrency measurement")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n]
    m = machine()
    print(
        f"machine: {m.get('Model name', '?')}, {m['usable_cpus']} usable CPUs, load {m['load_average']}"
    )
    lat = _testing.pool_latency(2, 20000, 50)
    print(
        f"pool round trip (2 threads): hot {lat['hot_ns'] / 1e3:.1f} us, cold {lat['cold_ns'] / 1e3:.1f} us"
    )
    report = {"machine": m, "pool_latency_ns": lat, "command": " ".join(sys.argv)}
    if args.only in (None, "threads"):
        rows = bench_threads(names, args.rounds)
        report["threads"] = rows
        slower = [r["model"] for r in rows if r["ms_auto"] > r["ms_1"]]
        beyond = [
            r["model"] for r in rows if r["ms_auto"] / r["ms_1"] - 1.0 > max(r["noise_1"], 0.01)
        ]
        print("auto never slower than 1 thread:", "yes" if not slower else f"NO ({slower})")
        print("  beyond the 1-thread noise (or 1%):", "none" if not beyond else beyond)
        large = [r for r in rows if r["model"] == "qb_net_large"]
        if large:
            print(f"QB-Net-Large 2 threads vs 1: {large[0]['ms_1'] / large[0]['ms_2']:.2f}x")
    if args.only in (None, "concurrency"):
        conc = [n for n in names if n in ("qb_net_large", "digits")] or names[:1]
        rows = bench_concurrency(conc, max(3, args.rounds // 5), args.seconds)
        report["concurrency"] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
