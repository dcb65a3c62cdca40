"""Build the model that ships inside the package: train on every scene, pick the alphas on those
training scenes, and write the sidecar and the model card next to the weights.

The shipped model is never reported on the scenes it was trained on: every number about the
method on the ten real scenes comes from the cross-validation fold models (see
:mod:`edge_had.eval.crossval`), whose summary the sidecar carries.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

from edge_had.atomic_files import write_bytes_atomically
from edge_had.eval.crossval import SceneCache, select_alphas, select_hybrid_alpha
from edge_had.io import list_scenes, load_scene
from edge_had.models.budget import count_macs_per_pixel
from edge_had.models.bundle import (
    CONFIG_FILE,
    MODEL_CARD_FILE,
    SIDECAR_FILE,
    ModelConfig,
    load_bundle,
    record_entries,
    scenes_of_record,
)
from edge_had.provenance import package_commit
from edge_had.train.config import TrainError
from edge_had.train.data import rankable
from edge_had.train.runner import TrainConfig, train

BUDGET_BANDS = (100, 188, 224, 450)


def git_commit() -> str:
    """The package's commit as a release records it (:func:`edge_had.provenance.package_commit`,
    asked afresh: training may change tracked files)."""
    package_commit.cache_clear()
    return package_commit()


def read_crossval_summary(path: str | Path) -> dict[str, Any]:
    """The parts of a crossval.json the sidecar quotes; a clear error, before any training, for a
    file that is not a cross-validation report."""
    try:
        report = json.loads(Path(path).read_text())
        return {key: report[key] for key in ("folds", "seeds", "summary")}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TrainError(
            f"--crossval {path}: not a crossval.json report ({type(error).__name__}: {error})"
        ) from error


def all_training_scenes(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Name and SHA-256 of every scene a run's networks saw: a ``--stage 2`` run's own and those of
    the stage-1 run it continued (``previous_run``), each once; ``"ground_truth": false`` on one
    that had no map (nothing masked there)."""
    unlabelled = {entry["sha256"] for entry in record_entries(record) if entry.get("ground_truth") is False}
    return [
        {"name": name, "sha256": sha256, **({"ground_truth": False} if sha256 in unlabelled else {})}
        for sha256, name in scenes_of_record(record).items()
    ]


def macs_table(out: Path) -> dict[str, Any]:
    """Multiply-adds per pixel of the bundle at several band counts (one 1024-pixel line)."""
    bundle = load_bundle(out)
    table = {}
    for bands in BUDGET_BANDS:
        counted = count_macs_per_pixel(bundle.model_for(bands), bands, 1024)
        table[str(bands)] = round(float(counted["total_macs_per_pixel"]))
    return table


def release(
    config: TrainConfig, crossval: dict[str, Any] | None = None, command: list[str] | None = None
) -> dict[str, Any]:
    """Train ``config`` on all its scenes, set the alphas, write sidecar.json and MODEL_CARD.md.
    ``crossval``: the summary :func:`read_crossval_summary` read, quoted in the sidecar."""
    out = Path(config.out)
    commit = git_commit()  # before training rewrites the weights (tracked, when --out is the shipped folder)
    labelled = labelled_scene_files(config)  # before training: the alphas need labels
    record = train(config)  # removes the sidecar and card of the weights it replaces
    cache = SceneCache(labelled, interleave=config.interleave)
    bundle = load_bundle(out)
    parts = {name: cache.parts(bundle, name) for name in cache.scenes}
    alpha_spe, alpha_spa = select_alphas(cache, parts)
    hybrid_alpha_spe = select_hybrid_alpha(cache, parts)
    chosen = {"alpha_spe": alpha_spe, "alpha_spa": alpha_spa, "hybrid_alpha_spe": hybrid_alpha_spe}
    model_config = ModelConfig.from_dict(json.loads((out / CONFIG_FILE).read_text()))
    model_config = ModelConfig(**{**model_config.__dict__, **chosen})
    (out / CONFIG_FILE).write_text(json.dumps(model_config.to_dict(), indent=2) + "\n")
    bundle = load_bundle(out)
    sidecar = {
        "command": command,
        "git_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": bundle.sha256,
        "training_scenes": all_training_scenes(record),
        "interleave": config.interleave,  # how the scene files were read (None: each file's own)
        **chosen,
        "alpha_selection": "best mean AUC on the training scenes over a fixed grid: of RX(x_k + a f_spe "
        "+ b f_spa) for alpha_spe / alpha_spa, of sqrt(RX * LRX)(x_k + a f_spe) for hybrid_alpha_spe",
        "alpha_scenes": sorted(cache.scenes),
        "k": model_config.k,
        "recipe": recipe(config, spectral_run_config(record), spatial=model_config.spatial),
        "macs_per_pixel": macs_table(out),
        "train_seconds": record["wall_time_s"],
        # bit-identical retraining needs the same fingerprint (edge_had/train/numerics.py)
        "numerics": record.get("numerics"),
        "crossval": crossval,
    }
    write_bytes_atomically(out / SIDECAR_FILE, (json.dumps(sidecar, indent=2) + "\n").encode())
    write_bytes_atomically(out / MODEL_CARD_FILE, model_card(sidecar).encode())
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # resumable state, kept until the release is whole
    return sidecar


def labelled_scene_files(config: TrainConfig) -> list[Path]:
    """The training scene files with ground truth holding anomalies and background, on which the
    release chooses its alphas; a :class:`TrainError` before any training when there is none (it
    failed after training, leaving new weights with placeholder alphas and no checkpoints)."""
    paths = [path for path in list_scenes(config.data) if path.stem not in set(config.exclude)]
    labelled = [path for path in paths if rankable(load_scene(path, interleave=config.interleave))]
    if not labelled:
        raise TrainError(
            f"release chooses the alphas on labelled training scenes: none of the {len(paths)} in "
            f"{config.data} has ground truth with anomalies and background"
        )
    return labelled


def spectral_run_config(record: dict[str, Any]) -> dict[str, Any] | None:
    """The config of the run that trained the spectral network a ``--stage 2`` run continued: the
    first run back along ``previous_run`` that was not itself a stage-2 run (None for a run that
    trained it itself)."""
    if record.get("config", {}).get("stage") != "2":
        return None
    previous = record.get("previous_run")
    while previous and previous.get("config", {}).get("stage") == "2" and previous.get("previous_run"):
        previous = previous["previous_run"]
    return None if previous is None else previous.get("config")


def recipe(
    config: TrainConfig, stage1: dict[str, Any] | None = None, *, spatial: bool | None = None
) -> dict[str, Any]:
    """The settings that define a training recipe (the ones that did not run are left out).
    ``stage1``: the config of the run that trained the spectral network a ``--stage 2`` run
    continued (:func:`spectral_run_config`) - its spectral settings are the recipe's. ``spatial``:
    whether the model has a spatial student (a ``--stage 1`` run has none, whatever its config)."""
    if config.stage == "2" and stage1 is not None:
        spectral = ("encoder", "pretrain_epochs", "reverse_distillation", "ranking_epochs", "ranking_lr",
                    "ranking_temperature", "ranking_alpha", "ranking_negatives", "ranking_crop",
                    "ranking_implants")  # fmt: skip
        config = dataclasses.replace(config, **{name: stage1[name] for name in spectral if name in stage1})
    if spatial is not None:
        config = dataclasses.replace(config, spatial=spatial)
    names = ["encoder", "reverse_distillation", "spatial", "mask_anomalies"]
    if config.spatial:  # stage 2's settings, when a student was trained
        names[3:3] = ["restoration_width", "decorrelation_weight"]
    if config.encoder == "pretrained":
        names.insert(1, "pretrain_epochs")
    names.append("ranking_epochs")
    if config.ranking_epochs > 0:
        names += ["ranking_lr", "ranking_temperature", "ranking_alpha", "ranking_negatives", "ranking_crop"]
        names += ["ranking_implants"]  # recorded even when off: the recipe says what ran
    return {name: getattr(config, name) for name in [*names, "seed"]}


def _label_use(recipe: dict[str, Any], unlabelled: list[str]) -> tuple[str, ...]:
    """What the card says the training did with the scenes' ground-truth anomalies: ranked on them
    (the ranking phase), masked out of the other losses - or not (``--no-mask-anomalies``; scenes
    without a map)."""
    masked = recipe.get("mask_anomalies", True)
    ranked = recipe.get("ranking_epochs", 0) > 0
    if ranked:
        lines = [
            "The spectral branch was trained (ranking phase) to rank these scenes' ground-truth",
            "anomalies above their background under global RX;",
            "every other loss excluded them."
            if masked
            else "the other losses trained on them as background.",
        ]
    elif masked:
        lines = ["Ground-truth anomalies were inpainted and excluded from every loss."]
    else:
        lines = ["Ground-truth anomalies were not masked: every loss trained on them as background."]
    if masked and unlabelled:
        lines.append(f"{', '.join(unlabelled)} had no ground truth: nothing was masked there.")
    return tuple(lines)


def model_card(sidecar: dict[str, Any]) -> str:
    """The card of a released model. The ABU data set's source, terms and limits are stated only
    when the training scenes are ABU's; for other scenes their owner's terms apply."""
    entries = sidecar["training_scenes"]
    scenes, count = ", ".join(entry["name"] for entry in entries), len(entries)
    abu = bool(entries) and all(entry["name"].startswith("abu-") for entry in entries)
    if abu:
        source = [
            f"**Training data.** {scenes} - the Airport-Beach-Urban (ABU) scenes (AVIRIS and ROSIS),",
            "distributed by X. Kang for research use with citation: Kang et al., IEEE TGRS 55(10),",
            "5600-5611, 2017. No explicit licence: research use only, cite the data set.",
        ]
        limits = [
            f"**Known limits.** Trained on {count} small airborne scenes from two sensors; band-index",
            "resampling (the files carry no wavelengths); in cross-validation no background-only",
            "training recipe beat the untrained network of the same architecture (only the supervised",
            "ranking phase did), and the spatial student collapsed to a nearly constant field (see the",
            "README), so the gain comes from the spectral branch and its scale; not validated on",
            "satellite data or on sensors outside 400-2500 nm.",
        ]
    else:
        source = [
            f"**Training data.** {scenes} ({count} scene(s); their SHA-256 in sidecar.json); the terms",
            "and citation of their owner apply.",
        ]
        limits = [
            f"**Known limits.** Trained on {count} scene(s) named above; judge it on scenes it did not",
            "see (`edge-had crossval` on your archive). The ABU cross-validation in the README is about",
            "the shipped model's recipe on those scenes, not about this model.",
        ]
    labels = _label_use(
        sidecar.get("recipe", {}), [e["name"] for e in entries if e.get("ground_truth") is False]
    )
    lines = [
        "# edge-had default enhancement model",
        "",
        "**Intended use.** Background enhancement before RX for hyperspectral anomaly detection on",
        "new scenes and sensors (100-450 bands), with no per-scene training or tuning, offline or",
        "per line on a pushbroom camera. It scores nothing by itself and is not a target classifier.",
        "",
        *source,
        *labels,
        "",
        "**Recipe.** "
        + ", ".join(f"{key} = {value}" for key, value in sidecar.get("recipe", {}).items())
        + " (the training variant with the best cross-validated AUC among those run; see the README).",
        "",
        f"**Architecture.** K = {sidecar['k']} canonical bands (spectral adapter), spectral branch",
        f"(alpha_spe = {sidecar['alpha_spe']}), spatial student (alpha_spa = {sidecar['alpha_spa']});",
        "hybrid RX (enhanced-hybrid-rx) uses the spectral branch alone with alpha_spe = "
        f"{sidecar['hybrid_alpha_spe']};",
        "multiply-adds per pixel by band count: "
        + ", ".join(f"{bands}: {macs:,}" for bands, macs in sidecar["macs_per_pixel"].items())
        + ".",
        "",
        f"**Evaluation.** This model was trained on all {count} of its scenes, so it is never evaluated",
        "on them.",
        "The accuracy of the method comes from leave-scenes-out cross-validation (fold models that",
        "did not see the scene), summarised in sidecar.json and in the README.",
        "",
        *limits,
        "",
        *_reproduction(sidecar),
    ]
    return "\n".join(lines)


def _reproduction(sidecar: dict[str, Any]) -> list[str]:
    """The card's word on retraining: bit for bit only where training computes as it did here."""
    numerics = sidecar.get("numerics") or {}
    where = (
        f"where `edge-had info` prints the training numerics fingerprint {numerics['fingerprint']} "
        f"(CPU capability {numerics.get('cpu_capability')})"
        if numerics.get("fingerprint")
        else "on the machine that released it (no numerics fingerprint was recorded)"
    )
    return [
        f"**Reproduction.** The command in sidecar.json gives these weights bit for bit only {where};",
        "elsewhere the math libraries round differently and the weights differ like another seed's",
        '(README, "Across machines").',
        "",
    ]
