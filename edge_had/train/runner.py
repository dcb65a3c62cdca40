"""Train a model end to end: :class:`TrainConfig` -> :func:`train` -> a bundle in ``out``.

Phases, each run for its number of epochs of ``steps_per_epoch`` steps:

* ``pretrain`` (stage 1 or all, ``encoder="pretrained"``): the spectral body as a masked /
  denoising autoencoder, ``pretrain_epochs`` epochs;
* ``stage1`` (stage 1 or all, ``reverse_distillation=True``): reverse distillation, ``epochs``;
* ``ranking`` (stage 1 or all, ``ranking_epochs > 0``): the spectral network trained so that the
  training scenes' labelled anomalies outrank their background under global RX (supervised
  transfer; off by default), ``ranking_epochs``; with ``ranking_implants`` every crop also gets
  implanted anomalies whose spectra come from the other training scenes' background pixels;
* ``stage2`` (stage 2 or all, ``spatial=True``): the spatial student, ``epochs``.

``--stage 2`` alone loads the stage-1 spectral network from the bundle already in ``out``.
Every phase seeds its own nets and samplers from ``(seed, phase)``, so ``--stage 1`` followed
by ``--stage 2`` gives bit-identically the weights of ``--stage all``. On CPU
``torch.use_deterministic_algorithms(True)`` is on during training (restored afterwards): the same
seed, data and thread count give bit-identical weights.

Outputs (rank 0 only): ``out/config.json`` + ``out/model.safetensors`` (the bundle, see
:mod:`edge_had.models.bundle`; ``ModelConfig`` records k, hidden, blocks, spatial, the alphas and
the normalisation), ``out/train_config.json`` (this config, the command line, each training
scene's SHA-256, loss histories per step and per epoch, wall time, device, world size) and
``out/checkpoints/<phase>-epoch<NNN>.pt`` after every epoch (plain ``torch.save`` of state dicts
and generator states, read back with ``weights_only=True``; ~0.7 MB each at the defaults) with
``checkpoints/latest.json`` pointing at the newest; only the newest epoch of each phase is kept
unless ``keep_all_checkpoints``. ``resume=True`` continues after the newest checkpoint and ends with the
same weights as an uninterrupted run; the config must be the same (threads, device, progress
may differ, and the folders may have moved, but the scenes' names, SHA-256 and shapes must match).

Data parallel: under ``torchrun --nproc_per_node=N -m edge_had.cli train ...`` (``WORLD_SIZE``
> 1) the process group is initialised (gloo on CPU, nccl on CUDA, one GPU per local rank), the
trainable nets are wrapped in ``DistributedDataParallel`` and every rank draws its own slice of a
``batch x N`` global batch (see :mod:`edge_had.train.data`); ``batch`` stays per rank.

Defaults and compute budget
---------------------------
Defaults: K = 64, hidden 32, 3 blocks (the shipped architecture), tiles 32 x 32, batch 16, Adam
lr 5e-3 betas (0.5, 0.999) as published, no gradient clipping, encoder ``pretrained`` (the only
variant that improved every scene in docs/METHOD.md's leads), reverse distillation and the spatial
student on, anomalies masked, ``pretrain_epochs=10``, ``epochs=10`` (stage 1 and stage 2 each),
``steps_per_epoch=40``: 1 200 steps in all (400 pretraining, 400 stage 1, 400 stage 2).

Measured (torch 2.13 CPU, 2 threads on the 2 shared x86-64 cores of the development machine,
``--stage all``, seed 0, one fold = 8 of the 10 ABU scenes of ../shared/data):

=============================  ========  ========  ========  ==========  ===============
fold (scenes left out)         pretrain  stage 1   stage 2   ``train``   whole process
=============================  ========  ========  ========  ==========  ===============
abu-airport-3, abu-urban-5       13.9 s    24.1 s    44.2 s     84.2 s       86.5 s
abu-beach-1, abu-urban-2         12.4 s    38.0 s    55.6 s    107.9 s      109.9 s
=============================  ========  ========  ========  ==========  ===============

(the second run was probably slowed by other jobs on the shared cores: same step counts, stage 1
took 1.6x longer; the first fold measured 75.7 s in an earlier run). With ``threads=1`` (what
cross-validation uses, two jobs side by side) the first fold took 130.2 s (23.8 / 35.2 / 69.1 s).
Results are bit-identical only for the same thread count: 1 and 2 threads give (slightly)
different weights.
Per step: pretraining ~0.03 s, stage 1 ~0.06 s, stage 2 ~0.11-0.14 s; data preparation ~1.5 s.
(These were measured with the earlier 32-wide restoration net. At the current 16, stage 2 takes
~0.12 s per step on one thread and a whole main training 89-110 s on one thread beside another
one: cross-validation, commit 2ee77cb.)
So one fold and one seed fit the 3-minute budget with ~1.7x headroom; ``MEASURED_FOLD_SECONDS``
holds the slowest measurement. ``--encoder random`` drops the pretraining (~13 s).

Measured behaviour to know about (defaults, the two folds above; see ``feature_stats`` in
``train_config.json``): after stage 1 the spectral output is large against the cube (mean |f_spe|
~2.4 vs mean |x| ~0.07; per-band spatial std 0.18-0.26 vs 0.02), so ``alpha_spe`` must be chosen
accordingly; and with the published stage-2 weights the spatial student ends as a *constant*
field (per-band spatial std ~1e-7: invisible to RX). It starts nearly constant (std ~1e-5 at init
on inputs of std 0.02), the variance hinge (threshold 1) gives it almost no gradient at that scale,
while the decorrelation and anti-similarity terms are minimised by a constant f_spa. Stage 2 at lr
5e-3 also shows loss spikes (one fold ended its last epoch at a mean loss of 463, reconstruction
term); ``grad_clip`` is there for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from edge_had.atomic_files import replace_via_temporary, write_bytes_atomically
from edge_had.errors import EdgeHadError
from edge_had.io import Scene
from edge_had.models.bundle import (
    MODEL_CARD_FILE,
    SIDECAR_FILE,
    ModelConfig,
    ModelError,
    load_bundle,
    save_bundle,
)
from edge_had.models.normalize import Normalization
from edge_had.models.spatial import SpatialStudent
from edge_had.models.spectral import SpectralEnhancer
from edge_had.provenance import package_commit
from edge_had.train.config import (
    StartFromError,
    TrainConfig,
    TrainError,
    same_setting,
    shared_phases,
    with_defaults,
)
from edge_had.train.data import (
    SceneSampler,
    TileSampler,
    TrainingScene,
    background_spectra,
    load_labelled_scenes,
    load_training_scenes,
    rankable,
    training_scenes,
)
from edge_had.train.loops import (
    RANKING_BETAS,
    LossHistory,
    PretrainTrainer,
    RankingTrainer,
    Stage1Trainer,
    Stage2Trainer,
)
from edge_had.train.numerics import numerics_note, numerics_record

__all__ = ["MEASURED_FOLD_SECONDS", "TrainConfig", "TrainError", "checkpoint_path", "train"]

#: Measured wall time (s) of the defaults, ``--stage all``, one fold of 8 real scenes, 2 CPU cores.
MEASURED_FOLD_SECONDS: float = 107.9

TRAIN_CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
CHECKPOINT_FORMAT = "edge-had-checkpoint"
# fields that may change between a run and its resumption
_RESUMABLE_CHANGES = (
    "resume",
    "keep_all_checkpoints",
    "threads",
    "device",
    "progress",
    "command",
    "out",
    "data",
)


def phase_seed(seed: int, phase: str) -> int:
    """A 63-bit seed for one phase of a run, derived from ``(seed, phase)``."""
    digest = hashlib.sha256(f"edge-had:{int(seed)}:{phase}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(use_cuda: bool) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), here)


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if config.device not in ("auto", "cuda") and not config.device.startswith("cuda"):
        raise TrainError(f"device must be 'auto', 'cpu' or 'cuda', got {config.device!r}")
    if not torch.cuda.is_available():
        raise TrainError("device 'cuda' requested but CUDA is not available")
    if config.device.startswith("cuda:"):
        return torch.device(config.device)
    return torch.device("cuda", local_rank)


# --------------------------------------------------------------------------- checkpoints


def _cpu_state(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    if module is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def checkpoint_path(out: str | Path, phase: str, epoch: int) -> Path:
    """Where a run in ``out`` saves its checkpoint after ``epoch`` of ``phase``."""
    return Path(out) / CHECKPOINT_DIR / f"{phase}-epoch{epoch:03d}.pt"


def _save_checkpoint(
    out: Path, phase: str, epoch: int, state: dict[str, Any], *, keep_all: bool = False
) -> Path:
    path = checkpoint_path(out, phase, epoch)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    latest = json.dumps({"file": path.name, "phase": phase, "epoch": epoch}) + "\n"
    try:
        replace_via_temporary(path, lambda temporary: torch.save(state, temporary))
        write_bytes_atomically(folder / LATEST_FILE, latest.encode())
    except (OSError, RuntimeError) as error:  # torch.save says a full disk as a RuntimeError
        raise TrainError(
            f"cannot write the checkpoint {path} ({type(error).__name__}: {str(error).splitlines()[0]}): "
            "is the disk full? Free space and run again with --resume"
        ) from error
    if not keep_all and epoch > 1:  # only the newest epoch of each phase is kept
        (folder / f"{phase}-epoch{epoch - 1:03d}.pt").unlink(missing_ok=True)
    return path


def _load_latest_checkpoint(out: Path) -> dict[str, Any] | None:
    latest = out / CHECKPOINT_DIR / LATEST_FILE
    if not latest.is_file():
        return None
    try:
        pointer = json.loads(latest.read_text())
        path = out / CHECKPOINT_DIR / str(pointer["file"])
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (*UNREADABLE_CHECKPOINT, KeyError, TypeError) as error:  # TypeError: a pointer not a dict
        raise TrainError(
            f"{latest}: cannot read the latest checkpoint ({type(error).__name__}: {error}); "
            "delete the checkpoints folder to start over"
        ) from error
    _check_checkpoint(state, f"{path}", "delete the checkpoints folder to start over")
    return state


#: what every checkpoint holds (saved at the end of each epoch)
CHECKPOINT_KEYS = ("config", "data", "phase", "epoch", "completed", "spectral", "trainer", "histories")


def _check_checkpoint(state: Any, name: str, fix: str) -> None:
    """A loaded checkpoint is an edge-had one with every part a run reads (a clear TrainError, not
    a KeyError or TypeError later)."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{name}: not an edge-had checkpoint; {fix}")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing or not isinstance(state["config"], dict):
        raise TrainError(
            f"{name}: an incomplete or damaged checkpoint (missing {missing or ['a config']}); {fix}"
        )


#: what torch.load raises on a file that is not a whole checkpoint: truncated or empty (EOFError),
#: random bytes (pickle's UnpicklingError), a refused type under weights_only (RuntimeError)
UNREADABLE_CHECKPOINT = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError)


def _check_threads(checkpoint: dict[str, Any], what: str) -> None:
    """Phases run on another number of CPU threads give (slightly) other weights: refused."""
    used, now = checkpoint.get("threads_used"), torch.get_num_threads()
    if used is not None and used != now:  # None: an older checkpoint, which did not record it
        raise TrainError(
            f"{what}: its phases ran on {used} CPU thread(s), this run has {now}: "
            "the weights would differ slightly (set --threads to match)"
        )


def _data_identity(data: Sequence[TrainingScene]) -> list[list[Any]]:
    return [[s.name, s.sha256, list(s.x.shape)] for s in data]


def _check_resumable(config: TrainConfig, checkpoint: dict[str, Any], data: Sequence[TrainingScene]) -> None:
    if checkpoint.get("data") != _data_identity(data):
        raise TrainError(
            "cannot resume: the training scenes (names, SHA-256, shapes) differ from the checkpoint's "
            f"({checkpoint.get('data')} -> {_data_identity(data)})"
        )
    saved = with_defaults(checkpoint["config"])  # a checkpoint older than a field: its default
    now = config.to_json()
    diffs = sorted(
        key
        for key in set(now) | set(saved)
        if key not in _RESUMABLE_CHANGES and not same_setting(key, saved.get(key), now.get(key))
    )
    if diffs:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diffs)
        raise TrainError(f"cannot resume: the config differs from the checkpoint's ({detail})")


#: what a checkpoint's phases took their loss over; written since data-parallel runs take it over
#: the global batch (before, each process took its own batch's: another objective for stage 2)
LOSS_BATCH = "global"


def _check_world_size(checkpoint: dict[str, Any], world_size: int, what: str) -> None:
    """Phases trained on another number of processes drew other samples (the global batch is
    ``batch x world size``): refused like another thread count (None: an older checkpoint). A
    data-parallel checkpoint written before the losses were taken over the global batch
    (no ``loss_batch``) trained another objective: refused too."""
    used = checkpoint.get("world_size_used")
    if used is not None and used != world_size:
        raise TrainError(
            f"{what}: its phases ran on {used} process(es), this run on {world_size}: the global "
            "batch and the samples would differ (run with the same torchrun --nproc_per_node)"
        )
    if used is not None and used > 1 and checkpoint.get("loss_batch") != LOSS_BATCH:
        raise TrainError(
            f"{what}: its phases ran on {used} processes, each taking the loss of its own batch (an "
            "edge-had before the losses were taken over the global batch): continuing would change "
            "the objective mid-run; train from the start"
        )


def _start_from(config: TrainConfig, data: Sequence[TrainingScene]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``config.start_from`` and check that this run may take its completed phases: the
    checkpoint was saved at the end of a phase, the same scenes, and :func:`shared_phases` covers
    every phase it completed. Returns the checkpoint and the record of where it came from."""
    path = Path(str(config.start_from))
    try:
        raw = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_CHECKPOINT as error:
        raise StartFromError(
            f"start_from {path}: cannot read the checkpoint ({type(error).__name__}: {error})"
        ) from error
    try:
        _check_checkpoint(state, f"start_from {path}", "take one a run saved")
    except TrainError as error:
        raise StartFromError(str(error)) from None
    completed = list(state["completed"])
    if state["phase"] not in completed:
        raise StartFromError(
            f"start_from {path}: saved in the middle of {state['phase']} (epoch {state['epoch']}); "
            "take a checkpoint from the end of a phase"
        )
    if state.get("data") != _data_identity(data):
        raise StartFromError(
            f"start_from {path}: the training scenes (names, SHA-256, shapes) differ from this run's "
            f"({state.get('data')} -> {_data_identity(data)})"
        )
    try:
        _check_threads(state, f"start_from {path}")
    except TrainError as error:
        raise StartFromError(str(error)) from None
    shared = shared_phases(state["config"], config)
    if shared[: len(completed)] != completed:
        raise StartFromError(
            f"start_from {path}: this run cannot take {', '.join(completed)}: its phases or their "
            f"settings differ (shared: {', '.join(shared) or 'none'})"
        )
    record = {
        "checkpoint": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "phases": completed,
        "elapsed_s": float(state["elapsed_s"]),
    }
    return state, record


# --------------------------------------------------------------------------- the run


def _scene_record(scene: TrainingScene) -> dict[str, Any]:
    return {
        "name": scene.name,
        "sha256": scene.sha256,
        "shape": list(scene.x.shape),
        "background_pixels": int(scene.background.sum()),
        "adapter": scene.adapter_mode,
        "normalization_lo_hi": list(scene.normalization),
        "ground_truth": scene.ground_truth,  # False: nothing masked (no map)
        "unlabelled_pixels": scene.unlabelled_pixels,  # the map leaves out: masked when anomalies are
    }


def _epoch_summary(history: LossHistory) -> dict[str, Any]:
    n = max(len(history), 1)
    return {
        "loss": sum(history) / n,
        "parts": {name: sum(values) / max(len(values), 1) for name, values in history.parts.items()},
    }


def _feature_stats(
    spectral: SpectralEnhancer, spatial: SpatialStudent | None, data: Sequence[TrainingScene]
) -> dict[str, float]:
    """Scale of the features against the cube on the training scenes' background pixels.

    ``*_abs``: mean absolute value; ``*_std``: per-band spatial standard deviation (mean over bands
    and scenes), the part of a feature RX can use (a constant offset is invisible to it). The alphas
    of the fusion multiply f_spe and f_spa, so these ratios are what to set them against.
    """
    sums: dict[str, float] = {}
    with torch.no_grad():
        for scene in data:
            x = scene.x[None]
            m = scene.background[None].float()
            n = m.sum().clamp_min(1.0)
            maps = {"x": x, "f_spe": spectral(x)}
            if spatial is not None:
                maps["f_spa"] = spatial(x)
            for name, f in maps.items():
                mean = (f * m).sum(dim=(0, 2, 3)) / n
                var = (((f - mean[None, :, None, None]) ** 2) * m).sum(dim=(0, 2, 3)) / n
                sums[f"{name}_abs"] = sums.get(f"{name}_abs", 0.0) + float(
                    (f.abs() * m).sum() / (n * f.shape[1])
                )
                sums[f"{name}_std"] = sums.get(f"{name}_std", 0.0) + float(var.sqrt().mean())
    return {name: value / len(data) for name, value in sums.items()}


def _load_stage1_spectral(config: TrainConfig, out: Path) -> tuple[SpectralEnhancer, str]:
    try:
        bundle = load_bundle(out)
    except EdgeHadError as error:
        raise TrainError(
            f"stage 2 alone needs the stage-1 bundle in {out} (run --stage 1 first): {error}"
        ) from error
    c = bundle.config
    if (c.k, c.hidden, c.blocks) != (config.k, config.hidden, config.blocks):
        raise TrainError(
            f"{out}: the stage-1 bundle has k={c.k}, hidden={c.hidden}, blocks={c.blocks}; "
            f"this run asks for k={config.k}, hidden={config.hidden}, blocks={config.blocks}"
        )
    spectral = bundle.spectral
    for p in spectral.parameters():
        p.requires_grad_(False)
    return spectral, bundle.sha256


def train(
    config: TrainConfig,
    *,
    scenes: Sequence[Scene] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the configured stages and write the bundle; returns the ``train_config.json`` record.

    The returned dict also holds ``"rank"`` and ``"networks"`` (the trained ``spectral`` and
    ``spatial`` modules, on the CPU, in eval mode), which are not written to the JSON.
    ``scenes`` replaces the data folder by in-memory scenes (tests); ``config.exclude`` applies to
    either. ``log`` is a ``print``-like callable for one line per epoch (default: ``print`` when
    ``config.progress``, silent otherwise; rank 0 only).
    """
    start = time.perf_counter()
    wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    ddp = _setup_distributed(wants_cuda)
    device = _device(config, ddp.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    say = log if log is not None else (print if config.progress else (lambda *a, **k: None))
    if not ddp.main:
        say = lambda *a, **k: None  # noqa: E731
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if config.threads:
            torch.set_num_threads(int(config.threads))
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        record = _run(config, scenes, ddp, device, say, start)
        if ddp.active:
            dist.barrier()
        return record
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
        if ddp.initialised_here:
            dist.destroy_process_group()


def _check_rankable(config: TrainConfig, scenes: Sequence[Scene], world_size: int) -> None:
    """The ranking phase's needs, checked before any phase runs: labelled scenes, and whole ones
    for every process (as :class:`SceneSampler` would find out after the phases before it)."""
    if not any(phase == "ranking" for phase, _ in config.phases()):
        return
    labelled = sum(rankable(scene) for scene in scenes)
    if labelled == 0:
        raise TrainError(
            "ranking phase: no training scene has ground-truth anomalies (and background): nothing to "
            "rank; give labelled scenes or --ranking-epochs 0"
        )
    if labelled < world_size:
        raise TrainError(
            f"ranking phase: every process ranks whole scenes: {labelled} labelled scene(s) cannot feed "
            f"{world_size} processes"
        )


def _say_what_is_not_masked(data: Sequence[TrainingScene]) -> None:
    """Notes on what anomaly masking cannot do with the scenes' maps: scenes without one (nothing
    masked: any anomaly trained on as background), and the pixels the maps leave unlabelled
    (masked as anomalies are) - each recorded per scene in train_config.json."""
    without_map = [scene.name for scene in data if not scene.ground_truth]
    if without_map:
        print(
            f"note: {', '.join(without_map)} ha{'s' if len(without_map) == 1 else 've'} no ground truth: "
            "nothing is masked there, so any anomaly in them is trained on as background (recorded "
            "per scene in train_config.json, 'ground_truth': false)",
            file=sys.stderr,
        )
    partly = [f"{scene.name} {scene.unlabelled_pixels}" for scene in data if scene.unlabelled_pixels]
    if partly:
        print(
            f"note: pixels the ground-truth maps leave unlabelled ({', '.join(partly)}) are masked as "
            "anomalies are, not trained on as background (train_config.json: 'unlabelled_pixels')",
            file=sys.stderr,
        )


def _run(
    config: TrainConfig,
    scenes: Sequence[Scene] | None,
    ddp: _Dist,
    device: torch.device,
    say: Any,
    start: float,
) -> dict[str, Any]:
    out = Path(config.out)
    # each scene file is read once; the phases prepare their own views of the scenes
    source = training_scenes(scenes if scenes is not None else config.data, config.exclude, config.interleave)
    data = load_training_scenes(source, (), config.k, config.mask_anomalies)
    say(f"training on {len(data)} scene(s): {', '.join(s.name for s in data)}")
    if config.mask_anomalies and ddp.main:  # said even with --quiet: what was learnt
        _say_what_is_not_masked(data)
    _check_rankable(config, source, ddp.world_size)  # now, not after the phases before ranking

    checkpoint = _load_latest_checkpoint(out) if config.resume else None
    if config.stage == "2" and checkpoint is not None and checkpoint.get("phase") != "stage2":
        checkpoint = None  # the stage-1 run's, which this run continues from its bundle: nothing to resume
    if config.resume and checkpoint is None and ddp.main:  # said even with --quiet: not progress
        what = "stage-2 checkpoint" if config.stage == "2" else "checkpoint"
        print(f"--resume: no {what} in {out / CHECKPOINT_DIR}: starting from scratch", file=sys.stderr)
    started_from = None
    resuming = checkpoint is not None  # else the checkpoint, if any, is another run's (start_from)
    if checkpoint is not None:
        _check_resumable(config, checkpoint, data)
        _check_world_size(checkpoint, ddp.world_size, "cannot resume")
        _check_threads(checkpoint, "cannot resume")
        started_from = checkpoint.get("started_from")
    elif config.start_from is not None:
        checkpoint, started_from = _start_from(config, data)
        _check_world_size(checkpoint, ddp.world_size, f"start_from {config.start_from}")
        say(f"taking {', '.join(started_from['phases'])} from {config.start_from}")
    numerics = numerics_record(device)  # this machine's arithmetic (edge_had/train/numerics.py)
    numerics_changed_from = None
    if checkpoint is not None:
        saved = checkpoint.get("numerics_fingerprint")
        what = "the checkpoint resumed" if resuming else f"start_from {config.start_from}"
        note = numerics_note(saved, numerics["fingerprint"], what)
        if note is not None:
            numerics_changed_from = saved
            if ddp.main:  # said even with --quiet: the weights' provenance, not progress
                print(note, file=sys.stderr)

    previous = None
    spectral_source = None
    if config.stage == "2":
        spectral, spectral_source = _load_stage1_spectral(config, out)
        record_path = out / TRAIN_CONFIG_FILE
        if record_path.is_file():
            previous = json.loads(record_path.read_text())
    else:
        torch.manual_seed(phase_seed(config.seed, "spectral"))
        spectral = SpectralEnhancer(config.k, config.hidden, config.blocks)
    spectral.to(device)
    spatial: SpatialStudent | None = None

    histories: dict[str, Any] = {}
    completed: list[str] = []
    elapsed_before = 0.0
    resume_phase: str | None = None
    resume_epoch = 0
    resume_trainer: Any = None  # the state dicts of the phase a resumed run continues
    resume_sampler: Any = None
    if checkpoint is not None:
        spectral.load_state_dict(checkpoint["spectral"])
        histories = checkpoint["histories"]
        completed = list(checkpoint["completed"])
        # a run started from another's checkpoint counts only its own time (the other run's is
        # in that run's record)
        elapsed_before = float(checkpoint["elapsed_s"]) if resuming else 0.0
        resume_phase, resume_epoch = checkpoint["phase"], int(checkpoint["epoch"])
        resume_trainer, resume_sampler = checkpoint["trainer"], checkpoint["sampler"]
        if resuming:
            say(f"resuming after {resume_phase} epoch {resume_epoch}")

    common: dict[str, Any] = {
        "lr": config.lr,
        "betas": config.betas,
        "device": device,
        "distributed": ddp.active,
        "grad_clip": config.grad_clip,
    }
    for phase, epochs in config.phases():
        seed = phase_seed(config.seed, phase)
        torch.manual_seed(seed)
        if phase == "stage2":
            spatial = SpatialStudent(config.k).to(device)
            if checkpoint is not None and checkpoint.get("spatial") is not None:
                spatial.load_state_dict(checkpoint["spatial"])
        if phase in completed:
            continue
        sampler: TileSampler | SceneSampler
        if phase == "ranking":
            # implant donors: every training scene's background (anomalies inpainted and masked)
            donors = [(s.name, background_spectra(s)) for s in data] if config.ranking_implants else None
            try:
                sampler = SceneSampler(
                    load_labelled_scenes(source, (), config.k),
                    config.ranking_crop,
                    config.ranking_negatives,
                    seed,
                    rank=ddp.rank,
                    world_size=ddp.world_size,
                    implant_from=donors,
                )
            except ValueError as error:
                raise TrainError(f"ranking phase: {error}") from error
        else:
            sampler = TileSampler(
                data,
                config.tile,
                config.batch,
                seed,
                rank=ddp.rank,
                world_size=ddp.world_size,
                augment=config.augment,
            )
        trainer: PretrainTrainer | Stage1Trainer | RankingTrainer | Stage2Trainer
        if phase == "pretrain":
            trainer = PretrainTrainer(
                spectral, seed=seed + 1, rank=ddp.rank, world_size=ddp.world_size, **common
            )
        elif phase == "stage1":
            trainer = Stage1Trainer(spectral, weights=config.stage1_weights(), **common)
        elif phase == "ranking":
            trainer = RankingTrainer(
                spectral,
                alpha=config.ranking_alpha,
                temperature=config.ranking_temperature,
                lr=config.ranking_lr,
                betas=RANKING_BETAS,
                device=device,
                distributed=ddp.active,
                grad_clip=config.grad_clip,
            )
        else:
            assert spatial is not None
            trainer = Stage2Trainer(
                spectral,
                spatial,
                weights=config.stage2_weights(),
                restoration_width=config.restoration_width,
                **common,
            )
        first_epoch = 0
        if phase == resume_phase:
            trainer.load_state_dict(resume_trainer)
            sampler.load_state_dict(resume_sampler)
            first_epoch = resume_epoch
        record = histories.setdefault(
            phase, {"loss": [], "epoch_mean": [], "epoch_parts": [], "epoch_seconds": []}
        )
        for epoch in range(first_epoch, epochs):
            tic = time.perf_counter()
            history = trainer.run(
                sampler,
                config.steps_per_epoch,
                progress=config.progress and ddp.main,
                desc=f"{phase} {epoch + 1}/{epochs}",
            )
            summary = _epoch_summary(history)
            record["loss"].extend(history)
            record["epoch_mean"].append(summary["loss"])
            record["epoch_parts"].append(summary["parts"])
            record["epoch_seconds"].append(time.perf_counter() - tic)
            parts = " ".join(f"{k}={v:.4g}" for k, v in summary["parts"].items())
            say(f"{phase} epoch {epoch + 1}/{epochs}: loss {summary['loss']:.5g} ({parts})")
            if epoch + 1 == epochs:
                trainer.finish(spatial if phase == "stage2" else spectral)  # type: ignore[arg-type]
                completed.append(phase)
            if ddp.main:
                _save_checkpoint(
                    out,
                    phase,
                    epoch + 1,
                    {
                        "format": CHECKPOINT_FORMAT,
                        "version": 1,
                        "config": config.to_json(),
                        "data": _data_identity(data),
                        "phase": phase,
                        "epoch": epoch + 1,
                        "completed": list(completed),
                        "spectral": _cpu_state(spectral),
                        "spatial": _cpu_state(spatial),
                        "trainer": trainer.state_dict(),
                        "sampler": sampler.state_dict(),
                        "histories": histories,
                        "elapsed_s": elapsed_before + time.perf_counter() - start,
                        "started_from": started_from,
                        "threads_used": torch.get_num_threads(),
                        "world_size_used": ddp.world_size,
                        "loss_batch": LOSS_BATCH,
                        "numerics_fingerprint": numerics["fingerprint"],
                    },
                    keep_all=config.keep_all_checkpoints,
                )
        if phase not in completed:  # epochs == first_epoch: finished right at the checkpoint
            trainer.finish(spatial if phase == "stage2" else spectral)  # type: ignore[arg-type]
            completed.append(phase)

    spectral_cpu = spectral.to("cpu").eval()
    spatial_cpu = None if spatial is None else spatial.to("cpu").eval()
    model_config = ModelConfig(
        k=config.k,
        hidden=config.hidden,
        blocks=config.blocks,
        spatial=spatial_cpu is not None,
        alpha_spe=config.alpha_spe,
        alpha_spa=config.alpha_spa,
        normalization=Normalization().to_dict(),
    )
    stats = _feature_stats(spectral_cpu, spatial_cpu, data)
    wall = elapsed_before + time.perf_counter() - start
    result: dict[str, Any] = {
        "config": config.to_json(),
        "command": config.command,
        "model_config": model_config.to_dict(),
        "phases": [name for name, _ in config.phases()],
        "data": [_scene_record(s) for s in data],
        "histories": histories,
        "final_losses": {name: h["epoch_mean"][-1] for name, h in histories.items() if h["epoch_mean"]},
        "feature_stats": stats,
        "wall_time_s": wall,
        "device": str(device),
        "world_size": ddp.world_size,
        "threads": torch.get_num_threads(),
        "numerics": numerics,  # weights are bit-identical only where this fingerprint is the same
        "numerics_changed_from": numerics_changed_from,  # a checkpoint taken from another machine's
        "torch_version": torch.__version__,
        "package_commit": package_commit(),  # which code trained it (crossval's cache says so)
        "spectral_from_bundle_sha256": spectral_source,
        "started_from": started_from,
        "previous_run": previous,
        "bundle": str(out),
    }
    if ddp.main:
        for stale in (SIDECAR_FILE, MODEL_CARD_FILE):  # they describe the weights replaced now
            (out / stale).unlink(missing_ok=True)
        try:
            save_bundle(out, model_config, spectral_cpu, spatial_cpu)
            write_bytes_atomically(out / TRAIN_CONFIG_FILE, (json.dumps(result, indent=2) + "\n").encode())
        except ModelError as error:
            raise TrainError(f"{error}; the checkpoints are kept: run again with --resume") from error
    result["rank"] = ddp.rank
    result["networks"] = {"spectral": spectral_cpu, "spatial": spatial_cpu}
    return result
