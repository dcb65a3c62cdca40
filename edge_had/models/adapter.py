"""Spectral adapter: any sensor's B bands -> the model's K canonical bands.

One trained model has to serve sensors with 100-450 bands (and the real scenes' 188-207), so the
model works on a fixed set of ``K`` canonical bands (default 64) and every sensor is resampled to
them by a **fixed linear map**: a ``(K, B)`` matrix ``M`` built once in numpy (float64) when the
adapter is constructed and applied per pixel, ``x_k = M @ x_b``. In the module it runs as a
gather of each canonical band's few non-zero sensor bands (:class:`SpectralAdapter`; ONNX: a
Gather with constant indices, Mul, ReduceSum - no data-dependent indexing), or, for rows with
more than :data:`MAX_GATHER_TAPS` taps, as a 1 x 1 convolution with the static matrix.

How the matrix is built (the choice, and why):

* **Wavelengths known** (:meth:`SpectralAdapter.from_wavelengths`): canonical wavelengths are
  ``K`` evenly spaced points on ``[lo, hi]`` (default 400-2500 nm, the VNIR-SWIR range of AVIRIS
  class sensors); every canonical band is the linear interpolation, in wavelength, of the two
  sensor bands around it. Canonical wavelengths outside the sensor's range take the nearest sensor
  band (clamp, as :func:`numpy.interp`), so such rows are copies of the first or last band: for a
  VNIR-only or SWIR-only sensor pass ``lo``/``hi`` inside its range, or expect duplicated bands
  (a singular covariance for RX downstream: regularise or use a pseudo-inverse). The package keeps
  the default range for such sensors, by measurement: on four synthetic 400-1000 nm, 224-band
  scenes (128 x 128, seeds 0-3) with the shipped model, the default grid (19 canonical bands
  inside the sensor's range, the rest copies of its last band) gave global RX on the resampled
  cube 0.9450 and ``enhanced-rx`` 0.9825 mean AUC, a grid on the sensor's own 400-1000 nm 0.9321
  and 0.9710 (hybrid RX 0.9895 vs 0.9905). A sensor whose bands hold *no* canonical wavelength
  (wholly outside ``[lo, hi]``, e.g. thermal infrared) is an error: every canonical band would copy
  one sensor band. Sensor bands may
  come in any order; bands at identical wavelengths are averaged; bands flagged invalid (water
  absorption, dead) get zero weight and are interpolated across.
* **Wavelengths unknown** (:meth:`SpectralAdapter.from_band_count`): the same interpolation on the
  normalised band index ``b / (B - 1)`` against ``k / (K - 1)``, i.e. both band sets are assumed to
  span the same range evenly. This is what the measured leads in docs/METHOD.md used (band-index
  resampling raised plain global RX on unseen scenes).

Properties that hold for both (and are tested): every row sums to 1, so a constant spectrum stays
constant; a spectrum linear in wavelength (or in band index) is reproduced exactly at canonical
points inside the sensor's range; weights are non-negative (a convex combination).

Linear interpolation takes only the two nearest bands, so when ``K`` is much smaller than ``B`` it
ignores (aliases) the bands in between and does not average their noise. ``kernel="triangle"``
is the anti-aliased alternative: a local linear regression with a triangular window of half-width
``max(canonical spacing, 1.5 x the bracketing sensor gap)``. It still reproduces linear spectra
exactly and keeps rows summing to 1, but its weights can be slightly negative near the ends of the
sensor's range. At run time the adapter gathers each canonical band's non-zero taps
(:func:`sparse_taps`): 2 per band with the linear kernel (2K multiply-adds per pixel, whatever B),
more with the triangle kernel's wider rows. Applied as the dense ``K x B`` product it cost 14 336
multiply-adds per pixel at 224 bands and 28 800 at 450.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_had.band_resampling import (  # re-exported: the adapter's public names
    CANONICAL_RANGE_NM,
    DEFAULT_K,
    MAX_GATHER_TAPS,
    Kernel,
    band_index_matrix,
    canonical_wavelengths,
    sparse_taps,
    wavelength_matrix,
)

__all__ = [
    "CANONICAL_RANGE_NM",
    "DEFAULT_K",
    "MAX_GATHER_TAPS",
    "Kernel",
    "SpectralAdapter",
    "canonical_wavelengths",
    "sparse_taps",
]


class SpectralAdapter(nn.Module):
    """Fixed ``(K, B)`` band resampler: ``N x B x H x W`` -> ``N x K x H x W``.

    Build it with :meth:`from_wavelengths` or :meth:`from_band_count`; the float64 matrix stays
    available as :attr:`matrix` (numpy) for numpy code, e.g. ``cube @ adapter.matrix.T`` on a
    ``(rows, cols, bands)`` cube gives the same resampled cube that the model sees. It runs as a
    gather of each canonical band's few sensor bands (:func:`sparse_taps`: 2 with the linear
    kernel), weighted and summed: ~2 x 2K operations per pixel instead of the dense matrix's K x B
    (28 800 at 450 bands, which alone took more than half the 50 000 budget as the stream runs it).
    In ONNX it is a Gather with constant indices, a Mul and a ReduceSum (no data-dependent
    indexing); it stays FP32 in reduced-precision graphs.
    """

    weight: torch.Tensor
    taps: torch.Tensor
    tap_weights: torch.Tensor

    def __init__(
        self, matrix: np.ndarray, *, canonical: np.ndarray | None = None, mode: str = "custom"
    ) -> None:
        super().__init__()
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"resampling matrix must be 2-D (K, B), got shape {matrix.shape}")
        self.matrix = matrix
        self.k, self.bands = matrix.shape
        self.mode = mode
        self.canonical = None if canonical is None else np.asarray(canonical, dtype=np.float64)
        self.register_buffer("weight", torch.from_numpy(matrix.astype(np.float32))[:, :, None, None])
        columns, weights = sparse_taps(matrix)
        # a few taps per band (linear: 2) run as a gather; wider rows (the triangle kernel's 8-15)
        # as the dense 1 x 1 convolution, whose work does not grow a (N, K n, H, W) intermediate
        self.gather = weights.shape[1] <= MAX_GATHER_TAPS
        self.register_buffer("taps", torch.from_numpy(columns.reshape(-1)), persistent=False)
        self.register_buffer("tap_weights", torch.from_numpy(weights.astype(np.float32))[:, :, None, None],
                             persistent=False)  # fmt: skip

    @classmethod
    def from_wavelengths(
        cls, wavelengths: Sequence[float] | np.ndarray, k: int = DEFAULT_K, **options: Any
    ) -> SpectralAdapter:
        """Interpolate in wavelength (nm) onto ``k`` canonical bands evenly spaced on ``[lo, hi]``
        (``options``: ``lo``, ``hi``, ``valid``, ``kernel`` of :func:`wavelength_matrix`)."""
        matrix, grid = wavelength_matrix(wavelengths, k, **options)
        return cls(matrix, canonical=grid, mode="wavelength")

    @classmethod
    def for_sensor(
        cls, bands: int, wavelengths: Sequence[float] | np.ndarray | None = None, k: int = DEFAULT_K
    ) -> SpectralAdapter:
        """The adapter the package uses for a sensor (training, detection, export and streaming
        alike): in wavelength when the sensor's ``bands`` wavelengths (nm) are known, on band index
        otherwise."""
        if wavelengths is None:
            return cls.from_band_count(bands, k)
        wl = np.asarray(wavelengths, dtype=np.float64).ravel()
        if wl.size != bands:
            raise ValueError(f"{wl.size} wavelengths for {bands} bands")
        return cls.from_wavelengths(wl, k)

    @classmethod
    def from_band_count(
        cls, b: int, k: int = DEFAULT_K, *, valid: np.ndarray | None = None, kernel: Kernel = "linear"
    ) -> SpectralAdapter:
        """Interpolate on the normalised band index: sensor ``b/(B-1)`` against canonical ``k/(K-1)``."""
        matrix, grid = band_index_matrix(b, k, valid=valid, kernel=kernel)
        return cls(matrix, canonical=grid, mode="band_index")

    def forward(self, cube: torch.Tensor) -> torch.Tensor:
        if not self.gather:
            return F.conv2d(cube, self.weight)
        batch, _, lines, pixels = cube.shape
        picked = cube.index_select(1, self.taps)  # (N, K n, H, W): each canonical band's taps
        picked = picked.reshape(batch, self.k, self.tap_weights.shape[1], lines, pixels)
        return (picked * self.tap_weights).sum(dim=2)

    def extra_repr(self) -> str:
        return f"bands={self.bands}, k={self.k}, mode={self.mode}"
