"""Runner over an ONNX file in ONNX Runtime (CPU execution provider unless told otherwise).

On a CPU, ONNX Runtime runs an FP16 graph's operators in FP32 and drops the casts between them,
so values pass between layers unrounded: an FP16 graph there shows little more than the rounding
of its weights (the accuracy gate scores :mod:`edge_had.build.fp16_emulation` instead).

INT8 Q/DQ graphs run with ONNX Runtime's graph optimisations off: each QuantizeLinear /
DequantizeLinear runs as written and each layer in float on its dequantized int8 inputs and
weights - the arithmetic TensorRT's int32 accumulation reproduces, on any CPU. Optimised, ONNX
Runtime fuses DQ -> Conv -> Q into its int8 kernel (QLinearConv), whose AVX2 form on CPUs without
VNNI can saturate its 16-bit intermediate sums (ONNX Runtime's quantization documentation; the
same saturation is OpenVINO's "saturation issue"): on this AVX2 CPU the shipped model's INT8
gate read -0.0072 / +0.0004 / -0.0069 fused against -0.0019 / +0.0031 / -0.0091 as written
(export/README.md). INT8 on a CPU is the check before the TensorRT engine, not a fast path.
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
        self.ran = False  # whether the session has run since it was made (its arena holds something)
        #: (inputs, outputs) -> a runner over that subgraph, or None where the graph does not cut
        self.parts: dict[tuple[tuple[str, ...], tuple[str, ...]], OnnxRuntimeRunner | None] = {}

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
        if self.precision == "int8":  # the graph's arithmetic, not a CPU's int8 kernels (docstring)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(self.graph, options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise BackendError(f"{self.path}: ONNX Runtime cannot load it ({error})") from error
        self.session = session
        self.ran = False
        self.output_names = tuple(output.name for output in session.get_outputs())

    def infer_impl(self, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        assert self.session is not None
        self.ran = True
        values = self.session.run(list(outputs), feed)
        return {name: np.asarray(value, np.float32) for name, value in zip(outputs, values, strict=True)}

    def part(self, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> OnnxRuntimeRunner | None:
        """A runner over the graph's ``inputs -> outputs`` subgraph (the same nodes and weights;
        the graph itself is not changed), or None when the graph does not cut there (``outputs``
        read something other than ``inputs`` and weights). The graph is cut once per runner and
        the part kept; activate it to run it. :meth:`free_working_memory` and :meth:`deactivate`
        let its session go; activated again, it makes a new one from the cut kept in memory."""
        key = (tuple(inputs), tuple(outputs))
        if key not in self.parts:
            self.parts[key] = self.cut(*key)
        return self.parts[key]

    def cut(self, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> OnnxRuntimeRunner | None:
        import onnx

        try:
            graph = onnx.load_model_from_string(self.graph)
            cut = onnx.utils.Extractor(graph).extract_model(list(inputs), list(outputs))
        except Exception:  # noqa: BLE001 - onnx raises assorted types; any of them: no part
            return None
        if tuple(value.name for value in cut.graph.input) != inputs:
            return None
        return OnnxRuntimeRunner(
            self.path, self.precision, self.providers, self.threads, graph=cut.SerializeToString()
        )

    def free_working_memory(self) -> None:
        """ONNX Runtime's CPU arena keeps the largest run's intermediates until its session goes
        (~0.8 GB after a 512 x 1024 x 224 scene; the arena-shrinkage run option freed nothing
        here): a session that ran since it was made is replaced by a new one from the graph in
        memory (~12 ms), and the parts' sessions (:meth:`part`) go until they are next asked for.
        A session that has not run holds nothing and is kept."""
        self._let_parts_go()
        if self.session is not None and self.ran:
            self.session = None
            self.activate_impl()

    def deactivate_impl(self) -> None:
        self._let_parts_go()
        self.session = None

    def _let_parts_go(self) -> None:
        """The parts' sessions (:meth:`part`) go; the cuts stay, to be activated again."""
        for part in self.parts.values():
            if part is not None:
                part.deactivate()
