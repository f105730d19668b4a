"""The paper's Table 3 on this machine: every network of it on qbinfer, Larq Compute Engine,
ONNX Runtime and PyTorch, side by side, in one run.

    python benchmarks/lce_compare.py --setup      # once: LCE's own virtualenv (see there)
    python benchmarks/table3.py                   # the table on stdout
    python benchmarks/table3.py --json t3.json --networks quicknet_small qb_net_small

For each network of the table (224x224, batch 1, 1000 classes, random weights with randomised
BN statistics: latency does not depend on the values), in the table's order, it times:
  - qbinfer, best ISA, 1 and 2 threads, on the network converted from its PyTorch zoo module
    (weights_tools.table3_zoo.TABLE3_NETWORKS: the zoo name of each row);
  - Larq Compute Engine 1 thread, its fastest x86 set-up ("lce-ind+xnn": indirect BGEMM and
    the XNNPack delegate) and its default ("lce"), on the Keras form of the same network:
    Larq Zoo's own definitions for QuickNet, Real-to-Bin and Bi-Real Net (as the paper measured
    them), Keras' applications for the MobileNets, and benchmarks/lce_model.py's larq versions
    of the zoo's ReActNet-A, XNOR-Net (ResNet-18) and QB/QSB-Net;
  - ONNX Runtime, 1 thread, on the very ONNX file the converter exported;
  - PyTorch eager, 1 thread.
Every configuration runs in its own process and the timed runs are split over rounds that visit
every configuration in turn (as compare.py does), so load on this shared machine hits all alike.
Reported per network: the medians, the ratios to qbinfer's 1-thread median, the network's OPs
(float MACs + binary MACs / 64, counted by the engine on the converted file, the paper's
convention) and the paper's Raspberry Pi 4B latency through LCE beside them; then the ordering
by latency on this machine against the paper's RPi 4B ordering. A network that does not convert
(or that LCE cannot build) keeps its row, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import compare  # noqa: E402  (stdlib-only at import time; its workers time qbinfer, ORT, torch)
import lce_compare  # noqa: E402

# The Keras form LCE runs, per network: lce_model.py's plan kinds (Larq Zoo, Keras applications,
# its larq ReActNet-A and XNOR-Net); every other network is a QB/QSB-Net plan of
# lce_compare.plan_of, from the zoo name and SE mode below.
LCE_KINDS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "xnor_net_resnet18",
    "bireal_net18",
    "real_to_bin_resnet18",
    "reactnet_a",
    "quicknet_small",
    "quicknet",
)
QB_PLANS = {"qsb_net_large_se1": ("qsb_net_large", "se1")}
FP32_NETWORKS = ("mobilenet_v1", "mobilenet_v2")
LCE_ENGINES = ("lce-ind+xnn", "lce")


# ------------------------------------------------------------------------------- files
def engine_files(name: str, seed: int) -> dict:
    """The .qbw, its ONNX, and what the PyTorch worker needs to rebuild the same weights."""
    from bench_util import bnn_zoo_file, is_bnn_zoo, zoo_file

    if is_bnn_zoo(name):
        qbw, onnx, state = bnn_zoo_file(name, seed=seed)
        return {"qbw": qbw, "onnx": onnx, "torch": ["--name", name, "--state", state]}
    qbw, onnx = zoo_file(name, seed=seed)
    return {"qbw": qbw, "onnx": onnx, "torch": ["--name", name, "--seed", str(seed)]}


def ops_of(qbw: str) -> dict:
    """Float MACs, binary MACs and the paper's OPs (float + binary / 64) of a converted file."""
    from qbinfer import _core

    ops = _core.Model(qbw, 1).ops()
    flops = sum(int(o["flops"]) for o in ops)
    bops = sum(int(o["bops"]) for o in ops)
    return {"float_macs": flops, "binary_macs": bops, "ops_e8": (flops + bops / 64) / 1e8}


def lce_plan(name: str) -> dict:
    if name in LCE_KINDS:
        return {"name": name, "kind": name, "input_size": 224, "num_classes": 1000}
    base, se = QB_PLANS.get(name, (name, None))
    return lce_compare.plan_of(base, se=se)


# ------------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from weights_tools.table3_zoo import TABLE3_NETWORKS

    by_name = {n.name: n for n in TABLE3_NETWORKS}
    p.add_argument("--networks", nargs="+", default=list(by_name), choices=list(by_name))
    p.add_argument("--runs", type=int, default=60, help="timed qbinfer runs per configuration")
    p.add_argument(
        "--baseline-runs", type=int, default=15, help="timed runs of LCE, ONNX Runtime, PyTorch"
    )
    p.add_argument("--rounds", type=int, default=3, help="the timed runs are split over rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-lce", action="store_true", help="leave LCE out (no LCE venv here)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="what the 1-thread columns show: wall-clock medians, or process CPU time (closer to "
        "an idle core's wall time when the machine is loaded); 2 threads always wall-clock",
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--from-json", type=Path, default=None, help="print a saved --json run")
    args = p.parse_args(argv)

    if args.from_json:
        print_report(json.loads(args.from_json.read_text()))
        return 0
    use_lce = not args.no_lce
    if use_lce and not lce_compare.venv_python().exists():
        raise SystemExit(
            f"no LCE venv at {lce_compare.venv_dir()}: run `python benchmarks/lce_compare.py "
            "--setup` first, or pass --no-lce"
        )

    from qbinfer import _core

    env = {k: v for k, v in os.environ.items() if k not in ("QBINFER_ISA", "QBINFER_FUSION")}
    nets = [by_name[k] for k in args.networks]
    missing, counts, lce_info, configs = {}, {}, {}, []  # configs: (key, kind, argv, runs)
    for net in nets:
        print(f"preparing {net.label} ...", file=sys.stderr, flush=True)
        try:
            files = engine_files(net.name, args.seed)
            counts[net.name] = ops_of(files["qbw"])
        except Exception as e:  # noqa: BLE001  (the row stays, with the reason)
            missing[(net.name, "qbinfer")] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            files = None
        if files:
            for t in (1, 2):
                qargv = ["--worker", "qbinfer", "--model", files["qbw"], "--threads", str(t)]
                configs.append(((net.name, "qbinfer", t), "py", qargv, args.runs))
            oargv = ["--worker", "onnxruntime", "--model", files["onnx"]]
            configs.append(((net.name, "onnxruntime", 1), "py", oargv, args.baseline_runs))
            if not args.no_torch:
                targv = ["--worker", "torch"] + files["torch"]
                configs.append(((net.name, "torch", 1), "py", targv, args.baseline_runs))
        if use_lce:
            try:
                tfl, summary = lce_compare.lce_file(
                    net.name, "concat", args.seed, lce_plan(net.name)
                )
                lce_info[net.name] = {
                    "binary_convs": summary["tflite"]["bconv_count"],
                    "binary_macs": summary["tflite"]["bconv_macs"],
                    "op_counts": summary["tflite"]["op_counts"],
                    "params": summary["keras"]["params_total"],
                    "versions": summary["versions"],
                }
                for v in LCE_ENGINES:
                    largv = ["--lce-worker", "--model", tfl, "--variant", v, "--threads", "1"]
                    configs.append(((net.name, v, 1), "lce", largv, args.baseline_runs))
            except Exception as e:  # noqa: BLE001
                for v in LCE_ENGINES:
                    missing[(net.name, v)] = f"{type(e).__name__}: {str(e)[-300:]}"

    samples = {key: [] for key, *_ in configs}
    cpu = {key: [] for key, *_ in configs}
    extra = {}
    for r in range(args.rounds):
        for key, kind, argv_, runs in configs:
            tail = ["--runs", str(max(1, runs // args.rounds)), "--warmup", str(args.warmup)]
            try:
                if kind == "py":
                    out = compare.run_worker(argv_ + tail, env)
                else:
                    out = lce_compare.run_lce(argv_ + tail)
            except Exception as e:  # noqa: BLE001
                missing[key[:2]] = f"{type(e).__name__}: {str(e)[-300:]}"
                continue
            samples[key] += out["samples"]
            cpu[key] += out["cpu_samples"]
            extra[key] = {k: v for k, v in out.items() if k in ("isa", "options")}
            ms = 1e3 * compare.median(out["samples"])
            print(f"round {r + 1}/{args.rounds} {key}: {ms:.3f} ms", file=sys.stderr, flush=True)

    results = [
        {
            "network": key[0],
            "engine": key[1],
            "threads": key[2],
            "runs": len(xs),
            "median_ms": 1e3 * compare.median(xs),
            "min_ms": 1e3 * min(xs),
            "cpu_median_ms": 1e3 * compare.median(cpu[key]),
            **extra.get(key, {}),
        }
        for key, xs in samples.items()
        if xs and key[:2] not in missing
    ]
    report = {
        "machine": compare.machine(),
        "build": _core.build_info(),
        "networks": [
            {
                "key": n.name,
                "label": n.label,
                "paper_rpi_ms": n.paper_rpi4b_ms,
                "paper_ops_e8": n.paper_ops_e8,
                "fp32": n.name in FP32_NETWORKS,
                "counts": counts.get(n.name),
                "lce": lce_info.get(n.name),
            }
            for n in nets
        ],
        "timer": args.timer,
        "results": results,
        "missing": [{"network": k[0], "engine": k[1], "why": v} for k, v in missing.items()],
        "command": " ".join(["python", "benchmarks/table3.py"] + (argv or sys.argv[1:])),
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


# ------------------------------------------------------------------------------- report
def _ordering(rows: list[tuple[str, float]]) -> list[str]:
    return [label for label, _ in sorted(rows, key=lambda r: r[1])]


def print_report(report: dict) -> None:
    m = report["machine"]
    by = {(r["network"], r["engine"], r["threads"]): r for r in report["results"]}
    why = {(x["network"], x["engine"]): x["why"] for x in report["missing"]}
    print(
        f"\nmachine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs, "
        f"flags {m.get('Flags', '?')}; load average {m.get('load_average')}"
    )
    print(f"command: {report['command']}")
    timer = report.get("timer", "wall")
    field = "cpu_median_ms" if timer == "cpu" else "median_ms"
    print(
        f"224x224, batch 1, medians in ms ({timer} time; 2 threads: wall); "
        "ratio = engine / qbinfer 1 thread\n"
    )
    head = ["network", "OPs e8", "qbinfer 1t", "2t"]
    head += [f"{e} (x)" for e in ("lce-ind+xnn", "lce", "onnxruntime", "torch")]
    head += ["paper RPi4B (LCE)"]
    rows, mine, paper = [], [], []
    for n in report["networks"]:
        key = n["key"]
        q = by.get((key, "qbinfer", 1))
        q2 = by.get((key, "qbinfer", 2))
        ops = n["counts"]["ops_e8"] if n["counts"] else None
        row = [n["label"], f"{ops:.2f}" if ops is not None else "-"]
        row.append(f"{q[field]:.2f}" if q else "n/a")
        row.append(f"{q2['median_ms']:.2f}" if q2 else "n/a")
        for e in ("lce-ind+xnn", "lce", "onnxruntime", "torch"):
            r = by.get((key, e, 1))
            if r and q:
                row.append(f"{r[field]:.2f} ({r[field] / q[field]:.1f}x)")
            elif r:
                row.append(f"{r[field]:.2f}")
            else:
                row.append("n/a")
        row.append(f"{n['paper_rpi_ms']:.1f}")
        rows.append(row)
        if q:
            mine.append((n["label"], q[field]))
            paper.append((n["label"], n["paper_rpi_ms"]))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    for (net, engine), reason in why.items():
        print(f"n/a: {net} on {engine}: {reason}")
    # The targets, network by network: binary networks at least 5x LCE's fastest set-up
    # and 10x ONNX Runtime; FP32 networks no slower than ONNX Runtime.
    print("\ntargets (1 thread):")
    for n in report["networks"]:
        q = by.get((n["key"], "qbinfer", 1))
        if not q:
            continue
        goals = (
            [("onnxruntime", 1.0)] if n["fp32"] else [("lce-ind+xnn", 5.0), ("onnxruntime", 10.0)]
        )
        parts = []
        for engine, goal in goals:
            r = by.get((n["key"], engine, 1))
            if r:
                ratio = r[field] / q[field]
                parts.append(
                    f"{engine} {ratio:.1f}x (goal {goal:g}x: {'met' if ratio >= goal else 'NOT met'})"
                )
            else:
                parts.append(f"{engine} not measured")
        print(f"  {n['label']}: " + "; ".join(parts))
    if mine:
        here, there = _ordering(mine), _ordering(paper)
        print("\nordering by latency, fastest first:")
        print("  qbinfer here:        " + " < ".join(here))
        print("  paper, RPi 4B + LCE: " + " < ".join(there))
        moved = [
            f"{x} ({there.index(x) + 1} -> {here.index(x) + 1})"
            for x in here
            if here.index(x) != there.index(x)
        ]
        print("  rank changes (paper -> here): " + (", ".join(moved) or "none"))


if __name__ == "__main__":
    sys.exit(main())
