"""The TensorRT runner: a serialized engine (``edge-had build``) behind the runner contract.

``activate`` checks the engine against its sidecar (TensorRT version, GPU SM, precision,
checksum; see :func:`~edge_had.build.engine_cache.verify_engine`), deserializes it, and creates
one execution context; the GPU's primary context, its stream and every buffer belong to an
:class:`edge_had.cuda.CudaDevice`, which makes the context current around each call (so
``infer`` works from any thread). ``infer`` sets the input shapes from the feed, grows the
pinned host and device buffers when a shape needs more room than before, points the context at
them by the tensor names the engine reports, copies in, runs ``execute_async_v3``, copies every
output back and waits for the stream. Inputs and outputs are float32 (the exported graphs keep
FP32 I/O at every precision). ``deactivate`` frees all of it.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_had.build.engine_cache import REBUILD_HINT, EngineKey, verify_engine
from edge_had.build.tensorrt_engine import require_tensorrt, trt_logger
from edge_had.cuda import Buffer, CudaDevice
from edge_had.runtime.base import BackendError, Runner

if TYPE_CHECKING:
    import tensorrt as trt


def _shape(dims: trt.Dims | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(dims[axis]) for axis in range(len(dims)))


class TensorRTRunner(Runner):
    """Runs the engine at ``engine_path`` on GPU ``device_index``; see the module docstring."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, precision: str, *, device_index: int = 0) -> None:
        super().__init__(precision)
        self.engine_path = Path(engine_path)
        self.device_index = device_index
        #: The engine's key from its sidecar (None for an engine built without edge-had).
        self.key: EngineKey | None = None
        self.input_names: list[str] = []
        self.output_names: list[str] = []  # every output is bound; infer copies back those asked for
        self._device: CudaDevice | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._buffers: dict[str, Buffer] = {}

    def activate_impl(self) -> None:
        require_tensorrt()
        import tensorrt as trt

        device = CudaDevice(self.device_index)
        try:
            self.key = verify_engine(
                self.engine_path,
                tensorrt_version=trt.__version__,
                sm=device.sm,
                precision=self.precision,
                gpu=device.model,
            )
            with device.activated():
                try:
                    runtime, engine, context, names = self._open_engine(device)
                except BaseException as error:
                    # its frame holds the runtime, engine and context: destroyed now, while their
                    # CUDA context is current (as the engine build does), not after device.close()
                    traceback.clear_frames(error.__traceback__)
                    raise
        except BaseException:
            device.close()
            raise
        self.input_names = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        self.output_names = [
            name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT
        ]
        self._device, self._runtime, self._engine, self._context = device, runtime, engine, context

    def _open_engine(
        self, device: CudaDevice
    ) -> tuple[trt.Runtime, trt.ICudaEngine, trt.IExecutionContext, list[str]]:
        """The engine deserialized, its execution context and its tensor names, checked float32
        (with ``device``'s context current)."""
        import tensorrt as trt

        runtime = trt.Runtime(trt_logger())
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise BackendError(
                f"{self.engine_path}: TensorRT {trt.__version__} could not deserialize it (built "
                f"with another TensorRT version or for another GPU than {device.sm}?); {REBUILD_HINT}"
            )
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{self.engine_path}: no execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
        not_float = [name for name in names if engine.get_tensor_dtype(name) != trt.DataType.FLOAT]
        if not_float:
            raise BackendError(
                f"{self.engine_path}: tensors {not_float} are not float32; runners exchange float32 "
                "(export the graph with FP32 inputs and outputs)"
            )
        return runtime, engine, context, names

    def _bind(self, name: str, size: int) -> Buffer:
        """The buffer of tensor ``name``, reallocated (and re-bound) when ``size`` outgrows it."""
        assert self._device is not None and self._context is not None
        buffer = self._buffers.get(name)
        if buffer is None or buffer.capacity < size:
            if buffer is not None:
                self._device.free(buffer)
            buffer = self._buffers[name] = self._device.allocate(size, np.float32)
            if not self._context.set_tensor_address(name, buffer.address):
                raise BackendError(f"{self.name}: TensorRT refused the address of tensor {name!r}")
        return buffer

    def infer_impl(self, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        device, engine, context = self._device, self._engine, self._context
        assert device is not None and engine is not None and context is not None
        if sorted(feed) != sorted(self.input_names):
            raise BackendError(f"{self.name}: the engine takes inputs {self.input_names}, got {sorted(feed)}")
        with device.activated():
            for name in self.input_names:
                array = feed[name]
                if not context.set_input_shape(name, array.shape):
                    low, _, high = (_shape(dims) for dims in engine.get_tensor_profile_shape(name, 0))
                    raise BackendError(
                        f"{self.name}: input {name!r} of shape {array.shape} is outside the engine's "
                        f"profile {low}..{high} (batch, bands, lines, pixels); {REBUILD_HINT} with "
                        "--max-lines / --min-width / --max-width covering it"
                    )
                device.upload(self._bind(name, array.size), array)
            shapes = {name: _shape(context.get_tensor_shape(name)) for name in self.output_names}
            for name, shape in shapes.items():
                if min(shape, default=0) < 0:
                    raise BackendError(f"{self.name}: output {name!r} has an unresolved shape {shape}")
                self._bind(name, max(int(np.prod(shape)), 1))
            if not context.execute_async_v3(device.stream_handle):
                raise BackendError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")
            views = {name: device.download(self._buffers[name], shapes[name]) for name in outputs}
            device.synchronize()
            return {name: view.copy() for name, view in views.items()}

    def deactivate_impl(self) -> None:
        device = self._device
        if device is not None:
            with device.activated():  # TensorRT objects are destroyed while their context is current
                self._context = self._engine = self._runtime = None
            device.close()  # frees the buffers and releases the primary context
        self._device, self._buffers = None, {}
