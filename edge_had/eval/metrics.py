"""Detection metrics for anomaly score maps (numpy/scipy only, float64 internally).

Every metric takes ``scores`` (any shape), a boolean ground truth ``gt`` of the same shape
(True = anomaly) and an optional boolean ``valid`` mask of the same shape: only pixels where
``valid`` is True are counted. A ValueError is raised when the shapes differ, when a counted
score is NaN, or when the counted pixels hold no anomaly or no background pixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import numpy as np
from scipy.stats import rankdata

__all__ = ["auc_dtau", "auc_ftau", "evaluate_map", "minmax", "pd_at_far", "roc_auc", "roc_curve"]

DEFAULT_FARS: tuple[float, ...] = (1e-3, 1e-4)


def _counted(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate the inputs; return the counted scores (float64) and labels (bool), both 1-D."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gt).astype(bool, copy=False)
    if s.shape != g.shape:
        raise ValueError(f"scores shape {s.shape} differs from gt shape {g.shape}")
    if valid is not None:
        v = np.asarray(valid).astype(bool, copy=False)
        if v.shape != s.shape:
            raise ValueError(f"valid shape {v.shape} differs from scores shape {s.shape}")
        s, g = s[v], g[v]
    s, g = s.ravel(), g.ravel()
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} counted score(s) are NaN")
    missing = missing_class(g)
    if missing is not None:
        raise ValueError(f"no {missing} pixel among the counted pixels")
    return s, g


def missing_class(gt: np.ndarray, valid: np.ndarray | None = None) -> str | None:
    """``"anomaly"`` or ``"background"`` when the counted pixels of ``gt`` (those ``valid``, all
    when None) hold no pixel of that class - no AUC then -, else None."""
    labels = np.asarray(gt).astype(bool, copy=False)
    if valid is not None:
        labels = labels[np.asarray(valid).astype(bool, copy=False)]
    if not labels.any():
        return "anomaly"
    return "background" if labels.all() else None


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max stretch to [0, 1] as float64; a constant array maps to zeros. Rejects NaN and Inf."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return a.copy()
    if not np.isfinite(a).all():
        raise ValueError("minmax needs finite values (found NaN or Inf)")
    lo, hi = a.min(), a.max()
    if hi == lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _auc(s: np.ndarray, g: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg) with average ranks for ties (exact for < 2**52 pixels)."""
    n_pos = int(g.sum())
    n_neg = g.size - n_pos
    ranks = rankdata(s, method="average")
    u = ranks[g].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _class_mean(s: np.ndarray, g: np.ndarray, anomaly: bool) -> float:
    """Mean min-max normalised score of one class (anomaly or background)."""
    return float(minmax(s)[g == anomaly].mean())


def _allowed_false_alarms(far: float, n_bg: int) -> int:
    """floor(far * n_bg), using the decimal value of ``far`` so 0.29 * 100 gives 29, not 28."""
    f = float(far)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far!r}")
    return int(Fraction(repr(f)) * n_bg)


def _pd_at_far(s: np.ndarray, g: np.ndarray, far: float) -> float:
    """Pd at a FAR no greater than ``far`` on validated 1-D arrays."""
    bg, pos = s[~g], s[g]
    allowed = _allowed_false_alarms(far, bg.size)
    if allowed >= bg.size:
        return 1.0
    k = bg.size - 1 - allowed  # ascending index of the (allowed + 1)-th largest background score
    threshold = np.partition(bg, k)[k]
    return float(np.mean(pos > threshold))


def _roc_curve(s: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for thresholds ``s >= t`` at every distinct score, descending, from (0, 0)."""
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted, g_sorted = s[order], g[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
    tps = np.cumsum(g_sorted, dtype=np.float64)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """ROC AUC with ties counted as one half: Mann-Whitney U / (n_pos * n_neg) over average ranks."""
    return _auc(*_counted(scores, gt, valid))


def auc_dtau(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Area under Pd(tau), tau in [0, 1], on scores min-max normalised over the counted pixels.

    The exact integral of P(s >= tau) over [0, 1] equals the mean normalised score of the
    class, which is what is computed (a constant map normalises to zeros and gives 0).
    """
    return _class_mean(*_counted(scores, gt, valid), anomaly=True)


def auc_ftau(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Area under Pf(tau), tau in [0, 1], on scores min-max normalised over the counted pixels.

    The exact integral of P(s >= tau) over [0, 1] equals the mean normalised score of the
    class, which is what is computed (a constant map normalises to zeros and gives 0).
    """
    return _class_mean(*_counted(scores, gt, valid), anomaly=False)


def pd_at_far(scores: np.ndarray, gt: np.ndarray, far: float, valid: np.ndarray | None = None) -> float:
    """Detection probability at a false-alarm rate no greater than ``far``.

    With n_bg background scores, allowed = floor(far * n_bg) false alarms; the threshold t is
    the (allowed + 1)-th largest background score and Pd is the fraction of anomaly scores
    strictly above t. At most ``allowed`` background scores exceed t, so the achieved FAR is
    <= far; anomaly scores tied with t count as misses.
    """
    return _pd_at_far(*_counted(scores, gt, valid), far)


def roc_curve(
    scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``: one point per distinct score, detecting ``s >= t``.

    Thresholds are descending; the first is +inf, giving (0, 0), and the last is the lowest
    score, giving (1, 1). The trapezoid area under the curve equals :func:`roc_auc`.
    """
    return _roc_curve(*_counted(scores, gt, valid))


def evaluate_map(
    scores: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    fars: Iterable[float] = DEFAULT_FARS,
) -> dict[str, object]:
    """All metrics of one score map as plain Python floats (JSON-serialisable).

    Returns ``{"auc", "auc_dtau", "auc_ftau", "pd_at_far": {repr(far): pd}}``, e.g. key "0.001".
    """
    s, g = _counted(scores, gt, valid)
    return {
        "auc": _auc(s, g),
        "auc_dtau": _class_mean(s, g, anomaly=True),
        "auc_ftau": _class_mean(s, g, anomaly=False),
        "pd_at_far": {repr(float(far)): _pd_at_far(s, g, far) for far in fars},
    }
