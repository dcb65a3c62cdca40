"""Print the per-scene speed-up table of a ``bench/test_bench_rx.py`` JSON result."""

from __future__ import annotations

import json
import statistics
import sys


def main(path: str) -> None:
    result = json.load(open(path))
    minima: dict[str, dict[str, float]] = {}
    medians: dict[str, dict[str, float]] = {}
    aucs: dict[str, dict[str, float]] = {}
    for bench in result["benchmarks"]:
        info = bench["extra_info"]
        minima.setdefault(info["scene"], {})[info["implementation"]] = bench["stats"]["min"]
        medians.setdefault(info["scene"], {})[info["implementation"]] = bench["stats"]["median"]
        aucs.setdefault(info["scene"], {})[info["implementation"]] = info["auc"]
    machine = result["machine_info"]
    print(f"CPU: {machine['edge_had_platform']['cpu_model']}, BLAS threads: {machine['bench_threads']}")
    print("| scene | spectral.rx ms | edge_had.rx ms | speed-up | AUC (both) |")
    print("|---|---|---|---|---|")
    ratios = []
    for scene in sorted(medians):
        ours, theirs = medians[scene]["edge_had.rx"], medians[scene]["spectral.rx"]
        ratios.append(theirs / ours)
        print(
            f"| {scene} | {theirs * 1e3:.1f} | {ours * 1e3:.1f} | {theirs / ours:.2f}x | "
            f"{aucs[scene]['edge_had.rx']:.4f} |"
        )
    print(f"| geometric mean | | | {statistics.geometric_mean(ratios):.2f}x | |")


if __name__ == "__main__":
    main(sys.argv[1])
