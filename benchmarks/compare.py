"""qbinfer against ONNX Runtime and PyTorch on the four zoo models, in one run.

    python benchmarks/compare.py                 # table on stdout
    python benchmarks/compare.py --json out.json # and every number as JSON

For each model (224x224, batch 1, random weights + randomize_bn, converted once and cached by
bench_util.zoo_file), it times:
  - qbinfer with each supported ISA (a subprocess per ISA with QBINFER_ISA set), 1 and 2
    threads;
  - ONNX Runtime, 1 thread (intra_op_num_threads=1, inter_op_num_threads=1), on the very ONNX
    file the converter exported (to_qbw(..., onnx_path=...));
  - PyTorch eager, torch.set_num_threads(1), inference_mode.
Each configuration runs in its own process; the timed runs are split over several rounds that
visit every configuration in turn, so a burst of load on the machine hits all of them alike.
Reported: the median over all timed runs (after warm-up), and ratios against qbinfer's best ISA
on one thread. Then the peak RSS (ru_maxrss) of a fresh process that loads QB-Net-Small and runs
it, with qbinfer and with ONNX Runtime, both raw (nothing subtracted), next to a process that
only imports numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")


# ------------------------------------------------------------------------------- workers
def _input():
    import numpy as np

    return np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)


def _time(fn, x, warmup, runs):
    """Wall-clock and process CPU seconds of each run. On a loaded machine the CPU time of a
    one-thread run is close to what its wall time would be on an idle core."""
    for _ in range(warmup):
        fn(x)
    wall, cpu = [], []
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn(x)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def worker(args) -> dict:
    """One configuration in this process: prints {"samples": [...seconds], ...} as JSON."""
    x = _input()
    out = {}
    if args.worker == "qbinfer":
        from qbinfer import _core

        model = _core.Model(args.model, args.threads)
        out["isa"] = model.isa
        out["kernels"] = model.kernels
        fn = model.run
        out["logits"] = fn(x)[0, :8].tolist()
    elif args.worker == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        fn = lambda v: sess.run(None, {name: v})[0]  # noqa: E731
        out["logits"] = fn(x)[0, :8].tolist()
    elif args.worker == "torch":
        import torch

        from weights_tools.convert import randomize_bn
        from weights_tools.zoo import build_model

        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        model = build_model(args.name, num_classes=1000)
        randomize_bn(model, seed=args.seed)
        model.eval()
        xt = torch.from_numpy(x)

        def fn(_):
            with torch.inference_mode():
                return model(xt)

        out["logits"] = fn(x)[0, :8].tolist()
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    out["samples"], out["cpu_samples"] = _time(fn, x, args.warmup, args.runs)
    return out


def rss_worker(args) -> dict:
    """Peak RSS of this fresh process after loading the model and running it."""
    import resource

    import numpy as np

    x = _input()
    if args.worker == "rss-qbinfer":
        from qbinfer import _core

        model = _core.Model(args.model, 1)
        for _ in range(args.runs):
            model.run(x)
    elif args.worker == "rss-onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(args.runs):
            sess.run(None, {name: x})
    elif args.worker != "rss-numpy":
        raise SystemExit(f"unknown worker {args.worker}")
    np.add(x, 1)
    # ru_maxrss: KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"maxrss_bytes": rss if sys.platform == "darwin" else rss * 1024}
    try:  # Linux: the same high-water mark, per address space
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


# Linux carries ru_maxrss across execve from the address space being replaced, and a child
# starts as a copy of its parent's: a worker forked straight from this (large) process would
# report at least this process's RSS. So RSS workers are started through a small launcher.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def run_worker(argv, env=None, fresh=False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve())] + argv
    if fresh:
        cmd = [sys.executable, "-S", "-c", _LAUNCHER] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- driver
def machine() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = (
            "Model name",
            "CPU(s)",
            "Thread(s) per core",
            "Core(s) per socket",
            "L1d cache",
            "L2 cache",
            "L3 cache",
            "Flags",
        )
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in keep:
                value = value.strip()
                if key.strip() == "Flags":
                    value = " ".join(
                        f for f in value.split() if f.startswith(("avx", "fma", "popcnt", "bmi2"))
                    )
                info[key.strip()] = value
    except OSError:
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--isas", nargs="+", default=None, help="default: every supported ISA")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=300, help="timed qbinfer runs per configuration")
    p.add_argument(
        "--baseline-runs",
        type=int,
        default=60,
        help="timed runs of ONNX Runtime and PyTorch (and of qbinfer's scalar ISA)",
    )
    p.add_argument("--rounds", type=int, default=3, help="the timed runs are split over rounds")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    # worker mode (internal)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker is not None:
        args.threads = args.threads[0]
        result = rss_worker(args) if args.worker.startswith("rss-") else worker(args)
        print(json.dumps(result))
        return 0

    from bench_util import zoo_file

    from qbinfer import _core, _testing

    isas = args.isas or _core.supported_isas()
    env_base = {k: v for k, v in os.environ.items() if k not in ("QBINFER_ISA", "QBINFER_FUSION")}
    files = {name: zoo_file(name, seed=args.seed) for name in args.models}

    configs = []  # (key, argv, env, runs)
    for name in args.models:
        qbw, onnx = files[name]
        for isa in isas:
            for t in args.threads:
                runs = args.baseline_runs if isa == "scalar" else args.runs
                if isa == "scalar":
                    runs = max(args.rounds, runs // 6)
                configs.append(
                    (
                        (name, f"qbinfer-{isa}", t),
                        ["--worker", "qbinfer", "--model", qbw, "--threads", str(t)],
                        dict(env_base, QBINFER_ISA=isa),
                        runs,
                    )
                )
        configs.append(
            (
                (name, "onnxruntime", 1),
                ["--worker", "onnxruntime", "--model", onnx],
                env_base,
                args.baseline_runs,
            )
        )
        if not args.no_torch:
            configs.append(
                (
                    (name, "pytorch", 1),
                    ["--worker", "torch", "--name", name, "--seed", str(args.seed)],
                    env_base,
                    args.baseline_runs,
                )
            )

    samples = {key: [] for key, *_ in configs}
    cpu_samples = {key: [] for key, *_ in configs}
    extra = {}
    for r in range(args.rounds):
        for key, argv_, env, runs in configs:
            n = max(1, runs // args.rounds)
            out = run_worker(argv_ + ["--runs", str(n), "--warmup", str(args.warmup)], env)
            samples[key] += out["samples"]
            cpu_samples[key] += out["cpu_samples"]
            extra[key] = {k: v for k, v in out.items() if k not in ("samples", "cpu_samples")}
            print(
                f"round {r + 1}/{args.rounds} {key}: {1e3 * median(out['samples']):.3f} ms",
                file=sys.stderr,
                flush=True,
            )

    results = []
    for key, xs in samples.items():
        name, engine, t = key
        results.append(
            {
                "model": name,
                "engine": engine,
                "threads": t,
                "runs": len(xs),
                "median_ms": 1e3 * median(xs),
                "min_ms": 1e3 * min(xs),
                "cpu_median_ms": 1e3 * median(cpu_samples[key]),
                "isa": extra[key].get("isa"),
                "kernels": extra[key].get("kernels"),
                "logits_head": extra[key].get("logits"),
            }
        )

    # Peak RSS of fresh processes running QB-Net-Small.
    small_qbw, small_onnx = zoo_file("qb_net_small", seed=args.seed)
    rss_runs = {
        "python+numpy": run_worker(["--worker", "rss-numpy", "--runs", "1"], env_base, True),
        "qbinfer": run_worker(
            ["--worker", "rss-qbinfer", "--model", small_qbw, "--runs", "10"], env_base, True
        ),
        "onnxruntime": run_worker(
            ["--worker", "rss-onnxruntime", "--model", small_onnx, "--runs", "10"], env_base, True
        ),
    }
    rss = {k: v["maxrss_bytes"] for k, v in rss_runs.items()}
    vmhwm = {k: v.get("vmhwm_bytes") for k, v in rss_runs.items()}

    report = {
        "machine": machine(),
        "build": _core.build_info(),
        "results": results,
        "rss": rss,
        "vmhwm": vmhwm,
        "pool_latency_ns": _testing.pool_latency(2, 20000, 20),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    print_table(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def print_table(report, args) -> None:
    res = report["results"]
    by = {(r["model"], r["engine"], r["threads"]): r for r in res}
    engines = sorted(
        {(r["engine"], r["threads"]) for r in res},
        key=lambda e: (not e[0].startswith("qbinfer"), e[0], e[1]),
    )
    m = report["machine"]
    print(
        f"\nmachine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs, "
        f"load average {m.get('load_average')}"
    )
    print("median ms, 224x224, batch 1 (min in parentheses)\n")
    head = ["model"] + [f"{e} {t}t" for e, t in engines] + ["ORT/qb", "torch/qb", "2t speedup"]
    rows = []
    for name in args.models:
        row = [name]
        for e, t in engines:
            r = by.get((name, e, t))
            row.append(f"{r['median_ms']:.3f} ({r['min_ms']:.2f})" if r else "-")
        qb = [
            by[(name, e, 1)]
            for e, t in engines
            if e.startswith("qbinfer") and t == 1 and (name, e, 1) in by
        ]
        best = min(qb, key=lambda r: r["median_ms"]) if qb else None
        ort_r, torch_r = by.get((name, "onnxruntime", 1)), by.get((name, "pytorch", 1))
        row.append(f"{ort_r['median_ms'] / best['median_ms']:.1f}x" if best and ort_r else "-")
        row.append(f"{torch_r['median_ms'] / best['median_ms']:.1f}x" if best and torch_r else "-")
        two = by.get((name, best["engine"], 2)) if best else None
        row.append(f"{best['median_ms'] / two['median_ms']:.2f}x" if two else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print(
        "\nprocess CPU ms per run, median (one-thread configurations; close to the idle-core "
        "wall time when the machine is loaded)\n"
    )
    one = [(e, t) for e, t in engines if t == 1]
    head = ["model"] + [f"{e}" for e, _ in one] + ["ORT/qb", "torch/qb"]
    rows = []
    for name in args.models:
        row = [name]
        for e, t in one:
            r = by.get((name, e, t))
            row.append(f"{r['cpu_median_ms']:.3f}" if r else "-")
        qb = [by[(name, e, 1)] for e, _ in one if e.startswith("qbinfer") and (name, e, 1) in by]
        best = min(qb, key=lambda r: r["cpu_median_ms"]) if qb else None
        for other in ("onnxruntime", "pytorch"):
            r = by.get((name, other, 1))
            row.append(f"{r['cpu_median_ms'] / best['cpu_median_ms']:.1f}x" if best and r else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    rss = report["rss"]
    print("\npeak RSS of a fresh process running QB-Net-Small (ru_maxrss, raw):")
    for k, v in rss.items():
        hwm = report["vmhwm"].get(k)
        print(
            f"  {k:<14} {v / 2**20:8.1f} MiB" + (f"   (VmHWM {hwm / 2**20:.1f} MiB)" if hwm else "")
        )
    if rss.get("onnxruntime"):
        print(f"  qbinfer / onnxruntime = {rss['qbinfer'] / rss['onnxruntime']:.2f}")
    lat = report["pool_latency_ns"]
    print(
        f"\nthread pool round trip (2 threads): hot {lat['hot_ns'] / 1e3:.2f} us, "
        f"cold (workers parked) {lat['cold_ns'] / 1e3:.2f} us"
    )


if __name__ == "__main__":
    sys.exit(main())
