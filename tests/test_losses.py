"""Losses of the two training stages: hand-computed values, numpy references, masks, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import hadamard

from edge_had.train.losses import (
    Stage1Weights,
    Stage2Weights,
    alignment_loss,
    anti_similarity_loss,
    cosine_distance,
    decorrelation_loss,
    masked_mse,
    multiscale_cosine,
    published_alignment_loss,
    reconstruction_loss,
    resize_mask,
    ssim_loss,
    stage1_loss,
    stage2_loss,
    variance_sparsity_loss,
)

LN2 = math.log(2.0)


def cube(pixels: list[list[list[float]]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """H x W x C nested list -> 1 x C x H x W tensor."""
    return torch.tensor(pixels, dtype=dtype).permute(2, 0, 1).unsqueeze(0).contiguous()


def rand(*shape: int, seed: int = 0, positive: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return x.abs() if positive else x


def subset(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The kept pixels of N x C x H x W (keep: N x H x W bool) as a 1 x C x K x 1 tensor."""
    return x.permute(0, 2, 3, 1)[keep].T.reshape(1, x.shape[1], -1, 1)


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- pairwise pixel losses and how each uses a mask: (name, loss(a, b, mask)) ------------------------------
PAIR_LOSSES = {
    "cosine": lambda a, b, m: cosine_distance(a, b, m),
    "mse": lambda a, b, m: masked_mse(a, b, m),
    "alignment": lambda a, b, m: alignment_loss(a, b, m),
    "decorrelation": lambda a, b, m: decorrelation_loss(a, b, m),
    "anti_similarity": lambda a, b, m: anti_similarity_loss(a, b, m),
    "variance": lambda a, b, m: variance_sparsity_loss(a, m),
    "reconstruction_mse_part": lambda a, b, m: reconstruction_loss(a, b, m, ssim_weight=0.0),
}


# ----------------------------------------------------------------------------------------------------
# stage 1


def test_cosine_distance_hand_values() -> None:
    target = cube([[[1, 0], [1, 0]], [[1, 0], [1, 0]]])
    pred = cube([[[1, 0], [0, 1]], [[1, 1], [-1, 0]]])
    # per pixel: 0, 1, 1 - 1/sqrt(2), 2
    expected = (0 + 1 + (1 - 1 / math.sqrt(2)) + 2) / 4
    assert cosine_distance(pred, target).item() == pytest.approx(expected, abs=1e-6)
    assert cosine_distance(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(3 * target, target).item() == pytest.approx(0.0, abs=1e-6)
    ortho = cube([[[0, 2], [0, 1]], [[0, 5], [0, 1]]])
    assert cosine_distance(ortho, target).item() == pytest.approx(1.0, abs=1e-6)
    assert cosine_distance(-target, target).item() == pytest.approx(2.0, abs=1e-6)
    # a mask that drops the opposite pixel (bottom right), as bool N x H x W
    keep = torch.tensor([[[True, True], [True, False]]])
    assert cosine_distance(pred, target, keep).item() == pytest.approx((2 - 1 / math.sqrt(2)) / 3, abs=1e-6)
    # float weights: a weighted mean
    weights = torch.tensor([[[[1.0, 0.5], [0.0, 2.0]]]])
    assert cosine_distance(pred, target, weights).item() == pytest.approx((0.5 + 4) / 3.5, abs=1e-6)


def test_cosine_of_small_features_is_their_angle() -> None:
    """eps floors the norms' product |x||y|, not its square: features of magnitude 1e-3 (|x||y| ~
    1e-6, far above eps = 1e-8) keep their angle as at magnitude 1 - hand values 1 - 1/sqrt(2) and
    1 + 1/sqrt(2), and torch's cosine_similarity."""
    a = 1e-3 * cube([[[1, 0]]], dtype=torch.float64)
    b = 1e-3 * cube([[[1, 1]]], dtype=torch.float64)
    assert cosine_distance(a, b).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-9)
    assert anti_similarity_loss(a, b).item() == pytest.approx(1 + 1 / math.sqrt(2), rel=1e-9)
    want = F.cosine_similarity(a, b, dim=1, eps=1e-8)
    assert 1.0 - cosine_distance(a, b).item() == pytest.approx(want.item(), rel=1e-9)


def test_cosine_zero_vector_is_finite() -> None:
    pred = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = rand(1, 3, 2, 2)
    loss = cosine_distance(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert torch.isfinite(pred.grad).all()


def test_masked_mse_hand_value() -> None:
    pred = cube([[[0, 0], [1, 1]], [[2, 0], [0, 0]]])
    target = cube([[[1, 0], [1, 3]], [[0, 0], [0, 0]]])
    # per pixel (mean over 2 channels): 0.5, 2, 2, 0
    assert masked_mse(pred, target).item() == pytest.approx(4.5 / 4)
    keep = torch.tensor([[[[1, 0], [1, 1]]]], dtype=torch.bool)
    assert masked_mse(pred, target, keep).item() == pytest.approx(2.5 / 3)


def test_alignment_hand_values() -> None:
    zeros = torch.zeros(1, 2, 2, 2)
    assert alignment_loss(zeros, zeros).item() == pytest.approx(LN2, abs=1e-6)
    # target sigmoid(0) = 1/2, logit 2: 0.5 * softplus(-2) + 0.5 * softplus(2)
    assert alignment_loss(zeros + 2, zeros).item() == pytest.approx(
        0.5 * (softplus(-2) + softplus(2)), abs=1e-6
    )
    # minimum of a soft-target BCE = the target's entropy, at logits == target_logits
    t = 1 / (1 + math.exp(-1.5))
    assert alignment_loss(zeros + 1.5, zeros + 1.5).item() == pytest.approx(binary_entropy(t), abs=1e-6)
    # published: prediction sigmoid(0) = 1/2 fed as a logit
    s = 0.5
    assert published_alignment_loss(zeros, zeros).item() == pytest.approx(
        0.5 * (softplus(-s) + softplus(s)), abs=1e-6
    )


def test_alignment_target_is_detached() -> None:
    logits = rand(1, 3, 2, 2, seed=1).requires_grad_()
    target = rand(1, 3, 2, 2, seed=2).requires_grad_()
    alignment_loss(logits, target).backward()
    assert target.grad is None and logits.grad is not None


def test_published_alignment_saturates_fixed_does_not() -> None:
    target = torch.full((1, 1, 1, 401), -8.0)  # sigmoid(-8) ~ 3e-4: "background off"
    grid = torch.linspace(-20, 20, 401).reshape(1, 1, 1, 401)
    fixed = [alignment_loss(grid[..., i : i + 1], target[..., :1]).item() for i in range(401)]
    published = [published_alignment_loss(grid[..., i : i + 1], target[..., :1]).item() for i in range(401)]
    assert min(published) >= LN2 - 1e-5  # can never go below ln 2 ...
    assert max(published) <= softplus(1.0) + 1e-5  # ... nor above softplus(1): flat over 40 logits
    assert min(fixed) < 0.01 and max(fixed) > 19  # the fixed loss reaches its target and keeps a slope

    # gradient where the prediction is confidently wrong (logit +4 for a ~0 target)
    logits_f = torch.full((1, 2, 2, 2), 4.0, requires_grad=True)
    logits_p = torch.full((1, 2, 2, 2), 4.0, requires_grad=True)
    tgt = torch.full((1, 2, 2, 2), -8.0)
    alignment_loss(logits_f, tgt).backward()
    published_alignment_loss(logits_p, tgt).backward()
    g_fixed = logits_f.grad.abs().sum().item()
    g_pub = logits_p.grad.abs().sum().item()
    assert g_fixed == pytest.approx(1 / (1 + math.exp(-4)) - 1 / (1 + math.exp(8)), rel=1e-4)
    assert g_fixed > 50 * g_pub > 0


def test_multiscale_mean_and_mask_downsampling() -> None:
    p1, t1 = rand(2, 3, 4, 4, seed=1), rand(2, 3, 4, 4, seed=2)
    p2, t2 = rand(2, 5, 2, 2, seed=3), rand(2, 5, 2, 2, seed=4)
    expected = (cosine_distance(p1, t1) + cosine_distance(p2, t2)) / 2
    assert multiscale_cosine([p1, p2], [t1, t2]).item() == pytest.approx(expected.item(), abs=1e-6)

    keep = torch.ones(2, 4, 4, dtype=torch.bool)
    keep[0, 1, 2] = False  # one anomaly pixel in the first image -> coarse cell (0, 1) of image 0
    coarse = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    coarse[0, 0, 0, 1] = False
    assert torch.equal(resize_mask(keep, (2, 2)), coarse.float())
    got = multiscale_cosine([p1, p2], [t1, t2], keep)
    expected = (cosine_distance(p1, t1, keep) + cosine_distance(p2, t2, coarse)) / 2
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    # wrecking the excluded coarse cell changes nothing
    p2_bad = p2.clone()
    p2_bad[0, :, 0, 1] = -100 * t2[0, :, 0, 1]
    assert multiscale_cosine([p1, p2_bad], [t1, t2], keep).item() == pytest.approx(got.item(), abs=1e-6)
    # per-scale list with a None
    got = multiscale_cosine([p1, p2], [t1, t2], [keep, None])
    expected = (cosine_distance(p1, t1, keep) + cosine_distance(p2, t2)) / 2
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError):
        multiscale_cosine([p1, p2], [t1], None)
    with pytest.raises(ValueError):
        multiscale_cosine([p1, p2], [t1, t2], [keep])


def test_resize_mask_non_divisible_and_upsampling() -> None:
    keep = torch.ones(1, 5, 5, dtype=torch.bool)
    keep[0, 2, 2] = False  # the centre pixel lies in all four (overlapping) adaptive 2x2 cells
    assert resize_mask(keep, (2, 2)).sum().item() == 0
    keep = torch.ones(1, 2, 2, dtype=torch.bool)
    keep[0, 0, 0] = False
    up = resize_mask(keep, (4, 4))
    assert up.shape == (1, 1, 4, 4) and up[0, 0, :2, :2].sum() == 0 and up.sum() == 12


# ----------------------------------------------------------------------------------------------------
# stage 2


def test_decorrelation_hand_values() -> None:
    a = cube([[[1], [2]], [[3], [4]]])
    assert decorrelation_loss(a, 2 * a + 1).item() == pytest.approx(1.0, abs=1e-5)
    assert decorrelation_loss(a, -a).item() == pytest.approx(1.0, abs=1e-5)
    # centred a = (-1.5, -0.5, 0.5, 1.5) is orthogonal to (1, -1, -1, 1)
    b = cube([[[1], [-1]], [[-1], [1]]])
    assert decorrelation_loss(a, b).item() == pytest.approx(0.0, abs=1e-6)


def test_decorrelation_matches_numpy() -> None:
    f_spe = rand(2, 3, 2, 3, seed=5).double()
    f_spa = rand(2, 4, 2, 3, seed=6, positive=True).double()
    x = f_spe.numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    y = f_spa.numpy().transpose(1, 0, 2, 3).reshape(4, -1)
    corr = np.corrcoef(np.vstack([x, y]))[:3, 3:]
    expected = float((corr**2).sum())
    assert decorrelation_loss(f_spe, f_spa).item() == pytest.approx(expected, rel=1e-6)
    assert decorrelation_loss(f_spe, f_spa, normalize=True).item() == pytest.approx(expected / 12, rel=1e-6)


def test_decorrelation_copies_and_independent() -> None:
    # 4 mutually uncorrelated channels (Hadamard rows, zero mean, unit variance): ||I||_F^2 = B
    h = torch.tensor(hadamard(16)[1:5], dtype=torch.float32).reshape(4, 1, 4, 4).transpose(0, 1)
    assert decorrelation_loss(h, h).item() == pytest.approx(4.0, rel=1e-5)
    assert decorrelation_loss(h, h, normalize=True).item() == pytest.approx(4.0 / 16, rel=1e-5)
    # random copies: the diagonal alone gives B, correlated channels add to it
    f = rand(2, 6, 3, 3, seed=7)
    assert decorrelation_loss(f, f).item() >= 6 * (1 - 1e-4)
    assert decorrelation_loss(f, f.clone() * 3 + 2).item() == pytest.approx(
        decorrelation_loss(f, f).item(), rel=1e-5
    )
    # independent features: E ||C||_F^2 = B^2 / M (each entry ~ N(0, 1/M)); 3x that is a safe bound
    b, n, hw = 8, 2, 32
    m = n * hw * hw
    loss = decorrelation_loss(rand(n, b, hw, hw, seed=8), rand(n, b, hw, hw, seed=9)).item()
    assert 0 <= loss < 3 * b * b / m


def test_anti_similarity_hand_values() -> None:
    f = rand(2, 4, 3, 3, seed=10, positive=True)
    assert anti_similarity_loss(f, f).item() == pytest.approx(2.0, abs=1e-6)
    a = cube([[[1, 0], [2, 0]], [[0, 1], [0, 0]]])
    b = cube([[[0, 3], [0, 1]], [[1, 0], [5, 0]]])
    assert anti_similarity_loss(a, b).item() == pytest.approx(1.0, abs=1e-6)  # orthogonal or zero: cos 0
    c = cube([[[1, 0], [1, 1]]])
    d = cube([[[1, 1], [0, 1]]])
    assert anti_similarity_loss(c, d).item() == pytest.approx(1 + 1 / math.sqrt(2), abs=1e-6)
    assert anti_similarity_loss(c, -c).item() == pytest.approx(0.0, abs=1e-6)


def test_variance_sparsity_hand_values() -> None:
    const = torch.full((2, 3, 4, 4), 0.3)
    assert variance_sparsity_loss(const).item() == pytest.approx(1.0 + 0.3, abs=1e-6)
    signs = torch.tensor([1.0, -1.0]).repeat(16).reshape(2, 1, 4, 4)
    wide = 2 * signs.repeat(1, 3, 1, 1)  # +-2 in every channel: var 4 >= 1, hinge 0
    assert variance_sparsity_loss(wide).item() == pytest.approx(2.0, abs=1e-6)
    # channel 0 = 0, 1, 0, 1 (var 1/4 -> hinge 3/4, mean |f| 1/2); channel 1 = +-2 (hinge 0, mean |f| 2)
    mixed = cube([[[0, 2], [1, -2]], [[0, 2], [1, -2]]])
    assert variance_sparsity_loss(mixed).item() == pytest.approx(0.75 / 2 + 1.25, abs=1e-6)
    assert np.var([0, 1, 0, 1]) == 0.25  # the population variance is meant


def _ssim_numpy(x: np.ndarray, y: np.ndarray, k: int, big_l: float) -> float:
    """Plain-loop reference: uniform k x k windows inside the image, population statistics."""
    c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2
    n, ch, h, w = x.shape
    values = []
    for a in range(n):
        for c in range(ch):
            for i in range(h - k + 1):
                for j in range(w - k + 1):
                    px, py = x[a, c, i : i + k, j : j + k], y[a, c, i : i + k, j : j + k]
                    mx, my = px.mean(), py.mean()
                    vx, vy = ((px - mx) ** 2).mean(), ((py - my) ** 2).mean()
                    cov = ((px - mx) * (py - my)).mean()
                    values.append(
                        ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                    )
    return 1.0 - float(np.mean(values))


def test_ssim_against_numpy_reference() -> None:
    x = rand(2, 2, 6, 7, seed=11).double()
    y = (x + 0.5 * rand(2, 2, 6, 7, seed=12)).double()
    big_l = float(y.max() - y.min())
    for k in (3, 5):
        expected = _ssim_numpy(x.numpy(), y.numpy(), k, big_l)
        assert ssim_loss(x, y, window=k).item() == pytest.approx(expected, rel=1e-9)
    expected = _ssim_numpy(x.numpy(), y.numpy(), 5, 2.0)
    assert ssim_loss(x, y, data_range=2.0).item() == pytest.approx(expected, rel=1e-9)
    assert ssim_loss(y, y).item() == pytest.approx(0.0, abs=1e-12)
    assert ssim_loss(x, y).item() > 0.01
    const = torch.full((1, 1, 5, 5), 0.2)
    assert ssim_loss(const, const).item() == pytest.approx(0.0, abs=1e-6)  # zero range falls back to L=1
    with pytest.raises(ValueError):
        ssim_loss(x, y, window=7)


def test_ssim_mask_drops_windows_touching_excluded_pixels() -> None:
    x, y = rand(1, 2, 8, 8, seed=13), rand(1, 2, 8, 8, seed=14)
    keep = torch.ones(1, 8, 8, dtype=torch.bool)
    keep[0, 0, 0] = False  # only the top-left 5x5 window contains it
    base = ssim_loss(x, y, mask=keep).item()
    x_bad, y_bad = x.clone(), y.clone()
    x_bad[0, :, 0, 0] = 50.0
    y_bad[0, :, 0, 0] = -50.0  # also outside the data range taken over counted pixels
    assert ssim_loss(x_bad, y_bad, mask=keep).item() == pytest.approx(base, abs=1e-6)
    assert ssim_loss(x_bad, y_bad).item() != pytest.approx(base, abs=1e-3)
    # by hand: the mean over the 15 other windows of the unmasked SSIM map
    big_l = float(y.max() - y.min())
    full = 1 - _ssim_numpy(x.double().numpy(), y.double().numpy(), 5, big_l)  # mean over 16 windows
    corner = 1 - _ssim_numpy(x[..., :5, :5].double().numpy(), y[..., :5, :5].double().numpy(), 5, big_l)
    assert base == pytest.approx(1 - (16 * full - corner) / 15, abs=1e-5)


def test_reconstruction_is_mse_plus_weighted_ssim() -> None:
    r, x = rand(2, 3, 6, 6, seed=15), rand(2, 3, 6, 6, seed=16)
    expected = masked_mse(r, x) + 0.01 * ssim_loss(r, x)
    assert reconstruction_loss(r, x).item() == pytest.approx(expected.item(), rel=1e-6)
    assert reconstruction_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------------
# masks in general


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_mask_equals_loss_on_subset(name: str) -> None:
    loss = PAIR_LOSSES[name]
    a, b = rand(2, 3, 4, 5, seed=20, positive=True), rand(2, 3, 4, 5, seed=21, positive=True)
    keep = rand(2, 4, 5, seed=22) > -0.3
    got = loss(a, b, keep).item()
    assert got == pytest.approx(loss(subset(a, keep), subset(b, keep), None).item(), rel=1e-5, abs=1e-6)
    # the N x 1 x H x W form and a float 0/1 mask give the same
    assert loss(a, b, keep[:, None].float()).item() == pytest.approx(got, rel=1e-6, abs=1e-7)
    # the excluded pixels do not matter at all
    a_bad, b_bad = a.clone(), b.clone()
    a_bad.permute(0, 2, 3, 1)[~keep] = 1e3
    b_bad.permute(0, 2, 3, 1)[~keep] = -7.0
    assert loss(a_bad, b_bad, keep).item() == pytest.approx(got, rel=1e-5, abs=1e-6)


ALL_LOSSES = {
    **PAIR_LOSSES,
    "reconstruction": lambda a, b, m: reconstruction_loss(a, b, m),
    "ssim": lambda a, b, m: ssim_loss(a, b, mask=m),
    "multiscale": lambda a, b, m: multiscale_cosine([a, a[..., ::2, ::2]], [b, b[..., ::2, ::2]], m),
    "published_alignment": lambda a, b, m: published_alignment_loss(a, b, m),
    "stage2": lambda a, b, m: stage2_loss(a, b.abs(), a * b, b, mask=m)[0],
    "stage1": lambda a, b, m: stage1_loss([a, a[..., ::2, ::2]], [b, b[..., ::2, ::2]], a, b, a, b, mask=m)[
        0
    ],
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_all_masked_gives_zero_and_finite_gradients(name: str) -> None:
    a = rand(2, 3, 6, 6, seed=30).requires_grad_()
    b = rand(2, 3, 6, 6, seed=31).requires_grad_()
    loss = ALL_LOSSES[name](a, b, torch.zeros(2, 6, 6, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    for t in (a, b):
        assert t.grad is None or torch.isfinite(t.grad).all()
    assert a.grad is not None  # still connected to the graph


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_flow(name: str) -> None:
    a = rand(2, 3, 6, 6, seed=32).requires_grad_()
    b = rand(2, 3, 6, 6, seed=33).requires_grad_()
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[0, 0, 0, 0] = keep[1, 0, 5, 2] = False  # leaves 5x5 windows for SSIM
    for mask in (None, keep):
        a.grad = b.grad = None
        loss = ALL_LOSSES[name](a, b, mask)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_mask_shape_errors() -> None:
    a = rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="resize_mask"):
        masked_mse(a, a, torch.ones(2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        masked_mse(a, a, torch.ones(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        cosine_distance(a, a[:, :2])


# ----------------------------------------------------------------------------------------------------
# the stage totals


def test_stage2_combines_parts_with_weights() -> None:
    f_spe = rand(2, 4, 6, 6, seed=40, positive=True)
    f_spa = rand(2, 4, 6, 6, seed=41, positive=True)
    restored, x = rand(2, 4, 6, 6, seed=42), rand(2, 4, 6, 6, seed=43)
    keep = rand(2, 6, 6, seed=44) > -1.0
    parts_ref = {
        "decorrelation": decorrelation_loss(f_spe, f_spa, keep).item(),
        "cosine": anti_similarity_loss(f_spe, f_spa, keep).item(),
        "variance": variance_sparsity_loss(f_spa, keep, reference=x).item(),
        "reconstruction": reconstruction_loss(restored, x, keep).item(),
    }
    assert Stage2Weights() == Stage2Weights(decorrelation=1.0, cosine=0.1, variance=0.1, reconstruction=1.0)
    assert Stage2Weights().relative_variance  # the deliberate change: hinge relative to the input
    for weights in (None, Stage2Weights(decorrelation=0.5, cosine=2.0, variance=0.0, reconstruction=3.0)):
        total, parts = stage2_loss(f_spe, f_spa, restored, x, weights, keep)
        w = weights or Stage2Weights()
        for key, value in parts_ref.items():
            assert parts[key] == pytest.approx(value, rel=1e-6)
            assert isinstance(parts[key], float)
        expected = (
            w.decorrelation * parts_ref["decorrelation"]
            + w.cosine * parts_ref["cosine"]
            + w.variance * parts_ref["variance"]
            + w.reconstruction * parts_ref["reconstruction"]
        )
        assert total.item() == pytest.approx(expected, rel=1e-6)
        assert parts["total"] == pytest.approx(expected, rel=1e-6)


def test_stage1_combines_parts_with_weights() -> None:
    feats_t = [rand(2, 8, 8, 8, seed=50), rand(2, 16, 4, 4, seed=51)]
    feats_p = [rand(2, 8, 8, 8, seed=52), rand(2, 16, 4, 4, seed=53)]
    cube_p, cube_t = rand(2, 5, 8, 8, seed=54), rand(2, 5, 8, 8, seed=55)
    logits, target_logits = rand(2, 6, 4, 4, seed=56), rand(2, 6, 4, 4, seed=57)
    keep = rand(2, 8, 8, seed=58) > -1.5
    feat = multiscale_cosine(feats_p, feats_t, keep).item()
    mse = masked_mse(cube_p, cube_t, keep).item()
    align = alignment_loss(logits, target_logits, resize_mask(keep, (4, 4))).item()
    assert Stage1Weights() == Stage1Weights(feature_cosine=1.0, cube_mse=1.0, alignment=0.1)
    w = Stage1Weights(feature_cosine=2.0, cube_mse=0.5, alignment=3.0)
    total, parts = stage1_loss(feats_p, feats_t, cube_p, cube_t, logits, target_logits, w, keep)
    assert parts["feature_cosine"] == pytest.approx(feat, rel=1e-6)
    assert parts["cube_mse"] == pytest.approx(mse, rel=1e-6)
    assert parts["alignment"] == pytest.approx(align, rel=1e-6)
    assert total.item() == pytest.approx(2.0 * feat + 0.5 * mse + 3.0 * align, rel=1e-6)
    total, parts = stage1_loss(feats_p, feats_t, cube_p, cube_t, mask=keep)  # no alignment term
    assert parts["alignment"] == 0.0 and total.item() == pytest.approx(feat + mse, rel=1e-6)
    with pytest.raises(ValueError):
        stage1_loss(feats_p, feats_t, cube_p, cube_t, logits, None)


def test_relative_variance_hinge_compares_with_the_input_variance() -> None:
    x = rand(2, 3, 8, 8, seed=50)
    # f = 2x has 4 times the input's variance in every channel: hinge 0, only the L1 term is left.
    f = 2.0 * x
    assert variance_sparsity_loss(f, reference=x).item() == pytest.approx(f.abs().mean().item(), rel=1e-6)
    # f = x / 2 has a quarter of it: hinge 1 - 1/4 in every channel.
    half = 0.5 * x
    expected = 0.75 + half.abs().mean().item()
    assert variance_sparsity_loss(half, reference=x).item() == pytest.approx(expected, rel=1e-5)
