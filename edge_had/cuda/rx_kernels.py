"""Global RX on the GPU with edge-had's own CUDA kernels (``kernels/rx_kernels.cu``).

:class:`CudaRX` scores pixels, ``||W (x - mean)||^2``, in one fused kernel (centring, whitening
GEMM, row norm; FP32 arithmetic, float32 or float16 pixels) and accumulates covariance sums,
``s1 += sum(x - shift)`` and ``s2 += sum((x - shift)(x - shift)^T)``, in float64 (or, on request,
FP32 per-block sums; the error bounds are in the ``.cu`` file). :class:`LocalRXPlan` runs the
stream's local (dual-window) RX of one line in float64 (:mod:`edge_had.stream.cuda_line_math`).
Two launchers run the same kernels:

* ``pycuda`` - through :class:`edge_had.cuda.CudaDevice`, the one owner of the CUDA context and
  stream (this module never imports pycuda itself);
* ``cupy`` - ``cupy.RawModule``, imported lazily, on the same (primary) context;
* ``auto`` - pycuda, else CuPy.

Where the kernels come from: a fatbin built by the repository's CMakeLists.txt
(``rx_kernels.fatbin`` + ``rx_kernels.sha256`` in ``$EDGE_HAD_CUDA_KERNELS``, in this package's
``kernels/`` folder, or in a checkout's ``build/edge_had_kernels``), used only when its recorded
SHA-256 matches the shipped source; otherwise, or when the driver finds no code for the GPU in it,
the shipped ``.cu`` is compiled at run time (nvcc through pycuda, NVRTC through CuPy).
:attr:`CudaRX.kernel_origin` and :attr:`CudaRX.notes` say which happened and why.

Without a GPU, pycuda or CuPy every entry point raises :class:`CudaUnavailableError` saying why.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edge_had.cuda import Buffer, CudaDevice, CudaUnavailableError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
SOURCE = KERNEL_DIR / "rx_kernels.cu"
FATBIN_NAME = "rx_kernels.fatbin"
STAMP_NAME = "rx_kernels.sha256"
KERNELS_ENV = "EDGE_HAD_CUDA_KERNELS"
CHECKOUT_BUILD = Path(__file__).resolve().parents[2] / "build" / "edge_had_kernels"

LAUNCHERS = ("auto", "pycuda", "cupy")
PRECISIONS = ("fp64", "fp32")

# Launch geometry fixed by the kernels (EH_THREADS, EH_TILE, EH_SLICE in rx_kernels.cu).
THREADS = 256
TILE = 64
SLICE = 16
MAX_FP32_CHUNK = 256  # pixels summed in FP32 per block at most (bounds the acc32 error)
MIN_CHUNK = 64  # pixels per covariance block at least (fewer float64 atomics)
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y, which counts the covariance kernel's pixel chunks

SCORE_SIGNATURE = "PqPPPiPiiii"  # x, ldx, mean_hi, mean_lo, w, ldw, scores, n, bands, k, lower
COV_SIGNATURE = "PqPPiiiPP"  # x, ldx, valid, shift, n, bands, chunk, s1, s2
SCORE_KERNELS = {"float32": "rx_score_f32", "float16": "rx_score_f16"}
COV_KERNELS = {
    ("float32", "fp64"): "rx_cov_f32_acc64",
    ("float16", "fp64"): "rx_cov_f16_acc64",
    ("float32", "fp32"): "rx_cov_f32_acc32",
    ("float16", "fp32"): "rx_cov_f16_acc32",
}
# The local RX of a stream line (lrx_*_f64): put a line's box sums, sum a window, score it.
LOCAL_KERNELS = {
    "lrx_put_f64": "PPiiiiP",  # y, valid, width, dims, inner, outer, box
    "lrx_window_f64": "PiiiqqqiP",  # box, slots, width, features, centre, top, bottom, inner, sums
    "lrx_score_f64": "PPiiPdP",  # sums, y, width, dims, fallback, load, scores
}
LOCAL_SCORE_THREADS = 32  # EH_LRX_THREADS: lrx_score_f64's threads per block, one per pixel
LOCAL_MAX_DIMS = 16  # EH_LRX_MAX_DIMS
SIGNATURES = (
    {name: SCORE_SIGNATURE for name in SCORE_KERNELS.values()}
    | {name: COV_SIGNATURE for name in COV_KERNELS.values()}
    | LOCAL_KERNELS
)


def block_size(kernel: str) -> int:
    """Threads per block the kernel was written for (``EH_LRX_THREADS`` or ``EH_THREADS``)."""
    return LOCAL_SCORE_THREADS if kernel == "lrx_score_f64" else THREADS


def local_features(dims: int) -> int:
    """Per-pixel features of the local-RX kernels: ``[valid, y_a, y_a y_b (a <= b)]``."""
    return 1 + dims + dims * (dims + 1) // 2


COMPILE_OPTIONS = ("-O3", "-std=c++17")


class KernelLoadError(CudaUnavailableError):
    """The RX kernels could neither be loaded from a fatbin nor compiled for this GPU."""


# --------------------------------------------------------------------------- sources and fatbins


def kernel_source() -> str:
    """The shipped CUDA source of the RX kernels."""
    return SOURCE.read_text()


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def fatbin_dirs(kernel_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for a prebuilt fatbin, in order: ``kernel_dir``, ``$EDGE_HAD_CUDA_KERNELS``,
    this package's ``kernels/``, a checkout's ``build/edge_had_kernels``."""
    folders = [Path(kernel_dir)] if kernel_dir is not None else []
    if os.environ.get(KERNELS_ENV):
        folders.append(Path(os.environ[KERNELS_ENV]))
    return [*folders, KERNEL_DIR, CHECKOUT_BUILD]


def find_fatbin(kernel_dir: str | Path | None = None) -> tuple[Path | None, list[str]]:
    """The first fatbin built from the current source (its ``.sha256`` stamp matches), and a note
    for every fatbin passed over."""
    expected = source_sha256()
    notes: list[str] = []
    for folder in fatbin_dirs(kernel_dir):
        fatbin, stamp = folder / FATBIN_NAME, folder / STAMP_NAME
        if not fatbin.is_file():
            continue
        recorded = stamp.read_text().split()[0] if stamp.is_file() and stamp.read_text().split() else ""
        if recorded != expected:
            why = "has no sha256 stamp" if not recorded else "was built from another rx_kernels.cu"
            notes.append(f"{fatbin} {why}: ignored")
            continue
        return fatbin, notes
    return None, notes


# --------------------------------------------------------------------------- launch geometry


def score_splits(n: int, k: int, multiprocessors: int) -> int:
    """Output-tile groups (grid.y) of the scoring kernel: enough blocks for about two per SM when
    the pixels alone give fewer, at most one group per 64 outputs."""
    row_tiles, col_tiles = math.ceil(n / TILE), math.ceil(k / TILE)
    return max(1, min(col_tiles, math.ceil(2 * multiprocessors / max(row_tiles, 1))))


def score_grid(n: int, k: int, splits: int) -> tuple[int, int, int]:
    return (math.ceil(n / TILE), splits, 1)


def cov_pairs(bands: int) -> int:
    tiles = math.ceil(bands / TILE)
    return tiles * (tiles + 1) // 2


def cov_chunk(n: int, bands: int, multiprocessors: int, precision: str = "fp64") -> int:
    """Pixels per covariance block: about two blocks per SM over the upper band-tile pairs, a
    multiple of 16, at least 64, and for FP32 sums at most :data:`MAX_FP32_CHUNK`."""
    chunks = max(1, math.ceil(2 * multiprocessors / cov_pairs(bands)))
    chunk = max(MIN_CHUNK, math.ceil(math.ceil(max(n, 1) / chunks) / SLICE) * SLICE)
    return min(chunk, MAX_FP32_CHUNK) if precision == "fp32" else chunk


def cov_grid(n: int, bands: int, chunk: int) -> tuple[int, int, int]:
    return (cov_pairs(bands), math.ceil(n / chunk), 1)


def is_lower_triangular(matrix: np.ndarray) -> bool:
    return matrix.shape[0] == matrix.shape[1] and not np.triu(matrix, 1).any()


# --------------------------------------------------------------------------- launchers


class _Memory(Protocol):
    host: np.ndarray

    @property
    def address(self) -> int: ...

    @property
    def capacity(self) -> int: ...


class _Backend(Protocol):
    name: str
    device_name: str
    sm: str
    multiprocessors: int
    origin: str
    notes: list[str]

    def allocate(self, capacity: int, dtype: np.dtype[Any] | type) -> _Memory: ...
    def upload(self, buffer: _Memory, array: np.ndarray, offset: int = 0) -> None: ...
    def download(self, buffer: _Memory, shape: tuple[int, ...]) -> np.ndarray: ...
    def zero(self, buffer: _Memory, nbytes: int, offset: int = 0) -> None: ...
    def launch(self, name: str, grid: tuple[int, int, int], args: tuple[int | float, ...]) -> None: ...
    def synchronize(self) -> None: ...
    def record(self) -> Any: ...
    def elapsed_ms(self, start: Any, end: Any) -> float: ...
    def close(self) -> None: ...


class _PycudaBackend:
    """The kernels in :class:`CudaDevice`'s context, launched on its stream."""

    name = "pycuda"

    def __init__(self, device: CudaDevice | None, index: int, fatbin: Path | None, notes: list[str]) -> None:
        self._owned = device is None
        self.closed = False  # after close(), plans made before must not reach freed memory
        self.device = CudaDevice(index) if device is None else device
        self.device_name, self.sm = self.device.name, self.device.sm
        self.notes = notes
        self._buffers: list[Buffer] = []
        try:
            self.multiprocessors = self.device.multiprocessors
            self._module, self.origin = self._load(fatbin)
            self._kernels = {
                name: self.device.kernel(self._module, name, signature)
                for name, signature in SIGNATURES.items()
            }
        except BaseException:
            self.close()
            raise

    def _load(self, fatbin: Path | None) -> tuple[Any, str]:
        if fatbin is not None:
            try:
                return self.device.load_module(fatbin), f"fatbin {fatbin}"
            except CudaUnavailableError as error:
                self.notes.append(f"prebuilt fatbin not usable, compiling instead: {error}")
        try:
            module = self.device.compile_module(kernel_source(), COMPILE_OPTIONS)
        except CudaUnavailableError as error:
            raise KernelLoadError(str(error)) from None
        return module, f"compiled at run time by nvcc (pycuda) for {self.sm}"

    def _open(self) -> None:
        if self.closed:  # a shared device is still open, but this launcher's buffers are freed
            raise CudaUnavailableError("these CUDA kernels were closed: make a new CudaRX and new plans")

    def allocate(self, capacity: int, dtype: np.dtype[Any] | type) -> Buffer:
        self._open()
        buffer = self.device.allocate(capacity, dtype)
        self._buffers.append(buffer)
        return buffer

    def upload(self, buffer: _Memory, array: np.ndarray, offset: int = 0) -> None:
        # The copy reads the buffer's pinned host half asynchronously: restaging it while an
        # earlier copy may still be queued would race, so wait for the queue first.
        assert isinstance(buffer, Buffer)
        self._open()
        self.device.synchronize()
        self.device.upload(buffer, array, offset=offset)

    def download(self, buffer: _Memory, shape: tuple[int, ...]) -> np.ndarray:
        assert isinstance(buffer, Buffer)
        self._open()
        return self.device.download(buffer, shape)

    def zero(self, buffer: _Memory, nbytes: int, offset: int = 0) -> None:
        assert isinstance(buffer, Buffer)
        self._open()
        self.device.zero(buffer, nbytes, offset=offset)

    def launch(self, name: str, grid: tuple[int, int, int], args: tuple[int | float, ...]) -> None:
        self._open()
        self.device.launch(self._kernels[name], grid, (block_size(name), 1, 1), *args)

    def synchronize(self) -> None:
        self.device.synchronize()

    def record(self) -> Any:
        return self.device.record_event()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return self.device.elapsed_ms(start, end)

    def close(self) -> None:
        self.closed = True
        if self._owned:
            self.device.close()  # frees every buffer too
        else:
            for buffer in self._buffers:
                self.device.free(buffer)
        self._buffers.clear()


@dataclass
class _CupyBuffer:
    host: np.ndarray  # pinned (cupyx.empty_pinned)
    device: Any  # cupy.ndarray

    @property
    def address(self) -> int:
        return int(self.device.data.ptr)

    @property
    def capacity(self) -> int:
        return int(self.host.size)


_CUPY_ARGUMENT: dict[str, Any] = {
    "P": np.uint64,
    "q": np.int64,
    "i": np.int32,
    "f": np.float32,
    "d": np.float64,
}


class _CupyBackend:
    """The same kernels through ``cupy.RawModule`` on GPU ``index``'s primary context, one stream."""

    name = "cupy"

    def __init__(self, index: int, fatbin: Path | None, notes: list[str]) -> None:
        try:  # through importlib: CuPy is optional and untyped (no stubs needed to check this file)
            cupy: Any = importlib.import_module("cupy")
            cupyx: Any = importlib.import_module("cupyx")
        except ImportError as error:
            raise CudaUnavailableError(f"cupy is not importable ({error})") from None
        self._cupy, self._cupyx = cupy, cupyx
        runtime = cupy.cuda.runtime
        try:
            count = runtime.getDeviceCount()
        except Exception as error:  # CUDARuntimeError: no driver, no device
            raise CudaUnavailableError(f"CuPy cannot reach the CUDA driver: {error}") from None
        if not 0 <= index < count:
            raise CudaUnavailableError(f"no GPU {index}: CuPy sees {count}")
        self._device = cupy.cuda.Device(index)
        try:  # CUDARuntimeError, e.g. a GPU in exclusive-process mode held elsewhere
            properties = runtime.getDeviceProperties(index)
            with self._device:
                self._stream = cupy.cuda.Stream(non_blocking=True)
        except Exception as error:
            raise CudaUnavailableError(f"CuPy cannot use GPU {index}: {error}") from error
        name = properties["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self.sm = f"sm_{properties['major']}{properties['minor']}"
        self.multiprocessors = int(properties["multiProcessorCount"])
        self.notes = notes
        self._buffers: list[_CupyBuffer] = []
        with self._device:
            self._module, self._kernels, self.origin = self._load(fatbin)

    def _load(self, fatbin: Path | None) -> tuple[Any, dict[str, Any], str]:
        cupy = self._cupy
        if fatbin is not None:
            try:
                module = cupy.RawModule(path=str(fatbin))
                kernels = {name: module.get_function(name) for name in SIGNATURES}
                return module, kernels, f"fatbin {fatbin}"
            except Exception as error:  # CUDADriverError: no code for this GPU, bad image
                self.notes.append(f"prebuilt fatbin not usable, compiling instead: {error}")
        try:
            module = cupy.RawModule(code=kernel_source(), options=("-std=c++17",))
            kernels = {name: module.get_function(name) for name in SIGNATURES}
        except Exception as error:  # CompileException, CUDADriverError
            raise KernelLoadError(
                f"NVRTC (CuPy) could not build the kernels for {self.sm}: {error}"
            ) from None
        return module, kernels, f"compiled at run time by NVRTC (CuPy) for {self.sm}"

    def allocate(self, capacity: int, dtype: np.dtype[Any] | type) -> _CupyBuffer:
        if capacity < 1:
            raise ValueError(f"a buffer needs at least one element, got {capacity}")
        with self._device:
            buffer = _CupyBuffer(
                self._cupyx.empty_pinned((int(capacity),), dtype), self._cupy.empty((int(capacity),), dtype)
            )
        self._buffers.append(buffer)
        return buffer

    def upload(self, buffer: _Memory, array: np.ndarray, offset: int = 0) -> None:
        flat = np.ascontiguousarray(array, dtype=buffer.host.dtype).reshape(-1)
        if offset < 0 or offset + flat.size > buffer.capacity:
            raise ValueError(
                f"elements {offset}..{offset + flat.size} do not fit a buffer of {buffer.capacity}"
            )
        self.synchronize()  # an earlier queued copy may still read the pinned host half
        staged = buffer.host[offset : offset + flat.size]
        staged[...] = flat
        runtime = self._cupy.cuda.runtime
        with self._device:
            runtime.memcpyAsync(
                buffer.address + offset * flat.itemsize,
                staged.ctypes.data,
                staged.nbytes,
                runtime.memcpyHostToDevice,
                self._stream.ptr,
            )

    def download(self, buffer: _Memory, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        if size > buffer.capacity:
            raise ValueError(f"a {shape} tensor does not fit a buffer of {buffer.capacity}")
        target = buffer.host[:size]
        runtime = self._cupy.cuda.runtime
        with self._device:
            runtime.memcpyAsync(
                target.ctypes.data,
                buffer.address,
                target.nbytes,
                runtime.memcpyDeviceToHost,
                self._stream.ptr,
            )
        return target.reshape(shape)

    def zero(self, buffer: _Memory, nbytes: int, offset: int = 0) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > buffer.host.nbytes:
            raise ValueError(
                f"cannot zero bytes {offset}..{offset + nbytes} of a {buffer.host.nbytes}-byte buffer"
            )
        if nbytes:
            with self._device:
                self._cupy.cuda.runtime.memsetAsync(buffer.address + offset, 0, int(nbytes), self._stream.ptr)

    def launch(self, name: str, grid: tuple[int, int, int], args: tuple[int | float, ...]) -> None:
        values = tuple(
            _CUPY_ARGUMENT[code](value) for code, value in zip(SIGNATURES[name], args, strict=True)
        )
        with self._device, self._stream:
            self._kernels[name](grid, (block_size(name), 1, 1), values)

    def synchronize(self) -> None:
        with self._device:
            self._stream.synchronize()

    def record(self) -> Any:
        with self._device:
            event = self._cupy.cuda.Event()
            event.record(self._stream)
        return event

    def elapsed_ms(self, start: Any, end: Any) -> float:
        with self._device:
            end.synchronize()
            return float(self._cupy.cuda.get_elapsed_time(start, end))

    def close(self) -> None:
        with self._device:
            self._stream.synchronize()
        self._buffers.clear()


# --------------------------------------------------------------------------- plans (device-resident)


def _as_pixels(lines: np.ndarray, bands: int) -> np.ndarray:
    array = np.asarray(lines)
    if array.ndim < 1 or array.shape[-1] != bands:
        raise ValueError(f"expected (..., {bands}) pixels, got shape {array.shape}")
    dtype = np.float16 if array.dtype == np.float16 else np.float32
    return np.ascontiguousarray(array.reshape(-1, bands), dtype=dtype)


def split_mean(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean as two float32 vectors, ``hi + lo`` (``hi`` the mean rounded, ``lo`` what that
    lost): the score kernel centres ``(x - hi) - lo``, one rounding of ``x - mean`` for pixels near
    it, where a float32 mean alone shifts every pixel by up to 2^-24 of the mean."""
    mean = np.asarray(mean, dtype=np.float64)
    hi = mean.astype(np.float32)
    return hi, (mean - hi).astype(np.float32)


class ScorePlan:
    """Device buffers to score up to ``capacity`` pixels of ``bands`` bands with a ``k x bands``
    whitener; the statistics stay on the device between calls (:meth:`set_background`).

    ``upload`` / ``launch`` / ``download`` queue work on the launcher's stream; :meth:`__call__`
    does all three and waits. ``launch(n, offset)`` scores pixels ``offset .. offset + n`` of the
    uploaded block (benchmarks keep many lines on the device and score them one at a time)."""

    def __init__(self, rx: CudaRX, capacity: int, bands: int, k: int, dtype: type = np.float32) -> None:
        if capacity < 1 or bands < 1 or k < 1:
            raise ValueError(f"capacity, bands and k must be >= 1, got {capacity}, {bands}, {k}")
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in SCORE_KERNELS:
            raise ValueError(f"pixels must be float32 or float16, got {self.dtype}")
        self._rx, self._backend = rx, rx._backend
        self.capacity, self.bands, self.k = capacity, bands, k
        self.kernel = SCORE_KERNELS[self.dtype.name]
        self.lower = False
        self.x = self._backend.allocate(capacity * bands, self.dtype)
        self.mean_hi = self._backend.allocate(bands, np.float32)
        self.mean_lo = self._backend.allocate(bands, np.float32)
        self.whitener = self._backend.allocate(k * bands, np.float32)
        self.scores = self._backend.allocate(capacity, np.float32)
        self._has_background = False

    def set_background(self, mean: np.ndarray, whitener: np.ndarray, *, lower: bool | None = None) -> None:
        mean, whitener = np.asarray(mean), np.asarray(whitener)
        if mean.shape != (self.bands,) or whitener.shape != (self.k, self.bands):
            raise ValueError(
                f"expected mean ({self.bands},) and whitener ({self.k}, {self.bands}), "
                f"got {mean.shape} and {whitener.shape}"
            )
        self.lower = is_lower_triangular(whitener) if lower is None else bool(lower)
        mean_hi, mean_lo = split_mean(mean)
        self._backend.upload(self.mean_hi, mean_hi)
        self._backend.upload(self.mean_lo, mean_lo)
        self._backend.upload(self.whitener, whitener.astype(np.float32))
        self._has_background = True

    def upload(self, pixels: np.ndarray) -> int:
        """Queue the copy of ``(n, bands)`` pixels (cast to the plan's dtype); returns n."""
        pixels = np.ascontiguousarray(np.asarray(pixels).reshape(-1, self.bands), dtype=self.dtype)
        if pixels.shape[0] > self.capacity:
            raise ValueError(f"{pixels.shape[0]} pixels exceed the plan's capacity {self.capacity}")
        self._backend.upload(self.x, pixels)
        return int(pixels.shape[0])

    def launch(self, n: int, offset: int = 0, *, splits: int | None = None) -> None:
        """Queue the scoring of pixels ``offset .. offset + n`` into ``scores[offset:offset + n]``."""
        if not self._has_background:
            raise ValueError("set_background() first")
        if n < 0 or offset < 0 or offset + n > self.capacity:
            raise ValueError(f"pixels {offset}..{offset + n} are outside the plan's {self.capacity}")
        if n == 0:
            return
        splits = score_splits(n, self.k, self._backend.multiprocessors) if splits is None else splits
        splits = max(1, min(splits, math.ceil(self.k / TILE)))
        x = self.x.address + offset * self.bands * self.dtype.itemsize
        scores = self.scores.address + offset * 4
        if splits > 1:  # the kernel adds partial norms: start from 0
            self._backend.zero(self.scores, 4 * n, 4 * offset)
        args = (x, self.bands, self.mean_hi.address, self.mean_lo.address, self.whitener.address, self.bands,
                scores, n, self.bands, self.k, int(self.lower))  # fmt: skip
        self._backend.launch(self.kernel, score_grid(n, self.k, splits), args)

    def download(self, n: int, offset: int = 0) -> np.ndarray:
        """Queue the copy of scores ``offset .. offset + n`` back; the returned array (a view of
        pinned memory) is valid after a synchronize and until the next download."""
        return self._backend.download(self.scores, (offset + n,))[offset:]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        n = self.upload(pixels)
        self.launch(n)
        scores = self.download(n)
        self._backend.synchronize()
        return np.array(scores, copy=True)


class CovPlan:
    """Device buffers that accumulate ``n``, ``s1`` and ``s2`` (float64, on the device) of pixels
    centred on a fixed ``shift`` over any number of :meth:`add` calls; :meth:`result` brings the
    sums back (``s2`` symmetric), relative to ``shift`` exactly."""

    def __init__(self, rx: CudaRX, capacity: int, bands: int, *, dtype: type = np.float32,
                 precision: str = "fp64") -> None:  # fmt: skip
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if capacity < 1 or bands < 1:
            raise ValueError(f"capacity and bands must be >= 1, got {capacity}, {bands}")
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in SCORE_KERNELS:
            raise ValueError(f"pixels must be float32 or float16, got {self.dtype}")
        self._backend = rx._backend
        self.capacity, self.bands, self.precision = capacity, bands, precision
        self.kernel = COV_KERNELS[(self.dtype.name, precision)]
        self.x = self._backend.allocate(capacity * bands, self.dtype)
        self.valid = self._backend.allocate(capacity, np.uint8)
        self.shift_buffer = self._backend.allocate(bands, np.float64)
        self.s1 = self._backend.allocate(bands, np.float64)
        self.s2 = self._backend.allocate(bands * bands, np.float64)
        self.reset(np.zeros(bands))  # fresh device memory holds garbage: the sums start at zero

    def reset(self, shift: np.ndarray) -> None:
        """Zero the sums and centre the next pixels on ``shift`` (float64)."""
        shift = np.asarray(shift, dtype=np.float64)
        if shift.shape != (self.bands,):
            raise ValueError(f"expected a ({self.bands},) shift, got {shift.shape}")
        self.shift = shift.copy()
        self._backend.upload(self.shift_buffer, self.shift)
        self._backend.zero(self.s1, 8 * self.bands)
        self._backend.zero(self.s2, 8 * self.bands * self.bands)
        self.n = 0

    def add(self, pixels: np.ndarray, valid: np.ndarray | None = None, *, chunk: int | None = None) -> None:
        """Queue the upload of ``(m, bands)`` pixels and their accumulation (``valid``: a boolean
        per pixel, False ones are left out)."""
        pixels = np.asarray(pixels).reshape(-1, self.bands)
        m = int(pixels.shape[0])
        if m > self.capacity:
            raise ValueError(f"{m} pixels exceed the plan's capacity {self.capacity}")
        if m == 0:
            return
        chunk = self._chunk(m, chunk)  # refused before anything is counted or queued
        self._backend.upload(self.x, pixels.astype(self.dtype, copy=False))
        valid_address = 0
        if valid is None:
            self.n += m
        else:
            flags = np.asarray(valid, dtype=bool).reshape(-1)
            if flags.shape != (m,):
                raise ValueError(f"expected {m} validity flags, got {flags.shape}")
            self._backend.upload(self.valid, flags.astype(np.uint8))
            valid_address = self.valid.address
            self.n += int(flags.sum())
        self.launch(m, valid_address=valid_address, chunk=chunk)

    def launch(self, m: int, offset: int = 0, *, valid_address: int = 0, chunk: int | None = None) -> None:
        """Queue the accumulation of uploaded pixels ``offset .. offset + m`` (the caller counts n);
        ``valid_address``: one flag byte per uploaded pixel, indexed as the pixels are."""
        chunk = self._chunk(m, chunk)
        per_launch = chunk * MAX_GRID_Y  # more chunks than gridDim.y holds: several launches
        for start in range(0, m, per_launch):  # (the kernel adds into the sums: same result)
            count = min(per_launch, m - start)
            x = self.x.address + (offset + start) * self.bands * self.dtype.itemsize
            valid = valid_address + offset + start if valid_address else 0  # one byte per pixel
            args = (x, self.bands, valid, self.shift_buffer.address, count, self.bands, chunk,
                    self.s1.address, self.s2.address)  # fmt: skip
            self._backend.launch(self.kernel, cov_grid(count, self.bands, chunk), args)

    def _chunk(self, m: int, chunk: int | None) -> int:
        """Pixels per block for ``m`` pixels: ``chunk``, checked, or :func:`cov_chunk`'s choice."""
        if chunk is None:
            return cov_chunk(m, self.bands, self._backend.multiprocessors, self.precision)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if self.precision == "fp32" and chunk > MAX_FP32_CHUNK:  # as cov_chunk caps its own choice
            raise ValueError(
                f"chunk {chunk}: FP32 sums take at most {MAX_FP32_CHUNK} pixels per block (their error bound)"
            )
        return chunk

    def result(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, s1, s2)`` so far, float64, ``s2`` symmetric (waits for the stream)."""
        s1 = self._backend.download(self.s1, (self.bands,))
        s2 = self._backend.download(self.s2, (self.bands, self.bands))
        self._backend.synchronize()
        s1, upper = s1.copy(), np.triu(s2)
        s2 = upper + np.triu(upper, 1).T
        if self.precision == "fp32":  # the kernel centred on float32(shift): move to shift exactly
            delta = self.shift.astype(np.float32).astype(np.float64) - self.shift
            cross = np.outer(s1, delta)
            s2 = s2 + (cross + cross.T) + self.n * np.outer(delta, delta)  # symmetric, exactly
            s1 = s1 + self.n * delta
        return self.n, s1, s2


class LocalRXPlan:
    """The device ring of a stream's last ``slots`` lines projected on ``dims`` principal
    components (``dims <= 16``) with their along-line box sums, and the local (dual-window) RX of
    one of its lines: ``lrx_put_f64`` when a line is :meth:`put`, ``lrx_window_f64`` and
    ``lrx_score_f64`` per scored line (float64, numpy's algorithm; see ``rx_kernels.cu``).
    ``inner`` and ``outer`` are the guard's and the window's half-widths. The line at absolute
    position ``p`` lives in slot ``p % slots``; :meth:`put` replaces what that slot held."""

    def __init__(self, rx: CudaRX, width: int, dims: int, slots: int, *, inner: int, outer: int) -> None:
        if width < 1 or slots < 1 or not 1 <= dims <= LOCAL_MAX_DIMS:
            raise ValueError(
                f"need width >= 1, slots >= 1 and 1 <= dims <= {LOCAL_MAX_DIMS}, got {width}, {slots}, {dims}"
            )
        if not 0 <= inner < outer:
            raise ValueError(f"need 0 <= inner < outer, got {inner}, {outer}")
        self._backend = rx._backend
        self.width, self.dims, self.slots, self.inner, self.outer = width, dims, slots, inner, outer
        self.features = local_features(dims)
        self.y = self._backend.allocate(slots * dims * width, np.float64)
        self.valid = self._backend.allocate(slots * width, np.uint8)
        self.box = self._backend.allocate(slots * 2 * self.features * width, np.float64)
        self.sums = self._backend.allocate(self.features * width, np.float64)
        self.fallback = self._backend.allocate(dims, np.float64)
        self.scores = self._backend.allocate(width, np.float64)
        self._held: dict[int, int] = {}  # slot -> position
        self._fallback: np.ndarray | None = None

    def holds(self, position: int) -> bool:
        return self._held.get(position % self.slots) == position

    def forget(self) -> None:
        """Every slot counts as empty (the basis changed: lines must be put again)."""
        self._held.clear()

    def put(self, positions: list[int], y: np.ndarray, valid: np.ndarray) -> None:
        """Queue the upload of the lines at consecutive ``positions`` - ``y`` ``(lines, dims,
        width)`` (zero where not valid) and ``valid`` ``(lines, width)`` - and their box sums: one
        upload of each and one launch per run of consecutive slots (two where the ring wraps)."""
        y, valid = np.asarray(y), np.asarray(valid, dtype=bool)
        lines = len(positions)
        if y.shape != (lines, self.dims, self.width) or valid.shape != (lines, self.width):
            raise ValueError(
                f"expected y ({lines}, {self.dims}, {self.width}) and valid ({lines}, {self.width}), "
                f"got {y.shape} and {valid.shape}"
            )
        if not 0 < lines <= self.slots or list(positions) != list(range(positions[0], positions[0] + lines)):
            raise ValueError(f"put 1 to {self.slots} consecutive positions at once, got {positions}")
        if positions[0] < 0:
            raise ValueError(f"positions start at 0, got {positions}")
        start = 0
        while start < lines:
            slot = positions[start] % self.slots
            count = min(lines - start, self.slots - slot)  # up to the end of the ring
            run = slice(start, start + count)
            # the uploads cast to the buffers' float64 and uint8 as they stage
            self._backend.upload(self.y, y[run], slot * self.dims * self.width)
            self._backend.upload(self.valid, valid[run], slot * self.width)
            y_at = self.y.address + 8 * slot * self.dims * self.width
            box_at = self.box.address + 8 * slot * 2 * self.features * self.width
            valid_at = self.valid.address + slot * self.width
            args = (y_at, valid_at, self.width, self.dims, self.inner, self.outer, box_at)
            grid = (math.ceil(self.width / THREADS), self.features, count)
            self._backend.launch("lrx_put_f64", grid, args)
            for position in positions[run]:
                self._held[position % self.slots] = position
            start += count

    def __call__(
        self, centre: int, top: int, bottom: int, *, fallback: np.ndarray, load: float
    ) -> np.ndarray:
        """Local RX (float64, ``(width,)``) of the line at ``centre`` with the window lines
        ``top..bottom`` (all held); ``fallback``: the diagonal covariance of windows with too few
        pixels; ``load``: added to every covariance's diagonal. -1 marks a pixel whose window was
        singular or not finite (see the kernel)."""
        self.launch(centre, top, bottom, fallback=fallback, load=load)
        scores = self._backend.download(self.scores, (self.width,))
        self._backend.synchronize()
        return np.array(scores, copy=True)

    def launch(self, centre: int, top: int, bottom: int, *, fallback: np.ndarray, load: float) -> None:
        """Queue :meth:`__call__`'s two kernels (the scores stay on the device)."""
        if not 0 <= top <= centre <= bottom or bottom - top + 1 > self.slots:
            raise ValueError(f"window {top}..{bottom} around {centre} does not fit {self.slots} slots")
        missing = [p for p in range(top, bottom + 1) if not self.holds(p)]
        if missing:
            raise ValueError(f"lines {missing} are not on the device: put() them first")
        fallback = np.asarray(fallback, dtype=np.float64)
        if fallback.shape != (self.dims,):
            raise ValueError(f"expected a ({self.dims},) fallback, got {fallback.shape}")
        if self._fallback is None or not np.array_equal(fallback, self._fallback):
            self._backend.upload(self.fallback, fallback)
            self._fallback = fallback.copy()
        window = (self.box.address, self.slots, self.width, self.features, centre, top, bottom, self.inner,
                  self.sums.address)  # fmt: skip
        self._backend.launch("lrx_window_f64", (math.ceil(self.width / THREADS), self.features, 1), window)
        y = self.y.address + 8 * (centre % self.slots) * self.dims * self.width
        score = (self.sums.address, y, self.width, self.dims, self.fallback.address, float(load),
                 self.scores.address)  # fmt: skip
        self._backend.launch("lrx_score_f64", (math.ceil(self.width / LOCAL_SCORE_THREADS), 1, 1), score)


# --------------------------------------------------------------------------- the detector


class CudaRX:
    """Global RX scoring and covariance accumulation with the CUDA kernels; see the module doc.

    ``launcher``: ``"auto"`` (pycuda, else CuPy), ``"pycuda"`` or ``"cupy"``. ``device``: an open
    :class:`CudaDevice` to share (pycuda only; it stays open when this closes). ``kernel_dir``: a
    folder with a CMake-built fatbin, searched first. ``prebuilt=False`` always compiles the
    shipped source. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        launcher: str = "auto",
        *,
        index: int = 0,
        device: CudaDevice | None = None,
        kernel_dir: str | Path | None = None,
        prebuilt: bool = True,
    ) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; choose one of {LAUNCHERS}")
        if device is not None and launcher == "cupy":
            raise ValueError("a CudaDevice is a pycuda context: use launcher='pycuda' or 'auto' with it")
        self.notes: list[str] = []
        fatbin: Path | None = None
        if prebuilt:
            fatbin, skipped = find_fatbin(kernel_dir)
            self.notes.extend(skipped)
            if fatbin is None:
                self.notes.append("no prebuilt fatbin of the current source found: compiling at run time")
        if launcher == "auto":
            order = ["pycuda"] if device is not None else ["pycuda", "cupy"]
        else:
            order = [launcher]
        errors: list[tuple[str, CudaUnavailableError]] = []
        backend: _Backend | None = None
        for name in order:
            try:
                if name == "pycuda":
                    backend = _PycudaBackend(device, index, fatbin, self.notes)
                else:
                    backend = _CupyBackend(index, fatbin, self.notes)
                break
            except CudaUnavailableError as error:
                if len(order) == 1:
                    raise
                errors.append((name, error))
        if backend is None:
            message = "; ".join(f"{name}: {error}" for name, error in errors)
            # a launcher that started but could not build the kernels is a kernel problem
            kind = (
                KernelLoadError
                if any(isinstance(e, KernelLoadError) for _, e in errors)
                else CudaUnavailableError
            )
            raise kind(f"no CUDA launcher could run the RX kernels ({message})")
        self.notes.extend(f"{name} not used: {error}" for name, error in errors)
        self._backend: _Backend = backend
        self._score_plans: dict[tuple[str, int, int], ScorePlan] = {}
        self._cov_plans: dict[tuple[str, int, str], CovPlan] = {}
        self._closed = False

    # ---- facts

    @property
    def launcher(self) -> str:
        """``"pycuda"`` or ``"cupy"``: which one runs the kernels."""
        return self._backend.name

    @property
    def kernel_origin(self) -> str:
        """``fatbin <path>`` or ``compiled at run time by ...``."""
        return self._backend.origin

    @property
    def device_name(self) -> str:
        return self._backend.device_name

    @property
    def sm(self) -> str:
        return self._backend.sm

    @property
    def multiprocessors(self) -> int:
        return self._backend.multiprocessors

    def describe(self) -> dict[str, Any]:
        return {
            "launcher": self.launcher,
            "device": self.device_name,
            "sm": self.sm,
            "multiprocessors": self.multiprocessors,
            "kernels": self.kernel_origin,
            "notes": list(self.notes),
        }

    # ---- one-shot calls

    def score(
        self, lines: np.ndarray, mean: np.ndarray, whitener: np.ndarray, *, lower: bool | None = None
    ) -> np.ndarray:
        """RX scores ``||W (x - mean)||^2`` (float32) of the pixels of ``lines`` (``(..., bands)``,
        float16 kept, anything else as float32); the result has shape ``lines.shape[:-1]``.
        ``lower``: whether ``whitener`` is lower-triangular (default: checked)."""
        whitener = np.asarray(whitener)
        if whitener.ndim != 2:
            raise ValueError(f"the whitener must be (k, bands), got shape {whitener.shape}")
        k, bands = whitener.shape
        shape = np.shape(lines)[:-1]
        pixels = _as_pixels(lines, bands)
        n = int(pixels.shape[0])
        if n == 0:
            return np.zeros(shape, np.float32)
        plan = self._score_plan(pixels.dtype, n, bands, k)
        plan.set_background(np.asarray(mean), whitener, lower=lower)
        return plan(pixels).reshape(shape)

    def accumulate(
        self,
        lines: np.ndarray,
        shift: np.ndarray,
        *,
        valid: np.ndarray | None = None,
        precision: str = "fp64",
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, s1, s2)`` of the pixels of ``lines`` (``(..., bands)``) where ``valid`` (same leading
        shape, default all) holds: ``s1 = sum(x - shift)``, ``s2 = sum((x - shift)(x - shift)^T)``,
        float64, as :class:`edge_had.stream.causal.CausalStatistics` keeps them."""
        shift = np.asarray(shift, dtype=np.float64)
        bands = int(shift.shape[0])
        pixels = _as_pixels(lines, bands)
        plan = self._cov_plan(pixels.dtype, max(int(pixels.shape[0]), 1), bands, precision)
        plan.reset(shift)
        plan.add(pixels, None if valid is None else np.asarray(valid, dtype=bool).reshape(-1))
        return plan.result()

    # ---- device-resident plans (benchmarks, streaming)

    def score_plan(self, capacity: int, bands: int, k: int, dtype: type = np.float32) -> ScorePlan:
        return ScorePlan(self, capacity, bands, k, dtype)

    def cov_plan(
        self, capacity: int, bands: int, *, dtype: type = np.float32, precision: str = "fp64"
    ) -> CovPlan:
        return CovPlan(self, capacity, bands, dtype=dtype, precision=precision)

    def local_plan(self, width: int, dims: int, slots: int, *, inner: int, outer: int) -> LocalRXPlan:
        return LocalRXPlan(self, width, dims, slots, inner=inner, outer=outer)

    def _score_plan(self, dtype: np.dtype[Any], n: int, bands: int, k: int) -> ScorePlan:
        key = (dtype.name, bands, k)
        plan = self._score_plans.get(key)
        if plan is None or plan.capacity < n:
            plan = self._score_plans[key] = ScorePlan(
                self, max(n, plan.capacity * 2 if plan else n), bands, k, dtype.type
            )
        return plan

    def _cov_plan(self, dtype: np.dtype[Any], n: int, bands: int, precision: str) -> CovPlan:
        key = (dtype.name, bands, precision)
        plan = self._cov_plans.get(key)
        if plan is None or plan.capacity < n:
            capacity = max(n, plan.capacity * 2 if plan else n)
            plan = self._cov_plans[key] = CovPlan(
                self, capacity, bands, dtype=dtype.type, precision=precision
            )
        return plan

    # ---- memory and timing (benchmarks)

    def allocate(self, capacity: int, dtype: Any = np.float32) -> Any:
        """A launcher buffer of ``capacity`` elements: ``.host`` (pinned), ``.address`` (device)."""
        return self._backend.allocate(capacity, dtype)

    def zero(self, buffer: Any, nbytes: int | None = None) -> None:
        """Queue a memset to 0 of a buffer's device half (a fixed amount of GPU work: benchmarks
        queue one before a timed kernel so the start event waits for it, not for the launch)."""
        self._backend.zero(buffer, buffer.host.nbytes if nbytes is None else int(nbytes))

    def synchronize(self) -> None:
        self._backend.synchronize()

    def record(self) -> Any:
        """A CUDA event recorded on the launcher's stream now."""
        return self._backend.record()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """GPU milliseconds between two :meth:`record` events (waits for ``end``)."""
        return self._backend.elapsed_ms(start, end)

    # ---- lifetime

    def close(self) -> None:
        """Free the buffers and, when this object opened it, the device. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._score_plans.clear()
        self._cov_plans.clear()
        self._backend.close()

    def __enter__(self) -> CudaRX:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
