"""Markdown table of a kernel benchmark run (pytest-benchmark JSON): per shape and ISA, the
median time, the throughput and the fraction of the machine's ceiling.

    python -m pytest benchmarks/test_bench_kernels.py --benchmark-only --benchmark-json=k.json
    python benchmarks/report_kernels.py k.json
"""

import json
import sys
from collections import defaultdict


def main(path: str) -> int:
    data = json.load(open(path))
    rows = defaultdict(dict)
    order = []
    for b in data["benchmarks"]:
        info = b["extra_info"]
        group = b["group"]
        if group not in rows:
            order.append(group)
        if "G_binary_MAC_per_s" in info:
            rate = f"{info['G_binary_MAC_per_s']:.0f} G bMAC/s"
        elif "GFLOP_per_s" in info:
            rate = f"{info['GFLOP_per_s']:.1f} GFLOP/s"
        else:
            rate = f"{info['G_elements_per_s']:.2f} G el/s"
        frac = f" ({100 * info['peak_fraction']:.0f}%)" if "peak_fraction" in info else ""
        rows[group][info["isa"]] = f"{b['stats']['median'] * 1e6:.1f} us, {rate}{frac}"
    isas = sorted({isa for r in rows.values() for isa in r})
    print("| kernel, shape | " + " | ".join(isas) + " |")
    print("|---|" + "---|" * len(isas))
    for g in order:
        print(f"| {g} | " + " | ".join(rows[g].get(i, "-") for i in isas) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
