"""DeepLabv3+ on a QB/QSB-Net backbone (issue 18): qbinfer, ONNX Runtime and PyTorch, one run.

    python benchmarks/segmentation.py                          # QSB-Net-Large, binary head, 513
    python benchmarks/segmentation.py --backbone qb_net_small --head fp32 --size 257 --json s.json

The segmenter is `weights_tools.zoo.build_segmenter("deeplabv3plus", ...)` with random weights
and randomised BN statistics (latency does not depend on the values), converted by the
converter, which also writes the ONNX file ONNX Runtime runs. Timed, each configuration in its
own process, the timed runs split over rounds that visit every configuration in turn (as
compare.py does, so load on a shared machine hits all alike): qbinfer best ISA at 1 and 2
threads, ONNX Runtime 1 thread, PyTorch eager 1 thread. Batch 1, medians of wall and process CPU
time, ratios to qbinfer's 1-thread median.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import compare  # noqa: E402  (stdlib-only at import time; its workers time qbinfer and ORT)


def build(backbone: str, head: str, seed: int):
    import torch

    from weights_tools.convert import randomize_bn
    from weights_tools.zoo import build_segmenter

    torch.manual_seed(seed)
    model = build_segmenter("deeplabv3plus", backbone=backbone, num_classes=21, head=head)
    randomize_bn(model, seed=seed)
    return model.eval()


def files(backbone: str, head: str, size: int, seed: int) -> tuple[str, str]:
    """The .qbw and its ONNX (cached like compare.py's zoo files)."""
    from bench_util import cache_dir

    stem = f"deeplabv3plus-{backbone}-{head}-{size}-{seed}"
    qbw, onnx = cache_dir() / f"{stem}.qbw", cache_dir() / f"{stem}.onnx"
    if not (qbw.exists() and onnx.exists()):
        from weights_tools.convert import to_qbw

        model = build(backbone, head, seed)
        to_qbw(model, str(qbw), input_size=(size, size), onnx_path=str(onnx))
    return str(qbw), str(onnx)


def torch_worker(args) -> dict:
    """PyTorch eager, 1 thread, on the same weights (rebuilt from the seed)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    model = build(args.backbone, args.head, args.seed)
    x = torch.from_numpy(
        np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), dtype=np.float32)
    )
    wall, cpu = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            c0, t0 = time.process_time(), time.perf_counter()
            model(x)
            if i >= args.warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return {"samples": wall, "cpu_samples": cpu}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="qsb_net_large")
    p.add_argument("--head", default="binary", choices=("binary", "fp32"))
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=12, help="timed runs per configuration")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_worker:
        print(json.dumps(torch_worker(args)))
        return 0

    qbw, onnx = files(args.backbone, args.head, args.size, args.seed)
    shape = ["--shape", "3", str(args.size), str(args.size)]
    configs = {
        f"qbinfer {t}t": ["--worker", "qbinfer", "--model", qbw, "--threads", str(t)] + shape
        for t in (1, 2)
    }
    configs["onnxruntime 1t"] = ["--worker", "onnxruntime", "--model", onnx] + shape
    me = [sys.executable, str(Path(__file__).resolve())]
    model_args = [
        "--backbone",
        args.backbone,
        "--head",
        args.head,
        "--size",
        str(args.size),
        "--seed",
        str(args.seed),
    ]
    per_round = max(1, args.runs // args.rounds)
    wall = {k: [] for k in configs}
    cpu = {k: [] for k in configs}
    if not args.no_torch:
        wall["pytorch 1t"], cpu["pytorch 1t"] = [], []
    for r in range(args.rounds):
        for key in wall:
            tail = ["--runs", str(per_round), "--warmup", str(args.warmup)]
            if key == "pytorch 1t":
                import subprocess

                out = json.loads(
                    subprocess.run(
                        me + ["--torch-worker"] + model_args + tail,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
            else:
                out = compare.run_worker(configs[key] + tail)
            wall[key] += out["samples"]
            cpu[key] += out["cpu_samples"]
            print(
                f"round {r + 1}/{args.rounds} {key}: {1e3 * compare.median(out['samples']):.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    base_wall, base_cpu = compare.median(wall["qbinfer 1t"]), compare.median(cpu["qbinfer 1t"])
    rows = {
        k: {
            "median_ms": 1e3 * compare.median(wall[k]),
            "cpu_median_ms": 1e3 * compare.median(cpu[k]),
            "ratio": compare.median(wall[k]) / base_wall,
            "cpu_ratio": compare.median(cpu[k]) / base_cpu,
            "runs": len(wall[k]),
        }
        for k in wall
    }
    report = {
        "network": f"DeepLabv3+ {args.backbone} ({args.head} head), {args.size}x{args.size}",
        "machine": compare.machine(),
        "rows": rows,
    }
    m = report["machine"]
    print(f"{report['network']}, batch 1 on {m.get('Model name', '?')}")
    print(f"{'engine':<16}{'median ms':>11}{'cpu ms':>10}{'x qbinfer 1t':>14}{'cpu x':>8}")
    for k, r in rows.items():
        print(
            f"{k:<16}{r['median_ms']:>11.2f}{r['cpu_median_ms']:>10.2f}"
            f"{r['ratio']:>14.2f}{r['cpu_ratio']:>8.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
