"""The runner contract every inference backend implements (after Polygraphy's runners).

A runner wraps one exported network. ``activate()`` loads it (sessions, engines, device buffers),
``infer(feed, outputs)`` maps input names to float32 arrays and returns the outputs named in
``outputs`` (default: every output) by name as float32 numpy arrays, and ``deactivate()`` frees
what ``activate`` took. A line loop that needs one output asks for that one, and no other is
copied back from the device. Runners are context managers, and each records the wall time of its
own last inference (``last_inference_time``, seconds) and all of them (``inference_times``), so
profilers and benchmarks read one place.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType

import numpy as np

from edge_had.errors import EdgeHadError

BACKENDS = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


class BackendError(EdgeHadError):
    """A backend is unavailable, or a runner was misused (inactive, wrong feed)."""


class Runner(ABC):
    """``activate`` / ``infer`` / ``deactivate`` over one network; see the module docstring."""

    #: Backend name, one of :data:`BACKENDS`.
    backend: str = ""
    #: Every output of the network, in its order (known once active).
    output_names: Sequence[str] = ()

    def __init__(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.precision = precision
        self.is_active = False
        self.inference_times: list[float] = []

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"

    @property
    def last_inference_time(self) -> float | None:
        return self.inference_times[-1] if self.inference_times else None

    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.require_active("infer()")
        wanted = tuple(self.output_names) if outputs is None else tuple(dict.fromkeys(outputs))
        if not wanted or not set(wanted) <= set(self.output_names):
            raise BackendError(f"{self.name}: asked for outputs {wanted}; it has {list(self.output_names)}")
        start = time.perf_counter()
        result = self.infer_impl(
            {name: np.ascontiguousarray(value, np.float32) for name, value in feed.items()}, wanted
        )
        self.inference_times.append(time.perf_counter() - start)
        return result

    def require_active(self, call: str) -> None:
        """A :class:`BackendError` naming ``call`` unless the runner is active (every entry point
        that runs the network: ``infer``, and a runner's parts run apart)."""
        if not self.is_active:
            raise BackendError(f"{self.name}: {call} before activate()")

    def free_working_memory(self) -> None:
        """Hand back what the backend keeps between inferences, sized by the largest one (its
        intermediates' pools), when no inference follows soon - after a whole scene. The runner
        stays active. Default: nothing is kept."""
        return None

    def host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed float32 array to build feeds in, in the host memory this runner uploads
        fastest from: plain numpy here; page-locked for torch on a CUDA device
        (:class:`~edge_had.runtime.torch_runner.TorchRunner`). The stream's enhancer writes its
        lines into these."""
        return np.zeros(shape, np.float32)

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.deactivate()

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run the network and return ``outputs`` (known names, checked by :meth:`infer`);
        ``feed`` holds C-contiguous float32 arrays. Synchronous: the outputs are complete host
        arrays when it returns (so the recorded time covers the copies)."""

    @abstractmethod
    def deactivate_impl(self) -> None: ...
