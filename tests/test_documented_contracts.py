"""Documented behaviour of causal RX, streaming and dual-window local RX, the cross-validation
bookkeeping, the MAC count and three losses that no other test could fail on (found by mutating
the code). Each test checks against an independent reference: float64 numpy written here, a
hand-computed value or a closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_had.detectors.lrx import LocalRXSettings, local_rx, mahalanobis_from_pairs, symmetric_pairs
from edge_had.eval.crossval import (
    ALPHA_SPA_GRID,
    ALPHA_SPE_GRID,
    fold_assignment,
    pooled_shortfall_removed,
    select_alphas,
    select_hybrid_alpha,
    summarize,
)
from edge_had.models import build_model
from edge_had.models.budget import _count, count_macs_per_pixel
from edge_had.stream.causal import CausalRX, CausalSettings
from edge_had.stream.causal_local import CausalHybridRX
from edge_had.train.losses import cosine_distance, decorrelation_loss, log_global_rx

# ------------------------------------------------------------------------------- causal RX


def weighted_rx(
    pixels: np.ndarray, weights: np.ndarray, line: np.ndarray, regularization: float
) -> np.ndarray:
    """Float64 RX of ``line`` against weighted pixels: weighted mean and covariance (divided by
    the total weight), loaded with ``regularization * trace / K``."""
    w = weights / weights.sum()
    mean = w @ pixels
    centred = pixels - mean
    cov = (centred * w[:, None]).T @ centred
    cov += regularization * np.trace(cov) / len(cov) * np.eye(len(cov))
    d = line - mean
    return np.einsum("ij,ij->i", d @ np.linalg.inv(cov), d)


def test_exponential_statistics_weight_each_line_by_the_momentum() -> None:
    """Exponential statistics: line 0 weighs (1-m)^t, line j >= 1 m (1-m)^(t-j), in mean and covariance."""
    rng = np.random.default_rng(5)
    lines = 10.0 + rng.standard_normal((16, 30, 4)) @ rng.standard_normal((4, 4))
    m = 0.3
    rx = CausalRX(4, CausalSettings(statistics="exponential", momentum=m, warmup_lines=5))
    scored = {}
    for line in lines:
        scored.update((position, scores) for position, scores, _ in rx.push(line))

    def want(t: int, scored_line: int) -> np.ndarray:
        per_line = np.array([(1 - m) ** t] + [m * (1 - m) ** (t - j) for j in range(1, t + 1)])
        pixels = lines[: t + 1].reshape(-1, 4)
        return weighted_rx(pixels, np.repeat(per_line, 30), lines[scored_line], 1e-6)

    np.testing.assert_allclose(scored[0], want(4, 0), rtol=1e-7)  # a warm-up line, scored late
    for t in (7, 15):
        np.testing.assert_allclose(scored[t], want(t, t), rtol=1e-7)


@pytest.mark.parametrize(("back", "undone"), [(79, 1), (80, 0)])
def test_a_restart_is_on_probation_for_exactly_four_warm_ups(back: int, undone: int) -> None:
    """A restart at line 39 (10-line warm-up) can be undone by line 79, the 40th after it, not by line 80."""
    rng = np.random.default_rng(8)
    lines = 100.0 + rng.standard_normal((back + 5, 40, 4))
    lines[30:back] += 1e4  # a new background from line 30 on: restart once 10 of its lines are in
    rx = CausalRX(4)
    for line in lines:
        rx.push(line)
    assert (rx.restarts, rx.restarts_undone) == (1, undone)


def test_momentum_above_one_is_refused() -> None:
    """CausalSettings' momentum must lie in (0, 1]: 1 is accepted, 1.5 refused."""
    assert CausalSettings(momentum=1.0).momentum == 1.0
    with pytest.raises(ValueError, match="momentum"):
        CausalSettings(momentum=1.5)


# ------------------------------------------------------------------------------- streaming local RX


def test_a_new_basis_scores_from_the_line_whose_window_arrived_after_it(monkeypatch) -> None:
    """A basis computed when line p arrives (statistics of lines 0..p) first scores line p + outer // 2."""
    rng = np.random.default_rng(1)
    cube = 50.0 + rng.standard_normal((30, 20, 6)) @ rng.standard_normal((6, 6))
    scorer = CausalHybridRX(
        6, CausalSettings(warmup_lines=4), LocalRXSettings(3, 7, n_components=3), basis_every=3
    )
    means = {}
    original = CausalHybridRX._local_scores

    def spy(self, position):  # noqa: ANN001, ANN202
        scores = original(self, position)
        means[position] = self._basis.mean
        return scores

    monkeypatch.setattr(CausalHybridRX, "_local_scores", spy)
    for line in cube:
        scorer.push(line)
    scorer.flush()
    changes = [row for row in range(1, len(cube)) if means[row] is not means[row - 1]]
    assert len(changes) >= 2
    for row in changes:  # pushed at p = row - 3: the mean of lines 0..p
        np.testing.assert_allclose(means[row], cube[: row - 2].reshape(-1, 6).mean(axis=0), rtol=1e-12)


def test_basis_every_below_one_is_refused() -> None:
    """CausalHybridRX(basis_every=0) is a ValueError."""
    with pytest.raises(ValueError, match="basis_every"):
        CausalHybridRX(6, basis_every=0)


# ------------------------------------------------------------------------------- dual-window local RX


@pytest.mark.parametrize(("kept", "local"), [(2, False), (3, True)])
def test_a_window_needs_dims_plus_one_pixels_for_local_statistics(kept: int, local: bool) -> None:
    """With 2 bands, a background of 2 valid pixels falls back to the global statistics; 3 use their own."""
    rng = np.random.default_rng(11)
    cube = rng.standard_normal((7, 7, 2)) * [1.0, 3.0] + [5.0, -2.0]
    valid = np.ones((7, 7), dtype=bool)
    neighbours = [(r, c) for r in (2, 3, 4) for c in (2, 3, 4) if (r, c) != (3, 3)]
    for r, c in neighbours[kept:]:
        valid[r, c] = False
    settings = LocalRXSettings(inner=1, outer=3, n_components=None, regularization=1e-3)
    got = local_rx(cube, valid, settings)[3, 3]
    everything = cube[valid]
    global_cov = np.cov(everything.T, bias=True)
    background = np.array([cube[r, c] for r, c in neighbours[:kept]]) if local else everything
    mean = background.mean(axis=0)
    cov = np.cov(background.T, bias=True) + 1e-3 * np.trace(global_cov) / 2 * np.eye(2)
    d = cube[3, 3] - mean
    assert got == pytest.approx(d @ np.linalg.solve(cov, d), rel=1e-9)


def test_a_rank_deficient_window_scores_with_the_pseudo_inverse() -> None:
    """A singular window covariance (eigenvalues 4, 2, 1, 0) scores d^T C^+ d, not 1 / a rounding pivot."""
    rng = np.random.default_rng(3)
    n, dims = 200, 4
    q = np.linalg.qr(rng.standard_normal((n, dims, dims)))[0]
    cov = (q * np.array([4.0, 2.0, 1.0, 0.0])) @ q.transpose(0, 2, 1)
    d = rng.standard_normal((n, dims))
    i, j = symmetric_pairs(dims)
    got = mahalanobis_from_pairs(cov[:, i, j].T, d.T)
    want = np.einsum("nki,nk->ni", q[:, :, :3], d) ** 2 @ np.array([1 / 4, 1 / 2, 1.0])
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_a_non_finite_covariance_entry_scores_nan() -> None:
    """mahalanobis_from_pairs: NaN where an entry of C is infinite (documented), not 0 or a number."""
    d = np.array([[1.0], [1.0]])
    for pairs in ([[np.inf], [0.0], [1.0]], [[1.0], [0.0], [-np.inf]], [[1.0], [np.inf], [1.0]]):
        assert np.isnan(mahalanobis_from_pairs(np.array(pairs), d)).all()
    assert np.isnan(
        mahalanobis_from_pairs(np.array([[np.inf], [0.0], [1.0]]), np.array([[1.0], [0.0]]))
    ).all()


def test_local_rx_defaults_are_the_documented_ones() -> None:
    """LocalRXSettings() is the documented 5 / 15 window, 10 components, 1e-3 loading."""
    settings = LocalRXSettings()
    assert (settings.inner, settings.outer, settings.n_components, settings.regularization) == (
        5,
        15,
        10,
        1e-3,
    )


# ------------------------------------------------------------------------------- cross-validation


def test_folds_are_dealt_from_the_sorted_names() -> None:
    """fold_assignment sorts the names first: the same folds whatever order they come in."""
    names = [f"s{i}" for i in range(7)]
    shuffled = ["s3", "s0", "s6", "s1", "s5", "s2", "s4"]
    assert (
        fold_assignment(shuffled, 3)
        == fold_assignment(names, 3)
        == [["s0", "s3", "s6"], ["s1", "s4"], ["s2", "s5"]]
    )


def test_one_fold_is_refused() -> None:
    """fold_assignment needs at least 2 folds (one fold would leave nothing to train on)."""
    with pytest.raises(ValueError):
        fold_assignment(["a", "b", "c"], 1)


def test_pooled_shortfall_pools_before_dividing() -> None:
    """Shortfall removed is 1 - sum(1 - AUC) / sum(1 - AUC_base), not a mean of per-scene ratios."""
    # shortfalls 0.10 + 0.03 against 0.20 + 0.02: 1 - 0.13 / 0.22 (per scene: 50 % and -50 %)
    assert pooled_shortfall_removed([0.90, 0.97], [0.80, 0.98]) == pytest.approx(1 - 0.13 / 0.22)


class _Cache:
    def auc(self, name: str, scores: float) -> float:
        return scores


class _Scene:
    """A scene whose 'score map' of (scorer, alpha_spe, alpha_spa) is its AUC."""

    def __init__(self, auc) -> None:  # noqa: ANN001
        self._auc = auc

    def score(self, scorer_name: str, alpha_spe: float, alpha_spa: float) -> float:
        return self._auc(scorer_name, alpha_spe, alpha_spa)


def test_alpha_selection_ties_go_to_the_first_grid_point() -> None:
    """select_alphas: equal mean AUC everywhere -> the smallest alphas (first in grid order)."""
    parts = {"a": _Scene(lambda *_: 0.9), "b": _Scene(lambda *_: 0.8)}
    assert select_alphas(_Cache(), parts) == (ALPHA_SPE_GRID[0], ALPHA_SPA_GRID[0])


def test_alpha_selection_maximises_the_mean_auc() -> None:
    """select_alphas picks the best mean over the training scenes, not the best worst scene."""
    first = {0.1: 0.99}
    second = {0.1: 0.80, 1.0: 0.86}
    parts = {
        "a": _Scene(lambda s, a, b: first.get(a, 0.90)),
        "b": _Scene(lambda s, a, b: second.get(a, 0.85)),
    }  # means: 0.895 at 0.1, 0.88 at 1, 0.875 elsewhere; worst scene best at 1
    assert select_alphas(_Cache(), parts, alpha_spa_grid=(0.0,)) == (0.1, 0.0)


def test_hybrid_alpha_is_chosen_with_hybrid_rx_and_no_spatial_branch() -> None:
    """select_hybrid_alpha reads hybrid-RX AUCs at alpha_spa = 0 only."""

    def auc(scorer_name: str, alpha_spe: float, alpha_spa: float) -> float:
        if scorer_name == "global":
            return 0.999 if alpha_spe == 0.3 else 0.5  # the global-RX optimum: not this choice
        if alpha_spa != 0.0:
            return 0.999 if alpha_spe == 10.0 else 0.5  # with the spatial branch: left out
        return 0.95 if alpha_spe == 3.0 else 0.9

    assert select_hybrid_alpha(_Cache(), {"a": _Scene(auc), "b": _Scene(auc)}) == 3.0


def test_summary_leaves_out_a_row_some_scene_lacks() -> None:
    """summarize skips a row missing for a scene (all its fold's trainings diverged) instead of failing."""
    per_scene = {
        "a": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.95], "partial": [0.99]},
        "b": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.93]},
    }
    summary = summarize(per_scene)
    assert "partial" not in summary and summary["m"]["mean_auc"] == pytest.approx(0.94)


# ------------------------------------------------------------------------------- MAC counting


def test_a_convolution_counts_its_products_and_its_bias_adds() -> None:
    """1x1 conv 3 -> 5 channels: 15 multiply-adds a pixel (FLOPs / 2), 5 bias adds; none without bias."""
    torch.manual_seed(0)
    x = torch.zeros(1, 3, 4, 6)
    with_bias = _count(nn.Conv2d(3, 5, 1), (x,), 24)
    assert with_bias["flop_counter"] == pytest.approx(15.0)
    assert with_bias["hand"] == {"conv_bias": pytest.approx(5.0)} and with_bias["total"] == pytest.approx(
        20.0
    )
    without = _count(nn.Conv2d(3, 5, 1, bias=False), (x,), 24)
    assert without["hand"] == {} and without["total"] == pytest.approx(15.0)


def test_bilinear_upsampling_counts_four_per_output_and_sigmoid_as_nonlinear() -> None:
    """Bilinear 2 x 4 x 6 -> 2 x 8 x 12: 4 x 192 multiply-adds; a sigmoid over it: 192 nonlinear ops."""

    def upsample_then_sigmoid(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False))

    counted = _count(upsample_then_sigmoid, (torch.zeros(1, 2, 4, 6),), 24)
    assert counted["hand"] == {"upsample_bilinear2d": pytest.approx(4 * 192 / 24)}
    assert counted["nonlinear_ops"] == pytest.approx(192 / 24)


def test_the_budget_verdict_and_the_layer_cached_figure() -> None:
    """within_budget judges the total, not the FlopCounter part; layer-cached spectral = spectral x 16/22."""
    torch.manual_seed(0)
    model = build_model(20, k=8, hidden=8, blocks=1).eval()
    report = count_macs_per_pixel(model, width=32)
    between = (report["flop_counter_macs_per_pixel"] + report["total_macs_per_pixel"]) / 2
    assert count_macs_per_pixel(model, width=32, budget=between)["within_budget"] is False
    window = report["assumptions"]["window_lines"]
    assert report["spectral_layer_cached"] == pytest.approx(report["spectral"]["total"] * 16 / window)


def test_elementwise_ops_count_one_per_output_and_a_budget_met_exactly_is_within() -> None:
    """add, sub, mul, div: 1 multiply-add equivalent per output element each (module docstring);
    within_budget is total <= budget."""

    def arithmetic(x: torch.Tensor) -> torch.Tensor:
        return (x / 2.0 + x) * x - x

    counted = _count(arithmetic, (torch.ones(1, 2, 4, 6),), 24)
    assert counted["hand"] == {name: pytest.approx(2.0) for name in ("add", "div", "mul", "sub")}
    assert counted["total"] == pytest.approx(8.0)
    torch.manual_seed(0)
    model = build_model(20, k=8, hidden=8, blocks=1).eval()
    total = count_macs_per_pixel(model, width=32)["total_macs_per_pixel"]
    assert count_macs_per_pixel(model, width=32, budget=total)["within_budget"] is True


def test_mac_count_arguments_are_checked() -> None:
    """count_macs_per_pixel refuses a band count the adapter does not take and zero lines per call."""
    model = build_model(20, k=8, hidden=8, blocks=1).eval()
    with pytest.raises(ValueError, match="bands"):
        count_macs_per_pixel(model, 21, width=8)
    with pytest.raises(ValueError, match=">= 1"):
        count_macs_per_pixel(model, width=8, lines_per_call=0)
    radius = model.spectral.receptive_radius
    assert radius >= 1
    with pytest.raises(ValueError, match="below the spectral receptive radius"):
        count_macs_per_pixel(model, width=8, context_lines=radius - 1)
    assert (
        count_macs_per_pixel(model, width=8, context_lines=radius)["assumptions"]["context_lines"] == radius
    )


# ------------------------------------------------------------------------------- losses


def test_cosine_of_small_feature_vectors_is_not_floored() -> None:
    """cosine_distance of parallel vectors of norm 1e-3 is 0: only the norms' product is floored, at eps."""
    a = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    a[0, :, 0, 0] = torch.tensor([6e-4, 0.0, 8e-4])
    a[0, :, 0, 1] = torch.tensor([0.0, 1e-3, 0.0])
    assert float(cosine_distance(a, 2 * a)) == pytest.approx(0.0, abs=1e-12)


def test_decorrelation_refuses_branches_of_other_batch_and_height() -> None:
    """decorrelation_loss: (2, C, 4, 4) against (1, C, 8, 4) is a ValueError (equally many samples)."""
    with pytest.raises(ValueError, match="differ"):
        decorrelation_loss(torch.rand(2, 3, 4, 4), torch.rand(1, 3, 8, 4))


def test_log_global_rx_factorises_a_cube_with_a_constant_band() -> None:
    """The ridge lets a cube with a dead band factorise: log RX equals the other bands' (numpy)."""
    rng = np.random.default_rng(2)
    varying = rng.standard_normal((2, 6, 5))
    z = torch.tensor(np.concatenate([varying, np.zeros((1, 6, 5))]))
    valid = torch.ones(6, 5, dtype=torch.bool)
    pixels = varying.reshape(2, -1).T
    centred = pixels - pixels.mean(axis=0)
    cov = centred.T @ centred / len(pixels)
    want = np.log(np.einsum("ij,ij->i", centred @ np.linalg.inv(cov), centred) + 1e-12)
    np.testing.assert_allclose(log_global_rx(z, valid).numpy(), want, rtol=1e-6)
