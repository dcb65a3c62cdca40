"""Explicitly typed FP16 and INT8 (Q/DQ) versions of an exported FP32 graph, for TensorRT's
strongly typed networks (no builder precision flags: the graph itself says what runs in what).

What gets reduced precision: only the two networks' nodes (ONNX node names under ``/spectral/``
and ``/spatial/``, from the module names). The adapter (the resampled cube ``x_k``) and the fusion
``x_k + a f_spe + b f_spa`` stay FP32, as do inputs and outputs: RX inverts a covariance with
condition numbers up to 1e9, so rounding ``x_k`` itself to FP16 (11-bit mantissa) would add
noise at the level of the smallest background eigenvalues. ``keep_float`` names further nodes to
keep in FP32 (FP16 for INT8 graphs is not attempted: a node kept out of INT8 runs FP32).

* **FP16** (our own pass, :func:`to_fp16`): the networks' float operators and initialisers become
  FP16 and one Cast sits on each FP32/FP16 edge. (onnxruntime's ``convert_float_to_float16`` with
  a node block list was tried first: it rounds the FP32 graph input to FP16 and back on its way
  to the kept-FP32 adapter, and leaves the nodes unsorted.)
* **INT8**: onnxruntime ``quantize_static`` in QDQ format, int8 activations and weights, symmetric
  (zero-point 0), per-channel weight scales, biases left in float (TensorRT fuses them), a
  dedicated Q/DQ pair per consumer (so the FP32 output ``x_k`` is not the de-quantized copy the
  spectral branch reads), ranges from the calibration set (:mod:`edge_had.build.calibration`)
  with MinMax, Percentile or Entropy. Q/DQ sit on the *inputs* of the quantized layers (weights
  and activations), not on their outputs - TensorRT's Q/DQ placement recommendation; ONNX
  Runtime's default also quantized each Conv's output, before its ReLU, then the next layer's
  input again: two roundings where TensorRT wants one. Without them the shipped model's
  synthetic gate moved -0.0006 / +0.0014 / -0.0043 instead of -0.0019 / +0.0031 / -0.0091
  (export/README.md; both run unfused, as
  :class:`~edge_had.runtime.onnxruntime_runner.OnnxRuntimeRunner` runs INT8 graphs). A Q/DQ
  pair stays where a layer's output is the next quantized layer's input (a depthwise Conv
  feeding its pointwise Conv): there it is that input's. The output heads stay
  FP32 (:data:`OUTPUT_HEAD_SCOPES`), and so do products of two activations (the spatial
  branch's pooling, :func:`activation_products`).
* **Entropy** (TensorRT's KL-divergence calibration) is run here, not through ``quantize_static``:
  that one calls onnxruntime's entropy calibrator with its defaults, 128 histogram bins and 128
  quantized bins, which leaves exactly one candidate threshold - the MinMax range (measured: the
  same scale on all 37 activation tensors of a fold model). :func:`entropy_ranges` runs the same
  calibrator with :data:`ENTROPY_BINS` bins and :data:`ENTROPY_QUANTIZED_BINS` quantized bins
  (127 int8 levels on each side of zero, as TensorRT's 2048-bin |x| histogram searches), and the
  thresholds it finds are handed to ``quantize_static`` as per-tensor range overrides. That
  includes the resampled cube ``x_k`` both branches read, whose KL threshold is about a quarter of
  its range, so the brightest input values (0.2 % in one probe) saturate in the networks (x_k itself stays
  FP32 in the fusion). Keeping ``x_k`` at its MinMax range instead was measured and is worse
  (export/README.md: the shipped model's synthetic gate, and the fold gate of two recipes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.build.calibration import CalibrationSet, calibration_feeds
from edge_had.build.calibration_methods import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from edge_had.build.onnx_export import ExportError, read_metadata, set_metadata

NETWORK_SCOPES = ("/spectral/", "/spatial/")
#: Entropy calibration: a signed histogram of 4096 bins (2048 per sign, as TensorRT) and 255
#: quantized bins (127 levels each side of zero plus zero: symmetric int8).
ENTROPY_BINS = 4096
ENTROPY_QUANTIZED_BINS = 255
INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")
#: Kept out of INT8 by default: the last layer of each network writes the features that are
#: added to the cube, so its rounding lands directly in RX's background statistics. Measured
#: on the *training* scenes of cross-validation fold 3 (export/README.md): max |AUC change| over
#: its 8 training scenes 0.0215 with every layer INT8, 0.0039 with the heads kept FP32.
OUTPUT_HEAD_SCOPES = ("/spectral/head/", "/spatial/head/")


def network_nodes(graph: Any) -> list[str]:
    """Names of the nodes inside the two networks (everything but adapter and fusion)."""
    return [node.name for node in graph.graph.node if node.name.startswith(NETWORK_SCOPES)]


def check_keep_float(graph: Any, keep_float: Sequence[str]) -> None:
    """Refuse ``keep_float`` names that are no network node of ``graph``: a typo (or a torch
    module name) would otherwise leave the graph as if the option had not been given."""
    known = network_nodes(graph)
    unknown = sorted(set(keep_float) - set(known))
    if unknown:
        raise ExportError(
            f"--keep-float: no network node named {', '.join(map(repr, unknown))}; the nodes are "
            "ONNX node names, e.g. "
            + ", ".join([name for name in known if name.endswith("/Conv")][:3])
            + " (all: the export report's metadata, reduced_nodes)"
        )


def activation_products(graph: Any) -> set[str]:
    """Network MatMul/Gemm nodes with no weight among their inputs: in this model the spatial
    branch's adaptive pooling, ``P_h^T @ x @ P_w`` with averaging matrices built from the input's
    height and width. Always kept in float: one calibrated range cannot hold those matrices'
    entries (1/n of a size that changes with the input), and quantizing them made f_spa 1.8x its
    FP32 value at every shape with entropy ranges, and right only at the calibration width with
    MinMax (a review measured both on the ABU scenes)."""
    weights = {tensor.name for tensor in graph.graph.initializer}
    return {
        node.name
        for node in graph.graph.node
        if node.name.startswith(NETWORK_SCOPES)
        and node.op_type in ("MatMul", "Gemm")
        and not weights.intersection(node.input)
    }


#: Float operators that may run in FP16 inside the networks (shape arithmetic is integer and
#: stays as exported; Cast, ConstantOfShape etc. carry an explicit output type and stay too).
FP16_OPS = frozenset(
    "Conv MatMul Gemm Relu Sigmoid Add Sub Mul Div Pad Resize Reshape Transpose Slice Concat "
    "Unsqueeze ReduceMean ReduceSum GlobalAveragePool AveragePool Clip".split()
)
#: Inputs that must stay FP32 whatever the data type (Resize's roi and scales).
FP32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2)})


def to_fp16(source: str | Path, target: str | Path, *, keep_float: Sequence[str] = ()) -> Path:
    """Write the FP16 version of the FP32 graph ``source`` to ``target``.

    A node runs FP16 when it lies inside a network, is a float operator of :data:`FP16_OPS` and is
    not in ``keep_float``; its float initialisers are stored FP16, and a Cast sits on every edge
    between an FP32 and an FP16 node (one per tensor), so the graph is explicitly typed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    graph = onnx.load(str(source))
    metadata = read_metadata(graph, name=source)
    typed = shape_inference.infer_shapes(graph)
    dtype = {
        value.name: value.type.tensor_type.elem_type
        for value in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]
    }
    dtype.update({init.name: init.data_type for init in graph.graph.initializer})
    initializers = {init.name: init for init in graph.graph.initializer}
    check_keep_float(graph, keep_float)
    candidates = set(network_nodes(graph)) - set(keep_float)
    reduced = {
        node.name
        for node in graph.graph.node
        if node.name in candidates
        and node.op_type in FP16_OPS
        and all(dtype.get(output) == TensorProto.FLOAT for output in node.output)
    }
    new_nodes: list[Any] = []
    casts: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            if name in initializers and to == TensorProto.FLOAT16:
                array = numpy_helper.to_array(initializers[name]).astype("float16")
                graph.graph.initializer.append(numpy_helper.from_array(array, f"{name}_{suffix}"))
            else:
                new_nodes.append(
                    helper.make_node(
                        "Cast", [name], [f"{name}_{suffix}"], to=to, name=f"{name}_cast_{suffix}"
                    )
                )
            casts[name, to] = f"{name}_{suffix}"
        return casts[name, to]

    producers = {output: node.name for node in graph.graph.node for output in node.output}
    for value in graph.graph.output:  # an FP16 result leaves the graph through a Cast to FP32
        if producers.get(value.name) in reduced:
            inner = f"{value.name}_fp16"
            for node in graph.graph.node:
                node.output[:] = [inner if name == value.name else name for name in node.output]
                node.input[:] = [inner if name == value.name else name for name in node.input]
            dtype[inner] = TensorProto.FLOAT
            casts[inner, TensorProto.FLOAT] = value.name
            new_nodes.append(
                helper.make_node(
                    "Cast", [inner], [value.name], to=TensorProto.FLOAT, name=f"{value.name}_cast"
                )
            )
    half: set[str] = set()  # tensors that are FP16 after conversion
    for node in graph.graph.node:  # exported graphs are topologically sorted
        if node.name in reduced:
            for i, name in enumerate(node.input):
                fp32_only = (node.op_type, i) in FP32_ONLY_INPUTS
                if dtype.get(name) == TensorProto.FLOAT and name not in half and not fp32_only:
                    node.input[i] = cast(name, TensorProto.FLOAT16)
            half.update(node.output)
        else:
            for i, name in enumerate(node.input):
                if name in half:
                    node.input[i] = cast(name, TensorProto.FLOAT)
    graph.graph.node.extend(new_nodes)
    del graph.graph.value_info[:]
    _remove_dead_nodes(graph)
    _remove_unused_initializers(graph)
    _sort_topologically(graph)
    fp32_nodes = sorted(
        node.name for node in graph.graph.node if node.name not in reduced and node.op_type != "Cast"
    )
    set_metadata(
        graph,
        {
            **metadata,
            "precision": "fp16",
            "fp16_nodes": len(reduced),
            "fp32_nodes": fp32_nodes,
            "reduced_nodes": sorted(reduced),  # what --keep-float can keep in FP32
        },
    )
    onnx.checker.check_model(graph)
    onnx.save(graph, str(target))
    return Path(target)


def _remove_dead_nodes(graph: Any) -> None:
    """Drop nodes none of whose outputs reach a graph output."""
    needed = {value.name for value in graph.graph.output}
    alive = []
    for node in reversed(_topological(graph)):
        if any(output in needed for output in node.output):
            alive.append(node)
            needed.update(node.input)
    keep = {id(node) for node in alive}
    kept = [node for node in graph.graph.node if id(node) in keep]
    _replace_nodes(graph, kept)


def _remove_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.graph.node for name in node.input}
    kept = [init for init in graph.graph.initializer if init.name in used]
    copies = [type(init)() for init in kept]
    for copy, init in zip(copies, kept, strict=True):
        copy.CopyFrom(init)
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(copies)


def _topological(graph: Any) -> list[Any]:
    available = {value.name for value in graph.graph.input} | {init.name for init in graph.graph.initializer}
    available.add("")  # omitted optional inputs
    pending, ordered = list(graph.graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ExportError(f"graph has a cycle or a dangling input near node {pending[0].name!r}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in ready_ids]
    return ordered


def _replace_nodes(graph: Any, nodes: list[Any]) -> None:
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.graph.node[:]
    graph.graph.node.extend(copies)


def _sort_topologically(graph: Any) -> None:
    """Order the nodes so each comes after the producers of its inputs (Cast nodes are appended
    at the end while converting, which onnx.checker rejects)."""
    _replace_nodes(graph, _topological(graph))


def _unquantize_outputs(graph: Any) -> None:
    """Give the graph's outputs back their float values, in place.

    When a quantized tensor is also read by a float node - ``x_k`` when the first layer of one
    branch is kept FP32 - onnxruntime's quantizer rounds it for every reader: the graph output and
    the fusion then see the int8 cube (measured: 2.8 % relative error in ``x_k`` and enhanced-RX
    AUC -0.14 to -0.20 on synthetic scenes). Here the output's name goes back to the float tensor,
    and only the quantized layers (slot 0 of a layer whose weight comes from a DequantizeLinear)
    read the rounded copy.
    """
    producers = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        name = output.name
        dequantize = producers.get(name)
        quantize = None if dequantize is None else producers.get(dequantize.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or quantize is None:
            continue
        original, rounded = quantize.input[0], f"{name}_dequantized"
        dequantize.output[0] = rounded
        for node in graph.node:
            for slot, tensor in enumerate(node.input):
                if tensor == name and _is_quantized_layer_input(node, slot, producers):
                    node.input[slot] = rounded
                elif tensor == original:  # the quantizer's input: now the float tensor's name
                    node.input[slot] = name
        producers[original].output[list(producers[original].output).index(original)] = name


def _is_quantized_layer_input(node: Any, slot: int, producers: dict[str, Any]) -> bool:
    """``node``'s input ``slot`` is the activation of an INT8 layer (its weight is dequantized)."""
    if node.op_type not in INT8_OP_TYPES or slot != 0 or len(node.input) < 2:
        return False
    weight = producers.get(node.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear"


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def entropy_ranges(
    model: str | Path, feeds: list[dict[str, Any]], scratch: str | Path
) -> dict[str, tuple[float, float]]:
    """``(low, high)`` per activation tensor of ``model``'s :data:`INT8_OP_TYPES` nodes: ``(-t, t)``
    clipped to the values seen, ``t`` the threshold that minimises the KL divergence between the
    tensor's histogram over ``feeds`` and its int8 rounding (see the module docstring). The
    symmetric Q/DQ scale is then ``max(-low, high) / 127``."""
    import contextlib
    import io

    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(
        str(model),
        list(INT8_OP_TYPES),
        augmented_model_path=str(Path(scratch) / "entropy_augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={
            "symmetric": True,
            "num_bins": ENTROPY_BINS,
            "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
        },
    )
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tensor
        calibrator.collect_data(_FeedReader(feeds))
        data = calibrator.compute_data()
    return {name: (float(t.range_value[0]), float(t.range_value[1])) for name, t in data.data.items()}


def to_int8(
    source: str | Path,
    target: str | Path,
    calibration: CalibrationSet,
    *,
    method: str = DEFAULT_CALIBRATION_METHOD,
    keep_float: Sequence[str] = (),
    quantize_heads: bool = False,
) -> Path:
    """Write the INT8 Q/DQ version of the FP32 graph ``source`` to ``target``; the networks'
    output heads stay FP32 unless ``quantize_heads`` (see :data:`OUTPUT_HEAD_SCOPES`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    graph = onnx.load(str(source))
    metadata = read_metadata(graph, name=source)
    if calibration.manifest["normalization"] != metadata["normalization"]:
        raise ExportError(
            "the calibration set was normalised differently from the model "
            f"({calibration.manifest['normalization']} vs {metadata['normalization']}); rebuild it "
            "with `edge-had calibrate --model MODEL`"
        )
    check_keep_float(graph, keep_float)
    op_types = {node.name: node.op_type for node in graph.graph.node}
    always_float = activation_products(graph)
    if not quantize_heads:
        always_float |= {name for name in network_nodes(graph) if name.startswith(OUTPUT_HEAD_SCOPES)}
    # names that would be accepted and change nothing
    unchanged = sorted(
        name for name in keep_float if op_types[name] not in INT8_OP_TYPES or name in always_float
    )
    if unchanged:
        raise ExportError(
            f"--keep-float: {', '.join(map(repr, unchanged))} run in FP32 in an INT8 graph anyway; only "
            f"the {'/'.join(sorted(INT8_OP_TYPES))} layers of the export report's reduced_nodes are quantized"
        )
    quantized_nodes = sorted(set(network_nodes(graph)) - set(keep_float) - always_float)
    feeds = list(calibration_feeds(calibration, int(metadata["bands"])))
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        overrides = {}
        if method == "entropy":  # quantize_static calibrates MinMax; the entropy ranges override it
            ranges = entropy_ranges(prepared, feeds, scratch)
            overrides = {  # onnxruntime wants numpy scalars here
                name: [{"rmin": np.float32(low), "rmax": np.float32(high)}]
                for name, (low, high) in ranges.items()
            }
        quantize_static(
            str(prepared),
            str(target),
            _FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OP_TYPES),
            nodes_to_quantize=quantized_nodes,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.MinMax,
            }[method],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                # Q/DQ on the layers' inputs only (the module docstring): TensorRT's placement
                "OpTypesToExcludeOutputQuantization": list(INT8_OP_TYPES),
                "TensorQuantOverrides": overrides,
            },
        )
    result = onnx.load(str(target))
    _unquantize_outputs(result.graph)
    # what runs in INT8: the layers whose weights are dequantized (quantize_static leaves out what
    # it could not quantize, and quant_pre_process folds nodes away), not the names asked for
    producers = {output: node for node in result.graph.node for output in node.output}
    int8_layers = sorted(
        node.name for node in result.graph.node if _is_quantized_layer_input(node, 0, producers)
    )
    set_metadata(
        result,
        {
            **metadata,
            "precision": "int8",
            "calibration": {
                "method": method,
                "scenes": calibration.manifest["scenes"],
                "sampling": calibration.manifest["sampling"],
            },
            "fp32_nodes": sorted({node.name for node in graph.graph.node} - set(int8_layers)),
            "reduced_nodes": int8_layers,  # what --keep-float can keep in FP32
        },
    )
    onnx.checker.check_model(result)
    onnx.save(result, str(target))
    return Path(target)
