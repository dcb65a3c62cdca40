"""Causal RX's per-line arithmetic on the GPU: :class:`~edge_had.stream.causal.LineMath` over the
CUDA kernels of :class:`edge_had.cuda.rx_kernels.CudaRX` (``stream --rx-device cuda``).

Per line: the valid pixels go up once for the covariance kernel (FP64 sums of ``x - shift``; the
sums come back, ``K x K`` float64, and the statistics stay on the CPU as with numpy, so all three
statistics variants work), and the whole line goes up once for the fused scoring kernel (FP32),
whose whitener and mean are uploaded only when a refresh changed them. Pixels are sent as float32:
the stream's lines are float32 data (plain: the band reduction runs in float32; enhanced: the
network's float32 output), so nothing is rounded on the way. The error of FP32 scoring is bounded
in ``rx_kernels.cu`` (measured on the ten scenes: <= 5e-5 of the largest score).

Device buffers are kept per band count and grow with the line width. Tested on the CPU with the
kernels run in a host emulation (tests/test_cuda_kernels.py); **never run on a GPU here**.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class CudaLineMath:
    """See the module docstring. ``rx``: an open :class:`~edge_had.cuda.rx_kernels.CudaRX` (the
    caller closes it)."""

    name = "cuda"

    def __init__(self, rx: Any) -> None:
        self.rx = rx
        self._cov: dict[int, Any] = {}  # bands -> CovPlan
        self._score: dict[int, Any] = {}  # bands -> ScorePlan
        self._background: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # bands -> uploaded (mean, whitener)

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
        plan = self._plan(self._score, line.shape, lambda n, b: self.rx.score_plan(n, b, b))
        uploaded = self._background.get(bands)
        if uploaded is None or uploaded[0] is not mean or uploaded[1] is not whitener:
            square = np.zeros((bands, bands))  # a pseudo-inverse whitener has fewer rows: zero rows add 0
            square[: whitener.shape[0]] = whitener
            plan.set_background(mean, square)
            self._background[bands] = (mean, whitener)
        return plan(line.astype(np.float32)).astype(np.float64)

    @staticmethod
    def _plan(plans: dict[int, Any], shape: tuple[int, ...], make: Any) -> Any:
        pixels, bands = shape
        plan = plans.get(bands)
        if plan is None or plan.capacity < pixels:
            plan = plans[bands] = make(max(pixels, 1), bands)
        return plan
