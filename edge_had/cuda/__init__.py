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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.runtime.base import BackendError


class CudaUnavailableError(BackendError):
    """pycuda is not installed, the CUDA driver cannot start, or there is no such GPU."""


STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING


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
    with _unavailable_on_driver_error(driver, f"GPU {index}"):
        count = driver.Device.count()
        if count == 0:
            raise CudaUnavailableError("the CUDA driver sees no GPU")
        if not 0 <= index < count:
            raise CudaUnavailableError(f"no GPU {index}: the CUDA driver sees {count} (0..{count - 1})")
        return driver.Device(index)


@contextmanager
def _unavailable_on_driver_error(driver: Any, what: str) -> Iterator[None]:
    """A CUDA driver error while asking a device about itself means this launcher cannot run:
    :class:`CudaUnavailableError`, which callers choosing a launcher take to try the next (CuPy)."""
    try:
        yield
    except driver.Error as error:
        raise CudaUnavailableError(f"{what}: the CUDA driver failed ({error})") from error


def gpu_sm(index: int = 0) -> str:
    """The compute capability of GPU ``index`` as TensorRT engines depend on it, e.g. ``"sm_87"``
    (Jetson Orin). Creates no context."""
    driver = _driver()
    device = _device(driver, index)
    with _unavailable_on_driver_error(driver, f"GPU {index}"):
        major, minor = device.compute_capability()
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
        with _unavailable_on_driver_error(self._driver, f"GPU {index}"):
            self.name = str(device.name())
            major, minor = device.compute_capability()
        self.sm = f"sm_{major}{minor}"
        self._lock = threading.RLock()
        self._multiprocessors: int | None = None
        self._buffers: list[Buffer] = []
        try:  # e.g. a GPU in exclusive-process mode held by another process
            self._context: Any = device.retain_primary_context()
        except Exception as error:  # pycuda's driver errors: said as "unavailable", so callers fall back
            raise CudaUnavailableError(f"GPU {index} ({self.name}): no context ({error})") from error
        try:
            with self.activated():
                # non-blocking: no implicit wait on the legacy default stream, where torch queues the
                # network's kernels (from the enhancement worker thread, under --async-enhance); this
                # stream touches only its own buffers and is synchronised explicitly (as CuPy's is)
                self._stream: Any = self._driver.Stream(flags=STREAM_NON_BLOCKING)
        except Exception as error:
            self._context.detach()
            self._context = None
            raise CudaUnavailableError(f"GPU {index} ({self.name}): no stream ({error})") from error

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
    def multiprocessors(self) -> int:
        """The GPU's streaming multiprocessor count (asked of the driver on first use)."""
        if self._multiprocessors is None:
            with _unavailable_on_driver_error(self._driver, f"GPU {self.index} ({self.name})"):
                attribute = self._driver.device_attribute.MULTIPROCESSOR_COUNT
                self._multiprocessors = int(self._driver.Device(self.index).get_attribute(attribute))
        return self._multiprocessors

    @property
    def model(self) -> str:
        """The GPU's name and SM count, e.g. ``Orin, 8 SMs``: Jetson boards of one SM version can
        share a name (an engine tuned on an AGX Orin's 16 SMs is not one for an Orin Nano's 4-8)."""
        return f"{self.name}, {self.multiprocessors} SMs"

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
        """Release ``buffer`` now (not whenever the garbage collector gets to it), once the work
        queued on the stream, which may still read it, has finished."""
        with self.activated():
            self._stream.synchronize()
            _release(buffer)
        self._buffers = [kept for kept in self._buffers if kept is not buffer]

    def upload(self, buffer: Buffer, array: np.ndarray, *, offset: int = 0) -> None:
        """Queue a copy of ``array`` into ``buffer`` from element ``offset`` on, on the stream (via
        the same elements of its pinned host array)."""
        flat = np.ascontiguousarray(array, dtype=buffer.host.dtype).reshape(-1)
        if offset < 0 or offset + flat.size > buffer.capacity:
            raise ValueError(
                f"elements {offset}..{offset + flat.size} do not fit a buffer of {buffer.capacity}"
            )
        staged = buffer.host[offset : offset + flat.size]
        staged[...] = flat
        with self.activated():
            self._driver.memcpy_htod_async(int(buffer.device) + offset * flat.itemsize, staged, self._stream)

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

    def zero(self, buffer: Buffer, nbytes: int | None = None, *, offset: int = 0) -> None:
        """Queue a memset to 0 of ``nbytes`` (default: the rest) of ``buffer``'s device half from
        byte ``offset`` on."""
        size = buffer.host.nbytes - offset if nbytes is None else int(nbytes)
        if offset < 0 or size < 0 or offset + size > buffer.host.nbytes:
            raise ValueError(
                f"cannot zero bytes {offset}..{offset + size} of a {buffer.host.nbytes}-byte buffer"
            )
        if size:
            with self.activated():
                self._driver.memset_d8_async(int(buffer.device) + offset, 0, size, self._stream)

    # Kernels: modules are loaded into this context and launched on its stream, so code outside
    # this module never touches pycuda (edge_had.cuda.rx_kernels launches the RX kernels this way).

    def load_module(self, image: str | Path | bytes) -> Any:
        """Load a cubin, fatbin or PTX image (a path or its bytes) into this context; returns
        pycuda's module. :class:`CudaUnavailableError` when the driver rejects it (say, no code
        for this GPU's architecture in a fatbin)."""
        what = "an in-memory image" if isinstance(image, bytes) else str(image)
        with self.activated():
            try:
                if isinstance(image, bytes):
                    return self._driver.module_from_buffer(image)
                return self._driver.module_from_file(str(image))
            except self._driver.Error as error:
                raise CudaUnavailableError(
                    f"the CUDA driver cannot load {what} on {self.name} ({self.sm}): {error}"
                ) from None

    def compile_module(self, source: str, options: Sequence[str] = ()) -> Any:
        """Compile CUDA C++ ``source`` with nvcc (``pycuda.compiler``, no ``extern "C"`` wrapper
        added) for this GPU's architecture and load it; returns pycuda's module."""
        try:
            from pycuda.compiler import compile as nvcc_compile
        except ImportError as error:
            raise CudaUnavailableError(f"pycuda.compiler is not importable ({error})") from None
        with self.activated():
            try:
                cubin = nvcc_compile(source, no_extern_c=True, arch=self.sm, options=list(options))
            except Exception as error:  # pycuda raises CompileError, or OSError without nvcc
                raise CudaUnavailableError(
                    f"nvcc could not compile the kernels for {self.sm}: {error}"
                ) from None
        return self.load_module(cubin)

    def kernel(self, module: Any, name: str, signature: str) -> Any:
        """Kernel ``name`` of ``module``, prepared for :meth:`launch` with pycuda's argument format
        ``signature`` (struct codes: ``P`` pointer, ``i`` int32, ``q`` int64, ``f``, ``d``)."""
        with self.activated():
            try:
                function = module.get_function(name)
            except self._driver.Error as error:
                raise CudaUnavailableError(f"the loaded module has no kernel {name!r}: {error}") from None
            with _unavailable_on_driver_error(self._driver, f"kernel {name!r}"):
                function.prepare(signature)
        return function

    def launch(
        self,
        kernel: Any,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        *args: int | float,
        shared: int = 0,
    ) -> None:
        """Queue ``kernel`` (from :meth:`kernel`) on the stream; pointers are passed as ints."""
        with self.activated():
            kernel.prepared_async_call(grid, block, self._stream, *args, shared_size=shared)

    def record_event(self) -> Any:
        """A CUDA event recorded on the stream now (for :meth:`elapsed_ms`)."""
        with self.activated():
            event = self._driver.Event()
            event.record(self._stream)
        return event

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds of GPU time between two events of :meth:`record_event` (waits for ``end``)."""
        with self.activated():
            end.synchronize()
            return float(start.time_till(end))

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
