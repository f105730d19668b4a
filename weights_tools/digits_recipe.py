"""`python -m weights_tools.digits_recipe`: train and ship the default model of `qbinfer demo`.

The paper's two-stage recipe, CPU-only, on scikit-learn's 8x8 digits upscaled to 32x32:

1. a float teacher (`cifar_resnet8`) trained with the same tool;
2. stage 1 of a QB-Net-Small cut after block 12 (at 32x32 input the last two blocks would run
   on 1x1 maps; the cut model keeps the N, D, N, Q, N, Q, N, N, N, N, N blocks, 512 channels
   into the FC), binary activations, distilled from the teacher;
3. stage 2 from stage 1's weights, binary weights too;
4. the export: .qbw, compact PyTorch weights, the held-out set and the record, into
   `python/qbinfer/models/` (`--ship-dir`).

`--int8` makes the INT8 variant (`digits_qbnet_int8`) the way the paper fine-tunes its 8-bit
model: stage 2's weights (unpacked from the shipped compact weights when the stage-2 run is not
in `--runs`) fine-tuned with INT8 depthwise convs and an INT8 FC (`weights_tools.train --stage
int8`, lr 1e-4, 2 epochs, distilled from the FP32 stage-2 model, the input scales calibrated on
256 training images and kept), then exported with those scales (no calibration at conversion).

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

# int8: the paper fine-tunes 25 epochs after 256 (about a tenth); a tenth of stage 2's 20 is 2
EPOCHS = {"teacher": 30, "stage1": 20, "stage2": 20, "int8": 2}
INT8_NAME = "digits_qbnet_int8"
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


def int8_commands(runs: str, ship_dir: str) -> List[List[str]]:
    """The INT8 variant's command lines: unpack stage 2 (when missing), fine-tune, export."""
    s2, q = os.path.join(runs, "stage2"), os.path.join(runs, "int8")
    return [
        [
            "-m",
            "weights_tools.digits_recipe",
            "--unpack-shipped",
            os.path.join(ship_dir, "digits_qbnet_weights.npz"),
            os.path.join(s2, "model.pth"),
        ],
        [
            "-m",
            "weights_tools.train",
            "--stage",
            "int8",
            *STUDENT,
            *COMMON,
            "--epochs",
            str(EPOCHS["int8"]),
            "--int8-fc",
            "int8",
            "--int8-input-scale",
            "calibrated",
            "--init",
            os.path.join(s2, "model.pth"),
            "--teacher",
            os.path.join(s2, "model.pth"),
            "--out",
            q,
        ],
        [
            "-m",
            "weights_tools.export",
            os.path.join(q, "model.pth"),
            "--out-dir",
            ship_dir,
            "--name",
            INT8_NAME,
            "--holdout",
            "digits",
        ],
    ]


def unpack_shipped(weights_npz: str, out_pth: str) -> None:
    """Write a `model.pth` (weights and meta, as `weights_tools.train` saves) from shipped
    compact weights, so that a fine-tune can start from the shipped model. An existing file is
    kept (it is the run that made the shipped weights)."""
    import torch

    from .export import load_compact_model

    if os.path.exists(out_pth):
        print(f"{out_pth} exists: kept", file=sys.stderr)
        return
    model = load_compact_model(weights_npz)
    os.makedirs(os.path.dirname(out_pth) or ".", exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"model": state, "meta": model.meta, "metrics": {}}, out_pth)
    print(f"wrote {out_pth} from {weights_npz}", file=sys.stderr)


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
    p.add_argument(
        "--int8",
        action="store_true",
        help="make the INT8 variant (INT8 fine-tune of stage 2) instead of the FP32 model",
    )
    p.add_argument(
        "--unpack-shipped",
        nargs=2,
        metavar=("WEIGHTS_NPZ", "MODEL_PTH"),
        help="only write MODEL_PTH (a training checkpoint) from shipped compact weights",
    )
    args = p.parse_args(argv)
    if args.unpack_shipped:
        unpack_shipped(*args.unpack_shipped)
        return 0
    cmds = (int8_commands if args.int8 else commands)(args.runs, args.ship_dir)
    shown = ["python " + shlex.join(c) for c in cmds]
    export = cmds[-1] + [a for s in shown[:-1] for a in ("--command", s)] + ["--command", shown[-1]]
    t0 = time.perf_counter()
    for cmd, text in zip(cmds[:-1] + [export], shown):
        print(f"$ {text}", file=sys.stderr, flush=True)
        if args.dry_run or (args.export_only and cmd is not export):
            continue
        finished = (
            cmd is not export
            and "--out" in cmd
            and os.path.exists(os.path.join(cmd[cmd.index("--out") + 1], "model.pth"))
        )
        if args.keep_finished and finished:
            print("  (finished before: kept)", file=sys.stderr, flush=True)
            continue
        subprocess.run([sys.executable, *cmd], check=True)
    print(f"digits recipe: done in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
