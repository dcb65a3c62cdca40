"""Print the accounting and the RSS curve of an ``edge-had stream ... --faults all`` soak report,
and the soak's verdict: exact accounting and RSS growth < 5 MB per 10^5 lines after the first 10^5,
growth being the least-squares slope of the curve from 10^5 lines on (single samples swing by a
few MB with the temporary arrays alive at the moment of sampling; the slope is the trend)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    report = json.load(open(path))
    health = report["health"]
    keys = ("lines_in", "lines_scored", "lines_rejected", "lines_dropped", "missing_indices", "duplicates",
            "deadline_misses", "reinitialisations")  # fmt: skip
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(f"{health.get(key, 0):,}" for key in keys) + " |")
    print(f"\nrejections: {health['reasons']}\nflags: {health['flags']}")
    curve = report["rss_curve"]
    print("\n| lines | RSS MB | growth since previous (MB) |\n|---|---|---|")
    previous = None
    for point in curve:
        growth = "" if previous is None else f"{point['rss_mb'] - previous:+.2f}"
        print(f"| {point['results']:,} | {point['rss_mb']:.1f} | {growth} |")
        previous = point["rss_mb"]
    points = [(p["results"] / 100_000, p["rss_mb"]) for p in curve if p["results"] >= 100_000]
    slope = 0.0
    if len(points) >= 2:
        import numpy as np

        slope = float(np.polyfit([x for x, _ in points], [y for _, y in points], 1)[0])
    steps = [b[1] - a[1] for a, b in zip(points, points[1:], strict=False)]
    net = points[-1][1] - points[0][1] if points else 0.0
    exact = health["lines_in"] == health["lines_scored"] + health["lines_rejected"] + health["lines_dropped"]
    ok = exact and slope < 5.0
    verdict = "PASS" if ok else "FAIL"
    print(
        f"\naccounting exact: {exact}; RSS trend after the first 10^5 lines: {slope:+.2f} MB per 10^5 lines"
    )
    largest = max(steps, key=abs, default=0.0)
    print(f"(net {net:+.1f} MB from 10^5 lines to the end; largest single step {largest:+.1f} MB)")
    print(f"{report['lines_per_second']:.0f} lines/s -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
