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
on one thread, with the model's roofline on this machine (benchmarks/roofline.py: the time its
binary MACs, float MACs, weight and activation bytes need at this core's measured ceilings) and
the efficiency (roofline / qbinfer's best one-thread CPU time). Then batch throughput (images/s)
at batch 8 and 32 (--batches), qbinfer's best ISA and ONNX Runtime, both on 2 threads
(--batch-threads). Then the peak RSS (ru_maxrss) of a fresh process that loads QB-Net-Small and runs
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
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PAPER_MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")
BNN_MODELS = ("reactnet_a", "bireal_net18", "bireal_net34", "xnor_net_resnet18", "binarynet_mlp")
MODELS = PAPER_MODELS + BNN_MODELS


# ------------------------------------------------------------------------------- workers
def _input(shape=(3, 224, 224), batch=1):
    import numpy as np

    return np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)


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
    x = _input(tuple(args.shape), args.batch)
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
        opts.intra_op_num_threads = args.threads
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
        if args.state:  # a published BNN: the weights its .qbw was converted from
            from weights_tools.bnn_zoo import BNN_ZOO

            model = build_model(args.name, num_classes=BNN_ZOO[args.name].num_classes)
            model.load_state_dict(torch.load(args.state))
        else:
            model = build_model(args.name, num_classes=1000, se=args.se)
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
            "CPU family",
            "Model",
            "Stepping",
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
                        f
                        for f in value.split()
                        if f.startswith(("avx", "fma", "popcnt", "bmi2", "gfni", "amx"))
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


def quantile(xs, q):
    """The q-quantile of xs (nearest rank): the spread of a configuration's samples."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# ------------------------------------------------------------------------------- roofline
# Op types whose `flops` (ops.cc: one per multiply-accumulate) are float MACs; the rest count
# compares (max pool) or nothing.
FLOAT_MAC_OPS = ("CONV2D", "DWCONV", "FC")


# Ops that read their input as packed bits (one bit per channel, rows of 64-bit words); every
# other op reads floats.
BITS_INPUT_OPS = ("BCONV2D", "BCONV2D_GENERAL", "BFC")


def _value_bytes(shape, dtype) -> int:
    """Bytes of an activation of logical shape (H, W, C) (or (C,)) in `dtype`: 4 per float,
    rows of 64-bit words for packed bits."""
    *outer, c = [int(d) for d in shape]
    n = 1
    for d in outer:
        n *= d
    return n * ((c + 63) // 64 * 8 if dtype == "bits" else 4 * c)


def model_counts(qbw: str) -> dict:
    """What one image costs, from the .qbw as the engine loads it (Model.ops(), the counts of
    csrc/engine/ops.cc): binary MACs, float MACs, bytes of weights (the stored tensors of the
    ops) and bytes of activations of the unfused graph (each op's output written once, each
    input read once: an upper bound, since fused steps keep intermediates in registers)."""
    from qbinfer import _core

    model = _core.Model(qbw, 1)
    ops = model.ops()
    activations = 0
    for op in ops:
        activations += _value_bytes(op["output"], op["output_dtype"])
        in_dtype = "bits" if op["type"] in BITS_INPUT_OPS else "f32"
        activations += sum(_value_bytes(shape, in_dtype) for shape in op["inputs"])
    return {
        "ops": len(ops),
        "steps": len(model.steps()),
        "binary_macs": sum(op["bops"] for op in ops),
        "float_macs": sum(op["flops"] for op in ops if op["type"].startswith(FLOAT_MAC_OPS)),
        "weight_bytes": sum(op["bytes"] for op in ops),
        "activation_bytes": activations,
        "arena_bytes": model.arena_bytes,
        "packed_bytes": model.packed_bytes,
    }


def copy_bandwidth(mib: int = 64, repeats: int = 5) -> float:
    """Bytes per second (read + write) of one core copying a buffer far larger than the caches:
    the rate at which weights stream from memory."""
    import numpy as np

    a = np.ones(mib * 2**20 // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def ceilings(isa: str, repeats: int = 3) -> dict:
    """This core's measured ceilings (roofline.ceilings: binary and float MACs/s of
    qbinfer._testing's peak loops, the read bandwidth of each cache level and DRAM; best of
    `repeats`) and the copy bandwidth."""
    import roofline as roof

    ceil = roof.ceilings(isa, repeats)
    ceil["isa"] = ceil.pop("peak_isa")  # the popcount loop's ISA, as older reports name it
    ceil["copy_bytes_per_s"] = copy_bandwidth()
    return ceil


def roofline(counts: dict, ceil: dict, seconds: float) -> dict:
    """The time each kind of work needs at its ceiling, and what the model achieved in
    `seconds` (qbinfer's median process CPU time per run, one thread, best ISA: on a shared
    machine the wall time also counts the waits for a core)."""
    t_bin = counts["binary_macs"] / ceil["binary_macs_per_s"]
    t_float = counts["float_macs"] / ceil["float_macs_per_s"]
    moved = counts["weight_bytes"] + counts["activation_bytes"]
    return {
        "binary_at_ceiling_ms": 1e3 * t_bin,
        "float_at_ceiling_ms": 1e3 * t_float,
        # Weights once from memory; the activations mostly stay in the caches, so they are
        # reported as a rate, not as a bound.
        "weights_at_copy_rate_ms": 1e3 * counts["weight_bytes"] / ceil["copy_bytes_per_s"],
        "G_binary_MAC_per_s": counts["binary_macs"] / seconds / 1e9,
        "GFLOP_per_s": 2 * counts["float_macs"] / seconds / 1e9,
        "GB_per_s": moved / seconds / 1e9,
        # The binary and float work at their ceilings, one after the other, over the measured
        # time: 1.0 would be a model whose every MAC ran at the ceiling.
        "compute_bound_fraction": (t_bin + t_float) / seconds,
    }


def timed_isa(ceil: dict) -> str:
    """The ISA whose one-thread run the roofline uses (older JSON files name only the ISA of the
    peak loop, which is "avx512_vpopcnt" where qbinfer's avx512 runs VPOPCNTDQ)."""
    return ceil.get("timed_isa") or ceil["isa"].replace("_vpopcnt", "")


def add_rooflines(report: dict) -> None:
    """Fills report["roofline"][model] (which holds model_counts) with roofline() against the
    one-thread CPU-time median of qbinfer's best ISA."""
    by = {(r["model"], r["engine"], r["threads"]): r for r in report["results"]}
    isa = timed_isa(report["ceilings"])
    for name, entry in report["roofline"].items():
        best = by.get((name, f"qbinfer-{isa}", 1))
        if best:
            entry.update(roofline(entry, report["ceilings"], best["cpu_median_ms"] / 1e3))
            if "step_roofline_ms" in entry:  # roofline.py's model, against the same time
                entry["efficiency"] = entry["step_roofline_ms"] / best["cpu_median_ms"]


# ------------------------------------------------------------------------------- driver
def convert(models, seed) -> tuple:
    """Per model, its files (bench_util.zoo_file / bnn_zoo_file, cached), or why it does not
    convert."""
    from bench_util import bnn_zoo_file, input_shape, is_bnn_zoo, zoo_file

    files, failures = {}, {}
    for name in models:
        try:
            if is_bnn_zoo(name):
                qbw, onnx, state = bnn_zoo_file(name, seed=seed)
            else:
                (qbw, onnx), state = zoo_file(name, seed=seed), None
        except Exception as e:  # noqa: BLE001 - reported as a row of the table
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failures[name] = f"{type(e).__name__}: {reason}"
            print(f"{name}: not convertible yet: {failures[name]}", file=sys.stderr)
            continue
        files[name] = {"qbw": qbw, "onnx": onnx, "state": state, "shape": input_shape(name)}
    return files, failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--isas",
        nargs="+",
        default=None,
        help="default: every supported ISA; 'best': only the best this CPU runs",
    )
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
    p.add_argument(
        "--batches",
        nargs="*",
        type=int,
        default=[8, 32],
        help="batch sizes timed for throughput (images/s), qbinfer's best ISA and ONNX Runtime",
    )
    p.add_argument("--batch-threads", type=int, default=2, help="threads of the batch runs")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--from-json", type=Path, default=None, help="print the tables of a saved --json run"
    )
    # worker mode (internal)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--state", default=None, help=argparse.SUPPRESS)
    p.add_argument("--se", default=None, help=argparse.SUPPRESS)
    p.add_argument("--shape", nargs=3, type=int, default=[3, 224, 224], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--ceilings-json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "roofline":  # roofline.py's per-step model of one file, at QBINFER_ISA
        import roofline as roof

        ceil = json.loads(Path(args.ceilings_json).read_text())
        print(json.dumps(roof.measure(args.model, args.runs, ceil)))
        return 0
    if args.worker is not None:
        args.threads = args.threads[0]
        result = rss_worker(args) if args.worker.startswith("rss-") else worker(args)
        print(json.dumps(result))
        return 0

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        args.models = [m for m in MODELS if m in {r["model"] for r in report["results"]}]
        args.models += [m for m in report["not_convertible"] if m not in args.models]
        add_rooflines(report)
        print_table(report, args)
        return 0

    from bench_util import zoo_file

    from qbinfer import _core, _testing

    supported = _core.supported_isas()
    if args.isas == ["best"]:
        isas = supported[-1:]
    else:
        isas = args.isas or supported
    env_base = {k: v for k, v in os.environ.items() if k not in ("QBINFER_ISA", "QBINFER_FUSION")}
    load_start = os.getloadavg()
    files, failures = convert(args.models, args.seed)

    configs = []  # (key, argv, env, runs)
    for name, f in files.items():
        shape = ["--shape"] + [str(d) for d in f["shape"]]
        for isa in isas:
            for t in args.threads:
                runs = args.baseline_runs if isa == "scalar" else args.runs
                if isa == "scalar":
                    runs = max(args.rounds, runs // 6)
                configs.append(
                    (
                        (name, f"qbinfer-{isa}", t),
                        ["--worker", "qbinfer", "--model", f["qbw"], "--threads", str(t)] + shape,
                        dict(env_base, QBINFER_ISA=isa),
                        runs,
                    )
                )
        configs.append(
            (
                (name, "onnxruntime", 1),
                ["--worker", "onnxruntime", "--model", f["onnx"]] + shape,
                env_base,
                args.baseline_runs,
            )
        )
        if not args.no_torch:
            state = ["--state", f["state"]] if f["state"] else []
            configs.append(
                (
                    (name, "pytorch", 1),
                    ["--worker", "torch", "--name", name, "--seed", str(args.seed)] + state + shape,
                    env_base,
                    args.baseline_runs,
                )
            )

    best_isa = [i for i in supported if i in isas][-1] if isas else supported[-1]
    # Batch throughput: qbinfer's best ISA and ONNX Runtime, the same threads, one call per batch.
    bt = args.batch_threads
    for name, f in files.items():
        shape = ["--shape"] + [str(d) for d in f["shape"]]
        for n in args.batches:
            common = ["--threads", str(bt), "--batch", str(n)] + shape
            configs.append(
                (
                    (name, f"qbinfer-{best_isa}", bt, n),
                    ["--worker", "qbinfer", "--model", f["qbw"]] + common,
                    dict(env_base, QBINFER_ISA=best_isa),
                    max(args.rounds, args.runs // n),
                )
            )
            configs.append(
                (
                    (name, "onnxruntime", bt, n),
                    ["--worker", "onnxruntime", "--model", f["onnx"]] + common,
                    env_base,
                    max(args.rounds, args.baseline_runs // n),
                )
            )
    ceil = ceilings(best_isa)
    samples = {key: [] for key, *_ in configs}
    cpu_samples = {key: [] for key, *_ in configs}
    extra = {}
    loads = [os.getloadavg()]
    for r in range(args.rounds):
        for key, argv_, env, runs in configs:
            n = max(1, runs // args.rounds)
            warmup = args.warmup if len(key) == 3 else 1  # a batch call is many runs long
            out = run_worker(argv_ + ["--runs", str(n), "--warmup", str(warmup)], env)
            samples[key] += out["samples"]
            cpu_samples[key] += out["cpu_samples"]
            extra[key] = {k: v for k, v in out.items() if k not in ("samples", "cpu_samples")}
            print(
                f"round {r + 1}/{args.rounds} {key}: {1e3 * median(out['samples']):.3f} ms",
                file=sys.stderr,
                flush=True,
            )
        loads.append(os.getloadavg())

    results, batch_results = [], []
    for key, xs in samples.items():
        if len(key) == 4:
            name, engine, t, n = key
            batch_results.append(
                {
                    "model": name,
                    "engine": engine,
                    "threads": t,
                    "batch": n,
                    "runs": len(xs),
                    "median_ms": 1e3 * median(xs),
                    "images_per_s": n / median(xs),
                    "best_images_per_s": n / min(xs),
                    # Process CPU time (every thread) per image: on a loaded machine the
                    # steadier figure; a batch on T idle cores runs at most T / this images/s.
                    "cpu_ms_per_image": 1e3 * median(cpu_samples[key]) / n,
                }
            )
            continue
        name, engine, t = key
        results.append(
            {
                "model": name,
                "engine": engine,
                "threads": t,
                "runs": len(xs),
                "median_ms": 1e3 * median(xs),
                "min_ms": 1e3 * min(xs),
                "p10_ms": 1e3 * quantile(xs, 0.1),
                "p90_ms": 1e3 * quantile(xs, 0.9),
                "cpu_median_ms": 1e3 * median(cpu_samples[key]),
                "isa": extra[key].get("isa"),
                "kernels": extra[key].get("kernels"),
                "logits_head": extra[key].get("logits"),
            }
        )

    # The roofline of each model at qbinfer's best ISA, one thread (add_rooflines below).
    ceil["timed_isa"] = best_isa
    rooflines = {name: model_counts(f["qbw"]) for name, f in files.items()}
    # roofline.py's model per step (activations at the rate of the level their size implies,
    # weights at that of the level the whole working set fits), profiled at the best ISA.
    ceil_path = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        ceil_path.write_text(json.dumps(ceil))
        for name, f in files.items():
            r = run_worker(
                ["--worker", "roofline", "--model", f["qbw"], "--runs", "40"]
                + ["--ceilings-json", str(ceil_path)],
                dict(env_base, QBINFER_ISA=best_isa),
            )
            rooflines[name].update(
                step_roofline_ms=1e3 * r["roofline_s"],
                profile_ms=1e3 * r["measured_s"],
                weight_level=r["weight_level"],
                roofline_parts_ms={
                    k: 1e3 * r[f"{k}_s"] for k in ("binary", "float", "weights", "activations")
                },
            )
    finally:
        ceil_path.unlink()

    rss = vmhwm = {}
    if not args.no_rss:
        # Peak RSS of fresh processes running QB-Net-Small.
        small_qbw, small_onnx = zoo_file("qb_net_small", seed=args.seed)
        rss_runs = {
            "python+numpy": run_worker(["--worker", "rss-numpy", "--runs", "1"], env_base, True),
            "qbinfer": run_worker(
                ["--worker", "rss-qbinfer", "--model", small_qbw, "--runs", "10"], env_base, True
            ),
            "onnxruntime": run_worker(
                ["--worker", "rss-onnxruntime", "--model", small_onnx, "--runs", "10"],
                env_base,
                True,
            ),
        }
        rss = {k: v["maxrss_bytes"] for k, v in rss_runs.items()}
        vmhwm = {k: v.get("vmhwm_bytes") for k, v in rss_runs.items()}

    report = {
        "machine": machine(),
        "load_average_start": load_start,
        "load_average_per_round": loads,
        "build": _core.build_info(),
        "results": results,
        "batch_results": batch_results,
        "not_convertible": failures,
        "ceilings": ceil,
        "roofline": rooflines,
        "rss": rss,
        "vmhwm": vmhwm,
        "pool_latency_ns": _testing.pool_latency(2, 20000, 20),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    add_rooflines(report)
    print_table(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def _print_rows(head, rows) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def print_table(report, args) -> None:
    res = report["results"]
    by = {(r["model"], r["engine"], r["threads"]): r for r in res}
    engines = sorted(
        {(r["engine"], r["threads"]) for r in res},
        key=lambda e: (not e[0].startswith("qbinfer"), e[0], e[1]),
    )
    m = report["machine"]
    loads = report["load_average_per_round"]
    print(
        f"\nmachine: {m.get('Model name', '?')} (family {m.get('CPU family', '?')} model "
        f"{m.get('Model', '?')} stepping {m.get('Stepping', '?')}), {m.get('CPU(s)', '?')} CPUs, "
        f"flags {m.get('Flags', '?')}; {report['date_utc']}"
    )
    print(
        "load average (1 min) at the start and after each round: "
        + ", ".join(f"{la[0]:.2f}" for la in loads)
    )
    print("median ms, batch 1, each model at its input shape (p10-p90 in parentheses)\n")
    head = ["model"] + [f"{e} {t}t" for e, t in engines]
    head += ["ORT/qb", "torch/qb", "2t speedup", "roofline ms", "efficiency"]
    rows = []
    for name in args.models:
        if name in report["not_convertible"]:
            rows.append([name, f"not convertible yet: {report['not_convertible'][name]}"])
            continue
        row = [name]
        for e, t in engines:
            r = by.get((name, e, t))
            row.append(f"{r['median_ms']:.3f} ({r['p10_ms']:.2f}-{r['p90_ms']:.2f})" if r else "-")
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
        roof = report["roofline"].get(name, {})
        row.append(f"{roof['step_roofline_ms']:.3f}" if "step_roofline_ms" in roof else "-")
        row.append(f"{100 * roof['efficiency']:.0f}%" if "efficiency" in roof else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *[r for r in rows if len(r) > 2])]
    for row in [head] + rows:
        if len(row) == 2:
            print(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print(
        "\nprocess CPU ms per run, median (one-thread configurations; close to the idle-core "
        "wall time when the machine is loaded)\n"
    )
    one = [(e, t) for e, t in engines if t == 1]
    head = ["model"] + [f"{e}" for e, _ in one] + ["ORT/qb", "torch/qb"]
    rows = []
    for name in args.models:
        if name in report["not_convertible"]:
            continue
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
    _print_rows(head, rows)

    ceil = report["ceilings"]
    reads = ceil.get("read_bytes_per_s", {})
    print(
        f"\nroofline, qbinfer {timed_isa(ceil)} 1 thread; ceilings of this core: "
        f"{ceil['binary_macs_per_s'] / 1e9:.0f} G binary MAC/s, "
        f"{ceil['float_macs_per_s'] / 1e9:.1f} G float MAC/s, "
        + "".join(f"{level} read {v / 1e9:.1f} GB/s, " for level, v in reads.items())
        + f"{ceil['copy_bytes_per_s'] / 1e9:.1f} GB/s copy (numpy)\n"
    )
    head = [
        "model",
        "G bMAC",
        "G fMAC",
        "weights MB",
        "activ. MB",
        "bMAC@ceil ms",
        "fMAC@ceil ms",
        "weights@copy ms",
        "qbinfer CPU ms",
        "G bMAC/s",
        "GFLOP/s",
        "GB/s",
        "compute bound/CPU",
        "roofline ms",
        "efficiency",
    ]
    rows = []
    for name, r in report["roofline"].items():
        row = [
            name,
            f"{r['binary_macs'] / 1e9:.3f}",
            f"{r['float_macs'] / 1e9:.3f}",
            f"{r['weight_bytes'] / 1e6:.2f}",
            f"{r['activation_bytes'] / 1e6:.1f}",
        ]
        if "compute_bound_fraction" in r:
            q = by[(name, f"qbinfer-{timed_isa(ceil)}", 1)]
            row += [
                f"{r['binary_at_ceiling_ms']:.2f}",
                f"{r['float_at_ceiling_ms']:.2f}",
                f"{r['weights_at_copy_rate_ms']:.2f}",
                f"{q['cpu_median_ms']:.2f}",
                f"{r['G_binary_MAC_per_s']:.0f}",
                f"{r['GFLOP_per_s']:.1f}",
                f"{r['GB_per_s']:.1f}",
                f"{100 * r['compute_bound_fraction']:.0f}%",
            ]
            if "step_roofline_ms" in r:
                row += [f"{r['step_roofline_ms']:.3f}", f"{100 * r['efficiency']:.0f}%"]
        rows.append(row)
    _print_rows(head, rows)
    print(
        "(activations: the unfused graph's bytes, an upper bound; rates per one-thread CPU "
        "time; compute bound: binary and float MACs at their ceilings, one after the other; "
        "roofline: benchmarks/roofline.py's sum over the steps of max(compute, memory), "
        "efficiency = roofline / qbinfer CPU ms)"
    )

    batch = report.get("batch_results", [])
    if batch:
        print("\nbatch throughput, images/s (median call; one call runs the whole batch)\n")
        keys = sorted(
            {(r["engine"], r["threads"], r["batch"]) for r in batch},
            key=lambda k: (not k[0].startswith("qbinfer"), k[2], k[0]),
        )
        bb = {(r["model"], r["engine"], r["threads"], r["batch"]): r for r in batch}
        head = ["model"] + [f"{e} {t}t batch {n}" for e, t, n in keys]
        sizes = sorted({k[2] for k in keys})
        head += [f"qb/ORT batch {n}" for n in sizes]
        rows = []
        for name in args.models:
            if not any(r["model"] == name for r in batch):
                continue
            row = [name]
            for e, t, n in keys:
                r = bb.get((name, e, t, n))
                row.append(f"{r['images_per_s']:.1f}" if r else "-")
            for n in sizes:
                qb = [
                    r
                    for (m, e, t, k), r in bb.items()
                    if m == name and k == n and e.startswith("qbinfer")
                ]
                ort = [
                    r
                    for (m, e, t, k), r in bb.items()
                    if m == name and k == n and e == "onnxruntime"
                ]
                row.append(
                    f"{qb[0]['images_per_s'] / ort[0]['images_per_s']:.1f}x" if qb and ort else "-"
                )
            rows.append(row)
        _print_rows(head, rows)
        print("\nthe same batches, process CPU ms per image (all threads; steadier when loaded)\n")
        rows = []
        for name in args.models:
            if not any(r["model"] == name for r in batch):
                continue
            row = [name]
            for e, t, n in keys:
                r = bb.get((name, e, t, n))
                row.append(f"{r['cpu_ms_per_image']:.2f}" if r and "cpu_ms_per_image" in r else "-")
            rows.append(row)
        _print_rows(head[: 1 + len(keys)], rows)

    rss = report["rss"]
    if rss:
        print("\npeak RSS of a fresh process running QB-Net-Small (ru_maxrss, raw):")
        for k, v in rss.items():
            hwm = report["vmhwm"].get(k)
            print(
                f"  {k:<14} {v / 2**20:8.1f} MiB"
                + (f"   (VmHWM {hwm / 2**20:.1f} MiB)" if hwm else "")
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
