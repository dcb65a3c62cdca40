"""The accuracy gate of reduced-precision graphs, on detection (enhanced-RX AUC), not on tensors.

For every gate scene the enhanced-RX AUC (feature fusion with the model's alphas, float64 RX
oracle; hybrid RX for a ``--scorer hybrid`` graph) is computed through ONNX Runtime with the
FP32 graph and with each reduced graph; a reduced graph passes when ``|AUC - AUC_fp32| <=``
:data:`TOLERANCES` on every scene.

Which graphs: ``edge-had export`` gates the very files it writes, made for one sensor: each gate
scene is first resampled to that sensor's bands (:func:`on_sensor_bands`; on wavelengths when both
record them). Without a sensor (the fold tables, ``export/gate_folds.py``) each scene is its own
sensor and :class:`GraphRecipe` builds the graphs for its bands with the same settings
(calibration set, method, FP32-kept nodes).

FP16 arithmetic: ONNX Runtime's CPU computes an FP16 graph in FP32 without rounding the values
between layers, so the FP16 side is scored with the graph's FP16-storage emulation
(:mod:`edge_had.build.fp16_emulation`: every FP16 tensor rounded to FP16, as on a GPU).

Honesty: a model is never gated on a scene it was trained on or calibrated on.
:func:`gate_scenes` drops them (matching SHA-256 against the model's training record and the
calibration manifest) - and the scenes that give no AUC (no valid labelled anomaly or background
pixel, :func:`~edge_had.eval.protocol.no_auc_reason`); when no real scene remains (the shipped
model saw them all) the gate runs
on synthetic scenes, which no model has seen. The fold tables in ``export/README.md`` use the
cross-validation fold models instead (``export/gate_folds.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.band_resampling import MAX_OUTSIDE_FRACTION
from edge_had.build.calibration import CalibrationSet
from edge_had.build.calibration_methods import DEFAULT_CALIBRATION_METHOD
from edge_had.build.onnx_export import ExportError, export_onnx
from edge_had.detectors import scoring
from edge_had.detectors.enhanced import enhance_parts, fuse_parts
from edge_had.eval.metrics import roc_auc
from edge_had.io import Scene

TOLERANCES = {"fp16": 5e-4, "int8": 2e-3}
SYNTHETIC_GATE_SEEDS = (101, 102, 103)


@dataclass
class GraphRecipe:
    """How to build a model's graphs for any band count (FP32, FP16, INT8 as asked)."""

    bundle: Any
    precisions: Sequence[str]
    calibration: CalibrationSet | None = None
    method: str = DEFAULT_CALIBRATION_METHOD
    keep_float: Sequence[str] = ()
    scorer: str = "global"  # what the gate scores the enhanced cube with (global or hybrid RX)

    def build(self, bands: int, folder: Path, wavelengths: np.ndarray | None = None) -> dict[str, Path]:
        from edge_had.build.quantize import to_fp16, to_int8

        folder.mkdir(parents=True, exist_ok=True)
        graphs = {
            "fp32": export_onnx(self.bundle, bands, folder / "model_fp32.onnx", wavelengths=wavelengths)
        }
        if "fp16" in self.precisions:
            graphs["fp16"] = to_fp16(graphs["fp32"], folder / "model_fp16.onnx", keep_float=self.keep_float)
        if "int8" in self.precisions:
            if self.calibration is None:
                raise ExportError("INT8 needs a calibration set (`edge-had calibrate`, then --calibration)")
            graphs["int8"] = to_int8(
                graphs["fp32"],
                folder / "model_int8.onnx",
                self.calibration,
                method=self.method,
                keep_float=self.keep_float,
            )
        return graphs


@dataclass
class GateRow:
    scene: str
    bands: int
    source: str
    auc: dict[str, float]

    def delta(self, precision: str) -> float:
        return self.auc[precision] - self.auc["fp32"]

    def passed(self, precision: str) -> bool:
        return abs(self.delta(precision)) <= TOLERANCES[precision]


@dataclass
class GateReport:
    rows: list[GateRow] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # scene -> why it was not gated on

    def precisions(self) -> list[str]:
        return [name for name in TOLERANCES if self.rows and name in self.rows[0].auc]

    def passed(self, precision: str) -> bool:
        return all(row.passed(precision) for row in self.rows)

    def failures(self) -> list[str]:
        return [
            f"{row.scene} {precision}: AUC {row.auc[precision]:.4f} vs FP32 {row.auc['fp32']:.4f} "
            f"(|diff| {abs(row.delta(precision)):.4f} > {TOLERANCES[precision]})"
            for row in self.rows
            for precision in self.precisions()
            if not row.passed(precision)
        ]

    def table(self) -> str:
        precisions = self.precisions()
        header = "| scene | bands | data | FP32 | " + " | ".join(
            f"{p.upper()} (diff, tol {TOLERANCES[p]})" for p in precisions
        )
        lines = [header + " |", "|" + "---|" * (4 + len(precisions))]
        for row in self.rows:
            cells = [
                f"{row.auc[p]:.4f} ({row.delta(p):+.4f}){'' if row.passed(p) else ' FAIL'}"
                for p in precisions
            ]
            lines.append(
                f"| {row.scene} | {row.bands} | {row.source} | {row.auc['fp32']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerances": {p: TOLERANCES[p] for p in self.precisions()},
            "passed": {p: self.passed(p) for p in self.precisions()},
            "rows": [row.__dict__ for row in self.rows],
            "excluded": self.excluded,
        }


def gate_scenes(
    bundle: Any, scenes: Sequence[Scene], calibration: CalibrationSet | None, bands_for_synthetic: int
) -> tuple[list[tuple[Scene, str]], dict[str, str]]:
    """The scenes a model may be gated on, each with its source ("real"/"synthetic"), and why the
    others were excluded."""
    from edge_had.eval.protocol import no_auc_reason
    from edge_had.io.readers import scene_sha256
    from edge_had.io.synthetic import synthetic_scene

    trained = set(bundle.training_scenes)
    calibrated = calibration.scene_hashes if calibration is not None else set()
    kept, excluded = [], {}
    for scene in scenes:
        digest = scene_sha256(scene.source) if scene.source is not None else ""
        reason = None if scene.gt is None else no_auc_reason(scene)
        if reason is not None:  # no AUC to gate on (its anomalies all invalid or unlabelled, ...)
            excluded[scene.name] = reason
        elif digest in trained:
            excluded[scene.name] = "the model was trained on it"
        elif digest in calibrated:
            excluded[scene.name] = "the INT8 calibration set was drawn from it"
        else:
            kept.append((scene, "real"))
    if not kept:
        kept = [
            (synthetic_scene(seed=seed, bands=bands_for_synthetic), "synthetic")
            for seed in SYNTHETIC_GATE_SEEDS
        ]
    return kept, excluded


def enhanced_rx_auc(bundle: Any, graph: Path, scene: Scene, scorer: str = "global") -> float:
    """Enhanced-RX AUC of ``scene`` (feature fusion, the model's alphas; RX as ``scorer``: global
    or hybrid) through ONNX Runtime."""
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner

    cube = scene.detection_cube()
    with OnnxRuntimeRunner(graph) as runner:
        parts = enhance_parts(bundle, cube, scene.valid, scene.detection_wavelengths(), runner)
    config = bundle.config
    score = scoring.scorer(scorer)
    scores = fuse_parts(parts, config.alpha_spe, config.alpha_spa, "feature", lambda x: score(x, scene.valid))
    assert scene.gt is not None
    return roc_auc(scores, scene.gt, scene.counted)


def sensor_coverage(scene: Scene, wavelengths: np.ndarray | None) -> float:
    """The share of the sensor's bands inside the scene's wavelength range (1 when either records
    no wavelengths: then both are resampled on band index)."""
    own = scene.detection_wavelengths()
    if own is None or wavelengths is None:
        return 1.0
    centres = np.asarray(wavelengths, dtype=np.float64)
    return float(((centres >= np.min(own)) & (centres <= np.max(own))).mean())


def on_sensor_bands(scene: Scene, bands: int, wavelengths: np.ndarray | None) -> Scene:
    """The scene as a sensor of ``bands`` bands (centred on ``wavelengths`` when known) would see
    it: its good bands linearly interpolated onto the sensor's (on wavelengths when both record
    them, else on band index)."""
    from edge_had.band_resampling import sensor_to_sensor_matrix

    cube = scene.detection_cube()
    matrix = sensor_to_sensor_matrix(cube.shape[2], scene.detection_wavelengths(), bands, wavelengths)
    resampled = (cube.astype(np.float64) @ matrix.T).astype(np.float32)
    return Scene(
        cube=resampled,
        valid=scene.valid,
        good_bands=np.ones(bands, dtype=bool),
        name=scene.name,
        gt=scene.gt,
        labelled=scene.labelled,
        wavelengths=None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64),
        source=scene.source,
    )


def scored_graphs(graphs: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The graph the gate scores for each precision: the graph itself, but FP16 through its
    FP16-storage emulation (see the module docstring)."""
    from edge_had.build.fp16_emulation import fp16_storage_graph

    return {
        precision: fp16_storage_graph(path, folder / f"{path.stem}_fp16_storage.onnx")
        if precision == "fp16"
        else path
        for precision, path in graphs.items()
    }


def run_gate(
    recipe: GraphRecipe,
    scenes: Sequence[tuple[Scene, str]],
    sensor: tuple[int, np.ndarray | None, dict[str, Path]] | None = None,
) -> GateReport:
    """Gate ``recipe``'s graphs on ``scenes``. ``sensor``: ``(bands, wavelengths, graphs)`` of an
    export - its written graphs are scored on the scenes resampled to its bands; without it each
    scene gets graphs built for its own bands."""
    report = GateReport()
    with tempfile.TemporaryDirectory(prefix="edge-had-gate-") as scratch:
        graphs: dict[tuple[int, bytes], dict[str, Path]] = {}
        if sensor is not None:
            bands, wavelengths, written = sensor
            shared = scored_graphs(written, Path(scratch))
        for scene, source in scenes:
            if scene.gt is None:
                raise ExportError(f"{scene.name}: the gate needs scenes with ground truth")
            if sensor is not None:
                coverage = sensor_coverage(scene, wavelengths)
                if coverage < 1.0 - MAX_OUTSIDE_FRACTION:  # the rest would copy its edge bands
                    report.excluded[scene.name] = (
                        f"its bands cover {coverage:.0%} of the sensor's (the others would repeat its "
                        "edge bands)"
                    )
                    continue
                scene, scored = on_sensor_bands(scene, bands, wavelengths), shared
            else:
                own_bands, own_wavelengths = scene.detection_cube().shape[2], scene.detection_wavelengths()
                key = (own_bands, b"" if own_wavelengths is None else np.asarray(own_wavelengths).tobytes())
                if key not in graphs:
                    folder = Path(scratch) / f"g{len(graphs)}"
                    graphs[key] = scored_graphs(recipe.build(own_bands, folder, own_wavelengths), folder)
                scored = graphs[key]
            aucs = {
                precision: enhanced_rx_auc(recipe.bundle, path, scene, recipe.scorer)
                for precision, path in scored.items()
            }
            report.rows.append(GateRow(scene.name, scene.detection_cube().shape[2], source, aucs))
    if not report.rows:
        raise ExportError(f"no gate scene covers the sensor's bands: {report.excluded}")
    return report
