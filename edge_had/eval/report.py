"""The one versioned JSON schema of every report edge-had writes.

Later versions add fields and never rename them. An evaluation report is::

    {"schema_version": 1, "kind": "eval", "edge_had_version": "...",
     "detector": {"name": ..., <every setting>},
     "scenes": [{"name", "file", "interleave" (how its cube was read), "bands", "rows", "cols",
                 "auc", "auc_dtau", "auc_ftau",
                 "pd_at_far": {"0.001": .., "0.0001": ..}, "seconds", "valid_pixels",
                 "anomaly_pixels", "anomaly_pixels_invalid", "unlabelled_pixels" (left out of
                 every metric), "far_outlier_pixels" (likely corrupt samples), "source_sha256"}],
     "mean_auc": ..., "platform": {...}}
"""

from __future__ import annotations

import json
import math
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
    """Where a report was made: enough to compare numbers across machines and boards - CPU model
    and thread count, the versions of torch / onnxruntime / TensorRT that are installed (found
    without importing them), the GPU and its SM when torch sees one, and on a Jetson the module,
    the L4T release, the power mode and whether jetson_clocks pinned the clocks."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "versions": {
            name: _installed_version(name) for name in ("torch", "onnxruntime", "tensorrt", "pycuda")
        },
    }
    info.update(_gpu_info())
    jetson = jetson_info()
    if jetson:
        info["jetson"] = jetson
    return info


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")  # only when already imported: reports stay cheap
    return int(torch.get_num_threads()) if torch is not None else None


def _gpu_info() -> dict[str, Any]:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"gpu": None}
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "gpu_sm": f"sm_{major}{minor}", "cuda": torch.version.cuda}


def jetson_info(root: Path = Path("/")) -> dict[str, Any]:
    """Jetson facts (empty elsewhere): module name from the device tree, L4T release from
    ``/etc/nv_tegra_release``, power mode from ``nvpmodel -q``, and whether ``jetson_clocks``
    holds the clocks (``jetson_clocks --show``: all CPU cores at their maximum)."""
    import shutil
    import subprocess

    release_file = root / "etc" / "nv_tegra_release"
    if not release_file.is_file():
        return {}
    info: dict[str, Any] = {"l4t_release": release_file.read_text().splitlines()[0].strip()}
    model = root / "proc" / "device-tree" / "model"
    if model.is_file():
        info["module"] = model.read_text().strip("\x00 \n")

    def run(*command: str) -> str | None:
        if shutil.which(command[0]) is None:
            return None
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    power = run("nvpmodel", "-q")
    if power:
        info["power_mode"] = " ".join(line.strip() for line in power.splitlines() if line.strip())
    clocks = run("jetson_clocks", "--show")
    if clocks:
        info["jetson_clocks"] = _clocks_pinned(clocks)
    return info


def _clocks_pinned(show: str) -> bool:
    """True when every CPU line of ``jetson_clocks --show`` runs at its maximum frequency."""
    cpus = [line for line in show.splitlines() if line.startswith("cpu") and "MaxFreq=" in line]
    if not cpus:
        return False
    fields = [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in cpus]
    return all(f.get("CurrentFreq") == f.get("MaxFreq") for f in fields)


def eval_report(
    detector: dict[str, Any], scenes: list[dict[str, Any]], skipped: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """Assemble an evaluation report; ``mean_auc`` is the mean of the per-scene AUCs; ``skipped``
    lists the files that could not be evaluated (``file``, ``error``).

    When the detector's model was trained on some of the scenes (``trained_on``), the report adds
    ``held_out_mean_auc``: the mean over the other scenes only (None when there are none), the only
    mean that says anything about unseen scenes.
    """
    if not scenes:
        raise ValueError("an evaluation report needs at least one scene")
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "eval",
        "edge_had_version": edge_had.__version__,
        "detector": detector,
        "scenes": scenes,
        "skipped": list(skipped or []),
        "mean_auc": float(np.mean([scene["auc"] for scene in scenes])),
        "platform": platform_info(),
    }
    if any(scene.get("trained_on") for scene in scenes):
        held_out = [scene["auc"] for scene in scenes if not scene.get("trained_on")]
        report["held_out_mean_auc"] = float(np.mean(held_out)) if held_out else None
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


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON of ``value``: NaN and infinities (an undefined metric, a rate over zero
    seconds) become ``null``, since ``NaN``/``Infinity`` are not JSON and strict parsers (jq,
    JavaScript, most non-Python readers) refuse the whole file."""
    return json.dumps(_finite_or_none(value), indent=indent, allow_nan=False)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(report) + "\n")
    return path
