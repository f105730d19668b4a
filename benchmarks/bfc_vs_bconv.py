"""G binary-MAC/s of the binary FC (BFC) kernel against the binary conv 1x1 on a 1x1 image with
the same channel counts (the same arithmetic: O dots of C bits), per ISA, as issue 12 asks
("the binary FC within 70% of the stride-1 kernels' rate").

    python benchmarks/bfc_vs_bconv.py [--isa avx2] [--sizes 2048 4096] [--rounds 5]

Both kernels run through qbinfer._testing.bench.KernelBench (weights packed once, as the engine
does at load). Measurements alternate between the two kernels, round after round, and each
figure is the best round, so a busy neighbour on a shared machine slows both alike.
"""

from __future__ import annotations

import argparse
import platform
import time

from qbinfer import _core, _testing


def seconds_per_call(bench, min_seconds: float = 0.05) -> float:
    n = 1
    while True:
        t0 = time.perf_counter()
        bench.run(n)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return dt / n
        n *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isa", default=None, help="default: the best this CPU runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    isa = args.isa or _core.supported_isas()[-1]
    print(f"cpu: {platform.processor() or platform.machine()}, isa {isa}")
    for c in args.sizes:
        fc = _testing.bench.KernelBench("bfc", isa, {"ci": c, "co": c})
        conv = _testing.bench.KernelBench("bconv", isa, {"h": 1, "w": 1, "ci": c, "co": c, "k": 1})
        best = {"bfc": float("inf"), "bconv": float("inf")}
        for _ in range(args.rounds):
            for name, bench in (("bfc", fc), ("bconv", conv)):
                best[name] = min(best[name], seconds_per_call(bench))
        rate = {k: c * c / v / 1e9 for k, v in best.items()}
        print(
            f"C = O = {c}: bfc ({fc.entry}) {rate['bfc']:.0f} G binary-MAC/s, bconv 1x1 on a 1x1 "
            f"image ({conv.entry}) {rate['bconv']:.0f}, ratio {rate['bfc'] / rate['bconv']:.2f}"
        )


if __name__ == "__main__":
    main()
