"""The plain streams' two band reductions on the ten scenes, through the command line.

For each scene of ``$EDGE_HAD_DATA`` (or ``--data``), ``edge-had stream --detector rx|hybrid-rx
--reduction-kernel linear|triangle`` as a user runs it: AUC, events and false events at the
default chi-square threshold (pfa 1e-6), lines/s. Descriptive only: the default reduction is not
chosen on these scenes (they are the reported ones).

    python bench/stream_reduction_kernels.py --json bench/results/stream_reduction_kernel_scenes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edge_had import settings
from edge_had.cli import main as edge_had
from edge_had.eval.report import SCHEMA_VERSION, platform_info
from edge_had.io import list_scenes

DETECTORS = ("rx", "hybrid-rx")
KERNELS = ("linear", "triangle")


def streamed(path: Path, detector: str, kernel: str, scratch: Path) -> dict:
    report = scratch / f"{path.stem}-{detector}-{kernel}.json"
    argv = ["stream", "--source", str(path), "--detector", detector, "--reduction-kernel", kernel]
    if edge_had([*argv, "--json", str(report)]) != 0:
        raise SystemExit(f"edge-had {' '.join(argv)} failed")
    run = json.loads(report.read_text())
    events = run["events"]
    return {
        "auc": run["auc"],
        "events": events["count"],
        "false_events": events["false"],
        "lines_per_second": run["lines_per_second"],
    }


def summary(rows: list[dict]) -> dict:
    table = {}
    for detector in DETECTORS:
        for kernel in KERNELS:
            runs = [row[detector][kernel] for row in rows]
            table[f"{detector} {kernel}"] = {
                "mean_auc": sum(r["auc"] for r in runs) / len(runs),
                "events": sum(r["events"] for r in runs),
                "false_events": sum(r["false_events"] for r in runs),
            }
        gains = [row[detector]["triangle"]["auc"] - row[detector]["linear"]["auc"] for row in rows]
        table[f"{detector} triangle vs linear"] = {
            "higher": sum(g > 0 for g in gains),
            "lower": sum(g < 0 for g in gains),
            "largest_difference": max(gains, key=abs),
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="scene folder (default: EDGE_HAD_DATA)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    scenes = list_scenes(args.data or settings.data_dir())
    if not scenes:
        raise SystemExit("no scenes found: set EDGE_HAD_DATA or pass --data")
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as scratch:
        for path in scenes:
            row: dict = {"scene": path.stem}
            for detector in DETECTORS:
                row[detector] = {k: streamed(path, detector, k, Path(scratch)) for k in KERNELS}
            rows.append(row)
            aucs = {d: {k: round(row[d][k]["auc"], 4) for k in KERNELS} for d in DETECTORS}
            print(path.stem, json.dumps(aucs))
    result = {
        "schema_version": SCHEMA_VERSION,
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "seconds": round(time.perf_counter() - started, 1),
        "platform": platform_info(),
        "summary": summary(rows),
        "scenes": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for name, values in result["summary"].items():
        print(name, values)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
