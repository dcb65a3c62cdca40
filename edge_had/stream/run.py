"""Drive a line source through a :class:`StreamPipeline` and collect what a report needs.

BLAS threads: the loop runs numpy's BLAS on **one thread** (``blas_threads=1``, via threadpoolctl,
for the duration of the loop). Causal RX works on K <= 64 bands, where threads gain nothing, and
an idle multi-threaded OpenBLAS pool competes with the inference runtime's threads for the cores:
at the FX10 shape on 2 cores the full pipeline (ONNX Runtime FP32 enhancement + causal RX) ran
325-330 lines/s with 2 BLAS threads and 377-420 with 1; with torch 168-170 vs 356-393.

Overload policy (paced sources): a line that the loop reaches more than one line budget after its
timestamp is processed but flagged ``deadline-miss`` (counted); one that is already more than
``max_lag_s`` behind its timestamp is dropped (state ``dropped``, reason ``overload``) instead of
processed, so the loop catches up with the sensor rather than falling further behind; every
drop is counted. Unpaced replays never drop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from edge_had.band_resampling import KERNELS, Kernel
from edge_had.stream.causal import CausalSettings
from edge_had.stream.pipeline import LineResult, StreamPipeline
from edge_had.stream.sources import Line, scene_lines

#: The streaming RX configuration every reported number uses (band reduction to K canonical bands
#: on band index, cumulative statistics, factor refreshed every line, loading 1e-6 x trace / K,
#: 10 warm-up lines scored late). Taken from the prototype leads in docs/DESIGN.md, which were
#: measured on the ten ABU scenes: numbers on those scenes are labelled "tuned on these scenes".
DEFAULT_REDUCED_BANDS = 32
DEFAULT_SETTINGS = CausalSettings()


def checked_reduction_kernel(kernel: str, enhanced_detector: str | None = None) -> Kernel:
    """``kernel`` as a kernel of the plain streams' band reduction: a ValueError for an unknown
    one, or for any but the default when the stream is ``enhanced_detector``'s (its model's
    adapter resamples the bands; no reduction)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown reduction kernel {kernel!r}; use one of {list(KERNELS)}")
    if enhanced_detector is not None and kernel != "linear":
        raise ValueError(
            f"reduction kernel {kernel!r} (--reduction-kernel): only rx and hybrid-rx reduce "
            f"bands; {enhanced_detector}'s model resamples them itself"
        )
    return cast(Kernel, kernel)


@dataclass
class StreamRun:
    pipeline: StreamPipeline
    seconds: float
    scores: dict[int, np.ndarray] = field(default_factory=dict)  # row along track -> scores
    interrupted: bool = False  # ``stop`` was set: the lines after it were not read
    #: (row, index) of each scored line whose row another line had been scored into already (a
    #: bug: rows are unique): its scores are not kept, and run_stream raises RowScoredTwiceError
    rows_scored_twice: list[tuple[int, int]] = field(default_factory=list)

    def score_map(self, rows: int, width: int) -> np.ndarray:
        """The kept score lines as a ``(rows, width)`` map, row ``r`` the line whose
        :attr:`~edge_had.stream.pipeline.LineResult.row` is ``r`` (its index until the line counter
        first restarts); lines without scores are NaN."""
        scores = np.full((rows, width), np.nan, dtype=np.float32)
        for row, line_scores in self.scores.items():
            scores[row] = line_scores
        return scores

    @property
    def lines_per_second(self) -> float:
        return self.pipeline.health.lines_in / self.seconds if self.seconds > 0 else float("inf")


class RowScoredTwiceError(RuntimeError):
    """:func:`run_stream` scored lines into rows other lines had (a bug: every line has its own
    row). Raised once the stream has finished; ``run`` holds what it produced, each row with the
    first line scored into it."""

    def __init__(self, run: StreamRun) -> None:
        self.run = run
        twice = run.rows_scored_twice
        named = ", ".join(f"row {row} (line {index})" for row, index in twice[:5])
        more = f" and {len(twice) - 5} more" if len(twice) > 5 else ""
        super().__init__(
            f"{len(twice)} scored line(s) went to a row another line had been scored into (a bug): "
            f"{named}{more}; each row keeps the first line's scores"
        )


def band_reduction(
    bands: int,
    k: int | None = DEFAULT_REDUCED_BANDS,
    wavelengths: np.ndarray | None = None,
    kernel: str = "linear",
) -> np.ndarray | None:
    """The ``(k, bands)`` resampling matrix of plain causal RX (None: no reduction, or k >= bands):
    on ``wavelengths`` (nm) when known - ``k`` bands evenly spaced over the sensor's own range, so
    a VNIR or thermal sensor keeps ``k`` distinct bands (the model's canonical grid is for the
    model: a 400-1000 nm sensor would fill most of its bands with copies of the last one) - on
    band index otherwise. ``kernel``: ``"linear"`` (interpolation, 2 sensor bands per reduced band:
    the default) or ``"triangle"`` (band-averaging over the sensor bands a reduced band spans, rows
    summing to 1, weights slightly negative near the range ends: less noise on many noisy bands;
    :mod:`edge_had.band_resampling`)."""
    from edge_had.band_resampling import band_index_matrix, wavelength_matrix  # numpy: no torch

    kernel = checked_reduction_kernel(kernel)
    if k is None or k >= bands:
        return None
    if wavelengths is None:
        return band_index_matrix(bands, k, kernel=kernel)[0]
    centres = np.asarray(wavelengths, dtype=np.float64).ravel()
    if centres.size != bands:
        raise ValueError(f"{centres.size} wavelengths for {bands} bands")
    lo, hi = float(np.min(centres)), float(np.max(centres))
    return wavelength_matrix(centres, k, lo=lo, hi=hi, kernel=kernel)[0]


#: A paced loop drops a line that reaches it more than this many line periods behind its
#: timestamp, on top of the pipeline's look-ahead (:func:`paced_max_lag_s`).
OVERLOAD_LINES = 2


def paced_max_lag_s(pipeline: StreamPipeline, line_rate_hz: float) -> float:
    """How far behind its timestamp a line may reach a paced loop before it is dropped as
    ``overload``: :data:`OVERLOAD_LINES` line periods plus the pipeline's look-ahead. An enhanced
    stream runs its network once per block of lines, in the push of the line that completes the
    block: the lines that arrive meanwhile wait for that push, and their lag up to the look-ahead
    is the block's, not an overload (it was 2 periods whatever the look-ahead: a network busy 15 %
    of the time had 7-10 % of its lines dropped, a review). The deadline the lines scored are
    judged by allows the same look-ahead (``StreamPipeline._is_late``)."""
    return (OVERLOAD_LINES + pipeline.look_ahead_lines) / line_rate_hz


def run_stream(
    lines: Iterable[Line],
    pipeline: StreamPipeline,
    *,
    max_lag_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    keep_scores: bool = True,
    on_result: Callable[[LineResult], None] | None = None,
    blas_threads: int | None = 1,
    stop: threading.Event | None = None,
) -> StreamRun:
    """Push every line into ``pipeline`` (dropping those more than ``max_lag_s`` behind ``clock``),
    then finish it. ``stop``: when set, no further line is read and the stream finishes with the
    lines received so far (``interrupted`` in the run), checked between lines, never inside one.
    A line scored into a row another line had (a bug) keeps neither the stream nor the callbacks
    from going on; once finished, :class:`RowScoredTwiceError` says so (its ``run``: the run)."""
    run = StreamRun(pipeline, 0.0)
    downstream = pipeline.on_result

    def collect(result: LineResult) -> None:
        if keep_scores and result.state == "scored" and result.scores is not None and result.row is not None:
            if result.row in run.scores:  # a row is one line's: never overwritten (raised at the end)
                run.rows_scored_twice.append((result.row, result.index))
            else:
                run.scores[result.row] = result.scores
        if downstream is not None:
            downstream(result)
        if on_result is not None:
            on_result(result)

    pipeline.on_result = collect
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        for line in lines:
            lag = clock() - line.timestamp if max_lag_s is not None else 0.0
            if max_lag_s is not None and lag > max_lag_s:
                pipeline.drop(line.index, line.timestamp, "overload", line.meta)
            else:
                late = pipeline.budget_s is not None and lag > pipeline.budget_s
                pipeline.push(line.pixels, line.index, line.timestamp, line.meta, late=late)
            if stop is not None and stop.is_set():  # after the line it took: none is lost
                run.interrupted = True
                break
        pipeline.finish()
    run.seconds = time.perf_counter() - start
    pipeline.on_result = downstream
    if run.rows_scored_twice:
        raise RowScoredTwiceError(run)
    return run


def stream_scene_scores(
    cube: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    k: int | None = DEFAULT_REDUCED_BANDS,
    settings: CausalSettings = DEFAULT_SETTINGS,
    enhancer: Any = None,
    scorer: str = "global",
    wavelengths: np.ndarray | None = None,
    reduction_kernel: str = "linear",
) -> tuple[np.ndarray, StreamRun]:
    """Stream a cube's rows through causal RX (``scorer`` global or hybrid) - plain on ``k``
    reduced bands (resampled on ``wavelengths`` when given, with ``reduction_kernel``:
    :func:`band_reduction`), or after the ``enhancer`` (a
    :class:`~edge_had.stream.enhance.StreamEnhancer`) - and return the ``(rows, cols)`` score map
    (unscored lines: NaN) and the run. Invalid pixels (``valid`` False) are set to NaN before
    streaming."""
    cube = np.asarray(cube, dtype=np.float32)
    rows, cols, bands = cube.shape
    reduction = None if enhancer is not None else band_reduction(bands, k, wavelengths, reduction_kernel)
    pipeline = StreamPipeline(
        cols,
        bands,
        reduction=reduction,
        settings=settings,
        enhancer=enhancer,
        scorer=scorer,
        reduction_kernel=reduction_kernel,
    )
    run = run_stream(scene_lines(cube, valid=valid), pipeline)
    return run.score_map(rows, cols), run


def stream_report(run: StreamRun, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "lines_per_second": run.lines_per_second,
        "seconds": run.seconds,
        **run.pipeline.report(),
        **(extra or {}),
    }
