"""The cross-validation model that did not see a scene: for benchmarks that report a trained model
on the ten scenes (streaming AUC, event rules) without ever scoring a scene with a model trained
on it.

``edge-had crossval --out CV`` caches its fold models in ``CV/models/<variant>/seed<S>/fold<F>``
and writes, per fold, the alphas chosen on that fold's training scenes into its report
(``alphas[variant]["seed<S>/fold<F>"] = [alpha_spe, alpha_spa, hybrid alpha_spe]``), the SHA-256
of the weights they were chosen for (``weights_sha256``, same keys; a report of other weights is
refused) and the scenes each fold held out (``folds``).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from edge_had.errors import EdgeHadError


def held_out_fold(report: dict[str, Any], scene: str) -> int:
    """The fold whose model was trained without ``scene``."""
    for fold, held in enumerate(report["folds"]):
        if scene in held:
            return fold
    raise EdgeHadError(f"{scene} is not one of the cross-validation report's scenes")


def held_out_model(
    cv_dir: str | Path, report: dict[str, Any], variant: str, scene: str, seed: int = 0
) -> Any:
    """The fold model of ``variant`` and ``seed`` that did not see ``scene``, with the alphas chosen
    on its training scenes (``config.alphas_for(scorer)`` / ``for_scorer`` pick global or hybrid)."""
    return checked_fold_model(cv_dir, report, variant, seed, held_out_fold(report, scene))


def checked_fold_model(cv_dir: str | Path, report: dict[str, Any], variant: str, seed: int, fold: int) -> Any:
    """:func:`fold_model`, refused unless its training record shows none of the fold's held-out
    scenes (``report["folds"][fold]``) among its training scenes."""
    bundle = fold_model(cv_dir, report, variant, seed, fold)
    if not bundle.training_scenes:
        raise EdgeHadError(
            f"fold {fold} of {variant} has no training record: cannot check it did not see the fold's "
            "held-out scenes"
        )
    seen = sorted(set(report["folds"][fold]) & set(bundle.training_scenes.values()))
    if seen:
        raise EdgeHadError(f"fold {fold} of {variant} was trained on {', '.join(seen)}: not a held-out model")
    return bundle


def fold_model(cv_dir: str | Path, report: dict[str, Any], variant: str, seed: int, fold: int) -> Any:
    """The model of ``variant``, ``seed`` and ``fold`` with the alphas chosen on its training
    scenes; ``variant="random"`` is the untrained network cross-validation scored for that seed."""
    from edge_had.eval.crossval import random_bundle
    from edge_had.models.bundle import load_bundle

    key = f"seed{seed}/fold{fold}"
    if key not in report["alphas"].get(variant, {}):
        raise EdgeHadError(f"the cross-validation report has no {variant} model for {key}")
    if variant == "random":
        bundle = random_bundle(seed, int(report.get("train_overrides", {}).get("k", 64)))
    else:
        folder = Path(cv_dir) / "models" / variant / f"seed{seed}" / f"fold{fold}"
        bundle = load_bundle(folder)
        chosen_for = report.get("weights_sha256", {}).get(variant, {}).get(key)
        if chosen_for is None:  # a report from before they were recorded
            warnings.warn(
                f"the cross-validation report does not record which weights its {variant} {key} alphas "
                f"were chosen for: cannot check that {folder} holds them (weights retrained, e.g. on "
                "another machine, would be scored with alphas chosen for others)",
                stacklevel=2,
            )
        elif chosen_for != bundle.sha256:
            raise EdgeHadError(
                f"{folder} holds other weights ({bundle.sha256[:12]}...) than the report's alphas were "
                f"chosen for ({chosen_for[:12]}...): trained again, or on another machine (training "
                "is bit-identical only where it computes the same: edge_had/train/numerics.py)? Use "
                "the crossval.json written with these models"
            )
    alpha_spe, alpha_spa, hybrid_alpha = report["alphas"][variant][key]
    config = dataclasses.replace(
        bundle.config, alpha_spe=alpha_spe, alpha_spa=alpha_spa, hybrid_alpha_spe=hybrid_alpha
    )
    return dataclasses.replace(bundle, config=config)
