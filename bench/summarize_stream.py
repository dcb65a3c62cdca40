"""Print the lines/s and per-stage tables of a ``bench/test_bench_stream.py`` JSON result."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    result = json.load(open(path))
    machine = result["machine_info"]
    print(f"CPU: {machine['edge_had_platform']['cpu_model']}, threads: {machine['bench_threads']}")
    print("| pipeline | lines/s (median round) | budget 330 lines/s: ratio | lines/s (best round) |")
    print("|---|---|---|---|")
    for bench in result["benchmarks"]:
        info, stats = bench["extra_info"], bench["stats"]
        median, best = info["lines_per_round"] / stats["median"], info["lines_per_round"] / stats["min"]
        print(f"| {info['pipeline']} | {median:,.0f} | {median / 330:.2f}x | {best:,.0f} |")
    for bench in result["benchmarks"]:
        info = bench["extra_info"]
        print(f"\n{info['pipeline']}, per stage (last round; budget {info['budget_ms']:.2f} ms/line):")
        print("| stage | p50 ms | p99 ms | max ms | mean ms |")
        print("|---|---|---|---|---|")
        for stage, s in info["latency_ms"].items():
            print(f"| {stage} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.3f} | {s['mean']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
