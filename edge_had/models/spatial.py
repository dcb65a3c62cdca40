"""Spatial network (the "rebellious student"): a smooth, low-frequency background field.

Architecture (defaults ``k=64, compress=8, widths=(16, 32, 32, 32), bins=(1, 2, 4)``)::

    x_k (N x K x H x W)
      -> 1x1 conv K -> compress, ReLU                        (false-colour-like compression)
      -> 4 x [3x3 conv stride 2, ReLU]: 8->16->32->32->32    (stride 16, like the released backbone)
      -> pyramid pooling of that map into 1x1, 2x2 and 4x4 bins, each upsampled (bilinear) back to
         the stride-16 grid and concatenated with it (4 x 32 channels)
      -> 1x1 conv 128 -> K, ReLU
      -> squeeze-excitation gate: global mean -> 1x1 K->K/4, ReLU -> 1x1 K/4->K, sigmoid -> scale
      -> bilinear upsample to H x W                          = f_spa >= 0

The K-band head runs on the stride-16 grid and only its output is upsampled: the 1x1 head and the
channel gate act per pixel, so evaluating them before the upsampling is far cheaper (1/256 of the
pixels) and keeps f_spa a smooth field by construction; bilinear weights (``align_corners=False``)
are a convex combination, so f_spa stays >= 0. Per pixel of the input this costs ~1.6 k
multiply-adds; run every 16 lines on a 64-line ring buffer that is ~6.3 k per new pixel
(:mod:`edge_had.models.budget` measures it).

Parameters at the defaults: 35 208 (compression 520, backbone 24 304, head 8 256, gate 2 128).

Export notes. ``F.adaptive_avg_pool2d`` to 2x2/4x4 does not export to ONNX with dynamic H, W at all
(TorchScript exporter, torch 2.13: "input size not accessible", even for divisible sizes), so the
pyramid pooling is written out as two matmuls with bin-averaging matrices built from the feature
map's shape with ``arange``/integer division (:func:`bin_matrix`). The division uses
``rounding_mode="trunc"`` (equal to floor here, all values are >= 0): "floor" exports as a
Mod/Xor/Where chain for signed integers.
The TorchScript exporter records these as shape-dependent ops, so one exported graph pools any H x W
exactly like ``adaptive_avg_pool2d`` (same, possibly overlapping, bins). Upsampling uses
``F.interpolate(size=...)`` with the size read from the tensor, which exports as a dynamic
``Resize``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge_had.models.spectral import PADDING_MODES, PaddingMode


def bin_matrix(size: int, bins: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """``(size, bins)`` averaging matrix of ``adaptive_avg_pool`` along one axis.

    Bin ``i`` covers ``[floor(i*size/bins), ceil((i+1)*size/bins))``; each column averages its bin.
    ``size`` may be a traced shape value: everything is tensor arithmetic, so ONNX export keeps it
    dynamic.
    """
    index = torch.arange(size, device=device)
    b = torch.arange(bins, device=device)
    start = torch.div(b * size, bins, rounding_mode="trunc")
    end = torch.div((b + 1) * size + bins - 1, bins, rounding_mode="trunc")
    member = ((index[:, None] >= start[None, :]) & (index[:, None] < end[None, :])).to(dtype)
    return member / member.sum(dim=0, keepdim=True)


def adaptive_mean_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Export-friendly ``F.adaptive_avg_pool2d(x, bins)`` for any H x W: ``P_h^T @ x @ P_w``."""
    rows = bin_matrix(x.shape[-2], bins, x.dtype, x.device)
    cols = bin_matrix(x.shape[-1], bins, x.dtype, x.device)
    return rows.transpose(0, 1) @ x @ cols


class SpatialStudent(nn.Module):
    """``N x K x H x W`` -> ``f_spa >= 0`` of the same shape (see the module docstring)."""

    def __init__(
        self,
        k: int = 64,
        compress: int = 8,
        widths: Sequence[int] = (16, 32, 32, 32),
        bins: Sequence[int] = (1, 2, 4),
        se_reduction: int = 4,
        *,
        padding_mode: PaddingMode = "replicate",
    ) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if not widths:
            raise ValueError("need at least one strided stage")
        self.k = k
        self.bins = tuple(int(n) for n in bins)
        self.stride = 2 ** len(widths)
        self.compress = nn.Sequential(nn.Conv2d(k, compress, 1), nn.ReLU())
        layers: list[nn.Module] = []
        channels = compress
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, padding_mode=padding_mode),
                nn.ReLU(),
            ]
            channels = width
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Conv2d(channels * (1 + len(self.bins)), k, 1), nn.ReLU())
        squeezed = max(1, k // se_reduction)
        self.gate = nn.Sequential(
            nn.Conv2d(k, squeezed, 1), nn.ReLU(), nn.Conv2d(squeezed, k, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        z = self.backbone(self.compress(x))
        grid = (z.shape[-2], z.shape[-1])
        pyramid = [z]
        for n in self.bins:
            pooled = adaptive_mean_pool(z, n)
            pyramid.append(F.interpolate(pooled, size=grid, mode="bilinear", align_corners=False))
        y = self.head(torch.cat(pyramid, dim=1))
        y = y * self.gate(y.mean(dim=(2, 3), keepdim=True))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)
