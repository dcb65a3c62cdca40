"""Spectral enhancement network (the "teacher" branch): mostly per-pixel band mixing.

Architecture (defaults ``k=64, hidden=32, blocks=3``)::

    x_k (N x K x H x W)
      -> 1x1 conv K -> hidden, ReLU                                  (stem)
      -> blocks x [ depthwise 3x3 -> 1x1 hidden -> hidden, ReLU ] + residual
      -> 1x1 conv hidden -> K, ReLU                                  (head, so f_spe >= 0)

It keeps the released model's shape (1x1 in, three 3x3 blocks, 1x1 head with ReLU, a 7x7
receptive field) but replaces the dense 3x3 bottlenecks by depthwise-separable ones and narrows
the width, which brings it from ~0.8 M to ~8 k multiply-adds per pixel (``K = 64``): stem 2 048,
each block 32*9 + 32*32 = 1 312, head 2 048, i.e. 8 032 in convolutions plus 288 bias and
residual adds = 8 320 (measured by :mod:`edge_had.models.budget`). Parameters: 8 224.

Streaming: every 3x3 layer adds one line of context on each side, so one output line needs
:attr:`SpectralEnhancer.receptive_radius` (= ``blocks``) lines before and after it. Padding is
``replicate`` by default (ONNX ``Pad`` mode ``edge``): a pixel at the image border is enhanced as
if the scene continued unchanged, instead of against zeros, which would make border pixels look
unlike the background and light up in RX. With per-layer padding, running the network on a window
of lines clipped at the scene's first/last line gives exactly the whole-scene result for the
window's centre line. There are no normalisation layers (a per-image GroupNorm/InstanceNorm would
need the whole scene and break line-by-line use; fold a BatchNorm into the convs if one is trained).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PaddingMode = Literal["replicate", "zeros", "reflect"]
PADDING_MODES: tuple[PaddingMode, ...] = ("replicate", "zeros", "reflect")


class SeparableBlock(nn.Module):
    """Residual depthwise 3x3 + pointwise 1x1 block with ReLU: ``x + relu(pw(dw(x)))``."""

    def __init__(self, channels: int, *, padding_mode: PaddingMode = "replicate") -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            channels, channels, 3, padding=1, groups=channels, bias=False, padding_mode=padding_mode
        )
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.pointwise(self.depthwise(x)))


class SpectralEnhancer(nn.Module):
    """``N x K x H x W`` -> ``f_spe >= 0`` of the same shape (see the module docstring)."""

    def __init__(
        self, k: int = 64, hidden: int = 32, blocks: int = 3, *, padding_mode: PaddingMode = "replicate"
    ) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if k < 1 or hidden < 1 or blocks < 0:
            raise ValueError(f"need k >= 1, hidden >= 1, blocks >= 0; got {k}, {hidden}, {blocks}")
        self.k = k
        self.hidden = hidden
        self.stem = nn.Sequential(nn.Conv2d(k, hidden, 1), nn.ReLU())
        self.blocks = nn.Sequential(
            *[SeparableBlock(hidden, padding_mode=padding_mode) for _ in range(blocks)]
        )
        self.head = nn.Sequential(nn.Conv2d(hidden, k, 1), nn.ReLU())
        self.receptive_radius = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
