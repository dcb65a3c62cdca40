"""Global RX against independent references: invariants, the float64 oracle, singular cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge_had.detectors import RX, GaussianStats, calc_stats, rx, rx_reference

# Stated tolerance of the fast path (float64 statistics, float32 scoring) against the oracle,
# as max |fast - oracle| / max(oracle): it grows with the covariance's condition number.
# On the ten ABU scenes (condition up to ~1e9, integer counts) it is bounded in test_real_scenes.py.
FAST_PATH_RTOL = {1e2: 1e-5, 1e6: 1e-4, 1e9: 1e-3}
FAST_PATH_RTOL_DEFAULT = 1e-4


def correlated_cube(rows=20, cols=15, bands=12, seed=0, condition=1e6, dtype=np.float64):
    """Gaussian pixels with a known, badly conditioned covariance and a large offset, like real
    radiance counts (ABU beach-1: condition number 8e8, values in the thousands)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((bands, bands)))
    scales = np.logspace(3, 3 - 0.5 * np.log10(condition), bands)
    pixels = (rng.standard_normal((rows * cols, bands)) * scales) @ q.T + 5000.0
    return pixels.reshape(rows, cols, bands).astype(dtype)


def direct_rx(cube):
    """Textbook RX, written independently: per-pixel loop, np.cov(bias=True), np.linalg.solve."""
    pixels = cube.reshape(-1, cube.shape[-1]).astype(np.float64)
    mean = pixels.mean(axis=0)
    cov = np.cov(pixels, rowvar=False, bias=True)
    out = np.array([(p - mean) @ np.linalg.solve(cov, p - mean) for p in pixels])
    return out.reshape(cube.shape[:2])


def test_oracle_matches_textbook_loop():
    cube = correlated_cube()
    np.testing.assert_allclose(rx_reference(cube), direct_rx(cube), rtol=1e-8)


def test_rx_of_background_mean_is_zero():
    cube = correlated_cube()
    stats = calc_stats(cube)
    at_mean = np.broadcast_to(stats.mean, (1, 1, stats.nbands))
    assert rx_reference(at_mean, stats)[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert rx(at_mean.astype(np.float32), stats)[0, 0] == pytest.approx(0.0, abs=1e-3)


def test_whitened_background_has_identity_covariance():
    cube = correlated_cube(condition=1e8)
    stats = calc_stats(cube)
    pixels = cube.reshape(-1, cube.shape[-1]) - stats.mean
    whitened = pixels @ stats.whitener.T
    np.testing.assert_allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(cube.shape[-1]), atol=1e-6)


def test_mean_rx_equals_band_count():
    # sum_i (x_i - mu)^T S^-1 (x_i - mu) = N * trace(S^-1 S) = N * B exactly.
    cube = correlated_cube()
    assert rx_reference(cube).mean() == pytest.approx(cube.shape[-1], rel=1e-9)


@pytest.mark.parametrize("condition", sorted(FAST_PATH_RTOL))
def test_fast_path_against_oracle(condition):
    for dtype in (np.float32, np.float64):
        cube = correlated_cube(condition=condition, rows=40, cols=30, bands=24, dtype=dtype)
        reference = rx_reference(cube)
        fast = rx(cube)
        assert fast.dtype == np.float32
        assert np.max(np.abs(fast - reference)) / np.max(reference) < FAST_PATH_RTOL[condition]


def test_class_and_function_agree_and_accept_given_stats():
    cube = correlated_cube()
    stats = calc_stats(cube[:10])
    np.testing.assert_array_equal(RX(stats)(cube), rx(cube, stats))
    np.testing.assert_allclose(rx(cube, stats), rx_reference(cube, stats), rtol=FAST_PATH_RTOL_DEFAULT)


def test_mask_excludes_pixels_from_statistics_and_scores_them_nan():
    cube = correlated_cube()
    mask = np.ones(cube.shape[:2], dtype=bool)
    mask[3, 4] = False
    cube[3, 4] = np.nan
    expected_stats = calc_stats(cube[mask][None])
    for implementation in (rx_reference, rx):
        scores = implementation(cube, mask=mask)
        assert np.isnan(scores[3, 4])
        np.testing.assert_allclose(scores[mask], rx_reference(cube, expected_stats)[mask], rtol=1e-4)


def test_singular_covariance_uses_pseudo_inverse():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 5))
    pixels = np.concatenate([base, base[:, :2]], axis=1)  # 2 duplicated bands -> rank 5 of 7
    stats = calc_stats(pixels)
    assert stats.is_singular
    expected = np.einsum("ij,jk,ik->i", pixels - stats.mean, np.linalg.pinv(stats.cov), pixels - stats.mean)
    np.testing.assert_allclose(rx_reference(pixels[None], stats)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(rx(pixels[None], stats)[0], expected, rtol=1e-4, atol=1e-4)
    # Same as RX on the 5 independent bands: the duplicates carry no information.
    np.testing.assert_allclose(expected, rx_reference(base[None])[0], rtol=1e-6)


@pytest.mark.parametrize("seed", [19, 45, 3, 7])
def test_a_covariance_singular_in_exact_arithmetic_is_singular_though_cholesky_passes(seed: int) -> None:
    """A band that is an exact weighted mean of eight others, offset 1e4: the covariance is singular
    but a Cholesky factorisation may pass on rounding (eigenvalues near +-1e-13 against 1e3), and
    its inverse scored up to 8x off the pseudo-inverse (seed 19), or raised (seed 45) - a review.
    Singular is decided on the eigenvalues now: both RX implementations equal an independent
    float64 pseudo-inverse RX."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 30, 12)) * rng.uniform(1, 100) + rng.uniform(0, 1e4)
    weights = rng.uniform(0, 1, size=8)
    x[..., 11] = x[..., :8] @ (weights / weights.sum())
    pixels = x.reshape(-1, 12)
    centred = pixels - pixels.mean(axis=0)
    cov = centred.T @ centred / len(pixels)
    values, vectors = np.linalg.eigh(cov)
    kept = values > 1e-10 * values.max()
    oracle = np.einsum(
        "ij,jk,ik->i", centred, (vectors[:, kept] / values[kept]) @ vectors[:, kept].T, centred
    )
    assert calc_stats(x).is_singular
    np.testing.assert_allclose(rx_reference(x).ravel(), oracle, rtol=1e-6)
    np.testing.assert_allclose(rx(x).ravel(), oracle, rtol=1e-4, atol=1e-4 * oracle.max())


def test_regularization_loads_the_diagonal_relative_to_trace():
    stats = GaussianStats(mean=np.zeros(2), cov=np.diag([4.0, 0.0]), nsamples=10, regularization=0.5)
    np.testing.assert_allclose(stats.regularized_cov, np.diag([5.0, 1.0]))
    assert not stats.is_singular


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="mask shape"):
        rx(np.zeros((3, 3, 2)), mask=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="at least 2 pixels"):
        calc_stats(np.zeros((1, 1, 3)))


def test_a_score_beyond_float32_is_its_largest_value_not_inf():
    """A corrupt 1e20 pixel scored against clean statistics: the oracle gives ~1e41, which float32
    cannot hold; the fast path ranks it first with float32's maximum, so the map's metrics (which
    normalise by min and max) stay defined."""
    from edge_had.eval.metrics import evaluate_map

    rng = np.random.default_rng(3)
    cube = rng.standard_normal((20, 20, 6)).astype(np.float32)
    background = calc_stats(cube)
    cube[4, 5] = 1e20
    scores = RX(background)(cube)
    assert np.isfinite(scores).all() and scores[4, 5] == np.finfo(np.float32).max
    assert rx_reference(cube, background)[4, 5] > 1e39
    gt = np.zeros((20, 20), bool)
    gt[4, 5] = gt[10, 10] = True
    assert evaluate_map(scores, gt)["auc"] > 0.5


def numpy_rx(cube: np.ndarray, regularization: float = 0.0) -> np.ndarray:
    """Textbook float64 RX with diagonal loading eps * trace(cov) / B (cov divides by N)."""
    x = cube.reshape(-1, cube.shape[-1]).astype(np.float64)
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / len(x)
    cov += regularization * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return np.einsum("ij,jk,ik->i", xc, np.linalg.inv(cov), xc).reshape(cube.shape[:-1])


def test_rx_regularization_reaches_the_statistics_in_every_entry_point():
    """`--regularization` goes through rx / rx_reference (detectors/registry.py); each must load
    the diagonal of the cube's own covariance."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 16, 1))
    cube = np.concatenate([base, base + 1e-3 * rng.normal(size=base.shape), rng.normal(size=base.shape)], -1)
    eps = 0.1
    expected = numpy_rx(cube, eps)
    assert not np.allclose(expected, numpy_rx(cube), rtol=0.1)  # loading matters on this cube
    np.testing.assert_allclose(rx_reference(cube, regularization=eps), expected, rtol=1e-9)
    np.testing.assert_allclose(rx(cube, regularization=eps), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(RX(regularization=eps)(cube), expected, rtol=1e-4, atol=1e-5)


def test_statistics_and_scores_in_blocks_match_the_textbook(monkeypatch):
    """A cube spanning many blocks (and a mask that empties some of them) gives the textbook mean,
    covariance and scores: the blocks change the summation order, nothing else."""
    from edge_had.detectors import stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK_BYTES", 8 * 12 * 7)  # 7 pixels a block
    cube = correlated_cube(rows=20, cols=15, bands=12)
    mask = np.ones(cube.shape[:2], bool)
    mask[:3] = False  # the first 45 pixels, several whole blocks
    mask[10, ::2] = False
    assert len(stats_module.pixel_blocks(300, 12)) == 43
    selected = cube[mask]
    stats = calc_stats(cube, mask)
    np.testing.assert_allclose(stats.mean, selected.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(selected, rowvar=False, bias=True), rtol=1e-9)
    assert stats.nsamples == mask.sum()
    expected = np.where(mask, direct_rx_against(cube, selected), np.nan)
    np.testing.assert_allclose(rx_reference(cube, mask=mask), expected, rtol=1e-8)
    np.testing.assert_allclose(rx(cube, mask=mask), expected, rtol=FAST_PATH_RTOL[1e6])


def direct_rx_against(cube, background_pixels):
    """Textbook RX of every pixel of ``cube`` against the statistics of ``background_pixels``."""
    mean = background_pixels.mean(axis=0)
    cov = np.cov(background_pixels, rowvar=False, bias=True)
    pixels = cube.reshape(-1, cube.shape[-1])
    out = np.array([(p - mean) @ np.linalg.solve(cov, p - mean) for p in pixels])
    return out.reshape(cube.shape[:2])


@pytest.mark.parametrize("implementation", [rx_reference, rx])
def test_global_rx_makes_no_float64_copy_of_the_whole_cube(monkeypatch, implementation):
    """Memory beyond the cube and its score map stays at a few blocks (tracemalloc counts numpy's
    allocations; deterministic, not timed): a whole float64 copy of a large cube (0.94 GB for
    512 x 1024 x 224) made `detect` peak at 12x an int16 file."""
    import tracemalloc

    from edge_had.detectors import stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK_BYTES", 1 << 20)
    cube = correlated_cube(rows=256, cols=128, bands=32, dtype=np.float32)  # 4 MB; 8 MB in float64
    mask = np.ones(cube.shape[:2], bool)
    mask[5, 5] = False
    tracemalloc.start()
    try:
        implementation(cube, mask=mask)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    score_map = cube.shape[0] * cube.shape[1] * 8
    assert peak < score_map + 6 * (1 << 20), f"peak {peak / 2**20:.1f} MiB"


def test_masked_corrupt_pixels_never_reach_the_float32_product():
    """A masked pixel's values (NaN, Inf, 1e39: past float32's range) are zeroed before the float32
    cast and product: no overflow warning, and every other pixel scores as textbook RX against the
    valid pixels (a masked 1e39 cast to float32 overflowed to Inf with a RuntimeWarning)."""
    import warnings

    cube = correlated_cube()
    mask = np.ones(cube.shape[:2], bool)
    for (row, col), value in zip([(1, 2), (5, 6), (9, 9)], [np.nan, np.inf, 1e39], strict=True):
        cube[row, col] = value
        mask[row, col] = False
    expected = direct_rx_against(np.where(mask[..., None], cube, 0.0), cube[mask])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        scores = rx(cube, mask=mask)
    assert np.isnan(scores[~mask]).all()
    np.testing.assert_allclose(scores[mask], expected[mask], rtol=FAST_PATH_RTOL[1e6])
