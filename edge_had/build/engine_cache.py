"""The versioned TensorRT engine cache: which engine file was built from what, for what.

A serialized engine runs only under the TensorRT version and on the GPU architecture it was built
with, and only for the input shapes its optimisation profile covers. :class:`EngineKey` names all
of them together with the SHA-256 of the source ONNX file and the precision. Its
:attr:`~EngineKey.name` carries the readable parts plus a short hash of the whole key (like
jetson-inference's cached engine names), e.g.
``fp32_trt10.3.0.30_sm_87_b224_l1-22-22_w256-1024-2048_3fa8c2d1_9b1e0c7d4a2f``.

Layout of a cache directory, one pair of files per engine::

    <name>.engine   the serialized engine, as build_serialized_network returned it
    <name>.json     sidecar: {"format": 1, "key": {...the full key...},
                              "engine_sha256": "...", "engine_bytes": N, "created": "...UTC"}

Policy (decided here; the tests pin it):

* :func:`lookup` returns the engine path only when the sidecar's key equals the requested key
  field by field and the engine file's SHA-256 equals the sidecar's. Anything else is a miss
  (``None``): an absent entry silently, a stale or corrupt one with a logged warning naming the
  file and what is wrong. The build then rebuilds and :func:`store` overwrites the entry, so a
  stale or truncated engine is never loaded and the cache never needs cleaning by hand.
* :func:`verify_engine` checks an engine given by path (the runtime has nothing to rebuild from):
  it raises :class:`EngineCacheError` naming the file and the fix. An engine without a sidecar
  (built with ``trtexec``) is accepted as is; TensorRT's own version check still applies to it.

Pure Python (no TensorRT import): the key logic is tested on any machine.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_had.atomic_files import write_bytes_atomically
from edge_had.build.onnx_export import INPUT_NAME
from edge_had.errors import EdgeHadError
from edge_had.runtime.base import PRECISIONS

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
REBUILD_HINT = "rebuild it on this device with `edge-had build --onnx MODEL.onnx --out DIR`"

Shape = tuple[int, int, int, int]  # (batch, bands, lines, pixels)


class EngineCacheError(EdgeHadError):
    """An engine file does not match what loads it (or its sidecar is unreadable)."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shape(value: Any, what: str) -> Shape:
    shape = tuple(int(v) for v in value)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{what} must be 4 positive ints (batch, bands, lines, pixels), got {value}")
    return shape


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two builds with equal keys give interchangeable engines."""

    onnx_sha256: str
    tensorrt_version: str
    sm: str
    precision: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape
    input_name: str = INPUT_NAME
    gpu: str = ""  # CudaDevice.model, name and SM count: boards of one SM version differ ("": not recorded)
    workspace_bytes: int = 0  # the builder's workspace limit: it bounds the tactics tried (0: not recorded)
    # FP32 layers allowed TF32 (inputs rounded to 10 mantissa bits): TensorRT's default, which
    # `edge-had build` turns off; True for engines recorded before it did
    tf32: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ValueError(f"onnx_sha256 must be 64 lower-case hex digits, got {self.onnx_sha256!r}")
        if not re.fullmatch(r"\d+(\.\d+)*", self.tensorrt_version):
            raise ValueError(f"tensorrt_version must look like 10.3.0.30, got {self.tensorrt_version!r}")
        if not re.fullmatch(r"sm_\d+", self.sm):
            raise ValueError(f"sm must look like sm_87, got {self.sm!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        shapes = [_shape(getattr(self, name), name) for name in ("min_shape", "opt_shape", "max_shape")]
        for name, shape in zip(("min_shape", "opt_shape", "max_shape"), shapes, strict=True):
            object.__setattr__(self, name, shape)  # lists from JSON become tuples
        low, opt, high = shapes
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            raise ValueError(f"shapes must satisfy min <= opt <= max per axis, got {low} {opt} {high}")
        if low[1] != high[1]:
            raise ValueError(f"the band count is fixed by the ONNX graph, got {low[1]}..{high[1]}")

    @classmethod
    def for_line_widths(
        cls,
        onnx_sha256: str,
        tensorrt_version: str,
        sm: str,
        precision: str,
        *,
        bands: int,
        min_width: int,
        opt_width: int,
        max_width: int,
        lines: int = 1,
        min_lines: int | None = None,
        max_lines: int | None = None,
        batch: int = 1,
        gpu: str = "",
        workspace_bytes: int = 0,
        tf32: bool = True,
    ) -> EngineKey:
        """The key of an engine whose varying axes are the line width (pixels per line) and the
        number of lines, ``min_lines..max_lines`` (default: ``lines`` alone), tuned for ``lines``."""
        low = lines if min_lines is None else min_lines
        high = lines if max_lines is None else max_lines
        return cls(
            onnx_sha256,
            tensorrt_version,
            sm,
            precision,
            (batch, bands, low, min_width),
            (batch, bands, lines, opt_width),
            (batch, bands, high, max_width),
            gpu=gpu,
            workspace_bytes=workspace_bytes,
            tf32=tf32,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EngineKey:
        return cls(**values)

    @property
    def digest(self) -> str:
        """SHA-256 of the key's canonical JSON: any change of any field changes it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """File stem: the readable parts, the ONNX checksum's head and the key's short hash."""
        version = re.sub(r"[^0-9.]", "-", self.tensorrt_version)
        widths = f"w{self.min_shape[3]}-{self.opt_shape[3]}-{self.max_shape[3]}"
        lines = f"l{self.min_shape[2]}-{self.opt_shape[2]}-{self.max_shape[2]}"
        return (
            f"{self.precision}_trt{version}_{self.sm}_b{self.opt_shape[1]}_{lines}_{widths}"
            f"_{self.onnx_sha256[:8]}_{self.digest[:12]}"
        )


def entry_paths(cache_dir: str | Path, key: EngineKey) -> tuple[Path, Path]:
    """(engine file, sidecar) of ``key`` in ``cache_dir``."""
    folder = Path(cache_dir)
    return folder / (key.name + ENGINE_SUFFIX), folder / (key.name + SIDECAR_SUFFIX)


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(SIDECAR_SUFFIX)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar's JSON; :class:`EngineCacheError` when it is unreadable or not one of ours."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EngineCacheError(f"{path}: unreadable engine sidecar ({error})") from None
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise EngineCacheError(f"{path}: not an edge-had engine sidecar (format {SIDECAR_FORMAT})")
    if not isinstance(record.get("key"), dict) or not isinstance(record.get("engine_sha256"), str):
        raise EngineCacheError(f"{path}: engine sidecar without a key or an engine_sha256")
    return record


def _entry_problem(engine: Path, sidecar: Path, key: EngineKey) -> str | None:
    """Why the entry at (engine, sidecar) must not be loaded for ``key``; None when it may."""
    if not sidecar.is_file():
        return f"no sidecar {sidecar.name}"
    try:
        record = read_sidecar(sidecar)
    except EngineCacheError as error:
        return str(error)
    wanted, recorded = key.to_dict(), record["key"]
    if recorded != wanted:
        changed = {name for name in wanted.keys() | recorded.keys() if recorded.get(name) != wanted.get(name)}
        return f"its sidecar describes another build (differs in: {', '.join(sorted(changed))})"
    actual = sha256_file(engine)
    if actual != record["engine_sha256"]:
        return (
            f"its SHA-256 is {actual[:12]}..., the sidecar recorded {str(record['engine_sha256'])[:12]}... "
            f"({engine.stat().st_size} bytes now, {record.get('engine_bytes')} then): corrupt or truncated"
        )
    return None


def lookup(cache_dir: str | Path, key: EngineKey) -> Path | None:
    """The cached engine for ``key``, or None (see the module docstring for the policy)."""
    engine, sidecar = entry_paths(cache_dir, key)
    if not engine.is_file():
        return None
    problem = _entry_problem(engine, sidecar, key)
    if problem is not None:
        log.warning("engine cache: not loading %s: %s; it will be rebuilt", engine, problem)
        return None
    return engine


def store(cache_dir: str | Path, key: EngineKey, engine: bytes, source: dict[str, Any] | None = None) -> Path:
    """Write ``engine`` and its sidecar for ``key`` (replacing any old entry); returns the engine path.
    ``source``: the source ONNX file's edge-had metadata (weights, alphas, bands), recorded so a
    runtime can check the engine against the model it is asked to stand for.

    The sidecar is written last: an interrupted store leaves an entry that :func:`lookup` rejects.
    """
    if not engine:
        raise EngineCacheError(f"refusing to cache an empty engine for {key.name}")
    engine_path, sidecar = entry_paths(cache_dir, key)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)
    write_bytes_atomically(engine_path, engine)
    record = {
        "format": SIDECAR_FORMAT,
        "key": key.to_dict(),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
    }
    write_bytes_atomically(sidecar, (json.dumps(record, indent=2) + "\n").encode())
    return engine_path


def verify_engine(
    engine_path: str | Path,
    *,
    tensorrt_version: str,
    sm: str,
    precision: str | None = None,
    gpu: str | None = None,
) -> EngineKey | None:
    """Check an engine given by path against the running TensorRT, GPU and wanted precision.
    ``gpu``: the running GPU's :attr:`~edge_had.cuda.CudaDevice.model` (name and SM count), checked
    against the one the engine was built on when both are known (Jetson boards of one SM version -
    AGX Orin, Orin NX, Orin Nano - get different tactics).

    Returns the key from its sidecar, or None when it has none (built outside edge-had, e.g. with
    ``trtexec``). Raises :class:`EngineCacheError` naming the file and the fix when the engine is
    missing, corrupt, or built for another TensorRT, GPU or precision.
    """
    engine = Path(engine_path)
    if not engine.is_file():
        raise EngineCacheError(f"{engine}: no such engine file; {REBUILD_HINT}")
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():
        log.info("%s has no sidecar (built outside edge-had?): loading it unchecked", engine)
        return None
    record = read_sidecar(sidecar)
    try:
        key = EngineKey.from_dict(record["key"])
    except (TypeError, ValueError) as error:
        raise EngineCacheError(f"{sidecar}: invalid engine key ({error}); {REBUILD_HINT}") from None
    problems = []
    if key.tensorrt_version != tensorrt_version:
        problems.append(f"built with TensorRT {key.tensorrt_version}, this is TensorRT {tensorrt_version}")
    if key.sm != sm:
        problems.append(f"built for {key.sm}, this GPU is {sm}")
    elif gpu and key.gpu and key.gpu != gpu:
        problems.append(f"built on {key.gpu}, this GPU is {gpu}")
    if precision is not None and key.precision != precision:
        problems.append(f"its precision is {key.precision}, {precision} was asked for")
    if not problems and sha256_file(engine) != record["engine_sha256"]:
        problems.append("its SHA-256 differs from the one its sidecar recorded (corrupt or truncated)")
    if problems:
        raise EngineCacheError(f"{engine}: " + "; ".join(problems) + f"; {REBUILD_HINT}")
    if key.tf32:  # built before `edge-had build` cleared TF32: still a working engine
        log.warning(
            "%s was built with TF32 allowed: its FP32 layers round their inputs to 10 mantissa bits, "
            "which the accuracy gate did not measure; %s",
            engine,
            REBUILD_HINT,
        )
    return key
