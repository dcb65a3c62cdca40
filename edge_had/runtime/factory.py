"""Build the runner that enhances one sensor's cubes (``bands``, optional wavelengths) with a
model bundle on the chosen backend; FP32/FP16 ONNX graphs are exported on the fly when no ONNX
file is given: into ``workdir`` (kept), or into a temporary folder removed once the runner holds
the graph."""

from __future__ import annotations

import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge_had.runtime.base import BackendError, Runner
from edge_had.runtime.select import BackendChoice


class _Needed(NamedTuple):
    """What a detector needs of a graph or engine: this model, the sensor's band count and
    wavelengths (None: resampled on band index), the precision."""

    bundle: Any
    bands: int
    wavelengths: np.ndarray | None
    precision: str


def enhancement_runner(
    choice: BackendChoice,
    bundle: Any,
    bands: int,
    wavelengths: np.ndarray | None = None,
    *,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    workdir: str | Path | None = None,
    device: str = "cpu",
    cpu_threads: int | None = None,
) -> Runner:
    """The runner of ``choice`` for this model and sensor. ``cpu_threads``: ONNX Runtime's
    intra-op threads (default: its own, one per core); the other backends ignore it."""
    if choice.backend == "torch":
        from edge_had.runtime.torch_runner import TorchRunner

        return TorchRunner(bundle.model_for(bands, wavelengths), choice.precision, device)
    needed = _Needed(bundle, bands, wavelengths, choice.precision)
    if choice.backend == "onnxruntime":
        try:
            if onnx is not None:
                return _onnxruntime_runner(Path(onnx), needed, cpu_threads)
            with _export_folder(workdir) as folder:
                graph = _export_for(bundle, bands, wavelengths, choice, folder)
                return _onnxruntime_runner(graph, needed, cpu_threads)
        except ImportError as error:  # installed (so `auto` chose it) but broken, e.g. a numpy ABI
            raise BackendError(f"onnx / onnxruntime is installed but cannot be imported ({error})") from error
    if choice.backend == "tensorrt":
        if engine is None:
            raise BackendError("tensorrt needs an engine file (`edge-had build`)")
        _check_engine(Path(engine), needed)
        from edge_had.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(engine, choice.precision, device_index=gpu_index(device))
    raise BackendError(f"unknown backend {choice.backend!r}")


def gpu_index(device: str) -> int:
    """The GPU a TensorRT engine runs on, from a torch-style ``device``: ``cuda:N`` -> N; ``cuda``
    and the default ``cpu`` (an engine runs on a GPU whatever the flag) -> 0."""
    if device in ("cpu", "cuda"):
        return 0
    index = device.removeprefix("cuda:")
    if index == device or not index.isdigit():
        raise BackendError(f"--device {device!r}: a TensorRT engine runs on cuda or cuda:N")
    return int(index)


def _onnxruntime_runner(path: Path, needed: _Needed, threads: int | None) -> Runner:
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner

    if not path.is_file():
        raise BackendError(f"{path}: ONNX file not found (make one with `edge-had export`)")
    try:
        graph = path.read_bytes()  # read once: the bytes checked are the bytes run
    except OSError as error:
        raise BackendError(f"{path}: cannot read it ({error})") from error
    _check_graph(path, graph, needed)
    return OnnxRuntimeRunner(path, needed.precision, threads=threads, graph=graph)


def _export_folder(workdir: str | Path | None) -> AbstractContextManager[str | Path]:
    """``workdir`` (the graphs are kept), or a temporary folder removed on leaving."""
    if workdir is not None:
        return nullcontext(workdir)
    return tempfile.TemporaryDirectory(prefix="edge-had-onnx-")


def _export_for(
    bundle: Any, bands: int, wavelengths: np.ndarray | None, choice: BackendChoice, folder: str | Path
) -> Path:
    from edge_had.build.gate import GraphRecipe

    if choice.precision == "int8":
        raise BackendError("INT8 needs a quantized ONNX file (`edge-had export --precision int8`)")
    recipe = GraphRecipe(bundle, ["fp32", choice.precision])
    return recipe.build(bands, Path(folder) / f"b{bands}", wavelengths)[choice.precision]


def _check_graph(path: Path, data: bytes, needed: _Needed) -> None:
    """A given ONNX file (``data``: its bytes) must come from this model, for this sensor and
    precision."""
    import onnx

    from edge_had.build.onnx_export import ExportError, graph_digest, read_metadata

    try:
        graph = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends: a corrupt or truncated file
        raise BackendError(
            f"{path}: cannot be read as an ONNX graph ({type(error).__name__}: {error}); "
            "the file is corrupt or truncated - re-export it with `edge-had export`"
        ) from error
    try:
        meta = read_metadata(graph, name=path)
    except ExportError as error:
        raise BackendError(f"{error}; export this model with `edge-had export`") from error
    recorded = meta.get("graph_sha256")  # (graphs exported before it was recorded have none)
    if recorded is not None and recorded != graph_digest(graph):
        raise BackendError(
            f"{path}: its nodes or weights differ from what was exported (graph checksum); the file "
            "is corrupt or was edited - re-export it with `edge-had export`"
        )
    _check_source(path, meta, needed, "re-export it with `edge-had export`")


def _check_engine(path: Path, needed: _Needed) -> None:
    """An engine built by `edge-had build` records its ONNX source's metadata in its sidecar: it
    must come from this model, with these alphas, for this sensor and precision. An engine
    without that record (built elsewhere, or before it was recorded) is loaded unchecked, logged."""
    import logging

    from edge_had.build.engine_cache import EngineCacheError, read_sidecar, sidecar_path

    sidecar = sidecar_path(path)
    try:
        source = read_sidecar(sidecar).get("source") if sidecar.is_file() else None
    except EngineCacheError as error:
        raise BackendError(str(error)) from None
    if not source:
        logging.getLogger(__name__).warning(
            "%s: no record of the model it was built from; cannot check it against %s",
            path,
            needed.bundle.directory,
        )
        return
    fix = "export the model's ONNX and rebuild the engine with `edge-had build`"
    _check_source(path, source, needed, fix)


def _check_source(path: Path, meta: dict[str, Any], needed: _Needed, fix: str) -> None:
    """Raise BackendError naming every way the artifact's recorded ``meta`` differs from what the
    detector needs: the model's weights, its alphas, the sensor's band count and wavelengths, the
    precision."""
    bundle, bands, precision = needed.bundle, needed.bands, needed.precision
    problems = []
    if meta.get("weights_sha256") != bundle.sha256:
        problems.append(
            f"it was exported from weights {str(meta.get('weights_sha256'))[:12]}..., not this model"
        )
    alphas = (bundle.config.alpha_spe, bundle.config.alpha_spa)
    if (meta.get("alpha_spe"), meta.get("alpha_spa")) != alphas:
        problems.append(  # e.g. a graph exported for global RX given to a hybrid-RX stream
            f"it adds the features at alphas ({meta.get('alpha_spe')}, {meta.get('alpha_spa')}), "
            f"the detector needs {alphas}: each scorer has its own (`edge-had export --scorer hybrid` "
            "for enhanced-hybrid-rx, `--scorer global`, the default, for enhanced-rx)"
        )
    if meta.get("bands") != bands:
        problems.append(f"it takes {meta.get('bands')} bands, the scene has {bands}")
    elif not _same_wavelengths(meta.get("wavelengths"), needed.wavelengths):
        # same band count, another resampling: scores 60 % off in a review's test
        problems.append(_resampling_difference(meta.get("wavelengths"), needed.wavelengths))
    if meta.get("precision") != precision:
        problems.append(f"its precision is {meta.get('precision')}, {precision} was asked for")
        if len(problems) == 1:  # the file is fine: the option is what differs
            fix = f"drop --net-precision (the file's own is the default) or pass {meta.get('precision')}"
    if problems:
        raise BackendError(f"{path}: " + "; ".join(problems) + f" ({fix})")


WAVELENGTH_TOLERANCE_NM = 0.01  # band centres this close are the same (files round them)


def _same_wavelengths(recorded: Any, wanted: np.ndarray | None) -> bool:
    if recorded is None or wanted is None:
        return recorded is None and wanted is None
    recorded, wanted = np.asarray(recorded, np.float64), np.asarray(wanted, np.float64)
    close = np.allclose(recorded, wanted, rtol=0, atol=WAVELENGTH_TOLERANCE_NM)
    return recorded.shape == wanted.shape and bool(close)


def _resampling_difference(recorded: Any, wanted: np.ndarray | None) -> str:
    if recorded is not None and wanted is not None:
        recorded, wanted = np.asarray(recorded, np.float64), np.asarray(wanted, np.float64)
        band = int(np.argmax(np.abs(recorded - wanted) > WAVELENGTH_TOLERANCE_NM))
        return (
            f"it resamples on other wavelengths: band {band} at {recorded[band]:g} nm, "
            f"the scene's at {wanted[band]:g} nm"
        )
    return f"it resamples {_resampling(recorded)}, the scene needs {_resampling(wanted)}"


def _resampling(wavelengths: Any) -> str:
    if wavelengths is None:
        return "on band index"
    values = np.asarray(wavelengths, np.float64)
    return f"on wavelengths {values.min():g}-{values.max():g} nm"
