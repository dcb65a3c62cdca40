"""The parameter-free scorers an (enhanced) cube can be scored with: global, local and hybrid RX.

* ``global``: global RX, float64 oracle (:func:`edge_had.detectors.rx.rx_reference`);
* ``local``: dual-window local RX (:func:`edge_had.detectors.lrx.local_rx`, its defaults);
* ``hybrid``: the geometric mean ``sqrt(RX * LRX)`` of the two.

Why the hybrid: global RX misses targets that are only rare *locally* (a roof spectrum that is
common elsewhere in the scene), local RX misses targets larger than its guard window and flags
every edge between two materials. A pixel that both call unusual is the better bet. The geometric
mean ranks pixels by ``log RX + log LRX``: it has no weight to tune and, unlike the product of
min-max normalised maps, it needs neither map's range over the whole image (each map's scale
drops out of the ranking), so it is the same on a tile as on the full scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge_had.detectors.lrx import LocalRXSettings, local_rx
from edge_had.detectors.rx import rx_reference

SCORERS = ("global", "local", "hybrid")


def geometric_mean(global_scores: np.ndarray, local_scores: np.ndarray) -> np.ndarray:
    """The hybrid score from already computed RX and LRX maps (float rounding below 0 clipped)."""
    return np.sqrt(np.maximum(global_scores, 0.0) * np.maximum(local_scores, 0.0))


def hybrid_rx(
    cube: np.ndarray, mask: np.ndarray | None = None, settings: LocalRXSettings | None = None
) -> np.ndarray:
    """``sqrt(RX * LRX)`` of a (rows, cols, bands) cube -> (rows, cols) float64 (NaN where masked)."""
    return geometric_mean(rx_reference(cube, mask=mask), local_rx(cube, mask, settings))


def scorer(
    name: str, lrx: LocalRXSettings | None = None, regularization: float = 0.0
) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """The scorer ``name`` as ``score(cube, valid) -> map``; unknown names raise ValueError.
    ``regularization``: global RX's diagonal loading (a fraction of trace / bands, as
    :func:`~edge_had.detectors.rx.rx_reference` takes it); the local and hybrid scorers take
    theirs from ``lrx`` (hybrid RX's global part is not loaded, as ``hybrid-rx``'s), so a loading
    given to them is refused rather than ignored."""
    if not (math.isfinite(regularization) and regularization >= 0):
        raise ValueError(f"regularization must be a finite number >= 0, got {regularization}")
    if regularization and name != "global":
        raise ValueError(
            f"regularization {regularization:g} is global RX's; the {name} scorer's local RX takes its "
            "own (LocalRXSettings.regularization)"
        )
    if name == "global":
        return lambda cube, valid: rx_reference(cube, mask=valid, regularization=regularization)
    if name == "local":
        return lambda cube, valid: local_rx(cube, valid, lrx)
    if name == "hybrid":
        return lambda cube, valid: hybrid_rx(cube, valid, lrx)
    raise ValueError(f"unknown scorer {name!r}; choose one of {SCORERS}")
