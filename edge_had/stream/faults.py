"""A fault-injecting line source: wraps any source and, seeded, spoils some of its lines the way
flight hardware does, so the pipeline's behaviour under bad input can be tested and soaked.

Faults (``FAULTS``), each applied to a line with probability ``rate`` (independently, in this
order), and recorded in the line's ``meta["faults"]`` so tests can count exactly:

* pixel faults (the line stays): ``nan`` / ``inf`` (a few pixels of one band), ``saturate``
  (a few pixels clipped to the sensor's maximum in every band), ``dead`` (one column zero from
  then on: a dead detector element persists; at most ``max_dead`` at a time, the oldest recovers);
* line faults: ``drop`` (the line never arrives: its index is missing), ``duplicate`` (it arrives
  twice), ``reorder`` (it arrives after the next line), ``short`` (some pixels missing), ``bands``
  (one band missing);
* timing faults, on the line's timestamp (a simulated clock, so tests run fast): ``stall`` (the
  line arrives ``stall_s`` late: its capture time is ``stall_s`` before its delivery) and ``burst``
  (it arrives together with the previous one).
* ``index``: one bit of the line's counter value flipped (among its ``index_bits`` low bits: the
  counter's width), as a corrupted frame header delivers it - a leap ahead or back the line order
  must not follow (:mod:`edge_had.stream.line_order`). Drawn from its own random stream, so adding
  it left every other fault's sequence for a seed as it was.

``reorder`` and ``duplicate`` apply only to lines that arrive and are not already held back, so
with every fault on their realised rate is below ``rate`` (0.89x measured at 0.05); each line's
``meta["faults"]`` says what it got.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from edge_had.stream.sources import Line

FAULTS = (
    "nan",
    "inf",
    "saturate",
    "dead",
    "drop",
    "duplicate",
    "reorder",
    "short",
    "bands",
    "stall",
    "burst",
    "index",
)


def parse_faults(text: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated subset of :data:`FAULTS`."""
    if text == "all":
        return FAULTS
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; choose 'all' or from {list(FAULTS)}")
    return chosen


def faulty_lines(
    lines: Iterable[Line],
    faults: Sequence[str] = FAULTS,
    *,
    rate: float = 0.01,
    seed: int = 0,
    saturation: float = 65535.0,
    stall_s: float = 0.05,
    max_dead: int = 8,
    index_bits: int = 16,
) -> Iterator[Line]:
    """Yield ``lines`` with faults injected (see the module docstring)."""
    rng = np.random.default_rng(seed)
    index_rng = np.random.default_rng([seed, 1])  # the index fault's own stream
    dead_columns: list[int] = []
    held: Line | None = None  # a line held back by "reorder"
    previous_stamp: float | None = None
    for line in lines:
        applied: list[str] = []
        pixels = line.pixels
        width, bands = pixels.shape
        hit = {name: name in faults and rng.random() < rate for name in FAULTS if name != "index"}
        hit["index"] = "index" in faults and index_rng.random() < rate
        if hit["nan"] or hit["inf"] or hit["saturate"] or hit["dead"] or dead_columns:
            # a copy, in floating point: a file's lines come as stored (integers take no NaN)
            pixels = pixels.astype(np.promote_types(pixels.dtype, np.float32))
        if hit["dead"]:
            dead_columns.append(int(rng.integers(width)))
            del dead_columns[:-max_dead]  # a few dead elements at a time: the oldest recovers
            applied.append("dead")
        if dead_columns:
            pixels[dead_columns] = 0.0
        for name, value in (("nan", np.nan), ("inf", np.inf)):
            if hit[name]:
                pixels[rng.choice(width, size=min(3, width), replace=False), rng.integers(bands)] = value
                applied.append(name)
        if hit["saturate"]:
            pixels[rng.choice(width, size=min(3, width), replace=False)] = saturation
            applied.append("saturate")
        if hit["short"]:
            pixels = pixels[: max(1, width - 1 - int(rng.integers(width // 4 + 1)))]
            applied.append("short")
        if hit["bands"]:
            pixels = pixels[:, : bands - 1]
            applied.append("bands")
        stamp = line.timestamp
        if hit["stall"]:  # captured stall_s before it is handed over: the loop sees it that late
            stamp -= stall_s
            applied.append("stall")
        if hit["burst"] and previous_stamp is not None:
            stamp = previous_stamp
            applied.append("burst")
        previous_stamp = stamp
        index = line.index
        if hit["index"]:
            index ^= 1 << int(index_rng.integers(index_bits))
            applied.append("index")
        meta = dict(line.meta or {})
        meta["faults"] = applied
        out = replace(line, index=index, pixels=pixels, timestamp=stamp, meta=meta)
        if hit["drop"]:
            meta["faults"] = [*applied, "drop"]
            continue  # never arrives
        if held is not None:
            yield out
            yield held
            held = None
            continue
        if hit["reorder"]:
            meta["faults"] = [*applied, "reorder"]
            held = out
            continue
        yield out
        if hit["duplicate"]:
            yield replace(out, meta={**meta, "faults": [*applied, "duplicate"]})
    if held is not None:
        yield held
