"""`python -m weights_tools.digits_recipe`: train and ship the default model of `qbinfer demo`.

The paper's two-stage recipe, CPU-only, on scikit-learn's 8x8 digits upscaled to 32x32:

1. a float teacher (`cifar_resnet8`) trained with the same tool;
2. stage 1 of a QB-Net-Small cut after block 12 (at 32x32 input the last two blocks would run
   on 1x1 maps; the cut model keeps the N, D, N, Q, N, Q, N, N, N, N, N blocks, 512 channels
   into the FC), binary activations, distilled from the teacher;
3. stage 2 from stage 1's weights, binary weights too;
4. the export: .qbw, compact PyTorch weights, the held-out set and the record, into
   `python/qbinfer/models/` (`--ship-dir`).

Each step is a subprocess running the command printed before it, so that the commands recorded
in the model's JSON record and in docs/training.md are exactly the ones that made the model.
Seeded, single-process, fixed thread count and no loader workers: rerunning on the same machine
reproduces the weights.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional, Sequence

__all__ = ["commands", "main"]

EPOCHS = {"teacher": 30, "stage1": 20, "stage2": 20}
STUDENT = [
    "--arch",
    "qb_net_small",
    "--blocks",
    "N,D,N,Q,N,Q,N,N,N,N,N",
    "--name",
    "qb_net_small_digits",
]
COMMON = [
    "--dataset",
    "digits",
    "--batch-size",
    "64",
    "--workers",
    "0",
    "--threads",
    "1",
    "--seed",
    "0",
    "--no-progress",
]


def commands(runs: str, ship_dir: str) -> List[List[str]]:
    """The four command lines (python -m ... with arguments, no interpreter path)."""
    t, s1, s2 = (os.path.join(runs, n) for n in ("teacher", "stage1", "stage2"))
    return [
        [
            "-m",
            "weights_tools.train",
            "--stage",
            "teacher",
            "--arch",
            "cifar_resnet8",
            *COMMON,
            "--epochs",
            str(EPOCHS["teacher"]),
            "--out",
            t,
        ],
        [
            "-m",
            "weights_tools.train",
            "--stage",
            "1",
            *STUDENT,
            *COMMON,
            "--epochs",
            str(EPOCHS["stage1"]),
            "--teacher",
            os.path.join(t, "model.pth"),
            "--eval-teacher",
            "--out",
            s1,
        ],
        [
            "-m",
            "weights_tools.train",
            "--stage",
            "2",
            *STUDENT,
            *COMMON,
            "--epochs",
            str(EPOCHS["stage2"]),
            "--teacher",
            os.path.join(t, "model.pth"),
            "--init",
            os.path.join(s1, "model.pth"),
            "--out",
            s2,
        ],
        [
            "-m",
            "weights_tools.export",
            os.path.join(s2, "model.pth"),
            "--out-dir",
            ship_dir,
            "--name",
            "digits_qbnet",
            "--holdout",
            "digits",
            "--teacher-run",
            t,
            "--stage1-run",
            s1,
        ],
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m weights_tools.digits_recipe", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--runs", default="runs/digits", help="folder for the three training runs")
    p.add_argument(
        "--ship-dir",
        default=os.path.join("python", "qbinfer", "models"),
        help="where the shipped files go",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="skip the training runs (already in --runs), export again",
    )
    p.add_argument(
        "--keep-finished",
        action="store_true",
        help="skip a training run whose model.pth (a finished run) is already there",
    )
    args = p.parse_args(argv)
    cmds = commands(args.runs, args.ship_dir)
    shown = ["python " + shlex.join(c) for c in cmds]
    export = cmds[-1] + [a for s in shown[:-1] for a in ("--command", s)] + ["--command", shown[-1]]
    t0 = time.perf_counter()
    for cmd, text in zip(cmds[:-1] + [export], shown):
        print(f"$ {text}", file=sys.stderr, flush=True)
        if args.dry_run or (args.export_only and cmd is not export):
            continue
        finished = cmd is not export and os.path.exists(
            os.path.join(cmd[cmd.index("--out") + 1], "model.pth")
        )
        if args.keep_finished and finished:
            print("  (finished before: kept)", file=sys.stderr, flush=True)
            continue
        subprocess.run([sys.executable, *cmd], check=True)
    print(f"digits recipe: done in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
