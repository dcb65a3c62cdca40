"""``edge-had export``: a model bundle -> checked, gated ONNX graph for one sensor.

Steps: export FP32 for ``bands`` (on ``wavelengths`` when given) and compare it with torch; make
the FP16 or INT8 graph; check it (:mod:`edge_had.build.graph_checks`); run the accuracy gate
(:mod:`edge_had.build.gate`) unless told not to; write ``model_<precision>.onnx`` (plus the FP32
graph it came from) and ``export_report.json``. A failed check or gate raises :class:`ExportError`
with the table, after writing the report; the graph it refused is written as
``model_<precision>.rejected.onnx``, never under the name a runtime is given.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.build.calibration import CalibrationSet
from edge_had.build.calibration_methods import DEFAULT_CALIBRATION_METHOD
from edge_had.build.gate import GraphRecipe, gate_scenes, run_gate
from edge_had.build.onnx_export import ExportError, read_metadata
from edge_had.eval.report import SCHEMA_VERSION, json_text, platform_info

TORCH_TOLERANCE = 1e-5  # max|onnx - torch| / max|torch| per output, FP32


def torch_agreement(bundle: Any, graph: Path, bands: int, wavelengths: np.ndarray | None) -> dict[str, float]:
    """max|ORT - torch| / max|torch| per output on a seeded 16 x 100 block (FP32 graph)."""
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from edge_had.runtime.torch_runner import TorchRunner

    cube = (0.05 * np.random.default_rng(0).standard_normal((1, bands, 16, 100))).astype(np.float32)
    with (
        OnnxRuntimeRunner(graph) as ort_runner,
        TorchRunner(bundle.model_for(bands, wavelengths)) as torch_runner,
    ):
        got, want = ort_runner.infer({"cube": cube}), torch_runner.infer({"cube": cube})
    return {
        name: float(np.abs(got[name] - want[name]).max() / max(np.abs(want[name]).max(), 1e-30))
        for name in want
    }


def export_model(
    bundle: Any,
    bands: int,
    out: str | Path,
    *,
    precision: str = "fp32",
    wavelengths: np.ndarray | None = None,
    calibration: CalibrationSet | None = None,
    method: str = DEFAULT_CALIBRATION_METHOD,
    keep_float: Sequence[str] = (),
    gate_data: Sequence[Any] = (),
    gate: bool = True,
    scorer: str = "global",
    interleave: str | None = None,
) -> dict[str, Any]:
    """Run the export (see the module docstring); returns the report it wrote. ``scorer``: the RX
    the graph will feed - ``hybrid`` bakes in the model's hybrid alphas (spectral branch alone) and
    gates with hybrid RX, as ``stream --detector enhanced-hybrid-rx`` needs. ``interleave``: how
    the gate scenes' (and a ``--wavelengths`` scene file's) cubes were read, recorded in the
    report (None: each file's own)."""
    import onnx

    bundle = bundle.for_scorer(scorer)

    from edge_had.build.graph_checks import fp16_problems, qdq_problems

    if wavelengths is not None and len(wavelengths) != bands:  # before the folder is made
        raise ExportError(f"{len(wavelengths)} wavelengths given for {bands} bands")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    precisions = ["fp32"] if precision == "fp32" else ["fp32", precision]
    recipe = GraphRecipe(bundle, precisions, calibration, method, keep_float, scorer)
    # built in a scratch folder of its own (the user's folder may hold anything, a work/ too) and
    # moved to their deployable names only once checked and gated
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as scratch:
        graphs = recipe.build(bands, Path(scratch), wavelengths)
        agreement = torch_agreement(bundle, graphs["fp32"], bands, wavelengths)
        problems = [
            f"FP32 {name}: ONNX Runtime vs torch {error:.2e} > {TORCH_TOLERANCE}"
            for name, error in agreement.items()
            if error > TORCH_TOLERANCE
        ]
        fp32_problems = bool(problems)
        if precision == "fp16":
            problems += fp16_problems(onnx.load(str(graphs["fp16"])))
        if precision == "int8":
            problems += qdq_problems(onnx.load(str(graphs["int8"])))
        gate_report = None
        if gate and precision != "fp32" and not problems:
            scenes, excluded = gate_scenes(bundle, gate_data, calibration, bands)
            gate_report = run_gate(recipe, scenes, sensor=(bands, wavelengths, graphs))
            gate_report.excluded = {**excluded, **gate_report.excluded}
        passed = not problems and (gate_report is None or gate_report.passed(precision))
        accepted = {"fp32": not fp32_problems, precision: passed}
        final = {name: _place(path, out / f"model_{name}", accepted[name]) for name, path in graphs.items()}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "export",
        "model": {"directory": str(bundle.directory), "sha256": bundle.sha256},
        "scorer": scorer,
        "interleave": interleave,
        "graphs": {name: str(path) for name, path in final.items()},
        "metadata": read_metadata(final[precision]),
        "torch_vs_onnxruntime_fp32": agreement,
        "graph_problems": problems,
        "platform": platform_info(),
    }
    if gate_report is not None:
        report["gate"] = gate_report.to_dict()
    (out / "export_report.json").write_text(json_text(report) + "\n")
    if problems:
        raise ExportError(f"{final[precision]}: the graph fails its checks:\n  " + "\n  ".join(problems))
    if not passed:
        assert gate_report is not None
        raise ExportError(
            f"{final[precision]}: accuracy gate failed (report: {out / 'export_report.json'}):\n"
            + gate_report.table()
            + "\ndeploy FP32 (--precision fp32), or for FP16 the hybrid-RX graph (--scorer hybrid) if it "
            "passes; --keep-float NODE keeps named layers in float (the nodes: the report's metadata, "
            "reduced_nodes; it did not rescue the shipped model: export/README.md)"
        )
    report["gate_table"] = None if gate_report is None else gate_report.table()
    return report


def _place(graph: Path, stem: Path, accepted: bool) -> Path:
    """Move a built graph to ``<stem>.onnx``, or to ``<stem>.rejected.onnx`` (kept to look at;
    runtimes are only ever pointed at the first) when it failed its checks or the gate; a
    rejected graph of an earlier run under the accepted name's stem is removed."""
    target = stem.with_name(stem.name + (".onnx" if accepted else ".rejected.onnx"))
    if accepted:
        stem.with_name(stem.name + ".rejected.onnx").unlink(missing_ok=True)
    shutil.move(str(graph), target)
    return target
