"""Hybrid RX (sqrt(RX * LRX)): what it ranks first, its invariances, and its wiring into every
detector family (plain, resampled, enhanced) against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from edge_had.detectors import local_rx, rx_reference
from edge_had.detectors.lrx import LocalRXSettings
from edge_had.detectors.registry import make_detector
from edge_had.detectors.scoring import SCORERS, geometric_mean, hybrid_rx, scorer
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import SpectralAdapter

BOTH, LOCAL_ONLY, GLOBAL_ONLY = (30, 10), (10, 10), (26, 46)


@pytest.fixture(scope="module")
def two_material_scene() -> np.ndarray:
    """Material A on the left half, B on the right; a 12x12 block of a third material C in B.

    * ``BOTH``: one C pixel inside A - rare in the scene and unlike its neighbours;
    * ``LOCAL_ONLY``: a half-A half-B mixed pixel inside A - unlike its neighbours, but between the
      two materials that fill the scene, so near the global mean;
    * ``GLOBAL_ONLY``: the centre of the C block - rare in the scene, but its neighbours are C.
    """
    rng = np.random.default_rng(0)
    rows, cols, bands = 60, 60, 20
    a, b, c = (rng.uniform(0.2, 0.8, bands) for _ in range(3))
    cube = rng.normal(size=(rows, cols, bands)) @ (0.02 * rng.normal(size=(bands, bands)))
    cube[:, :30] += a
    cube[:, 30:] += b
    cube[20:32, 40:52] += c - b
    cube[BOTH] += c - a
    cube[LOCAL_ONLY] += 0.5 * (b - a)
    return cube


def test_hybrid_ranks_first_what_both_detectors_call_unusual(two_material_scene) -> None:
    global_scores, local_scores = rx_reference(two_material_scene), local_rx(two_material_scene)
    # the premise: each single detector ranks a one-sided pixel above BOTH
    assert global_scores[GLOBAL_ONLY] > global_scores[BOTH] > global_scores[LOCAL_ONLY]
    assert local_scores[LOCAL_ONLY] > local_scores[BOTH] > local_scores[GLOBAL_ONLY]
    hybrid = hybrid_rx(two_material_scene)
    assert np.unravel_index(np.argmax(hybrid), hybrid.shape) == BOTH
    assert hybrid[BOTH] > hybrid[LOCAL_ONLY] and hybrid[BOTH] > hybrid[GLOBAL_ONLY]


def test_hybrid_is_the_geometric_mean_and_ignores_the_data_scale(two_material_scene) -> None:
    expected = np.sqrt(rx_reference(two_material_scene) * local_rx(two_material_scene))
    np.testing.assert_allclose(hybrid_rx(two_material_scene), expected, rtol=1e-10)
    # an affine change of units (gain and offset) changes neither RX nor LRX, so nor the hybrid
    np.testing.assert_allclose(hybrid_rx(7.0 * two_material_scene + 3.0), expected, rtol=1e-6)


def test_masked_pixels_score_nan_and_unknown_scorers_fail() -> None:
    scene = synthetic_scene(lines=30, width=24, bands=12, seed=1)
    valid = scene.valid.copy()
    valid[5, 5] = False
    scores = hybrid_rx(scene.cube, valid)
    assert np.isnan(scores[5, 5]) and np.isfinite(scores[valid]).all()
    assert SCORERS == ("global", "local", "hybrid")
    with pytest.raises(ValueError, match="unknown scorer"):
        scorer("median")


def test_plain_and_resampled_hybrid_detectors_score_the_right_cube() -> None:
    scene = synthetic_scene(lines=30, width=24, bands=40, seed=2)
    np.testing.assert_allclose(
        make_detector("hybrid-rx").score(scene.cube, scene.valid), hybrid_rx(scene.cube, scene.valid)
    )
    adapter = SpectralAdapter.from_wavelengths(scene.wavelengths, 16)
    resampled = scene.cube.astype(np.float64) @ adapter.matrix.T
    np.testing.assert_allclose(
        make_detector("resampled-hybrid-rx", k=16).score(scene.cube, scene.valid, scene.wavelengths),
        hybrid_rx(resampled, scene.valid),
    )


def test_enhanced_hybrid_is_the_geometric_mean_of_enhanced_rx_and_enhanced_lrx(untrained_bundle) -> None:
    model = untrained_bundle(seed=0, k=16, hidden=8, blocks=2, alpha_spe=2.0, alpha_spa=0.5)
    scene = synthetic_scene(lines=40, width=36, bands=50, seed=3)

    def scores(name: str) -> np.ndarray:
        detector = make_detector(name, model=model, backend="torch")
        return detector.score(scene.cube, scene.valid, scene.wavelengths)

    hybrid = make_detector("enhanced-hybrid-rx", model=model)
    assert hybrid.name == "enhanced-hybrid-rx" and "lrx" in hybrid.settings
    np.testing.assert_allclose(
        scores("enhanced-hybrid-rx"), np.sqrt(scores("enhanced-rx") * scores("enhanced-lrx")), rtol=1e-6
    )


def test_geometric_mean_clips_rounding_below_zero():
    """A score rounded to -1e-15 is 0 in the hybrid map, not NaN (metrics refuse NaN scores)."""
    out = geometric_mean(np.array([-1e-15, 4.0, 2.0]), np.array([9.0, 9.0, 8.0]))
    np.testing.assert_array_equal(out, [0.0, 6.0, 4.0])


def test_scorers_use_the_local_rx_settings_they_are_given():
    """enhanced.py builds its scorer with the detector's LRX settings; they must be used."""
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(12, 12, 4))
    settings = LocalRXSettings(inner=1, outer=5, n_components=None, regularization=0.05)
    local = local_rx(cube, None, settings)
    assert not np.allclose(local, local_rx(cube, None))  # the settings change the map
    np.testing.assert_allclose(scorer("local", settings)(cube, None), local, rtol=1e-12)
    np.testing.assert_allclose(
        scorer("hybrid", settings)(cube, None), np.sqrt(rx_reference(cube) * local), rtol=1e-9
    )


def test_global_scorer_loads_the_diagonal_as_a_fraction_of_trace_over_bands() -> None:
    # float64 oracle: covariance over the valid pixels (divide by N), plus 0.5 * trace / bands on
    # the diagonal, squared Mahalanobis distance of every pixel
    rng = np.random.default_rng(3)
    cube = rng.normal(size=(6, 7, 4)) @ rng.normal(size=(4, 4))
    valid = np.ones((6, 7), dtype=bool)
    valid[2, 3] = False
    pixels = cube.reshape(-1, 4)
    background = pixels[valid.ravel()]
    mean = background.mean(axis=0)
    cov = np.cov(background, rowvar=False, bias=True)
    cov += 0.5 * np.trace(cov) / 4 * np.eye(4)
    centred = pixels - mean
    expected = np.einsum("ij,ij->i", centred, np.linalg.solve(cov, centred.T).T).reshape(6, 7)
    scores = scorer("global", regularization=0.5)(cube, valid)
    np.testing.assert_allclose(scores[valid], expected[valid], rtol=1e-9)
    assert np.isnan(scores[2, 3])


@pytest.mark.parametrize(
    ("name", "regularization", "problem"),
    [
        ("local", 0.1, "LocalRXSettings.regularization"),
        ("hybrid", 0.1, "LocalRXSettings.regularization"),
        ("global", float("inf"), "finite number >= 0"),
        ("global", -0.1, "finite number >= 0"),
    ],
)
def test_a_loading_the_scorer_would_not_use_is_refused(name, regularization, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        scorer(name, regularization=regularization)


def test_the_hybrid_scorer_leaves_masked_pixels_out_of_the_statistics() -> None:
    # a masked pixel's values, however wild, change no other pixel's score
    scene = synthetic_scene(lines=24, width=24, bands=10, seed=2)
    valid = scene.valid.copy()
    valid[7, 9] = False
    wild = scene.cube.copy()
    wild[7, 9] = 1e4
    score = scorer("hybrid")
    calm, loud = score(scene.cube, valid), score(wild, valid)
    assert np.isnan(loud[7, 9])
    np.testing.assert_array_equal(calm[valid], loud[valid])
