"""A trained model on disk: ``config.json`` + ``model.safetensors`` (+ ``sidecar.json``).

The networks work in the model's K canonical bands, so a bundle holds no adapter: the adapter is
built per sensor when the bundle is applied (:meth:`ModelBundle.model_for`). Weights are read with
safetensors (never unpickled); a missing, truncated or mismatched file is a :class:`ModelError`
naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.atomic_files import replace_via_temporary, write_bytes_atomically
from edge_had.errors import EdgeHadError
from edge_had.models.adapter import SpectralAdapter
from edge_had.models.enhancer import EnhancementModel
from edge_had.models.normalize import Normalization
from edge_had.models.spatial import SpatialStudent
from edge_had.models.spectral import SpectralEnhancer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "sidecar.json"
MODEL_CARD_FILE = "MODEL_CARD.md"  # written by edge_had.train.release beside the sidecar
TRAIN_RECORD_FILE = "train_config.json"
BUNDLE_FORMAT = "edge-had-model"
BUNDLE_FORMAT_VERSION = 1


class ModelError(EdgeHadError):
    """A model bundle is missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class ModelConfig:
    k: int = 64
    hidden: int = 32
    blocks: int = 3
    spatial: bool = True
    alpha_spe: float = 1.0
    alpha_spa: float = 1.0
    #: alpha_spe chosen for hybrid RX (global x local), which uses the spectral branch alone;
    #: None (older bundles): hybrid RX uses alpha_spe and alpha_spa like global RX
    hybrid_alpha_spe: float | None = None
    normalization: dict[str, float] = field(default_factory=lambda: Normalization().to_dict())

    def __post_init__(self) -> None:
        """A config read from a file is checked here: a wrong type or range is a clear error at
        load time, not a traceback or silently bad scores later (a scale of 0 scored AUC 0.59)."""

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

        def number(name: str, value: Any, low: float, *, above: bool = False) -> None:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (above and value == low):
                raise ValueError(
                    f"{name} must be a finite number {'>' if above else '>='} {low:g}, got {value!r}"
                )

        integer("k", 2)
        integer("hidden", 1)
        integer("blocks", 0)
        if not isinstance(self.spatial, bool):
            raise ValueError(f"spatial must be true or false, got {self.spatial!r}")
        number("alpha_spe", self.alpha_spe, 0.0)
        number("alpha_spa", self.alpha_spa, 0.0)
        if self.hybrid_alpha_spe is not None:
            number("hybrid_alpha_spe", self.hybrid_alpha_spe, 0.0)
        expected = set(Normalization().to_dict())
        if not isinstance(self.normalization, dict) or set(self.normalization) != expected:
            raise ValueError(
                f"normalization must hold exactly {sorted(expected)}, got {self.normalization!r}"
            )
        for key, value in self.normalization.items():
            number(f"normalization.{key}", value, 0.0, above=key == "scale")
        low, high = self.normalization["low_percentile"], self.normalization["high_percentile"]
        if not low < high <= 100:
            raise ValueError(
                f"normalization percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        fields = {key: value for key, value in data.items() if key not in ("format", "format_version")}
        return cls(**fields)

    def alphas_for(self, scorer: str) -> tuple[float, float]:
        """``(alpha_spe, alpha_spa)`` that the scorer (``global``, ``local``, ``hybrid``) fuses with."""
        if scorer == "hybrid" and self.hybrid_alpha_spe is not None:
            return self.hybrid_alpha_spe, 0.0
        return self.alpha_spe, self.alpha_spa

    def build_networks(self) -> tuple[SpectralEnhancer, SpatialStudent | None]:
        spatial = SpatialStudent(self.k) if self.spatial else None
        return SpectralEnhancer(self.k, self.hidden, self.blocks), spatial


@dataclass
class ModelBundle:
    config: ModelConfig
    spectral: SpectralEnhancer
    spatial: SpatialStudent | None
    sha256: str
    directory: Path | None = None
    training_scenes: dict[str, str] = field(default_factory=dict)  # SHA-256 -> scene name
    #: whether the folder recorded what the model was trained on (train_config.json or the
    #: sidecar): without a record, ``training_scenes`` is empty but says nothing
    training_recorded: bool = True

    @property
    def known_training_scenes(self) -> dict[str, str] | None:
        """``training_scenes``, or None when the folder records none (whether it saw a scene is
        unknown)."""
        return self.training_scenes if self.training_recorded else None

    @property
    def normalization(self) -> Normalization:
        return Normalization(**self.config.normalization)

    def adapter_for(self, bands: int, wavelengths: np.ndarray | None = None) -> SpectralAdapter:
        """Resample on wavelengths when the file has them, on band index otherwise."""
        return SpectralAdapter.for_sensor(bands, wavelengths, self.config.k)

    def for_scorer(self, scorer: str) -> ModelBundle:
        """This bundle (same networks) fusing at the alphas ``scorer`` uses (``config.alphas_for``):
        what a graph, engine or stream for that scorer must be built from."""
        alpha_spe, alpha_spa = self.config.alphas_for(scorer)
        config = dataclasses.replace(self.config, alpha_spe=alpha_spe, alpha_spa=alpha_spa)
        return dataclasses.replace(self, config=config)

    def model_for(self, bands: int, wavelengths: np.ndarray | None = None) -> EnhancementModel:
        """The inference path for a sensor. At ``alpha_spa = 0`` (e.g. hybrid RX's alphas) the
        spatial student is left out: its output would be multiplied by zero (f_spa is zeros)."""
        model = EnhancementModel(
            self.adapter_for(bands, wavelengths),
            self.spectral,
            self.spatial if self.config.alpha_spa != 0 else None,
            self.config.alpha_spe,
            self.config.alpha_spa,
        )
        return model.eval()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_bundle(
    directory: str | Path,
    config: ModelConfig,
    spectral: SpectralEnhancer,
    spatial: SpatialStudent | None,
) -> Path:
    """Write config.json and model.safetensors; returns the weights' path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"spectral.{name}": value.detach().contiguous() for name, value in spectral.state_dict().items()
    }
    if spatial is not None:
        tensors.update(
            {f"spatial.{name}": value.detach().contiguous() for name, value in spatial.state_dict().items()}
        )
    weights = directory / WEIGHTS_FILE
    try:  # each file whole or not at all (a full disk left half a config beside new weights)
        replace_via_temporary(
            weights, lambda temporary: save_file(tensors, str(temporary), metadata={"format": BUNDLE_FORMAT})
        )
        _readable_as_umask_allows(weights)
        write_bytes_atomically(
            directory / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode()
        )
    except Exception as error:  # safetensors says a full disk in its own error type
        raise ModelError(
            f"cannot write the model to {directory} ({type(error).__name__}: {error}): is the disk full?"
        ) from error
    return weights


def _readable_as_umask_allows(path: Path) -> None:
    """safetensors writes through a private (0600) temporary file: give the weights the mode a new
    file gets (e.g. 0644), so a service account can read the model."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_bundle(directory: str | Path | None = None) -> ModelBundle:
    """Load a bundle (default: the weights shipped inside the package)."""
    directory = default_model_dir() if directory is None else Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not directory.is_dir():
        raise ModelError(
            f"{directory}: no such model folder (train one with `edge-had train`, or omit --model for the "
            "shipped one)"
        )
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelError(
                f"{path}: missing; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(train one with `edge-had train`, or omit --model for the shipped one)"
            )
    try:
        raw = json.loads(config_path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        if raw.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        config = ModelConfig.from_dict(raw)
    except (ValueError, TypeError) as error:
        raise ModelError(f"{config_path}: not a valid edge-had model config ({error})") from error
    spectral, spatial = config.build_networks()
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(weights_path))
        _load_part(spectral, tensors, "spectral")
        if spatial is not None:
            _load_part(spatial, tensors, "spatial")
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ModelError(
            f"{weights_path}: cannot load weights ({type(error).__name__}: {error}); the file is corrupt, "
            "truncated or from another architecture - re-copy or retrain it"
        ) from error
    spectral.eval()
    if spatial is not None:
        spatial.eval()
    sha256 = file_sha256(weights_path)
    _check_sidecar(directory, sha256)
    scenes = _training_scenes(directory)
    return ModelBundle(config, spectral, spatial, sha256, directory, scenes or {}, scenes is not None)


def _check_sidecar(directory: Path, weights_sha256: str) -> None:
    """A release sidecar describes one set of weights: refuse a folder whose weights were replaced
    under it (its alphas, scenes and metrics would be reported for other weights)."""
    path = directory / SIDECAR_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get("weights_sha256")
    except (ValueError, AttributeError) as error:
        raise ModelError(f"{path}: unreadable release record ({error})") from error
    if recorded is not None and recorded != weights_sha256:
        raise ModelError(
            f"{path} describes weights {recorded[:12]}..., but {directory / WEIGHTS_FILE} is "
            f"{weights_sha256[:12]}...: the weights were replaced after the release. Remove the "
            f"stale {SIDECAR_FILE} and {MODEL_CARD_FILE}, or release again (`edge-had release`)"
        )


def _training_scenes(directory: Path) -> dict[str, str] | None:
    """SHA-256 -> name of the scenes the bundle was trained on (from train_config.json or the
    sidecar), so reports can say per scene whether the model saw it; None when unrecorded. A
    ``--stage 2`` run keeps the stage-1 run's record as ``previous_run``: its scenes count too
    (the spectral network saw them, whatever scenes stage 2 trained on)."""
    for name, key in ((TRAIN_RECORD_FILE, "data"), (SIDECAR_FILE, "training_scenes")):
        path = directory / name
        if path.is_file():
            try:
                return scenes_of_record(json.loads(path.read_text()), key)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ModelError(f"{path}: unreadable training record ({error})") from error
    return None


def scenes_of_record(record: dict[str, Any] | None, key: str = "data") -> dict[str, str]:
    """SHA-256 -> name of the scenes listed under ``key`` in a training record and in the
    ``previous_run`` records it continues (each once)."""
    return {entry["sha256"]: entry["name"] for entry in record_entries(record, key)}


def record_entries(record: dict[str, Any] | None, key: str = "data") -> Iterator[dict[str, Any]]:
    """The entries listed under ``key`` in a training record, then in each ``previous_run`` record
    it continues, in that order."""
    while record:
        yield from record.get(key, [])
        record = record.get("previous_run")


def _load_part(module: Any, tensors: dict[str, Any], prefix: str) -> None:
    part = {
        name[len(prefix) + 1 :]: value for name, value in tensors.items() if name.startswith(prefix + ".")
    }
    module.load_state_dict(part, strict=True)


def default_model_dir() -> Path:
    """The model shipped inside the package (``edge_had/weights/default``)."""
    return Path(str(resources.files("edge_had") / "weights" / "default"))
