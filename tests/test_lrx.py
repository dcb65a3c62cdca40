"""Dual-window local RX against the slow, direct per-pixel oracle (`local_rx_line_reference`)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_had.detectors import LocalRXSettings, calc_stats, local_rx
from edge_had.detectors.lrx import local_rx_line_reference, principal_components


def slow_local_rx(data, valid, inner, outer, regularization):
    """Per line, the float64 loop oracle over the rows the outer window reaches (clipped at the
    border), the global statistics as fallback; NaN where masked."""
    rows, _, dims = data.shape
    global_stats = calc_stats(data, valid)
    load = regularization * np.trace(global_stats.cov) / dims
    out = np.full(valid.shape, np.nan)
    for r in range(rows):
        top, bottom = max(0, r - outer // 2), min(rows, r + outer // 2 + 1)
        scores = local_rx_line_reference(
            data[top:bottom], valid[top:bottom], r - top, inner_half=inner // 2, outer_half=outer // 2,
            load=load, fallback=(global_stats.mean, global_stats.cov),
        )  # fmt: skip
        out[r] = np.where(valid[r], scores, np.nan)
    return out


@pytest.mark.parametrize(("inner", "outer"), [(1, 5), (3, 7), (3, 9)])
def test_matches_slow_direct_implementation(inner, outer):
    rng = np.random.default_rng(inner * 10 + outer)
    data = rng.standard_normal((11, 13, 4)) + np.linspace(0, 3, 13)[None, :, None]
    valid = np.ones(data.shape[:2], dtype=bool)
    valid[2, 5] = valid[7, 7] = False
    settings = LocalRXSettings(inner=inner, outer=outer, n_components=None, regularization=1e-3)
    fast = local_rx(data, valid, settings)
    slow = slow_local_rx(data, valid, inner, outer, 1e-3)
    np.testing.assert_allclose(fast, slow, rtol=1e-7, equal_nan=True)
    assert np.isnan(fast[2, 5]) and np.isnan(fast[7, 7])


@pytest.mark.parametrize("rows_per_strip", [1, 2, 5])
def test_strips_of_rows_give_the_whole_images_scores(monkeypatch, rows_per_strip):
    """A large scene is scored in strips of rows (each with the rows its windows reach): strips
    thinner than the window, masked pixels near their edges and PCA ahead, against the oracle."""
    from edge_had.detectors import lrx

    rng = np.random.default_rng(7)
    cube = rng.standard_normal((17, 12, 20)) + np.linspace(0, 3, 12)[None, :, None]
    valid = np.ones(cube.shape[:2], dtype=bool)
    valid[4, 3] = valid[5, 3] = valid[10, 11] = False
    settings = LocalRXSettings(inner=3, outer=7, n_components=4, regularization=1e-3)
    whole = local_rx(cube, valid, settings)
    per_row = 8 * 12 * (1 + 4 + 10)
    monkeypatch.setattr(lrx, "STRIP_BYTES", rows_per_strip * per_row)
    assert lrx.strip_rows(4, 12) == rows_per_strip
    stripped = local_rx(cube, valid, settings)
    np.testing.assert_allclose(stripped, whole, rtol=1e-9, equal_nan=True)
    reduced = principal_components(cube, valid, 4)
    np.testing.assert_allclose(stripped, slow_local_rx(reduced, valid, 3, 7, 1e-3), rtol=1e-7, equal_nan=True)


def test_local_rx_holds_no_image_sized_window_sums(monkeypatch):
    """tracemalloc (numpy's allocations; deterministic, not timed): with strips of a few rows the
    peak stays far below one image-sized table of the 55 products (a whole-image local RX made
    several, 2.3 GB peak for `detect --detector hybrid-rx` on a 512 x 1024 x 224 cube)."""
    import tracemalloc

    from edge_had.detectors import lrx

    monkeypatch.setattr(lrx, "STRIP_BYTES", 1 << 18)
    cube = np.random.default_rng(1).standard_normal((1024, 64, 12)).astype(np.float32)
    tracemalloc.start()
    try:
        local_rx(cube, None, LocalRXSettings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_table = 55 * 1024 * 64 * 8  # 29 MB; the whole image at once peaked at 186 MB here
    assert peak < one_table, f"peak {peak / 1e6:.1f} MB"


def test_band_reduction_feeds_the_same_local_detector():
    rng = np.random.default_rng(3)
    cube = rng.standard_normal((9, 10, 30)).astype(np.float32)
    valid = np.ones((9, 10), dtype=bool)
    reduced = principal_components(cube, valid, 5)
    assert reduced.shape == (9, 10, 5)
    settings = LocalRXSettings(inner=3, outer=7, n_components=5, regularization=1e-3)
    expected = slow_local_rx(reduced, valid, 3, 7, 1e-3)
    np.testing.assert_allclose(local_rx(cube, valid, settings), expected, rtol=1e-7)


def test_implanted_local_anomaly_scores_highest():
    rng = np.random.default_rng(4)
    cube = rng.standard_normal((25, 25, 6)) * 0.1
    cube[12, 12] += 2.0
    scores = local_rx(cube, settings=LocalRXSettings(inner=3, outer=9, n_components=None))
    assert np.unravel_index(np.nanargmax(scores), scores.shape) == (12, 12)


def test_invalid_windows_are_rejected():
    with pytest.raises(ValueError, match="odd"):
        LocalRXSettings(inner=4, outer=9)
    with pytest.raises(ValueError, match="outer > inner"):
        LocalRXSettings(inner=9, outer=9)


def test_mahalanobis_from_pairs_matches_a_solve_and_falls_back_to_the_pseudo_inverse():
    """The vectorised elimination against a direct solve per pixel, on a 2-D batch of pixels with
    positive definite matrices, two singular ones (rank 2 of 4, d partly outside their range, so
    plain elimination would not give the pseudo-inverse's value), a zero matrix and two pixels
    with a NaN (in d, in C); neighbours are unaffected."""
    from edge_had.detectors.lrx import mahalanobis_from_pairs, symmetric_pairs

    rng = np.random.default_rng(7)
    dims, rows, cols = 4, 2, 4
    factors = rng.standard_normal((rows, cols, dims, 9))
    factors[0, 1, :, 2:] = factors[1, 2, :, 2:] = 0.0  # two singular pixels
    covs = factors @ np.swapaxes(factors, -1, -2)
    covs[1, 3] = 0.0  # a flat window
    d = rng.standard_normal((rows, cols, dims))
    d[0, 0, 2] = np.nan
    covs[1, 0, 1, 1] = np.nan  # corrupt input: NaN, not an error from the pseudo-inverse
    i, j = symmetric_pairs(dims)
    got = mahalanobis_from_pairs(np.moveaxis(covs[..., i, j], -1, 0), np.moveaxis(d, -1, 0))
    nan = {(0, 0), (1, 0)}
    assert got.shape == (rows, cols) and set(zip(*np.nonzero(np.isnan(got)), strict=True)) == nan
    for r, c in np.ndindex(rows, cols):
        if (r, c) in nan:
            continue
        singular = (r, c) in {(0, 1), (1, 2), (1, 3)}
        inverse = np.linalg.pinv(covs[r, c], hermitian=True) if singular else np.linalg.inv(covs[r, c])
        np.testing.assert_allclose(got[r, c], d[r, c] @ inverse @ d[r, c], rtol=1e-9, atol=1e-12)
    # the two singular pixels differ, and d outside the range matters: the plain value differs
    assert abs(got[0, 1] - got[1, 2]) > 1e-3 and got[1, 3] == 0.0


@pytest.mark.parametrize(("dims", "pixels"), [(3, 100_000), (10, 4000)])
def test_singular_windows_are_found_whatever_the_rounding_of_earlier_pivots(dims: int, pixels: int):
    """Rank dims - 1 windows with d outside their range: the pseudo-inverse's value, not 1e15. A
    small early pivot leaves rounding of ~eps x largest^2 / pivot in the last one, which a test
    against the diagonal entry alone took for a regular pivot (3 x 3: ~1 in 500 pixels; 10 x 10:
    ~1 in 100)."""
    from edge_had.detectors.lrx import mahalanobis_from_pairs, symmetric_pairs

    rng = np.random.default_rng(dims)
    factors = rng.standard_normal((pixels, dims, dims - 1))
    covs = factors @ np.swapaxes(factors, -1, -2)
    d = rng.standard_normal((pixels, dims))
    i, j = symmetric_pairs(dims)
    got = mahalanobis_from_pairs(covs[:, i, j].T, d.T)
    expected = np.einsum("nk,nkj,nj->n", d, np.linalg.pinv(covs, hermitian=True), d)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_window_with_exactly_dims_plus_one_pixels_is_local():
    """Corners of a 3 x 3 window minus the centre hold 3 pixels: 2 dimensions + 1, the fewest
    that still give a local covariance (the slow reference agrees)."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((6, 7, 2)) + np.linspace(0, 2, 7)[None, :, None]
    valid = np.ones(data.shape[:2], dtype=bool)
    settings = LocalRXSettings(inner=1, outer=3, n_components=None, regularization=1e-3)
    np.testing.assert_allclose(
        local_rx(data, valid, settings), slow_local_rx(data, valid, 1, 3, 1e-3), rtol=1e-7
    )


def test_a_window_with_exactly_dims_pixels_takes_the_global_statistics():
    """Corners of a 3 x 3 window minus the centre hold 3 pixels: with 3 dimensions one short of
    a local covariance, so the corners score against the global statistics (the slow reference
    agrees; a local estimate from dims pixels is singular but for its loading)."""
    rng = np.random.default_rng(6)
    data = rng.standard_normal((6, 7, 3)) + np.linspace(0, 2, 7)[None, :, None]
    valid = np.ones(data.shape[:2], dtype=bool)
    settings = LocalRXSettings(inner=1, outer=3, n_components=None, regularization=1e-3)
    scores = local_rx(data, valid, settings)
    np.testing.assert_allclose(scores, slow_local_rx(data, valid, 1, 3, 1e-3), rtol=1e-7)
    stats = calc_stats(data)
    load = 1e-3 * np.trace(stats.cov) / 3
    d = data[0, 0] - stats.mean
    assert scores[0, 0] == pytest.approx(d @ np.linalg.solve(stats.cov + load * np.eye(3), d), rel=1e-9)


def test_raw_bands_with_a_large_mean_keep_their_precision():
    """Without the band projection the window sums of x x^T would cancel against the window
    mean's square (mean 1e6, spread 0.01): the data are centred first, so the scores match the
    loop oracle (before: off by 61x the true score on such a cube)."""
    rng = np.random.default_rng(7)
    data = 1e6 + 0.01 * rng.standard_normal((12, 13, 4))
    valid = np.ones((12, 13), dtype=bool)
    settings = LocalRXSettings(inner=3, outer=7, n_components=None, regularization=1e-3)
    np.testing.assert_allclose(
        local_rx(data, valid, settings), slow_local_rx(data, valid, 3, 7, 1e-3), rtol=1e-6
    )


def test_bad_settings_and_mask_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        LocalRXSettings(n_components=0)
    with pytest.raises(ValueError, match="regularization must be >= 0"):
        LocalRXSettings(regularization=float("nan"))
    with pytest.raises(ValueError, match="mask shape"):
        local_rx(np.ones((5, 6, 3)), np.ones((6, 5), dtype=bool))
