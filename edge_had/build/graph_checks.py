"""Checks an exported graph must pass before TensorRT sees it; each returns the list of problems
(empty when the graph passes), so tests and the export command can print all of them at once.

* :func:`qdq_problems` - TensorRT's explicit-quantization rules: every QuantizeLinear /
  DequantizeLinear has a constant float32 scale (> 0, finite) and an int8 zero-point that is 0;
  weights are int8 initialisers with per-channel scales (one per output channel, on the axis that
  holds them for the operator reading the weight: :func:`output_channel_axis`);
  activations have one per-tensor scale; no QLinear* operators (QDQ format only).
* :func:`fp16_problems` - an explicitly typed FP16 graph: FP32 inputs and outputs, and every
  Conv/MatMul/Gemm weight inside the networks stored as an FP16 initialiser.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _attribute(node: Any, name: str, default: int) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == name), default)


def output_channel_axis(reader: Any, rank: int) -> int:
    """The axis of a weight of ``rank`` dimensions that holds ``reader``'s output channels: 0 for
    Conv (out, in, kh, kw) and for Gemm with ``transB=1``; 1 for ConvTranspose (in, out, kh, kw)
    and for Gemm without it; the last axis for MatMul (``x @ W``: W is (..., in, out)). Per-channel
    weight scales must lie along it (ONNX Runtime's quantizer puts a MatMul's on axis 1)."""
    if reader.op_type == "MatMul":
        return rank - 1
    if reader.op_type == "ConvTranspose":
        return 1
    if reader.op_type == "Gemm":
        return 0 if _attribute(reader, "transB", 0) else 1
    return 0


def qdq_problems(graph: Any) -> list[str]:
    constants = _constants(graph)
    problems = []
    qdq_nodes = [node for node in graph.graph.node if node.op_type in QDQ_OPS]
    if not qdq_nodes:
        problems.append("no QuantizeLinear/DequantizeLinear node: the graph is not quantized")
    for node in graph.graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
            problems.append(f"{node.name}: {node.op_type} is not QDQ format")
    outputs = {output.name for output in graph.graph.output}
    readers = {name: node for node in graph.graph.node for name in node.input}
    for node in qdq_nodes:
        where = f"{node.name} ({node.op_type})"
        if node.op_type == "DequantizeLinear" and outputs & set(node.output):
            # the outputs (x_k, f_spe, ...) are float results, not rounded copies
            problems.append(f"{node.name}: graph output {node.output[0]!r} is a dequantized int8 copy")
        scale = constants.get(node.input[1])
        if scale is None:
            problems.append(f"{where}: scale {node.input[1]!r} is not a constant")
        elif scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            problems.append(f"{where}: scale must be finite positive float32, got {scale.dtype}")
        if len(node.input) < 3 or not node.input[2]:
            problems.append(f"{where}: no zero-point (the default is uint8; TensorRT needs int8 0)")
        else:
            zero = constants.get(node.input[2])
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                kind = "not a constant" if zero is None else f"{zero.dtype} {np.unique(zero)[:3]}"
                problems.append(f"{where}: zero-point must be int8 0, got {kind}")
        data = constants.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None:  # a weight
            if data.dtype != np.int8:
                problems.append(f"{where}: weight {node.input[0]!r} is {data.dtype}, not int8")
            if scale is not None and data.ndim > 1:
                axis = _attribute(node, "axis", 1) % data.ndim
                reader = readers.get(node.output[0])
                want = 0 if reader is None else output_channel_axis(reader, data.ndim)
                if scale.ndim != 1 or scale.shape[0] != data.shape[want] or axis != want:
                    kind = "" if reader is None else f" of {reader.op_type}"
                    problems.append(
                        f"{where}: weight scales must be per output channel{kind} (axis {want}, "
                        f"{data.shape[want]}), got shape {scale.shape} on axis {axis}"
                    )
        elif scale is not None and scale.size != 1:
            problems.append(f"{where}: activation scale must be per-tensor, got shape {scale.shape}")
    return problems


def fp16_problems(graph: Any, scopes: tuple[str, ...] = ("/spectral/", "/spatial/")) -> list[str]:
    from onnx import TensorProto

    problems = []
    for value in [*graph.graph.input, *graph.graph.output]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"graph input/output {value.name!r} is not float32")
    initializers = {init.name: init for init in graph.graph.initializer}
    producers = {output: node for node in graph.graph.node for output in node.output}
    weights = 0
    for node in graph.graph.node:
        if node.op_type not in WEIGHT_OPS or not node.name.startswith(scopes):
            continue
        name = node.input[1]
        if name in producers and producers[name].op_type == "Cast":  # a cast weight is not FP16 storage
            problems.append(f"{node.name}: weight {name!r} is cast at run time, not stored FP16")
        elif name in initializers:
            weights += 1
            if initializers[name].data_type != TensorProto.FLOAT16:
                problems.append(f"{node.name}: weight {name!r} is not an FP16 initialiser")
    if weights == 0:
        problems.append("no network weight initialiser found: is this an edge-had export?")
    return problems
