"""Gaussian background statistics: mean, covariance, and a whitening factor (SPy-like).

Covariance divides by N (the convention of the published RX numbers) and is always computed in
float64: real covariances have condition numbers around 1e9 (ABU beach-1: 8e8), beyond what a
float32 product resolves (its Cholesky factorisation fails there). ``regularization`` adds
``eps * trace(cov) / B`` to the diagonal. The whitener ``W`` (k x B) satisfies
``W.T @ W = inv(cov)`` when cov is positive definite (``W = inv(L)`` from the Cholesky factor
``cov = L L^T``) and ``= pinv(cov)`` otherwise (eigenvalues below ``rcond * max`` are dropped), so
``RX(x) = ||W (x - mean)||^2`` in both cases. "Singular" is decided on the eigenvalues, by that
same ``rcond``: a covariance singular in exact arithmetic (a band that is an exact combination of
others) can still pass a Cholesky factorisation on rounding, and its inverse then scored up to 8x
off the pseudo-inverse, or failed (a review: 120 of 300 such cubes).
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
    def cholesky(self) -> np.ndarray | None:
        """Lower Cholesky factor of the regularised covariance; None when it is singular: its
        smallest eigenvalue at or below ``PINV_RCOND`` times its largest (or not factorisable)."""
        cov = self.regularized_cov
        values = np.linalg.eigvalsh(cov)
        if not values[0] > PINV_RCOND * max(float(values[-1]), 0.0):
            return None
        try:
            return np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return None

    @property
    def is_singular(self) -> bool:
        return self.cholesky is None

    @cached_property
    def inv_cov(self) -> np.ndarray:
        """Inverse of the (regularised) covariance; pseudo-inverse when it is singular."""
        if self.is_singular:
            return np.linalg.pinv(self.regularized_cov, rcond=PINV_RCOND, hermitian=True)
        return np.linalg.inv(self.regularized_cov)

    @cached_property
    def whitener(self) -> np.ndarray:
        """W (k x B, float64) with W.T @ W = inv_cov; k = B unless the covariance is singular."""
        if self.cholesky is not None:
            # numpy's LAPACK, not scipy's: each bundles its own OpenBLAS, and calling both in
            # one RX leaves two pools of spinning threads fighting over the cores (measured:
            # the whole RX took 2x longer, median 40 ms instead of 20 ms on a 205-band scene).
            return np.tril(np.linalg.inv(self.cholesky))
        values, vectors = np.linalg.eigh(self.regularized_cov)
        keep = values > PINV_RCOND * max(float(values[-1]), 0.0)
        return (vectors[:, keep] / np.sqrt(values[keep])).T


def pixels_of(cube: np.ndarray) -> np.ndarray:
    """(rows, cols, bands) or (n, bands) -> (n, bands)."""
    cube = np.asarray(cube)
    if cube.ndim not in (2, 3):
        raise ValueError(f"expected (rows, cols, bands) or (pixels, bands), got shape {cube.shape}")
    return cube.reshape(-1, cube.shape[-1])


def centered_float64(pixels: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """A new float64 array ``pixels - mean`` (one conversion, one in-place pass)."""
    centered = pixels.astype(np.float64, copy=True)
    centered -= mean
    return centered


#: Bytes of float64 pixels one block of :func:`pixel_blocks` holds. The statistics and the global
#: RX scores are computed a block at a time, so a large cube never has a whole float64 copy (a
#: 512 x 1024 x 224 cube is 0.94 GB in float64; whole-cube copies made ``detect`` peak at 12x an
#: int16 file). The ten ABU scenes (at most 37 MB in float64) are one block each.
BLOCK_BYTES = 64 << 20


def pixel_blocks(npixels: int, bands: int) -> list[slice]:
    """Consecutive slices over ``npixels`` pixels, each at most :data:`BLOCK_BYTES` in float64."""
    step = max(1, BLOCK_BYTES // (8 * max(bands, 1)))
    return [slice(start, min(start + step, npixels)) for start in range(0, npixels, step)]


def calc_stats(
    cube: np.ndarray, mask: np.ndarray | None = None, *, regularization: float = 0.0
) -> GaussianStats:
    """Mean and covariance (divide by N, float64) of the pixels selected by ``mask`` (all if None).

    Two passes in blocks (:func:`pixel_blocks`): the mean, then the sum of the centred blocks'
    ``X^T X`` (SYRKs). Centring on the exact mean before the products keeps the float64 sums as
    accurate as one whole-cube pass, and no float64 copy of the cube is made."""
    pixels = pixels_of(cube)
    flat_mask = None if mask is None else np.asarray(mask, dtype=bool).ravel()
    blocks = pixel_blocks(len(pixels), pixels.shape[1])

    def selected(block: slice) -> np.ndarray:
        return pixels[block] if flat_mask is None else pixels[block][flat_mask[block]]

    nsamples = len(pixels) if flat_mask is None else int(np.count_nonzero(flat_mask))
    if nsamples < 2:
        raise ValueError(f"background statistics need at least 2 pixels, got {nsamples}")
    total = np.zeros(pixels.shape[1])
    for block in blocks:
        total += selected(block).sum(axis=0, dtype=np.float64)
    mean = total / nsamples
    cov = np.zeros((pixels.shape[1], pixels.shape[1]))
    for block in blocks:
        centered = centered_float64(selected(block), mean)
        cov += centered.T @ centered  # a SYRK; float64 (see the module docstring)
    cov /= nsamples
    return GaussianStats(mean=mean, cov=cov, nsamples=nsamples, regularization=regularization)


# ------------------------------------------------------------------- robust spread, far outliers

#: The 1-99 % percentile range of a normal distribution, in standard deviations.
NORMAL_PERCENTILE_RANGE = 4.65
#: No band's deviation is taken below this fraction of their root-mean-square (a band constant in
#: the data would otherwise put every other value of it beyond any gate).
DEVIATION_FLOOR = 0.01
#: Robust deviations from the median beyond which a pixel is taken for a corrupt sample offline:
#: far past any real target (the ten ABU scenes, native bands: at most 175, abu-urban-4's).
FAR_OUTLIER_SIGMA = 1000.0


def floored(deviation: np.ndarray) -> np.ndarray:
    """Per-band deviations, none below :data:`DEVIATION_FLOOR` of their root-mean-square."""
    return np.maximum(deviation, DEVIATION_FLOOR * np.sqrt(np.mean(deviation**2)))


#: Pixels :func:`robust_spread` reads at most (a seeded random subset, not a stride: a stride that
#: divides the line width reads some columns only - a review's two-tap sensor lost its odd ones):
#: percentiles of 10 240 x 32 values took 4.7 ms, of 4096 x 32 about 2 ms; 41 pixels still lie
#: beyond each of the 1 % tails.
SPREAD_SAMPLES = 4096


def robust_spread(pixels: np.ndarray, samples: int = SPREAD_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Per band of finite ``(n, bands)`` pixels: the median, and the 1-99 % percentile range as
    a normal's standard deviation (``range / 4.65``, :func:`floored`), from at most ``samples``
    of them. Outliers under 1 % of the pixels move neither, where one
    corrupt sample dominates a mean and a standard deviation - given some hundred pixels: the
    percentiles of fewer interpolate into their extremes (under ~100, one outlier gets in)."""
    if len(pixels) > samples:
        pixels = pixels[np.random.default_rng(0).integers(0, len(pixels), samples)]
    low, median, high = np.percentile(pixels, [1.0, 50.0, 99.0], axis=0)
    return median, floored((high - low) / NORMAL_PERCENTILE_RANGE)


def within(pixels: np.ndarray, centre: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Which ``(n, bands)`` pixels are within ``half_width`` of ``centre`` in every band (a
    non-finite value never is)."""
    return (np.abs(pixels - centre) <= half_width).all(axis=1)


def far_outliers(
    cube: np.ndarray, valid: np.ndarray | None = None, sigma: float = FAR_OUTLIER_SIGMA
) -> np.ndarray:
    """``(rows, cols)``: the valid pixels more than ``sigma`` robust deviations
    (:func:`robust_spread` of the valid pixels) from the median in some band - corrupt samples of
    finite value (a ``1e12`` in counts of 0-1600), which dominate any whole-scene covariance."""
    rows, cols, bands = np.shape(cube)
    pixels = pixels_of(cube)
    keep = np.ones(rows * cols, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).ravel()
    for block in pixel_blocks(len(pixels), bands):  # no cube-sized temporaries
        keep[block] &= np.isfinite(pixels[block]).all(axis=1)
    far = np.zeros(rows * cols, dtype=bool)
    kept = np.flatnonzero(keep)
    if kept.size >= 2:
        if kept.size > SPREAD_SAMPLES:  # the rows robust_spread would draw from pixels[keep]
            kept_sample = kept[np.random.default_rng(0).integers(0, kept.size, SPREAD_SAMPLES)]
        else:
            kept_sample = kept
        centre, deviation = robust_spread(pixels[kept_sample].astype(np.float64))
        for block in pixel_blocks(kept.size, bands):
            rows_here = kept[block]
            far[rows_here] = ~within(pixels[rows_here], centre, sigma * deviation)
    return far.reshape(rows, cols)
