"""Evaluation of anomaly score maps.

The metrics need numpy and scipy only; the plots live in :mod:`edge_had.eval.plots` and are
not imported here, so importing this package does not import matplotlib.
"""

from edge_had.eval.metrics import (
    auc_dtau,
    auc_ftau,
    evaluate_map,
    minmax,
    pd_at_far,
    roc_auc,
    roc_curve,
)

__all__ = ["auc_dtau", "auc_ftau", "evaluate_map", "minmax", "pd_at_far", "roc_auc", "roc_curve"]
