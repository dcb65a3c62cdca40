"""Metrics against independent references: brute-force pair counts, numerical integrals, hand cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_had.eval import auc_dtau, auc_ftau, evaluate_map, minmax, pd_at_far, roc_auc, roc_curve

SEEDS = range(8)


def brute_auc(scores: np.ndarray, gt: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) over all pairs, by broadcasting."""
    pos = scores[gt].astype(np.float64)[:, None]
    neg = scores[~gt].astype(np.float64)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def tied_case(seed: int, shape: tuple[int, ...] = (17, 23)) -> tuple[np.ndarray, np.ndarray]:
    """Integer scores in 0..5 (many ties) and a gt with at least one pixel of each class."""
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) < 0.2
    gt.flat[0], gt.flat[1] = True, False
    scores = rng.integers(0, 6, size=shape) + gt * rng.integers(0, 2, size=shape)
    return scores, gt


def integrate_rate(scores: np.ndarray, cls: np.ndarray, n: int = 100_001) -> float:
    """Trapezoid integral of P(s_norm >= tau | class) over a fine tau grid in [0, 1]."""
    norm = (scores - scores.min()) / (scores.max() - scores.min())
    values = np.sort(norm[cls])
    taus = np.linspace(0.0, 1.0, n)
    rate = 1.0 - np.searchsorted(values, taus, side="left") / values.size
    return float(np.sum((rate[1:] + rate[:-1]) / 2.0 * np.diff(taus)))


# ---------------------------------------------------------------- roc_auc


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_matches_pair_count_with_ties(seed: int) -> None:
    scores, gt = tied_case(seed)
    assert roc_auc(scores, gt) == pytest.approx(brute_auc(scores, gt), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=60).filter(
        lambda pairs: len({label for _, label in pairs}) == 2
    )
)
def test_roc_auc_matches_pair_count_hypothesis(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([s for s, _ in pairs], dtype=np.float32)
    gt = np.array([label for _, label in pairs])
    assert roc_auc(scores, gt) == pytest.approx(brute_auc(scores, gt), abs=1e-12)


def test_roc_auc_perfect_reversed_and_constant() -> None:
    gt = np.array([[False, False, True], [False, True, False]])
    scores = gt.astype(float) + 0.1 * np.arange(6).reshape(2, 3)
    assert roc_auc(scores, gt) == 1.0
    assert roc_auc(-scores, gt) == 0.0
    assert roc_auc(np.ones(gt.shape), gt) == 0.5


def test_roc_auc_valid_mask_equals_subset() -> None:
    scores, gt = tied_case(3, shape=(20, 20))
    valid = np.random.default_rng(4).random(gt.shape) < 0.7
    valid[0, 0] = valid[0, 1] = True
    scores_with_junk = np.where(valid, scores, np.nan)  # NaN outside the mask must be ignored
    expected = brute_auc(scores[valid], gt[valid])
    assert roc_auc(scores_with_junk, gt, valid) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(scores[valid], gt[valid]) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_accepts_any_shape() -> None:
    scores, gt = tied_case(5, shape=(4, 5, 6))
    assert roc_auc(scores, gt) == pytest.approx(brute_auc(scores.ravel(), gt.ravel()), abs=1e-12)


# ---------------------------------------------------------------- auc_dtau / auc_ftau


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_auc_tau_match_numerical_integral(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = rng.random((30, 30)) < 0.1
    gt[0, 0], gt[0, 1] = True, False
    scores = rng.gamma(2.0, size=gt.shape) + 3.0 * gt
    assert auc_dtau(scores, gt) == pytest.approx(integrate_rate(scores, gt), abs=1e-3)
    assert auc_ftau(scores, gt) == pytest.approx(integrate_rate(scores, ~gt), abs=1e-3)


def test_auc_tau_normalise_over_counted_pixels_only() -> None:
    scores = np.array([0.0, 1.0, 2.0, 100.0])
    gt = np.array([False, False, True, False])
    valid = np.array([True, True, True, False])
    assert auc_dtau(scores, gt, valid) == pytest.approx(1.0)
    assert auc_ftau(scores, gt, valid) == pytest.approx(0.25)


def test_auc_tau_constant_map_is_zero() -> None:
    gt = np.array([True, False, False])
    assert auc_dtau(np.full(3, 7.0), gt) == 0.0
    assert auc_ftau(np.full(3, 7.0), gt) == 0.0


def test_minmax() -> None:
    out = minmax(np.array([[2, 4], [6, 10]], dtype=np.int16))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(minmax(np.full((2, 2), 3.0)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        minmax(np.array([0.0, np.nan]))


# ---------------------------------------------------------------- pd_at_far


def test_pd_at_far_hand_case() -> None:
    bg = np.arange(10, dtype=float)  # 0..9
    pos = np.array([9.5, 8.5, 7.5, 1.0])
    scores, gt = np.r_[bg, pos], np.r_[np.zeros(10, bool), np.ones(4, bool)]
    # far 0.1 -> 1 false alarm allowed -> threshold = 2nd largest bg = 8 -> 9.5, 8.5 detected
    assert pd_at_far(scores, gt, 0.1) == 0.5
    # far 0.05 -> 0 allowed -> threshold = 9 -> only 9.5
    assert pd_at_far(scores, gt, 0.05) == 0.25
    # far 0.29 -> floor(2.9) = 2 allowed -> threshold = 7
    assert pd_at_far(scores, gt, 0.29) == 0.75
    # far 1 -> every background pixel may alarm -> everything is detected
    assert pd_at_far(scores, gt, 1.0) == 1.0


def test_pd_at_far_decimal_floor() -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point; 29 false alarms must be allowed.
    bg = np.arange(100, dtype=float)
    scores, gt = np.r_[bg, 70.5], np.r_[np.zeros(100, bool), True]
    assert pd_at_far(scores, gt, 0.29) == 1.0  # threshold = 30th largest = 70
    assert pd_at_far(scores, gt, 0.28) == 0.0  # threshold = 29th largest = 71


def test_pd_at_far_ties_at_threshold_are_misses() -> None:
    scores = np.array([1.0, 2.0, 3.0, 3.0, 3.0, 3.0])
    gt = np.array([False, False, False, True, True, False])
    # 4 bg scores, far 0.25 -> 1 allowed -> threshold = 2nd largest bg = 3 -> anomalies at 3 missed
    assert pd_at_far(scores, gt, 0.25) == 0.0
    assert pd_at_far(scores, gt, 0.5) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_pd_at_far_never_exceeds_far(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, gt = tied_case(seed, shape=(40, 50))
    scores = scores + rng.normal(scale=0.3, size=scores.shape) * (seed % 2)  # half tied, half not
    bg = scores[~gt]
    for far in (0.0, 1e-3, 0.01, 0.05, 0.1, 0.33, 0.5, 0.9):
        pd = pd_at_far(scores, gt, far)
        allowed = int(np.floor(far * bg.size + 1e-9))
        threshold = np.sort(bg)[::-1][min(allowed, bg.size - 1)]
        assert np.mean(bg > threshold) <= far
        if allowed < bg.size:
            assert pd == np.mean(scores[gt] > threshold)
        assert 0.0 <= pd <= 1.0


def test_pd_at_far_rejects_bad_far() -> None:
    scores, gt = tied_case(0)
    for far in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="far"):
            pd_at_far(scores, gt, far)


# ---------------------------------------------------------------- roc_curve


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_curve_area_equals_auc(seed: int) -> None:
    scores, gt = tied_case(seed)
    fpr, tpr, thresholds = roc_curve(scores, gt)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    assert area == pytest.approx(roc_auc(scores, gt), abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) < 0) and thresholds[0] == np.inf
    assert thresholds.size == np.unique(scores).size + 1


def test_roc_curve_points_are_rates_at_thresholds() -> None:
    scores, gt = tied_case(11, shape=(9, 9))
    fpr, tpr, thresholds = roc_curve(scores, gt)
    for f, t, th in zip(fpr, tpr, thresholds, strict=True):
        assert f == np.mean(scores[~gt] >= th) and t == np.mean(scores[gt] >= th)


# ---------------------------------------------------------------- evaluate_map


def test_evaluate_map_keys_and_json() -> None:
    scores, gt = tied_case(2, shape=(50, 60))
    valid = np.ones(gt.shape, bool)
    valid[-1] = False
    result = evaluate_map(scores, gt, valid)
    assert set(result) == {"auc", "auc_dtau", "auc_ftau", "pd_at_far"}
    assert result["pd_at_far"] == {
        "0.001": pd_at_far(scores, gt, 1e-3, valid),
        "0.0001": pd_at_far(scores, gt, 1e-4, valid),
    }
    assert result["auc"] == roc_auc(scores, gt, valid)
    assert result["auc_dtau"] == auc_dtau(scores, gt, valid)
    assert result["auc_ftau"] == auc_ftau(scores, gt, valid)
    assert json.loads(json.dumps(result)) == result
    assert all(type(v) is float for v in (result["auc"], result["auc_dtau"], result["auc_ftau"]))


# ---------------------------------------------------------------- errors


def pd_at_1pct(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    return pd_at_far(scores, gt, 0.01, valid)


METRICS = [roc_auc, auc_dtau, auc_ftau, roc_curve, evaluate_map, pd_at_1pct]


@pytest.mark.parametrize("metric", METRICS)
def test_errors(metric) -> None:  # type: ignore[no-untyped-def]
    scores, gt = tied_case(1, shape=(6, 7))
    with pytest.raises(ValueError, match="shape"):
        metric(scores, gt.T)
    with pytest.raises(ValueError, match="shape"):
        metric(scores, gt, np.ones((7, 6), bool))
    with pytest.raises(ValueError, match="no anomaly"):
        metric(scores, np.zeros_like(gt))
    with pytest.raises(ValueError, match="no anomaly"):
        metric(scores, gt, ~gt)
    with pytest.raises(ValueError, match="no background"):
        metric(scores, np.ones_like(gt))
    nan_scores = scores.astype(float)
    nan_scores[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metric(nan_scores, gt)
