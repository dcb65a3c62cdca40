"""Pure, exportable ``nn.Module``s of the enhancement method (no training code).

* :class:`SpectralAdapter` - any sensor's B bands -> K canonical bands (fixed 1x1 conv).
* :class:`SpectralEnhancer` - the spectral "teacher" branch, f_spe >= 0.
* :class:`SpatialStudent` - the spatial "rebellious student" branch, a smooth f_spa >= 0.
* :class:`EnhancementModel` - adapter + both branches + the alpha-weighted fusion.
* :func:`count_macs_per_pixel` - multiply-adds per pixel against the onboard budget.
* :class:`Normalization` - the per-scene input normalisation; :func:`save_bundle` /
  :func:`load_bundle` - a trained model on disk (safetensors + config).

This package imports torch at top level; ``import edge_had`` alone does not import it.
"""

from edge_had.models.adapter import SpectralAdapter, canonical_wavelengths
from edge_had.models.budget import BUDGET_MACS_PER_PIXEL, count_macs_per_pixel
from edge_had.models.bundle import ModelBundle, ModelConfig, ModelError, load_bundle, save_bundle
from edge_had.models.enhancer import Enhancement, EnhancementModel, build_model
from edge_had.models.normalize import Normalization
from edge_had.models.spatial import SpatialStudent, adaptive_mean_pool, bin_matrix
from edge_had.models.spectral import SeparableBlock, SpectralEnhancer

__all__ = [
    "BUDGET_MACS_PER_PIXEL",
    "Enhancement",
    "EnhancementModel",
    "ModelBundle",
    "ModelConfig",
    "ModelError",
    "Normalization",
    "SeparableBlock",
    "SpatialStudent",
    "SpectralAdapter",
    "SpectralEnhancer",
    "adaptive_mean_pool",
    "bin_matrix",
    "build_model",
    "canonical_wavelengths",
    "count_macs_per_pixel",
    "load_bundle",
    "save_bundle",
]
