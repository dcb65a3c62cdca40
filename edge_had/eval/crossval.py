"""Leave-scenes-out cross-validation of the enhancement method.

Honesty rules (docs/METHOD.md): no scene is ever both trained on and reported. The scenes, sorted
by name, are split into ``folds`` folds (fold ``i`` holds scenes ``i, i + folds, ...``); for each
fold and seed a model is trained on the other scenes (their ground-truth anomalies masked out of
every loss, except the ``supervised-ranking`` variant's ranking phase, which uses them as targets) and
every enhanced number of a scene comes from the model of the fold that held it out. The enhancement
scales ``alpha_spe`` / ``alpha_spa`` are chosen per fold and seed on the fold's *training* scenes
(best mean AUC over a fixed grid), never on the held-out ones; no checkpoint selection happens.
The report's ``alphas`` lists, per model and fold, ``[alpha_spe, alpha_spa, hybrid_alpha_spe]``.

Rows of the table, per held-out scene (trained rows: mean and spread over seeds):

* ``rx`` - global RX on the native bands; ``resampled-rx`` - global RX on the K bands the model
  sees (the baseline the gain is measured against); ``lrx`` - dual-window local RX;
  ``hybrid-rx`` / ``resampled-hybrid-rx`` - ``sqrt(RX * LRX)`` (:mod:`edge_had.detectors.scoring`)
  on the native / resampled bands (the baseline of the ``:hybrid`` rows);
* ``random`` - the same architecture, untrained (seeded), alphas chosen the same way;
* ``<variant>:spectral`` - RX(x_k + a f_spe); ``<variant>:feature`` - RX(x_k + a f_spe + b f_spa);
  ``<variant>:product`` - minmax(RX(x_k + b f_spa)) * minmax(RX(x_k + a f_spe));
  ``<variant>:lrx`` - local RX of the feature-fused cube; ``<variant>:hybrid`` - ``sqrt(RX * LRX)``
  of ``x_k + a f_spe``, ``a`` chosen on the training scenes for that scorer
  (:func:`select_hybrid_alpha`; ``enhanced-hybrid-rx`` uses a model's ``hybrid_alpha_spe``); for
  every training variant (the main model and the ablations of :data:`VARIANTS`);
* ``<model>:alpha=<a>`` / ``<model>:hybrid:alpha=<a>`` - the fixed-alpha ablation: RX (hybrid
  RX) of ``x_k + a f_spe`` for every ``a`` of :data:`ALPHA_SPE_GRID`, nothing selected (``random``
  and every variant), so the table shows how much of a result is the scale of the features and
  how much the selection of that scale.

A training that diverges (NaN or Inf weights) is not scored: it is listed in
``diverged_trainings`` and its held-out scenes are averaged over the other seeds of that variant.

Pooled shortfall removed against a baseline: ``1 - sum(1 - AUC) / sum(1 - AUC_baseline)`` over
the scenes. Training runs are cached in ``out/models/<variant>/seed<S>/fold<F>`` and run in
``jobs`` parallel worker processes (one thread each); the evaluation runs in this process.
"""

from __future__ import annotations

import functools
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_had.detectors.enhanced import ResampledRXDetector, enhance_parts, fuse_parts
from edge_had.detectors.lrx import local_rx
from edge_had.detectors.rx import rx_reference
from edge_had.detectors.scoring import geometric_mean, scorer
from edge_had.errors import EdgeHadError, SceneError
from edge_had.eval.metrics import roc_auc
from edge_had.eval.protocol import no_auc_reason
from edge_had.eval.report import SCHEMA_VERSION, json_text, platform_info
from edge_had.io import Scene, list_scenes, load_scene, scene_sha256
from edge_had.provenance import package_commit

#: Training variants: TrainConfig overrides of each ablation ("main" = the defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "main": {},
    "no-decorrelation": {"decorrelation_weight": 0.0},
    "random-encoder": {"encoder": "random"},
    "no-reverse-distillation": {"reverse_distillation": False},
    "no-anomaly-masking": {"mask_anomalies": False},
    # the spectral body pretrained 12x longer as a masked / denoising autoencoder, then frozen with
    # its random head: no reverse distillation, no student (both measured not to help)
    "pretrained-encoder-only": {"reverse_distillation": False, "spatial": False, "pretrain_epochs": 120},
    # no self-supervised phase for the spectral network: from its random init it learns to rank
    # the training scenes' labelled anomalies above their background (supervised transfer); the
    # student is trained on it as usual
    "supervised-ranking": {"encoder": "random", "reverse_distillation": False, "ranking_epochs": 4},
    # the same with anomalies implanted into every ranking crop (spectra of the other training
    # scenes' background): more kinds of anomaly to rank than the training scenes' labelled few
    "supervised-ranking-implants": {
        "encoder": "random",
        "reverse_distillation": False,
        "ranking_epochs": 4,
        "ranking_implants": True,
    },
}
ALPHA_SPE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
ALPHA_SPA_GRID = (0.0, 1.0, 4.0)
BASELINES = ("rx", "resampled-rx", "lrx", "hybrid-rx", "resampled-hybrid-rx")
#: Columns of the headline table.
TABLE_ROWS = (
    "rx",
    "resampled-rx",
    "random:feature",
    "main:spectral",
    "main:feature",
    "main:product",
    "pretrained-encoder-only:spectral",
    "lrx",
    "main:lrx",
    "resampled-hybrid-rx",
    "random:hybrid",
    "main:hybrid",
    "random-encoder:hybrid",
    "supervised-ranking:feature",
    "supervised-ranking:hybrid",
)


@dataclass
class CrossValConfig:
    data: str
    out: str
    folds: int = 5
    seeds: Sequence[int] = (0, 1, 2)
    variants: Sequence[str] = ("main",)
    jobs: int = 2
    train_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    #: how the scene files' cubes are stored (``load_scene(..., interleave=)``), for training and
    #: evaluation alike; None: each file's own
    interleave: str | None = None


def fold_assignment(names: Sequence[str], folds: int) -> list[list[str]]:
    """Sorted names dealt round-robin into ``folds`` test folds."""
    ordered = sorted(names)
    if not 2 <= folds <= len(ordered):
        raise ValueError(f"need 2 <= folds <= {len(ordered)} scenes, got {folds}")
    return [ordered[i::folds] for i in range(folds)]


def fixed_alpha_row(model: str, alpha: float, scorer_name: str = "global") -> str:
    """Row name of the fixed-alpha ablation: RX (``global``) or hybrid RX (``hybrid``) of
    ``x_k + alpha f_spe`` of ``model``, alpha not selected."""
    middle = "" if scorer_name == "global" else f"{scorer_name}:"
    return f"{model}:{middle}alpha={alpha:g}"


def pooled_shortfall_removed(aucs: Sequence[float], baseline: Sequence[float]) -> float | None:
    """``1 - sum(1 - AUC) / sum(1 - AUC_baseline)``; None when the baseline has no shortfall (every
    AUC 1: nothing to remove - it raised ZeroDivisionError after the whole run, a review)."""
    shortfall = float(np.sum(1.0 - np.asarray(baseline)))
    if shortfall == 0.0:
        return None
    return 1.0 - float(np.sum(1.0 - np.asarray(aucs))) / shortfall


def _train_job(job: dict[str, Any]) -> str:
    """Worker: train one (variant, seed, fold) model unless its bundle already exists."""
    from edge_had.train.config import StartFromError
    from edge_had.train.runner import TrainConfig, train

    out = Path(job["out"])
    if not (out / "model.safetensors").is_file():
        try:
            train(TrainConfig(**job["config"]))
        except StartFromError:  # e.g. a cached source model without (matching) checkpoints
            train(TrainConfig(**{**job["config"], "start_from": None}))  # the same weights, slower
    return str(out)


def _already_trained(job: dict[str, Any], other_code: list[str], other_numerics: list[str]) -> bool:
    """Whether the job's folder holds its model. A model trained with other settings (e.g. an
    older default) is refused rather than mixed into the table; one trained by other code (another
    package commit) is reused and listed in ``other_code``, one trained where training computes
    differently (another numerics fingerprint: :mod:`edge_had.train.numerics`) in
    ``other_numerics``, to be said."""
    from edge_had.train.config import TrainConfig, TrainError, trains_the_same

    out = Path(job["out"])
    if not (out / "model.safetensors").is_file():
        return False
    try:
        record = json.loads((out / "train_config.json").read_text())
        saved = record["config"]
    except (OSError, ValueError, KeyError) as error:
        raise TrainError(f"{out}: a model without a readable training record ({error}); delete it") from error
    if not trains_the_same(saved, TrainConfig(**job["config"])):
        raise TrainError(
            f"{out} holds a model trained with other settings than this run asks for (compare its "
            "train_config.json with the variant): use another --out or delete that folder"
        )
    trained = {entry["name"]: entry["sha256"] for entry in record.get("data", [])}
    wanted = _training_files(job["config"]["data"], job["config"].get("exclude", ()))
    if trained != wanted:  # a scene file replaced or added since: not this fold's model any more
        raise TrainError(
            f"{out} holds a model trained on other scene files than this fold's now "
            f"({sorted(trained)} vs {sorted(wanted)}, or their SHA-256): delete that folder"
        )
    if record.get("package_commit") != package_commit():  # a change with no setting behind it
        other_code.append(f"{out} ({str(record.get('package_commit'))[:12]})")  # would not be in it
    numerics = record.get("numerics") or {}
    fingerprint = numerics.get("fingerprint")  # None: trained on a GPU, or before fingerprints
    if fingerprint is not None and fingerprint != _fingerprint_at(numerics["threads"]):
        other_numerics.append(f"{out} ({fingerprint})")  # trained on another machine
    return True


@functools.cache
def _fingerprint_at(threads: int) -> str:
    from edge_had.train.numerics import fingerprint_at

    return fingerprint_at(threads)


@functools.cache
def _scene_file_sha256(path: str, modified_ns: int) -> str:
    """:func:`scene_sha256`, once per file version (``modified_ns`` keys a changed file anew)."""
    return scene_sha256(path)


def _training_files(data: str, exclude: Sequence[str]) -> dict[str, str]:
    """Name -> SHA-256 of the scene files a job trains on (every file of ``data`` but ``exclude``)."""
    from edge_had.train.data import training_files

    return {
        path.stem: _scene_file_sha256(str(path), path.stat().st_mtime_ns)
        for path in training_files(data, exclude)
    }


def share_phases(jobs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split training jobs into two waves: in the second, each job starts from the checkpoint of a
    first-wave job that computes its first phases identically (same seed, fold, scenes and
    settings for them: :func:`edge_had.train.config.shared_phases`; the longest such prefix wins,
    never all of a job's phases); its weights are bit-identical to training from scratch."""
    from edge_had.train.config import TrainConfig, shared_phases
    from edge_had.train.runner import checkpoint_path

    first: list[tuple[dict[str, Any], TrainConfig]] = []
    second: list[dict[str, Any]] = []
    for job in jobs:
        config = TrainConfig(**job["config"])
        best: tuple[int, dict[str, Any], TrainConfig] | None = None
        for source, source_config in first:
            taken = len(shared_phases(source["config"], config))
            if 0 < taken < len(config.phases()) and (best is None or taken > best[0]):
                best = (taken, source, source_config)
        if best is None:
            first.append((job, config))
            continue
        taken, source, source_config = best
        phase, epochs = source_config.phases()[taken - 1]
        start = str(checkpoint_path(source["out"], phase, epochs))
        second.append({"out": job["out"], "config": {**job["config"], "start_from": start}})
    return [[job for job, _ in first], second]


def _model_dir(out: Path, variant: str, seed: int, fold: int) -> Path:
    return out / "models" / variant / f"seed{seed}" / f"fold{fold}"


def train_fold_models(config: CrossValConfig, folds: list[list[str]]) -> None:
    out = Path(config.out)
    jobs = []
    for variant, seed, (index, held_out) in itertools.product(
        config.variants, config.seeds, enumerate(folds)
    ):
        target = _model_dir(out, variant, seed, index)
        settings = {
            "data": config.data,
            "out": str(target),
            "seed": seed,
            "exclude": tuple(held_out),
            "interleave": config.interleave,
            "threads": 1,
            "progress": False,
            **config.train_overrides,
            **VARIANTS[variant],
        }
        jobs.append({"out": str(target), "config": settings})
    other_code: list[str] = []
    other_numerics: list[str] = []
    waves = [
        [job for job in wave if not _already_trained(job, other_code, other_numerics)]
        for wave in share_phases(jobs)
    ]
    if other_code:
        print(
            f"note: {len(other_code)} cached fold model(s) reused were trained by other code than this "
            f"({package_commit()[:12]}), e.g. {other_code[0]}: a fresh --out trains them again",
            file=sys.stderr,
        )
    if other_numerics:
        print(
            f"note: {len(other_numerics)} cached fold model(s) reused were trained on a machine that "
            f"computes training differently (numerics fingerprint), e.g. {other_numerics[0]}: trained "
            "here their weights would differ like another seed's (a fresh --out trains them here)",
            file=sys.stderr,
        )
    if not any(waves):
        return
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=config.jobs) as pool:
        bar = tqdm(total=sum(map(len, waves)), desc="train folds", disable=not config.progress)
        for wave in waves:  # the second starts from checkpoints the first wrote
            for _ in pool.map(_train_job, wave):
                bar.update()
        bar.close()


def random_bundle(seed: int, k: int) -> Any:
    """The untrained network of the ``random`` rows: the default architecture seeded with ``seed``."""
    import torch

    from edge_had.models.bundle import ModelBundle, ModelConfig

    torch.manual_seed(seed)
    model_config = ModelConfig(k=k)
    spectral, spatial = model_config.build_networks()
    return ModelBundle(
        model_config, spectral.eval(), spatial.eval() if spatial else None, f"random-seed{seed}"
    )


def check_labelled(scene: Scene) -> None:
    """A :class:`SceneError` naming the file unless ``scene`` has a map with anomaly and background
    pixels among its valid ones: cross-validation scores every scene (run after all the training,
    a scene without one failed on a bare assertion, naming nothing, a review)."""
    if scene.gt is None:
        raise SceneError(
            "no ground truth: cross-validation scores every scene of the folder against its map "
            f"({scene.name}_gt.npy or {scene.name}_gt.hdr beside it, or a map in a .mat/.h5); move it "
            "out of the folder",
            scene.source,
        )
    if (reason := no_auc_reason(scene)) is not None:
        raise SceneError(f"{reason}: no AUC to cross-validate", scene.source)


def refuse_duplicate_scenes(paths: Sequence[Path]) -> None:
    """An :class:`EdgeHadError` when two scene files hold the same data (one SHA-256): folds are
    dealt by name, so one could be trained on and the other reported as held out (a review)."""
    seen: dict[str, Path] = {}
    for path in paths:
        digest = scene_sha256(path)
        if digest in seen:
            raise EdgeHadError(
                f"{seen[digest].name} and {path.name} hold the same data (SHA-256 {digest[:12]}...): a "
                "fold could train on one and report the other as held out; keep one of them"
            )
        seen[digest] = path


class SceneCache:
    """Scenes loaded once, with their resampled-RX baseline and enhanced parts per model."""

    def __init__(self, paths: Sequence[Path], interleave: str | None = None) -> None:
        self.scenes: dict[str, Scene] = {path.stem: load_scene(path, interleave=interleave) for path in paths}
        for scene in self.scenes.values():  # every scene is scored against its map: checked first
            check_labelled(scene)

    def auc(self, name: str, scores: np.ndarray) -> float:
        scene = self.scenes[name]
        assert scene.gt is not None
        return roc_auc(scores, scene.gt, scene.counted)

    def parts(self, bundle: Any, name: str) -> EnhancedScene:
        scene = self.scenes[name]
        parts = enhance_parts(bundle, scene.detection_cube(), scene.valid, scene.detection_wavelengths())
        return EnhancedScene(parts, scene.valid)

    def detect(self, name: str, scorer_name: str = "global") -> Callable[[np.ndarray], np.ndarray]:
        valid, score = self.scenes[name].valid, scorer(scorer_name)
        return lambda cube: score(cube, valid)


class EnhancedScene:
    """One model's enhanced parts of one scene and the score maps of ``x_k + a f_spe + b f_spa``,
    each (scorer, a, b) computed once: choosing the global-RX alphas, the hybrid alpha and the
    held-out rows ask for many of the same maps. Hybrid RX is the geometric mean of the global
    and local maps, as :func:`edge_had.detectors.scoring.hybrid_rx` computes it."""

    def __init__(self, parts: dict[str, np.ndarray], valid: np.ndarray | None) -> None:
        self.parts = parts
        self.valid = valid
        self._maps: dict[tuple[str, float, float], np.ndarray] = {}

    def score(self, scorer_name: str, alpha_spe: float, alpha_spa: float) -> np.ndarray:
        key = (scorer_name, float(alpha_spe), float(alpha_spa))
        if key not in self._maps:
            if scorer_name == "hybrid":
                scores = geometric_mean(
                    self.score("global", alpha_spe, alpha_spa), self.score("local", alpha_spe, alpha_spa)
                )
            else:
                score = scorer(scorer_name)
                scores = fuse_parts(
                    self.parts, alpha_spe, alpha_spa, "feature", lambda cube: score(cube, self.valid)
                )
            self._maps[key] = scores
        return self._maps[key]


def select_alphas(
    cache: SceneCache,
    parts: dict[str, EnhancedScene],
    scorer_name: str = "global",
    alpha_spa_grid: Sequence[float] = ALPHA_SPA_GRID,
) -> tuple[float, float]:
    """The (alpha_spe, alpha_spa) of the grid with the best mean AUC of ``scorer_name`` on the
    given (training) scenes; ties go to the first in grid order (the smaller alphas)."""
    best: tuple[float, float, float] | None = None
    for alpha_spe, alpha_spa in itertools.product(ALPHA_SPE_GRID, alpha_spa_grid):
        mean = float(
            np.mean(
                [
                    cache.auc(name, enhanced.score(scorer_name, alpha_spe, alpha_spa))
                    for name, enhanced in parts.items()
                ]
            )
        )
        if best is None or mean > best[0] + 1e-12:
            best = (mean, alpha_spe, alpha_spa)
    assert best is not None
    return best[1], best[2]


def select_hybrid_alpha(cache: SceneCache, parts: dict[str, EnhancedScene]) -> float:
    """``alpha_spe`` for hybrid RX of ``x_k + a f_spe``, chosen like :func:`select_alphas`. The
    spatial branch is left out (alpha_spa = 0): it adds nothing measurable (README)."""
    return select_alphas(cache, parts, "hybrid", (0.0,))[0]


def _evaluate_model(
    cache: SceneCache, bundle: Any, train_names: Sequence[str], test_names: Sequence[str], prefix: str
) -> tuple[dict[str, dict[str, float]], tuple[float, float, float]]:
    """Rows of the held-out scenes and the alphas chosen on the training scenes:
    ``(alpha_spe, alpha_spa)`` for global RX, then ``alpha_spe`` for hybrid RX."""
    train_parts = {name: cache.parts(bundle, name) for name in train_names}
    alphas = select_alphas(cache, train_parts)
    hybrid_alpha = select_hybrid_alpha(cache, train_parts)
    rows: dict[str, dict[str, float]] = {}
    for name in test_names:
        enhanced = cache.parts(bundle, name)
        rows[name] = {
            f"{prefix}:spectral": cache.auc(name, enhanced.score("global", alphas[0], 0.0)),
            f"{prefix}:feature": cache.auc(name, enhanced.score("global", *alphas)),
            f"{prefix}:product": cache.auc(
                name, fuse_parts(enhanced.parts, *alphas, "product", cache.detect(name))
            ),
            f"{prefix}:lrx": cache.auc(name, enhanced.score("local", *alphas)),
        }
        for alpha in ALPHA_SPE_GRID:
            rows[name][fixed_alpha_row(prefix, alpha)] = cache.auc(name, enhanced.score("global", alpha, 0.0))
            hybrid = cache.auc(name, enhanced.score("hybrid", alpha, 0.0))
            rows[name][fixed_alpha_row(prefix, alpha, "hybrid")] = hybrid
        rows[name][f"{prefix}:hybrid"] = rows[name][fixed_alpha_row(prefix, hybrid_alpha, "hybrid")]
    return rows, (*alphas, hybrid_alpha)


def run_crossval(config: CrossValConfig) -> dict[str, Any]:
    """Train (cached) and evaluate every fold model; returns the ``crossval`` report."""
    from edge_had.models.bundle import load_bundle

    start = time.perf_counter()
    paths = list_scenes(config.data)
    refuse_duplicate_scenes(paths)
    names = [path.stem for path in paths]
    folds = fold_assignment(names, config.folds)
    cache = SceneCache(paths, config.interleave)  # before the training: a scene without labels fails now
    train_fold_models(config, folds)
    k = int(config.train_overrides.get("k", 64))

    per_scene: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    resampled, resampled_hybrid = ResampledRXDetector(k), ResampledRXDetector(k, "hybrid")
    for name, scene in cache.scenes.items():
        cube, valid = scene.detection_cube(), scene.valid
        global_map, local_map = rx_reference(cube, mask=valid), local_rx(cube, valid)
        per_scene[name]["rx"] = [cache.auc(name, global_map)]
        per_scene[name]["resampled-rx"] = [
            cache.auc(name, resampled.score(cube, valid, scene.detection_wavelengths()))
        ]
        per_scene[name]["lrx"] = [cache.auc(name, local_map)]
        per_scene[name]["hybrid-rx"] = [cache.auc(name, geometric_mean(global_map, local_map))]
        per_scene[name]["resampled-hybrid-rx"] = [
            cache.auc(name, resampled_hybrid.score(cube, valid, scene.detection_wavelengths()))
        ]

    # in this process, one model after another: numpy and torch use both cores here (two worker
    # processes measured no faster on 2 cores, and torch's thread count moves AUCs in the 4th
    # decimal, so a parallel run would not reproduce the committed report digit for digit)
    alphas: dict[str, dict[str, list[float]]] = {}
    weights: dict[str, dict[str, str]] = {}  # the weights the alphas were chosen for
    diverged: list[dict[str, Any]] = []
    for seed, (index, held_out) in itertools.product(config.seeds, enumerate(folds)):
        train_names = [name for name in names if name not in held_out]
        models = {"random": random_bundle(seed, k)}
        for variant in config.variants:
            bundle = load_bundle(_model_dir(Path(config.out), variant, seed, index))
            if has_non_finite_weights(bundle):  # a diverged training: reported, not scored
                diverged.append({"variant": variant, "seed": seed, "fold": index, "held_out": held_out})
                continue
            models[variant] = bundle
            weights.setdefault(variant, {})[f"seed{seed}/fold{index}"] = bundle.sha256
        for label, bundle in models.items():
            rows, chosen = _evaluate_model(cache, bundle, train_names, held_out, label)
            alphas.setdefault(label, {})[f"seed{seed}/fold{index}"] = list(chosen)
            for name, row in rows.items():
                for key, value in row.items():
                    per_scene[name].setdefault(key, []).append(value)

    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "crossval",
        "folds": folds,
        "seeds": list(config.seeds),
        "variants": {name: VARIANTS[name] for name in config.variants},
        "train_overrides": config.train_overrides,
        "interleave": config.interleave,
        "alpha_grid": {"alpha_spe": list(ALPHA_SPE_GRID), "alpha_spa": list(ALPHA_SPA_GRID)},
        "alphas": alphas,
        "weights_sha256": weights,
        "diverged_trainings": diverged,
        "scenes": per_scene,
        "summary": summarize(per_scene),
        "seconds": time.perf_counter() - start,
        "platform": platform_info(),
    }
    return report


def has_non_finite_weights(bundle: Any) -> bool:
    """True when training left NaN or Inf in any weight of the bundle's networks."""
    import torch

    networks = [bundle.spectral] + ([bundle.spatial] if bundle.spatial is not None else [])
    return any(not bool(torch.isfinite(p).all()) for net in networks for p in net.parameters())


def summarize(per_scene: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """Per row: mean AUC, pooled shortfall removed vs resampled and native RX (and vs hybrid RX on
    the resampled cube where present), wins vs resampled RX (and vs resampled hybrid RX) by more
    than the row's seed-to-seed spread (max - min over seeds)."""
    names = sorted(per_scene)
    rows = sorted({row for scene in per_scene.values() for row in scene})
    baselines = {
        suffix: [per_scene[name][row][0] for name in names]
        for suffix, row in (
            ("resampled", "resampled-rx"),
            ("native", "rx"),
            ("resampled_hybrid", "resampled-hybrid-rx"),
        )
        if all(row in per_scene[name] for name in names)
    }
    summary = {}
    for row in rows:
        if not all(row in per_scene[name] for name in names):
            continue
        means = [float(np.mean(per_scene[name][row])) for name in names]
        spreads = [float(np.ptp(per_scene[name][row])) for name in names]
        entry: dict[str, Any] = {"mean_auc": float(np.mean(means))}
        for suffix, base in baselines.items():
            entry[f"shortfall_removed_vs_{suffix}"] = pooled_shortfall_removed(means, base)
            if suffix != "native":
                wins = sum(m - b > s for m, b, s in zip(means, base, spreads, strict=True))
                entry[f"wins_vs_{suffix}"] = int(wins)
        entry["max_seed_spread"] = float(max(spreads))
        summary[row] = entry
    return summary


def markdown_table(report: dict[str, Any], rows: Sequence[str]) -> str:
    """Per-scene table (mean over seeds, +- half the spread where several) and the summary lines."""
    names = sorted(report["scenes"])
    header = "| scene | " + " | ".join(rows) + " |"
    lines = [header, "|---" * (len(rows) + 1) + "|"]
    for name in names:
        cells = []
        for row in rows:
            values = report["scenes"][name].get(row)
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4f}")
            else:
                cells.append(f"{np.mean(values):.4f} ± {np.ptp(values) / 2:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    summary = report["summary"]
    for label, key, fmt in (
        ("mean AUC", "mean_auc", "{:.4f}"),
        ("shortfall removed vs resampled RX", "shortfall_removed_vs_resampled", "{:.1%}"),
        ("shortfall removed vs native RX", "shortfall_removed_vs_native", "{:.1%}"),
        ("wins vs resampled RX (> seed spread)", "wins_vs_resampled", "{}/" + str(len(names))),
        ("shortfall removed vs resampled hybrid RX", "shortfall_removed_vs_resampled_hybrid", "{:.1%}"),
        ("wins vs resampled hybrid RX (> seed spread)", "wins_vs_resampled_hybrid", "{}/" + str(len(names))),
    ):
        if not any(key in summary.get(row, {}) for row in rows):
            continue
        cells = [
            "-" if summary.get(row, {}).get(key) is None else fmt.format(summary[row][key]) for row in rows
        ]
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alpha_table(report: dict[str, Any], scorer_name: str = "global") -> str:
    """Mean AUC over the scenes of RX (``global``) or hybrid RX (``hybrid``) of ``x_k + a f_spe`` at
    each fixed ``a`` (rows: models), next to the same scorer at the alphas selected per fold and
    the scorer on the resampled cube (``a = 0``)."""
    summary = report["summary"]
    selected_row, baseline = {
        "global": ("spectral", "resampled-rx"),
        "hybrid": ("hybrid", "resampled-hybrid-rx"),
    }[scorer_name]
    models = [label for label in ("random", *report["variants"]) if f"{label}:{selected_row}" in summary]
    alphas = report["alpha_grid"]["alpha_spe"]
    lines = [
        "| model | " + " | ".join(f"a={a:g}" for a in alphas) + " | selected per fold |",
        "|---" * (len(alphas) + 2) + "|",
    ]
    for model in models:
        rows = [fixed_alpha_row(model, a, scorer_name) for a in alphas]
        cells = [f"{summary[row]['mean_auc']:.4f}" if row in summary else "-" for row in rows]
        selected = summary[f"{model}:{selected_row}"]["mean_auc"]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {selected:.4f} |")
    if baseline in summary:
        lines.append(f"\n{baseline} (a = 0): {summary[baseline]['mean_auc']:.4f}.")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str | Path) -> Path:
    path = Path(out) / "crossval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(report) + "\n")
    return path
