"""The whole inference path: adapter -> (spectral, spatial) -> fused enhanced cube.

``EnhancementModel(cube)`` takes an already normalised ``N x B x H x W`` cube (H = lines,
W = pixels per line) and returns :class:`Enhancement` ``(x_k, f_spe, f_spa, enhanced)``, all
``N x K x H x W``, with ``enhanced = x_k + alpha_spe * f_spe + alpha_spa * f_spa``. The alphas are
float32 buffers (saved in the state dict, exported as constants): the scale of the features
relative to the cube is the method's main knob and has to be recorded with every result.
RX then runs on ``enhanced`` (enough bands) or on ``x_k + f`` per branch (score-level fusion);
both branches' outputs are returned for that. ``spatial=None`` gives the spectral-only model
(f_spa = 0), for the "with and without the student" ablation.

Exports to ONNX as one graph with dynamic batch, H and W (tests/test_models.py checks ONNX
Runtime against torch at several widths); the output names are :attr:`EnhancementModel.output_names`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from edge_had.models.adapter import SpectralAdapter
from edge_had.models.spatial import SpatialStudent
from edge_had.models.spectral import SpectralEnhancer


class Enhancement(NamedTuple):
    x_k: torch.Tensor
    f_spe: torch.Tensor
    f_spa: torch.Tensor
    enhanced: torch.Tensor


class EnhancementModel(nn.Module):
    """Adapter + spectral teacher + spatial student + fusion (see the module docstring)."""

    input_names = ("cube",)
    output_names = Enhancement._fields

    alpha_spe: torch.Tensor
    alpha_spa: torch.Tensor

    def __init__(
        self,
        adapter: SpectralAdapter,
        spectral: SpectralEnhancer,
        spatial: SpatialStudent | None = None,
        alpha_spe: float = 1.0,
        alpha_spa: float = 1.0,
    ) -> None:
        super().__init__()
        ks = {"adapter": adapter.k, "spectral": spectral.k}
        if spatial is not None:
            ks["spatial"] = spatial.k
        if len(set(ks.values())) != 1:
            raise ValueError(f"canonical band counts disagree: {ks}")
        for name, value in (("alpha_spe", alpha_spe), ("alpha_spa", alpha_spa)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value}")
        self.adapter = adapter
        self.spectral = spectral
        self.spatial = spatial
        self.k = adapter.k
        self.bands = adapter.bands
        self.register_buffer("alpha_spe", torch.tensor(float(alpha_spe), dtype=torch.float32))
        self.register_buffer("alpha_spa", torch.tensor(float(alpha_spa), dtype=torch.float32))

    @property
    def alphas(self) -> dict[str, float]:
        """The recorded fusion weights as plain floats (for reports)."""
        return {"alpha_spe": float(self.alpha_spe), "alpha_spa": float(self.alpha_spa)}

    def fuse(self, x_k: torch.Tensor, f_spe: torch.Tensor, f_spa: torch.Tensor) -> torch.Tensor:
        return x_k + self.alpha_spe * f_spe + self.alpha_spa * f_spa

    def forward(self, cube: torch.Tensor) -> Enhancement:
        x_k = self.adapter(cube)
        f_spe = self.spectral(x_k)
        f_spa = torch.zeros_like(x_k) if self.spatial is None else self.spatial(x_k)
        return Enhancement(x_k, f_spe, f_spa, self.fuse(x_k, f_spe, f_spa))


def build_model(
    bands: int | None = None,
    *,
    wavelengths: Sequence[float] | np.ndarray | None = None,
    k: int = 64,
    hidden: int = 32,
    blocks: int = 3,
    spatial: bool = True,
    alpha_spe: float = 1.0,
    alpha_spa: float = 1.0,
) -> EnhancementModel:
    """Default-sized model for a sensor given by its wavelengths (nm) or, failing that, its band count."""
    if bands is None:
        if wavelengths is None:
            raise ValueError("give the sensor's wavelengths or its band count")
        bands = np.asarray(wavelengths).size
    adapter = SpectralAdapter.for_sensor(bands, wavelengths, k)
    return EnhancementModel(
        adapter,
        SpectralEnhancer(k, hidden, blocks),
        SpatialStudent(k) if spatial else None,
        alpha_spe,
        alpha_spa,
    )
