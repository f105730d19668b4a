"""Classify the images that arrive in a directory, as a long-running service (docs/raspberry-pi.md).

    python qbinfer-classify.py MODEL.qbw INBOX [--results FILE] [--top-k K] [--poll SECONDS] [--once]

Every image file that appears in INBOX (the extensions `qbinfer predict` searches for) is
classified with the model and moved to INBOX/done (or INBOX/failed when it cannot be read),
and one JSON line per image is appended to the results file (default INBOX/results.jsonl):
{"file": ..., "time": ..., "top": [[class, probability], ...]} or {"file": ..., "error": ...}.
A file is taken once its size has stayed the same for one poll, so a half-copied image waits.
SIGTERM (systemctl stop) finishes the current image and exits 0. --once handles what is there
and exits (for cron, or a test). Needs qbinfer (numpy); image files other than .npy need Pillow.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Dict, List

import qbinfer
from qbinfer.cli_predict import IMAGE_EXTENSIONS


def ready_images(inbox: str, sizes: Dict[str, int]) -> List[str]:
    """Image files in `inbox` whose size equals the one seen at the previous poll; `sizes` is
    updated to this poll's sizes."""
    seen: Dict[str, int] = {}
    ready = []
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if not entry.is_file() or os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        size = entry.stat().st_size
        seen[entry.path] = size
        if sizes.get(entry.path) == size:
            ready.append(entry.path)
    sizes.clear()
    sizes.update(seen)
    return ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .qbw model file")
    parser.add_argument("inbox", help="the directory to watch")
    parser.add_argument("--results", help="the JSON-lines file (default INBOX/results.jsonl)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between scans")
    parser.add_argument("--threads", default="auto", help="engine threads (default auto)")
    parser.add_argument("--once", action="store_true", help="handle what is there, then exit")
    args = parser.parse_args()

    threads = args.threads if args.threads == "auto" else int(args.threads)
    model = qbinfer.load(args.model, threads=threads)
    results_path = args.results or os.path.join(args.inbox, "results.jsonl")
    for sub in ("done", "failed"):
        os.makedirs(os.path.join(args.inbox, sub), exist_ok=True)
    print(
        f"qbinfer {qbinfer.__version__}: {model.name} ({model.isa}) watching {args.inbox}",
        flush=True,
    )

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sizes: Dict[str, int] = {}
    if args.once:
        ready_images(args.inbox, sizes)  # nothing is being copied: every file is ready now
    while not stop:
        for path in ready_images(args.inbox, sizes):
            record: Dict[str, object] = {"file": os.path.basename(path), "time": time.time()}
            try:
                record["top"] = [
                    [name, round(float(p), 6)] for name, p in model.predict(path, args.top_k)
                ]
                dest = "done"
            except (OSError, ValueError, qbinfer.Error) as e:  # an unreadable or damaged image
                record["error"] = str(e)
                dest = "failed"
            os.replace(path, os.path.join(args.inbox, dest, os.path.basename(path)))
            sizes.pop(path, None)
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if stop:
                break
        if args.once:
            break
        time.sleep(args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
