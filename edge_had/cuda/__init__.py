"""The one owner of the CUDA context: the only module of edge-had that imports pycuda.

:class:`CudaDevice` retains the *primary* context of one GPU (the context the CUDA runtime, and so
TensorRT and torch, use too), owns one stream, and pushes the context around every call and pops
it afterwards. No thread is ever left with a context made current behind its back, and a call from
any thread works: the cure for pycuda's "invalid resource handle" in worker threads. Code that
calls another CUDA library (TensorRT) wraps those calls in :meth:`CudaDevice.activated`. A lock
serialises the users of one device, so two threads never interleave copies on its single stream.

pycuda is imported inside the functions: ``import edge_had.cuda`` works without it, and every
entry point raises :class:`CudaUnavailableError`, saying why, when pycuda or a GPU is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_had.runtime.base import BackendError


class CudaUnavailableError(BackendError):
    """pycuda is not installed, the CUDA driver cannot start, or there is no such GPU."""


def _driver() -> Any:
    """``pycuda.driver``, initialised; :class:`CudaUnavailableError` saying why it cannot be."""
    try:
        import pycuda.driver as driver
    except ImportError as error:
        raise CudaUnavailableError(
            f"pycuda is not importable ({error}); `pip install pycuda` builds it against the "
            "installed CUDA (on a Jetson, JetPack's)"
        ) from None
    try:
        driver.init()
    except Exception as error:  # pycuda raises its own driver.Error subclasses
        raise CudaUnavailableError(f"the CUDA driver did not start: {error}") from None
    return driver


def _device(driver: Any, index: int) -> Any:
    count = driver.Device.count()
    if count == 0:
        raise CudaUnavailableError("the CUDA driver sees no GPU")
    if not 0 <= index < count:
        raise CudaUnavailableError(f"no GPU {index}: the CUDA driver sees {count} (0..{count - 1})")
    return driver.Device(index)


def gpu_sm(index: int = 0) -> str:
    """The compute capability of GPU ``index`` as TensorRT engines depend on it, e.g. ``"sm_87"``
    (Jetson Orin). Creates no context."""
    major, minor = _device(_driver(), index).compute_capability()
    return f"sm_{major}{minor}"


@dataclass
class Buffer:
    """One tensor's memory: a pinned (page-locked) host array and a device allocation, both
    ``capacity`` elements of ``dtype``. Tensors smaller than the capacity use the first elements."""

    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation

    @property
    def capacity(self) -> int:
        return int(self.host.size)

    @property
    def address(self) -> int:
        """The device address, as TensorRT's ``set_tensor_address`` takes it."""
        return int(self.device)


def _release(buffer: Buffer) -> None:
    """Free both halves of ``buffer`` (the owning context must be current)."""
    buffer.device.free()
    pinned: Any = buffer.host.base  # pycuda's PagelockedHostAllocation behind the array
    pinned.free()


class CudaDevice:
    """The primary context of GPU ``index``, one stream, and the buffers allocated through it."""

    def __init__(self, index: int = 0) -> None:
        self._driver = _driver()
        device = _device(self._driver, index)
        self.index = index
        self.name = str(device.name())
        major, minor = device.compute_capability()
        self.sm = f"sm_{major}{minor}"
        self._lock = threading.RLock()
        self._context: Any = device.retain_primary_context()
        self._buffers: list[Buffer] = []
        with self.activated():
            self._stream: Any = self._driver.Stream()

    @contextmanager
    def activated(self) -> Iterator[None]:
        """Make the context current on this thread for the ``with`` block, then pop it again."""
        if self._context is None:
            raise CudaUnavailableError(f"GPU {self.index} ({self.name}) was closed")
        with self._lock:
            self._context.push()
            try:
                yield
            finally:
                self._driver.Context.pop()

    @property
    def stream_handle(self) -> int:
        """The stream's handle, as TensorRT's ``execute_async_v3`` takes it."""
        return int(self._stream.handle)

    def allocate(self, capacity: int, dtype: np.dtype | type = np.float32) -> Buffer:
        """A pinned host array and a device allocation of ``capacity`` elements each."""
        if capacity < 1:
            raise ValueError(f"a buffer needs at least one element, got {capacity}")
        with self.activated():
            host = self._driver.pagelocked_empty(int(capacity), dtype)
            buffer = Buffer(host, self._driver.mem_alloc(host.nbytes))
        self._buffers.append(buffer)
        return buffer

    def free(self, buffer: Buffer) -> None:
        """Release ``buffer`` now (not whenever the garbage collector gets to it)."""
        with self.activated():
            _release(buffer)
        self._buffers = [kept for kept in self._buffers if kept is not buffer]

    def upload(self, buffer: Buffer, array: np.ndarray) -> None:
        """Queue a copy of ``array`` into ``buffer`` on the stream (via its pinned host array)."""
        flat = np.ascontiguousarray(array, dtype=buffer.host.dtype).reshape(-1)
        if flat.size > buffer.capacity:
            raise ValueError(f"{flat.size} elements do not fit a buffer of {buffer.capacity}")
        staged = buffer.host[: flat.size]
        staged[...] = flat
        with self.activated():
            self._driver.memcpy_htod_async(buffer.device, staged, self._stream)

    def download(self, buffer: Buffer, shape: tuple[int, ...]) -> np.ndarray:
        """Queue a copy of the first ``prod(shape)`` elements of ``buffer`` to its pinned host array;
        returns that view, valid once :meth:`synchronize` has returned and until the next copy."""
        size = int(np.prod(shape))
        if size > buffer.capacity:
            raise ValueError(f"a {shape} tensor does not fit a buffer of {buffer.capacity}")
        target = buffer.host[:size]
        with self.activated():
            self._driver.memcpy_dtoh_async(target, buffer.device, self._stream)
        return target.reshape(shape)

    def synchronize(self) -> None:
        """Wait until everything queued on the stream has finished."""
        with self.activated():
            self._stream.synchronize()

    def close(self) -> None:
        """Finish the stream, free every buffer, release the primary context. Idempotent."""
        if self._context is None:
            return
        with self.activated():
            self._stream.synchronize()
            for buffer in self._buffers:
                _release(buffer)
            self._buffers = []
            self._stream = None
        self._context.detach()
        self._context = None

    def __enter__(self) -> CudaDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
