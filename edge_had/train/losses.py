"""Losses of the two training stages, as small pure functions on ``N x C x H x W`` tensors.

Stage 1 (reverse distillation of the spectral "teacher", docs/METHOD.md "Two branches"):
:func:`cosine_distance` / :func:`multiscale_cosine` on the reconstructed encoder features,
:func:`masked_mse` on the reconstructed cube, :func:`alignment_loss` on the projected features;
combined by :func:`stage1_loss` with :class:`Stage1Weights`.

Stage 2 (the spatial "rebellious student", docs/METHOD.md "Stage-2 loss"):
:func:`decorrelation_loss`, :func:`anti_similarity_loss`, :func:`variance_sparsity_loss` and
:func:`reconstruction_loss` (MSE + 0.01 * :func:`ssim_loss`); combined by :func:`stage2_loss` with
:class:`Stage2Weights`.

Supervised ranking (the optional transfer phase, :class:`~edge_had.train.loops.RankingTrainer`):
:func:`log_global_rx` (differentiable global RX of one scene) and :func:`pairwise_ranking_loss`
(anomaly pixels of a *training* scene should outrank its background). These two take whole
scenes and labels, not masks: they are the one place where ground-truth anomalies are used as
targets instead of being masked out.

Masks. Every loss takes an optional ``mask`` of shape ``N x 1 x H x W`` or ``N x H x W`` (a batch
of 1 broadcasts), boolean or float, that *selects the pixels that count*: ``True`` / a positive
weight = the pixel counts, ``False`` / 0 = it is ignored. Training scenes' ground-truth anomaly
pixels are passed as ``mask=~anomaly``. A float mask is a per-pixel weight (weighted means and
weighted statistics; weights must be >= 0). Masks are detached: they select, they are not learnt.
Pixel-wise losses then equal the same loss computed on the counted pixels only; statistics
(means, variances, correlations) are taken over the counted pixels only.

All-masked input (no pixel counts, e.g. a tile that is entirely anomaly): every loss returns an
exact ``0`` that is still connected to the inputs' graph (``backward()`` works and gives zero, finite
gradients), so a training loop needs no special case; no NaN is produced. This is decided on the
device without a host synchronisation.

Where a mask has to change resolution (:func:`multiscale_cosine`, the alignment term of
:func:`stage1_loss`) :func:`resize_mask` is used: downsampling is a *min*-pool over the covered
full-resolution pixels (adaptive, so any ratio works), i.e. a coarse cell counts only if every
pixel under it counts - an anomaly pixel excludes every coarse cell that overlaps it and can never
leak into a coarser scale. Upsampling is nearest-neighbour. The single-scale losses do not resize:
a mask of the wrong size there is an error (``ValueError``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = [
    "Stage1Weights",
    "Stage2Weights",
    "alignment_loss",
    "anti_similarity_loss",
    "cosine_distance",
    "decorrelation_loss",
    "log_global_rx",
    "masked_mse",
    "multiscale_cosine",
    "pairwise_ranking_loss",
    "published_alignment_loss",
    "reconstruction_loss",
    "resize_mask",
    "ssim_loss",
    "stage1_loss",
    "stage2_loss",
    "variance_sparsity_loss",
]

# ----------------------------------------------------------------------------------------------------
# helpers


def _check_4d(name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be N x C x H x W, got shape {tuple(x.shape)}")


def _check_same(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_4d(name_a, a)
    _check_4d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def _as_weight(mask: Tensor) -> Tensor:
    """A mask as a detached float ``N x 1 x H x W`` weight (no size check)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be N x H x W or N x 1 x H x W, got shape {tuple(mask.shape)}")
    w = mask.detach()
    return w if w.is_floating_point() else w.float()


def _weight(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """``mask`` as a float ``N x 1 x H x W`` weight matching ``like`` (N x C x H x W), or None."""
    if mask is None:
        return None
    w = _as_weight(mask).to(dtype=like.dtype, device=like.device)
    n, _, h, wd = like.shape
    if w.shape[2:] != (h, wd):
        raise ValueError(
            f"mask is {tuple(w.shape[2:])} pixels but the tensor is {(h, wd)}; resize it (resize_mask)"
        )
    if w.shape[0] not in (1, n):
        raise ValueError(f"mask has batch {w.shape[0]}, the tensor {n}")
    return w.expand(n, 1, h, wd)


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """A pixel mask/weight resized to ``size`` = (h, w) so that excluded pixels stay excluded.

    Returns a float ``N x 1 x h x w`` weight. Downsampling takes the *minimum* weight over the
    full-resolution pixels each coarse cell covers (adaptive min-pool: a cell touching any excluded
    pixel is excluded); upsampling is nearest-neighbour. A mixed case pools first, then upsamples.
    """
    w = _as_weight(mask)
    h, wd = int(size[0]), int(size[1])
    if tuple(w.shape[2:]) == (h, wd):
        return w
    small = (min(h, w.shape[2]), min(wd, w.shape[3]))
    if tuple(w.shape[2:]) != small:
        w = -F.adaptive_max_pool2d(-w, small)
    if small != (h, wd):
        w = F.interpolate(w, size=(h, wd), mode="nearest")
    return w


def _safe_total(total: Tensor) -> tuple[Tensor, Tensor]:
    """(denominator that is never 0, 1.0 if anything counts else 0.0)."""
    counted = total > 0
    return torch.where(counted, total, torch.ones_like(total)), counted.to(total.dtype)


def _pixel_mean(per_pixel: Tensor, w: Tensor | None) -> Tensor:
    """Mean of an ``N x 1 x H x W`` per-pixel map over the counted pixels (weighted); 0 if none."""
    if w is None:
        return per_pixel.mean()
    denom, _ = _safe_total(w.sum())
    return (per_pixel * w).sum() / denom


def _cosine(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Per-pixel cosine along channels, ``N x 1 x H x W``; the norms' product is floored at eps.

    Same convention as ``torch.nn.functional.cosine_similarity`` (x.y / max(|x||y|, eps)), written so
    that an all-zero vector (a ReLU feature that is off everywhere) gives cos = 0 and finite
    gradients instead of NaN.
    """
    dot = (a * b).sum(dim=1, keepdim=True)
    norms2 = (a * a).sum(dim=1, keepdim=True) * (b * b).sum(dim=1, keepdim=True)
    return dot / torch.sqrt(norms2.clamp_min(eps * eps))


def _flat(x: Tensor) -> Tensor:
    """``N x C x H x W`` -> ``C x (N*H*W)`` (channels by samples)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _sample_probs(w: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-sample probabilities (sum 1, or all 0 when nothing counts) over batch and pixels."""
    if w is None:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        return torch.full((m,), 1.0 / m, dtype=x.dtype, device=x.device), None
    wf = w.reshape(-1)
    denom, counted = _safe_total(wf.sum())
    return wf / denom, counted


def _channel_mean_var(xf: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean and population variance of every row of ``C x M`` under probabilities ``p``."""
    mean = xf @ p
    var = ((xf - mean[:, None]) ** 2) @ p
    return mean, var


# ----------------------------------------------------------------------------------------------------
# stage 1: reverse distillation


def cosine_distance(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Mean over counted pixels of ``1 - cos(pred[:, :, p], target[:, :, p])`` along channels.

    0 for identical (or parallel) feature vectors, 1 for orthogonal ones, 2 for opposite ones. A
    pixel where either vector is all zero has cos = 0 (distance 1).
    """
    _check_same("pred", pred, "target", target)
    return _pixel_mean(1.0 - _cosine(pred, target, eps), _weight(mask, pred))


def multiscale_cosine(
    preds: Sequence[Tensor],
    targets: Sequence[Tensor],
    masks: Tensor | Sequence[Tensor | None] | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Mean over scales of :func:`cosine_distance` (the reverse-distillation feature loss).

    ``masks`` is None, one mask for every scale, or a sequence with one entry per scale (each None
    or a mask). A mask whose size differs from its scale's features is resized with
    :func:`resize_mask` (min-pool when downsampling, so anomaly pixels stay excluded at every scale).
    """
    if len(preds) != len(targets) or len(preds) == 0:
        raise ValueError(f"need as many targets as predictions (>= 1), got {len(preds)} and {len(targets)}")
    if masks is None or isinstance(masks, Tensor):
        per_scale: Sequence[Tensor | None] = [masks] * len(preds)
    else:
        per_scale = masks
        if len(per_scale) != len(preds):
            raise ValueError(f"got {len(per_scale)} masks for {len(preds)} scales")
    losses = []
    for pred, target, mask in zip(preds, targets, per_scale, strict=True):
        _check_4d("pred", pred)
        m = None if mask is None else resize_mask(mask, (pred.shape[2], pred.shape[3]))
        losses.append(cosine_distance(pred, target, m, eps))
    return torch.stack(losses).mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over all channels of the counted pixels."""
    _check_same("pred", pred, "target", target)
    per_pixel = ((pred - target) ** 2).mean(dim=1, keepdim=True)
    return _pixel_mean(per_pixel, _weight(mask, pred))


def alignment_loss(logits: Tensor, target_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Projection-alignment term: ``BCEWithLogits(logits, sigmoid(target_logits).detach())``.

    Mean over channels and counted pixels. The released FERD code passes ``sigmoid(logits)`` to a
    with-logits BCE, i.e. applies the sigmoid twice: its prediction is confined to
    ``sigmoid((0, 1)) = (0.5, 0.73)``, so the loss saturates (at ln 2 for targets below 1/2) and its
    gradient carries an extra factor ``sigmoid'(logits) <= 1/4`` that vanishes for confident logits.
    This version fixes that by applying the sigmoid to the target only (see
    :func:`published_alignment_loss` for the original). With soft targets its minimum is the
    targets' binary entropy, reached at ``logits == target_logits``.
    """
    _check_same("logits", logits, "target_logits", target_logits)
    target = torch.sigmoid(target_logits.detach())
    per_elem = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return _pixel_mean(per_elem.mean(dim=1, keepdim=True), _weight(mask, logits))


def published_alignment_loss(logits: Tensor, target_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """The released (buggy) alignment term ``BCEWithLogits(sigmoid(logits), sigmoid(target))``.

    Kept only to demonstrate the saturation in the tests; train with :func:`alignment_loss`.
    """
    _check_same("logits", logits, "target_logits", target_logits)
    target = torch.sigmoid(target_logits.detach())
    per_elem = F.binary_cross_entropy_with_logits(torch.sigmoid(logits), target, reduction="none")
    return _pixel_mean(per_elem.mean(dim=1, keepdim=True), _weight(mask, logits))


@dataclass(frozen=True)
class Stage1Weights:
    """Weights of the stage-1 (reverse distillation) terms."""

    feature_cosine: float = 1.0
    cube_mse: float = 1.0
    alignment: float = 0.1


def stage1_loss(
    feature_preds: Sequence[Tensor],
    feature_targets: Sequence[Tensor],
    cube_pred: Tensor,
    cube_target: Tensor,
    align_logits: Tensor | None = None,
    align_target_logits: Tensor | None = None,
    weights: Stage1Weights | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Stage-1 total loss and its parts.

    ``total = feature_cosine * multiscale_cosine(feature_preds, feature_targets)
    + cube_mse * masked_mse(cube_pred, cube_target) + alignment * alignment_loss(...)``.
    ``mask`` is at the cube's resolution and is resized (min-pool) for the feature scales and the
    alignment logits. Without alignment logits (both None) that term is 0. Returns
    ``(total, parts)`` with ``parts`` = the unweighted terms and ``"total"`` as Python floats.
    """
    w = weights if weights is not None else Stage1Weights()
    feat = multiscale_cosine(feature_preds, feature_targets, mask)
    mse = masked_mse(cube_pred, cube_target, mask)
    if (align_logits is None) != (align_target_logits is None):
        raise ValueError("give both align_logits and align_target_logits, or neither")
    if align_logits is not None and align_target_logits is not None:
        _check_4d("align_logits", align_logits)
        m = None if mask is None else resize_mask(mask, (align_logits.shape[2], align_logits.shape[3]))
        align = alignment_loss(align_logits, align_target_logits, m)
    else:
        align = torch.zeros((), dtype=mse.dtype, device=mse.device)
    total = w.feature_cosine * feat + w.cube_mse * mse + w.alignment * align
    parts = {
        "feature_cosine": float(feat.detach()),
        "cube_mse": float(mse.detach()),
        "alignment": float(align.detach()),
        "total": float(total.detach()),
    }
    return total, parts


# ----------------------------------------------------------------------------------------------------
# stage 2: rebellious student


def decorrelation_loss(
    f_spe: Tensor, f_spa: Tensor, mask: Tensor | None = None, normalize: bool = False, eps: float = 1e-8
) -> Tensor:
    """``||C||_F^2`` of the cross-correlation matrix between the two branches' channels.

    Every channel of both is standardised over batch and counted pixels (weighted mean 0,
    population variance 1: ``(x - mean) / sqrt(var + eps)``); ``C[i, j]`` is the (weighted) mean over
    those samples of ``z_spe[i] * z_spa[j]`` (``B x B``, or ``B1 x B2``). As written in METHOD.md the
    squared Frobenius norm is *not* normalised, so it scales with ``B^2``: ~``B^2 / M`` for
    independent features over ``M`` samples, ``B`` for identical copies with mutually uncorrelated
    channels, up to ``B^2`` for perfectly correlated ones. ``normalize=True`` divides by ``B1 * B2``
    (a mean squared correlation in [0, 1]). ``eps`` is absolute: keep it well below the features'
    variance (a constant channel standardises to 0 and contributes nothing).
    """
    _check_4d("f_spe", f_spe)
    _check_4d("f_spa", f_spa)
    if f_spe.shape[0] != f_spa.shape[0] or f_spe.shape[2:] != f_spa.shape[2:]:
        raise ValueError(f"f_spe {tuple(f_spe.shape)} and f_spa {tuple(f_spa.shape)} differ in N, H or W")
    p, _ = _sample_probs(_weight(mask, f_spe), f_spe)
    zs = []
    for f in (f_spe, f_spa):
        xf = _flat(f)
        mean, var = _channel_mean_var(xf, p)
        zs.append((xf - mean[:, None]) / torch.sqrt(var[:, None] + eps))
    corr = (zs[0] * p) @ zs[1].T
    loss = (corr * corr).sum()
    if normalize:
        loss = loss / (corr.shape[0] * corr.shape[1])
    return loss  # all-masked: p == 0, so corr == 0 and loss == 0 exactly


def anti_similarity_loss(
    f_spe: Tensor, f_spa: Tensor, mask: Tensor | None = None, eps: float = 1e-8
) -> Tensor:
    """``1 + mean over counted pixels of cos(f_spe[:, :, p], f_spa[:, :, p])`` along bands.

    2 for identical (parallel) vectors, 1 for orthogonal ones, 0 for opposite ones (for the
    non-negative ReLU features of the method it lies in [1, 2]). A pixel where either vector is all
    zero has cos = 0. All-masked: 0.
    """
    _check_same("f_spe", f_spe, "f_spa", f_spa)
    w = _weight(mask, f_spe)
    mean_cos = _pixel_mean(_cosine(f_spe, f_spa, eps), w)
    if w is None:
        return 1.0 + mean_cos
    _, counted = _safe_total(w.sum())
    return (1.0 + mean_cos) * counted


def variance_sparsity_loss(
    f_spa: Tensor, mask: Tensor | None = None, reference: Tensor | None = None
) -> Tensor:
    """Non-collapse + sparsity: ``mean_c relu(1 - var_c(f_spa) / ref_c) + mean |f_spa|``.

    ``var_c`` is the population variance of channel ``c`` over batch and counted pixels; the mean
    absolute value is over all channels of the counted pixels. ``ref_c`` is 1 without
    ``reference`` (the published absolute threshold) and the detached per-channel variance of
    ``reference`` (the student's input, same channels) with it. The absolute threshold assumes
    ImageNet-backbone-sized features: with inputs scaled to ~0.1 a small student is pushed towards a
    constant field instead (measured: spatial variation ~1e-7 after stage 2), because a constant
    minimises the decorrelation and anti-similarity terms. Relative to the input's variance the
    hinge asks the student for at least the input's spatial variability. All-masked: 0.
    """
    _check_4d("f_spa", f_spa)
    w = _weight(mask, f_spa)
    p, counted = _sample_probs(w, f_spa)
    _, var = _channel_mean_var(_flat(f_spa), p)
    if reference is not None:
        _check_same("f_spa", f_spa, "reference", reference)
        _, ref_var = _channel_mean_var(_flat(reference.detach()), p)
        var = var / ref_var.clamp_min(1e-12)
    hinge = torch.relu(1.0 - var).mean()
    sparsity = _pixel_mean(f_spa.abs().mean(dim=1, keepdim=True), w)
    if counted is None:
        return hinge + sparsity
    return hinge * counted + sparsity


def ssim_loss(
    pred: Tensor,
    target: Tensor,
    window: int = 5,
    data_range: float | Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """``1 - mean SSIM`` with a ``window x window`` *uniform* (box) window, per channel.

    Local means, variances and the covariance are population statistics over each window
    (``E[xy] - E[x]E[y]``); only windows lying fully inside the image are used (no padding, so no
    border artefacts), hence ``H, W >= window`` is required. ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2`` with data range ``L = data_range`` or, by default, ``max - min`` of ``target``
    over the counted pixels (detached; 1 if that range is 0). The mean is over batch, channels and
    windows. With a mask, a window counts with the *minimum* weight of its pixels, i.e. only windows
    made entirely of counted pixels count. 0 for identical images; all-masked: 0.
    """
    _check_same("pred", pred, "target", target)
    k = int(window)
    if k < 1 or pred.shape[2] < k or pred.shape[3] < k:
        raise ValueError(f"ssim window {k} does not fit the {tuple(pred.shape[2:])} image")
    w = _weight(mask, pred)
    if data_range is None:
        t = target.detach()
        if w is None:
            span = t.amax() - t.amin()
        else:
            sel = (w > 0).expand_as(t)
            span = torch.where(sel, t, -math.inf).amax() - torch.where(sel, t, math.inf).amin()
            span = torch.nan_to_num(span, nan=0.0, posinf=0.0, neginf=0.0)
        big_l = torch.where(span > 0, span, torch.ones_like(span))
    else:
        big_l = torch.as_tensor(data_range, dtype=pred.dtype, device=pred.device)
    c1 = (0.01 * big_l) ** 2
    c2 = (0.03 * big_l) ** 2
    channels = pred.shape[1]
    # the k x k box mean as a 1 x k then a k x 1 mean (separable: 2k instead of k^2 products)
    along_rows = torch.full((channels, 1, 1, k), 1.0 / k, dtype=pred.dtype, device=pred.device)
    along_cols = along_rows.reshape(channels, 1, k, 1)

    def box(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, along_rows, groups=channels), along_cols, groups=channels)

    mu_x, mu_y = box(pred), box(target)
    var_x = box(pred * pred) - mu_x * mu_x
    var_y = box(target * target) - mu_y * mu_y
    cov = box(pred * target) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    if w is None:
        return 1.0 - ssim.mean()
    ww = -F.max_pool2d(-w, k, stride=1)
    denom, counted = _safe_total(ww.sum())
    mean_ssim = (ssim.mean(dim=1, keepdim=True) * ww).sum() / denom
    return (1.0 - mean_ssim) * counted


def reconstruction_loss(
    restored: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    ssim_weight: float = 0.01,
    window: int = 5,
    data_range: float | Tensor | None = None,
) -> Tensor:
    """Reconstruction fidelity ``MSE(restored, target) + ssim_weight * ssim_loss(restored, target)``.

    Both terms use ``mask`` (see :func:`ssim_loss` for how a mask acts on windows). With
    ``ssim_weight == 0`` the SSIM term is not computed (so any image size works).
    """
    mse = masked_mse(restored, target, mask)
    if ssim_weight == 0:
        return mse
    return mse + ssim_weight * ssim_loss(restored, target, window, data_range, mask)


@dataclass(frozen=True)
class Stage2Weights:
    """Weights of the stage-2 (rebellious student) terms, as published; ``relative_variance``
    (default on, a deliberate change) makes the variance hinge relative to the input's variance
    (see :func:`variance_sparsity_loss`)."""

    decorrelation: float = 1.0
    cosine: float = 0.1
    variance: float = 0.1
    reconstruction: float = 1.0
    relative_variance: bool = True


def stage2_loss(
    f_spe: Tensor,
    f_spa: Tensor,
    restored: Tensor,
    target: Tensor,
    weights: Stage2Weights | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Stage-2 total loss and its parts.

    ``restored`` is ``R(f_spa + f_spe)`` of the training-only restoration net, ``target`` the input
    cube X. ``total = decorrelation * decorrelation_loss + cosine * anti_similarity_loss
    + variance * variance_sparsity_loss(f_spa, reference=X if relative) + reconstruction *
    reconstruction_loss``, all with the
    same ``mask``. Returns ``(total, parts)`` with ``parts`` = the unweighted terms and ``"total"`` as
    Python floats.
    """
    w = weights if weights is not None else Stage2Weights()
    decorr = decorrelation_loss(f_spe, f_spa, mask)
    cos = anti_similarity_loss(f_spe, f_spa, mask)
    var = variance_sparsity_loss(f_spa, mask, reference=target if w.relative_variance else None)
    rec = reconstruction_loss(restored, target, mask)
    total = w.decorrelation * decorr + w.cosine * cos + w.variance * var + w.reconstruction * rec
    parts = {
        "decorrelation": float(decorr.detach()),
        "cosine": float(cos.detach()),
        "variance": float(var.detach()),
        "reconstruction": float(rec.detach()),
        "total": float(total.detach()),
    }
    return total, parts


# ----------------------------------------------------------------------------------------------------
# supervised ranking (transfer phase)


def log_global_rx(z: Tensor, valid: Tensor, ridge: float = 1e-9) -> Tensor:
    """``log`` of global RX of the ``valid`` pixels of one ``K x H x W`` cube -> ``(n_valid,)``.

    Differentiable in ``z``. Mean and covariance (divided by the pixel count, like
    :func:`edge_had.detectors.rx.rx_reference`, plus ``ridge`` on the diagonal so a rank-deficient
    cube still factorises) are taken over the valid pixels in float64; the Mahalanobis distance
    comes from a Cholesky factor. The log turns the covariance's normalisation into a constant
    shift, which a pairwise loss does not see.
    """
    if z.dim() != 3:
        raise ValueError(f"log_global_rx expects K x H x W, got shape {tuple(z.shape)}")
    pixels = z.reshape(z.shape[0], -1).T[valid.reshape(-1)].double()
    if pixels.shape[0] <= z.shape[0] + 1:  # with n <= K + 1 pixels every RX score is n - 1
        raise ValueError(
            f"log_global_rx needs more than K + 1 = {z.shape[0] + 1} valid pixels, got {pixels.shape[0]}"
        )
    centred = pixels - pixels.mean(0, keepdim=True)
    eye = torch.eye(centred.shape[1], dtype=centred.dtype, device=centred.device)
    cov = centred.T @ centred / centred.shape[0] + ridge * eye
    whitened = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), centred.T, upper=False)
    return torch.log((whitened * whitened).sum(0) + 1e-12)


def pairwise_ranking_loss(positive: Tensor, negative: Tensor, temperature: float = 0.5) -> Tensor:
    """Mean logistic loss over all (positive, negative) pairs: ``softplus(-(p - n) / temperature)``.

    A smooth stand-in for ``1 - AUC``: ``log 2`` per pair at a tie, towards 0 when every positive
    outranks every negative by several ``temperature``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if positive.numel() == 0 or negative.numel() == 0:
        raise ValueError("pairwise_ranking_loss needs at least one positive and one negative score")
    return F.softplus(-(positive.reshape(-1, 1) - negative.reshape(1, -1)) / temperature).mean()
