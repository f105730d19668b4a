"""qbinfer against Larq Compute Engine (LCE) on the same architecture, side by side (optional).

Not part of the test suite, and not of the project's environment: LCE needs TensorFlow 2.16,
whose numpy < 2 would break qbinfer's environment, so LCE lives in a virtualenv of its own
(default `.venv-lce` in the repo root, or $QBINFER_LCE_VENV):

    python benchmarks/lce_compare.py --setup        # once: creates the venv (~2.2 GB, PyPI)
    python benchmarks/lce_compare.py                # QB-Net-Small and -Large, table on stdout
    python benchmarks/lce_compare.py --models qb_net_small qsb_net_small --json lce.json

The venv holds larq-compute-engine 0.16.0 (built against TensorFlow 2.16), tensorflow 2.16,
tf-keras 2.16 (larq needs Keras 2; TF_USE_LEGACY_KERAS=1 is set), larq and larq-zoo.

For each model, in the project's Python (with torch) the zoo's ArchSpec becomes a stage plan
(strides, channel multipliers, binary kernel sizes: the zoo's kernel rule), and the venv's Python
builds that plan in larq/Keras and converts it with larq_compute_engine.convert_keras_model
(benchmarks/lce_model.py; cached in $QBINFER_BENCH_CACHE). The run stops unless every binary conv
became an LceBconv2d op. It then times, each configuration in its own process, with the timed runs
split over rounds that visit every configuration in turn (as compare.py does):
  - qbinfer on the zoo model of the same architecture (bench_util.zoo_file), best ISA, 1 and 2
    threads (compare.py's worker);
  - LCE's interpreter (larq_compute_engine.tflite.python.interpreter), 1 and 2 threads, with its
    defaults ("lce": binary convs through ruy's BGEMM, float ops through TFLite's builtin kernels)
    and with use_indirect_bgemm=True, use_xnnpack=True ("lce-ind+xnn", LCE's fastest x86 set-up
    here: its indirect BGEMM kernel, float ops in the XNNPack delegate).
It prints the medians (min in parentheses), the ratios LCE / qbinfer, and the architecture check:
parameters, binary convs and binary MACs on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import compare  # noqa: E402  (stdlib-only at import time; its worker times qbinfer)

DEFAULT_MODELS = ("qb_net_small", "qb_net_large")
ALL_MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")
REQUIREMENTS = (
    "larq-compute-engine==0.16.0",
    "tensorflow==2.16.*",
    "tf-keras==2.16.*",
    "larq==0.14.0",
    # Larq Zoo's own QuickNet, Real-to-Bin and Bi-Real Net definitions (benchmarks/table3.py).
    "larq-zoo==2.4.0",
)
LCE_VARIANTS = {
    "lce": {},
    "lce-ind+xnn": {"use_indirect_bgemm": True, "use_xnnpack": True},
}


def venv_dir() -> Path:
    return Path(os.environ.get("QBINFER_LCE_VENV", ROOT / ".venv-lce"))


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def lce_env() -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


def setup() -> int:
    """Creates the LCE venv with the pinned packages (from PyPI)."""
    venv = venv_dir()
    if not venv_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv_python()), "-m", "pip", "install", *REQUIREMENTS], check=True)
    r = subprocess.run(
        [
            str(venv_python()),
            "-c",
            "import tensorflow as tf, larq, larq_compute_engine as lce; "
            "print('tensorflow', tf.__version__, '| larq-compute-engine', "
            "lce.__version__)",
        ],
        env=lce_env(),
        capture_output=True,
        text=True,
    )
    print(r.stdout.strip() or r.stderr[-2000:])
    return r.returncode


# ------------------------------------------------------------------------------- workers
def lce_worker(args) -> dict:
    """Runs in the LCE venv: times one interpreter configuration on a .tflite."""
    import numpy as np
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    x = np.ascontiguousarray(compare._input().transpose(0, 2, 3, 1))  # NCHW -> NHWC
    options = LCE_VARIANTS[args.variant]
    with open(args.model, "rb") as f:
        interp = Interpreter(f.read(), num_threads=args.threads, **options)
    lite = interp.interpreter  # predict() of the wrapper: no per-call batching in Python
    fn = lambda v: lite.predict([v])[0]  # noqa: E731
    y = fn(x)
    out = {"options": options, "logits": y[0, :8].tolist(), "finite": bool(np.isfinite(y).all())}
    out["samples"], out["cpu_samples"] = compare._time(fn, x, args.warmup, args.runs)
    return out


def run_lce(argv) -> dict:
    cmd = [str(venv_python()), str(Path(__file__).resolve())] + argv
    r = subprocess.run(
        cmd, capture_output=True, text=True, env=lce_env(), timeout=3600, cwd=str(ROOT)
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- models
def plan_of(name: str, size: int = 224, num_classes: int = 1000, se: str | None = None) -> dict:
    """The zoo architecture as the stage list lce_model.py builds (kernel rule applied here);
    `se` as build_model's: a stage's 5th entry says whether its DS half has SE."""
    from weights_tools.zoo import _is_downsampling, get_arch

    arch = get_arch(name)
    c, stages = arch.stem_channels, []
    for _kind, block in arch.stage_specs():
        se_here = se == "se2" or (se == "se1" and _is_downsampling(block))
        for (sh, sw), k in block:
            stage = [sh, sw, k, arch.kernel_rule.kernel_size(c, c * k)]
            stages.append(stage + [1] if se_here else stage)
            c *= k
    plan = {
        "name": name if se is None else f"{name}_{se}",
        "input_size": size,
        "num_classes": num_classes,
        "stem_channels": arch.stem_channels,
        "stages": stages,
    }
    if se is not None:
        plan["se_reduction"] = arch.se_reduction
    return plan


def lce_file(name: str, dw: str, seed: int, plan: dict | None = None) -> tuple[str, dict]:
    """The .tflite of a zoo architecture (converted once in the venv, cached) and its summary;
    `plan`: another plan lce_model.py builds (default: plan_of(name))."""
    from bench_util import cache_dir

    stem = cache_dir() / f"{name}-lce-{dw}-224-{seed}"
    tfl, summ, plan_path = (
        stem.with_suffix(".tflite"),
        stem.with_suffix(".lce.json"),
        stem.with_suffix(".plan.json"),
    )
    plan = plan or plan_of(name)
    if not (tfl.exists() and summ.exists() and json.loads(summ.read_text()).get("plan") == plan):
        plan_path.write_text(json.dumps(plan))
        print(
            f"converting {name} for LCE (larq/Keras -> convert_keras_model) ...",
            file=sys.stderr,
            flush=True,
        )
        cmd = [
            str(venv_python()),
            str(HERE / "lce_model.py"),
            "--plan",
            str(plan_path),
            "--out",
            str(tfl),
            "--dw",
            dw,
            "--seed",
            str(seed),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=lce_env(), cwd=str(ROOT))
        if r.returncode != 0:
            raise RuntimeError(f"LCE conversion of {name} failed:\n{r.stderr[-4000:]}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        summary["plan"] = plan
        summ.write_text(json.dumps(summary))
    return str(tfl), json.loads(summ.read_text())


def qbinfer_side(name: str, qbw: str) -> dict:
    """The zoo model's parameter count (PyTorch) and the .qbw's binary convs and MACs."""
    from qbinfer import _core
    from weights_tools.zoo import build_model

    model = build_model(name, num_classes=1000)
    params = sum(p.numel() for p in model.parameters())
    bconvs = sum(1 for m in model.modules() if type(m).__name__ == "BinaryConv2d")
    ops = _core.Model(qbw, 1).ops()
    return {
        "params": int(params),
        "binary_convs_zoo": bconvs,
        "binary_convs_qbw": sum(1 for o in ops if o["type"] == "BCONV2D"),
        "binary_macs": int(sum(o["bops"] for o in ops)),
        "ops_qbw": len(ops),
    }


# ------------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", action="store_true", help="create the LCE venv and exit")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=ALL_MODELS)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--variants", nargs="+", default=list(LCE_VARIANTS), choices=list(LCE_VARIANTS))
    p.add_argument(
        "--dw",
        choices=("concat", "multiplier"),
        default="concat",
        help="Keras form of the k parallel depthwise convs (see lce_model.py)",
    )
    p.add_argument("--runs", type=int, default=150, help="timed qbinfer runs per configuration")
    p.add_argument("--lce-runs", type=int, default=45, help="timed LCE runs per configuration")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    # worker mode (internal, runs in the venv)
    p.add_argument("--lce-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="lce", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.setup:
        return setup()
    if args.lce_worker:
        args.threads = args.threads[0]
        print(json.dumps(lce_worker(args)))
        return 0
    if not venv_python().exists():
        raise SystemExit(
            f"no LCE venv at {venv_dir()}: run `python benchmarks/lce_compare.py --setup` first"
        )

    from bench_util import zoo_file

    from qbinfer import _core

    env_base = {k: v for k, v in os.environ.items() if k not in ("QBINFER_ISA", "QBINFER_FUSION")}
    arch, configs = {}, []  # configs: (key, runner, argv, runs)
    for name in args.models:
        qbw, _onnx = zoo_file(name, seed=args.seed)
        tfl, summary = lce_file(name, args.dw, args.seed)
        arch[name] = {"qbinfer": qbinfer_side(name, qbw), "lce": summary}
        for t in args.threads:
            configs.append(
                (
                    (name, "qbinfer", t),
                    "qbinfer",
                    ["--worker", "qbinfer", "--model", qbw, "--threads", str(t)],
                    args.runs,
                )
            )
            for v in args.variants:
                configs.append(
                    (
                        (name, v, t),
                        "lce",
                        ["--lce-worker", "--model", tfl, "--variant", v, "--threads", str(t)],
                        args.lce_runs,
                    )
                )

    samples = {key: [] for key, *_ in configs}
    cpu = {key: [] for key, *_ in configs}
    extra = {}
    for r in range(args.rounds):
        for key, runner, argv_, runs in configs:
            n = max(1, runs // args.rounds)
            tail = ["--runs", str(n), "--warmup", str(args.warmup)]
            out = (
                compare.run_worker(argv_ + tail, env_base)
                if runner == "qbinfer"
                else run_lce(argv_ + tail)
            )
            samples[key] += out["samples"]
            cpu[key] += out["cpu_samples"]
            extra[key] = {k: v for k, v in out.items() if k not in ("samples", "cpu_samples")}
            print(
                f"round {r + 1}/{args.rounds} {key}: {1e3 * compare.median(out['samples']):.3f} ms",
                file=sys.stderr,
                flush=True,
            )

    results = [
        {
            "model": name,
            "engine": engine,
            "threads": t,
            "runs": len(xs),
            "median_ms": 1e3 * compare.median(xs),
            "min_ms": 1e3 * min(xs),
            "cpu_median_ms": 1e3 * compare.median(cpu[(name, engine, t)]),
            **extra[key],
        }
        for key, xs in samples.items()
        for name, engine, t in [key]
    ]
    report = {
        "machine": compare.machine(),
        "build": _core.build_info(),
        "lce_versions": next(iter(arch.values()))["lce"]["versions"],
        "architecture": arch,
        "results": results,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    print_report(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def print_report(report, args) -> None:
    by = {(r["model"], r["engine"], r["threads"]): r for r in report["results"]}
    m = report["machine"]
    v = report["lce_versions"]
    print(
        f"\nmachine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs, load average "
        f"{m.get('load_average')}; LCE {v['larq_compute_engine']}, TensorFlow "
        f"{v['tensorflow']}, larq {v['larq']}"
    )
    isa = next((r.get("isa") for r in report["results"] if r["engine"] == "qbinfer"), "?")
    print(f"median ms, 224x224, batch 1 (min in parentheses); qbinfer ISA {isa}\n")
    engines = ["qbinfer"] + list(args.variants)
    head = ["model", "threads"] + engines + [f"{e} / qbinfer" for e in args.variants]
    rows = []
    for name in args.models:
        for t in args.threads:
            row = [name, str(t)]
            for e in engines:
                r = by.get((name, e, t))
                row.append(f"{r['median_ms']:.2f} ({r['min_ms']:.2f})" if r else "-")
            qb = by.get((name, "qbinfer", t))
            for e in args.variants:
                r = by.get((name, e, t))
                row.append(f"{r['median_ms'] / qb['median_ms']:.1f}x" if r and qb else "-")
            rows.append(row)
    _table(head, rows)
    print("\nprocess CPU ms per run, median (1 thread)\n")
    head = ["model"] + engines
    rows = [
        [name]
        + [
            f"{by[(name, e, 1)]['cpu_median_ms']:.2f}" if (name, e, 1) in by else "-"
            for e in engines
        ]
        for name in args.models
    ]
    _table(head, rows)
    print("\nsame architecture? (qbinfer: zoo model / .qbw; LCE: Keras model / .tflite)\n")
    head = [
        "model",
        "params zoo",
        "params Keras",
        "bconv zoo/.qbw",
        "bconv Keras/.tflite",
        "binary MACs qbinfer",
        "binary MACs LCE",
        "tflite ops",
    ]
    rows = []
    for name in args.models:
        a = report["architecture"][name]
        q, k, f = a["qbinfer"], a["lce"]["keras"], a["lce"]["tflite"]
        ops = ", ".join(f"{n} {c}" for n, c in f["op_counts"].items())
        rows.append(
            [
                name,
                f"{q['params']:,}",
                f"{k['params_trainable']:,}",
                f"{q['binary_convs_zoo']}/{q['binary_convs_qbw']}",
                f"{k['binary_convs']}/{f['bconv_count']}",
                f"{q['binary_macs']:,}",
                f"{f['bconv_macs']:,}",
                ops,
            ]
        )
    _table(head, rows)


def _table(head, rows) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
