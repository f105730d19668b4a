"""G binary-MAC/s of the strided binary conv and of the binary FC against the stride-1 binary
conv on the same channel counts, per ISA, as issue 12 asks ("the strided binary conv and binary
FC kernels within 70% of the stride-1 kernels' G binary-MAC/s on the same channel counts"):

  - the 3x3 stride-2 BCONV2D_GENERAL (pads 1, ReActNet-A's and Bi-Real Net's downsampling binary
    convs: H x W x C -> H/2 x W/2 x C) against the stride-1 3x3 BCONV2D with the same C_in and
    C_out on an image of the strided conv's output size (the same output pixels and the same
    MACs);
  - the binary FC (BFC, BinaryNet's hidden layers) against the 1x1 BCONV2D on a 1x1 image with
    the same C_in and C_out (the same arithmetic: C_out dots of C_in bits).

    python benchmarks/binary_vs_stride1.py [--isa avx2] [--rounds 7]
    python benchmarks/binary_vs_stride1.py --strided 112:64 56:128 --fc 2048 6144

Every kernel runs through qbinfer._testing.bench.KernelBench (weights packed once, as the engine
does at load; inputs hot in cache). The two kernels of a pair alternate, round after round, and
each round times one kernel for at least 50 ms of process CPU time, so a busy neighbour on a
shared machine slows both alike. Reported per kernel: the median over the rounds and the range
(min-max), and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from qbinfer import _core, _testing

STRIDED = ("112:64", "56:128", "28:256", "14:512")  # input size : channels (ReActNet-A)
FC = (2048, 4096, 6144)  # BinaryNet's MLP: 3 x 2048 hidden units


def seconds_per_call(bench, min_seconds: float = 0.05) -> float:
    """Process CPU seconds per call, over enough calls to last min_seconds."""
    n = 1
    while True:
        t0 = time.process_time()
        bench.run(n)
        dt = time.process_time() - t0
        if dt >= min_seconds:
            return dt / n
        n *= 2


def compare(a, b, rounds: int) -> dict:
    """G binary-MAC/s of kernels a and b, alternated over `rounds` rounds."""
    a.run(2)
    b.run(2)
    rates = {"a": [], "b": []}
    for _ in range(rounds):
        for key, bench in (("a", a), ("b", b)):
            rates[key].append(bench.binary_macs / seconds_per_call(bench) / 1e9)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "a": med["a"],
        "b": med["b"],
        "a_range": (min(rates["a"]), max(rates["a"])),
        "b_range": (min(rates["b"]), max(rates["b"])),
        "ratio": med["a"] / med["b"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isa", default=None, help="default: the best this CPU runs")
    parser.add_argument("--strided", nargs="*", default=list(STRIDED), help="H:C pairs")
    parser.add_argument("--fc", type=int, nargs="*", default=list(FC), help="C_in = C_out")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    isa = args.isa or _core.supported_isas()[-1]
    print(
        f"cpu: {platform.processor() or platform.machine()}, isa {isa}, "
        f"load average {os.getloadavg()[0]:.2f}; median G binary-MAC/s over {args.rounds} "
        "alternating rounds (min-max)"
    )

    def fmt(r, key):
        lo, hi = r[f"{key}_range"]
        return f"{r[key]:.0f} ({lo:.0f}-{hi:.0f})"

    for spec in args.strided:
        h, c = (int(v) for v in spec.split(":"))
        ho = (h + 2 - 3) // 2 + 1
        strided = _testing.bench.KernelBench(
            "bconv_general", isa, dict(h=h, w=h, ci=c, co=c, k=3, stride=2, pt=1, pl=1, pb=1, pr=1)
        )
        same = _testing.bench.KernelBench("bconv", isa, dict(h=ho, w=ho, ci=c, co=c, k=3))
        r = compare(strided, same, args.rounds)
        print(
            f"3x3 stride 2 {h}x{h}x{c} -> {ho}x{ho}x{c} ({strided.entry}): {fmt(r, 'a')}; "
            f"stride 1 {ho}x{ho}x{c} ({same.entry}): {fmt(r, 'b')}; ratio {r['ratio']:.2f}"
        )
    for c in args.fc:
        fc = _testing.bench.KernelBench("bfc", isa, {"ci": c, "co": c})
        conv = _testing.bench.KernelBench("bconv", isa, {"h": 1, "w": 1, "ci": c, "co": c, "k": 1})
        r = compare(fc, conv, args.rounds)
        print(
            f"BFC {c} -> {c} ({fc.entry}): {fmt(r, 'a')}; 1x1 conv on a 1x1 image "
            f"({conv.entry}): {fmt(r, 'b')}; ratio {r['ratio']:.2f}"
        )


if __name__ == "__main__":
    main()
