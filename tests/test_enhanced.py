"""Model bundles on disk and training-free enhanced detection, against direct computations."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from edge_had.detectors import rx_reference
from edge_had.detectors.enhanced import EnhancedDetector, ResampledRXDetector
from edge_had.detectors.fusion import normalize_minmax
from edge_had.detectors.registry import make_detector
from edge_had.detectors.scoring import hybrid_rx
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import ModelError, Normalization, SpectralAdapter, load_bundle, save_bundle


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(lines=40, width=36, bands=50, seed=3)


@pytest.fixture(scope="module")
def bundle_dir(untrained_bundle):
    return untrained_bundle(seed=0, k=16, hidden=8, blocks=2, alpha_spe=2.0, alpha_spa=0.5)


def direct_parts(bundle_dir, scene):
    """The enhancement computed step by step from the saved networks, independently of the detector."""
    bundle = load_bundle(bundle_dir)
    normalized = Normalization()(scene.cube)
    x = torch.from_numpy(normalized).permute(2, 0, 1)[None]
    adapter = SpectralAdapter.from_wavelengths(scene.wavelengths, bundle.config.k)
    with torch.no_grad():
        x_k = adapter(x)
        f_spe, f_spa = bundle.spectral(x_k), bundle.spatial(x_k)
    to_numpy = lambda t: t[0].permute(1, 2, 0).numpy().astype(np.float64)  # noqa: E731
    return to_numpy(x_k), to_numpy(f_spe), to_numpy(f_spa)


def test_bundle_round_trip_records_config_and_checksum(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.config.alpha_spe == 2.0 and bundle.config.k == 16
    import hashlib

    assert bundle.sha256 == hashlib.sha256((bundle_dir / "model.safetensors").read_bytes()).hexdigest()


def test_feature_and_product_fusion_match_direct_computation(bundle_dir, scene):
    x_k, f_spe, f_spa = direct_parts(bundle_dir, scene)
    wavelengths = scene.wavelengths
    feature = EnhancedDetector(bundle_dir, backend="torch").score(scene.cube, scene.valid, wavelengths)
    np.testing.assert_allclose(feature, rx_reference(x_k + 2.0 * f_spe + 0.5 * f_spa), rtol=1e-4)
    product = EnhancedDetector(bundle_dir, fusion="product", backend="torch").score(
        scene.cube, scene.valid, wavelengths
    )
    expected = normalize_minmax(rx_reference(x_k + 0.5 * f_spa)) * normalize_minmax(
        rx_reference(x_k + 2.0 * f_spe)
    )
    np.testing.assert_allclose(product, expected, rtol=1e-4, atol=1e-6)


def test_hybrid_alphas_leave_the_spatial_student_out_with_the_same_scores(bundle_dir, scene):
    """enhanced-hybrid-rx fuses at alpha_spa = 0: the student is not run, and the scores are those
    of the spectral branch alone, computed directly."""
    x_k, f_spe, _ = direct_parts(bundle_dir, scene)
    bundle = load_bundle(bundle_dir)
    assert bundle.model_for(50).spatial is not None
    bundle.config = dataclasses.replace(bundle.config, alpha_spa=0.0)
    assert bundle.model_for(50).spatial is None
    config = dataclasses.replace(bundle.config, hybrid_alpha_spe=0.7)
    (bundle_dir.parent / "hybrid").mkdir(exist_ok=True)
    save_bundle(bundle_dir.parent / "hybrid", config, bundle.spectral, bundle.spatial)
    detector = EnhancedDetector(bundle_dir.parent / "hybrid", backend="torch", scorer="hybrid")
    scores = detector.score(scene.cube, scene.valid, scene.wavelengths)
    np.testing.assert_allclose(scores, hybrid_rx(x_k + 0.7 * f_spe, scene.valid), rtol=1e-4)


def test_resampled_rx_is_rx_of_the_adapted_cube(scene):
    adapter = SpectralAdapter.from_wavelengths(scene.wavelengths, 16)
    expected = rx_reference(scene.cube.astype(np.float64) @ adapter.matrix.T)
    np.testing.assert_allclose(
        ResampledRXDetector(16).score(scene.cube, scene.valid, scene.wavelengths), expected
    )


def test_invalid_pixels_are_imputed_before_the_networks_and_scored_nan(bundle_dir, scene):
    cube, valid = scene.cube.copy(), scene.valid.copy()
    cube[10, 10] = np.nan
    valid[10, 10] = False
    scores = EnhancedDetector(bundle_dir).score(cube, valid, scene.wavelengths)
    assert np.isnan(scores[10, 10])
    assert np.isfinite(np.delete(scores.ravel(), 10 * scores.shape[1] + 10)).all()


def test_registry_builds_enhanced_detectors_with_their_settings(bundle_dir):
    detector = make_detector("enhanced-lrx", model=bundle_dir, fusion="product")
    assert detector.name == "enhanced-lrx"
    settings = detector.settings
    assert (
        settings["fusion"] == "product"
        and settings["alpha_spe"] == 2.0
        and len(settings["model_sha256"]) == 64
    )
    config = detector.bundle.config  # each alpha reported from its own field
    assert (settings["alpha_spe"], settings["alpha_spa"]) == config.alphas_for("local") != (2.0, 2.0)
    with pytest.raises(ValueError, match="unknown fusion"):
        make_detector("enhanced-rx", model=bundle_dir, fusion="max")


def test_missing_corrupt_and_foreign_bundles_are_clear_errors(bundle_dir, tmp_path):
    with pytest.raises(ModelError, match="missing"):
        load_bundle(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((bundle_dir / "config.json").read_text())
    weights = (bundle_dir / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError, match="corrupt, truncated"):
        load_bundle(broken)
    (broken / "model.safetensors").write_bytes(weights)
    (broken / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a valid edge-had model config"):
        load_bundle(broken)
    config = json.loads((bundle_dir / "config.json").read_text())
    config["hidden"] = 12  # the weights no longer fit the architecture
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="cannot load weights"):
        load_bundle(broken)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: c["normalization"].update(scal=0.1), "normalization must hold"),  # a misspelt key
        (lambda c: c["normalization"].update(scale=0), "normalization.scale must be a finite number > 0"),
        (lambda c: c.update(k="64"), "k must be an integer >= 2, got '64'"),
        (lambda c: c.update(alpha_spa=float("nan")), "alpha_spa must be a finite number"),
        (lambda c: c.update(spatial="yes"), "spatial must be true or false"),
        (lambda c: c["normalization"].update(low_percentile=99.5), "low < high"),
    ],
)
def test_a_model_config_with_wrong_values_is_refused_when_loaded(bundle_dir, tmp_path, change, says):
    """A config's types and ranges are checked when the folder is loaded: a misspelt key was a
    TypeError later, a scale of 0 silently scored AUC 0.59 on a scene where the model gets 0.94."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((bundle_dir / "model.safetensors").read_bytes())
    config = json.loads((bundle_dir / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not a valid edge-had model config") as error:
        load_bundle(folder)
    assert says in str(error.value)
    (folder / "config.json").write_text("[]")
    with pytest.raises(ModelError, match="expected a JSON object"):
        load_bundle(folder)


def test_a_stage_two_model_counts_the_scenes_stage_one_saw(bundle_dir, tmp_path):
    """`train --stage 2` keeps the stage-1 record as previous_run; the spectral network saw those
    scenes, so reports must call them trained on (only stage 2's were, before)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.safetensors", "config.json"):
        (folder / name).write_bytes((bundle_dir / name).read_bytes())
    record = {
        "data": [{"name": "beach-2", "sha256": "b" * 64}],
        "previous_run": {
            "data": [{"name": "airport-3", "sha256": "a" * 64}, {"name": "beach-2", "sha256": "b" * 64}]
        },
    }
    (folder / "train_config.json").write_text(json.dumps(record))
    assert load_bundle(folder).training_scenes == {"b" * 64: "beach-2", "a" * 64: "airport-3"}


def test_offline_hybrid_rx_runs_and_counts_no_spatial_branch(untrained_bundle):
    """Hybrid RX fuses the spectral branch alone (alpha_spa 0): its model has no spatial student,
    so it is neither run nor counted; and a 0/1 integer validity mask works like a boolean one."""
    from edge_had.detectors.enhanced import impute_invalid

    bundle_dir = untrained_bundle(seed=0, k=16, hidden=8, blocks=2, alpha_spa=0.5, hybrid_alpha_spe=1.0)
    hybrid = make_detector("enhanced-hybrid-rx", model=bundle_dir, backend="torch")
    global_rx = make_detector("enhanced-rx", model=bundle_dir, backend="torch")
    assert hybrid.bundle.model_for(30).spatial is None and global_rx.bundle.model_for(30).spatial is not None
    assert hybrid.macs_per_pixel(30) < global_rx.macs_per_pixel(30)
    cube = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(impute_invalid(cube, mask), impute_invalid(cube, mask.astype(bool)))
    # the invalid pixel holds the valid pixels' mean spectrum (its neighbours see background, not 0)
    imputed = impute_invalid(cube, mask)
    np.testing.assert_allclose(imputed[0, 2], cube[mask.astype(bool)].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(imputed[mask.astype(bool)], cube[mask.astype(bool)])


def test_enhancement_holds_one_scene_sized_copy_at_a_time():
    """tracemalloc (numpy's allocations; deterministic, not timed). The whole-scene run: the
    imputed copy, then the feed normalised in place - about twice the cube at the peak (the
    percentiles copy nothing: edge_had/models/percentiles.py). In bands of 16 lines the valid
    pixels' copy that gives the fill spectrum (one pixel is invalid here) is the peak: the parts
    (3 x 64 of 200 bands, float32) come a band at a time, and the fused float64 cube holds
    ``x_k`` in its own memory until the spatial student has run."""
    import tracemalloc

    from edge_had.detectors.enhanced import enhance_parts, enhance_whole_scene, enhanced_feature_cube
    from edge_had.models.bundle import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner

    bundle = load_bundle(None)
    cube = np.random.default_rng(0).normal(100.0, 10.0, (128, 128, 200)).astype(np.float32)
    valid = np.ones(cube.shape[:2], bool)
    valid[3, 3] = False
    runs = {
        "whole": lambda runner: enhance_whole_scene(bundle, cube, valid, runner),
        "bands": lambda runner: enhance_parts(bundle, cube, valid, None, runner, tile_lines=16),
        "fused": lambda runner: enhanced_feature_cube(
            bundle, cube, valid, None, runner, (1, 4), tile_lines=16
        ),
    }
    peaks = {}
    with TorchRunner(bundle.model_for(200)) as runner:
        for name, run in runs.items():
            tracemalloc.start()
            try:
                result = run(runner)
                peaks[name] = tracemalloc.get_traced_memory()[1] / cube.nbytes
            finally:
                tracemalloc.stop()
            if name != "fused":
                assert all(part.dtype == np.float32 for part in result.values())
    # measured: 2.02, 1.02, 1.02 x the cube (2.09, 1.02, 1.13 with the percentiles' copy)
    assert peaks["whole"] < 2.1 and peaks["bands"] < 1.1 and peaks["fused"] < 1.1, peaks


def test_fused_parts_are_the_float64_sums_bit_for_bit():
    """float32 parts summed by weighted_sum: the same bits as float64 copies summed as written."""
    from edge_had.detectors.enhanced import weighted_sum

    rng = np.random.default_rng(4)
    x, f, g = (rng.normal(0.0, 1.0, (9, 7, 5)).astype(np.float32) for _ in range(3))
    x64, f64, g64 = (part.astype(np.float64) for part in (x, f, g))
    np.testing.assert_array_equal(weighted_sum(x, (0.3, f), (4.0, g)), x64 + 0.3 * f64 + 4.0 * g64)
    np.testing.assert_array_equal(weighted_sum(x, (3.0, f)), x64 + 3.0 * f64)


def regularized_rx_oracle(cube: np.ndarray, regularization: float) -> np.ndarray:
    """Global RX in float64 numpy, written out here: mean and covariance over every pixel (divided
    by N), the covariance loaded with ``regularization * trace / bands`` on its diagonal."""
    pixels = cube.reshape(-1, cube.shape[2]).astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    cov = centred.T @ centred / len(pixels)
    cov += regularization * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.einsum("ij,jk,ik->i", centred, np.linalg.inv(cov), centred).reshape(cube.shape[:2])


def test_enhanced_and_resampled_rx_take_the_regularization_of_global_rx(bundle_dir, scene, tmp_path, capsys):
    """`--regularization` was refused for enhanced-rx and resampled-rx, whose scores are global RX
    of the enhanced / resampled cube: it now loads that RX, as it loads rx's, and is recorded."""
    from scipy.io import savemat

    from edge_had.cli import main

    savemat(
        tmp_path / "scene.mat",
        {"data": scene.cube, "wavelength": scene.wavelengths, "map": scene.gt.astype(np.uint8)},
    )
    x_k, f_spe, f_spa = direct_parts(bundle_dir, scene)
    fused = x_k + 2.0 * f_spe + 0.5 * f_spa
    loaded, plain = regularized_rx_oracle(fused, 0.05), regularized_rx_oracle(fused, 0.0)
    assert not np.allclose(loaded, plain, rtol=1e-2)  # the loading changes the map
    common = ["--model", str(bundle_dir), "--backend", "torch", "--regularization", "0.05"]
    npy = tmp_path / "scores" / "enhanced.npy"
    argv = ["detect", str(tmp_path / "scene.mat"), "--detector", "enhanced-rx", "--npy", str(npy)]
    assert main([*argv, *common]) == 0
    np.testing.assert_allclose(np.load(npy), loaded, rtol=1e-4)
    report = tmp_path / "eval.json"
    argv = ["eval", "--data", str(tmp_path), "--detector", "enhanced-rx", "--quiet", "--json", str(report)]
    assert main([*argv, *common]) == 0
    assert json.loads(report.read_text())["detector"]["regularization"] == 0.05

    adapter = SpectralAdapter.from_wavelengths(scene.wavelengths, 64)
    argv = ["detect", str(tmp_path / "scene.mat"), "--detector", "resampled-rx", "--npy", str(npy)]
    assert main([*argv, "--regularization", "0.05"]) == 0
    assert "'regularization': 0.05" in capsys.readouterr().out
    expected = regularized_rx_oracle(scene.cube.astype(np.float64) @ adapter.matrix.T, 0.05)
    np.testing.assert_allclose(np.load(npy), expected, rtol=1e-6)


def test_a_global_rx_loading_given_to_a_local_or_hybrid_scorer_is_refused(bundle_dir):
    """The local part of enhanced-lrx / -hybrid-rx takes its loading from LocalRXSettings (what
    `--regularization` sets for them); a second one for global RX would be ignored there."""
    with pytest.raises(ValueError, match="regularization 0.1 is global RX's; the hybrid scorer"):
        EnhancedDetector(bundle_dir, scorer="hybrid", regularization=0.1)
    with pytest.raises(ValueError, match="regularization must be a finite number >= 0"):
        ResampledRXDetector(16, regularization=-1.0)
    assert EnhancedDetector(bundle_dir, regularization=0.1).settings["regularization"] == 0.1


def test_macs_per_pixel_counts_the_adapter_the_sensors_wavelengths_build() -> None:
    """450 bands with each centre recorded three times: six sensor bands per canonical band make the
    adapter a dense product (53,658 multiply-adds per pixel, over the 50,000 budget), but the count
    was of the band-index adapter (14,410) - a review. The count now follows the wavelengths."""
    import numpy as np

    from edge_had.detectors.registry import make_detector

    detector = make_detector("enhanced-rx")
    repeated = np.repeat(np.linspace(400.0, 2500.0, 150), 3)
    assert detector.macs_per_pixel(450) == 14_410
    assert detector.macs_per_pixel(450, repeated) == 53_658
    assert detector.macs_per_pixel(450, np.linspace(400.0, 2500.0, 450)) < 50_000
