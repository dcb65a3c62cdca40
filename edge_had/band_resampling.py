"""The band resampling matrices (numpy only: no torch), as the spectral adapter and plain RX's
band reduction use them: a ``(K, B)`` matrix from a sensor's B bands to K canonical bands, by
wavelength (:func:`wavelength_matrix`) or by band index (:func:`band_index_matrix`). How they are
built, and why, is in :mod:`edge_had.models.adapter`; this module holds the arithmetic so that
plain and hybrid RX streams run where torch is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

Kernel = Literal["linear", "triangle"]
KERNELS: tuple[Kernel, ...] = get_args(Kernel)  # "linear" is the default everywhere

DEFAULT_K = 64
MAX_GATHER_TAPS = 4  # sensor bands per canonical band up to which the adapter gathers them
CANONICAL_RANGE_NM = (400.0, 2500.0)
#: Sensor bands outside the canonical range get no weight; more than this share of them is refused
#: (a 400-5000 nm sensor lost its 2500-5000 nm targets in silence: AUC 0.99 -> 0.52)
MAX_OUTSIDE_FRACTION = 0.25
#: How a sensor's bands are resampled to the canonical ones: on the file's wavelengths when it
#: records them (on band index when it does not), or on band index whatever the file records
#: (band centres known to be wrong, a sensor outside the canonical range).
RESAMPLE_CHOICES = ("wavelength", "band-index")


class WavelengthRangeError(ValueError):
    """Band centres :func:`wavelength_matrix` cannot resample (ranges, units): ``problem`` says
    what is wrong, the message adds the fix; ``micrometres``: they look like micrometres, so the
    fix is the unit the file gives them (:func:`edge_had.io.units.naming_the_file` says so where
    the file is known)."""

    def __init__(self, problem: str, fix: str, *, micrometres: bool = False) -> None:
        super().__init__(f"{problem}{fix}")
        self.problem = problem
        self.micrometres = micrometres


def wavelengths_to_use(resample: str, wavelengths: np.ndarray | None) -> np.ndarray | None:
    """The band centres a resampling step gets under ``resample`` (:data:`RESAMPLE_CHOICES`):
    the file's (None when it has none) for ``wavelength``, None (band index) for ``band-index``."""
    if resample not in RESAMPLE_CHOICES:
        raise ValueError(f"unknown resampling {resample!r}; choose one of {RESAMPLE_CHOICES}")
    return None if resample == "band-index" else wavelengths


def canonical_wavelengths(
    k: int = DEFAULT_K, lo: float = CANONICAL_RANGE_NM[0], hi: float = CANONICAL_RANGE_NM[1]
) -> np.ndarray:
    """``k`` evenly spaced canonical wavelengths on ``[lo, hi]`` (float64)."""
    if k < 2:
        raise ValueError(f"need at least 2 canonical bands, got k={k}")
    if not hi > lo:
        raise ValueError(f"canonical range must have hi > lo, got [{lo}, {hi}]")
    return np.linspace(lo, hi, k)


def _interp_rows(grid: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(len(grid), len(positions)) linear-interpolation matrix; positions strictly increasing.

    Row ``i`` holds the weights of ``np.interp(grid[i], positions, y)`` over ``y`` (clamped at
    both ends), built column by column from unit vectors.
    """
    eye = np.eye(len(positions))
    return np.stack([np.interp(grid, positions, eye[j]) for j in range(len(positions))], axis=1)


def _local_linear_rows(grid: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Triangle-window local linear regression weights (see the module docstring)."""
    n = len(positions)
    out = np.zeros((len(grid), n))
    spacing = (grid[-1] - grid[0]) / max(len(grid) - 1, 1)
    for i, g in enumerate(grid):
        if g <= positions[0] or g >= positions[-1] or n == 1:
            out[i, 0 if g <= positions[0] else n - 1] = 1.0
            continue
        right = int(np.searchsorted(positions, g, side="right"))
        gap = positions[right] - positions[right - 1]
        half = max(spacing, 1.5 * gap)
        d = positions - g
        w = np.clip(1.0 - np.abs(d) / half, 0.0, None)
        # weighted least squares for a + b*d; the estimate at g is a = e0^T (X^T W X)^-1 X^T W y
        s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
        det = s0 * s2 - s1 * s1
        out[i] = w * (s2 - s1 * d) / det
    return out


def _sensor_matrix(
    grid: np.ndarray, positions: np.ndarray, valid: np.ndarray | None, kernel: Kernel
) -> np.ndarray:
    """(K, B) resampling matrix from sensor band positions (any order, duplicates averaged)."""
    positions = np.asarray(positions, dtype=np.float64).ravel()
    n_bands = positions.size
    if not np.all(np.isfinite(positions)):
        raise ValueError("band positions (wavelengths) must be finite")
    keep = np.ones(n_bands, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).ravel()
    if keep.shape != (n_bands,):
        raise ValueError(f"valid mask has {keep.size} entries for {n_bands} bands")
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 valid bands, got {int(keep.sum())}")
    columns = np.flatnonzero(keep)
    unique, inverse = np.unique(positions[columns], return_inverse=True)
    if unique.size < 2:
        raise ValueError("need at least 2 distinct band positions")
    # (U, B): average of the bands sharing one position
    merge = np.zeros((unique.size, n_bands))
    merge[inverse, columns] = 1.0
    merge /= merge.sum(axis=1, keepdims=True)
    if kernel == "linear":
        rows = _interp_rows(grid, unique)
    elif kernel == "triangle":
        rows = _local_linear_rows(grid, unique)
    else:
        raise ValueError(f"unknown kernel {kernel!r}; use 'linear' or 'triangle'")
    return rows @ merge


def sparse_taps(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, weights)``, both ``(rows, n)`` with ``n`` the most non-zeros of any row: row
    ``r`` of ``matrix @ x`` is ``sum_t weights[r, t] * x[columns[r, t]]`` (short rows padded with
    column 0 at weight 0). Linear interpolation has n = 2."""
    matrix = np.asarray(matrix)
    n = max(int((matrix != 0).sum(axis=1).max()), 1)
    columns = np.zeros((matrix.shape[0], n), dtype=np.int64)
    weights = np.zeros((matrix.shape[0], n), dtype=matrix.dtype)
    for row, values in enumerate(matrix):
        nonzero = np.flatnonzero(values)
        columns[row, : nonzero.size], weights[row, : nonzero.size] = nonzero, values[nonzero]
    return columns, weights


def wavelength_matrix(
    wavelengths: Sequence[float] | np.ndarray,
    k: int = DEFAULT_K,
    *,
    lo: float = CANONICAL_RANGE_NM[0],
    hi: float = CANONICAL_RANGE_NM[1],
    valid: np.ndarray | None = None,
    kernel: Kernel = "linear",
) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, canonical wavelengths)``: interpolation in wavelength (nm) onto ``k`` canonical
    bands evenly spaced on ``[lo, hi]``."""
    wl = np.asarray(wavelengths, dtype=np.float64).ravel()
    if wl.size and np.nanmax(wl) < 100.0:
        raise WavelengthRangeError(
            f"wavelengths look like micrometres (max {np.nanmax(wl):g})",
            "; pass nanometres (x 1000)",
            micrometres=True,
        )
    grid = canonical_wavelengths(k, lo, hi)
    matrix = _sensor_matrix(grid, wl, valid, kernel)  # checks the wavelengths and the mask
    used = wl if valid is None else wl[np.asarray(valid, dtype=bool).ravel()]
    if not ((grid >= used.min()) & (grid <= used.max())).any():
        raise WavelengthRangeError(
            f"the sensor's bands span {used.min():g}-{used.max():g} nm, which holds none of the "
            f"{k} canonical wavelengths on [{lo:g}, {hi:g}] nm: every canonical band would copy "
            "one sensor band",
            ". Use a plain detector (rx, hybrid-rx: every band as it is), or resample on band index "
            "(--resample band-index)",
        )
    outside = int(((used < lo) | (used > hi)).sum())  # up to the fraction: ignored_bands_note
    if outside > MAX_OUTSIDE_FRACTION * used.size:
        raise WavelengthRangeError(
            f"{outside} of the sensor's {used.size} bands lie outside the model's {lo:g}-{hi:g} nm, "
            "where the resampling gives them little or no weight (targets seen only there would be lost)",
            ". Use a plain detector (rx, hybrid-rx: every band as it is), or resample on band index "
            "(--resample band-index)",
        )
    return matrix, grid


def ignored_bands_note(
    wavelengths: Sequence[float] | np.ndarray | None,
    k: int = DEFAULT_K,
    *,
    lo: float = CANONICAL_RANGE_NM[0],
    hi: float = CANONICAL_RANGE_NM[1],
) -> str | None:
    """A note naming the sensor bands (``wavelengths`` in nm: those resampled on, onto ``k``
    canonical bands) that :func:`wavelength_matrix` gives no weight - bands outside ``[lo, hi]``
    beyond the nearest one on each side, which the edge canonical band interpolates from; up to
    :data:`MAX_OUTSIDE_FRACTION` of them lie outside, more are refused - how many and where; None
    when every band carries weight, the resampling is on band index (``wavelengths`` None) or it
    cannot take these band centres (its own error says so where it is built)."""
    if wavelengths is None:
        return None
    wl = np.asarray(wavelengths, dtype=np.float64).ravel()
    try:
        matrix, _ = wavelength_matrix(wl, k, lo=lo, hi=hi)
    except WavelengthRangeError:
        return None
    weightless = (matrix == 0).all(axis=0)
    sides = [side for side in (weightless & (wl < lo), weightless & (wl > hi)) if side.any()]
    if not sides:
        return None
    spans = [(int(side.sum()), f"{wl[side].min():.1f}", f"{wl[side].max():.1f}") for side in sides]
    where = ", ".join(f"{n} at {low if n == 1 else f'{low}-{high}'} nm" for n, low, high in spans)
    return (
        f"{int(sum(side.sum() for side in sides))} of the sensor's {wl.size} bands lie outside the "
        f"model's {lo:g}-{hi:g} nm and get no weight ({where}): targets seen only there are missed. To "
        "use them, resample on band index (--resample band-index) or use a plain detector (rx, hybrid-rx)"
    )


def band_index_matrix(
    b: int, k: int = DEFAULT_K, *, valid: np.ndarray | None = None, kernel: Kernel = "linear"
) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, canonical positions)``: interpolation on the normalised band index, sensor
    ``b/(B-1)`` against canonical ``k/(K-1)``."""
    if b < 2:
        raise ValueError(f"need at least 2 sensor bands, got b={b}")
    grid = canonical_wavelengths(k, 0.0, 1.0)
    positions = np.arange(b, dtype=np.float64) / (b - 1)
    return _sensor_matrix(grid, positions, valid, kernel), grid


def sensor_to_sensor_matrix(
    from_bands: int,
    from_wavelengths: np.ndarray | None,
    to_bands: int,
    to_wavelengths: np.ndarray | None,
) -> np.ndarray:
    """``(to_bands, from_bands)`` linear interpolation of one sensor's bands onto another's: on
    wavelengths when both record them (target bands beyond the source's range repeat its edge
    band), else on the normalised band index. Used to show a scene to a graph made for another
    sensor (the accuracy gate of ``edge-had export``)."""
    if from_wavelengths is None or to_wavelengths is None:
        return band_index_matrix(from_bands, to_bands)[0]
    grid = np.asarray(to_wavelengths, dtype=np.float64).ravel()
    positions = np.asarray(from_wavelengths, dtype=np.float64).ravel()
    if grid.size != to_bands or positions.size != from_bands:
        raise ValueError(f"{grid.size} / {positions.size} band centres for {to_bands} / {from_bands} bands")
    return _sensor_matrix(grid, positions, None, "linear")
