"""Training code of the enhancement method (the two training stages).

So far only the losses (:mod:`edge_had.train.losses`): small pure functions on ``N x C x H x W``
tensors, each with an optional pixel mask/weight (``True``/positive = the pixel counts).
"""

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
    ssim_loss,
    stage1_loss,
    stage2_loss,
    variance_sparsity_loss,
)

__all__ = [
    "Stage1Weights",
    "Stage2Weights",
    "alignment_loss",
    "anti_similarity_loss",
    "cosine_distance",
    "decorrelation_loss",
    "masked_mse",
    "multiscale_cosine",
    "published_alignment_loss",
    "reconstruction_loss",
    "ssim_loss",
    "stage1_loss",
    "stage2_loss",
    "variance_sparsity_loss",
]
