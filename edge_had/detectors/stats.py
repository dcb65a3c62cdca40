"""Gaussian background statistics: mean, covariance, and a whitening factor (SPy-like).

Covariance divides by N (the convention of the published RX numbers). ``regularization`` adds
``eps * trace(cov) / B`` to the diagonal. The whitener ``W`` (k x B) satisfies
``W.T @ W = inv(cov)`` when cov is positive definite (``W = inv(L)`` from the Cholesky factor
``cov = L L^T``) and ``= pinv(cov)`` otherwise (eigenvalues below ``rcond * max`` are dropped), so
``RX(x) = ||W (x - mean)||^2`` in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

PINV_RCOND = 1e-10


@dataclass(frozen=True)
class GaussianStats:
    mean: np.ndarray
    cov: np.ndarray
    nsamples: int
    regularization: float = 0.0

    @property
    def nbands(self) -> int:
        return int(self.mean.shape[0])

    @cached_property
    def regularized_cov(self) -> np.ndarray:
        cov = np.asarray(self.cov, dtype=np.float64)
        if self.regularization <= 0.0:
            return cov
        load = self.regularization * float(np.trace(cov)) / self.nbands
        return cov + load * np.eye(self.nbands)

    @cached_property
    def is_singular(self) -> bool:
        try:
            np.linalg.cholesky(self.regularized_cov)
        except np.linalg.LinAlgError:
            return True
        return False

    @cached_property
    def inv_cov(self) -> np.ndarray:
        """Inverse of the (regularised) covariance; pseudo-inverse when it is singular."""
        if self.is_singular:
            return np.linalg.pinv(self.regularized_cov, rcond=PINV_RCOND, hermitian=True)
        return np.linalg.inv(self.regularized_cov)

    @cached_property
    def whitener(self) -> np.ndarray:
        """W (k x B, float64) with W.T @ W = inv_cov; k = B unless the covariance is singular."""
        cov = self.regularized_cov
        if not self.is_singular:
            lower = np.linalg.cholesky(cov)
            return np.linalg.solve(lower, np.eye(self.nbands))
        values, vectors = np.linalg.eigh(cov)
        keep = values > PINV_RCOND * max(float(values[-1]), 0.0)
        return (vectors[:, keep] / np.sqrt(values[keep])).T


def pixels_of(cube: np.ndarray) -> np.ndarray:
    """(rows, cols, bands) or (n, bands) -> a (n, bands) view."""
    cube = np.asarray(cube)
    if cube.ndim not in (2, 3):
        raise ValueError(f"expected (rows, cols, bands) or (pixels, bands), got shape {cube.shape}")
    return cube.reshape(-1, cube.shape[-1])


def calc_stats(
    cube: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    regularization: float = 0.0,
    dtype: type[np.floating] = np.float64,
) -> GaussianStats:
    """Mean and covariance (divide by N) of the pixels selected by ``mask`` (all if None).

    ``dtype`` is the arithmetic of the covariance product. Keep float64: real covariances have
    condition numbers around 1e9 (ABU beach-1: 8e8), beyond what a float32 product resolves (its
    Cholesky factorisation fails there).
    """
    pixels = pixels_of(cube)
    if mask is not None:
        pixels = pixels[np.asarray(mask, dtype=bool).ravel()]
    nsamples = pixels.shape[0]
    if nsamples < 2:
        raise ValueError(f"background statistics need at least 2 pixels, got {nsamples}")
    mean = pixels.mean(axis=0, dtype=np.float64)
    centered = pixels.astype(dtype, copy=True)
    centered -= mean.astype(dtype)
    cov = (centered.T @ centered).astype(np.float64) / nsamples
    return GaussianStats(mean=mean, cov=cov, nsamples=nsamples, regularization=regularization)
