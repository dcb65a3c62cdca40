"""Global RX (Reed-Xiaoli): squared Mahalanobis distance of each pixel from the background.

Two implementations with one definition:

* :func:`rx_reference` - float64 numpy, ``(x - mu)^T S^-1 (x - mu)`` with an explicit inverse.
  It is the oracle every other implementation (float32, torch, CUDA, streaming) is tested against.
* :func:`rx` / :class:`RX` - the fast path: float64 statistics (one ``X^T X`` product), a
  Cholesky whitener, then float32 scoring (one GEMM and a row norm); no per-pixel Python loop.

Cubes are (rows, cols, bands); pixels where ``mask`` is False are left out of the statistics and
scored NaN.
"""

from __future__ import annotations

import numpy as np

from edge_had.detectors.stats import GaussianStats, calc_stats, pixels_of


def _pixel_mask(cube: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != cube.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} does not match cube pixels {cube.shape[:-1]}")
    return mask


def _scores_to_map(scores: np.ndarray, cube: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    scores = scores.reshape(cube.shape[:-1])
    if mask is not None:
        scores[~mask] = np.nan
    return scores


def rx_reference(
    cube: np.ndarray,
    background: GaussianStats | None = None,
    mask: np.ndarray | None = None,
    *,
    regularization: float = 0.0,
) -> np.ndarray:
    """Float64 oracle: statistics over the masked pixels, explicit (pseudo-)inverse."""
    mask = _pixel_mask(cube, mask)
    if background is None:
        background = calc_stats(cube, mask, regularization=regularization, dtype=np.float64)
    centered = pixels_of(cube).astype(np.float64) - background.mean
    scores = np.sum((centered @ background.inv_cov) * centered, axis=1)
    return _scores_to_map(scores, cube, mask)


class RX:
    """Fast global RX, SPy-like: ``RX(background)(cube)``; statistics from the cube when None.

    Statistics are float64 (see :func:`calc_stats`); scoring is float32: one GEMM with the
    whitener and a row norm. Measured on the ten ABU scenes: max |score - oracle| / max(oracle)
    about 1e-6 and the same AUC to 4 decimals (tests/test_rx.py bounds it).
    """

    def __init__(self, background: GaussianStats | None = None, *, regularization: float = 0.0) -> None:
        self.background = background
        self.regularization = regularization

    def __call__(self, cube: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        mask = _pixel_mask(cube, mask)
        pixels = pixels_of(cube)
        flat_mask = None if mask is None else mask.ravel()
        background = self.background
        if background is None:
            background = calc_stats(pixels, flat_mask, regularization=self.regularization)
        whitened = whiten_float32(pixels, background)
        if flat_mask is not None:
            whitened[~flat_mask] = 0.0
        scores = np.einsum("ij,ij->i", whitened, whitened)
        return _scores_to_map(scores, cube, mask)


def whiten_float32(pixels: np.ndarray, background: GaussianStats) -> np.ndarray:
    """``W (x - mean)`` for (n, bands) pixels, as one float32 GEMM.

    Centering loses no more than the input's own precision: float64 input is centred in float64;
    integer or float32 input is centred on the float32-rounded mean, and the rounding residual's
    whitened image ``W (mean - mean32)`` is subtracted afterwards (exact in float64).
    """
    whitener = background.whitener
    if pixels.dtype == np.float64:
        centered = (pixels - background.mean).astype(np.float32)
        return centered @ whitener.T.astype(np.float32)
    mean32 = background.mean.astype(np.float32)
    centered = pixels.astype(np.float32, copy=True)
    centered -= mean32
    whitened = centered @ whitener.T.astype(np.float32)
    whitened -= (whitener @ (background.mean - mean32.astype(np.float64))).astype(np.float32)
    return whitened


def rx(
    cube: np.ndarray,
    background: GaussianStats | None = None,
    mask: np.ndarray | None = None,
    *,
    regularization: float = 0.0,
) -> np.ndarray:
    """Fast float32 global RX of a (rows, cols, bands) cube -> (rows, cols) float32 scores."""
    return RX(background, regularization=regularization)(cube, mask)
