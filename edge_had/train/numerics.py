"""Whether this machine computes a training step bit for bit like another: a numerics fingerprint.

Training is seeded and deterministic: the same command on the same machine gives bit-identical
weights (resumed or not, for a given thread count). Across machines it does not: torch's math
libraries (oneDNN's convolutions, MKL's products) pick their kernels by the CPU's instruction set,
and other kernels round differently, which a training run amplifies into other weights - as
different as another seed's (measured: the shipped recipe's release on this development machine,
AVX-512, gave other weights than the committed ones; forcing oneDNN and MKL to AVX2 gave a third
set; README, "Training").

:func:`numerics_fingerprint` runs one forward and backward pass of the package's spectral network
on fixed data with the current thread count and hashes the gradients: two machines with the same
fingerprint run the training's main kernels the same way; another fingerprint says weights will
differ. It is a signal, not a proof (other phases use other kernels). Training records and
checkpoints carry it; resuming or starting from a checkpoint of another fingerprint is said, not
refused (there is no option that would make the bits agree).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

#: a training-sized batch: 16 tiles of 32 x 32 pixels, 64 canonical bands (oneDNN chooses its
#: convolution kernels by size, so a smaller probe missed the difference training showed)
PROBE_SHAPE = (16, 64, 32, 32)


def numerics_fingerprint(device: str | torch.device = "cpu") -> str:
    """16 hex digits: the hash of one seeded forward/backward pass of the default spectral network
    on ``device`` (thread count as set). Leaves torch's global random state as it was."""
    from edge_had.models.bundle import ModelConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        spectral, _ = ModelConfig(k=PROBE_SHAPE[1]).build_networks()
        spectral.to(device)
        generator = torch.Generator().manual_seed(1)
        cube = torch.randn(PROBE_SHAPE, generator=generator).to(device)
        enhanced = cube + spectral(cube)
        pixels = enhanced.permute(0, 2, 3, 1).reshape(-1, PROBE_SHAPE[1]).double()
        pixels = pixels - pixels.mean(dim=0)
        covariance = pixels.T @ pixels / pixels.shape[0]  # as the ranking phase's RX: float64 Cholesky
        loss = torch.linalg.cholesky(covariance).diagonal().log().sum() + enhanced.square().mean()
        loss.backward()
    digest = hashlib.sha256()
    for parameter in spectral.parameters():
        assert parameter.grad is not None
        digest.update(parameter.grad.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_at(threads: int) -> str:
    """:func:`numerics_fingerprint` on the CPU with ``threads`` threads (the count restored after):
    what a training record made with that many threads is compared against."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return numerics_fingerprint()
    finally:
        torch.set_num_threads(before)


def numerics_record(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a training record keeps of the machine's arithmetic: the fingerprint, the thread count
    it was taken with, and torch's CPU capability (the instruction set its own kernels use). On a
    GPU the fingerprint is None: CUDA training is not bit-reproducible even on one device (cuDNN's
    backward passes), so there are no bits to compare."""
    on_cpu = torch.device(device).type == "cpu"
    return {
        "fingerprint": numerics_fingerprint(device) if on_cpu else None,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def numerics_note(saved: str | None, here: str | None, what: str) -> str | None:
    """The note a resumed or continued run prints when its checkpoint was made on a machine with
    another fingerprint (None when they agree, or either has none: a checkpoint from before
    fingerprints, or a GPU run)."""
    if saved is None or here is None or saved == here:
        return None
    return (
        f"note: {what} was made where training computes differently (numerics fingerprint {saved}, "
        f"here {here}: other CPU instruction set or math libraries): the weights will not be "
        "bit-identical to an uninterrupted run on either machine"
    )
