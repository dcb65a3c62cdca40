"""Score fusion: combine detector maps after min-max normalising each over its finite values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSION_METHODS = ("sum", "product")


def normalize_minmax(scores: np.ndarray) -> np.ndarray:
    """Scale finite values to [0, 1] (float64); NaN stays NaN; a constant map becomes zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        raise ValueError("score map has no finite value")
    low, high = scores[finite].min(), scores[finite].max()
    if high == low:
        return np.where(finite, 0.0, np.nan)
    return np.where(finite, (scores - low) / (high - low), np.nan)


def fuse_scores(maps: Sequence[np.ndarray], method: str = "product") -> np.ndarray:
    """Sum or product of the min-max normalised maps (all the same shape)."""
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion {method!r}; choose one of {FUSION_METHODS}")
    if not maps:
        raise ValueError("nothing to fuse")
    shapes = {np.shape(m) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"score maps differ in shape: {sorted(shapes)}")
    normalized = [normalize_minmax(m) for m in maps]
    if method == "sum":
        return np.sum(normalized, axis=0)
    # a constant map ranks nothing: neutral (1) in a product, where its zeros would erase the
    # ranking of every other map
    return np.prod([_neutral_if_constant(n) for n in normalized], axis=0)


def _neutral_if_constant(normalized: np.ndarray) -> np.ndarray:
    """Ones for a constant map (normalised, all its finite values are 0; any other map reaches 1)."""
    return np.where(np.isfinite(normalized), 1.0, np.nan) if np.nanmax(normalized) == 0 else normalized
