"""One runner contract (:mod:`.base`) with torch, onnxruntime and tensorrt implementations, the
backend choice (:mod:`.select`) and :func:`enhancement_runner`, which builds the runner that
enhances a sensor's cubes with a model bundle. Heavy backends import lazily."""

from edge_had.runtime.base import BACKENDS, PRECISIONS, BackendError, Runner
from edge_had.runtime.factory import enhancement_runner
from edge_had.runtime.select import PRIORITY, BackendChoice, choose_backend

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "PRIORITY",
    "BackendChoice",
    "BackendError",
    "Runner",
    "choose_backend",
    "enhancement_runner",
]
