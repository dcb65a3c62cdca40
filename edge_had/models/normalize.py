"""Per-scene input normalisation shared by training, offline detection and streaming.

The published recipe maps each image jointly (all pixels and bands) to [-1, 1] by its min and max,
times 0.1. Min and max are set by a handful of pixels - often the anomalies themselves - so this
package uses robust percentiles of the valid pixels instead: ``lo`` and ``hi`` are the 1st and 99th
percentiles of all values, and ``x_n = scale * (2 * (x - lo) / (hi - lo) - 1)`` with scale 0.1.
RX is affine invariant, so the normalisation matters only through the networks' nonlinearities
(and the alphas): it puts every sensor's counts or reflectances on one scale. A stream cannot see
the whole image; it fits ``lo``/``hi`` on its warm-up lines (the streaming issue measures that).

Normalised values are clipped to ``[-clip, clip]`` (100: 500x the 1-99 % range). A corrupt
sample - a ``1e8`` in counts of 0-1600 is 1.25e4 - would otherwise drive the networks far outside
anything they saw, and their convolutions and pooling spread it over the whole 16-line block of a
stream (its outlier gate then restarted the statistics from those lines; a review, measured with
the shipped model). The ten ABU scenes reach 1.35. The bound is a compromise, measured on a
synthetic stream with one 1e8 and on abu-urban-1 behind 16 dark lines (the enhancer's ``lo``/``hi``
fitted on them: normalised values up to ~190 with sensor noise, ~1300 for an exact zero frame):
at 10 the block around the sample is untouched but the dark-start stream falls from AUC 0.94 to
0.41; at 1000 the dark starts are untouched but the sample's block scores off (AUC of the lines
after it 0.976 against 0.990); at 100 the block scores 0.990 and only the exact zero frame loses
(0.89 against 0.94; with noise, unchanged). A stream fitted on a dark start is a weak enhanced
stream either way (0.92-0.94 against plain RX's 0.97).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Normalization:
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    scale: float = 0.1
    #: |x_n| at most this (the module docstring); not a model setting: no config records it
    clip: ClassVar[float] = 100.0

    def fit(self, cube: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
        """``(lo, hi)`` from the valid pixels of a (rows, cols, bands) cube."""
        values = cube if valid is None else cube[np.asarray(valid, dtype=bool)]
        # the selected pixels are a copy of our own, which the percentiles may reorder in place
        # (the same values: a scene's worth of memory less); the cube itself is left as it is
        lo, hi = np.percentile(
            values, [self.low_percentile, self.high_percentile], overwrite_input=values is not cube
        )
        if not np.isfinite([lo, hi]).all() or hi <= lo:
            hi = lo + 1.0
        return float(lo), float(hi)

    def apply(self, cube: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
        """The normalised float32 cube; into ``out`` (e.g. ``cube`` itself, when float32) if given."""
        out = np.subtract(np.asarray(cube, dtype=np.float32), np.float32(lo), out=out, dtype=np.float32)
        out *= np.float32(2.0 / (hi - lo))
        out -= np.float32(1.0)
        out *= np.float32(self.scale)
        np.clip(out, -self.clip, self.clip, out=out)
        return out

    def __call__(self, cube: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        return self.apply(cube, *self.fit(cube, valid))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
