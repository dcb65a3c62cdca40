"""The INT8 calibration set: blocks of consecutive lines sampled from training scenes only.

Sampling (documented, seeded): every scene of the folder that is not excluded contributes
``blocks_per_scene`` blocks of ``lines_per_block`` consecutive lines at full width, their start
lines drawn uniformly without replacement from a generator seeded with ``seed``. Each block is
normalised the way detection normalises it (the model's :class:`Normalization` fitted on its whole
scene, invalid pixels imputed with the mean valid spectrum) and stored at the scene's native band
count. Anomalies stay in: the calibrated ranges must cover what the network meets in flight.

The ``.npz`` holds ``block_000``, ``block_001``, ... as float32 ``(bands, lines, pixels)`` arrays and
``manifest`` (a JSON string array, so it loads with ``allow_pickle=False``): the sampling settings,
the normalisation and per block its source scene's name and SHA-256 and its start line. A copy of
the manifest is written next to it as ``<name>.manifest.json`` for people.

To calibrate a graph for a sensor with ``B`` bands, :func:`calibration_feeds` resamples every
block on band index to ``B`` (the same rule as the spectral adapter without wavelengths): after the
adapter every activation lives in the model's K canonical bands, so ranges transfer across sensors.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.build.onnx_export import INPUT_NAME, ExportError
from edge_had.detectors.enhanced import impute_invalid
from edge_had.io import list_scenes, load_scene
from edge_had.io.readers import scene_sha256
from edge_had.models.normalize import Normalization

CALIBRATION_FORMAT = "edge-had-calibration"


@dataclass(frozen=True)
class CalibrationSampling:
    blocks_per_scene: int = 4
    lines_per_block: int = 16
    seed: int = 0


@dataclass
class CalibrationSet:
    blocks: list[np.ndarray]
    manifest: dict[str, Any]

    @property
    def scene_hashes(self) -> set[str]:
        return {entry["sha256"] for entry in self.manifest["scenes"]}

    def shortfalls(self) -> list[str]:
        """The scenes too short for the sampling asked: fewer blocks, or shorter ones (a scene
        shorter than a block gives one block of all its lines), one sentence each."""
        asked = CalibrationSampling(**self.manifest["sampling"])
        notes = []
        for scene in self.manifest["scenes"]:
            lines = [
                entry["lines"] for entry in self.manifest["blocks"] if entry["sha256"] == scene["sha256"]
            ]
            if len(lines) < asked.blocks_per_scene or min(lines) < asked.lines_per_block:
                notes.append(
                    f"{scene['name']}: {len(lines)} block(s) of {min(lines)} lines "
                    f"(asked {asked.blocks_per_scene} of {asked.lines_per_block}: the scene is too short)"
                )
        return notes

    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` (``.npz`` appended when missing, as numpy would) and its
        manifest beside it; the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"block_{i:03d}": block for i, block in enumerate(self.blocks)}
        arrays["manifest"] = np.array(json.dumps(self.manifest))
        np.savez_compressed(path, **arrays)
        path.with_suffix(".manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")
        return path


def build_calibration_set(
    data: str | Path,
    *,
    exclude: Sequence[str] = (),
    sampling: CalibrationSampling = CalibrationSampling(),
    normalization: Normalization | None = None,
    interleave: str | None = None,
) -> CalibrationSet:
    """Sample the calibration blocks from every scene of ``data`` whose name is not in ``exclude``,
    each file's cube read as stored in ``interleave`` order (:func:`~edge_had.io.load_scene`;
    recorded in the manifest)."""
    paths = [path for path in list_scenes(data) if path.stem not in set(exclude)]
    unknown = set(exclude) - {path.stem for path in list_scenes(data)}
    if unknown:
        raise ExportError(f"{data}: --exclude names no scene there: {sorted(unknown)}")
    if not paths:
        raise ExportError(f"{data}: no scene left to calibrate on")
    normalization = normalization or Normalization()
    rng = np.random.default_rng(sampling.seed)
    blocks: list[np.ndarray] = []
    scenes, entries = [], []
    for path in paths:
        scene = load_scene(path, interleave=interleave)
        cube = scene.detection_cube()
        normalized = normalization(impute_invalid(cube, scene.valid), scene.valid)
        rows = cube.shape[0]
        length = min(sampling.lines_per_block, rows)
        starts = np.sort(
            rng.choice(
                rows - length + 1, size=min(sampling.blocks_per_scene, rows - length + 1), replace=False
            )
        )
        digest = scene_sha256(path)
        scenes.append({"name": scene.name, "sha256": digest, "bands": int(cube.shape[2])})
        for start in starts:
            blocks.append(np.ascontiguousarray(normalized[start : start + length].transpose(2, 0, 1)))
            entries.append({"scene": scene.name, "sha256": digest, "start_line": int(start), "lines": length})
    manifest = {
        "format": CALIBRATION_FORMAT,
        "sampling": asdict(sampling),
        "interleave": interleave,
        "normalization": normalization.to_dict(),
        "scenes": scenes,
        "blocks": entries,
    }
    return CalibrationSet(blocks, manifest)


def load_calibration_set(path: str | Path) -> CalibrationSet:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: calibration set not found (make one with `edge-had calibrate`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            manifest = json.loads(str(archive["manifest"]))
            # in numeric order: past block_999 the names grow a digit, and text order would put
            # block_1000 before block_101 (blocks then disagreed with their manifest entries)
            names = sorted(
                (name for name in archive.files if name.startswith("block_")), key=lambda name: int(name[6:])
            )
            blocks = [np.asarray(archive[name], dtype=np.float32) for name in names]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ExportError(f"{path}: not a readable calibration set ({error})") from error
    if manifest.get("format") != CALIBRATION_FORMAT or len(blocks) != len(manifest.get("blocks", [])):
        raise ExportError(f"{path}: not an edge-had calibration set, or its blocks and manifest disagree")
    return CalibrationSet(blocks, manifest)


def calibration_feeds(calibration: CalibrationSet, bands: int) -> Iterator[dict[str, np.ndarray]]:
    """One ``{"cube": (1, bands, lines, pixels)}`` feed per block, resampled on band index and
    cropped to the narrowest block's central pixels (ONNX Runtime's histogram calibrators,
    Entropy and Percentile, stack every feed's activations, so all feeds need one shape)."""
    from edge_had.band_resampling import band_index_matrix

    width = min(block.shape[2] for block in calibration.blocks)
    lines = min(block.shape[1] for block in calibration.blocks)
    for block in calibration.blocks:
        left = (block.shape[2] - width) // 2
        block = block[:, :lines, left : left + width]
        native = block.shape[0]
        if native != bands:
            matrix = band_index_matrix(native, bands)[0].astype(np.float32)
            block = np.einsum("kb,bhw->khw", matrix, block)
        yield {INPUT_NAME: np.ascontiguousarray(block[None], dtype=np.float32)}
