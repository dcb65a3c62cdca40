"""Parameter-free anomaly detectors: global RX (float64 oracle and fast path), local RX, fusion."""

from edge_had.detectors.fusion import fuse_scores, normalize_minmax
from edge_had.detectors.lrx import LocalRX, LocalRXSettings, local_rx, local_rx_line_reference
from edge_had.detectors.rx import RX, rx, rx_reference
from edge_had.detectors.stats import GaussianStats, calc_stats

__all__ = [
    "RX",
    "GaussianStats",
    "LocalRX",
    "LocalRXSettings",
    "calc_stats",
    "fuse_scores",
    "local_rx",
    "local_rx_line_reference",
    "normalize_minmax",
    "rx",
    "rx_reference",
]
