"""PNG plots of ROC curves and score maps.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never through
pyplot, so no GUI backend is ever touched and no global figure state is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edge_had.eval.metrics import minmax

__all__ = ["save_roc_png", "save_score_map_png"]

Curve = Sequence[np.ndarray | float]
DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _curve_label(label: str, curve: Curve) -> str:
    if len(curve) == 3:
        return f"{label} (AUC = {float(curve[2]):.4f})"
    if len(curve) != 2:
        raise ValueError(f"curve {label!r} must be (fpr, tpr) or (fpr, tpr, auc), got {len(curve)} items")
    return label


def _set_far_axis(ax: Axes, curves: Mapping[str, Curve], log_far: bool) -> None:
    if not log_far:
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=0.8)
        ax.set_xlim(0.0, 1.0)
        return
    fprs = [np.asarray(c[0], dtype=np.float64) for c in curves.values()]
    lowest = min((float(f[f > 0].min()) for f in fprs if (f > 0).any()), default=1e-6)
    ax.set_xscale("log", nonpositive="mask")
    ax.set_xlim(min(lowest, 0.1), 1.0)


def save_roc_png(
    curves: Mapping[str, Curve], path: str | Path, title: str | None = None, log_far: bool = False
) -> Path:
    """Plot ROC curves ``{label: (fpr, tpr)}`` or ``{label: (fpr, tpr, auc)}`` to a PNG; return its path.

    With ``log_far`` the false-alarm axis is logarithmic (points at FAR 0 are dropped).
    """
    fig = _new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        legend = _curve_label(label, curve)
        ax.plot(np.asarray(curve[0]), np.asarray(curve[1]), linewidth=1.2, label=legend)
    _set_far_axis(ax, curves, log_far)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false-alarm rate" + (" (log)" if log_far else ""))
    ax.set_ylabel("detection probability")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


DISPLAY_PERCENTILE = 99.5


def _stretch(scores: np.ndarray) -> np.ndarray:
    """Stretch the finite values to [0, 1] between their minimum and 99.5th percentile (a few
    extreme pixels would otherwise turn the whole map black); non-finite pixels become NaN."""
    out = np.full(scores.shape, np.nan)
    finite = np.isfinite(scores)
    values = scores[finite]
    if values.size == 0:  # nothing scored (e.g. a stream whose every line was rejected)
        return out
    clipped = np.minimum(values, np.percentile(values, DISPLAY_PERCENTILE))
    out[finite] = minmax(clipped)
    return out


def _draw_outline(ax: Axes, gt: np.ndarray) -> None:
    """Outline the targets half way between target and background pixel centres. The mask gets a
    border of background first: contour needs at least 2 x 2 values (a 1-line stream, 1-pixel-wide
    lines, a stream interrupted after its first line), and a target on the map's edge is closed."""
    if not gt.any():
        return
    rows, cols = gt.shape
    limits = ax.get_xlim(), ax.get_ylim()
    padded = np.pad(gt.astype(np.float64), 1)
    ax.contour(
        np.arange(-1, cols + 1), np.arange(-1, rows + 1), padded, levels=[0.5], colors="cyan", linewidths=0.8
    )
    ax.set_xlim(limits[0])  # the border is not shown
    ax.set_ylim(limits[1])


def ground_truth_image(mask: np.ndarray, labelled: np.ndarray | None = None) -> np.ndarray:
    """The ground-truth panel's values: 1 anomaly, 0 background, 0.5 (grey) where unlabelled."""
    shown = mask.astype(np.float64)
    if labelled is not None:
        shown[~np.asarray(labelled, dtype=bool)] = 0.5
    return shown


def save_score_map_png(
    scores: np.ndarray,
    path: str | Path,
    gt: np.ndarray | None = None,
    title: str | None = None,
    labelled: np.ndarray | None = None,
) -> Path:
    """Save a 2-D score map ('inferno', stretched to the 99.5th percentile) as a PNG; return its path.

    When ``gt`` is given its outline is drawn over the map and the mask is shown alongside, the
    pixels it leaves unlabelled (``labelled`` False: ``Scene.labelled``) in grey.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"score map must be 2-D, got shape {s.shape}")
    mask = None if gt is None else np.asarray(gt).astype(bool, copy=False)
    if mask is not None and mask.shape != s.shape:
        raise ValueError(f"gt shape {mask.shape} differs from score map shape {s.shape}")
    fig = _new_figure(9.0 if mask is not None else 5.0, 4.5)
    axes = fig.subplots(1, 1 if mask is None else 2, squeeze=False)[0]
    if s.size:
        image = axes[0].imshow(_stretch(s), cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(image, ax=axes[0], shrink=0.8, label=f"score (clipped at {DISPLAY_PERCENTILE} pct)")
    else:  # e.g. a stream whose every line was rejected: imshow would warn of singular limits
        axes[0].text(0.5, 0.5, f"nothing scored ({s.shape[0]} x {s.shape[1]})", ha="center", va="center")
    axes[0].set_title("score map")
    if mask is not None and mask.size:
        _draw_outline(axes[0], mask)
        shown = ground_truth_image(mask, labelled)
        axes[1].imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1].set_title("ground truth" if labelled is None else "ground truth (grey: unlabelled)")
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)
