"""Training-only networks (never shipped in a bundle, never exported).

* :func:`encoder_levels` - the frozen spectral body's multi-scale features ``s0 .. sL``:
  ``s0 = stem(x)``, ``s_i = blocks[i](s_{i-1})``.
* :class:`OneClassBottleneck` - reverse distillation's one-class bottleneck:
  ``concat(s1..sL)`` -> 1x1 conv to ``hidden // 2``, ReLU -> 3x3 stride-2 conv, ReLU (a compact,
  half-resolution code, so the decoder cannot copy its input through).
* :class:`FeatureDecoder` - bilinear upsampling of the code back to the input's H x W (``size=``,
  so odd sizes work), then one 3x3 conv + ReLU per level producing ``d_L, d_{L-1} .. d_1``
  (``hidden`` channels each, ``d_i`` reconstructs ``s_i``), and a 1x1 conv ``d_1`` -> K for the cube.
* :func:`head_logits` - the spectral head's 1x1 conv without its ReLU (for the alignment term).
* :class:`RestorationNet` - stage 2's restoration net R (docs/METHOD.md): 1x1 conv K -> width,
  three residual blocks with channel attention (conv3x3, ReLU, conv3x3, squeeze-excitation gate,
  + skip), a final 1x1 conv width -> K. The published R works at full width; ``width`` (training
  default 16, ``TrainConfig.restoration_width``) keeps stage 2 affordable on a CPU.
* :class:`MaskedAutoencoderHead` - 1x1 conv hidden -> K, reconstructing the clean cube from the
  spectral body's features during the optional self-supervised encoder pretraining.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_had.models.spectral import SpectralEnhancer

__all__ = [
    "FeatureDecoder",
    "MaskedAutoencoderHead",
    "OneClassBottleneck",
    "RestorationNet",
    "encoder_levels",
    "head_logits",
]


def encoder_levels(spectral: SpectralEnhancer, x: torch.Tensor) -> list[torch.Tensor]:
    """``[s0, s1, .., sL]`` of the spectral body (stem + blocks); ``sL`` feeds the head."""
    levels = [spectral.stem(x)]
    for block in spectral.blocks:
        levels.append(block(levels[-1]))
    return levels


def head_logits(spectral: SpectralEnhancer, features: torch.Tensor) -> torch.Tensor:
    """The spectral head's 1x1 conv without the final ReLU."""
    return spectral.head[0](features)


class OneClassBottleneck(nn.Module):
    """``[s1..sL]`` (hidden channels each) -> a half-resolution code of ``hidden // 2`` channels."""

    def __init__(self, hidden: int = 32, levels: int = 3) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError("reverse distillation needs at least one encoder block (blocks >= 1)")
        code = max(1, hidden // 2)
        self.levels = levels
        self.fuse = nn.Sequential(nn.Conv2d(hidden * levels, code, 1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(code, code, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return self.down(self.fuse(torch.cat(levels, dim=1)))


class FeatureDecoder(nn.Module):
    """Code -> ``([d1, .., dL], cube_hat)``; ``d_i`` is ``hidden`` channels at the input's H x W."""

    def __init__(self, k: int = 64, hidden: int = 32, levels: int = 3) -> None:
        super().__init__()
        code = max(1, hidden // 2)
        layers = []
        channels = code
        for _ in range(levels):
            layers.append(nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU()))
            channels = hidden
        self.stages = nn.ModuleList(layers)  # stages[0] makes d_L, stages[-1] makes d_1
        self.to_cube = nn.Conv2d(hidden, k, 1)

    def forward(self, code: torch.Tensor, size: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        y = F.interpolate(code, size=size, mode="bilinear", align_corners=False)
        produced = []
        for stage in self.stages:
            y = stage(y)
            produced.append(y)
        levels = produced[::-1]  # [d1, .., dL]
        return levels, self.to_cube(levels[0])


class MaskedAutoencoderHead(nn.Module):
    """1x1 conv ``hidden -> K``: reconstructs the clean cube from the spectral body's features."""

    def __init__(self, hidden: int = 32, k: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(hidden, k, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class _ChannelAttentionBlock(nn.Module):
    """``x + SE(conv3x3(relu(conv3x3(x))))`` (a residual channel-attention block)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate"),
        )
        self.gate = nn.Sequential(
            nn.Conv2d(channels, squeezed, 1), nn.ReLU(), nn.Conv2d(squeezed, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y * self.gate(y.mean(dim=(2, 3), keepdim=True))


class RestorationNet(nn.Module):
    """Stage 2's R: ``N x K x H x W`` (``f_spa + f_spe``) -> ``N x K x H x W`` (the restored cube)."""

    def __init__(self, k: int = 64, width: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.entry = nn.Conv2d(k, width, 1)
        self.blocks = nn.Sequential(*[_ChannelAttentionBlock(width) for _ in range(blocks)])
        self.exit = nn.Conv2d(width, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.blocks(self.entry(x)))
