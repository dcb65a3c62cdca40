"""Print the per-backend table of a ``bench/test_bench_backends.py`` JSON result (minima, with
medians; lines/s = lines per call / minimum time)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    result = json.load(open(path))
    machine = result["machine_info"]
    print(f"CPU: {machine['edge_had_platform']['cpu_model']}, threads: {machine['bench_threads']}")
    print("| shape | runner | ms per call (min / median) | lines/s | max rel. error vs torch |")
    print("|---|---|---|---|---|")
    for bench in sorted(
        result["benchmarks"], key=lambda b: (b["extra_info"]["shape"], b["extra_info"]["runner"])
    ):
        info, stats = bench["extra_info"], bench["stats"]
        lines_per_s = info["lines_per_call"] / stats["min"]
        times = f"{stats['min'] * 1e3:.1f} / {stats['median'] * 1e3:.1f}"
        print(
            f"| {info['shape']} | {info['runner']} | {times} | {lines_per_s:,.0f} "
            f"| {info['max_rel_error']:.1e} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
