"""Line sources: where a pushbroom stream's lines come from.

Every source yields :class:`Line` objects (index, timestamp, ``(width, bands)`` pixels - float32,
or a file's lines as stored -, optional ``meta``), in acquisition order:

* :func:`scene_lines` - replay a cube (rows are lines), as fast as possible or paced at a line rate;
* :func:`synthetic_lines` - the synthetic sensor as an endless (or bounded) stream: consecutive
  synthetic strips of ``strip_lines`` lines with successive seeds (a new strip is a new stretch of
  ground, as when a drone turns);
* :func:`file_lines` - a scene file on disk line by line, ENVI and ``.npy`` through their memory
  map in bounded memory, each line as the file stores it (every band, its dtype), as a camera
  hands it over, with what the file says about its pixels - good bands (``bbl``), no-data value,
  wavelengths - for :func:`~edge_had.stream.onboard.build_pipeline`, which masks them as
  :func:`edge_had.io.load_scene` does (:func:`envi_lines`: its lines);
* :func:`counter_numbered` - any source's lines numbered as a line counter of a given width
  numbers them (it wraps to 0 after its last value), to rehearse a camera's counter wraps.

Timestamps: ``t0 + index / line_rate`` when a line rate is given (the sensor clock), else the
monotonic clock when the line is produced. ``pace=True`` sleeps until each line is due.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
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
    dtype: Any = np.float32,
) -> Iterator[Line]:
    """``rows`` as stamped lines, each a contiguous array of ``dtype`` (None: its own)."""
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
        yield Line(index, stamp, np.ascontiguousarray(pixels, dtype=dtype))


def scene_lines(
    cube: np.ndarray,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    *,
    valid: np.ndarray | None = None,
) -> Iterator[Line]:
    """The rows of a ``(lines, width, bands)`` cube as a stream. ``valid``: the ``(lines, width)``
    mask of usable pixels (``Scene.valid``): the others are streamed NaN throughout, each line a
    float32 copy (the cube is not copied whole)."""
    from edge_had.io.scene import invalid_as_nan

    if valid is None or valid.all():
        return _stamped(iter(cube), line_rate, pace, clock, sleep)
    rows = (invalid_as_nan(np.array(row, dtype=np.float32), ok) for row, ok in zip(cube, valid, strict=True))
    return _stamped(rows, line_rate, pace, clock, sleep)


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


def counter_numbered(lines: Iterable[Line], counter_bits: int) -> Iterator[Line]:
    """``lines`` (numbered from 0) with the index a ``counter_bits``-wide line counter gives them:
    the index modulo ``2**counter_bits`` - after the counter's last value comes 0. Streamed with
    the same ``counter_bits`` a wrap loses no line and the rows go on as if it had not wrapped
    (:mod:`edge_had.stream.line_order`)."""
    from edge_had.stream.line_order import checked_counter_bits

    bits = checked_counter_bits(counter_bits)
    if bits is None:
        raise ValueError("counter_bits must be given: the width of the counter that numbers the lines")
    period = 2**bits
    for line in lines:
        yield replace(line, index=line.index % period)


@dataclass
class FileLines:
    """A scene file as a stream (:func:`file_lines`): its lines as stored and what the file says
    about them, which :func:`~edge_had.stream.onboard.build_pipeline` takes as a camera's."""

    lines: Iterator[Line]
    width: int
    bands: int  # the bands each line holds: all of the file's
    wavelengths: np.ndarray | None  # their centres in nm, when the file gives them
    good_bands: np.ndarray  # the bands kept for detection (ENVI bbl; all True without one)
    no_data_value: float | None  # ENVI 'data ignore value'
    meta: dict[str, Any]  # the reader's: format, interleave, an ENVI file's header, ...
    lines_in_file: int = 0  # the file's lines (``lines`` streams the first ones only)


def file_lines(
    path: str | Path,
    *,
    interleave: str | None = None,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    saturation: float | None = None,
    lines: int | None = None,
) -> FileLines:
    """A scene file line by line, each line as the file stores it - every band, its dtype - as a
    camera hands its lines over, with the file's good bands (ENVI ``bbl``), no-data value and
    wavelengths: given to :func:`~edge_had.stream.onboard.build_pipeline` (``good_bands=``,
    ``no_data_value=``, ``wavelengths=``), the pipeline scores what
    :func:`edge_had.io.load_scene` makes of the file - its good bands in float32, a pixel that
    is NaN/Inf or the no-data value in a good band (or ``saturation`` or above) masked
    (:class:`~edge_had.io.scene.PixelRule`; flag ``masked-pixels``, counted by reason).

    ENVI and ``.npy`` files are read from their memory map one line at a time (BIL and rows x cols
    x bands ``.npy`` are the natural pushbroom layouts; the others work, slower), and the map's
    pages are handed back every :data:`RELEASE_BYTES` read, so memory stays bounded whatever the
    file's length. A MATLAB/HDF5 cube is read whole first (those formats are not mapped; its ground
    truth is not streamed: ``edge-had stream`` reads such files with load_scene). What the file's
    header and shape tell (interleave, size, dtype, bands, bad-band list, wavelengths) is checked
    now, as load_scene checks it, and so is that some pixel is valid (under ``saturation`` too:
    the level the pipeline will be given): the lines are read until the first valid pixel (one
    line, usually; a file with none is read once, its map's pages handed back as it goes) and a
    file without one is load_scene's :class:`~edge_had.errors.SceneError` naming the bands that
    are invalid throughout. A line of the stream with no valid pixel is rejected for it (``no
    valid pixel``). ``lines``: stream the file's first ``lines`` lines only (all of them when it
    has fewer; the valid-pixel check is of those lines), a view of the memory map, nothing read
    past them."""
    from edge_had.errors import SceneError
    from edge_had.io.readers import read_raw
    from edge_had.io.scene import PixelRule, band_vector, check_cube, no_valid_pixel_error

    path = Path(path)
    if lines is not None and lines < 1:
        raise ValueError(f"lines must be >= 1, got {lines}")
    raw = read_raw(path, interleave=interleave)
    good = check_cube(raw.cube, raw.good_bands, path)
    in_file, width, bands = raw.cube.shape
    wavelengths = band_vector(raw.wavelengths, bands, "wavelength list", path)
    cube = raw.cube[:lines]  # a view: the memory map stays one
    rule = PixelRule(good, raw.no_data_value, saturation)
    if not any(rule.valid(line, rule.good_values(line)).any() for line in _stored_rows(cube)):
        error = no_valid_pixel_error(cube, rule, path)
        if cube.shape[0] < in_file:  # only the first lines were to be streamed
            raise SceneError(f"in its first {cube.shape[0]} of {in_file} lines: {error.problem}", path)
        raise error
    rows = _stamped(_stored_rows(cube), line_rate, pace, clock, sleep, dtype=None)
    return FileLines(rows, width, bands, wavelengths, good, raw.no_data_value, raw.meta, in_file)


def envi_lines(
    header: str | Path,
    line_rate: float | None = None,
    pace: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Line]:
    """The lines of an ENVI file (``.hdr``): :func:`file_lines`."""
    return file_lines(header, line_rate=line_rate, pace=pace, clock=clock, sleep=sleep).lines


RELEASE_BYTES = 16 * 2**20  # a memory map's pages are handed back each time about this much was read


def _stored_rows(cube: np.ndarray) -> Iterator[np.ndarray]:
    """The rows of a (rows, cols, bands) cube, each a copy as stored (its dtype, every band).

    A memory map's pages stay resident once read (they count in the process's memory until the
    map is closed): every :data:`RELEASE_BYTES` they are handed back (``MADV_DONTNEED``; the data
    stays in the page cache), as each line is copied out first."""
    mapping = _memory_map_of(cube)
    release_every = max(1, RELEASE_BYTES // cube[0].nbytes)
    for index, stored in enumerate(cube):  # one line of a memory map is read here, not before
        values = np.array(stored, order="C")  # a copy
        if mapping is not None and (index + 1) % release_every == 0:
            mapping.madvise(mmap.MADV_DONTNEED)
        yield values


def _memory_map_of(cube: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` under a memory-mapped array or a view of one (``np.memmap``, ``np.load(...,
    mmap_mode=)``), where its pages can be handed back; None for an array in memory."""
    base: Any = cube
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") else None
