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

**Outlier gate** (``outlier_sigma``, default 100): a pixel more than ``outlier_sigma`` background
standard deviations from the background mean in some band is scored but kept out of the
statistics (:attr:`CausalRX.screened` reports how many, per line). One corrupt sample - a ``1e8``
in data of range 0-1600 - otherwise stays in cumulative statistics for good: its variance
dominates the covariance's trace, the diagonal loading grows with it and RX flattens for the rest
of the stream (synthetic scene: AUC of the lines after it 0.983 -> 0.39; with the gate 0.983,
tests/test_stream_outliers.py). The gate uses the statistics of the last refresh (the standard
deviations floored at 1 % of their root-mean-square, for a band that was constant); in the
warm-up, which has no statistics yet, the median and the 1-99 % percentile range of the warm-up
pixels (:func:`edge_had.detectors.stats.robust_spread`), which one bad pixel cannot move once
the warm-up holds some hundred pixels (with fewer, the percentiles reach into the extremes); a
whole corrupt line is a tenth of the warm-up, so each warm-up line is judged first as a line (its
median against the lines' median, in their median robust deviation; 3 warm-up lines or more). On
the ten ABU scenes streamed in their row order plain RX (32 bands) has no pixel beyond 75
deviations, so the gate changes no score there (streamed flipped, abu-urban-4 has a target pixel
at 117: order matters, AUC moves by ~0.002); the enhanced stream (shipped model) keeps 6 pixels of
abu-beach-1 out (AUC 0.9980 -> 0.9982 with enhanced-rx, 0.9997 -> 0.9996 with enhanced-hybrid-rx).

**A new background is not locked out**: when most valid pixels of ``warmup_lines`` lines in a row
are beyond the gate (a shutter opening, a noisy dark start, a new terrain), the statistics restart
from those lines (:attr:`CausalRX.restarts`). Those lines were scored against the old background
(every pixel high) and are flagged ``background-change`` by the pipeline. A burst of corrupt lines
looks the same, so a restart is on probation for ``PROBATION_WARMUPS`` (4) warm-ups: the first line
that fits the replaced statistics again brings them back (:attr:`CausalRX.restarts_undone`; a
12-line burst a million times too large then leaves the later scores exactly as without it). Lines
of one value throughout (every pixel saturated) never restart the statistics: kept out and flagged
as corrupt lines however many come, they leave the later scores as without them. Restarted on
them, the statistics had no variance, hence no gate, and when the scene came back after the
probation nothing noticed: the saturated lines stayed in them for good (60 lines: AUC of the lines
after them 0.860, against 0.891 without the gate and 0.984 without the burst; a review). A longer
burst of another kind (most of the swath saturated) is still taken for a new background. A
background beyond the gate in less than half of every line is scored as anomalous for as long as
it lasts, and with sliding or exponential statistics a terrain that alternates may restart them at
each change. A warm-up on a constant background (an exact dark frame) has no scale to judge by: no
gate until the statistics vary, and the dark lines stay in cumulative statistics as they would
without it.
Cost: a line's sums bound its largest deviation (its mean's distance from the centre plus the
root of its sum of squares about its mean), so an ordinary line needs no pixel-by-pixel check:
~10 us a line, and ~6 ms once at the end of the warm-up (bench/README.md, 1024 x 224 -> 32 bands:
per-line p50 0.232 against 0.222 ms without the gate; a 256-line round 0.88x).

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

from edge_had.detectors.stats import DEVIATION_FLOOR, floored, robust_spread, within

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
    outlier_sigma: float | None = 100.0  # None: every valid pixel enters the statistics

    def __post_init__(self) -> None:
        if self.statistics not in STATISTICS:
            raise ValueError(f"unknown statistics {self.statistics!r}; choose one of {STATISTICS}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {self.momentum}")
        if self.window < 1 or self.refresh_every < 1 or self.warmup_lines < 1:
            raise ValueError("window, refresh_every and warmup_lines must be >= 1")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if self.outlier_sigma is not None and not self.outlier_sigma > 0:
            raise ValueError(f"outlier_sigma must be > 0 or None, got {self.outlier_sigma}")

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

    def line_sums(self, pixels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(n, s1, s2)`` of ``(w, bands)`` pixels about this statistics' shift."""
        return self.line_math.sums(pixels, self.shift)

    def add_line(self, pixels: np.ndarray) -> None:
        """Block update with the valid pixels of one line, ``(w, bands)``."""
        if len(pixels) > 0:
            self.add_sums(*self.line_sums(pixels))

    def add_sums(self, n: float, s1: np.ndarray, s2: np.ndarray) -> None:
        """Block update with one line's sums (:meth:`line_sums`)."""
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


#: Pixels of each warm-up line its median and spread are read from, when it is judged as a line.
LINE_SPREAD_SAMPLES = 256
#: After a restart, the background it replaced comes back if a line fits it again within this many
#: warm-ups (40 lines by default): a burst of corrupt lines restarts the statistics like a new
#: background, and is undone when the old one returns.
PROBATION_WARMUPS = 4
#: The share of a line's pixels within the replaced statistics' gate that undoes a restart: the
#: old background whole again (a few anomalies aside), not a boundary across the swath.
UNDO_FIT = 0.9


def _one_value(pixels: np.ndarray) -> bool:
    """Whether two or more pixels are all the same spectrum (saturated lines: no background)."""
    return len(pixels) >= 2 and not np.ptp(pixels, axis=0).any()


class CausalRX:
    """Streaming global RX over lines ``(width, bands)`` with a per-pixel validity mask.

    ``push(line, valid)`` returns the lines whose scores became available, as ``(position,
    scores, late)`` with ``position`` counting pushed lines from 0: nothing during warm-up, then
    every warm-up line (late) and the current one, then one line per push. After each push,
    :attr:`screened` lists ``(position, pixels, most)`` for the lines of that push whose pixels the
    outlier gate kept out of the statistics (``most``: more than half of the line's), and
    :attr:`restarts` / :attr:`restarts_undone` count the statistics' restarts on a new background
    and those undone when the old one came back (the module docstring).
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
        # (centre, centre - shift, half-width) per band: see _refresh
        self._gate: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._beyond: list[np.ndarray] = []  # valid pixels of consecutive lines mostly beyond it
        # after a restart, for PROBATION_WARMUPS x warmup_lines lines: what it replaced
        # (statistics, mean, whitener, gate), back if a line fits it again
        self._replaced: tuple[Any, ...] | None = None
        self._probation = 0
        self.refreshes = 0
        self.restarts = 0
        self.restarts_undone = 0
        self.screened: list[tuple[int, int, bool]] = []

    def push(self, line: np.ndarray, valid: np.ndarray | None = None) -> list[tuple[int, np.ndarray, bool]]:
        line = np.asarray(line, dtype=np.float64)
        valid = np.ones(line.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        self.screened = []
        position = self._pushed
        self._pushed += 1
        if self.statistics is None:
            self._pending.append((line, valid))
            if len(self._pending) < self.settings.warmup_lines:
                return []
            return self._end_warmup(position)
        background = line if valid.all() else line[valid]  # no copy when every pixel is valid
        sums = self._admitted_sums(background, position)
        if self.settings.include_current and sums is not None:
            self.statistics.add_sums(*sums)
        self._since_refresh += 1
        if self._since_refresh >= self.settings.refresh_every:
            self._refresh()
        scores = self._score(line, valid)
        if not self.settings.include_current and sums is not None:
            self.statistics.add_sums(*sums)
        return [(position, scores, False)]

    def _admitted_sums(
        self, background: np.ndarray, position: int
    ) -> tuple[float, np.ndarray, np.ndarray] | None:
        """The sums of the line's pixels that enter the statistics (None: none, or the line
        restarted them and is in already), after the outlier gate."""
        assert self.statistics is not None
        if self._replaced is not None:
            self._undo_restart_if_back(background)
        sums, ordinary = self._screen(background, self.statistics, self._gate)
        if ordinary is None:
            self._beyond.clear()
            return sums
        outliers = len(background) - int(np.count_nonzero(ordinary))
        most = 2 * outliers > len(background)
        self.screened.append((position, outliers, most))
        if not most:
            self._beyond.clear()
        elif not _one_value(background):  # a corrupt line, or the start of a new background
            self._beyond.append(background)
            if len(self._beyond) >= self.settings.warmup_lines:
                if self._replaced is None:  # a restart on probation keeps what the first replaced
                    self._replaced = (self.statistics, self._mean, self._whitener, self._gate)
                self._probation = PROBATION_WARMUPS * self.settings.warmup_lines
                self._start_statistics(self._beyond, first=None)
                self.restarts += 1
                return None
        kept = background[ordinary]
        return self.statistics.line_sums(kept) if len(kept) else None

    def _screen(
        self, background: np.ndarray, statistics: CausalStatistics, gate: tuple[np.ndarray, ...] | None
    ) -> tuple[tuple[float, np.ndarray, np.ndarray], np.ndarray | None]:
        """The line's sums about ``statistics``' shift, and which of its pixels are within
        ``gate`` (None: all of them, or no gate)."""
        sums = statistics.line_sums(background)
        if gate is None:
            return sums, None
        centre, offset, half_width = gate
        n, s1, s2 = sums
        # no pixel is further from the centre than the line's mean is, plus the root of the line's
        # sum of squares about its mean: an ordinary line needs no pixel-by-pixel check (NaN, from
        # an overflow, fails it)
        line_mean = s1 / n  # about the shift
        spread = np.sqrt(np.abs(np.diagonal(s2) - s1 * line_mean))
        if (spread + np.abs(line_mean - offset) <= half_width).all():
            return sums, None
        ordinary = within(background, centre, half_width)
        return sums, None if ordinary.all() else ordinary

    def _undo_restart_if_back(self, background: np.ndarray) -> None:
        """On probation after a restart: a line that fits the background the restart replaced
        (:data:`UNDO_FIT` of its pixels within that gate) brings it back - the lines that
        restarted the statistics were a burst of corrupt lines, not a new background (a line
        half old, half new, as along a boundary in the swath, does not)."""
        assert self._replaced is not None
        if len(background) == 0:
            return
        statistics, _, _, gate = self._replaced
        _, ordinary = self._screen(background, statistics, gate)
        if ordinary is None or np.count_nonzero(ordinary) >= UNDO_FIT * len(background):
            self.statistics, self._mean, self._whitener, self._gate = self._replaced
            self._replaced = None
            self._since_refresh = 0
            self.restarts_undone += 1
            return
        self._probation -= 1
        if self._probation == 0:
            self._replaced = None

    def _end_warmup(self, position: int) -> list[tuple[int, np.ndarray, bool]]:
        lines = self._pending
        first = position - len(lines) + 1
        if not self._start_statistics([line[valid] for line, valid in lines], first):
            return []  # not enough valid pixels yet: keep waiting (the lines stay pending)
        self._pending = []
        return [(first + i, self._score(line, valid), True) for i, (line, valid) in enumerate(lines)]

    def _start_statistics(self, backgrounds: list[np.ndarray], first: int | None) -> bool:
        """New statistics from the valid pixels of consecutive lines (the first at position
        ``first``; None: their outliers were reported already), less those beyond the warm-up
        gate; False (nothing changed) when fewer than 2 pixels would remain."""
        lines_kept = self._ordinary_lines(backgrounds)
        pixels = np.concatenate(backgrounds)
        ordinary = np.repeat(lines_kept, [len(background) for background in backgrounds])
        ordinary[ordinary] = self._warmup_ordinary(pixels[ordinary])
        if np.count_nonzero(ordinary) < 2:
            return False
        statistics = CausalStatistics(
            self.bands, self.settings, pixels[ordinary].mean(axis=0), self.line_math
        )
        start = 0
        for offset, background in enumerate(backgrounds):
            kept = ordinary[start : start + len(background)]
            start += len(background)
            outliers = len(background) - int(np.count_nonzero(kept))
            if outliers and first is not None:
                self.screened.append((first + offset, outliers, 2 * outliers > len(background)))
            statistics.add_line(background[kept])
        self.statistics = statistics
        self._beyond = []
        self._refresh()
        return True

    def _ordinary_lines(self, backgrounds: list[np.ndarray]) -> np.ndarray:
        """Which of (at least 3) warm-up lines are within the gate as lines: each line's median
        against the median of them all, in the median of their robust deviations. A corrupt line is
        a tenth of a 10-line warm-up's pixels, more than the percentile range of the pixels can
        ignore (it stayed in the statistics for good: AUC 0.53 against 0.98; a review)."""
        kept = np.ones(len(backgrounds), dtype=bool)
        if self.settings.outlier_sigma is None or len(backgrounds) < 3:
            return kept
        spreads = {}
        for i, background in enumerate(backgrounds):
            finite = background[np.isfinite(background).all(axis=1)]
            if len(finite) >= 2:  # from 256 of its pixels: ~2 ms for 10 lines of 1024 x 32
                spreads[i] = robust_spread(finite, samples=LINE_SPREAD_SAMPLES)
        if len(spreads) < 3:
            return kept
        centres = np.array([centre for centre, _ in spreads.values()])
        centre = np.median(centres, axis=0)
        deviation = floored(np.median([deviation for _, deviation in spreads.values()], axis=0))
        kept[list(spreads)] = within(centres, centre, self.settings.outlier_sigma * deviation)
        return kept

    def _warmup_ordinary(self, pixels: np.ndarray) -> np.ndarray:
        """Which ``(n, bands)`` pixels are within the warm-up gate: ``outlier_sigma`` times the
        percentile range's deviation from the median, in every band (the module docstring)."""
        if self.settings.outlier_sigma is None:
            return np.ones(len(pixels), dtype=bool)
        finite = np.isfinite(pixels).all(axis=1)  # (the pipeline marks the others invalid)
        if not finite.any():
            return finite
        centre, deviation = robust_spread(pixels[finite])
        return finite & within(pixels, centre, self.settings.outlier_sigma * deviation)

    def _gate_of(
        self, mean: np.ndarray, variance: np.ndarray, trace: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The gate of the refreshed statistics; None for a constant background (dark frames),
        which has no scale to judge by (NaN statistics: every pixel is beyond)."""
        assert self.statistics is not None and self.settings.outlier_sigma is not None
        floor = DEVIATION_FLOOR**2 * trace / self.bands  # of the variances: their mean is trace / K
        if floor == 0.0:
            return None
        half_width = self.settings.outlier_sigma * np.sqrt(np.maximum(variance, floor))
        return mean, mean - self.statistics.shift, half_width

    def _refresh(self) -> None:
        assert self.statistics is not None
        mean, cov = self.statistics.mean_and_covariance()
        trace = float(np.trace(cov))
        load = self.settings.regularization * max(trace, 1e-300) / self.bands
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
        if self.settings.outlier_sigma is not None:
            self._gate = self._gate_of(mean, np.diagonal(cov), trace)
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
        self.screened = []
        if self.statistics is None and self._pending:
            return self._end_warmup(self._pushed - 1)
        return []
