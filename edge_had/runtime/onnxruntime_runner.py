"""Runner over an ONNX file in ONNX Runtime (CPU execution provider unless told otherwise).

On a CPU, ONNX Runtime runs an FP16 graph's operators in FP32 and drops the casts between them,
so values pass between layers unrounded: an FP16 graph there shows little more than the rounding
of its weights (the accuracy gate scores :mod:`edge_had.build.fp16_emulation` instead). INT8 Q/DQ
graphs run real int8 kernels for Conv/MatMul.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_had.runtime.base import BackendError, Runner


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        precision: str | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        graph: bytes | None = None,
    ) -> None:
        """``graph``: the file's bytes when the caller has read (and checked) them already."""
        self.path = Path(path)
        if graph is None and not self.path.is_file():
            raise BackendError(f"{self.path}: ONNX file not found (make one with `edge-had export`)")
        # the graph is read once: sessions (a re-activation too) load it from memory, so the file
        # may go away after this (a graph exported on the fly lives in a folder removed at once)
        self.graph = self.path.read_bytes() if graph is None else graph
        if precision is None:
            import onnx

            from edge_had.build.onnx_export import read_metadata

            metadata = read_metadata(onnx.load_model_from_string(self.graph), name=self.path)
            precision = str(metadata.get("precision", "fp32"))
        super().__init__(precision)
        self.providers = list(providers)
        self.threads = threads
        self.session = None

    def activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendError(
                f"onnxruntime cannot be imported ({error}): pip install 'edge-had[onnx]', or repair it"
            ) from error
        options = ort.SessionOptions()
        # no busy-waiting between runs: in the line loop numpy's BLAS threads run right after
        # each inference, and spinning ORT threads took their cores (measured: causal RX went
        # from 0.8 to 8 ms per line at the FX10 shape)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        try:
            session = ort.InferenceSession(self.graph, options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise BackendError(f"{self.path}: ONNX Runtime cannot load it ({error})") from error
        self.session = session
        self.output_names = tuple(output.name for output in session.get_outputs())

    def infer_impl(self, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        assert self.session is not None
        values = self.session.run(list(outputs), feed)
        return {name: np.asarray(value, np.float32) for name, value in zip(outputs, values, strict=True)}

    def free_working_memory(self) -> None:
        """ONNX Runtime's CPU arena keeps the largest run's intermediates until its session goes
        (~0.8 GB after a 512 x 1024 x 224 scene; the arena-shrinkage run option freed nothing
        here): a new session from the graph in memory, ~35 ms."""
        if self.session is not None:
            self.session = None
            self.activate_impl()

    def deactivate_impl(self) -> None:
        self.session = None
