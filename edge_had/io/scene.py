"""The one in-memory convention for a hyperspectral scene.

``cube`` is (rows, cols, bands) float32, rows are along-track lines (the pushbroom direction).
``valid`` marks usable pixels: False where the file's no-data value, NaN or Inf occurs in any
good band. ``good_bands`` marks bands kept for detection (False for bands in an ENVI ``bbl``
bad-band list). Invalid pixels stay in the cube (their values are not trusted) and are masked
by detectors and evaluation; they are never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.errors import SceneError


@dataclass
class Scene:
    cube: np.ndarray
    valid: np.ndarray
    good_bands: np.ndarray
    name: str = "scene"
    gt: np.ndarray | None = None
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        rows, cols, bands = self.cube.shape
        return rows, cols, bands

    @property
    def bands(self) -> int:
        return int(self.cube.shape[2])

    def detection_cube(self) -> np.ndarray:
        """The cube restricted to good bands, (rows, cols, good bands) float32."""
        if bool(self.good_bands.all()):
            return self.cube
        return self.cube[:, :, self.good_bands]

    def detection_wavelengths(self) -> np.ndarray | None:
        if self.wavelengths is None:
            return None
        return self.wavelengths[self.good_bands]


def make_scene(
    cube: np.ndarray,
    *,
    name: str = "scene",
    gt: np.ndarray | None = None,
    wavelengths: np.ndarray | None = None,
    fwhm: np.ndarray | None = None,
    good_bands: np.ndarray | None = None,
    no_data_value: float | None = None,
    valid: np.ndarray | None = None,
    source: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> Scene:
    """Validate and normalise arrays into a :class:`Scene` (float32 cube, boolean masks).

    Raises :class:`SceneError` naming ``source`` for: values that are not real numbers, not 3-D,
    fewer than 2 bands, ground truth or mask of the wrong shape, a ground truth with NaN/Inf or
    non-numeric values, fewer than 2 good bands, or no valid pixel.
    """
    path = None if source is None else Path(source)
    cube = np.asarray(cube)
    if cube.dtype.kind not in "biuf":  # strings, objects; complex values would lose their imaginary part
        raise SceneError(f"the cube holds {cube.dtype} values, not real numbers", path)
    if cube.ndim != 3:
        raise SceneError(f"expected a 3-D cube (rows, cols, bands), got shape {cube.shape}", path)
    rows, cols, bands = cube.shape
    if rows < 1 or cols < 1:
        raise SceneError(f"cube has no pixels (shape {cube.shape})", path)
    if bands < 2:
        raise SceneError(f"cube has {bands} band(s); detection needs at least 2", path)
    stored = cube  # its own dtype: an integer no-data value is compared exactly
    cube = np.ascontiguousarray(cube, dtype=np.float32)

    if good_bands is None:
        good = np.ones(bands, dtype=bool)
    else:
        good = np.asarray(good_bands).astype(bool).ravel()
        if good.shape != (bands,):
            raise SceneError(f"bad-band list has {good.size} entries for {bands} bands", path)
    if int(good.sum()) < 2:
        raise SceneError(f"only {int(good.sum())} good band(s) after the bad-band list", path)

    kept = cube if good.all() else cube[:, :, good]
    ok = np.isfinite(kept).all(axis=2)
    if no_data_value is not None:
        if stored.dtype.kind in "iu":  # compared as stored: float32 merges large integers
            ok &= ~((stored if good.all() else stored[:, :, good]) == no_data_value).any(axis=2)
        else:
            ok &= ~(kept == np.float32(no_data_value)).any(axis=2)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (rows, cols):
            raise SceneError(f"validity mask shape {valid.shape} does not match cube {(rows, cols)}", path)
        ok &= valid.astype(bool)
    if not ok.any():
        raise SceneError("no valid pixel (all pixels are NaN/Inf, no-data or masked)", path)

    gt_mask = None
    if gt is not None:
        gt = np.asarray(gt)
        if gt.shape != (rows, cols):
            raise SceneError(f"ground-truth shape {gt.shape} does not match cube {(rows, cols)}", path)
        if gt.dtype.kind not in "biuf" or (gt.dtype.kind == "f" and not np.isfinite(gt).all()):
            raise SceneError(f"the ground truth ({gt.dtype}) holds values that are not finite numbers", path)
        gt_mask = gt != 0

    def _vector(values: np.ndarray | None, what: str) -> np.ndarray | None:
        if values is None:
            return None
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.shape != (bands,):
            raise SceneError(f"{what} has {arr.size} entries for {bands} bands", path)
        return arr

    return Scene(
        cube=cube,
        valid=ok,
        good_bands=good,
        name=name,
        gt=gt_mask,
        wavelengths=_vector(wavelengths, "wavelength list"),
        fwhm=_vector(fwhm, "fwhm list"),
        source=path,
        meta=dict(meta or {}),
    )
