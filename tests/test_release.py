"""The shipped-model release: sidecar matches the weights; reports say which scenes a model saw."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from scipy.io import savemat

from edge_had.cli import main
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import load_bundle
from edge_had.train.release import model_card, release
from edge_had.train.runner import TrainConfig

TINY = {"epochs": 1, "steps_per_epoch": 2, "pretrain_epochs": 1, "tile": 16, "batch": 2, "k": 8, "hidden": 8}


def write_scene(path, seed):
    scene = synthetic_scene(lines=24, width=24, bands=12, seed=seed)
    savemat(path, {"data": scene.cube, "map": scene.gt.astype(np.uint8)})


def test_release_writes_a_sidecar_that_matches_the_weights(tmp_path):
    data, out = tmp_path / "data", tmp_path / "model"
    data.mkdir()
    for seed in (1, 2):
        write_scene(data / f"scene-{seed}.mat", seed)
    sidecar = release(TrainConfig(data=str(data), out=str(out), progress=False, threads=1, **TINY))
    on_disk = json.loads((out / "sidecar.json").read_text())
    assert on_disk == sidecar
    weights = (out / "model.safetensors").read_bytes()
    assert sidecar["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    config = json.loads((out / "config.json").read_text())
    assert (config["alpha_spe"], config["alpha_spa"], config["hybrid_alpha_spe"], config["k"]) == (
        sidecar["alpha_spe"],
        sidecar["alpha_spa"],
        sidecar["hybrid_alpha_spe"],
        sidecar["k"],
    )
    expected = {
        f"scene-{seed}": hashlib.sha256((data / f"scene-{seed}.mat").read_bytes()).hexdigest()
        for seed in (1, 2)
    }
    assert {entry["name"]: entry["sha256"] for entry in sidecar["training_scenes"]} == expected
    assert all(macs > 0 for macs in sidecar["macs_per_pixel"].values())
    assert "Intended use" in (out / "MODEL_CARD.md").read_text()
    assert load_bundle(out).training_scenes == {sha: name for name, sha in expected.items()}


def test_a_release_without_labelled_scenes_is_refused_before_training(tmp_path):
    """Alpha selection needs labels: it failed with a bare AssertionError after training, having
    deleted the checkpoints, and left new weights with placeholder alphas beside the previous
    release's sidecar and card (which detect then trusted)."""
    import pytest

    from edge_had.train.config import TrainError

    data, out = tmp_path / "data", tmp_path / "model"
    data.mkdir()
    np.save(data / "unlabelled.npy", synthetic_scene(lines=24, width=24, bands=12, seed=3).cube)
    out.mkdir()
    (out / "sidecar.json").write_text('{"weights_sha256": "old"}')
    with pytest.raises(TrainError, match="none of the 1 .* has ground truth with anomalies"):
        release(TrainConfig(data=str(data), out=str(out), progress=False, threads=1, **TINY))
    assert not (out / "model.safetensors").exists() and (out / "sidecar.json").is_file()  # nothing trained
    write_scene(data / "labelled.mat", 1)  # one labelled scene: its alphas; all scenes trained
    sidecar = release(TrainConfig(data=str(data), out=str(out), progress=False, threads=1, **TINY))
    assert sidecar["alpha_scenes"] == ["labelled"] and len(sidecar["training_scenes"]) == 2
    assert not (out / "checkpoints").exists()
    from edge_had.train.numerics import fingerprint_at

    assert sidecar["numerics"]["fingerprint"] == fingerprint_at(1)  # where retraining gives these bits
    card = (out / "MODEL_CARD.md").read_text()
    assert f"prints the training numerics fingerprint {fingerprint_at(1)}" in card


def test_the_recipe_records_what_trained_the_networks(tmp_path):
    """A `--stage 1` release recorded a spatial student and its settings; a stage 2 run twice over
    recorded the defaults of the stage-2 run before it instead of the spectral run's recipe."""
    from edge_had.train.release import recipe, spectral_run_config

    stage1 = TrainConfig(
        data="d", out="o", stage="1", encoder="random", reverse_distillation=False, ranking_epochs=1
    )
    stage2 = TrainConfig(data="d", out="o", stage="2")
    record = {
        "config": stage2.to_json(),
        "previous_run": {"config": stage2.to_json(), "previous_run": {"config": stage1.to_json()}},
    }
    found = recipe(stage2, spectral_run_config(record), spatial=True)
    assert (found["encoder"], found["reverse_distillation"], found["ranking_epochs"]) == ("random", False, 1)
    assert "pretrain_epochs" not in found and found["spatial"] is True and "decorrelation_weight" in found
    alone = recipe(stage1, spectral_run_config({"config": stage1.to_json()}), spatial=False)
    assert (
        alone["spatial"] is False and "decorrelation_weight" not in alone and "restoration_width" not in alone
    )


def test_model_card_says_how_the_labels_were_used():
    sidecar = {
        "training_scenes": [{"name": "a", "sha256": "0"}],
        "k": 64,
        "alpha_spe": 1.0,
        "alpha_spa": 0.0,
        "hybrid_alpha_spe": 1.0,
        "macs_per_pixel": {"100": 1},
        "recipe": {"encoder": "random", "ranking_epochs": 0},
    }
    background_only = model_card(sidecar)
    assert "inpainted and excluded from every loss" in background_only and "rank these" not in background_only
    sidecar["recipe"]["ranking_epochs"] = 4
    ranked = model_card(sidecar)
    assert "rank these scenes' ground-truth" in ranked and "ranking_epochs = 4" in ranked
    assert "inpainted" not in ranked
    # a user's own scenes: no ABU source, licence or limits claimed, the count as trained
    assert "Kang" not in ranked and "their owner apply" in ranked and "all 1 of its scenes" in ranked
    sidecar["training_scenes"] = [{"name": f"abu-urban-{i}", "sha256": str(i)} for i in range(1, 4)]
    abu = model_card(sidecar)
    assert "Airport-Beach-Urban (ABU)" in abu and "all 3 of its scenes" in abu and "Trained on 3 small" in abu


def test_model_card_says_when_labels_were_not_masked():
    """The card said anomalies were excluded from every loss whatever --no-mask-anomalies said,
    and for scenes without a map (a review)."""
    sidecar = {
        "training_scenes": [
            {"name": "a", "sha256": "0"},
            {"name": "b", "sha256": "1", "ground_truth": False},
        ],
        "k": 64,
        "alpha_spe": 1.0,
        "alpha_spa": 0.0,
        "hybrid_alpha_spe": 1.0,
        "macs_per_pixel": {"100": 1},
        "recipe": {"encoder": "random", "ranking_epochs": 0, "mask_anomalies": True},
    }
    masked = model_card(sidecar)
    assert "inpainted and excluded from every loss" in masked
    assert "b had no ground truth: nothing was masked there." in masked
    sidecar["recipe"]["mask_anomalies"] = False
    unmasked = model_card(sidecar)
    assert "were not masked: every loss trained on them as background" in unmasked
    assert "excluded" not in unmasked and "no ground truth" not in unmasked
    sidecar["recipe"]["ranking_epochs"] = 4
    ranked = model_card(sidecar)
    assert "the other losses trained on them as background" in ranked and "excluded" not in ranked


def test_a_scene_without_ground_truth_is_recorded_and_noted_not_silently_unmasked(tmp_path, capsys):
    """Training on a scene with no map masked nothing there, with no word and no record (a
    review): a note says so, and train_config.json marks the scene 'ground_truth': false."""
    import numpy as np
    from scipy.io import loadmat, savemat

    data, out = tmp_path / "data", tmp_path / "model"
    data.mkdir()
    write_scene(data / "labelled.mat", 1)
    write_scene(data / "bare.mat", 2)
    contents = loadmat(data / "bare.mat")
    savemat(data / "bare.mat", {"data": contents["data"]})  # its map left out
    tiny = ["--quiet", "--epochs", "1", "--steps-per-epoch", "2", "--pretrain-epochs", "1", "--tile", "16",
            "--batch", "2", "--k", "8", "--hidden", "8"]  # fmt: skip
    assert main(["train", "--data", str(data), "--out", str(out), *tiny]) == 0
    assert "note: bare has no ground truth: nothing is masked there" in capsys.readouterr().err
    record = json.loads((out / "train_config.json").read_text())
    assert {entry["name"]: entry["ground_truth"] for entry in record["data"]} == {
        "bare": False,
        "labelled": True,
    }
    assert np.all([entry["background_pixels"] > 0 for entry in record["data"]])


def test_eval_report_marks_trained_on_per_scene(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "model"
    data.mkdir()
    write_scene(data / "seen.mat", 1)
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--epochs",
                "1",
                "--steps-per-epoch",
                "2",
                "--pretrain-epochs",
                "1",
                "--tile",
                "16",
                "--batch",
                "2",
                "--k",
                "8",
                "--hidden",
                "8",
            ]
        )
        == 0
    )
    write_scene(data / "unseen.mat", 2)
    report_path = tmp_path / "report.json"
    capsys.readouterr()
    argv = ["eval", "--data", str(data), "--model", str(out), "--quiet"]  # default: enhanced-rx
    assert main([*argv, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["detector"]["name"] == "enhanced-rx"
    auc = {scene["name"]: scene["auc"] for scene in report["scenes"]}
    assert {scene["name"]: scene["trained_on"] for scene in report["scenes"]} == {
        "seen": True,
        "unseen": False,
    }
    assert report["held_out_mean_auc"] == auc["unseen"] != report["mean_auc"]
    table = capsys.readouterr().out
    assert "seen *" in table and "unseen *" not in table
    assert f"mean of the others: {auc['unseen']:.4f}" in table
    assert report["detector"]["model_sha256"] == load_bundle(out).sha256
    assert all(0 < scene["macs_per_pixel"] < 50_000 for scene in report["scenes"])
    # the training scene re-saved (same arrays, other bytes) read as unseen without a word
    from scipy.io import loadmat

    arrays = loadmat(data / "seen.mat")
    (data / "seen.mat").unlink()
    savemat(data / "seen.mat", {"data": arrays["data"], "map": arrays["map"]}, do_compression=True)
    assert main([*argv, "--json", str(report_path)]) == 0
    seen = next(scene for scene in json.loads(report_path.read_text())["scenes"] if scene["name"] == "seen")
    assert (
        seen["trained_on"] is False
        and "was among the model's training scenes, in another file" in seen["notes"][-1]
    )
    for command in (["detect", str(data / "seen.mat")], ["stream", "--source", str(data / "seen.mat")]):
        assert main([*command, "--model", str(out)]) == 0
        printed = capsys.readouterr()  # a note, on stderr: stdout holds the results alone
        assert "note: a scene named seen was among the model's training scenes" in printed.err
        assert "note:" not in printed.out and "AUC" in printed.out


def test_eval_detect_and_stream_say_trained_on_is_unknown_for_a_model_without_its_record(tmp_path, capsys):
    """Weights and config.json copied without train_config.json or sidecar.json: eval said
    trained_on false for every scene, as if all were held out (a review). Now null, with a note -
    in eval's and stream's reports and on detect's and stream's stderr (the stream said null
    without a word before)."""
    import shutil

    from edge_had.models.bundle import default_model_dir

    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir()
    data.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(default_model_dir() / name, model / name)
    write_scene(data / "scene.mat", 3)
    report_path = tmp_path / "report.json"
    assert (
        main(["eval", "--data", str(data), "--model", str(model), "--quiet", "--json", str(report_path)]) == 0
    )
    (scene,) = json.loads(report_path.read_text())["scenes"]
    unknown = "whether it was trained on this scene is unknown"
    assert scene["trained_on"] is None
    assert any(unknown in note for note in scene["notes"])
    capsys.readouterr()
    assert main(["detect", str(data / "scene.mat"), "--model", str(model)]) == 0
    assert "note: the model's folder records no training scenes" in capsys.readouterr().err
    stream_path = tmp_path / "stream.json"
    source = str(data / "scene.mat")
    assert main(["stream", "--source", source, "--model", str(model), "--json", str(stream_path)]) == 0
    assert unknown in capsys.readouterr().err
    stream = json.loads(stream_path.read_text())
    assert stream["trained_on"] is None and any(unknown in note for note in stream["notes"])
