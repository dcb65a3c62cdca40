"""Training loops: encoder pretraining, stage 1 (reverse distillation), stage 2 (the student).

Each loop is a small trainer object (:class:`PretrainTrainer`, :class:`Stage1Trainer`,
:class:`Stage2Trainer`) holding its training-only nets, its Adam optimiser and its own random
generator, with ``run(sampler, steps)`` (one chunk of steps, e.g. an epoch) and
``state_dict()`` / ``load_state_dict()`` for checkpoints; the runner drives them epoch by epoch.
The functions :func:`pretrain_encoder`, :func:`train_stage1` and :func:`train_stage2` are the
one-call versions. Every loss is taken on the sampler's background mask only.

* **Pretraining** (optional, ``encoder="pretrained"``): the spectral body (stem + blocks) is
  trained as a masked / denoising autoencoder: per tile ``mask_ratio`` (50 %) of the pixels are
  zeroed and Gaussian noise of std ``noise_std`` (0.01, a tenth of the normalised cube's scale
  0.1) is added to the rest; a :class:`MaskedAutoencoderHead` must reconstruct the clean cube
  (``masked_mse`` on background pixels). The head is then thrown away; the body stays frozen.
* **Stage 1** (reverse distillation): the body is frozen (random init or pretrained). Trainable:
  :class:`OneClassBottleneck`, :class:`FeatureDecoder` and the spectral head. Loss =
  ``stage1_loss`` with :class:`~edge_had.train.losses.Stage1Weights` = ``feature_cosine *
  multiscale_cosine([d1..dL], [s1..sL]) + cube_mse * masked_mse(cube_hat, x) + alignment *
  alignment_loss(head_logits(dL), head_logits(sL))`` (the fixed, single-sigmoid BCE; its target
  is detached: it is what the head makes of the true features ``sL``, and the head learns to make
  the same of the decoder's background-only reconstruction; the head gets gradient from this term
  only). ``reverse_distillation=False`` skips
  stage 1 entirely: the head stays as it is (random), which is the training-free / pretrained-only
  ablation (the bottleneck and decoder would not change the shipped network anyway).
* **Ranking** (optional transfer phase, ``ranking_epochs > 0``; after stage 1, before stage 2):
  the whole spectral network is trained so that under global RX of ``x + ranking_alpha f_spe``
  each training scene's labelled anomaly pixels outrank its background pixels
  (:func:`~edge_had.train.losses.pairwise_ranking_loss` of
  :func:`~edge_had.train.losses.log_global_rx`, one crop per scene and step from a
  :class:`~edge_had.train.data.SceneSampler`). Unlike every other phase it uses the training
  scenes' anomalies as targets (never a held-out scene's): supervised transfer across scenes.
  Adam with its own lr and the usual betas (0.9, 0.999).
* **Stage 2**: the teacher (spectral) is frozen; ``f_spe = spectral(x)``, ``f_spa = spatial(x)``,
  ``restored = RestorationNet(f_spa + f_spe)``; loss = ``stage2_loss(f_spe, f_spa, restored, x,
  weights, mask=background)``. ``Stage2Weights(decorrelation=0)`` is the decorrelation ablation.

Optimiser: Adam with the published lr 5e-3 and betas (0.5, 0.999), both configurable;
``grad_clip`` (off by default, as published) clips the global gradient norm of each step.

Data parallel: pass ``distributed=True`` (the runner does under torchrun) and the trainable
container is wrapped in ``DistributedDataParallel`` (gradients averaged over ranks every step).
The tile phases take their loss over the *global* batch (:meth:`_Trainer.whole_batch` gathers every
rank's outputs with their gradient), so N ranks at batch b compute the gradient of one process at
batch N x b: stage 2's decorrelation is a statistic of the whole batch, and the masked means divide
by the background pixels of the whole batch. The ranking phase gets the same from its batch weight.
The logged loss of every step is the mean over ranks. The per-step random corruption of the
pretraining is drawn for the *global* batch from a generator seeded identically on every rank,
and each rank keeps its slice, so all ranks' generators stay in step (one checkpoint serves all).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from edge_had.models.spatial import SpatialStudent
from edge_had.models.spectral import SpectralEnhancer
from edge_had.train.data import SceneBatch, SceneSampler, TileBatch, TileSampler
from edge_had.train.losses import (
    Stage1Weights,
    Stage2Weights,
    log_global_rx,
    masked_mse,
    pairwise_ranking_loss,
    stage1_loss,
    stage2_loss,
)
from edge_had.train.modules import (
    FeatureDecoder,
    MaskedAutoencoderHead,
    OneClassBottleneck,
    RestorationNet,
    encoder_levels,
    head_logits,
)

__all__ = [
    "DEFAULT_BETAS",
    "DEFAULT_LR",
    "LossHistory",
    "PretrainTrainer",
    "RankingTrainer",
    "Stage1Trainer",
    "Stage2Trainer",
    "pretrain_encoder",
    "train_stage1",
    "train_stage2",
]

DEFAULT_LR = 5e-3
DEFAULT_BETAS = (0.5, 0.999)
RANKING_BETAS = (0.9, 0.999)  # the ranking phase: Adam's usual betas, its own lr
Batch = TileBatch | SceneBatch
Sampler = TileSampler | SceneSampler


class LossHistory(list):
    """Per-step total losses (a list of floats) plus ``parts``: per-step values of each term."""

    def __init__(self, values: Any = ()) -> None:
        super().__init__(values)
        self.parts: dict[str, list[float]] = {}

    def record(self, total: float, parts: dict[str, float]) -> None:
        self.append(total)
        for name, value in parts.items():
            self.parts.setdefault(name, []).append(value)

    def extend_history(self, other: LossHistory) -> None:
        self.extend(other)
        for name, values in other.parts.items():
            self.parts.setdefault(name, []).extend(values)


def _set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _distributed_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherAcrossRanks(torch.autograd.Function):
    """Forward: every rank's part of the global batch, in rank order along dim 0 (the parts are
    equal-sized: each rank's slice of the samplers' global batch). Backward: every rank took the
    same loss of the whole batch, so the gradient of this rank's part is summed over the ranks'
    copies (an all-reduce) and sliced out - ``world_size`` times the part's gradient, which DDP's
    average over the ranks turns back into the gradient of the one global loss. (Written here:
    ``torch.distributed.nn``'s ``all_gather`` does the same and is deprecated in torch 2.13.)"""

    @staticmethod
    def forward(ctx: Any, part: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), part.shape[0]
        return _all_gathered(part)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.contiguous().clone()
        dist.all_reduce(summed)
        return summed[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_global_batch(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of the global batch -> the whole global batch (the ranks' parts in rank
    order along dim 0, as the samplers slice it), the same on every rank; differentiable
    (:class:`_GatherAcrossRanks`). A tensor without gradient (inputs, masks) is gathered plainly
    (bool via uint8: gloo has no bool)."""
    if tensor.requires_grad:
        return _GatherAcrossRanks.apply(tensor)
    wire = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    return _all_gathered(wire).to(tensor.dtype)


def _all_gathered(part: torch.Tensor) -> torch.Tensor:
    """Every rank's equal-sized ``part``, concatenated in rank order along dim 0 (no gradient)."""
    parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, part.contiguous())
    return torch.cat(parts, dim=0)


class _Trainer:
    """Shared machinery: the (optionally DDP-wrapped) container, Adam, the step loop, state."""

    name = "trainer"

    def __init__(
        self,
        net: nn.Module,
        *,
        lr: float,
        betas: tuple[float, float],
        device: torch.device | str | None,
        distributed: bool | None,
        grad_clip: float | None = None,
    ) -> None:
        self.grad_clip = None if not grad_clip else float(grad_clip)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.net = net.to(self.device)
        self.distributed = _distributed_active() if distributed is None else distributed
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{self.name}: nothing to train")
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model: nn.Module = DistributedDataParallel(self.net, device_ids=ids)
        else:
            self.model = self.net
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(betas))  # type: ignore[arg-type]

    # subclasses: loss of one batch (their own batch type) -> (total, {term: unweighted value})
    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def whole_batch(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The global batch of each tensor under data parallelism (:func:`gather_global_batch`),
        the tensors themselves in one process: the tile losses are taken over the global batch, so
        N ranks at batch b train like one process at batch N x b (a batch statistic such as stage
        2's decorrelation, and masked means over unequal background counts, need all of it)."""
        if not self.distributed:
            return list(tensors)
        return [gather_global_batch(t) for t in tensors]

    def step(self, batch: Batch) -> tuple[float, dict[str, float]]:
        self.net.train()
        batch = batch.to(self.device)
        total, parts = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.grad_clip)
        self.optimizer.step()
        parts = {name: value for name, value in parts.items() if name != "total"}
        values = torch.tensor(
            [float(total.detach())] + [float(v) for v in parts.values()], dtype=torch.float64
        )
        if self.distributed:
            values = values.to(self.device)
            dist.all_reduce(values)
            values /= dist.get_world_size()
        numbers = values.cpu().tolist()
        return numbers[0], dict(zip(parts.keys(), numbers[1:], strict=True))

    def run(
        self, sampler: Sampler, steps: int, *, progress: bool = True, desc: str | None = None
    ) -> LossHistory:
        history = LossHistory()
        bar = tqdm(
            range(steps), desc=desc or self.name, disable=not progress, leave=False, dynamic_ncols=True
        )
        for _ in bar:
            total, parts = self.step(sampler.sample())
            history.record(total, parts)
            bar.set_postfix(loss=f"{total:.4g}", refresh=False)
        bar.close()
        return history

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_extra_state(state)


# --------------------------------------------------------------------------- pretraining


class _PretrainNet(nn.Module):
    def __init__(self, spectral: SpectralEnhancer) -> None:
        super().__init__()
        self.stem = spectral.stem
        self.blocks = spectral.blocks
        self.decoder = MaskedAutoencoderHead(spectral.hidden, spectral.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.blocks(self.stem(x)))


class PretrainTrainer(_Trainer):
    """Masked / denoising autoencoder pretraining of the spectral body (module docstring)."""

    name = "pretrain"

    def __init__(
        self,
        spectral: SpectralEnhancer,
        *,
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = DEFAULT_BETAS,
        mask_ratio: float = 0.5,
        noise_std: float = 0.01,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
        distributed: bool | None = None,
        grad_clip: float | None = None,
    ) -> None:
        _set_trainable(spectral.stem, True)
        _set_trainable(spectral.blocks, True)
        super().__init__(
            _PretrainNet(spectral),
            lr=lr,
            betas=betas,
            device=device,
            distributed=distributed,
            grad_clip=grad_clip,
        )
        self.mask_ratio = float(mask_ratio)
        self.noise_std = float(noise_std)
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(int(seed))

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """Zero ``mask_ratio`` of the pixels, add noise to the rest (drawn for the global batch)."""
        n = x.shape[0]
        shape = (n * self.world_size, *x.shape[1:])
        keep = torch.rand((shape[0], 1, *shape[2:]), generator=self.generator) >= self.mask_ratio
        noise = torch.randn(shape, generator=self.generator) * self.noise_std
        part = slice(self.rank * n, (self.rank + 1) * n)
        keep, noise = keep[part].to(x.device), noise[part].to(x.device)
        return (x + noise) * keep

    def loss(self, batch: TileBatch) -> tuple[torch.Tensor, dict[str, float]]:
        recon, x, mask = self.whole_batch(self.model(self.corrupt(batch.x)), batch.x, batch.mask)
        mse = masked_mse(recon, x, mask)
        return mse, {"mse": float(mse.detach())}

    def extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def finish(self, spectral: SpectralEnhancer) -> None:
        """Freeze the pretrained body (the autoencoder head is dropped)."""
        _set_trainable(spectral.stem, False)
        _set_trainable(spectral.blocks, False)


def pretrain_encoder(
    spectral: SpectralEnhancer,
    sampler: TileSampler,
    steps: int,
    *,
    lr: float = DEFAULT_LR,
    betas: tuple[float, float] = DEFAULT_BETAS,
    mask_ratio: float = 0.5,
    noise_std: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> LossHistory:
    """Pretrain ``spectral.stem`` + ``spectral.blocks`` in place; returns the per-step losses."""
    trainer = PretrainTrainer(
        spectral,
        lr=lr,
        betas=betas,
        mask_ratio=mask_ratio,
        noise_std=noise_std,
        seed=seed,
        rank=sampler.rank,
        world_size=sampler.world_size,
        device=device,
    )
    history = trainer.run(sampler, steps, progress=progress, desc="pretrain")
    trainer.finish(spectral)
    return history


# --------------------------------------------------------------------------- stage 1


class _Stage1Net(nn.Module):
    def __init__(self, spectral: SpectralEnhancer) -> None:
        super().__init__()
        self.spectral = spectral
        levels = len(spectral.blocks)
        self.bottleneck = OneClassBottleneck(spectral.hidden, levels)
        self.decoder = FeatureDecoder(spectral.k, spectral.hidden, levels)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        with torch.no_grad():
            levels = encoder_levels(self.spectral, x)
        code = self.bottleneck(levels[1:])
        decoded, cube_hat = self.decoder(code, (x.shape[-2], x.shape[-1]))
        logits = head_logits(self.spectral, decoded[-1])
        with torch.no_grad():
            target_logits = head_logits(self.spectral, levels[-1])
        return {
            "encoded": levels[1:],
            "decoded": decoded,
            "cube_hat": cube_hat,
            "logits": logits,
            "target_logits": target_logits,
        }


class Stage1Trainer(_Trainer):
    """Reverse distillation on the frozen spectral body (module docstring)."""

    name = "stage1"

    def __init__(
        self,
        spectral: SpectralEnhancer,
        *,
        weights: Stage1Weights | None = None,
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = DEFAULT_BETAS,
        device: torch.device | str | None = None,
        distributed: bool | None = None,
        grad_clip: float | None = None,
    ) -> None:
        _set_trainable(spectral, False)
        _set_trainable(spectral.head, True)
        super().__init__(
            _Stage1Net(spectral),
            lr=lr,
            betas=betas,
            device=device,
            distributed=distributed,
            grad_clip=grad_clip,
        )
        self.weights = Stage1Weights() if weights is None else weights

    def loss(self, batch: TileBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.model(batch.x)
        n_dec, n_enc = len(out["decoded"]), len(out["encoded"])
        gathered = self.whole_batch(
            *out["decoded"],
            *out["encoded"],
            out["cube_hat"],
            batch.x,
            out["logits"],
            out["target_logits"],
            batch.mask,
        )
        decoded, encoded = gathered[:n_dec], gathered[n_dec : n_dec + n_enc]
        cube_hat, x, logits, target_logits, mask = gathered[n_dec + n_enc :]
        return stage1_loss(decoded, encoded, cube_hat, x, logits, target_logits, self.weights, mask=mask)

    def finish(self, spectral: SpectralEnhancer) -> None:
        _set_trainable(spectral, False)


def train_stage1(
    spectral: SpectralEnhancer,
    sampler: TileSampler,
    steps: int,
    *,
    encoder: Literal["random", "pretrained"] = "random",
    pretrain_steps: int | None = None,
    reverse_distillation: bool = True,
    weights: Stage1Weights | None = None,
    lr: float = DEFAULT_LR,
    betas: tuple[float, float] = DEFAULT_BETAS,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> LossHistory:
    """Stage 1 in place on ``spectral``; returns the stage-1 per-step losses.

    ``encoder="pretrained"`` first runs :func:`pretrain_encoder` for ``pretrain_steps`` (default
    ``steps``); its history is attached as ``history.parts["pretrain"]``. With
    ``reverse_distillation=False`` nothing but that pretraining happens (empty history).
    """
    if encoder not in ("random", "pretrained"):
        raise ValueError(f"encoder must be 'random' or 'pretrained', got {encoder!r}")
    pre = None
    if encoder == "pretrained":
        n = steps if pretrain_steps is None else pretrain_steps
        pre = pretrain_encoder(
            spectral, sampler, n, lr=lr, betas=betas, seed=seed, device=device, progress=progress
        )
    history = LossHistory()
    if reverse_distillation:
        trainer = Stage1Trainer(spectral, weights=weights, lr=lr, betas=betas, device=device)
        history = trainer.run(sampler, steps, progress=progress, desc="stage1")
        trainer.finish(spectral)
    _set_trainable(spectral, False)
    if pre is not None:
        history.parts["pretrain"] = list(pre)
    return history


# --------------------------------------------------------------------------- ranking (transfer)


class RankingTrainer(_Trainer):
    """Supervised ranking of the training scenes' anomalies (module docstring)."""

    name = "ranking"

    def __init__(
        self,
        spectral: SpectralEnhancer,
        *,
        alpha: float = 1.0,
        temperature: float = 0.5,
        lr: float = 1e-3,
        betas: tuple[float, float] = RANKING_BETAS,
        device: torch.device | str | None = None,
        distributed: bool | None = None,
        grad_clip: float | None = None,
    ) -> None:
        _set_trainable(spectral, True)
        super().__init__(
            spectral, lr=lr, betas=betas, device=device, distributed=distributed, grad_clip=grad_clip
        )
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def loss(self, batch: SceneBatch) -> tuple[torch.Tensor, dict[str, float]]:
        terms = []
        for crop in batch.crops:
            z = crop.x + self.alpha * self.model(crop.x[None])[0]
            is_anomaly = crop.anomalies[crop.valid]
            # background: valid pixels the map labels and not as anomalies (an unlabelled pixel
            # may be one: never ranked, though in the RX statistics as in detection)
            is_background = ~is_anomaly & crop.labelled[crop.valid]
            if is_background.sum() == 0 or is_anomaly.numel() <= z.shape[0] + 1:
                # nothing to rank against, or too few pixels for RX to rank anything: a zero that
                # still reaches every parameter (DistributedDataParallel expects all of them used)
                terms.append(z.sum() * 0.0)
                continue
            scores = log_global_rx(z, crop.valid)
            background = scores[is_background]
            picks = (crop.negative_draws * background.numel()).long().clamp_(max=background.numel() - 1)
            terms.append(pairwise_ranking_loss(scores[is_anomaly], background[picks], self.temperature))
        total = torch.stack(terms).sum() * batch.weight  # summed over ranks: the mean over all crops
        return total, {"ranking": float(total.detach())}

    def finish(self, spectral: SpectralEnhancer) -> None:
        _set_trainable(spectral, False)


# --------------------------------------------------------------------------- stage 2


class _Stage2Net(nn.Module):
    def __init__(self, spectral: SpectralEnhancer, spatial: SpatialStudent, restoration_width: int) -> None:
        super().__init__()
        self.spectral = spectral
        self.spatial = spatial
        self.restoration = RestorationNet(spectral.k, restoration_width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            f_spe = self.spectral(x)
        f_spa = self.spatial(x)
        return f_spe, f_spa, self.restoration(f_spa + f_spe)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class Stage2Trainer(_Trainer):
    """The spatial student against the frozen teacher (module docstring)."""

    name = "stage2"

    def __init__(
        self,
        spectral: SpectralEnhancer,
        spatial: SpatialStudent,
        *,
        weights: Stage2Weights | None = None,
        restoration_width: int = 16,
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = DEFAULT_BETAS,
        device: torch.device | str | None = None,
        distributed: bool | None = None,
        grad_clip: float | None = None,
    ) -> None:
        if spatial.k != spectral.k:
            raise ValueError(f"spatial k={spatial.k} differs from spectral k={spectral.k}")
        _set_trainable(spectral, False)
        _set_trainable(spatial, True)
        super().__init__(
            _Stage2Net(spectral, spatial, restoration_width),
            lr=lr,
            betas=betas,
            device=device,
            distributed=distributed,
            grad_clip=grad_clip,
        )
        self.weights = Stage2Weights() if weights is None else weights

    def loss(self, batch: TileBatch) -> tuple[torch.Tensor, dict[str, float]]:
        f_spe, f_spa, restored, x, mask = self.whole_batch(*self.model(batch.x), batch.x, batch.mask)
        return stage2_loss(f_spe, f_spa, restored, x, self.weights, mask=mask)

    def evaluate(self, batch: TileBatch) -> tuple[float, dict[str, float]]:
        """The loss of one batch without training (no gradient, no optimiser step); under data
        parallelism, of the global batch, as training takes it."""
        batch = batch.to(self.device)
        with torch.no_grad(), _eval_mode(self.net):
            f_spe, f_spa, restored, x, mask = self.whole_batch(*self.net(batch.x), batch.x, batch.mask)
            total, parts = stage2_loss(f_spe, f_spa, restored, x, self.weights, mask=mask)
        return float(total), {name: float(value) for name, value in parts.items() if name != "total"}

    def finish(self, spatial: SpatialStudent) -> None:
        _set_trainable(spatial, False)


def train_stage2(
    spectral: SpectralEnhancer,
    spatial: SpatialStudent,
    sampler: TileSampler,
    steps: int,
    weights: Stage2Weights | None = None,
    *,
    restoration_width: int = 16,
    lr: float = DEFAULT_LR,
    betas: tuple[float, float] = DEFAULT_BETAS,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> LossHistory:
    """Train ``spatial`` in place against the frozen ``spectral``; returns the per-step losses."""
    trainer = Stage2Trainer(
        spectral,
        spatial,
        weights=weights,
        restoration_width=restoration_width,
        lr=lr,
        betas=betas,
        device=device,
    )
    history = trainer.run(sampler, steps, progress=progress, desc="stage2")
    trainer.finish(spatial)
    return history
