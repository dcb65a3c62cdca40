"""Causal RX's per-line arithmetic on the GPU: :class:`~edge_had.stream.causal.LineMath` over the
CUDA kernels of :class:`edge_had.cuda.rx_kernels.CudaRX` (``stream --rx-device cuda``), and
:class:`CudaLocalMath`, hybrid RX's local part on the local-RX kernels (at the end).

Per line: the valid pixels go up once for the covariance kernel (FP64 sums of ``x - shift``; the
sums come back, ``K x K`` float64, and the statistics stay on the CPU as with numpy, so all three
statistics variants work), and the whole line goes up once for the fused scoring kernel (FP32),
whose whitener and mean are uploaded only when a refresh changed them. Pixels are sent as float32:
the stream's lines are float32 data (plain: the band reduction runs in float32; enhanced: the
network's float32 output), so nothing is rounded on the way. The error of FP32 scoring is bounded
in ``rx_kernels.cu`` (measured on the ten scenes: <= 5e-5 of the largest score).

A whitener FP32 cannot hold (loading of a zero covariance, e.g. dark warm-up lines: entries
~1e153) is scored by numpy instead, for as long as that refresh lasts, so both paths give the same
scores there (the kernel would give inf * 0 = NaN). Device buffers are kept per band count and
grow geometrically (those replaced stay allocated until the ``CudaRX`` closes: a handful at most).
Tested on the CPU with the kernels run in a host emulation (tests/test_cuda_kernels.py) and on an
H100 with both launchers (bench/GPU.md). There, at 32 bands, a line's round trip (uploads, two
launches, downloads, synchronisation from Python) took 0.7 ms, more than numpy on a CPU: the
kernels pay at full band counts and in batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_had.cuda.rx_kernels import LOCAL_MAX_DIMS
from edge_had.stream.causal import NUMPY_LINE_MATH

FP32_LIMIT = 1e30  # larger whitener entries would overflow FP32 products (smaller ones still
# may, in the squares of a line far off: such a line is scored again in numpy)


class CudaLineMath:
    """See the module docstring. ``rx``: an open :class:`~edge_had.cuda.rx_kernels.CudaRX` (the
    caller closes it)."""

    name = "cuda"

    def __init__(self, rx: Any) -> None:
        self.rx = rx
        self._cov: dict[int, Any] = {}  # bands -> CovPlan
        self._score: dict[int, Any] = {}  # bands -> ScorePlan
        self._background: dict[
            int, tuple[Any, np.ndarray, np.ndarray]
        ] = {}  # bands -> (plan, mean, w) uploaded

    def sums(self, pixels: np.ndarray, shift: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        pixels = np.asarray(pixels)
        plan = self._plan(self._cov, pixels.shape, lambda n, b: self.rx.cov_plan(n, b))
        plan.reset(shift)
        plan.add(pixels.astype(np.float32))
        n, s1, s2 = plan.result()
        return float(n), s1, s2

    def scores(self, line: np.ndarray, mean: np.ndarray, whitener: np.ndarray) -> np.ndarray:
        line = np.asarray(line)
        bands = line.shape[1]
        if not np.abs(whitener).max(initial=0.0) < FP32_LIMIT:  # also NaN: let numpy say so
            return NUMPY_LINE_MATH.scores(line, mean, whitener)
        plan = self._plan(self._score, line.shape, lambda n, b: self.rx.score_plan(n, b, b))
        uploaded = self._background.get(bands)
        if (
            uploaded is None
            or uploaded[0] is not plan
            or uploaded[1] is not mean
            or uploaded[2] is not whitener
        ):
            square = np.zeros((bands, bands))  # a pseudo-inverse whitener has fewer rows: zero rows add 0
            square[: whitener.shape[0]] = whitener
            plan.set_background(mean, square)
            self._background[bands] = (plan, mean, whitener)
        scores = plan(line.astype(np.float32)).astype(np.float64)
        if not np.isfinite(scores[np.isfinite(line).all(axis=1)]).all():  # FP32 overflowed: float64 does not
            return NUMPY_LINE_MATH.scores(line, mean, whitener)
        return scores

    @staticmethod
    def _plan(plans: dict[int, Any], shape: tuple[int, ...], make: Any) -> Any:
        pixels, bands = shape
        plan = plans.get(bands)
        if plan is None or plan.capacity < pixels:
            plan = plans[bands] = make(max(pixels, 2 * plan.capacity if plan else 1), bands)
        return plan


class CudaLocalMath:
    """The local half of hybrid RX (:class:`~edge_had.stream.causal_local.CausalHybridRX`) on the
    ``lrx_*_f64`` kernels (float64, numpy's algorithm): the window's lines, projected on the
    principal basis by the host, go up once each with their box sums (a ring of ``slots`` lines,
    put again when the basis changes); two launches score a line. A line with a singular window
    somewhere (the kernel marks it) is left to the numpy path (``None``); :attr:`numpy_lines`
    counts them. ``rx``: an open :class:`~edge_had.cuda.rx_kernels.CudaRX` (the caller closes it)."""

    name = "cuda"
    max_dims = LOCAL_MAX_DIMS

    def __init__(self, rx: Any) -> None:
        self.rx = rx
        self._plans: dict[tuple[int, ...], Any] = {}  # one per shape: a stream that changes band
        self._plan: Any = None  # count and back reuses its buffers instead of allocating again
        self.numpy_lines = 0

    def holds(self, position: int) -> bool:
        return self._plan is not None and self._plan.holds(position)

    def forget(self) -> None:
        if self._plan is not None:
            self._plan.forget()

    def put(
        self, positions: list[int], y: np.ndarray, valid: np.ndarray, *, slots: int, inner: int, outer: int
    ) -> None:
        _, dims, width = y.shape
        shape = (width, dims, slots, inner, outer)
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._plans[shape] = self.rx.local_plan(width, dims, slots, inner=inner, outer=outer)
        if plan is not self._plan:  # what another shape's plan held is another stream's
            plan.forget()
            self._plan = plan
        plan.put(positions, y, valid)

    def scores(
        self, centre: int, top: int, bottom: int, valid: np.ndarray, *, fallback: np.ndarray, load: float
    ) -> np.ndarray | None:
        scores = self._plan(centre, top, bottom, fallback=fallback, load=load)
        if (scores[valid] < 0).any():
            self.numpy_lines += 1
            return None
        return scores
