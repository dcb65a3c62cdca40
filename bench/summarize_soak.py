"""Print the accounting and the RSS curve of an ``edge-had stream ... --faults all`` soak report,
and the soak's verdict: exact accounting and RSS growth < 5 MB per 10^5 lines after the first 10^5."""

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
    after = [p["rss_mb"] for p in curve if p["results"] >= 100_000]
    worst = max((b - a for a, b in zip(after, after[1:], strict=False)), default=0.0)
    exact = health["lines_in"] == health["lines_scored"] + health["lines_rejected"] + health["lines_dropped"]
    ok = exact and worst < 5.0
    verdict = "PASS" if ok else "FAIL"
    print(
        f"\naccounting exact: {exact}; worst RSS growth per 10^5 lines after the first 10^5: {worst:.2f} MB"
    )
    print(f"{report['lines_per_second']:.0f} lines/s -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
