"""Line sources: where a pushbroom stream's lines come from.

Every source yields :class:`Line` objects (index, timestamp, ``(width, bands)`` float32 pixels,
optional ``meta``), in acquisition order:

* :func:`scene_lines` - replay a cube (rows are lines), as fast as possible or paced at a line rate;
* :func:`synthetic_lines` - the synthetic sensor as an endless (or bounded) stream: consecutive
  synthetic strips of ``strip_lines`` lines with successive seeds (a new strip is a new stretch of
  ground, as when a drone turns);
* :func:`envi_lines` - an ENVI file on disk read line by line through a memory map (BIL is the
  natural pushbroom layout; BIP/BSQ work, slower), each line's good bands in float32 with its
  invalid pixels (NaN/Inf, no-data) NaN, as :func:`edge_had.io.load_scene` reads the file.

Timestamps: ``t0 + index / line_rate`` when a line rate is given (the sensor clock), else the
monotonic clock when the line is produced. ``pace=True`` sleeps until each line is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Line:
    index: int
    timestamp: float
    pixels: np.ndarray
    meta: dict[str, Any] | None = field(default=None)


def _stamped(
    rows: Iterator[np.ndarray],
    line_rate: float | None,
    pace: bool,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Iterator[Line]:
    start = clock()
    for index, pixels in enumerate(rows):
        if line_rate:
            due = start + index / line_rate
            if pace:
                delay = due - clock()
                if delay > 0:
                    sleep(delay)
            stamp = due
        else:
            stamp = clock()
        yield Line(index, stamp, np.ascontiguousarray(pixels, dtype=np.float32))


def scene_lines(
    cube: np.ndarray,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Line]:
    """The rows of a ``(lines, width, bands)`` cube as a stream."""
    return _stamped(iter(cube), line_rate, pace, clock, sleep)


def synthetic_lines(
    width: int = 256,
    bands: int = 64,
    lines: int | None = None,
    seed: int = 0,
    strip_lines: int = 256,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    distinct_strips: int | None = None,
) -> Iterator[Line]:
    """The synthetic sensor: ``lines`` lines (None: endless), strips of ``strip_lines``.

    ``distinct_strips``: render that many strips *now*, before the stream's clock starts, and cycle
    through them. Rendering costs ~1 ms per line at 256 x 64 and ~7 ms at 1024 x 224 (the FX10,
    whose line budget is 3 ms): a strip rendered inside the stream would be counted in its line
    rate and, paced, make lines late. Without it every strip is new ground, rendered as it is
    reached (for tests and offline use)."""
    from edge_had.io.synthetic import synthetic_scene

    def render(key: int) -> np.ndarray:
        return synthetic_scene(seed=seed + key, lines=strip_lines, width=width, bands=bands).cube

    if distinct_strips is not None and distinct_strips < 1:
        raise ValueError(f"distinct_strips must be >= 1, got {distinct_strips}")
    rendered = [render(key) for key in range(distinct_strips or 0)]

    def rows() -> Iterator[np.ndarray]:
        produced, strip = 0, 0
        while lines is None or produced < lines:
            cube = rendered[strip % len(rendered)] if rendered else render(strip)
            for row in cube:
                if lines is not None and produced >= lines:
                    return
                yield row
                produced += 1
            strip += 1

    return _stamped(rows(), line_rate, pace, clock, sleep)


def envi_lines(
    header: str | Path,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Line]:
    """An ENVI file (``.hdr``) line by line from a memory map (nothing read ahead), each line what
    :func:`edge_had.io.load_scene` makes of the file (interleave in any case, the file's size
    checked): its good bands (``bbl``) in float32, a pixel NaN in every band where a good band is
    NaN/Inf or the ``data ignore value`` (the pipeline masks it: flag ``masked-pixels``)."""
    from edge_had.io.envi import read_envi
    from edge_had.io.scene import check_cube

    header = Path(header)
    raw = read_envi(header)  # (lines, samples, bands) view of the file
    good = check_cube(raw.cube, raw.good_bands, header)  # a bad-band list of another length: now
    return _stamped(_detection_rows(raw.cube, good, raw.no_data_value), line_rate, pace, clock, sleep)


def _detection_rows(cube: np.ndarray, good: np.ndarray, no_data_value: float | None) -> Iterator[np.ndarray]:
    """The rows of a (rows, cols, bands) cube as stored, each as the scene's detection cube holds
    it (:class:`~edge_had.io.scene.Scene`): its good bands in float32, NaN throughout an invalid
    pixel (:func:`~edge_had.io.scene.valid_pixels`, load_scene's rule)."""
    from edge_had.io.scene import valid_pixels

    every_band = bool(good.all())
    for stored in cube:  # one line of a memory map is read here, not before
        values = np.array(stored if every_band else stored[:, good], dtype=np.float32)  # a copy
        values[~valid_pixels(stored, values, good, no_data_value)] = np.nan
        yield values
