"""Cross-validation bookkeeping: folds never mix training and reporting, the pooled shortfall is
computed as defined, and a diverged training is detected instead of crashing the evaluation."""

from __future__ import annotations

import pytest
import torch

from edge_had.eval.crossval import (
    alpha_table,
    fixed_alpha_row,
    fold_assignment,
    has_non_finite_weights,
    markdown_table,
    pooled_shortfall_removed,
    summarize,
)
from edge_had.models import ModelConfig
from edge_had.models.bundle import ModelBundle


def test_folds_partition_the_scenes_round_robin() -> None:
    names = [f"s{i}" for i in range(10)]
    folds = fold_assignment(names, 5)
    assert folds[0] == ["s0", "s5"] and folds[4] == ["s4", "s9"]
    assert sorted(name for fold in folds for name in fold) == sorted(names)
    with pytest.raises(ValueError):
        fold_assignment(names, 11)


def test_pooled_shortfall_against_a_perfect_baseline_is_none_not_a_crash() -> None:
    """Every baseline AUC 1: no shortfall to remove - a ZeroDivisionError after the whole run
    before (a review); the table shows '-'."""
    assert pooled_shortfall_removed([0.99, 1.0], [1.0, 1.0]) is None
    summary = summarize(
        {
            "a": {"resampled-rx": [1.0], "rx": [1.0], "m": [0.99]},
            "b": {"resampled-rx": [1.0], "rx": [1.0], "m": [1.0]},
        }
    )
    assert summary["m"]["shortfall_removed_vs_resampled"] is None


def test_pooled_shortfall_removed_by_hand() -> None:
    # shortfalls 0.10 + 0.02 against a baseline's 0.20 + 0.04: half removed
    assert pooled_shortfall_removed([0.90, 0.98], [0.80, 0.96]) == pytest.approx(0.5)


def test_summary_counts_wins_beyond_the_seed_spread() -> None:
    per_scene = {
        "a": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.95, 0.96]},
        "b": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.905, 0.90]},  # gain 0.0025 < spread 0.005
    }
    row = summarize(per_scene)["m"]
    assert row["wins_vs_resampled"] == 1 and row["max_seed_spread"] == pytest.approx(0.01)
    assert "shortfall_removed_vs_resampled_hybrid" not in row  # no hybrid baseline in this report


def test_summary_measures_against_the_resampled_hybrid_baseline_when_present() -> None:
    per_scene = {
        "a": {"rx": [0.90], "resampled-rx": [0.90], "resampled-hybrid-rx": [0.96], "m": [0.98, 0.98]},
        "b": {"rx": [0.90], "resampled-rx": [0.90], "resampled-hybrid-rx": [0.96], "m": [0.95, 0.95]},
    }
    row = summarize(per_scene)["m"]
    # shortfalls 0.02 + 0.05 against 0.04 + 0.04: 12.5 % removed; one win, one loss
    assert row["shortfall_removed_vs_resampled_hybrid"] == pytest.approx(0.125)
    assert row["wins_vs_resampled_hybrid"] == 1 and row["wins_vs_resampled"] == 2


def test_a_diverged_training_is_detected() -> None:
    config = ModelConfig(k=8, hidden=4, blocks=1)
    spectral, spatial = config.build_networks()
    bundle = ModelBundle(config, spectral, spatial, "x")
    assert not has_non_finite_weights(bundle)
    with torch.no_grad():
        next(spatial.parameters())[0] = float("nan")
    assert has_non_finite_weights(bundle)


def test_summary_by_hand_over_three_scenes() -> None:
    # means over seeds 0.99, 0.90, 0.93 (3 scenes: the mean of means is not their median); native
    # RX 0.80 / 0.90 / 0.90 and resampled RX 0.90 / 0.90 / 0.90 (ties are no wins, spread 0)
    per_scene = {
        "a": {"rx": [0.80], "resampled-rx": [0.90], "m": [0.99]},
        "b": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.90]},
        "c": {"rx": [0.90], "resampled-rx": [0.90], "m": [0.93]},
    }
    row = summarize(per_scene)["m"]
    assert row["mean_auc"] == pytest.approx((0.99 + 0.90 + 0.93) / 3)
    # shortfalls 0.01 + 0.10 + 0.07 = 0.18 against native 0.20 + 0.10 + 0.10 = 0.40, resampled 0.30
    assert row["shortfall_removed_vs_native"] == pytest.approx(1 - 0.18 / 0.40)
    assert row["shortfall_removed_vs_resampled"] == pytest.approx(1 - 0.18 / 0.30)
    assert row["wins_vs_resampled"] == 2  # scene b equals its baseline: a win needs more than 0
    assert "wins_vs_native" not in row  # wins are counted against the resampled baselines only


def test_markdown_table_shows_the_mean_and_half_the_seed_spread() -> None:
    per_scene = {"a": {"rx": [0.90], "resampled-rx": [0.91], "m": [0.92, 0.96]}}
    report = {"scenes": per_scene, "summary": summarize(per_scene)}
    lines = markdown_table(report, ["rx", "m"]).splitlines()
    assert lines[2] == "| a | 0.9000 | 0.9400 ± 0.0200 |"  # (0.92 + 0.96) / 2, (0.96 - 0.92) / 2


def test_an_infinite_weight_is_a_diverged_training_too() -> None:
    config = ModelConfig(k=8, hidden=4, blocks=1)
    spectral, spatial = config.build_networks()
    bundle = ModelBundle(config, spectral, spatial, "x")
    with torch.no_grad():
        next(spectral.parameters()).view(-1)[0] = float("-inf")
    assert has_non_finite_weights(bundle)


def test_held_out_rows_use_the_alphas_chosen_for_each_scorer(monkeypatch) -> None:
    """The spectral row is RX of x_k + a f_spe (alpha_spa left out), the feature row adds b f_spa,
    the hybrid row is hybrid RX at the hybrid alpha: against fuse_parts and scoring computed here."""
    import numpy as np

    from edge_had.detectors.enhanced import fuse_parts
    from edge_had.detectors.scoring import hybrid_rx
    from edge_had.eval import crossval
    from edge_had.eval.metrics import roc_auc
    from edge_had.io.synthetic import synthetic_scene

    scenes = {f"s{seed}": synthetic_scene(lines=20, width=20, bands=12, seed=seed) for seed in range(2)}
    cache = crossval.SceneCache([])
    cache.scenes = scenes
    monkeypatch.setattr(crossval, "select_alphas", lambda cache, parts, *rest: (0.3, 4.0))
    monkeypatch.setattr(crossval, "select_hybrid_alpha", lambda cache, parts: 1.0)
    bundle = crossval.random_bundle(0, 8)
    rows, chosen = crossval._evaluate_model(cache, bundle, ["s0"], ["s1"], "r")
    assert chosen == (0.3, 4.0, 1.0)
    scene = scenes["s1"]
    parts = cache.parts(bundle, "s1").parts

    def auc(a: float, b: float) -> float:
        return roc_auc(fuse_parts(parts, a, b, "feature", cache.detect("s1")), scene.gt, scene.valid)

    assert rows["s1"]["r:spectral"] == pytest.approx(auc(0.3, 0.0), abs=1e-12)
    assert rows["s1"]["r:feature"] == pytest.approx(auc(0.3, 4.0), abs=1e-12)
    assert auc(0.3, 0.0) != auc(0.3, 4.0)  # the spatial part changes the ranking here
    hybrid = fuse_parts(parts, 1.0, 0.0, "feature", lambda cube: hybrid_rx(cube, scene.valid))
    assert rows["s1"]["r:hybrid"] == pytest.approx(roc_auc(hybrid, scene.gt, scene.valid), abs=1e-9)
    assert np.isfinite(rows["s1"]["r:lrx"])


def test_alpha_table_places_each_fixed_alpha_in_its_column() -> None:
    per_scene = {
        name: {
            "rx": [0.90],
            "resampled-rx": [0.90],
            "random:spectral": [0.95],
            fixed_alpha_row("random", 0.1): [0.91],
            fixed_alpha_row("random", 1.0): [0.97, 0.99],
            "resampled-hybrid-rx": [0.93],
            "random:hybrid": [0.96],
            fixed_alpha_row("random", 10.0, "hybrid"): [0.98],
        }
        for name in ("a", "b")
    }
    report = {
        "scenes": per_scene,
        "summary": summarize(per_scene),
        "variants": {},
        "alpha_grid": {"alpha_spe": [0.1, 1.0, 10.0]},
    }
    table = alpha_table(report).splitlines()
    assert table[0] == "| model | a=0.1 | a=1 | a=10 | selected per fold |"
    assert table[2] == "| random | 0.9100 | 0.9800 | - | 0.9500 |"
    assert table[-1] == "resampled-rx (a = 0): 0.9000."
    hybrid = alpha_table(report, "hybrid").splitlines()
    assert hybrid[2] == "| random | - | - | 0.9800 | 0.9600 |"
    assert hybrid[-1] == "resampled-hybrid-rx (a = 0): 0.9300."
    assert fixed_alpha_row("random", 10.0, "hybrid") == "random:hybrid:alpha=10"


def test_held_out_model_is_the_fold_that_did_not_see_the_scene(tmp_path) -> None:
    """Each scene maps to the fold that held it out, with that fold's alphas (hybrid too); a
    fold model whose training record names one of the fold's held-out scenes is refused, for any
    of them (and by checked_fold_model, which the event-rule benchmark uses per fold)."""
    import json

    import torch

    from edge_had.errors import EdgeHadError
    from edge_had.eval.fold_models import checked_fold_model, fold_model, held_out_fold, held_out_model
    from edge_had.models import ModelConfig, save_bundle
    from edge_had.models.bundle import load_bundle

    report = {
        "folds": [["a", "c"], ["b", "d"]],
        "scenes": {"a": {}, "b": {}, "c": {}, "d": {}},
        "alphas": {"v": {"seed0/fold0": [0.3, 0.0, 1.0], "seed0/fold1": [10.0, 4.0, 3.0]}},
        "weights_sha256": {"v": {}},  # filled below
    }
    torch.manual_seed(0)
    for fold, trained_on in ((0, ["b", "d"]), (1, ["b", "c"])):  # fold 1's record wrongly names b
        folder = tmp_path / "models" / "v" / "seed0" / f"fold{fold}"
        config = ModelConfig(k=8, hidden=4, blocks=1)
        save_bundle(folder, config, *config.build_networks())
        record = {"data": [{"name": name, "sha256": name * 8} for name in trained_on]}
        (folder / "train_config.json").write_text(json.dumps(record))
        report["weights_sha256"]["v"][f"seed0/fold{fold}"] = load_bundle(folder).sha256
    assert [held_out_fold(report, name) for name in "abcd"] == [0, 1, 0, 1]
    model = held_out_model(tmp_path, report, "v", "c")
    assert (model.config.alpha_spe, model.config.alpha_spa) == (0.3, 0.0)
    assert model.for_scorer("hybrid").config.alpha_spe == 1.0
    model = fold_model(tmp_path, report, "v", 0, 1)  # fold 1: its own alphas
    assert (model.config.alpha_spe, model.config.alpha_spa, model.for_scorer("hybrid").config.alpha_spe) == (
        10.0,
        4.0,
        3.0,
    )
    for scene in "bd":  # d too: the model saw b, the other scene its fold holds out
        with pytest.raises(EdgeHadError, match="trained on b"):
            held_out_model(tmp_path, report, "v", scene)
    with pytest.raises(EdgeHadError, match="fold 1 of v was trained on b"):
        checked_fold_model(tmp_path, report, "v", 0, 1)
    with pytest.raises(EdgeHadError, match="not one of"):
        held_out_fold(report, "e")
    (tmp_path / "models" / "v" / "seed0" / "fold0" / "train_config.json").unlink()
    with pytest.raises(EdgeHadError, match="no training record"):
        held_out_model(tmp_path, report, "v", "c")


def test_fold_model_by_seed_and_fold_and_the_random_rows(tmp_path) -> None:
    """fold_model: any (variant, seed, fold) of the report with its own alphas; "random" is the
    untrained network cross-validation scored for that seed (the same weights)."""
    import torch

    from edge_had.errors import EdgeHadError
    from edge_had.eval.crossval import random_bundle
    from edge_had.eval.fold_models import fold_model
    from edge_had.models import ModelConfig, save_bundle
    from edge_had.models.bundle import load_bundle

    report = {
        "alphas": {"v": {"seed1/fold0": [0.3, 1.0, 3.0]}, "random": {"seed1/fold0": [1.0, 0.0, 10.0]}},
        "train_overrides": {"k": 8},
    }
    config = ModelConfig(k=8, hidden=4, blocks=1)
    save_bundle(tmp_path / "models" / "v" / "seed1" / "fold0", config, *config.build_networks())
    with pytest.warns(UserWarning, match="does not record which weights its v seed1/fold0 alphas"):
        model = fold_model(tmp_path, report, "v", 1, 0)  # a report from before: taken, with a warning
    assert (model.config.alpha_spe, model.config.alpha_spa, model.config.hybrid_alpha_spe) == (0.3, 1.0, 3.0)
    untrained = fold_model(tmp_path, report, "random", 1, 0)
    assert (untrained.config.k, untrained.config.alpha_spe, untrained.config.hybrid_alpha_spe) == (
        8,
        1.0,
        10.0,
    )
    again = random_bundle(1, 8).spectral.state_dict()
    assert all(torch.equal(value, again[name]) for name, value in untrained.spectral.state_dict().items())
    with pytest.raises(EdgeHadError, match="no v model for seed0/fold0"):
        fold_model(tmp_path, report, "v", 0, 0)
    # a report records the weights its alphas were chosen for: other weights in the folder (trained
    # again on a machine that computes differently) are refused, the recorded ones taken
    folder = tmp_path / "models" / "v" / "seed1" / "fold0"
    recorded = {**report, "weights_sha256": {"v": {"seed1/fold0": load_bundle(folder).sha256}}}
    assert fold_model(tmp_path, recorded, "v", 1, 0).config.alpha_spe == 0.3
    other = {**report, "weights_sha256": {"v": {"seed1/fold0": "0" * 64}}}
    with pytest.raises(EdgeHadError, match="holds other weights .* than the report's alphas were chosen for"):
        fold_model(tmp_path, other, "v", 1, 0)


def test_crossval_end_to_end(tmp_path) -> None:
    """A tiny run (4 synthetic scenes, 2 folds, one seed, three variants): every scene gets
    rows from the model of the fold that held it out (the same rows and alphas as evaluating that
    model directly), each fold's alphas are recorded under its own key, and a variant that shares
    another's first phases starts from its checkpoint with the same result."""
    import json

    import numpy as np
    import torch
    from scipy.io import savemat

    from edge_had.detectors.enhanced import fuse_parts
    from edge_had.eval.crossval import CrossValConfig, SceneCache, _evaluate_model, run_crossval
    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models.bundle import load_bundle
    from edge_had.train.runner import TrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        scene = synthetic_scene(lines=24, width=24, bands=12, seed=seed)
        savemat(data / f"s{seed}.mat", {"data": scene.cube, "map": scene.gt.astype(np.uint8)})
    tiny = {"epochs": 1, "steps_per_epoch": 2, "tile": 16, "batch": 2, "k": 8, "hidden": 8}
    config = CrossValConfig(
        data=str(data),
        out=str(tmp_path / "cv"),
        folds=2,
        seeds=(0,),
        variants=("main", "no-decorrelation", "supervised-ranking"),
        jobs=2,
        train_overrides=tiny,
        progress=False,
    )
    report = run_crossval(config)
    assert report["folds"] == [["s0", "s2"], ["s1", "s3"]]
    assert set(report["alphas"]) == {"random", "main", "no-decorrelation", "supervised-ranking"}
    assert list(report["alphas"]["supervised-ranking"]) == ["seed0/fold0", "seed0/fold1"]
    assert (
        report["weights_sha256"]["main"]["seed0/fold1"]
        == load_bundle(tmp_path / "cv" / "models" / "main" / "seed0" / "fold1").sha256
    )
    for row in report["scenes"].values():
        assert len(row["supervised-ranking:hybrid"]) == 1 and len(row["random:feature"]) == 1
    # no-decorrelation took main's pretraining and reverse distillation (same seed and fold) and
    # ends with the weights of training them itself
    shared = tmp_path / "cv" / "models" / "no-decorrelation" / "seed0" / "fold1"
    record = json.loads((shared / "train_config.json").read_text())
    assert record["started_from"]["phases"] == ["pretrain", "stage1"]
    assert "/main/seed0/fold1/checkpoints/stage1-epoch001.pt" in record["started_from"]["checkpoint"]
    alone = {**record["config"], "out": str(tmp_path / "alone"), "start_from": None}
    train(TrainConfig(**alone))
    a, b = load_bundle(shared), load_bundle(tmp_path / "alone")
    for net_a, net_b in ((a.spectral, b.spectral), (a.spatial, b.spatial)):
        for (name, x), (_, y) in zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    cache = SceneCache(sorted(data.glob("*.mat")))
    # a held-out hybrid row against hybrid RX computed directly from the model's parts
    main = load_bundle(tmp_path / "cv" / "models" / "main" / "seed0" / "fold0")
    hybrid_alpha = report["alphas"]["main"]["seed0/fold0"][2]
    direct = fuse_parts(
        cache.parts(main, "s2").parts, hybrid_alpha, 0.0, "feature", cache.detect("s2", "hybrid")
    )
    assert report["scenes"]["s2"]["main:hybrid"] == [cache.auc("s2", direct)]
    bundle = load_bundle(tmp_path / "cv" / "models" / "supervised-ranking" / "seed0" / "fold1")
    assert bundle.training_scenes and set(bundle.training_scenes.values()) == {"s0", "s2"}
    rows, chosen = _evaluate_model(cache, bundle, ["s0", "s2"], ["s1", "s3"], "supervised-ranking")
    assert list(chosen) == report["alphas"]["supervised-ranking"]["seed0/fold1"]
    for name in ("s1", "s3"):
        for key, value in rows[name].items():
            assert report["scenes"][name][key] == [value]


def test_a_cached_model_is_reused_only_when_trained_as_asked(tmp_path) -> None:
    """The fold model cache: an absent model is trained, a model whose record matches the job is
    reused (settings of phases it does not run may differ), any other model is refused."""
    import json

    import numpy as np

    from edge_had.eval.crossval import _already_trained
    from edge_had.io import scene_sha256
    from edge_had.provenance import package_commit
    from edge_had.train.config import TrainConfig, TrainError
    from edge_had.train.numerics import fingerprint_at

    data = tmp_path / "d"
    data.mkdir()
    for name in ("a", "b"):
        np.save(data / f"{name}.npy", np.random.default_rng(len(name)).random((4, 4, 3)))
    asked = {
        "data": str(data),
        "out": str(tmp_path / "m"),
        "seed": 0,
        "exclude": ("a",),
        "threads": 1,
        "spatial": False,
    }
    job = {"out": asked["out"], "config": asked}
    other_code: list[str] = []
    other_numerics: list[str] = []
    assert not _already_trained(job, other_code, other_numerics)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    with pytest.raises(TrainError, match="training record"):
        _already_trained(job, other_code, other_numerics)
    saved = TrainConfig(**{**asked, "restoration_width": 32}).to_json()  # a stage-2 setting: no stage 2 here
    scenes = [{"name": "b", "sha256": scene_sha256(data / "b.npy")}]
    (tmp_path / "m" / "train_config.json").write_text(json.dumps({"config": saved, "data": scenes}))
    assert _already_trained(job, other_code, other_numerics) and other_code == [
        f"{tmp_path / 'm'} (None)"
    ]  # code unrecorded
    record = {"config": saved, "data": scenes, "package_commit": package_commit()}
    (tmp_path / "m" / "train_config.json").write_text(json.dumps(record))
    other_code.clear()
    assert _already_trained(job, other_code, other_numerics) and other_code == []  # trained by this code
    assert other_numerics == []  # no fingerprint recorded: nothing to compare
    here = {"fingerprint": fingerprint_at(1), "threads": 1, "cpu_capability": "AVX2"}
    elsewhere = {**here, "fingerprint": "0123456789abcdef"}
    for numerics, said in ((here, []), (elsewhere, [f"{tmp_path / 'm'} (0123456789abcdef)"])):
        (tmp_path / "m" / "train_config.json").write_text(json.dumps({**record, "numerics": numerics}))
        assert _already_trained(job, other_code, other_numerics) and other_numerics == said
    for other in ({"seed": 1}, {"spatial": True}, {"pretrain_epochs": 3}):
        changed = TrainConfig(**{**asked, **other}).to_json()
        (tmp_path / "m" / "train_config.json").write_text(json.dumps({"config": changed, "data": scenes}))
        with pytest.raises(TrainError, match="other settings"):
            _already_trained(job, other_code, other_numerics)
    # the same settings, other scene files: b replaced, or a scene added to the folder
    (tmp_path / "m" / "train_config.json").write_text(json.dumps({"config": saved, "data": scenes}))
    np.save(data / "c.npy", np.zeros((4, 4, 3)))
    with pytest.raises(TrainError, match="other scene files"):
        _already_trained(job, other_code, other_numerics)
    (data / "c.npy").unlink()
    np.save(data / "b.npy", np.ones((4, 4, 3)))
    with pytest.raises(TrainError, match="other scene files"):
        _already_trained(job, other_code, other_numerics)


def test_a_job_whose_source_checkpoint_does_not_fit_trains_from_scratch(tmp_path) -> None:
    import json

    import numpy as np
    from scipy.io import savemat

    from edge_had.eval.crossval import _train_job
    from edge_had.io.synthetic import synthetic_scene

    data = tmp_path / "data"
    data.mkdir()
    scene = synthetic_scene(lines=24, width=24, bands=12, seed=0)
    savemat(data / "s0.mat", {"data": scene.cube, "map": scene.gt.astype(np.uint8)})
    tiny = {"data": str(data), "epochs": 1, "steps_per_epoch": 2, "tile": 16, "batch": 2, "k": 8, "hidden": 8}
    tiny |= {"threads": 1, "progress": False, "encoder": "random"}
    source = {**tiny, "out": str(tmp_path / "source"), "lr": 1e-3}  # every phase differs
    _train_job({"out": source["out"], "config": source})
    start = str(tmp_path / "source" / "checkpoints" / "stage1-epoch001.pt")
    target = {**tiny, "out": str(tmp_path / "target"), "start_from": start}
    _train_job({"out": target["out"], "config": target})
    record = json.loads((tmp_path / "target" / "train_config.json").read_text())
    assert record["started_from"] is None and record["phases"] == ["stage1", "stage2"]


def test_crossval_refuses_duplicate_files_and_unlabelled_scenes_before_training(tmp_path) -> None:
    """One scene file under two names went into two folds (trained on as one, reported held out
    as the other); a scene without a map failed on a bare assertion after all the training (a
    review). Both are refused now, naming the files, before any model is trained."""
    import shutil

    import numpy as np
    from scipy.io import savemat

    from edge_had.errors import EdgeHadError, SceneError
    from edge_had.eval.crossval import CrossValConfig, run_crossval
    from edge_had.io.synthetic import synthetic_scene

    data, out = tmp_path / "data", tmp_path / "cv"
    data.mkdir()
    for seed in range(3):
        scene = synthetic_scene(lines=24, width=24, bands=12, seed=seed)
        savemat(data / f"s{seed}.mat", {"data": scene.cube, "map": scene.gt.astype(np.uint8)})
    shutil.copy(data / "s0.mat", data / "s0copy.mat")
    config = CrossValConfig(
        data=str(data), out=str(out), folds=2, seeds=(0,), variants=("main",), progress=False
    )
    with pytest.raises(EdgeHadError, match=r"s0.mat and s0copy.mat hold the same data \(SHA-256"):
        run_crossval(config)
    (data / "s0copy.mat").unlink()
    bare = synthetic_scene(lines=24, width=24, bands=12, seed=9)
    savemat(data / "bare.mat", {"data": bare.cube})
    with pytest.raises(SceneError, match=r"bare.mat: no ground truth: cross-validation scores every scene"):
        run_crossval(config)
    assert not (out / "models").exists()  # nothing trained
