"""The roofline of a model on this machine: per step and in total, the time this core's own
measured ceilings allow, beside the measured time and the efficiency.

    python benchmarks/roofline.py MODEL.qbw [MODEL2.qbw ...]   # files
    python benchmarks/roofline.py --zoo qb_net_small qsb_net_large   # compare.py's zoo models
    python benchmarks/roofline.py                              # the four paper models
    python benchmarks/roofline.py MODEL.qbw --json out.json    # and every number as JSON
    python benchmarks/roofline.py --zoo qb_net_small --fc fp32 int8 bitplane8   # FC encodings

Ceilings, measured here on one core with the loops of qbinfer._testing.bench (csrc/python/peak*):
  - binary MACs/s: XOR + popcount over an L1-resident buffer, the best form of the ISA the
    model runs (Harley-Seal on AVX2 / AVX-512, VPOPCNTQ where the CPU has VPOPCNTDQ);
  - float MACs/s: independent FMA chains;
  - read bandwidth (bytes/s) of a buffer sized for each level of this CPU's caches (half of L1d,
    half of L2, a quarter of L3) and for DRAM (four times L3, at least 64 MiB).

The model of a step (one unit of the engine's run after fusion, as Model.profile reports it):
  compute = binary MACs / binary ceiling + float MACs / float ceiling
            (float MACs: those of CONV2D, DWCONV3X3 and FC; element-wise work counts as bytes)
  memory  = weight bytes / rate(weights) + activation bytes / rate(activations)
  roofline time = max(compute, memory)
where rate(activations) is the bandwidth of the smallest level that holds the step's activations
(its inputs and output), and rate(weights) that of the smallest level that holds the model's
whole working set (every weight plus the activation arena): between two runs every other step
passes through the caches, so a step's weights are found where the whole model fits. Bytes are
Model.profile's (the activations a step reads from other steps and writes, and its weights as
stored in the file). The model's roofline is the sum over its steps; efficiency = roofline /
measured, both for one image on one thread. Measured times are the per-step medians of the
thread's CPU time (Model._profile with thread_cpu), which a loaded machine inflates less than
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PAPER_MODELS = ("qb_net_small", "qb_net_large", "qsb_net_small", "qsb_net_large")
LEVELS = ("L1", "L2", "L3", "DRAM")
# The ops whose FLOPs (ops.cc: one per multiply-accumulate) are float MACs.
FLOAT_MAC_OPS = ("CONV2D", "DWCONV", "FC")


# ------------------------------------------------------------------------------- machine
def _parse_size(text: str) -> int:
    """'48K', '1024K', '32M' (sysfs cache sizes) -> bytes."""
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def cache_sizes() -> dict:
    """Data cache bytes per level as one core sees them (sysfs on Linux; each level's whole size,
    shared or not), with common defaults where the OS does not say."""
    sizes = {"L1": 32 * 2**10, "L2": 512 * 2**10, "L3": 8 * 2**20}
    found = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(base.glob("index*")):
            kind = (index / "type").read_text().strip()
            if kind not in ("Data", "Unified"):
                continue
            level = int((index / "level").read_text())
            if 1 <= level <= 3:
                found[f"L{level}"] = _parse_size((index / "size").read_text())
    except (OSError, ValueError):
        found = {}
    sizes.update(found)
    sizes["source"] = "sysfs" if found else "defaults (no sysfs cache information)"
    return sizes


def cpu_info() -> dict:
    """The CPU as lscpu names it: model name, family/model/stepping, every flag, and the SIMD
    flags that matter here."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    keep = {
        "Model name": "model_name",
        "Vendor ID": "vendor",
        "CPU family": "family",
        "Model": "model",
        "Stepping": "stepping",
        "CPU(s)": "cpus",
        "L1d cache": "l1d",
        "L2 cache": "l2",
        "L3 cache": "l3",
        "Flags": "flags",
    }
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keep:
            info[keep[key.strip()]] = value.strip()
    flags = info.get("flags", "").split()
    info["simd_flags"] = [
        f for f in flags if f.startswith(("avx", "fma", "popcnt", "bmi2", "gfni", "amx"))
    ]
    return info


def read_sizes(caches: dict) -> dict:
    """Per level, the buffer whose read rate stands for it: well inside the level, well past the
    one before."""
    l1, l2, l3 = caches["L1"], caches["L2"], caches["L3"]
    return {
        "L1": l1 // 2,
        "L2": max(l2 // 2, 2 * l1),
        "L3": max(l3 // 4, 4 * l2),
        "DRAM": max(4 * l3, 64 * 2**20),
    }


def ceilings(isa: str, repeats: int = 3) -> dict:
    """This core's measured ceilings for `isa` (best of `repeats`): binary and float MACs/s and
    the read bandwidth of each memory level."""
    from qbinfer import _core, _testing

    peak_isa = (
        "avx512_vpopcnt" if isa == "avx512" and _core.build_info()["avx512_vpopcntdq"] else isa
    )
    runs = [_testing.bench.peak(peak_isa, 0.3) for _ in range(repeats)]
    caches = cache_sizes()
    sizes = read_sizes(caches)
    read = {
        level: max(_testing.bench.read_bandwidth(isa, size, 0.2) for _ in range(repeats))
        for level, size in sizes.items()
    }
    return {
        "isa": isa,
        "peak_isa": peak_isa,
        "binary_macs_per_s": max(r["binary_macs_per_s"] for r in runs),
        "float_macs_per_s": max(r["float_macs_per_s"] for r in runs),
        "read_bytes_per_s": read,
        "read_buffer_bytes": sizes,
        "cache_bytes": {k: caches[k] for k in ("L1", "L2", "L3")},
        "cache_source": caches["source"],
    }


def level_for(size: int, cache_bytes: dict) -> str:
    """The smallest memory level that holds `size` bytes."""
    for level in ("L1", "L2", "L3"):
        if size <= cache_bytes[level]:
            return level
    return "DRAM"


# ------------------------------------------------------------------------------- model
def step_roofline(step: dict, weight_level: str, ceil: dict) -> dict:
    """One step's ceiling times (seconds) and the level its activations come from. `step` holds
    binary_macs, float_macs, weight_bytes, activation_bytes and time_us (measured)."""
    rates = ceil["read_bytes_per_s"]
    t_binary = step["binary_macs"] / ceil["binary_macs_per_s"]
    t_float = step["float_macs"] / ceil["float_macs_per_s"]
    act_level = level_for(step["activation_bytes"], ceil["cache_bytes"])
    t_weights = step["weight_bytes"] / rates[weight_level] if step["weight_bytes"] else 0.0
    t_act = step["activation_bytes"] / rates[act_level]
    compute, memory = t_binary + t_float, t_weights + t_act
    bound = max(compute, memory)
    measured = step["time_us"] * 1e-6
    return {
        "binary_s": t_binary,
        "float_s": t_float,
        "weights_s": t_weights,
        "activations_s": t_act,
        "activation_level": act_level,
        "bound": "compute" if compute >= memory else "memory",
        "roofline_s": bound,
        "efficiency": bound / measured if measured > 0 else 0.0,
    }


def measure(path: str, runs: int, ceil: dict) -> dict:
    """Profile the model at path (one thread, thread CPU time per step) and put every step
    beside its roofline."""
    import numpy as np

    import qbinfer
    from qbinfer.profile import build_profile

    model = qbinfer.Model(path, threads=1)
    ops = model.ops()
    h, w, c = model.input_shape
    x = np.random.default_rng(0).standard_normal((1, h, w, c)).astype(np.float32)
    model.run(x, layout="nhwc")  # warm up: first-touch pages, caches
    timings = model._core._profile(x, int(runs), "nhwc", thread_cpu=True)
    prof = build_profile(
        model.name,
        timings,
        model._core.steps(),
        ops,
        model.metadata,
        runs=runs,
        threads=1,
        isa=model.isa,
    )
    weights_total = sum(int(op["bytes"]) for op in ops)
    working_set = weights_total + int(model._core.arena_bytes)
    weight_level = level_for(working_set, ceil["cache_bytes"])
    steps = []
    for s in prof.steps:
        weight_bytes = sum(int(ops[i]["bytes"]) for i in s.ops)
        step = {
            "index": s.index,
            "label": s.label,
            "name": s.name,
            "output_hwc": list(s.output),
            "time_us": s.time_us,
            "binary_macs": s.binary_macs,
            # Multiply-adds only (ops.cc also counts a pool's compares or adds as flops).
            "float_macs": sum(
                int(ops[i]["flops"]) for i in s.ops if ops[i]["type"].startswith(FLOAT_MAC_OPS)
            ),
            "weight_bytes": weight_bytes,
            "activation_bytes": s.bytes_moved - weight_bytes,
        }
        step.update(step_roofline(step, weight_level, ceil))
        steps.append(step)
    measured_s = sum(s["time_us"] for s in steps) * 1e-6
    roof_s = sum(s["roofline_s"] for s in steps)
    return {
        "model": model.name,
        "path": str(path),
        "isa": model.isa,
        "runs": runs,
        "weight_bytes": weights_total,
        "arena_bytes": int(model._core.arena_bytes),
        "working_set_bytes": working_set,
        "weight_level": weight_level,
        "binary_macs": sum(s["binary_macs"] for s in steps),
        "float_macs": sum(s["float_macs"] for s in steps),
        "activation_bytes": sum(s["activation_bytes"] for s in steps),
        "binary_s": sum(s["binary_s"] for s in steps),
        "float_s": sum(s["float_s"] for s in steps),
        "weights_s": sum(s["weights_s"] for s in steps),
        "activations_s": sum(s["activations_s"] for s in steps),
        "roofline_s": roof_s,
        "measured_s": measured_s,
        "efficiency": roof_s / measured_s if measured_s > 0 else 0.0,
        "steps": steps,
    }


# ------------------------------------------------------------------------------- printing
def format_ceilings(ceil: dict) -> str:
    rates = ceil["read_bytes_per_s"]
    sizes = ceil["read_buffer_bytes"]
    lines = [
        f"ceilings of this core ({ceil['isa']}; popcount loop {ceil['peak_isa']}):",
        f"  XOR+popcount {ceil['binary_macs_per_s'] / 1e9:8.1f} G binary MAC/s",
        f"  FMA          {ceil['float_macs_per_s'] / 1e9:8.1f} G float MAC/s "
        f"({2 * ceil['float_macs_per_s'] / 1e9:.1f} GFLOP/s)",
    ]
    for level in LEVELS:
        cache = ceil["cache_bytes"].get(level)
        held = f", level {cache / 2**10:.0f} KiB" if cache else ""
        lines.append(
            f"  read {level:<4}    {rates[level] / 1e9:8.1f} GB/s "
            f"(buffer {sizes[level] / 2**10:.0f} KiB{held})"
        )
    lines.append(f"  cache sizes from {ceil['cache_source']}")
    return "\n".join(lines)


def format_cpu(cpu: dict) -> str:
    return (
        f"CPU: {cpu.get('model_name', '?')} (vendor {cpu.get('vendor', '?')}, family "
        f"{cpu.get('family', '?')}, model {cpu.get('model', '?')}, stepping "
        f"{cpu.get('stepping', '?')}), {cpu.get('cpus', '?')} CPUs; L1d {cpu.get('l1d', '?')}, "
        f"L2 {cpu.get('l2', '?')}, L3 {cpu.get('l3', '?')}\n"
        f"SIMD flags: {' '.join(cpu.get('simd_flags', [])) or '?'}"
    )


def format_model(r: dict, steps: bool = True) -> str:
    lines = [
        f"\n{r['model']} ({r['path']}), {r['isa']}, 1 thread, {r['runs']} runs: measured "
        f"{1e3 * r['measured_s']:.3f} ms (sum of step medians, thread CPU time), roofline "
        f"{1e3 * r['roofline_s']:.3f} ms, efficiency {100 * r['efficiency']:.0f}%",
        f"  at the ceilings: binary {1e3 * r['binary_s']:.3f} ms + float "
        f"{1e3 * r['float_s']:.3f} ms compute; weights {r['weight_bytes'] / 1e6:.2f} MB from "
        f"{r['weight_level']} {1e3 * r['weights_s']:.3f} ms, activations "
        f"{r['activation_bytes'] / 1e6:.1f} MB {1e3 * r['activations_s']:.3f} ms "
        f"(working set {r['working_set_bytes'] / 1e6:.1f} MB)",
    ]
    if steps:
        lines.append(
            f"  {'#':>3} {'measured us':>11} {'roof us':>8} {'eff':>5} {'bound':<7} "
            f"{'bin us':>7} {'flt us':>7} {'wgt us':>7} {'act us':>7} {'act':<4}  step"
        )
        for s in r["steps"]:
            lines.append(
                f"  {s['index']:>3} {s['time_us']:>11.1f} {1e6 * s['roofline_s']:>8.1f} "
                f"{100 * s['efficiency']:>4.0f}% {s['bound']:<7} {1e6 * s['binary_s']:>7.1f} "
                f"{1e6 * s['float_s']:>7.1f} {1e6 * s['weights_s']:>7.1f} "
                f"{1e6 * s['activations_s']:>7.1f} {s['activation_level']:<4}  "
                f"{s['label']} {s['name'] if s['name'] != s['label'] else ''}".rstrip()
            )
    return "\n".join(lines)


def model_paths(args) -> list:
    """The files to measure: those named, then the zoo models named (converted and cached as
    compare.py does)."""
    paths = [str(p) for p in args.models]
    zoo = args.zoo if args.zoo is not None else ([] if paths else list(PAPER_MODELS))
    if zoo:
        from bench_util import bnn_zoo_file, is_bnn_zoo, zoo_file

        for name in zoo:
            if is_bnn_zoo(name):
                paths.append(bnn_zoo_file(name)[0])
                continue
            for fc in args.fc:
                paths.append(zoo_file(name, fc=fc)[0])
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", type=Path, help=".qbw files")
    p.add_argument(
        "--zoo",
        nargs="*",
        default=None,
        help="zoo models as compare.py converts them (default with no files: the paper's four)",
    )
    p.add_argument(
        "--fc",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "int8", "bitplane8"],
        help="the zoo models' classifier encodings (the converter's --fc), one model each",
    )
    p.add_argument("--runs", type=int, default=50, help="profiled runs per model")
    p.add_argument("--repeats", type=int, default=3, help="best of this many ceiling runs")
    p.add_argument("--no-steps", action="store_true", help="totals only")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from qbinfer import _core

    paths = model_paths(args)
    # The ISA the engine runs (QBINFER_ISA if set, else the best this CPU has).
    isa = _core.Model(paths[0], 1).isa if paths else _core.supported_isas()[-1]
    cpu = cpu_info()
    ceil = ceilings(isa, args.repeats)
    print(format_cpu(cpu))
    print(format_ceilings(ceil))
    results = []
    for path in paths:
        r = measure(path, args.runs, ceil)
        results.append(r)
        print(format_model(r, steps=not args.no_steps), flush=True)
    if len(results) > 1:
        width = max(len(Path(r["path"]).stem) for r in results)
        print(f"\n{'file':<{width}}  measured ms  roofline ms  efficiency")
        for r in results:
            print(
                f"{Path(r['path']).stem:<{width}}  {1e3 * r['measured_s']:>11.3f}  "
                f"{1e3 * r['roofline_s']:>11.3f}  {100 * r['efficiency']:>9.0f}%"
            )
    if args.json:
        report = {
            "cpu": cpu,
            "ceilings": ceil,
            "models": results,
            "load_average": os.getloadavg(),
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
