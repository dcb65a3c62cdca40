"""The onboard line loop: validate -> reduce bands -> causal RX (global, or hybrid with a causal
local RX) -> results, with line accounting.

``StreamPipeline.push(pixels, index, timestamp, meta)`` takes one line ``(width, bands)`` and
returns its :class:`LineResult`; it is safe to call from a camera SDK's thread (one lock; so are
:meth:`~StreamPipeline.drop`, :meth:`~StreamPipeline.finish` and :meth:`~StreamPipeline.report`).
The pipeline never keeps the caller's buffer past ``push`` (a line held by the reorder window is
copied), so the SDK may reuse it. Every received line ends in exactly one state, reported once
through ``on_result``:

* ``scored`` - it has scores (warm-up lines are scored late, when the warm-up ends: flags
  ``warm-up`` and ``late``; their ``push`` returns state ``pending``);
* ``rejected`` - bad input, with a reason (wrong pixel or band count, values that are not
  numbers or not an array numpy can read, duplicate or out-of-order index, no valid pixel). With
  ``reorder_window = R > 0`` a line that arrives after a later one is held (up to R lines wait for
  a missing index) and processed in order with the flag ``reordered``; only a line older than
  everything already released is rejected. The stream's first index is not known in advance, so
  its first lines wait until R + 1 have arrived (they are in the statistics' warm-up anyway);
* ``dropped`` - overload (:meth:`drop`, used by :func:`edge_had.stream.run.run_stream` when it
  falls behind a paced sensor by more than its allowed lag; a drop of an index already seen is
  rejected as a duplicate instead).

``on_result`` runs on the pushing thread under the pipeline's lock: it must not call ``push``,
``drop`` or ``finish`` (a :class:`RuntimeError` says so; hand results to a queue instead). An
exception it raises is caught and counted (``callback_errors`` in health, the first one logged and
kept as ``first_callback_error``), so a faulty consumer cannot stop the stream or lose a line.

So ``lines_in = lines_scored + lines_rejected + lines_dropped`` once :meth:`finish` has run.
After ``reinit_after`` consecutive lines (default 8) of a new band count - each of them rejected -
the statistics are re-initialised for it (``reinitialisations`` in health); a single odd line never
does. Flags annotate without changing the state (``masked-pixels``: pixels that are NaN/Inf, or
hold the no-data value or reach the saturation level when the pipeline is given them, in a good
band, are masked before anything else - scored NaN, never in the statistics - and counted by
reason in ``masked_pixels`` (:data:`~edge_had.io.scene.MASK_REASONS`); ``saturated``: some of
them reached the saturation level; ``outlier-pixels``: the statistics' outlier gate kept
pixels of the line out of them - a corrupt sample of finite value, e.g. - though they are scored;
``background-change``: most of the line, a corrupt line or a new background, scored against the
old one (``outlier_pixels``, ``statistics_restarts`` and ``statistics_restarts_undone`` in
health: :mod:`edge_had.stream.causal`);
``deadline-miss``: from arrival to score, less the
time the reorder window had waited for a late or missing index when it released the line or the
line completing its look-ahead (at most its length plus the missing lines it gave up on, in line
periods), the line took longer than the budget times 1 + the line periods its look-ahead spans,
missing lines included, i.e. scoring fell behind; lines scored by a flush, at ``finish`` or a
re-initialisation, are not judged). Lines held in the reorder window when the
band count changes are processed first, with the old statistics. Gaps in the indices are counted
as ``missing_indices`` (an index that arrives after all, too late and rejected, is not missing:
the latest :data:`GIVEN_UP_MEMORY` given up are remembered); repeated ones as ``duplicates``. A
line whose index leaps ahead further than the reorder window explains (more than
``reorder_window + 1`` past the newest index; without a window any gap) is not trusted until the
next line confirms it: it is held - not scored into a row, its ``push`` returns ``pending``. If
the next line moves forward from it (at its index, within the reorder window below it, or past
it by up to :data:`LEAP_TRUST_LINES`: lines were lost, a USB hiccup or a burst, or the counter
really jumped) it is taken then, one line late, the indices it leapt over missing, and the next
line is judged in turn (a leap itself is held in its turn; a resend of the held line is a
duplicate). If the next line goes back to the old sequence (up to ``reorder_window + 1`` past the
newest before the leap), lands between the two or leaps far past it, the held line is rejected as
an ``implausible index jump`` and the stream keeps its place (a corrupted counter value, one
flipped bit: it must neither put its line in another line's row nor get the lines after it
rejected as out of order; its index is not counted missing if the stream passes it later); a
next line between the two is then itself a leap from the old newest, held. A held leap at the
stream's end is taken if it leapt up to :data:`LEAP_TRUST_LINES`, else rejected. Without a
reorder window, a line lost next to a reordered pair can so cost one more line (the reordered
line leaps over the lost one). A line going
back (an index not past the newest processed) is rejected: a ``duplicate index`` when that index
was processed lately (the last ``4 x reorder_window + 16``) or is held in the window, else an
``out-of-order index`` - a line too late or a stale resend, too old to tell which (one given up
as missing is not missing after all). A counter that restarts (an SDK reconnect, a counter that
wraps) goes back too, and is followed only on evidence: the line went back to an index near 0
(at most :data:`COUNTER_RESTART_MAX_INDEX`: a counter starts again at 0 or 1, its first lines
perhaps lost) and the next line continues from it - the first is lost - or
:data:`COUNTER_RESTART_CONFIRM_LINES` consecutive lines continued from another index - those are
lost (a resend of old lines is shorter; a counter restarted elsewhere must not get every later
line rejected until it passes its old maximum); a line then below the restarted run's first index
is out of order (it has no row of the new segment). Lines processed lately are never a restart (a
resent pair is two duplicates). One case stays ambiguous: a resend of the stream's first lines
(indices up to 16) older than the lines remembered is taken for a restart. A restart followed is
``counter_resets`` in health; indices then repeat earlier ones, so each result carries its
counter ``segment`` and a ``row`` along track that no other line has (:class:`LineResult`: score
maps and events are keyed by it). The index counts lines
(the line after ``i`` is ``i + 1``; a gap is counted as missing lines, and the reorder window
waits for it): a camera that stamps its lines with a clock tick passes the tick as the timestamp
and numbers the lines itself (``enumerate``), or every line would count as a gap or an
implausible jump. When the enhancement
network fails, the stream goes on with plain RX (flag ``plain-rx``, ``enhancement_failures`` in
health) from the line it failed on (from the first line when its warm-up failed); the lines the
enhancer held are rejected with the failure as the reason.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_had.io.scene import MASK_REASONS, PixelRule
from edge_had.stream.causal import NUMPY_LINE_MATH, CausalRX, CausalSettings, LineMath
from edge_had.stream.causal_local import CausalHybridRX, LocalLineMath
from edge_had.stream.enhance import EnhancementError
from edge_had.stream.profiler import TOTAL, StageProfiler

STATES = ("scored", "rejected", "dropped")
SCORERS = ("global", "hybrid")
#: The latest indices given up as missing that are remembered, so one arriving after all (too
#: late, rejected) is not counted missing as well.
GIVEN_UP_MEMORY = 256
#: A restarted line counter starts again at 0 (or 1): going back to an index up to this one (its
#: first lines may have been lost), continued by the next line, is a restart.
COUNTER_RESTART_MAX_INDEX = 16
#: Going back to any other index is a stale resend or a late line, unless this many consecutive
#: lines continue from it (a counter restarted elsewhere; a resend of old lines is shorter).
COUNTER_RESTART_CONFIRM_LINES = 64
#: A line held for leaping ahead is confirmed by a next line that moves forward from it by up to
#: this many lines (two leaps in a row further apart are taken for corrupted counter values); the
#: stream's last line is taken if it leapt up to this many lines (else rejected).
LEAP_TRUST_LINES = 1000


@dataclass
class LineResult:
    """One line's outcome. ``index`` is the sensor's line number, which repeats after a restarted
    counter; ``segment`` counts the counter restarts the stream had followed when the line came
    (0 before any), and ``row`` is the line's place along track, unique in the stream: its index
    shifted past the rows before the restart (the index itself until the first restart; a
    restart's lost lines keep their rows, unscored). ``row`` is None for a line rejected for its
    index (a duplicate, a late line, an implausible leap: it owns no place) or after ``finish``.
    ``sequence`` numbers the results in the order their lines were pushed or dropped (0, 1, ...)."""

    index: int
    timestamp: float
    state: str
    scores: np.ndarray | None = None
    flags: list[str] = field(default_factory=list)
    reason: str | None = None
    meta: dict[str, Any] | None = None
    segment: int = 0
    row: int | None = None
    sequence: int = -1


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux ``/proc/self/statm``; None elsewhere)."""
    import os

    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Health:
    lines_in: int = 0
    lines_scored: int = 0
    lines_rejected: int = 0
    lines_dropped: int = 0
    missing_indices: int = 0
    duplicates: int = 0
    deadline_misses: int = 0
    statistics_refreshes: int = 0
    outlier_pixels: int = 0
    statistics_restarts: int = 0
    statistics_restarts_undone: int = 0
    normalisation_refits: int = 0  # an enhanced stream's lo/hi fitted again (edge_had.stream.enhance)
    normalisation_refits_undone: int = 0
    reinitialisations: int = 0
    counter_resets: int = 0  # the line counter went back and the stream followed it
    enhancement_failures: int = 0
    #: pixels masked (not scored, out of the statistics) on the lines screened, by reason: each
    #: pixel under the first of MASK_REASONS it has (a line rejected as 'no valid pixel' counts too)
    masked_pixels: Counter = field(default_factory=lambda: Counter(dict.fromkeys(MASK_REASONS, 0)))
    callback_errors: int = 0
    first_callback_error: str | None = None
    flags: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["rss_mb"] = current_rss_mb()
        out["flags"], out["reasons"] = dict(self.flags), dict(self.reasons)
        out["masked_pixels"] = dict(self.masked_pixels)
        out["accounting_ok"] = self.lines_in == self.lines_scored + self.lines_rejected + self.lines_dropped
        return out


def sparse_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(columns, weights)``, both ``(rows, n)``, when every row of ``matrix`` has at most
    :data:`~edge_had.models.adapter.MAX_GATHER_TAPS` nonzeros (linear interpolation has 2), as the
    adapter gathers them: applying it is then a gather of ``n`` columns per output
    band instead of a dense product (at 1024 x 224 -> 32: 65 k instead of 7.3 M multiply-adds)."""
    from edge_had.band_resampling import MAX_GATHER_TAPS, sparse_taps

    columns, weights = sparse_taps(matrix)
    if columns.shape[1] > MAX_GATHER_TAPS:  # as the adapter decides: wider rows are a product
        return None
    return columns.astype(np.intp), weights.astype(np.float32)


def sensor_good_bands(good_bands: Any, bands: int) -> np.ndarray | None:
    """``good_bands`` as a bool mask over the sensor's ``bands`` (None when every band is good);
    ValueError for another length, values other than 0/1 (a list of band numbers, e.g.) or
    fewer than 2 good bands."""
    if good_bands is None:
        return None
    mask = np.asarray(good_bands)
    if mask.shape != (bands,) or mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"good_bands must be a mask of {bands} booleans (0/1: ENVI's bbl), one per sensor band; "
            f"got {mask.dtype} of shape {mask.shape}"
        )
    good = mask.astype(bool)
    if good.sum() < 2:
        raise ValueError(f"good_bands leaves {int(good.sum())} good band(s); detection needs at least 2")
    return None if good.all() else good


def _line_index(index: Any) -> int:
    """``index`` as an int (Python's or numpy's integers; not a bool, a float or a string)."""
    if isinstance(index, numbers.Integral) and not isinstance(index, bool | np.bool_):
        return int(index)
    raise TypeError(
        f"a line's index must be an integer (its line number), got {type(index).__name__} {index!r}"
    )


@dataclass
class _Pending:
    result: LineResult
    arrival: float
    window_wait_s: float = 0.0  # how long the reorder window had waited when it released the line


@dataclass
class _Leap:
    """A line whose index leapt ahead, held (not scored into a row) until the next line says
    whether the leap was real. ``pixels``: a copy, or None for a dropped line (``drop_reason``)."""

    result: LineResult
    pixels: Any
    arrival: float
    drop_reason: str | None
    newest: int  # the stream's newest index when it leapt


class StreamPipeline:
    """See the module docstring. ``reduction``: an optional ``(K, bands)`` matrix applied to each
    line before the statistics (band reduction, e.g. the spectral adapter's resampling).
    ``scorer``: ``"global"`` (causal RX, scored on arrival) or ``"hybrid"`` (``sqrt(RX * LRX)``
    with a causal dual-window LRX, :mod:`edge_had.stream.causal_local`: 7 lines more look-ahead).
    ``line_math``: where causal RX's per-line sums and scores run (numpy, or the CUDA kernels:
    :mod:`edge_had.stream.cuda_line_math`); ``local_math``: where the hybrid scorer's local RX
    runs (``None``: numpy). ``wavelengths``: the sensor's band centres (nm, one per band), if
    known, for the 32-band reduction of the plain RX a failed enhancement falls back to (as
    ``reduction``, it resamples on them; a re-initialisation for another band count resamples on
    band index). ``good_bands`` (a bool mask over the sensor's ``bands``; None: all),
    ``no_data_value`` and ``saturation`` (None: none) say which pixels are masked
    (:class:`~edge_had.io.scene.PixelRule`, as ``load_scene`` masks a file's): only the good bands
    are scored (``reduction`` and an ``enhancer`` take them), and a pixel is masked when one of
    them is NaN/Inf, the no-data value, or at or above the saturation level. After a
    re-initialisation for another band count every band is good; the values still apply."""

    def __init__(
        self,
        width: int,
        bands: int,
        *,
        reduction: np.ndarray | None = None,
        settings: CausalSettings | None = None,
        budget_s: float | None = None,
        on_result: Callable[[LineResult], None] | None = None,
        profiler: StageProfiler | None = None,
        enhancer: Any = None,
        reorder_window: int = 0,
        reinit_after: int = 8,
        scorer: str = "global",
        line_math: LineMath = NUMPY_LINE_MATH,
        local_math: LocalLineMath | None = None,
        wavelengths: np.ndarray | None = None,
        good_bands: np.ndarray | None = None,
        no_data_value: float | None = None,
        saturation: float | None = None,
    ) -> None:
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; choose one of {SCORERS}")
        self.scorer = scorer
        self.line_math = line_math
        self.local_math = local_math
        self.width = width
        self.wavelengths = None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64).ravel()
        if self.wavelengths is not None and self.wavelengths.size != bands:
            raise ValueError(f"{self.wavelengths.size} wavelengths for {bands} bands")
        self._given_good_bands = sensor_good_bands(good_bands, bands)
        self.pixel_rule = PixelRule(self._given_good_bands, no_data_value, saturation)
        self._use_sensor_bands(bands)
        self._use_reduction(reduction)
        scored = self.detection_bands
        if self.reduction is not None and self.reduction.shape[1] != scored:
            raise ValueError(
                f"reduction takes {self.reduction.shape[1]} bands, the sensor has {scored} good ones"
            )
        if enhancer is not None and self.reduction is not None:
            raise ValueError("an enhanced stream is scored in the model's K bands: give no reduction")
        self.enhancer = enhancer
        reduced_bands = scored if self.reduction is None else self.reduction.shape[0]
        if enhancer is not None:
            reduced_bands = enhancer.bundle.config.k
        self.settings = settings or CausalSettings()
        self.rx = self._new_scorer(reduced_bands)
        self.budget_s = budget_s
        # (index, reorder window's wait) of the line in process: it completes earlier lines'
        # look-ahead; None while the scorer flushes (finish, re-initialisation)
        self._completing: tuple[int, float] | None = None
        self.on_result = on_result
        self.profiler = profiler or StageProfiler()
        self.health = Health()
        self._lock = threading.Lock()
        self._callback_thread: int | None = None  # the thread inside on_result, if any
        self._finished = False
        self._last_index: int | None = None
        self._pending: dict[int, _Pending] = {}  # CausalRX position -> line waiting for its score
        self._position = 0
        self._rx_base = 0  # pipeline position of the current statistics' first line
        self.reinit_after = reinit_after
        # the line that leapt ahead, held until the next line confirms the leap (or not)
        self._leap: _Leap | None = None
        # indices of the latest lines rejected for a leap the next line did not confirm: the line
        # arrived, so its index is no gap (not missing) if the stream passes it later
        self._refused_leaps: deque[int] = deque(maxlen=GIVEN_UP_MEMORY)
        # (first index, lines) of the consecutive lines just refused for going back, if any
        self._back_run: tuple[int, int] | None = None
        self._segment = 0  # counter restarts followed
        self._row_offset = 0  # row - index in this segment
        self._segment_first: int | None = None  # a restarted counter's first index (its first row)
        self._new_band_count = (0, 0)  # (band count, consecutive lines) of lines with another count
        #: each re-initialisation for a new band count: the ``sequence`` of the line that decided it,
        #: the new ``bands``, the ``reduced_bands`` scored and their ``resampling``
        self.band_changes: list[dict[str, Any]] = []
        self.fallback_flag: str | None = None
        self.reorder_window = reorder_window
        self._held: dict[int, tuple[np.ndarray, LineResult, float] | None] = {}  # None: arrived, rejected
        self._released: deque[int] = deque(maxlen=4 * reorder_window + 16)
        self._max_seen = -(2**62)
        self._given_up: deque[int] = deque(maxlen=GIVEN_UP_MEMORY)  # see _give_up

    # ------------------------------------------------------------------ entry points

    def push(
        self,
        pixels: np.ndarray,
        index: int,
        timestamp: float,
        meta: dict[str, Any] | None = None,
        *,
        late: bool = False,
    ) -> LineResult:
        """``late``: the caller reached this line after its deadline (flag ``deadline-miss``).
        An ``index`` that is not an integer is the caller's bug: a TypeError, the line not
        counted (it has no place in the stream to be rejected from)."""
        arrival = time.perf_counter()
        self._refuse_from_callback("push")
        index = _line_index(index)
        with self._lock:
            result = self._received(index, timestamp, meta)
            if late:
                result.flags.append("deadline-miss")
                self.health.deadline_misses += 1
            if self._finished:
                return self._finish(result, "rejected", reason="stream finished (finish() was called)")
            self._settle_leap(index)
            if self._leaps(index):
                self._hold_leap(result, pixels, arrival)
                return result
            return self._take(pixels, result, arrival)

    def _take(self, pixels: Any, result: LineResult, arrival: float, waited_s: float = 0.0) -> LineResult:
        """A pushed line that does not leap ahead (or whose leap the next line confirmed, after
        ``waited_s`` held): into the reorder window, or checked and processed."""
        if self.reorder_window > 0:
            return self._admit(pixels, result, arrival)
        problem = self._check_index(result.index)
        if problem is None:
            self._place(result)
            problem = self._check_shape(pixels, result)
        if problem is not None:
            return self._finish(result, "rejected", reason=problem)
        self._process(pixels, result, arrival, window_wait_s=waited_s)
        return result

    def _received(self, index: int, timestamp: float, meta: dict[str, Any] | None) -> LineResult:
        """A new line's result, counted in ``lines_in`` and numbered in arrival order."""
        self.health.lines_in += 1
        return LineResult(index, timestamp, "pending", meta=meta, sequence=self.health.lines_in - 1)

    def _place(self, result: LineResult) -> None:
        """The line's index is the stream's: give it its counter segment and its row along track."""
        result.segment, result.row = self._segment, result.index + self._row_offset

    def _admit(self, pixels: np.ndarray, result: LineResult, arrival: float) -> LineResult:
        """Reorder window: hold lines until their predecessors arrive or ``reorder_window`` lines
        are held; a line older than everything released is rejected (duplicate or too late)."""
        index = result.index
        problem = self._reorder_problem(index)
        if problem is not None:
            return self._finish(result, "rejected", reason=problem)
        self._place(result)
        if index < self._max_seen:
            result.flags.append("reordered")
        self._max_seen = max(self._max_seen, index)
        problem = self._check_shape(pixels, result)  # may re-initialise, releasing every held line first
        if problem:
            self._finish(result, "rejected", reason=problem)
        if self._last_index is None or index > self._last_index:
            # a copy: the caller may reuse its buffer before this line's turn comes
            self._held[index] = None if problem else (np.array(pixels, copy=True), result, arrival)
            self._release(force=False)
        return result

    def _reorder_problem(self, index: int) -> str | None:
        """Why ``index`` cannot enter the reorder window (seen before, too late, or an implausible
        leap ahead), or None."""
        back_run, self._back_run = self._back_run, None
        seen = index in self._held or index in self._released
        late = self._last_index is not None and index <= self._last_index
        # before a restarted counter's first line: its row would be the segment before's
        early = self._segment_first is not None and index < self._segment_first
        if (seen or late or early) and not self._counter_restarted(index, back_run, seen):
            if seen:
                self.health.duplicates += 1
                return "duplicate index"
            if late:
                return f"out-of-order index (beyond the reorder window, after {self._last_index})"
            return f"out-of-order index (before the restarted counter's first line, {self._segment_first})"
        return None

    def _newest(self) -> int | None:
        """The newest index the stream has taken (None before its first line, or a restart's)."""
        if self.reorder_window == 0:
            return self._last_index
        started = self._last_index is not None or bool(self._held)
        return self._max_seen if started else None

    def _leaps(self, index: int) -> bool:
        """Whether ``index`` leaps further ahead than the reorder window explains (more than
        ``reorder_window + 1`` past the newest index): a lost stretch of lines, or a corrupted
        counter value - the next line tells which (:meth:`_settle_leap`)."""
        newest = self._newest()
        return newest is not None and index > newest + self.reorder_window + 1

    def _hold_leap(
        self, result: LineResult, pixels: Any, arrival: float, drop_reason: str | None = None
    ) -> None:
        """Hold a leaping line (a copy of its pixels) until the next line arrives. It breaks a
        run of lines going back (:meth:`_counter_restarted`)."""
        self._back_run = None
        if pixels is not None and self._check_shape(pixels) is None:
            pixels = np.array(pixels, copy=True)  # the caller may reuse its buffer
        self._leap = _Leap(result, pixels, arrival, drop_reason, self._newest())

    def _settle_leap(self, index: int) -> None:
        """A line ``index`` arrived after a line that leapt ahead. If it moves forward from that
        line (at it, within the reorder window below it, or past it, by up to
        :data:`LEAP_TRUST_LINES`), the leap was real and the stream follows it: the held line is
        taken now, one line late, its gap missing, and the caller judges ``index`` in turn (a
        leap itself is held; a resend of the held line is a duplicate). Otherwise - it returns
        to the old sequence, lands between the two, or leaps far past the held line - the held
        line is rejected as an implausible index and the stream keeps its place (the line is not
        missing if the stream passes its index later: it arrived, with a bad counter value);
        ``index`` is then judged against the old newest (between the two: a leap, held)."""
        leap, self._leap = self._leap, None
        if leap is None:
            return
        held = leap.result.index
        if held - self.reorder_window - 1 < index <= held + LEAP_TRUST_LINES:
            self._take_leap(leap)
            return
        self._refuse_leap(leap, f"the next line, {index}, did not move forward from it")

    def _take_leap(self, leap: _Leap) -> None:
        """Take a held line whose leap was confirmed (or trusted at the stream's end)."""
        if leap.drop_reason is not None:
            self._take_drop(leap.result, leap.drop_reason)
            return
        # it waited for the next line - the window's wait, not scoring's - up to the line periods
        # of the line and of the lines it leapt over (as _window_wait: those took their periods)
        waited = time.perf_counter() - leap.arrival
        leapt_over = leap.result.index - leap.newest - 1
        self._take(
            leap.pixels, leap.result, leap.arrival, min(waited, (1 + leapt_over) * (self.budget_s or 0.0))
        )

    def _refuse_leap(self, leap: _Leap, why: str) -> None:
        if leap.result.index not in self._refused_leaps:
            self._refused_leaps.append(leap.result.index)
        reason = f"implausible index jump (from {leap.newest} to {leap.result.index}; {why})"
        self._finish(leap.result, "rejected", reason=reason)

    def _release(self, force: bool) -> None:
        released, given_up = [], 0
        while self._held:
            following = None if self._last_index is None else self._last_index + 1
            if following not in self._held:
                if not force and len(self._held) <= self.reorder_window:
                    break
                following = min(self._held)  # give up waiting: the indices between are missing
                if self._last_index is not None:  # (before the first line: none are)
                    given_up += following - self._last_index - 1
                    self._give_up(self._last_index + 1, following)
            entry = self._held.pop(following)
            self._last_index = following
            self._released.append(following)
            if entry is not None:
                released.append(entry)
        window_wait = self._window_wait(released, given_up)
        for pixels, result, arrival in released:
            problem = self._check_shape(pixels)  # held across a re-init?
            if problem is None:
                self._process(pixels, result, arrival, window_wait_s=window_wait)
            else:
                self._finish(result, "rejected", reason=problem)

    def _window_wait(self, released: list[tuple[np.ndarray, LineResult, float]], given_up: int) -> float:
        """How long the window delayed the lines it releases now (waiting for a late or missing
        index): the age of the oldest, at most the line periods the window may wait - its length
        plus the missing lines it gave up on now (they took their periods too). Those lines, and
        earlier lines whose look-ahead they complete, were delayed that much by the window, not
        by scoring."""
        if not released or self.budget_s is None:
            return 0.0
        now = time.perf_counter()
        oldest = max(now - arrival for _, _, arrival in released)
        return min(oldest, (self.reorder_window + given_up) * self.budget_s)

    def _process(
        self, pixels: np.ndarray, result: LineResult, arrival: float, window_wait_s: float = 0.0
    ) -> None:
        with self.profiler.stage("preprocess"):
            values, valid = self._screen(pixels, result)
            line = self._reduce(values)
        if not valid.any():
            self._finish(result, "rejected", reason="no valid pixel")
            return
        lines = [(line, valid)]
        if self.enhancer is not None:
            with self.profiler.stage("enhance"):
                lines = self._enhanced(self.enhancer.push, line, valid)
            if self.enhancer is None:  # it failed at this line: plain RX from here, this line too
                with self.profiler.stage("preprocess"):
                    lines = [(self._reduce(values), valid)]
        if self.fallback_flag is not None:
            result.flags.append(self.fallback_flag)
        self._pending[self._position] = _Pending(result, arrival, window_wait_s)
        self._position += 1
        self._completing = (result.index, window_wait_s)
        try:
            self._score(lines)
        finally:
            self._completing = None

    def _screen(self, pixels: np.ndarray, result: LineResult) -> tuple[np.ndarray, np.ndarray]:
        """``(values, valid)``: the line's good bands in float32 with its masked pixels zeroed,
        and which pixels are valid (:attr:`pixel_rule`). The masked ones are counted by reason
        and flag a line that keeps a valid pixel (``masked-pixels``; ``saturated`` when some
        reached the level; a line with none is rejected, unflagged)."""
        stored = np.asarray(pixels)
        samples = self.pixel_rule.good_samples(stored)  # a view when the good bands are one run
        values = np.asarray(samples, dtype=np.float32)
        # a NaN or Inf in any band makes the pixel's band sum non-finite; one product is 3x
        # faster than isfinite().all() (only a finite-but-overflowing sum, > 3e38, also
        # counts as invalid, as non-finite)
        valid = np.isfinite(values @ self._ones)
        problems = {"non_finite": ~valid}
        if self.pixel_rule.checks_values:
            problems = self.pixel_rule.problems(stored, values, non_finite=~valid, samples=samples)
            valid = PixelRule.valid_from(problems, valid.shape)
        if not valid.all():
            values = np.where(valid[:, None], values, np.float32(0.0))
            self.health.masked_pixels.update(PixelRule.counts(problems))
            if valid.any():
                result.flags.append("masked-pixels")
                if "saturated" in problems and problems["saturated"].any():
                    result.flags.append("saturated")
        return values, valid

    def _reduce(self, values: np.ndarray) -> np.ndarray:
        """The band reduction applied to a screened line, in float64 (the statistics' type)."""
        line = values
        if self._gather is not None:  # few bands per output band: gather, no GEMM
            columns, weights = self._gather
            line = np.einsum("wkn,kn->wk", line[:, columns], weights)
        elif self._reduction32 is not None:  # float32 product: the rows are convex weights
            line = line @ self._reduction32.T
        return line.astype(np.float64)

    def drop(
        self, index: int, timestamp: float, reason: str = "overload", meta: dict[str, Any] | None = None
    ) -> LineResult:
        """Account for a line the caller could not process in time (an index seen before, or one
        beyond the reorder window, is rejected as :meth:`push` would reject it; so is any line
        after :meth:`finish`)."""
        self._refuse_from_callback("drop")
        index = _line_index(index)
        with self._lock:
            result = self._received(index, timestamp, meta)
            if self._finished:
                return self._finish(result, "rejected", reason="stream finished (finish() was called)")
            self._settle_leap(index)
            if self._leaps(index):
                self._hold_leap(result, None, 0.0, drop_reason=reason)
                return result
            return self._take_drop(result, reason)

    def _take_drop(self, result: LineResult, reason: str) -> LineResult:
        """A dropped line that does not leap ahead (or whose leap was confirmed)."""
        index = result.index
        if self.reorder_window == 0:
            problem = self._check_index(index)
        else:
            problem = self._reorder_problem(index)
            if problem is None:
                self._held[index] = None  # arrived (and dropped): nothing to wait for
                self._max_seen = max(self._max_seen, index)
                self._release(force=False)
        if problem is not None:
            return self._finish(result, "rejected", reason=problem)
        self._place(result)
        return self._finish(result, "dropped", reason=reason)

    def finish(self) -> None:
        """End of stream: lines still in warm-up are scored (late) if they can be, else rejected;
        lines pushed afterwards are rejected."""
        self._refuse_from_callback("finish")
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._leap is not None:  # no line came to confirm it: trusted if it leapt little
                leap, self._leap = self._leap, None
                if leap.result.index - leap.newest <= LEAP_TRUST_LINES:
                    self._take_leap(leap)
                else:
                    self._refuse_leap(leap, "the stream ended before a line could confirm it")
            if self._held:
                self._release(force=True)
            if self.enhancer is not None:
                self._score(self._enhanced(self.enhancer.flush))
            self._deliver_flushed()
            for position in sorted(self._pending):
                self._finish(self._pending.pop(position).result, "rejected", reason="stream ended in warm-up")

    def report(self) -> dict[str, Any]:
        if self._callback_thread == threading.get_ident():  # from on_result: the lock is held here
            return self._report()
        with self._lock:  # e.g. from a monitoring thread while lines arrive
            return self._report()

    def _report(self) -> dict[str, Any]:
        return {
            "health": self.health.to_dict(),
            "latency_ms": self.profiler.summary(),
            "causal_settings": self.settings.to_dict(),
            "reduced_bands": self.rx.bands,
            "scorer": self.scorer,
            "look_ahead_lines": self.look_ahead_lines,
        }

    @property
    def look_ahead_lines(self) -> int:
        """Lines that must arrive after a line before it can be scored (enhancement + scorer)."""
        return self.rx.look_ahead_lines + (0 if self.enhancer is None else self.enhancer.look_ahead_lines)

    # ------------------------------------------------------------------ internals

    def _score(self, lines: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for line, valid in lines:
            with self.profiler.stage("statistics+rx"):
                refreshes, restarts, undone = self.rx.refreshes, self.rx.restarts, self.rx.restarts_undone
                scored = self.rx.push(line, valid)
                self.health.statistics_refreshes += self.rx.refreshes - refreshes
                self.health.statistics_restarts += self.rx.restarts - restarts
                self.health.statistics_restarts_undone += self.rx.restarts_undone - undone
            self._flag_outliers()
            self._deliver(scored)

    def _flag_outliers(self) -> None:
        """Flag the lines whose pixels the statistics' outlier gate kept out (they are scored)."""
        for position, pixels, most in self.rx.screened:
            flags = self._pending[self._rx_base + position].result.flags
            flags += ["outlier-pixels", "background-change"] if most else ["outlier-pixels"]
            self.health.outlier_pixels += pixels

    def _check_index(self, index: int) -> str | None:
        back_run, self._back_run = self._back_run, None
        last = self._last_index
        if last is not None and index <= last:
            seen = index in self._released  # processed lately (the last one included)
            if not self._counter_restarted(index, back_run, seen):
                if seen:
                    self.health.duplicates += 1
                    return "duplicate index"
                return f"out-of-order index (after {last})"
        self._advance_to(index)
        return None

    def _advance_to(self, index: int) -> None:
        """Without a reorder window: ``index`` is the stream's newest line; those between the
        newest before and it are given up."""
        if self._last_index is not None and index > self._last_index + 1:
            self._give_up(self._last_index + 1, index)
        self._last_index = index
        self._released.append(index)  # (a resend of it is a duplicate: _counter_restarted)

    def _give_up(self, first: int, stop: int) -> None:
        """Indices ``first`` to ``stop - 1`` will not be processed: missing, unless one arrives
        after all (:meth:`_counter_restarted`)."""
        # lines rejected for a leap the next line did not confirm (one index may have come twice)
        arrived = {index for index in self._refused_leaps if first <= index < stop}
        for index in arrived:
            self._refused_leaps.remove(index)
        self.health.missing_indices += stop - first - len(arrived)
        remembered = range(max(first, stop - GIVEN_UP_MEMORY), stop)
        self._given_up.extend(index for index in remembered if index not in arrived)

    def _counter_restarted(self, index: int, back_run: tuple[int, int] | None, seen: bool) -> bool:
        """Whether a line whose index is not past the stream's restarts the line counter (the rule
        is the module docstring's). ``back_run``: (first index, lines) of the consecutive lines
        just before that went back; ``seen``: the index was processed lately or is held.
        An index given up on is a line too late (rejected, not missing after all: the latest
        :data:`GIVEN_UP_MEMORY`). On a restart the stream follows the counter from this line, as
        after a leap ahead (the lines of the run before are lost), in a new segment whose rows
        continue past the rows before; lines held in the reorder window go first. Else the line
        is rejected, and the run it continues kept in case the next line continues it."""
        if index in self._given_up:
            self._given_up.remove(index)
            self.health.missing_indices -= 1
            return False
        if seen:  # a resend of a line processed lately, whatever follows
            return False
        continues = back_run is not None and index == back_run[0] + back_run[1]
        first, lines = (back_run[0], back_run[1] + 1) if back_run is not None and continues else (index, 1)
        near_zero = first <= COUNTER_RESTART_MAX_INDEX and lines >= 2
        if not near_zero and lines < COUNTER_RESTART_CONFIRM_LINES:
            self._back_run = (first, lines)
            return False
        self.health.counter_resets += 1
        if self._held:
            self._release(force=True)
        newest_row = self._row_offset + (self._last_index if self._last_index is not None else -1)
        self._segment += 1
        self._row_offset = newest_row + 1 - first  # the run's first line takes the next row
        self._segment_first = first  # a line below it has no row of this segment
        self._last_index, self._max_seen = None, -(2**62)
        self._released.clear()
        self._given_up.clear()
        self._refused_leaps.clear()
        return True

    def _check_shape(self, pixels: np.ndarray, taken: LineResult | None = None) -> str | None:
        """Why the line cannot be scored by this stream's statistics (its shape or values), or
        None. ``taken``: the line's result when it is taken into the stream now - a line of
        another band count then counts towards re-initialising (a line held, or released from the
        window, is checked only)."""
        try:  # (a torch tensor's own dtype is no numpy dtype)
            array = np.asarray(pixels)
        except Exception as error:  # a ragged list, a tensor that requires grad: the line is rejected
            return f"pixels are not an array ({type(error).__name__}: {str(error)[:120]})"
        shape, kind = array.shape, array.dtype
        if kind.kind not in "biuf":  # strings, objects, complex numbers
            return f"pixels of type {kind} are not real numbers"
        if shape == (self.width, self.bands):
            if taken is not None:
                self._new_band_count = (0, 0)
            return None
        another_band_count = len(shape) == 2 and shape[0] == self.width and shape[1] >= 2
        if taken is not None and another_band_count and self.reinit_after > 0:
            bands, count = self._new_band_count
            count = count + 1 if bands == shape[1] else 1
            self._new_band_count = (shape[1], count)
            if count >= self.reinit_after:
                self._release(force=True)  # held lines of the old band count go first
                self._reinitialise(shape[1], taken.sequence)
        return f"line shape {shape}, expected ({self.width}, {self.bands})"

    def _use_sensor_bands(self, bands: int) -> None:
        """The sensor's band count; the good-band mask given applies to lines of its length only
        (at another count every band is good), the no-data value and saturation level to all."""
        self.bands = bands
        given = self._given_good_bands
        fits = given is not None and given.size == bands
        self.pixel_rule = replace(self.pixel_rule, good=given if fits else None)
        self._ones = np.ones(self.detection_bands, dtype=np.float32)

    def _use_reduction(self, reduction: np.ndarray | None) -> None:
        """The band reduction applied to each line's good bands (None: none)."""
        self.reduction = None if reduction is None else np.asarray(reduction, dtype=np.float64)
        self._reduction32 = None if self.reduction is None else self.reduction.astype(np.float32)
        self._gather = None if self.reduction is None else sparse_rows(self.reduction)

    @property
    def detection_bands(self) -> int:
        """The bands scored of each line: the sensor's good bands."""
        good = self.pixel_rule.good
        return self.bands if good is None else int(good.sum())

    def detection_wavelengths(self) -> np.ndarray | None:
        """The good bands' centres (nm), when the wavelengths given fit the sensor's bands now."""
        if self.wavelengths is None or self.wavelengths.size != self.bands:
            return None
        good = self.pixel_rule.good
        return self.wavelengths if good is None else self.wavelengths[good]

    def _reinitialise(self, bands: int, sequence: int) -> None:
        """The sensor now sends ``bands`` bands (``reinit_after`` lines in a row): start new
        statistics. A band reduction is rebuilt for the new count; an enhanced stream falls back
        to plain RX (32 bands) - its graph is built for one band count - flagged ``plain-rx``."""
        if self.enhancer is not None:  # lines it still holds are finished with the old statistics
            lines = self._enhanced(self.enhancer.flush)
            if self.enhancer is not None:  # (a failed flush has already restarted everything)
                self._score(lines)
                self.enhancer = None
                self.fallback_flag = "plain-rx"
        self._restart(bands, "statistics re-initialised")
        known = self.detection_wavelengths() is not None
        self.health.reinitialisations += 1
        self.band_changes.append({
            "sequence": sequence,  # the line that decided it
            "bands": bands,
            "reduced_bands": self.rx.bands,
            "resampling": "none" if self.reduction is None else "wavelength" if known else "band_index",
        })  # fmt: skip

    def _enhanced(self, call: Callable[..., Any], *args: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """``enhancer.push`` / ``flush``; when the network fails, the stream goes on with plain RX
        (flag ``plain-rx``): the lines the enhancer held, and those of an unfinished warm-up, are
        rejected with the failure as the reason, and the statistics start again."""
        try:
            lines = call(*args)
            if self.enhancer is not None:
                self.health.normalisation_refits = self.enhancer.refits
                self.health.normalisation_refits_undone = self.enhancer.refits_undone
            return lines
        except EnhancementError as error:
            self.enhancer = None
            self.fallback_flag = "plain-rx"
            self.health.enhancement_failures += 1
            self._restart(self.bands, str(error))
            return []

    def _restart(self, bands: int, reason: str) -> None:
        """New statistics for ``bands`` sensor bands (plain RX on the reduced bands); lines still
        waiting for a score are scored if the old statistics can, else rejected with ``reason``."""
        from edge_had.stream.run import DEFAULT_REDUCED_BANDS, band_reduction

        reduced = self.reduction.shape[0] if self.reduction is not None else DEFAULT_REDUCED_BANDS
        self._deliver_flushed()
        for position in sorted(self._pending):  # still in the old warm-up or in the enhancer
            self._finish(self._pending.pop(position).result, "rejected", reason=reason)
        self._rx_base = self._position  # the new statistics count lines from here
        self._use_sensor_bands(bands)
        scored = self.detection_bands
        self._use_reduction(band_reduction(scored, reduced, self.detection_wavelengths()))
        self.rx = self._new_scorer(scored if self.reduction is None else self.reduction.shape[0])
        self._new_band_count = (0, 0)

    def _new_scorer(self, bands: int) -> CausalRX | CausalHybridRX:
        if self.scorer == "hybrid":
            return CausalHybridRX(bands, self.settings, line_math=self.line_math, local_math=self.local_math)
        return CausalRX(bands, self.settings, self.line_math)

    def _deliver_flushed(self) -> None:
        scored = self.rx.flush()
        self._flag_outliers()  # a warm-up ended by the flush
        self._deliver(scored)

    def _deliver(self, scored: list[tuple[int, np.ndarray, bool]]) -> None:
        now = time.perf_counter()
        for position, scores, late in scored:
            pending = self._pending.pop(self._rx_base + position)
            if late:
                pending.result.flags += ["warm-up", "late"]
            else:
                total = now - pending.arrival
                self.profiler.record(TOTAL, total)
                if self._is_late(pending, total) and "deadline-miss" not in pending.result.flags:
                    pending.result.flags.append("deadline-miss")
                    self.health.deadline_misses += 1
            self._finish(pending.result, "scored", scores=scores.astype(np.float32))

    def _is_late(self, pending: _Pending, total: float) -> bool:
        """A line cannot be scored before its look-ahead lines have arrived: it is late when
        scoring takes longer than its own period plus theirs - the line periods up to the line
        that completed its look-ahead (missing lines in between still took their periods). The
        time the reorder window had waited for a late or missing index when it released this
        line or that one is the window's, not scoring's. A line the scorer flushes (at finish or
        a re-initialisation: its look-ahead never came) is not judged."""
        if self.budget_s is None or self._completing is None:
            return False
        completing_index, completing_wait = self._completing
        periods = 1 + max(self.look_ahead_lines, completing_index - pending.result.index)
        excused = max(pending.window_wait_s, completing_wait)
        return total - excused > self.budget_s * periods

    def _finish(
        self, result: LineResult, state: str, *, reason: str | None = None, scores: np.ndarray | None = None
    ) -> LineResult:
        result.state, result.reason, result.scores = state, reason, scores
        if state == "scored":
            self.health.lines_scored += 1
        elif state == "rejected":
            self.health.lines_rejected += 1
        else:
            self.health.lines_dropped += 1
        if reason:
            self.health.reasons[reason.split(" (")[0]] += 1
        self.health.flags.update(result.flags)
        if self.on_result is not None:
            self._callback_thread = threading.get_ident()
            try:
                self.on_result(result)
            except Exception as error:  # the consumer's fault: the stream and its accounting go on
                self.health.callback_errors += 1
                if self.health.first_callback_error is None:
                    self.health.first_callback_error = f"line {result.index}: {type(error).__name__}: {error}"
                    logging.getLogger(__name__).exception("on_result raised for line %s", result.index)
            finally:
                self._callback_thread = None
        return result

    def _refuse_from_callback(self, name: str) -> None:
        if self._callback_thread == threading.get_ident():
            raise RuntimeError(
                f"{name}() was called from on_result, which runs under the pipeline's lock; "
                "hand the result to a queue and call it from another place"
            )
