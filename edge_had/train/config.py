"""What defines a training run: :class:`TrainConfig` (torch-free, so the CLI can build its options
without importing torch) and :class:`TrainError`. The run itself is :func:`edge_had.train.runner.train`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edge_had import settings
from edge_had.cli_types import INTERLEAVES  # the readers' layouts, without importing a reader
from edge_had.errors import EdgeHadError

if TYPE_CHECKING:
    from edge_had.train.losses import Stage1Weights, Stage2Weights


class TrainError(EdgeHadError, ValueError):
    """A training configuration or checkpoint problem (the message says what to change)."""


class StartFromError(TrainError):
    """``start_from`` names a checkpoint this run cannot take its first phases from."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in ``train_config.json``)."""

    data: str = field(default_factory=lambda: str(settings.data_dir()))
    out: str = "model"
    stage: str = "all"  # "1", "2" or "all"
    epochs: int = 10
    steps_per_epoch: int = 40
    pretrain_epochs: int = 10
    tile: int = 32
    batch: int = 16
    lr: float = 5e-3
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float | None = None
    seed: int = 0
    k: int = 64
    hidden: int = 32
    blocks: int = 3
    encoder: str = "pretrained"  # "random" or "pretrained"
    reverse_distillation: bool = True
    spatial: bool = True
    feature_cosine_weight: float = 1.0
    cube_mse_weight: float = 1.0
    alignment_weight: float = 0.1
    decorrelation_weight: float = 1.0
    anti_similarity_weight: float = 0.1
    variance_weight: float = 0.1
    reconstruction_weight: float = 1.0
    relative_variance: bool = True
    #: width of stage 2's training-only restoration net (16: its 3x3 convolutions were 60 % of a
    #: stage-2 step at 32; it never ships)
    restoration_width: int = 16
    mask_anomalies: bool = True
    #: supervised ranking phase (0 = off): epochs, Adam lr, logistic temperature, the f_spe scale
    #: it trains at, background pixels drawn per scene and step, largest crop side
    ranking_epochs: int = 0
    ranking_lr: float = 1e-3
    ranking_temperature: float = 0.5
    ranking_alpha: float = 1.0
    ranking_negatives: int = 2048
    ranking_crop: int = 256
    #: implanted anomalies in every ranking crop besides its labelled ones (see
    #: :func:`edge_had.train.data.implant_anomalies`): more kinds of "rare in this scene" to rank
    ranking_implants: bool = False
    augment: bool = True
    alpha_spe: float = 1.0
    alpha_spa: float = 1.0
    exclude: tuple[str, ...] = ()
    #: how the training scene files' cubes are stored (``load_scene(..., interleave=)``; None:
    #: each file's own, rows x cols x bands for .mat / .h5 / .npy)
    interleave: str | None = None
    threads: int | None = None
    device: str = "auto"  # "auto", "cpu", "cuda"
    resume: bool = False
    #: a checkpoint of another run saved at the end of a phase: its completed phases become this
    #: run's first phases (see :func:`shared_phases`) and only the rest runs here
    start_from: str | None = None
    keep_all_checkpoints: bool = False
    progress: bool = True
    command: list[str] | None = None

    def __post_init__(self) -> None:
        self.stage = str(self.stage)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.exclude = tuple(str(name) for name in self.exclude)
        self.data = str(self.data)
        self.out = str(self.out)
        if self.interleave is not None and self.interleave not in INTERLEAVES:
            raise TrainError(
                f"interleave must be one of {', '.join(INTERLEAVES)} or None, got {self.interleave!r}"
            )
        if self.stage not in ("1", "2", "all"):
            raise TrainError(f"stage must be '1', '2' or 'all', got {self.stage!r}")
        if self.encoder not in ("random", "pretrained"):
            raise TrainError(f"encoder must be 'random' or 'pretrained', got {self.encoder!r}")
        for name in ("epochs", "steps_per_epoch", "tile", "batch", "k", "hidden"):
            if int(getattr(self, name)) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_epochs < 0 or self.blocks < 1:
            raise TrainError("need pretrain_epochs >= 0 and blocks >= 1")
        if self.ranking_epochs < 0 or self.ranking_lr <= 0 or self.ranking_temperature <= 0:
            raise TrainError("need ranking_epochs >= 0, ranking_lr > 0 and ranking_temperature > 0")
        if self.ranking_negatives < 1 or self.ranking_alpha <= 0:
            raise TrainError("need ranking_negatives >= 1 and ranking_alpha > 0")
        if self.ranking_crop**2 < 4 * self.k:
            raise TrainError(
                f"ranking_crop {self.ranking_crop} is too small for RX in {self.k} bands: a crop needs "
                f"at least 4 K pixels (ranking_crop >= {math.ceil(math.sqrt(4 * self.k))})"
            )
        if self.ranking_implants and not self.mask_anomalies:
            raise TrainError(
                "ranking_implants takes its spectra from the training scenes' background, which "
                "includes their anomalies when mask_anomalies is off: turn masking on"
            )
        if self.start_from is not None and self.stage == "2":
            raise TrainError("start_from takes the first phases of a run; --stage 2 has no earlier phase")
        if self.stage == "2" and not self.spatial:
            raise TrainError("stage 2 trains the spatial student; with spatial off there is nothing to do")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        data["exclude"] = list(self.exclude)
        return data

    def stage1_weights(self) -> Stage1Weights:
        from edge_had.train.losses import Stage1Weights

        return Stage1Weights(
            feature_cosine=self.feature_cosine_weight,
            cube_mse=self.cube_mse_weight,
            alignment=self.alignment_weight,
        )

    def stage2_weights(self) -> Stage2Weights:
        from edge_had.train.losses import Stage2Weights

        return Stage2Weights(
            decorrelation=self.decorrelation_weight,
            cosine=self.anti_similarity_weight,
            variance=self.variance_weight,
            reconstruction=self.reconstruction_weight,
            relative_variance=self.relative_variance,
        )

    def unused_settings(self) -> list[str]:
        """Phase settings changed from their defaults that no phase of this run reads (recorded,
        but changing nothing: ``--ranking-lr`` without ranking epochs, ``--pretrain-epochs`` with
        a random encoder, ``--decorrelation-weight`` without a student or at ``--stage 1``). A
        setting that keeps a phase of this stage from running (``--ranking-epochs 0``,
        ``--no-spatial``, ...) is used."""
        default = TrainConfig(data=self.data, out=self.out)
        running = {phase for phase, _ in self.phases()}
        in_stage = {"pretrain", "stage1", "ranking"} if self.stage in ("1", "all") else set()
        in_stage |= {"stage2"} if self.stage in ("2", "all") else set()
        turns_off = {
            "encoder": self.encoder != "pretrained",
            "pretrain_epochs": self.pretrain_epochs == 0,
            "reverse_distillation": not self.reverse_distillation,
            "ranking_epochs": self.ranking_epochs == 0,
            "spatial": not self.spatial,
        }
        unused = set()
        for phase, names in PHASE_SETTINGS.items():
            for name in names:
                if getattr(self, name) == getattr(default, name):
                    continue
                if any(name in PHASE_SETTINGS[other] for other in running):
                    continue
                if phase in in_stage and turns_off.get(name, False):
                    continue
                unused.add(name)
        if not self.spatial and self.alpha_spa != default.alpha_spa:  # no student: f_spa is zero
            unused.add("alpha_spa")
        return sorted(unused)

    def phases_text(self) -> str:
        """The phases as ``stage1 (8 epochs), stage2 (8 epochs)``, or ``none``."""
        return ", ".join(f"{phase} ({epochs} epochs)" for phase, epochs in self.phases()) or "none"

    def phases(self) -> list[tuple[str, int]]:
        """``[(phase, epochs), ..]`` in order."""
        out: list[tuple[str, int]] = []
        if self.stage in ("1", "all"):
            if self.encoder == "pretrained" and self.pretrain_epochs > 0:
                out.append(("pretrain", self.pretrain_epochs))
            if self.reverse_distillation:
                out.append(("stage1", self.epochs))
            if self.ranking_epochs > 0:
                out.append(("ranking", self.ranking_epochs))
        if self.stage in ("2", "all") and self.spatial:
            out.append(("stage2", self.epochs))
        return out


#: Settings every phase depends on (besides the training scenes and the phases before it).
COMMON_SETTINGS = (
    "seed",
    "k",
    "hidden",
    "blocks",
    "tile",
    "batch",
    "steps_per_epoch",
    "lr",
    "betas",
    "grad_clip",
    "mask_anomalies",
    "augment",
    "exclude",  # in any order (same_setting)
    "interleave",  # how the scenes were read: another order is other training data
    "threads",  # another thread count gives (slightly) different weights: the count used is compared
    "device",
)
#: Settings of one phase only (``epochs`` is both reverse distillation's and the student's).
PHASE_SETTINGS: dict[str, tuple[str, ...]] = {
    "pretrain": ("encoder", "pretrain_epochs"),
    "stage1": (
        "reverse_distillation",
        "epochs",
        "feature_cosine_weight",
        "cube_mse_weight",
        "alignment_weight",
    ),
    "ranking": (
        "ranking_epochs",
        "ranking_lr",
        "ranking_temperature",
        "ranking_alpha",
        "ranking_negatives",
        "ranking_crop",
        "ranking_implants",
    ),
    "stage2": (
        "spatial",
        "epochs",
        "decorrelation_weight",
        "anti_similarity_weight",
        "variance_weight",
        "reconstruction_weight",
        "relative_variance",
        "restoration_width",
    ),
}
#: Settings that change no weight of any phase (where things go, how they are shown, the scales
#: recorded in the bundle, which stages this invocation runs).
BOOKKEEPING_SETTINGS = (
    "data",
    "out",
    "stage",
    "alpha_spe",
    "alpha_spa",
    "resume",
    "start_from",
    "keep_all_checkpoints",
    "progress",
    "command",
)


#: Settings compared by what they mean rather than as written: the excluded scenes in any order
#: (the training scenes themselves are compared apart, by name and SHA-256), and no thread count
#: (the count a run actually used is compared apart: ``--threads`` unset may mean the same one).
_MEANING = {"exclude": lambda value: sorted(value or []), "threads": lambda value: None}


def same_setting(name: str, recorded: Any, now: Any) -> bool:
    """Whether setting ``name`` recorded as ``recorded`` trains as it does with ``now``."""
    meaning = _MEANING.get(name, lambda value: value)
    return bool(meaning(recorded) == meaning(now))


def with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded config (``to_json``) with every field it predates at its default."""
    return {**TrainConfig(data="", out="").to_json(), **recorded}


def _recorded_config(source: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**with_defaults(source), "out": "", "command": None, "start_from": None})


def trains_the_same(source: dict[str, Any], target: TrainConfig) -> bool:
    """Whether a run with config ``source`` (a ``to_json`` dict) computes exactly the phases of
    ``target`` with the same settings (the training scenes must be checked apart)."""
    phases = [name for name, _ in target.phases()]
    return len(_recorded_config(source).phases()) == len(phases) and shared_phases(source, target) == phases


def shared_phases(source: dict[str, Any], target: TrainConfig) -> list[str]:
    """The first phases of ``target`` that a run with config ``source`` (a ``to_json`` dict, e.g.
    a checkpoint's) computes identically: the longest common prefix of both phase lists along
    which every common and phase setting agrees. The training scenes must be checked apart."""
    before = _recorded_config(source)
    settings_a, settings_b = before.to_json(), target.to_json()

    def agree(names: tuple[str, ...]) -> bool:
        return all(same_setting(name, settings_a[name], settings_b[name]) for name in names)

    if not agree(COMMON_SETTINGS):
        return []
    shared: list[str] = []
    for (phase_a, epochs_a), (phase_b, epochs_b) in zip(before.phases(), target.phases(), strict=False):
        if phase_a != phase_b or epochs_a != epochs_b or not agree(PHASE_SETTINGS[phase_a]):
            break
        shared.append(phase_a)
    return shared
