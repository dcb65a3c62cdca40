"""Named detectors with their settings, as the CLI and the evaluation protocol see them.

A detector scores a cube (rows, cols, bands) with a validity mask (rows, cols) and reports its
name and every setting, so a report says exactly what ran.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol

import numpy as np

from edge_had.detectors.lrx import LocalRXSettings, local_rx
from edge_had.detectors.rx import rx, rx_reference
from edge_had.detectors.scoring import hybrid_rx

RX_PRECISIONS = ("float64", "float32")


class Detector(Protocol):
    name: str

    @property
    def settings(self) -> dict[str, Any]: ...

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray: ...


class GlobalRXDetector:
    """Global RX: ``float64`` is the numpy oracle, ``float32`` the fast BLAS path."""

    name = "rx"

    def __init__(self, precision: str = "float64", regularization: float = 0.0) -> None:
        if precision not in RX_PRECISIONS:
            raise ValueError(f"unknown RX precision {precision!r}; choose one of {RX_PRECISIONS}")
        self.precision = precision
        self.regularization = regularization

    @property
    def settings(self) -> dict[str, Any]:
        return {"precision": self.precision, "regularization": self.regularization}

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray:
        implementation = rx_reference if self.precision == "float64" else rx
        return implementation(cube, mask=valid, regularization=self.regularization)


class LocalRXDetector:
    """Dual-window local RX (see :mod:`edge_had.detectors.lrx` for the defaults)."""

    name = "lrx"

    def __init__(self, **settings: Any) -> None:
        self.options = LocalRXSettings(**settings)

    @property
    def settings(self) -> dict[str, Any]:
        return asdict(self.options)

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray:
        return local_rx(cube, valid, self.options)


class HybridRXDetector(LocalRXDetector):
    """Geometric mean of global and local RX (see :mod:`edge_had.detectors.scoring`)."""

    name = "hybrid-rx"

    def score(
        self, cube: np.ndarray, valid: np.ndarray | None = None, wavelengths: np.ndarray | None = None
    ) -> np.ndarray:
        return hybrid_rx(cube, valid, self.options)


def _enhanced(scorer: str) -> Any:
    def factory(**settings: Any) -> Detector:
        from edge_had.detectors.enhanced import EnhancedDetector

        return EnhancedDetector(scorer=scorer, **settings)

    return factory


def _resampled(scorer: str) -> Any:
    def factory(**settings: Any) -> Detector:
        from edge_had.detectors.enhanced import ResampledRXDetector

        return ResampledRXDetector(scorer=scorer, **settings)

    return factory


# Enhanced detectors import torch and load a model, so they are built lazily.
DETECTORS: dict[str, Any] = {
    "rx": GlobalRXDetector,
    "lrx": LocalRXDetector,
    "hybrid-rx": HybridRXDetector,
    "enhanced-rx": _enhanced("global"),
    "enhanced-lrx": _enhanced("local"),
    "enhanced-hybrid-rx": _enhanced("hybrid"),
    "resampled-rx": _resampled("global"),
    "resampled-hybrid-rx": _resampled("hybrid"),
}


def make_detector(name: str, **settings: Any) -> Detector:
    """Build a detector by name; unknown names or settings give a clear ValueError."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    try:
        detector: Detector = factory(**settings)
    except TypeError as error:
        raise ValueError(f"bad settings for detector {name!r}: {error}") from None
    return detector
