"""The Python API of qbinfer on the shipped digits model and its 450 held-out images.

scripts/test-aarch64-python.sh runs this twice: with the x86-64 Python (``--save``, the
reference) and with Debian's arm64 Python under qemu-aarch64 (``--compare``). Each side prints
its platform, the kernels' ISA, the top-1 accuracy of ``Model.predict`` and the time.
``--compare`` then runs the reference side's preprocessed images (so that numpy's resize,
whose BLAS differs between the two machines, is not part of the comparison) and checks the
logits with qbinfer-bench's rule: |out - ref| <= rtol * (|ref| + max|ref|), and the same top-1.

Needs numpy and qbinfer only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

import qbinfer
from qbinfer.preprocess import preprocess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the preprocessed images and logits (.npz)")
    parser.add_argument("--compare", help="an .npz from --save: compare the logits with it")
    parser.add_argument("--rtol", type=float, default=1e-5)
    args = parser.parse_args()

    folder = os.path.join(os.path.dirname(qbinfer.__file__), "models")
    t0 = time.perf_counter()
    model = qbinfer.load(os.path.join(folder, "digits_qbnet.qbw"))
    with np.load(os.path.join(folder, "digits_holdout.npz"), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    print(
        f"python {platform.python_version()} ({platform.machine()}), numpy {np.__version__}, "
        f"qbinfer {qbinfer.__version__}, {qbinfer._core.__file__.rsplit(os.sep, 1)[-1]}"
    )
    print(
        f"model {model.name}: isa {model.isa}, input {model.input_shape}, "
        f"{model.num_classes} classes"
    )

    t1 = time.perf_counter()
    names = model.class_names
    predicted = np.array([names.index(model.predict(im, top_k=1)[0][0]) for im in images])
    t_predict = time.perf_counter() - t1
    accuracy = 100.0 * float(np.mean(predicted == labels))
    print(
        f"predict: top-1 accuracy {accuracy:.2f}% on {len(labels)} held-out images "
        f"({t_predict:.2f} s, {1e3 * t_predict / len(labels):.2f} ms per image with "
        f"preprocessing)"
    )

    x = np.concatenate([preprocess(im, model.preprocessing) for im in images])  # N x H x W x 3
    logits = model.run(x, layout="nhwc")
    if args.save:
        np.savez(args.save, x=x, logits=logits, accuracy=accuracy)
        print(f"saved {args.save}")

    ok = True
    if args.compare:
        with np.load(args.compare, allow_pickle=False) as ref:
            ref_x, ref_logits = ref["x"], ref["logits"]
        out = model.run(ref_x, layout="nhwc")
        diff = np.abs(out.astype(np.float64) - ref_logits)
        scale = float(np.abs(ref_logits).max())
        within = bool(np.all(diff <= args.rtol * (np.abs(ref_logits) + scale)))
        same_top1 = bool(np.array_equal(out.argmax(axis=1), ref_logits.argmax(axis=1)))
        print(
            f"compare with {args.compare}: {out.size} logits, "
            f"{int(np.sum(out == ref_logits))} bit-identical, max |diff| {diff.max():.3g} "
            f"(max|ref| {scale:.3g}), top-1 equal on {int(np.sum(out.argmax(1) == ref_logits.argmax(1)))}"
            f"/{len(out)}; own preprocessing vs reference: max |diff| "
            f"{float(np.abs(x - ref_x).max()):.3g}"
        )
        ok = within and same_top1
        print("compare: OK" if ok else f"compare: FAILED (rtol {args.rtol})")
    print(f"total {time.perf_counter() - t0:.2f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
