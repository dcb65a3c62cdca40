"""The one versioned JSON schema of every report edge-had writes.

Later versions add fields and never rename them. An evaluation report is::

    {"schema_version": 1, "kind": "eval", "edge_had_version": "...",
     "detector": {"name": ..., <every setting>},
     "scenes": [{"name", "bands", "rows", "cols", "auc", "auc_dtau", "auc_ftau",
                 "pd_at_far": {"0.001": .., "0.0001": ..}, "seconds", "valid_pixels",
                 "source_sha256"}],
     "mean_auc": ..., "platform": {...}}
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

import edge_had

SCHEMA_VERSION = 1
SCENE_FIELDS = ("name", "bands", "auc", "auc_dtau", "auc_ftau", "pd_at_far", "seconds")
EVAL_FIELDS = ("schema_version", "kind", "detector", "scenes", "mean_auc")


def platform_info() -> dict[str, Any]:
    """Where a report was made: enough to compare numbers across machines."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
    }


def eval_report(detector: dict[str, Any], scenes: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble an evaluation report; ``mean_auc`` is the mean of the per-scene AUCs."""
    if not scenes:
        raise ValueError("an evaluation report needs at least one scene")
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "eval",
        "edge_had_version": edge_had.__version__,
        "detector": detector,
        "scenes": scenes,
        "mean_auc": float(np.mean([scene["auc"] for scene in scenes])),
        "platform": platform_info(),
    }
    validate_eval_report(report)
    return report


def validate_eval_report(report: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing field."""
    for field in EVAL_FIELDS:
        if field not in report:
            raise ValueError(f"eval report lacks {field!r}")
    if "name" not in report["detector"]:
        raise ValueError("eval report's detector lacks 'name'")
    for index, scene in enumerate(report["scenes"]):
        for field in SCENE_FIELDS:
            if field not in scene:
                raise ValueError(f"eval report scene {index} lacks {field!r}")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
