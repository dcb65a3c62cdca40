"""Causal background statistics and RX for a line-scan stream.

"Causal": line ``t`` is scored with statistics of lines ``<= t`` only (the line itself is added
first: ``include_current``, which measured better on the ABU scenes, DESIGN.md). Statistics are
kept as float64 sums **per line** (one block update of ``W`` pixels, never per-pixel
Sherman-Morrison), centred on a fixed shift (the warm-up mean) so the second moments do not cancel
catastrophically. Three variants:

* ``cumulative``: every line so far, equal weight;
* ``exponential``: ``S <- (1 - m) S + m * S_line`` with momentum ``m`` per line;
* ``sliding``: the last ``window`` lines (a ring of per-line sums; the oldest is subtracted).

The Cholesky factor of ``cov + regularization * trace(cov) / K * I`` is refreshed every
``refresh_every`` lines (the latest statistics are used for scoring only at refreshes).

**Warm-up**: the first ``warmup_lines`` lines are held back; once they are in, the statistics are
initialised from them and they are scored late (flag ``warm-up``), so every line gets a score.

**Where the per-line arithmetic runs** (``line_math``): the two products that grow with the line
- its sums ``n, s1, s2`` and the scores ``||W (x - mean)||^2`` - go through a :class:`LineMath`:
:class:`NumpyLineMath` (float64, the default and the oracle) or
:class:`edge_had.stream.cuda_line_math.CudaLineMath` (the CUDA kernels of ``rx_kernels.cu``: FP64
sums, FP32 scores). The small per-refresh work (Cholesky and triangular inverse of ``K x K``,
LAPACK through SciPy) stays on the CPU.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from scipy.linalg import lapack

STATISTICS = ("cumulative", "exponential", "sliding")


class LineMath(Protocol):
    """The per-line products of causal RX (see the module docstring)."""

    name: str

    def sums(self, pixels: np.ndarray, shift: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(n, sum(x - shift), sum((x - shift)(x - shift)^T))`` of ``(n, bands)`` pixels, float64."""
        ...

    def scores(self, line: np.ndarray, mean: np.ndarray, whitener: np.ndarray) -> np.ndarray:
        """``||W (x - mean)||^2`` of each pixel of a ``(width, bands)`` line, float64."""
        ...


class NumpyLineMath:
    """:class:`LineMath` in float64 numpy (BLAS)."""

    name = "numpy"

    def sums(self, pixels: np.ndarray, shift: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        centred = np.asarray(pixels, dtype=np.float64) - shift
        # the column sums as a product with ones: BLAS (measured 4 vs 21 us for sum(axis=0) on a
        # 1024 x 32 line)
        ones = np.ones(centred.shape[0])
        return float(centred.shape[0]), ones @ centred, centred.T @ centred

    def scores(self, line: np.ndarray, mean: np.ndarray, whitener: np.ndarray) -> np.ndarray:
        whitened = (line - mean) @ whitener.T
        return np.einsum("ij,ij->i", whitened, whitened)


NUMPY_LINE_MATH = NumpyLineMath()


@dataclass(frozen=True)
class CausalSettings:
    statistics: str = "cumulative"
    momentum: float = 0.01
    window: int = 256
    refresh_every: int = 1
    regularization: float = 1e-6
    warmup_lines: int = 10
    include_current: bool = True

    def __post_init__(self) -> None:
        if self.statistics not in STATISTICS:
            raise ValueError(f"unknown statistics {self.statistics!r}; choose one of {STATISTICS}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {self.momentum}")
        if self.window < 1 or self.refresh_every < 1 or self.warmup_lines < 1:
            raise ValueError("window, refresh_every and warmup_lines must be >= 1")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CausalStatistics:
    """Weighted sums ``n``, ``s1 = sum(x - shift)``, ``s2 = sum((x - shift)(x - shift)^T)``."""

    def __init__(
        self, bands: int, settings: CausalSettings, shift: np.ndarray, line_math: LineMath = NUMPY_LINE_MATH
    ) -> None:
        self.settings = settings
        self.line_math = line_math
        self.shift = np.asarray(shift, dtype=np.float64)
        self.n = 0.0
        self.s1 = np.zeros(bands)
        self.s2 = np.zeros((bands, bands))
        self._ring: deque[tuple[float, np.ndarray, np.ndarray]] = deque()

    def add_line(self, pixels: np.ndarray) -> None:
        """Block update with the valid pixels of one line, ``(w, bands)``."""
        if len(pixels) == 0:
            return
        n, s1, s2 = self.line_math.sums(pixels, self.shift)
        kind = self.settings.statistics
        if kind == "exponential" and self.n > 0:
            keep, gain = 1.0 - self.settings.momentum, self.settings.momentum
            # weights per line: the new line's pixels together weigh `gain` of the total
            self.n, self.s1, self.s2 = (
                keep * self.n + gain * n,
                keep * self.s1 + gain * s1,
                keep * self.s2 + gain * s2,
            )
            return
        self.n += n
        self.s1 += s1
        self.s2 += s2
        if kind == "sliding":
            self._ring.append((n, s1, s2))
            if len(self._ring) > self.settings.window:
                old_n, old_s1, old_s2 = self._ring.popleft()
                self.n -= old_n
                self.s1 -= old_s1
                self.s2 -= old_s2

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        mean_c = self.s1 / self.n
        cov = self.s2 / self.n - np.outer(mean_c, mean_c)
        return mean_c + self.shift, (cov + cov.T) / 2


class CausalRX:
    """Streaming global RX over lines ``(width, bands)`` with a per-pixel validity mask.

    ``push(line, valid)`` returns the lines whose scores became available, as ``(position,
    scores, late)`` with ``position`` counting pushed lines from 0: nothing during warm-up, then
    every warm-up line (late) and the current one, then one line per push.
    """

    look_ahead_lines = 0  # a line is scored when it arrives (after the warm-up)

    def __init__(
        self, bands: int, settings: CausalSettings | None = None, line_math: LineMath = NUMPY_LINE_MATH
    ) -> None:
        self.bands = bands
        self.settings = settings or CausalSettings()
        self.line_math = line_math
        self.statistics: CausalStatistics | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pushed = 0
        self._since_refresh = 0
        self._mean: np.ndarray | None = None
        self._whitener: np.ndarray | None = None
        self.refreshes = 0

    def push(self, line: np.ndarray, valid: np.ndarray | None = None) -> list[tuple[int, np.ndarray, bool]]:
        line = np.asarray(line, dtype=np.float64)
        valid = np.ones(line.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        position = self._pushed
        self._pushed += 1
        if self.statistics is None:
            self._pending.append((line, valid))
            if len(self._pending) < self.settings.warmup_lines:
                return []
            return self._end_warmup(position)
        background = line if valid.all() else line[valid]  # no copy when every pixel is valid
        if self.settings.include_current:
            self.statistics.add_line(background)
        self._since_refresh += 1
        if self._since_refresh >= self.settings.refresh_every:
            self._refresh()
        scores = self._score(line, valid)
        if not self.settings.include_current:
            self.statistics.add_line(background)
        return [(position, scores, False)]

    def _end_warmup(self, position: int) -> list[tuple[int, np.ndarray, bool]]:
        lines = self._pending
        self._pending = []
        background = np.concatenate([line[valid] for line, valid in lines])
        if background.shape[0] < 2:
            # not enough valid pixels yet: keep waiting (the lines stay pending)
            self._pending = lines
            return []
        self.statistics = CausalStatistics(self.bands, self.settings, background.mean(axis=0), self.line_math)
        for line, valid in lines:
            self.statistics.add_line(line[valid])
        self._refresh()
        first = position - len(lines) + 1
        return [(first + i, self._score(line, valid), True) for i, (line, valid) in enumerate(lines)]

    def _refresh(self) -> None:
        assert self.statistics is not None
        mean, cov = self.statistics.mean_and_covariance()
        load = self.settings.regularization * max(float(np.trace(cov)), 1e-300) / self.bands
        loaded = cov.copy()
        loaded.flat[:: self.bands + 1] += load  # the diagonal
        # LAPACK's Cholesky and triangular inverse (a third of np.linalg.inv's time at 32 bands,
        # which goes through a general LU; measured 12 vs 40 us, ~10 % of a plain RX line)
        factor, info = lapack.dpotrf(loaded, lower=1, clean=1)
        if info == 0:
            whitener, info = lapack.dtrtri(factor, lower=1)
        if info == 0:
            self._whitener = whitener
        elif not np.isfinite(cov).all():  # corrupt statistics: NaN scores, not an eigh error
            self._whitener = np.full((self.bands, self.bands), np.nan)
        else:  # singular even with loading: pseudo-inverse square root
            values, vectors = np.linalg.eigh(cov)
            keep = values > 1e-12 * max(float(values[-1]), 1e-300)
            self._whitener = (vectors[:, keep] / np.sqrt(values[keep])).T
        self._mean = mean
        self._since_refresh = 0
        self.refreshes += 1

    def _score(self, line: np.ndarray, valid: np.ndarray) -> np.ndarray:
        assert self._whitener is not None and self._mean is not None
        scores = self.line_math.scores(line, self._mean, self._whitener)
        if not valid.all():
            scores[~valid] = np.nan
        return scores

    def flush(self) -> list[tuple[int, np.ndarray, bool]]:
        """At the end of a stream shorter than the warm-up: score what is pending (late)."""
        if self.statistics is None and self._pending:
            background = np.concatenate([line[valid] for line, valid in self._pending])
            if background.shape[0] >= 2:
                return self._end_warmup(self._pushed - 1)
        return []
