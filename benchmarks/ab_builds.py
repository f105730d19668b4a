"""Two builds of qbinfer on the same zoo models, interleaved, for a before/after number that a
shared, noisy machine cannot fake: each round times every (model, build) pair in a fresh
process, one after the other, so a burst of load hits both builds alike.

    # the other build: any commit, installed into a directory of its own
    git worktree add /tmp/qb-before <commit>
    pip install --no-build-isolation --no-deps --target /tmp/qb-before-site /tmp/qb-before
    python benchmarks/ab_builds.py --before /tmp/qb-before-site --models qb_net_small qsb_net_large

"after" is the qbinfer this Python imports. Models come from bench_util.zoo_file (224x224,
random weights, cached), so both builds read the same .qbw (a format change between the two
commits would make the older one refuse it: then convert with each build's own tools). Per run
the process CPU time is taken (on one thread it tracks the idle-core wall time when the machine
is loaded); the median over the runs of a process, then the median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import run_worker  # noqa: E402  (compare.py's timing worker, one process each)


def run_once(
    qbw: str, threads: int, runs: int, warmup: int, site: str | None, isa: str | None
) -> float:
    """Median process CPU ms per run of one fresh process (compare.py's qbinfer worker)."""
    env = {k: v for k, v in os.environ.items() if k not in ("QBINFER_ISA", "QBINFER_FUSION")}
    if site is not None:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
    if isa is not None:
        env["QBINFER_ISA"] = isa
    out = run_worker(
        [
            "--worker",
            "qbinfer",
            "--model",
            qbw,
            "--threads",
            str(threads),
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
        ],
        env=env,
    )
    return statistics.median(out["cpu_samples"]) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--before",
        required=True,
        help="directory holding the other build's qbinfer package (pip --target)",
    )
    ap.add_argument("--models", nargs="+", default=["qb_net_small"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--isa", default=None, help="QBINFER_ISA for both builds (default: best)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=15)
    args = ap.parse_args(argv)
    if not (Path(args.before) / "qbinfer").is_dir():
        raise SystemExit(f"{args.before} holds no qbinfer package (pip install --target it)")
    from bench_util import zoo_file

    files = {model: zoo_file(model)[0] for model in args.models}
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for model in args.models:
            for build, site in (("before", args.before), ("after", None)):
                ms = run_once(files[model], args.threads, args.runs, args.warmup, site, args.isa)
                times.setdefault((model, build), []).append(ms)
                print(f"round {r + 1}/{args.rounds} {model} {build}: {ms:.3f} ms", flush=True)
    print(
        f"\nprocess CPU ms per run, median of {args.rounds} rounds x {args.runs} runs, "
        f"{args.threads} thread(s), ISA {args.isa or 'best'}"
    )
    print(f"{'model':15s} {'before':>9s} {'after':>9s} {'before/after':>13s}")
    for model in args.models:
        b = statistics.median(times[(model, "before")])
        a = statistics.median(times[(model, "after")])
        print(f"{model:15s} {b:9.3f} {a:9.3f} {b / a:12.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
