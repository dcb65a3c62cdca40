"""Which backend runs the enhancement: ``--backend auto|tensorrt|onnxruntime|torch``.

``auto`` takes the first available backend in :data:`PRIORITY` - tensorrt (compiled engine, the
fastest on a Jetson), onnxruntime (the exported graph, and the only CPU path for INT8), torch (the
reference; always installed) - and records why each one before it was skipped. A backend asked
for by name that cannot run is a :class:`BackendError` saying why, never a silent fallback.

What "available" means: tensorrt needs the ``tensorrt`` and ``pycuda`` modules and an engine file;
onnxruntime needs ``onnx`` and ``onnxruntime`` and, for INT8, a quantized ONNX file (FP32/FP16
graphs are exported on the fly from the model); torch cannot run INT8 and runs FP16 only on CUDA.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_had.runtime.base import BACKENDS, PRECISIONS, BackendError

PRIORITY = ("tensorrt", "onnxruntime", "torch")


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    precision: str
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def unavailable_reason(
    backend: str,
    precision: str,
    *,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    device: str = "cpu",
) -> str | None:
    """Why ``backend`` cannot run ``precision`` with these artifacts; None when it can."""
    if backend == "tensorrt":
        missing = [module for module in ("tensorrt", "pycuda") if not _installed(module)]
        if missing:
            return f"{' and '.join(missing)} not installed (on a Jetson both come with JetPack)"
        if engine is None:
            return "no TensorRT engine given (build one with `edge-had build`, pass --engine)"
        return None
    if backend == "onnxruntime":
        missing = [module for module in ("onnx", "onnxruntime") if not _installed(module)]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install 'edge-had[onnx]')"
        if precision == "int8" and onnx is None:
            return "INT8 needs a quantized graph: pass --onnx FILE from `edge-had export --precision int8`"
        return None
    if backend == "torch":
        if precision == "int8":
            return "torch has no INT8 path (INT8 runs from a Q/DQ ONNX)"
        if precision == "fp16" and not (device.startswith("cuda") and cuda_available()):
            return "torch FP16 needs a CUDA device"
        return None
    raise BackendError(f"unknown backend {backend!r}; choose auto or one of {BACKENDS}")


def _not_as_requested(
    backend: str, *, onnx: str | Path | None = None, engine: str | Path | None = None, device: str = "cpu"
) -> str | None:
    """Why ``backend`` asked for by name would not run as the other options say (None when it
    would): a file given by name is to be run, not skipped (torch runs the model itself;
    onnxruntime runs --onnx, not an --engine), and onnxruntime here runs on the CPU only."""
    if backend == "torch" and (onnx is not None or engine is not None):
        return (
            "torch runs the model itself: the --onnx/--engine given would not be used (drop it, or "
            "use --backend onnxruntime/tensorrt)"
        )
    if backend == "onnxruntime" and str(device).startswith("cuda"):
        return "onnxruntime runs on the CPU here: --device cuda asks for the GPU (torch or tensorrt)"
    if backend == "onnxruntime" and engine is not None and onnx is None:
        return (
            "the --engine given is TensorRT's: onnxruntime would not use it (use --backend tensorrt, "
            "or give --onnx)"
        )
    return None


def passed_over_files(
    choice: BackendChoice, *, onnx: Any = None, engine: Any = None, **_: Any
) -> dict[str, str]:
    """Under ``auto``: backend -> why it did not run, for each backend whose file was given
    (``--engine``: tensorrt, ``--onnx``: onnxruntime) but passed over, so that file is not used;
    empty when the file's backend runs. Said as a warning, never silently."""
    files = {"tensorrt": ("--engine", engine), "onnxruntime": ("--onnx", onnx)}
    return {
        name: f"{choice.skipped[name]} (the {flag} given is not used)"
        for name, (flag, given) in files.items()
        if given is not None and name in choice.skipped
    }


def net_precision(asked: str | None, onnx: Any = None, engine: Any = None) -> str:
    """``--net-precision``: as given, else the precision an ``--engine``'s sidecar or an ``--onnx``
    graph's metadata records (a graph runs at the precision it was exported at: naming it again
    was required, and fp32 was refused for an fp16 engine), else fp32. :func:`choose_backend`
    asks it, so every caller gets the same default."""
    if asked is not None:
        return asked
    recorded = None
    if engine is not None:
        from edge_had.build.engine_cache import read_sidecar, sidecar_path

        sidecar = sidecar_path(engine)
        recorded = read_sidecar(sidecar).get("key", {}).get("precision") if sidecar.is_file() else None
    elif onnx is not None:
        from edge_had.build.tensorrt_engine import EngineBuildError, metadata_precision

        try:
            recorded = metadata_precision(Path(onnx))
        except EngineBuildError:  # no onnx package: the runner that reads the file says so
            recorded = None
    return str(recorded) if recorded in PRECISIONS else "fp32"


def choose_backend(
    requested: str = "auto",
    precision: str | None = None,
    *,
    exclude: dict[str, str] | None = None,
    **artifacts: Any,
) -> BackendChoice:
    """The backend that will run (see the module docstring); ``artifacts`` as :func:`unavailable_reason`.
    ``precision`` None: :func:`net_precision`'s default. ``exclude``: backends already tried under
    ``auto`` that failed to load, with why (skipped)."""
    precision = net_precision(precision, artifacts.get("onnx"), artifacts.get("engine"))
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if requested != "auto":
        reason = unavailable_reason(requested, precision, **artifacts) or _not_as_requested(
            requested, **artifacts
        )
        if reason is not None:
            raise BackendError(f"--backend {requested} was requested but cannot run {precision}: {reason}")
        return BackendChoice(requested, precision, "requested")
    skipped: dict[str, str] = {}
    on_gpu = str(artifacts.get("device") or "cpu").startswith("cuda")
    for backend in PRIORITY:
        reason = (exclude or {}).get(backend) or unavailable_reason(backend, precision, **artifacts)
        if reason is None and on_gpu and backend == "onnxruntime":  # its CPU provider is all it uses here
            reason = "runs on the CPU; --device cuda asks for the GPU (torch or tensorrt)"
        if reason is None:
            return BackendChoice(
                backend, precision, "auto: first available of " + " > ".join(PRIORITY), skipped
            )
        skipped[backend] = reason
    details = "; ".join(f"{name}: {why}" for name, why in skipped.items())
    raise BackendError(f"no backend can run {precision}: {details}")
