"""Detections as events: threshold each scored line, join above-threshold pixels into connected
components across lines (8-connectivity), emit a component when no pixel of the next line
continues it.

The threshold is parameter-free: the chi-square quantile of the RX statistic with ``dof`` degrees
of freedom (the scored bands) at false-alarm probability ``pfa`` per pixel (default 1e-6), which
holds for Gaussian background and is not fitted on any scene. Events carry the line range, pixel
range, peak score, area, the centroid of its pixels, the first line's timestamp and its ``meta``
(navigation data) and, from a source with a map (:mod:`edge_had.io.map_info`), the centroid's and
the box's map coordinates (:meth:`Event.to_json`). Lines are
numbered by their row along track (:attr:`~edge_had.stream.pipeline.LineResult.row`: the sensor's
index until its line counter restarts, then shifted past the rows before): ``first_line`` and
``last_line`` are rows of the score map, and ``segment`` and ``first_index`` say which counter
segment and which sensor index the first line had.

``min_area`` (default 1: every component) drops finished components of fewer pixels and counts
them in ``suppressed`` - isolated hot pixels are most false events on real scenes (bench
``event_threshold.py``: per fold on training scenes, the pair (pfa, min_area) is chosen jointly) -
except those cut by a gap in the line indices or by the start or end of the stream
(``truncated``: their size is unknown; a missing line must not make an object vanish).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_had.io.map_info import MapInfo


def chi2_threshold(dof: int, pfa: float = 1e-6) -> float:
    from scipy.stats import chi2

    return float(chi2.isf(pfa, dof))


def hybrid_threshold(dof_global: int, dof_local: int, pfa: float = 1e-6) -> float:
    """Threshold for hybrid scores ``sqrt(RX * LRX)``: the geometric mean of the two parts'
    chi-square thresholds (exact if the parts rank pixels alike; looser when they disagree)."""
    return float(np.sqrt(chi2_threshold(dof_global, pfa) * chi2_threshold(dof_local, pfa)))


def stream_threshold(scorer: str, rx: Any, pfa: float) -> float:
    """The event threshold for the scores of a pipeline's scorer ``rx`` (``pipeline.rx``) at
    ``pfa``: :func:`chi2_threshold` of its bands for ``global`` causal RX, :func:`hybrid_threshold`
    of its bands and local components for ``hybrid``."""
    if scorer == "hybrid":
        return hybrid_threshold(rx.bands, rx.components, pfa)
    return chi2_threshold(rx.bands, pfa)


@dataclass
class Event:
    first_line: int
    last_line: int
    first_pixel: int
    last_pixel: int
    peak_score: float
    area: int
    timestamp: float
    meta: dict[str, Any] | None = None
    segment: int = 0  # the line counter's segment of the first line (restarts before it)
    first_index: int | None = None  # the sensor's index of the first line (None: its row)
    truncated: bool = False  # it touches a gap in the line indices, or the first or last line
    pixels: list[tuple[int, int]] = field(default_factory=list, repr=False)
    merged_into: Event | None = field(default=None, repr=False)

    def root(self) -> Event:
        event = self
        while event.merged_into is not None:
            event = event.merged_into
        return event

    def centroid(self) -> tuple[float, float]:
        """The mean (line, pixel) of the event's pixels (0-based; a pixel's centre is its index)."""
        rows, cols = np.asarray(self.pixels, dtype=np.float64).reshape(-1, 2).T
        return float(rows.mean()), float(cols.mean())

    def to_json(self, map_info: MapInfo | None = None) -> dict[str, Any]:
        """The event for ``events.jsonl``: its fields, its pixels' ``centroid_line`` and
        ``centroid_pixel`` and, given the source's ``map_info`` (its rows the file's lines),
        ``map_x``/``map_y`` - the map position of the centroid's pixel centre - and ``map_box``,
        the [x, y] outer corners of its box (first line's first pixel, first line's last pixel,
        last line's last pixel, last line's first pixel)."""
        out = asdict(self)
        del out["pixels"], out["merged_into"]
        line, pixel = self.centroid()
        out["centroid_line"], out["centroid_pixel"] = line, pixel
        if map_info is not None:
            x, y = map_info.pixel_centre(line, pixel)
            out["map_x"], out["map_y"] = float(x), float(y)
            top, bottom = self.first_line, self.last_line + 1  # outer edges of the box's pixels
            left, right = self.first_pixel, self.last_pixel + 1
            xs, ys = map_info.to_map([top, top, bottom, bottom], [left, right, right, left])
            out["map_box"] = [[float(a), float(b)] for a, b in zip(xs, ys, strict=True)]
        return out

    def absorb(self, other: Event) -> None:
        if other.first_line < self.first_line:  # the event's timestamp and meta: its first line's
            self.timestamp, self.meta = other.timestamp, other.meta
            self.segment, self.first_index = other.segment, other.first_index
        self.first_line, self.last_line = (
            min(self.first_line, other.first_line),
            max(self.last_line, other.last_line),
        )
        self.first_pixel, self.last_pixel = (
            min(self.first_pixel, other.first_pixel),
            max(self.last_pixel, other.last_pixel),
        )
        self.peak_score = max(self.peak_score, other.peak_score)
        self.truncated = self.truncated or other.truncated
        self.area += other.area
        self.pixels += other.pixels
        other.merged_into = self


def judged(pixels: list[tuple[int, int]], gt: np.ndarray, labelled: np.ndarray | None = None) -> str:
    """An event's verdict against a ground-truth map, its ``pixels`` (line, pixel) rows of ``gt``:
    ``"true"`` when one of them is an anomaly, ``"false"`` when none is and every one is labelled
    (``labelled``: :attr:`~edge_had.io.scene.Scene.labelled`, None: all), else ``"unjudged"`` (an
    unlabelled pixel may be its cause)."""
    at = tuple(np.asarray(pixels, dtype=np.int64).reshape(-1, 2).T)
    if gt[at].any():
        return "true"
    return "false" if labelled is None or labelled[at].all() else "unjudged"


class EventDetector:
    """Feed scored lines in row order with :meth:`add`; collect finished events."""

    def __init__(self, threshold: float, min_area: int = 1) -> None:
        if min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {min_area}")
        self.threshold = threshold
        self.min_area = min_area
        self.suppressed = 0  # finished components smaller than min_area
        self._open: list[
            tuple[int, int, Event]
        ] = []  # (first pixel, last pixel, event) runs of the last line
        self._last_row: int | None = None

    def add(
        self,
        row: int,
        scores: np.ndarray,
        timestamp: float,
        meta: dict[str, Any] | None = None,
        *,
        segment: int = 0,
        index: int | None = None,
    ) -> list[Event]:
        """The line of ``row`` (its sensor ``index`` in counter ``segment``, when they differ)."""
        finished: list[Event] = []
        cut = self._last_row is None or row != self._last_row + 1  # the line after a gap, or the first
        if self._last_row is not None and cut:
            finished += self._close_all()  # a gap breaks connectivity
        self._last_row = row
        hot = np.nan_to_num(scores, nan=-np.inf) > self.threshold
        runs = _runs(hot)
        new_open: list[tuple[int, int, Event]] = []
        continued: set[int] = set()
        for start, stop in runs:
            peak = float(np.nanmax(scores[start : stop + 1]))
            pixels = [(row, p) for p in range(start, stop + 1)]
            first_index = row if index is None else index
            area = stop - start + 1
            event = Event(
                row, row, start, stop, peak, area, timestamp, meta, segment, first_index, cut, pixels
            )
            for k, (a, b, previous) in enumerate(self._open):
                if a <= stop + 1 and start <= b + 1:  # touching, diagonals included
                    continued.add(k)
                    root = previous.root()
                    if root is not event:
                        root.absorb(event)
                        event = root
            new_open.append((start, stop, event))
        alive = {id(event.root()) for _, _, event in new_open}
        for _, _, previous in self._open:
            if id(previous.root()) not in alive:
                finished.append(previous.root())
        self._open = [(a, b, event.root()) for a, b, event in new_open]
        return self._large_enough(_unique(finished))

    def finish(self) -> list[Event]:
        return self._large_enough(self._close_all())

    def _close_all(self) -> list[Event]:
        """Close every open event: cut by a gap or by the end of the stream, so truncated."""
        events = _unique([event.root() for _, _, event in self._open])
        for event in events:
            event.truncated = True
        self._open = []
        return events

    def _large_enough(self, events: list[Event]) -> list[Event]:
        """Complete events of ``min_area`` pixels or more, and every truncated one (its other part
        is unseen: a missing line must not make an object vanish)."""
        kept = [event for event in events if event.area >= self.min_area or event.truncated]
        self.suppressed += len(events) - len(kept)
        return kept


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _unique(events: list[Event]) -> list[Event]:
    seen: set[int] = set()
    out = []
    for event in events:
        if id(event) not in seen:
            seen.add(id(event))
            out.append(event)
    return out
