"""Dual-window local RX (LRX), vectorised with summed-area tables.

For every pixel the background is the outer window (``outer`` x ``outer``) minus the inner guard
window (``inner`` x ``inner``), both centred on the pixel and clipped at the image border. Window
sums of x and of x x^T come from summed-area tables, so the cost does not depend on the window
size; the per-pixel K x K systems are solved in one batched call.

Defaults, and why (chosen on the synthetic scenes, not on the real ones):

* ``n_components=10``: the bands are first projected on the 10 leading principal components of
  the whole scene. A 15 x 15 outer window minus a 5 x 5 guard holds 200 pixels, fewer than the
  188-450 bands of real sensors, so a full-band local covariance would be singular; 200 samples
  for 10 dimensions is a well-posed estimate.
* ``inner=5, outer=15``: the guard keeps targets up to ~5 px wide out of their own background.
* ``regularization=1e-3``: adds ``1e-3 * trace(global cov) / K`` to every local covariance
  (global scale, so flat local windows stay invertible).
* Pixels whose window holds fewer than ``K + 1`` valid background pixels use the global
  statistics instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_had.detectors.stats import calc_stats, pixels_of


@dataclass(frozen=True)
class LocalRXSettings:
    inner: int = 5
    outer: int = 15
    n_components: int | None = 10
    regularization: float = 1e-3

    def __post_init__(self) -> None:
        if self.inner < 1 or self.inner % 2 == 0 or self.outer % 2 == 0 or self.outer <= self.inner:
            raise ValueError(f"windows must be odd with outer > inner >= 1, got {self.inner}/{self.outer}")


def principal_components(cube: np.ndarray, mask: np.ndarray | None, n_components: int) -> np.ndarray:
    """Project (rows, cols, bands) on the leading principal components -> (rows, cols, K) float64."""
    stats = calc_stats(cube, mask)
    _, vectors = np.linalg.eigh(stats.cov)
    basis = vectors[:, ::-1][:, :n_components]
    projected = (pixels_of(cube).astype(np.float64) - stats.mean) @ basis
    return projected.reshape(*cube.shape[:2], basis.shape[1])


def _box_sums(table: np.ndarray, half: int) -> np.ndarray:
    """Sums over (2*half+1)^2 windows clipped at the border, from a zero-padded summed-area table."""
    rows, cols = table.shape[0] - 1, table.shape[1] - 1
    r = np.arange(rows)
    c = np.arange(cols)
    r0, r1 = np.clip(r - half, 0, rows), np.clip(r + half + 1, 0, rows)
    c0, c1 = np.clip(c - half, 0, cols), np.clip(c + half + 1, 0, cols)
    return table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]


def _summed_area(values: np.ndarray) -> np.ndarray:
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1, *values.shape[2:]), dtype=np.float64)
    table[1:, 1:] = values.cumsum(axis=0).cumsum(axis=1)
    return table


def local_rx(
    cube: np.ndarray,
    mask: np.ndarray | None = None,
    settings: LocalRXSettings | None = None,
) -> np.ndarray:
    """Dual-window RX of a (rows, cols, bands) cube -> (rows, cols) float64 (NaN where masked)."""
    settings = settings or LocalRXSettings()
    rows, cols, bands = cube.shape
    valid = np.ones((rows, cols), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if settings.n_components is not None and settings.n_components < bands:
        data = principal_components(cube, valid, settings.n_components)
    else:
        data = cube.astype(np.float64)
    dims = data.shape[2]
    global_stats = calc_stats(data, valid)
    data = np.where(valid[..., None], data, 0.0)
    outer_products = (data[..., :, None] * data[..., None, :]).reshape(rows, cols, dims * dims)
    sums = {}
    for name, values in (("n", valid.astype(np.float64)), ("x", data), ("xx", outer_products)):
        table = _summed_area(values)
        sums[name] = _box_sums(table, settings.outer // 2) - _box_sums(table, settings.inner // 2)
    return scores_from_window_sums(
        data, valid, sums, global_stats.mean, global_stats.cov, settings.regularization
    )


def scores_from_window_sums(
    data: np.ndarray,
    valid: np.ndarray,
    sums: dict[str, np.ndarray],
    global_mean: np.ndarray,
    global_cov: np.ndarray,
    regularization: float,
) -> np.ndarray:
    """Local RX of each pixel of ``data`` (``(..., dims)``, zero where not ``valid``) from the sums
    over its dual window of the valid pixels: ``n`` (count), ``x`` and ``xx`` (outer products,
    flattened to ``dims * dims``). Windows with fewer than ``dims + 1`` pixels use the global
    statistics; every covariance gets ``regularization * trace(global_cov) / dims``. Shared by the
    offline detector and the stream's causal one (:mod:`edge_had.stream.causal_local`)."""
    dims = data.shape[-1]
    count = sums["n"]
    enough = count >= dims + 1
    safe = np.where(enough, count, 1.0)
    mean = sums["x"] / safe[..., None]
    cov = sums["xx"].reshape(*count.shape, dims, dims) / safe[..., None, None]
    cov -= mean[..., :, None] * mean[..., None, :]
    mean[~enough] = global_mean
    cov[~enough] = global_cov
    cov += regularization * float(np.trace(global_cov)) / dims * np.eye(dims)

    centered = data - mean
    try:
        solved = np.linalg.solve(cov, centered[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a flat background (e.g. constant lines): zero loading too
        solved = np.einsum("...kj,...j->...k", np.linalg.pinv(cov, hermitian=True), centered)
    scores = np.einsum("...k,...k->...", centered, solved)
    scores[~valid] = np.nan
    return scores


class LocalRX:
    """SPy-like class form: ``LocalRX(settings)(cube, mask)``."""

    def __init__(self, settings: LocalRXSettings | None = None) -> None:
        self.settings = settings or LocalRXSettings()

    def __call__(self, cube: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return local_rx(cube, mask, self.settings)
