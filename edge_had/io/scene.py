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

_VALIDITY_ROWS = 64  # rows per block when the valid mask is computed


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
    _good_cube: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def shape(self) -> tuple[int, int, int]:
        rows, cols, bands = self.cube.shape
        return rows, cols, bands

    @property
    def bands(self) -> int:
        return int(self.cube.shape[2])

    def detection_cube(self) -> np.ndarray:
        """The cube restricted to good bands, (rows, cols, good bands) float32: made once (each call
        copied the cube again, and detect and eval call it several times per scene)."""
        if bool(self.good_bands.all()):
            return self.cube
        cached = self._good_cube
        if cached is None or cached[0] is not self.cube or not np.array_equal(cached[1], self.good_bands):
            cached = (self.cube, self.good_bands.copy(), self.cube[:, :, self.good_bands])
            self._good_cube = cached
        return cached[2]

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
    stored = np.asarray(cube)  # its own dtype: an integer no-data value is compared exactly
    good = check_cube(stored, good_bands, path)
    rows, cols, bands = stored.shape
    cube = np.ascontiguousarray(stored, dtype=np.float32)

    kept = cube if good.all() else cube[:, :, good]
    ok = np.empty((rows, cols), dtype=bool)
    for start in range(0, rows, _VALIDITY_ROWS):  # in row blocks: no cube-sized boolean temporaries
        block = slice(start, start + _VALIDITY_ROWS)
        ok[block] = valid_pixels(stored[block], kept[block], good, no_data_value)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (rows, cols):
            raise SceneError(f"validity mask shape {valid.shape} does not match cube {(rows, cols)}", path)
        ok &= valid.astype(bool)
    if not ok.any():
        raise no_valid_pixel_error(stored, good, no_data_value, path)

    gt_mask = None
    if gt is not None:
        gt = np.asarray(gt)
        if gt.shape != (rows, cols):
            raise SceneError(f"ground-truth shape {gt.shape} does not match cube {(rows, cols)}", path)
        if gt.dtype.kind not in "biuf" or (gt.dtype.kind == "f" and not np.isfinite(gt).all()):
            raise SceneError(f"the ground truth ({gt.dtype}) holds values that are not finite numbers", path)
        gt_mask = gt != 0

    return Scene(
        cube=cube,
        valid=ok,
        good_bands=good,
        name=name,
        gt=gt_mask,
        wavelengths=band_vector(wavelengths, bands, "wavelength list", path),
        fwhm=band_vector(fwhm, bands, "fwhm list", path),
        source=path,
        meta=dict(meta or {}),
        _good_cube=None if good.all() else (cube, good.copy(), kept),
    )


def check_cube(cube: np.ndarray, good_bands: np.ndarray | None, path: Path | None) -> np.ndarray:
    """The good-band mask of a cube (rows, cols, bands) as stored (all True when ``good_bands`` is
    None), after checking what its shape and dtype alone tell: :class:`SceneError` naming ``path``
    for values that are not real numbers, not 3-D, no pixel, fewer than 2 bands, a bad-band list
    of another length or leaving fewer than 2 good bands. Reads no pixel (a memory map stays unread)."""
    if cube.dtype.kind not in "biuf":  # strings, objects; complex values would lose their imaginary part
        raise SceneError(f"the cube holds {cube.dtype} values, not real numbers", path)
    if cube.ndim != 3:
        raise SceneError(f"expected a 3-D cube (rows, cols, bands), got shape {cube.shape}", path)
    rows, cols, bands = cube.shape
    if rows < 1 or cols < 1:
        raise SceneError(f"cube has no pixels (shape {cube.shape})", path)
    if bands < 2:
        raise SceneError(f"cube has {bands} band(s); detection needs at least 2", path)
    if good_bands is None:
        return np.ones(bands, dtype=bool)
    good = np.asarray(good_bands).astype(bool).ravel()
    if good.shape != (bands,):
        raise SceneError(f"bad-band list has {good.size} entries for {bands} bands", path)
    if int(good.sum()) < 2:
        raise SceneError(f"only {int(good.sum())} good band(s) after the bad-band list", path)
    return good


def valid_pixels(
    stored: np.ndarray, values: np.ndarray, good: np.ndarray, no_data_value: float | None
) -> np.ndarray:
    """Which pixels are usable (``Scene.valid``): ``stored`` holds pixels (..., bands) as the file
    stores them, ``values`` the same pixels' good bands in float32. A pixel is invalid when a good
    band is NaN/Inf (in float32: a float64 beyond its range too) or equals the no-data value, which
    an integer file is compared with as stored (float32 merges large integers)."""
    if stored.dtype.kind == "f":
        ok = np.isfinite(values).all(axis=-1)
    else:  # integers and booleans are finite in float32 too
        ok = np.ones(values.shape[:-1], dtype=bool)
    if no_data_value is not None:
        if stored.dtype.kind in "iu":
            samples = stored if good.all() else stored[..., good]
            ok &= ~(samples == no_data_value).any(axis=-1)
        else:
            ok &= ~(values == np.float32(no_data_value)).any(axis=-1)
    return ok


def invalid_as_nan(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` (..., bands), float, with each pixel that is not ``valid`` (:func:`valid_pixels`,
    ``Scene.valid``) set to NaN throughout, in place: how a line of a scene is streamed (the
    stream masks such pixels). Returns ``values``."""
    values[~valid] = np.nan
    return values


def band_vector(values: np.ndarray | None, bands: int, what: str, path: Path | None) -> np.ndarray | None:
    """One float64 value per band (wavelengths, fwhm), or None; :class:`SceneError` for another length."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (bands,):
        raise SceneError(f"{what} has {arr.size} entries for {bands} bands", path)
    return arr


def no_valid_pixel_error(
    stored: np.ndarray, good: np.ndarray, no_data_value: float | None, path: Path | None
) -> SceneError:
    """The error for a cube (rows, cols, bands, as stored) with no valid pixel, naming the good
    bands that are NaN/Inf or no-data on every pixel (a pass over the cube in row blocks: a memory
    map is read once, in bounded memory)."""
    hint = _dead_bands(stored, good, no_data_value)
    return SceneError(f"no valid pixel (all pixels are NaN/Inf, no-data or masked){hint}", path)


def _dead_bands(stored: np.ndarray, good: np.ndarray, no_data_value: float | None) -> str:
    """A hint naming the good bands that are NaN/Inf or no-data on every pixel: one such band
    invalidates every pixel, and marking it bad (ENVI ``bbl``) keeps the rest of the scene."""
    bands = np.flatnonzero(good)
    dead = np.ones(bands.size, dtype=bool)
    for start in range(0, stored.shape[0], _VALIDITY_ROWS):  # row blocks: bounded temporaries
        values = stored[start : start + _VALIDITY_ROWS][..., bands]
        unusable = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
        if no_data_value is not None:
            unusable |= values == (no_data_value if values.dtype.kind in "iu" else np.float32(no_data_value))
        dead &= unusable.all(axis=(0, 1))
        if not dead.any():
            break
    if not dead.any():
        return ""
    listed = ", ".join(map(str, bands[dead][:10])) + (" ..." if dead.sum() > 10 else "")
    return (
        f"; {int(dead.sum())} band(s) are NaN/Inf or no-data on every pixel (0-based: {listed}): "
        "mark them bad (ENVI 'bbl') to keep the other bands"
    )
