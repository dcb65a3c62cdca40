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
  numbers or not an array numpy can read, duplicate or out-of-order index, implausible index
  jump, no valid pixel);
* ``dropped`` - overload (:meth:`drop`, used by :func:`edge_had.stream.run.run_stream` when it
  falls behind a paced sensor by more than its allowed lag; a drop of an index already seen is
  rejected as a duplicate instead).

``on_result`` runs on the pushing thread under the pipeline's lock: it must not call ``push``,
``drop`` or ``finish`` (a :class:`RuntimeError` says so; hand results to a queue instead). An
exception it raises is caught and counted (``callback_errors`` in health, the first one logged and
kept as ``first_callback_error``), so a faulty consumer cannot stop the stream or lose a line.

Where a line's index puts it is :mod:`edge_had.stream.line_order`'s (its docstring has every
rule): the reorder window (``reorder_window = R > 0``: a line that arrives after a later one is
held and processed in order, flag ``reordered``), gaps counted as ``missing_indices``,
duplicates, lines too late, an index that leaps ahead (held, its ``push`` returning ``pending``,
until the next line confirms it), a line counter that restarts (followed in a new counter
``segment``; each line's ``row`` along track is its own). The pipeline keeps the pixels of the
lines held meanwhile and processes those released, in order.

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
health: :mod:`edge_had.stream.causal`); ``int16-extremes``: int16 samples no signed
measurement reaches in a good band - a camera's unsigned values read as signed, or an
undeclared fill value (:func:`~edge_had.io.plausibility.int16_extremes`), scored as they are;
``deadline-miss``: from arrival to score, less the
time the reorder window had waited for a late or missing index when it released the line or the
line completing its look-ahead (at most its length plus the missing lines it gave up on, or the
line periods up to the newest line arrived if more), the line took longer than the budget times
1 + the line periods its look-ahead spans, missing lines included, i.e. scoring fell behind;
lines scored by a flush, at ``finish`` or a re-initialisation, are not judged). Lines held in
the reorder window when the band count changes are processed first, with the old statistics.
When the enhancement network fails, the
stream goes on with plain RX (flag ``plain-rx``, ``enhancement_failures`` in health) from the line
it failed on (from the first line when its warm-up failed); the lines the enhancer held are
rejected with the failure as the reason.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_had.io.plausibility import int16_extremes
from edge_had.io.scene import MASK_REASONS, PixelRule
from edge_had.stream.causal import NUMPY_LINE_MATH, CausalRX, CausalSettings, LineMath
from edge_had.stream.causal_local import CausalHybridRX, LocalLineMath
from edge_had.stream.enhance import EnhancementError
from edge_had.stream.line_order import LEAP_TRUST_LINES, Entry, Leap, LineOrder, Release
from edge_had.stream.profiler import TOTAL, StageProfiler

STATES = ("scored", "rejected", "dropped")
SCORERS = ("global", "hybrid")


#: The reason of a line rejected because every pixel of it is masked (its row is kept).
NO_VALID_PIXEL = "no valid pixel"


@dataclass
class LineResult:
    """One line's outcome. ``index`` is the sensor's line number, which repeats after a restarted
    or wrapped counter; ``segment`` counts the counter restarts and wraps the stream had followed
    when the line came (0 before any), and ``row`` is the line's place along track, unique in the
    stream: its index shifted past the rows before the restart (the index itself until the first
    restart; a restart's lost lines keep their rows, unscored; after a wrap, the rows go on as if
    the counter had not wrapped). ``row`` is None for a line rejected for its
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
    counter_wraps: int = 0  # a counter of known width (counter_bits) wrapped past its last value
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


def checked_count(name: str, value: Any, least: int) -> int:
    """``value`` as an int of at least ``least`` (a numpy integer too), or ValueError naming it: a
    width or band count read as text or float from a header must not fail later with numpy's or
    torch's message, nor 0 reject every line."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    return int(value)


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
class _Line:
    """A line the line order holds (in the reorder window, or as a leap ahead) until its turn.
    ``pixels``: a copy (the caller may reuse its buffer; a leaping line's only when its shape is
    the stream's), or None for a dropped line (``drop_reason``)."""

    result: LineResult
    pixels: Any
    arrival: float
    drop_reason: str | None = None


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
    re-initialisation for another band count every band is good; the values still apply.
    ``reduction_kernel``: the kernel (``"linear"`` or ``"triangle"``:
    :func:`edge_had.stream.run.band_reduction`) of the 32-band reductions the pipeline builds
    itself - after a re-initialisation for another band count, or for a failed enhancement's
    plain RX - as ``reduction`` was built with (give the same). ``counter_bits``: the width of the
    sensor's line counter when it wraps (None: not known), so that a wrap costs no line, and
    ``counter_start`` the value it wraps to (0, or 1 for a counter that skips 0)
    (:mod:`edge_had.stream.line_order`)."""

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
        reduction_kernel: str = "linear",
        counter_bits: int | None = None,
        counter_start: int = 0,
    ) -> None:
        from edge_had.stream.run import checked_reduction_kernel

        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; choose one of {SCORERS}")
        width, bands = checked_count("width", width, 1), checked_count("bands", bands, 1)
        reorder_window = checked_count("reorder_window", reorder_window, 0)
        self.scorer = scorer
        self.reduction_kernel = checked_reduction_kernel(reduction_kernel)
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
        self._arrived_index: int | None = None  # the index of the line pushed or dropped last
        self._finished = False
        self._pending: dict[int, _Pending] = {}  # CausalRX position -> line waiting for its score
        self._position = 0
        self._rx_base = 0  # pipeline position of the current statistics' first line
        self.reinit_after = reinit_after
        self._new_band_count = (0, 0)  # (band count, consecutive lines) of lines with another count
        #: each re-initialisation for a new band count: the ``sequence`` of the line that decided it,
        #: the new ``bands``, the ``reduced_bands`` scored and their ``resampling``
        self.band_changes: list[dict[str, Any]] = []
        self.fallback_flag: str | None = None
        # where each index goes
        self.order: LineOrder[_Line] = LineOrder(reorder_window, self.health, counter_bits, counter_start)

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
        self.refuse_from_callback("push")
        index = _line_index(index)
        with self._lock:
            result = self._received(index, timestamp, meta)
            if late:
                result.flags.append("deadline-miss")
                self.health.deadline_misses += 1
            if self._finished:
                return self._finish(result, "rejected", reason="stream finished (finish() was called)")
            self._settle_leap(index)
            if self.order.leaps(index):
                self._hold_leap(result, pixels, arrival)
                return result
            return self._take(pixels, result, arrival)

    def drop(
        self, index: int, timestamp: float, reason: str = "overload", meta: dict[str, Any] | None = None
    ) -> LineResult:
        """Account for a line the caller could not process in time (an index seen before, or one
        beyond the reorder window, is rejected as :meth:`push` would reject it; so is any line
        after :meth:`finish`)."""
        self.refuse_from_callback("drop")
        index = _line_index(index)
        with self._lock:
            result = self._received(index, timestamp, meta)
            if self._finished:
                return self._finish(result, "rejected", reason="stream finished (finish() was called)")
            self._settle_leap(index)
            if self.order.leaps(index):
                self._hold_leap(result, None, 0.0, drop_reason=reason)
                return result
            return self._take_drop(result, reason)

    def finish(self) -> None:
        """End of stream: lines still in warm-up are scored (late) if they can be, else rejected;
        lines pushed afterwards are rejected."""
        self.refuse_from_callback("finish")
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._settled(self.order.end_leap())  # no line came to confirm it: trusted if it leapt little
            self._process_released(self.order.release_all())
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
    def reorder_window(self) -> int:
        """Lines held to put late lines back in order (0: none): the line order's."""
        return self.order.reorder_window

    @property
    def look_ahead_lines(self) -> int:
        """Lines that must arrive after a line before it can be scored (enhancement + scorer)."""
        return self.rx.look_ahead_lines + (0 if self.enhancer is None else self.enhancer.look_ahead_lines)

    def _received(self, index: int, timestamp: float, meta: dict[str, Any] | None) -> LineResult:
        """A new line's result, counted in ``lines_in`` and numbered in arrival order."""
        self.health.lines_in += 1
        self._arrived_index = index
        return LineResult(index, timestamp, "pending", meta=meta, sequence=self.health.lines_in - 1)

    # ------------------------------------------------------------------ where each line goes

    def _take(self, pixels: Any, result: LineResult, arrival: float, waited_s: float = 0.0) -> LineResult:
        """A pushed line that does not leap ahead (or whose leap the next line confirmed, after
        ``waited_s`` held): checked, then processed, or held in the reorder window (a copy: the
        caller may reuse its buffer before this line's turn comes)."""
        entry = self._enter(result)
        if entry.problem is not None:
            return self._finish(result, "rejected", reason=entry.problem)
        if entry.reordered:  # (a dropped line is not flagged)
            result.flags.append("reordered")
        problem = self._check_shape(pixels, result)  # may re-initialise, releasing every held line first
        if self.reorder_window == 0:
            if problem is not None:
                return self._finish(result, "rejected", reason=problem)
            self._process(pixels, result, arrival, window_wait_s=waited_s)
            return result
        if problem:
            self._finish(result, "rejected", reason=problem)
        line = None if problem else _Line(result, np.asarray(pixels).copy(), arrival)
        self._process_released(self.order.hold(result.index, line))
        return result

    def _take_drop(self, result: LineResult, reason: str) -> LineResult:
        """A dropped line that does not leap ahead (or whose leap was confirmed)."""
        entry = self._enter(result)
        if entry.problem is not None:
            return self._finish(result, "rejected", reason=entry.problem)
        if self.reorder_window > 0:  # arrived (and dropped): nothing to wait for
            self._process_released(self.order.hold(result.index, None))
        return self._finish(result, "dropped", reason=reason)

    def _enter(self, result: LineResult) -> Entry[_Line]:
        """The line order's verdict on the line's index (:meth:`LineOrder.enter`): the lines a
        counter restart released go first; a line taken gets its counter segment and its row
        along track."""
        entry = self.order.enter(result.index)
        self._process_released(entry.released)
        if entry.problem is None:
            self._place(result)
        return entry

    def _place(self, result: LineResult) -> None:
        """The line's index is the stream's: give it its counter segment and its row along track."""
        result.segment, result.row = self.order.place(result.index)

    def _hold_leap(
        self, result: LineResult, pixels: Any, arrival: float, drop_reason: str | None = None
    ) -> None:
        """Hold a leaping line (a copy of its pixels) until the next line arrives."""
        if pixels is not None and self._check_shape(pixels) is None:
            pixels = np.asarray(pixels).copy()  # the caller may reuse its buffer (a tensor has no copy=)
        self.order.hold_leap(result.index, _Line(result, pixels, arrival, drop_reason))

    def _settle_leap(self, index: int) -> None:
        """A line ``index`` arrived: the line that leapt before it, if any, is taken or rejected
        now (:meth:`LineOrder.settle_leap`); the caller judges ``index`` in turn."""
        self._settled(self.order.settle_leap(index))

    def _settled(self, settled: tuple[Leap[_Line], str | None] | None) -> None:
        """A held leap the line order settled: rejected with its reason, or taken now."""
        if settled is None:
            return
        leap, refusal = settled
        if refusal is not None:
            self._finish(leap.line.result, "rejected", reason=refusal)
        elif leap.line.drop_reason is not None:
            self._take_drop(leap.line.result, leap.line.drop_reason)
        else:
            self._take_leap(leap)

    def _take_leap(self, leap: Leap[_Line]) -> None:
        """Take a held line whose leap was confirmed (or trusted at the stream's end). It waited
        for the next line - the window's wait, not scoring's - up to the line periods of the line
        and of the lines it leapt over (as :meth:`_window_wait`: those took their periods)."""
        line = leap.line
        waited = time.perf_counter() - line.arrival
        # (newest None: the first line; a leap over a counter's wrap counts the lines across it)
        leapt_over = 0 if leap.newest is None else self.order.lines_ahead(leap.newest, leap.index) - 1
        self._take(
            line.pixels, line.result, line.arrival, min(waited, (1 + leapt_over) * (self.budget_s or 0.0))
        )

    def _process_released(self, released: Release[_Line]) -> None:
        """Process the lines the reorder window released, in order."""
        window_wait = self._window_wait(released)
        for line in released.lines:
            problem = self._check_shape(line.pixels)  # held across a re-init?
            if problem is None:
                self._process(line.pixels, line.result, line.arrival, window_wait_s=window_wait)
            else:
                self._finish(line.result, "rejected", reason=problem)

    def _window_wait(self, released: Release[_Line]) -> float:
        """How long the window delayed the lines it releases now (waiting for a late or missing
        index): the age of the oldest, at most the line periods the window may wait - its length
        plus the missing lines it gave up on now (they took their periods too), or, if more, the
        periods from the oldest line released to the newest arrived, lost lines between included
        (a review: lines lost after the held one made it wait longer, and the flag blamed
        scoring). Those lines, and earlier lines whose look-ahead they complete, were delayed that
        much by the window, not by scoring."""
        if not released.lines or self.budget_s is None:
            return 0.0
        now = time.perf_counter()
        oldest = max(now - line.arrival for line in released.lines)
        newest, arrived = self.order.newest_index(), self._arrived_index
        if newest is not None and arrived is not None and newest < arrived <= newest + LEAP_TRUST_LINES:
            newest = arrived  # it confirmed a held leap, which went in first and released these
        span = 0 if newest is None else newest - min(line.result.index for line in released.lines)
        periods = max(self.reorder_window + released.given_up, span)  # (span <= 0 across a wrap)
        return min(oldest, periods * self.budget_s)

    # ------------------------------------------------------------------ processing

    def _process(
        self, pixels: np.ndarray, result: LineResult, arrival: float, window_wait_s: float = 0.0
    ) -> None:
        with self.profiler.stage("preprocess"):
            values, valid = self._screen(pixels, result)
            line = self._reduce(values)
        if not valid.any():
            self._finish(result, "rejected", reason=NO_VALID_PIXEL)
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
        if int16_extremes(samples, self.pixel_rule.no_data_value)[0]:  # one min() for other lines
            result.flags.append("int16-extremes")
        return values, valid

    def _reduce(self, values: np.ndarray) -> np.ndarray:
        """The band reduction applied to a screened line, in float64 (the statistics' type)."""
        line = values
        if self._gather is not None:  # few bands per output band: gather, no GEMM
            columns, weights = self._gather
            line = np.einsum("wkn,kn->wk", line[:, columns], weights)
        elif self._reduction32 is not None:
            # float32 product (rows of more than MAX_GATHER_TAPS taps, e.g. the triangle kernel's):
            # each row's absolute weights sum to about 1 (the triangle kernel's slightly negative
            # weights near the range ends add little), so a reduced value is within a few float32
            # ulps of the line's magnitude; RX amplifies that by the covariance's conditioning
            # (triangle, 120 -> 32 bands: scores within 1.3e-5 of a float64 reduction's)
            line = line @ self._reduction32.T
        return line.astype(np.float64)

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
                self._process_released(self.order.release_all())  # held lines of the old band count go first
                self._reinitialise(shape[1], taken.sequence)
        transposed = (
            " (bands first, as a BIL file stores a line: pass it transposed - unless the pipeline was "
            f"built with width and bands the other way round: it takes {self.width} pixels of "
            f"{self.bands} bands)"
        )
        return f"line shape {shape}, expected ({self.width}, {self.bands})" + (
            transposed if shape == (self.bands, self.width) != (self.width, self.bands) else ""
        )

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
        wavelengths = self.detection_wavelengths()
        self._use_reduction(band_reduction(scored, reduced, wavelengths, self.reduction_kernel))
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

    def refuse_from_callback(self, name: str) -> None:
        """RuntimeError when called from ``on_result`` (``name``: what was called there)."""
        if self._callback_thread == threading.get_ident():
            raise RuntimeError(
                f"{name}() was called from on_result, which runs under the pipeline's lock; "
                "hand the result to a queue and call it from another place"
            )
