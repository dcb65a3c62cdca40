"""Export a model bundle's inference path (adapter + spectral + spatial + fusion) to ONNX.

One graph per sensor band count ``B`` (the adapter is a fixed ``K x B`` matrix): input ``cube``,
float32 ``(batch, B, lines, pixels)``, already normalised with the bundle's
:class:`~edge_had.models.normalize.Normalization` (fitted on the scene, or on warm-up lines in a
stream); outputs ``x_k``, ``f_spe``, ``f_spa``, ``enhanced`` (float32, ``(batch, K, lines,
pixels)``). Batch, lines and pixels are dynamic; opset 17. The graph carries metadata entries
(``edge_had.*``, see :data:`METADATA_KEYS`) so an ONNX file found on a drone says what it is:
band counts, alphas, normalisation, the source weights' SHA-256, the precision.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import edge_had
from edge_had.errors import EdgeHadError

OPSET = 17
INPUT_NAME = "cube"
DYNAMIC_AXES = {0: "batch", 2: "lines", 3: "pixels"}
METADATA_PREFIX = "edge_had."
METADATA_KEYS = (
    "bands",
    "k",
    "alpha_spe",
    "alpha_spa",
    "normalization",
    "wavelengths",
    "weights_sha256",
    "precision",
    "edge_had_version",
)


class ExportError(EdgeHadError):
    """An export, quantization or graph check failed; the message says where and why."""


def export_onnx(
    bundle: Any,
    bands: int,
    path: str | Path,
    *,
    wavelengths: np.ndarray | None = None,
    example_lines: int = 8,
    example_pixels: int = 64,
) -> Path:
    """Write the FP32 ONNX of ``bundle`` (a :class:`~edge_had.models.bundle.ModelBundle`) for a
    sensor of ``bands`` bands (resampled on ``wavelengths`` when given); returns the path."""
    import onnx
    import torch

    if bands < 2:
        raise ExportError(f"a sensor needs at least 2 bands, got {bands}")
    if wavelengths is not None and len(wavelengths) != bands:
        raise ExportError(f"{len(wavelengths)} wavelengths given for {bands} bands")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = bundle.model_for(bands, wavelengths)
    example = torch.zeros(1, bands, example_lines, example_pixels)
    outputs = list(model.output_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: DYNAMIC_AXES for name in [INPUT_NAME, *outputs]},
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    metadata = {
        "bands": bands,
        "k": bundle.config.k,
        "alpha_spe": bundle.config.alpha_spe,
        "alpha_spa": bundle.config.alpha_spa,
        "normalization": bundle.config.normalization,
        "wavelengths": None if wavelengths is None else [float(w) for w in wavelengths],
        "weights_sha256": bundle.sha256,
        "precision": "fp32",
        "edge_had_version": edge_had.__version__,
    }
    set_metadata(graph, metadata)
    onnx.save(graph, str(path))
    return path


def graph_digest(graph: Any) -> str:
    """SHA-256 of a ModelProto's graph (nodes, weights, inputs and outputs; not its metadata)."""
    import hashlib

    return hashlib.sha256(graph.graph.SerializeToString(deterministic=True)).hexdigest()


def set_metadata(graph: Any, values: dict[str, Any]) -> None:
    """Write ``values`` (JSON-encoded) as ``edge_had.*`` metadata entries, replacing old ones, and
    ``graph_sha256`` (:func:`graph_digest`), so that a graph changed afterwards - a flipped byte in
    a weight, an edit - is refused when loaded."""
    values = {**values, "graph_sha256": graph_digest(graph)}
    keep = [entry for entry in graph.metadata_props if entry.key[len(METADATA_PREFIX) :] not in values]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    for key, value in values.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)


def read_metadata(source: str | Path | Any, name: str | Path | None = None) -> dict[str, Any]:
    """The ``edge_had.*`` metadata of an ONNX file (or loaded ModelProto), JSON-decoded.
    ``name``: what an error calls a loaded graph (its file; default: the path, or "the ONNX graph")."""
    import onnx

    if isinstance(source, (str, Path)):
        graph, default_name = onnx.load(str(source), load_external_data=False), str(source)
    else:
        graph, default_name = source, "the ONNX graph"
    if name is None:
        name = default_name
    found = {}
    for entry in graph.metadata_props:
        if entry.key.startswith(METADATA_PREFIX):
            try:
                found[entry.key[len(METADATA_PREFIX) :]] = json.loads(entry.value)
            except ValueError as error:
                raise ExportError(f"{name}: its {entry.key} metadata is damaged ({error})") from error
    if "bands" not in found:
        raise ExportError(f"{name}: not an edge-had export (no {METADATA_PREFIX}bands metadata)")
    return found
