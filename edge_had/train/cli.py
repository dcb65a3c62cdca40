"""``edge-had train``: argparse options (:func:`add_train_arguments`) and the command (:func:`run_train`).

The main CLI (:mod:`edge_had.cli`) adds a ``train`` sub-command with these options and calls
:func:`run_train`; everything else lives in :mod:`edge_had.train.runner`. Under
``torchrun --nproc_per_node=N -m edge_had.cli train ...`` it trains data-parallel unchanged.
"""

from __future__ import annotations

import argparse
import sys

from edge_had import settings
from edge_had.cli_types import add_interleave_option, integer_from, non_negative_number, positive_number

__all__ = ["add_train_arguments", "config_from_args", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser`` (defaults are :class:`TrainConfig`'s)."""
    from edge_had.train.config import TrainConfig

    d = TrainConfig(data="", out="")
    parser.add_argument(
        "--data",
        default=str(settings.data_dir()),
        help=f"folder of training scenes (default: ${settings.DATA_ENV} or {settings.DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write (bundle)")
    parser.add_argument(
        "--stage",
        choices=["1", "2", "all"],
        default="all",
        help="1: spectral teacher; 2: spatial student (loads stage 1 from --out); all: both (default)",
    )
    parser.add_argument(
        "--epochs",
        type=integer_from(0),
        default=d.epochs,
        help=f"epochs of stage 1 and of stage 2 ({d.epochs})",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=integer_from(1),
        default=d.steps_per_epoch,
        help=f"steps per epoch ({d.steps_per_epoch})",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        action="extend",  # --exclude a --exclude b leaves out both (the last one alone, before)
        default=[],
        metavar="SCENE",
        help="scene names (file stems) to leave out, e.g. a fold's test scenes",
    )
    add_interleave_option(parser)
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    parser.add_argument(
        "--encoder",
        choices=["random", "pretrained"],
        default=d.encoder,
        help=f"frozen stage-1 encoder: fixed random, or pretrained as a masked autoencoder ({d.encoder})",
    )
    parser.add_argument(
        "--no-reverse-distillation",
        dest="reverse_distillation",
        action="store_false",
        help="skip reverse distillation (the spectral head keeps its initial weights; ablation)",
    )
    parser.add_argument(
        "--no-spatial", dest="spatial", action="store_false", help="no spatial student (spectral-only model)"
    )
    parser.add_argument(
        "--decorrelation-weight",
        type=non_negative_number,
        default=d.decorrelation_weight,
        help=f"stage-2 decorrelation weight ({d.decorrelation_weight}; 0 = ablation)",
    )
    parser.add_argument(
        "--no-mask-anomalies",
        dest="mask_anomalies",
        action="store_false",
        help="train on ground-truth anomaly pixels too (default: they are inpainted and excluded)",
    )
    parser.add_argument(
        "--ranking-epochs",
        type=integer_from(0),
        default=d.ranking_epochs,
        help="epochs of the supervised ranking phase after stage 1: the spectral network learns to "
        "rank the training scenes' labelled anomalies above their background under global RX "
        f"({d.ranking_epochs} = off)",
    )
    parser.add_argument(
        "--alpha-spe",
        type=non_negative_number,
        default=d.alpha_spe,
        help=f"f_spe scale in the fusion ({d.alpha_spe})",
    )
    parser.add_argument(
        "--alpha-spa",
        type=non_negative_number,
        default=d.alpha_spa,
        help=f"f_spa scale in the fusion ({d.alpha_spa})",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument(
        "--start-from",
        metavar="CHECKPOINT",
        default=None,
        help="take the phases another run completed (its checkpoints/<phase>-epochNNN.pt at the end "
        "of a phase, same scenes and settings for those phases) and run only the rest",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument(
        "--threads", type=integer_from(1), default=None, help="torch CPU threads (default: torch's)"
    )
    more = parser.add_argument_group("more training options")
    more.add_argument(
        "--pretrain-epochs",
        type=integer_from(0),
        default=d.pretrain_epochs,
        help=f"encoder pretraining epochs ({d.pretrain_epochs})",
    )
    more.add_argument("--tile", type=integer_from(1), default=d.tile, help=f"tile size in pixels ({d.tile})")
    more.add_argument(
        "--batch", type=integer_from(1), default=d.batch, help=f"tiles per step and rank ({d.batch})"
    )
    more.add_argument("--lr", type=positive_number, default=d.lr, help=f"Adam learning rate ({d.lr})")
    more.add_argument(
        "--betas",
        type=float,
        nargs=2,
        default=list(d.betas),
        metavar=("B1", "B2"),
        help=f"Adam betas {d.betas}",
    )
    more.add_argument(
        "--grad-clip", type=positive_number, default=None, help="clip the gradient norm (default: off)"
    )
    more.add_argument("--k", type=integer_from(2), default=d.k, help=f"canonical bands ({d.k})")
    more.add_argument("--hidden", type=integer_from(1), default=d.hidden, help=f"spectral width ({d.hidden})")
    more.add_argument(
        "--blocks", type=integer_from(0), default=d.blocks, help=f"spectral blocks ({d.blocks})"
    )
    more.add_argument(
        "--ranking-lr",
        type=positive_number,
        default=d.ranking_lr,
        help=f"ranking phase Adam lr ({d.ranking_lr})",
    )
    more.add_argument(
        "--ranking-temperature",
        type=positive_number,
        default=d.ranking_temperature,
        help=f"ranking loss temperature in log-RX units ({d.ranking_temperature})",
    )
    more.add_argument(
        "--ranking-alpha",
        type=non_negative_number,
        default=d.ranking_alpha,
        help=f"f_spe scale the ranking phase trains at ({d.ranking_alpha})",
    )
    more.add_argument(
        "--ranking-implants",
        action="store_true",
        help="implant small anomalies (spectra of the other training scenes' background) into "
        "every ranking crop besides its labelled ones (off)",
    )
    more.add_argument("--device", default=d.device, help=f"auto, cpu or cuda ({d.device})")


def config_from_args(args: argparse.Namespace, command: list[str] | None = None):  # type: ignore[no-untyped-def]
    """The :class:`TrainConfig` of parsed ``train`` arguments; options no phase of the run reads
    are refused (they would be recorded and change nothing)."""
    from edge_had.train.config import TrainConfig

    config = TrainConfig(
        data=args.data,
        out=args.out,
        stage=args.stage,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        pretrain_epochs=args.pretrain_epochs,
        tile=args.tile,
        batch=args.batch,
        lr=args.lr,
        betas=tuple(args.betas),
        grad_clip=args.grad_clip,
        seed=args.seed,
        k=args.k,
        hidden=args.hidden,
        blocks=args.blocks,
        encoder=args.encoder,
        reverse_distillation=args.reverse_distillation,
        spatial=args.spatial,
        decorrelation_weight=args.decorrelation_weight,
        mask_anomalies=args.mask_anomalies,
        ranking_epochs=args.ranking_epochs,
        ranking_lr=args.ranking_lr,
        ranking_temperature=args.ranking_temperature,
        ranking_alpha=args.ranking_alpha,
        ranking_implants=args.ranking_implants,
        alpha_spe=args.alpha_spe,
        alpha_spa=args.alpha_spa,
        exclude=tuple(args.exclude),
        interleave=args.interleave,
        threads=args.threads,
        device=args.device,
        resume=args.resume,
        start_from=args.start_from,
        progress=not args.quiet,
        command=list(sys.argv) if command is None else command,
    )
    unused = config.unused_settings()
    if unused:
        switches = {"reverse_distillation", "spatial", "mask_anomalies"}  # given as --no-...
        flags = ", ".join(("--no-" if name in switches else "--") + name.replace("_", "-") for name in unused)
        raise ValueError(f"{flags}: no phase of this run reads them (its phases: {config.phases_text()})")
    return config


def run_train(args: argparse.Namespace) -> int:
    """Train as configured by ``args``; prints a short summary (rank 0). Returns 0."""
    from edge_had.train.runner import train

    config = config_from_args(args)
    result = train(config)
    if result["rank"] == 0:
        where = f"{result['device']}, world size {result['world_size']}"
        print(f"trained in {result['wall_time_s']:.1f} s ({where})")
        for phase, loss in result["final_losses"].items():
            print(f"  {phase}: final epoch loss {loss:.5g}")
        stats = result.get("feature_stats") or {}
        if stats:
            print(
                "  feature scale on the training scenes: "
                + ", ".join(f"{name} {value:.3g}" for name, value in stats.items())
            )
        print(f"model -> {result['bundle']} (config.json, model.safetensors, train_config.json)")
    return 0
