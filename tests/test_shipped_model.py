"""The model shipped inside the package: it loads, its sidecar describes exactly these weights
and data, and it makes RX better on the default synthetic scene, which it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_had.detectors.enhanced import EnhancedDetector
from edge_had.detectors.registry import make_detector
from edge_had.detectors.rx import rx_reference
from edge_had.eval.metrics import roc_auc
from edge_had.io.readers import sha256_file
from edge_had.io.synthetic import synthetic_scene
from edge_had.models.bundle import default_model_dir, load_bundle


def test_shipped_model_loads_and_its_sidecar_matches_the_weights() -> None:
    folder = default_model_dir()
    bundle = load_bundle()
    sidecar = json.loads((folder / "sidecar.json").read_text())
    assert sidecar["weights_sha256"] == bundle.sha256 == sha256_file(folder / "model.safetensors")
    recorded_alphas = (sidecar["alpha_spe"], sidecar["alpha_spa"], sidecar["hybrid_alpha_spe"])
    config = bundle.config
    assert recorded_alphas == (config.alpha_spe, config.alpha_spa, config.hybrid_alpha_spe)
    assert sidecar["command"][1] == "release" and sidecar["crossval"]["summary"]
    assert max(sidecar["macs_per_pixel"].values()) <= 50_000
    assert (folder / "MODEL_CARD.md").is_file()
    assert sum(path.stat().st_size for path in folder.iterdir()) < 1_000_000  # small enough to ship
    assert not (folder / "checkpoints").exists()


@pytest.mark.data
def test_shipped_model_records_the_checksums_of_its_training_scenes(data_dir: Path) -> None:
    sidecar = json.loads((default_model_dir() / "sidecar.json").read_text())
    recorded = {entry["name"]: entry["sha256"] for entry in sidecar["training_scenes"]}
    assert recorded == {path.stem: sha256_file(path) for path in sorted(data_dir.glob("*.mat"))}


def test_shipped_model_improves_rx_on_the_default_synthetic_scene() -> None:
    scene = synthetic_scene()  # the frozen default scene; the model was trained on real scenes only
    plain = roc_auc(rx_reference(scene.cube), scene.gt)
    enhanced = roc_auc(
        EnhancedDetector(backend="torch").score(scene.cube, scene.valid, scene.wavelengths), scene.gt
    )
    resampled = roc_auc(
        make_detector("resampled-rx").score(scene.cube, scene.valid, scene.wavelengths), scene.gt
    )
    assert plain == pytest.approx(0.9167, abs=1e-4) and resampled == pytest.approx(0.9355, abs=1e-4)
    assert enhanced >= resampled + 0.03 and enhanced >= plain + 0.05  # measured at release: 0.9752


def test_shipped_model_improves_hybrid_rx_on_the_default_synthetic_scene() -> None:
    scene = synthetic_scene()

    def auc(name: str) -> float:
        return roc_auc(make_detector(name).score(scene.cube, scene.valid, scene.wavelengths), scene.gt)

    # measured at release: 0.9819 without the networks, 0.9885 with them (and plain RX 0.9167)
    assert auc("enhanced-hybrid-rx") >= auc("resampled-hybrid-rx") + 0.004
