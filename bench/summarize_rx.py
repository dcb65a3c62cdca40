"""Print the per-scene speed-up table of a ``bench/test_bench_rx.py`` JSON result.

Speed-up = spectral.rx's minimum time / edge_had.rx's minimum time (minima are the least
disturbed by other work on a shared machine; medians are shown beside them).
"""

from __future__ import annotations

import json
import statistics
import sys


def main(path: str) -> None:
    result = json.load(open(path))
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for bench in result["benchmarks"]:
        info = bench["extra_info"]
        entry = {"min": bench["stats"]["min"], "median": bench["stats"]["median"], "auc": info["auc"]}
        stats.setdefault(info["scene"], {})[info["implementation"]] = entry
    machine = result["machine_info"]
    print(f"CPU: {machine['edge_had_platform']['cpu_model']}, BLAS threads: {machine['bench_threads']}")
    print("| scene | spectral.rx ms (min / median) | edge_had.rx ms (min / median) | speed-up | AUC (both) |")
    print("|---|---|---|---|---|")
    ratios = []
    for scene, sides in sorted(stats.items()):
        ours, theirs = sides["edge_had.rx"], sides["spectral.rx"]
        ratio = theirs["min"] / ours["min"]
        ratios.append(ratio)
        print(
            f"| {scene} | {theirs['min'] * 1e3:.1f} / {theirs['median'] * 1e3:.1f} "
            f"| {ours['min'] * 1e3:.1f} / {ours['median'] * 1e3:.1f} | {ratio:.2f}x | {ours['auc']:.4f} |"
        )
    print(f"| geometric mean | | | {statistics.geometric_mean(ratios):.2f}x | |")


if __name__ == "__main__":
    main(sys.argv[1])
