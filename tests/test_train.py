"""Training: data preparation, tile sampling, loops, runner (determinism, resume, masking, DDP), CLI.

Everything runs on tiny synthetic scenes (32 x 32 px, 24 bands) and a small model (K = 16,
hidden 8, 2 blocks) on the CPU; the whole file takes well under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_had.io import Scene
from edge_had.io.synthetic import synthetic_scene
from edge_had.models.bundle import load_bundle
from edge_had.models.spatial import SpatialStudent
from edge_had.models.spectral import SpectralEnhancer
from edge_had.train.cli import add_train_arguments, config_from_args, run_train
from edge_had.train.data import TileSampler, load_training_scenes, prepare_scene
from edge_had.train.loops import Stage2Trainer, pretrain_encoder, train_stage1, train_stage2
from edge_had.train.modules import FeatureDecoder, OneClassBottleneck, RestorationNet, encoder_levels
from edge_had.train.runner import CHECKPOINT_DIR, TRAIN_CONFIG_FILE, TrainConfig, TrainError, train

SMALL = {"k": 16, "hidden": 8, "blocks": 2, "tile": 16, "batch": 4, "threads": 1, "progress": False}


def _scenes(n: int = 2, size: int = 32) -> list[Scene]:
    return [synthetic_scene(seed=s, lines=size, width=size, bands=24) for s in range(n)]


def _config(tmp_path: Path, name: str = "model", **overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        **SMALL,
        "out": str(tmp_path / name),
        "epochs": 2,
        "steps_per_epoch": 4,
        "pretrain_epochs": 1,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def _weights(result: dict) -> dict[str, torch.Tensor]:
    nets = result["networks"]
    out = {f"spectral.{k}": v for k, v in nets["spectral"].state_dict().items()}
    if nets["spatial"] is not None:
        out.update({f"spatial.{k}": v for k, v in nets["spatial"].state_dict().items()})
    return out


def _losses(histories: dict) -> dict:
    """Loss histories without the (timing-dependent) epoch seconds."""
    return {phase: {k: v for k, v in h.items() if k != "epoch_seconds"} for phase, h in histories.items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- data


def test_prepare_scene_shapes_background_and_imputation() -> None:
    scene = _scenes(1)[0]
    scene.valid[0, :5] = False
    scene.cube[0, :5] = np.nan
    prepared = prepare_scene(scene, k=16)
    assert prepared.x.shape == (16, 32, 32) and prepared.x.dtype == torch.float32
    assert torch.isfinite(prepared.x).all()
    assert prepared.background.shape == (1, 32, 32) and prepared.background.dtype == torch.bool
    expected = scene.valid & ~scene.gt
    assert np.array_equal(prepared.background[0].numpy(), expected)
    assert prepared.adapter_mode == "wavelength"  # synthetic scenes carry wavelengths
    unmasked = prepare_scene(scene, k=16, mask_anomalies=False)
    assert np.array_equal(unmasked.background[0].numpy(), scene.valid)
    # normalised to the recipe's scale: robust range mapped to +-0.1
    assert float(prepared.x.abs().max()) < 0.3


def test_training_normalisation_is_fitted_on_every_valid_pixel(monkeypatch) -> None:
    """As in detection: lo/hi come from the valid pixels, the (inpainted) anomaly pixels included,
    not from the background alone (the data module's step 4)."""
    from edge_had.models.normalize import Normalization

    scene = _scenes(1)[0]
    scene.valid[0, :5] = False
    assert (scene.valid & scene.gt).any()
    masks = []
    original = Normalization.fit
    monkeypatch.setattr(
        Normalization, "fit", lambda self, cube, valid: masks.append(valid) or original(self, cube, valid)
    )
    prepare_scene(scene, k=16)
    assert len(masks) == 1 and np.array_equal(masks[0], scene.valid)


def test_load_training_scenes_from_folder_exclude_and_sha(tmp_path: Path) -> None:
    for i, scene in enumerate(_scenes(3)):
        np.save(tmp_path / f"s{i}.npy", scene.cube)
    scenes = load_training_scenes(tmp_path, exclude=["s1"], k=16)
    assert [s.name for s in scenes] == ["s0", "s2"]
    assert all(s.sha256 and len(s.sha256) == 64 for s in scenes)
    assert scenes[0].adapter_mode == "band_index"  # .npy has no wavelengths
    with pytest.raises(ValueError, match="names no scene"):
        load_training_scenes(tmp_path, exclude=["nope"], k=16)


def test_tile_sampler_deterministic_augmented_and_rank_slices() -> None:
    scenes = load_training_scenes(_scenes(2), k=16)
    a, b = TileSampler(scenes, 16, 4, seed=3), TileSampler(scenes, 16, 4, seed=3)
    first = a.sample()
    assert first.x.shape == (4, 16, 16, 16) and first.mask.shape == (4, 1, 16, 16)
    assert torch.equal(first.x, b.sample().x)
    state = a.state_dict()
    after = a.sample()
    a.load_state_dict(state)
    assert torch.equal(a.sample().x, after.x)
    assert not torch.equal(TileSampler(scenes, 16, 4, seed=4).sample().x, first.x)
    # two ranks split one global batch of 8: together they equal a single process with batch 8
    whole = TileSampler(scenes, 16, 8, seed=5).sample()
    ranks = [TileSampler(scenes, 16, 4, seed=5, rank=r, world_size=2).sample() for r in (0, 1)]
    assert torch.equal(torch.cat([r.x for r in ranks]), whole.x)
    assert not torch.equal(ranks[0].x, ranks[1].x)
    with pytest.raises(ValueError, match="smaller than"):
        TileSampler(scenes, 64, 4)


# --------------------------------------------------------------------------- modules and loops


def test_decoder_restores_odd_sizes_and_restoration_shape() -> None:
    torch.manual_seed(0)
    spectral = SpectralEnhancer(16, 8, 2)
    x = torch.randn(2, 16, 15, 13) * 0.1
    levels = encoder_levels(spectral, x)
    code = OneClassBottleneck(8, 2)(levels[1:])
    assert code.shape == (2, 4, 8, 7)
    decoded, cube = FeatureDecoder(16, 8, 2)(code, (15, 13))
    assert [d.shape for d in decoded] == [levels[1].shape, levels[2].shape]
    assert cube.shape == x.shape
    assert RestorationNet(16)(x).shape == x.shape


def test_loop_functions_run_and_freeze() -> None:
    torch.manual_seed(0)
    scenes = load_training_scenes(_scenes(1), k=16)
    sampler = TileSampler(scenes, 16, 4, seed=0)
    spectral, spatial = SpectralEnhancer(16, 8, 2), SpatialStudent(16)
    pre = pretrain_encoder(spectral, sampler, 3, progress=False)
    assert len(pre) == 3 and "mse" in pre.parts
    stem = spectral.stem[0].weight.clone()
    hist = train_stage1(spectral, sampler, 3, encoder="random", progress=False)
    assert len(hist) == 3 and set(hist.parts) >= {"feature_cosine", "cube_mse", "alignment"}
    assert torch.equal(spectral.stem[0].weight, stem)  # the encoder body stays frozen
    head = spectral.head[0].weight.clone()
    assert len(train_stage1(spectral, sampler, 3, reverse_distillation=False, progress=False)) == 0
    assert torch.equal(spectral.head[0].weight, head)
    hist2 = train_stage2(spectral, spatial, sampler, 3, progress=False)
    assert len(hist2) == 3 and "decorrelation" in hist2.parts
    assert torch.equal(spectral.head[0].weight, head)  # the teacher stays frozen in stage 2


# --------------------------------------------------------------------------- runner


def test_stage1_and_stage2_smoke_lower_the_loss(tmp_path: Path) -> None:
    scenes = _scenes(2)
    one = train(_config(tmp_path, stage="1", encoder="random", epochs=2, steps_per_epoch=8), scenes=scenes)
    means = one["histories"]["stage1"]["epoch_mean"]
    assert len(means) == 2 and means[-1] < means[0]
    two = train(_config(tmp_path, stage="2", epochs=2, steps_per_epoch=8), scenes=scenes)
    means = two["histories"]["stage2"]["epoch_mean"]
    assert len(means) == 2 and means[-1] < means[0]
    # stage 2 alone starts from the stage-1 bundle and keeps its spectral weights
    assert _identical({k: v for k, v in _weights(two).items() if k.startswith("spectral.")}, _weights(one))
    assert two["previous_run"]["phases"] == ["stage1"]
    # --stage 1 then --stage 2 gives exactly the weights of --stage all
    both = train(_config(tmp_path, "all", encoder="random", epochs=2, steps_per_epoch=8), scenes=scenes)
    assert _identical(_weights(both), _weights(two))


def test_a_run_says_and_records_the_pixels_its_maps_leave_unlabelled(tmp_path: Path, capsys) -> None:
    """Training took unlabelled pixels out of the background silently: the run says so per scene
    (even quiet) and train_config.json records them."""
    scenes = _scenes(2)
    labelled = np.ones(scenes[1].gt.shape, bool)
    labelled[:3] = False
    scenes[1] = dataclasses.replace(scenes[1], name="partly", labelled=labelled)
    result = train(_config(tmp_path, epochs=1, steps_per_epoch=1, pretrain_epochs=0, encoder="random"),
                   scenes=scenes)  # fmt: skip
    said = capsys.readouterr().err
    assert "note: pixels the ground-truth maps leave unlabelled (partly 96) are masked" in said
    assert [scene["unlabelled_pixels"] for scene in result["data"]] == [0, 96]


def test_bundle_and_train_config_written(tmp_path: Path) -> None:
    config = _config(
        tmp_path, alpha_spe=0.25, alpha_spa=2.0, steps_per_epoch=2, command=["edge-had", "train"]
    )
    result = train(config, scenes=_scenes(1))
    bundle = load_bundle(config.out)
    assert bundle.config.k == 16 and bundle.config.hidden == 8 and bundle.config.blocks == 2
    assert bundle.config.alpha_spe == 0.25 and bundle.config.alpha_spa == 2.0 and bundle.config.spatial
    assert _identical(
        {
            **{f"spectral.{k}": v for k, v in bundle.spectral.state_dict().items()},
            **{f"spatial.{k}": v for k, v in bundle.spatial.state_dict().items()},
        },
        _weights(result),
    )
    record = json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())
    assert record["config"]["seed"] == 0 and record["command"] == ["edge-had", "train"]
    assert record["phases"] == ["pretrain", "stage1", "stage2"]
    assert len(record["histories"]["stage2"]["loss"]) == 4 and record["wall_time_s"] > 0
    assert record["data"][0]["name"] == "synthetic-s0"
    assert set(record["feature_stats"]) >= {"x_std", "f_spe_std", "f_spa_std"}
    assert sorted(p.name for p in (Path(config.out) / CHECKPOINT_DIR).glob("*.pt")) == [
        "pretrain-epoch001.pt",
        "stage1-epoch002.pt",
        "stage2-epoch002.pt",
    ]


def test_a_model_folder_is_written_whole_readable_and_never_described_by_a_stale_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights came out 0600 (safetensors' private temporary file), a release's sidecar and
    card stayed beside weights trained over them (and detect trusted them), and a full disk gave a
    raw torch RuntimeError traceback."""
    import edge_had.train.runner as runner

    config = _config(tmp_path, steps_per_epoch=1, epochs=1, stage="1")
    out = Path(config.out)
    out.mkdir()
    (out / "sidecar.json").write_text('{"weights_sha256": "of other weights"}')
    (out / "MODEL_CARD.md").write_text("about other weights")
    train(config, scenes=_scenes(1))
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not (out / "sidecar.json").exists() and not (out / "MODEL_CARD.md").exists()
    load_bundle(out)
    (out / "sidecar.json").write_text('{"weights_sha256": "of other weights"}')  # weights replaced later
    with pytest.raises(Exception, match="the weights were replaced after the release"):
        load_bundle(out)

    def full_disk(state: object, path: object) -> None:
        Path(str(path)).write_bytes(b"part")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(runner.torch, "save", full_disk)
    with pytest.raises(TrainError, match="cannot write the checkpoint .* is the disk full"):
        train(_config(tmp_path, "other", steps_per_epoch=1, epochs=1, stage="1"), scenes=_scenes(1))
    assert not list((tmp_path / "other" / CHECKPOINT_DIR).glob(".*.tmp"))  # no part left behind


def test_the_ranking_phase_is_checked_before_the_phases_before_it(tmp_path: Path) -> None:
    """With no labelled scene (or fewer than processes), the run failed only when the ranking
    phase began, after pretraining and stage 1 had run."""
    unlabelled = [dataclasses.replace(scene, gt=None) for scene in _scenes(1)]
    config = _config(tmp_path, ranking_epochs=1)
    with pytest.raises(TrainError, match="no training scene has ground-truth anomalies"):
        train(config, scenes=unlabelled)
    assert not (Path(config.out) / CHECKPOINT_DIR).exists()  # no phase ran


def test_same_seed_identical_different_seed_differs(tmp_path: Path) -> None:
    scenes = _scenes(1)
    a = train(_config(tmp_path, "a", steps_per_epoch=2), scenes=scenes)
    b = train(_config(tmp_path, "b", steps_per_epoch=2), scenes=scenes)
    c = train(_config(tmp_path, "c", steps_per_epoch=2, seed=1), scenes=scenes)
    assert _identical(_weights(a), _weights(b))
    assert _losses(a["histories"]) == _losses(b["histories"])
    wa, wc = _weights(a), _weights(c)
    assert all(not torch.equal(wa[k], wc[k]) for k in wa if k.endswith("weight"))


@pytest.mark.parametrize("resume_from", ["stage1-epoch001.pt", "stage2-epoch001.pt"])
def test_resume_equals_uninterrupted_run(tmp_path: Path, resume_from: str) -> None:
    scenes = _scenes(1)
    full = train(_config(tmp_path, "full", steps_per_epoch=3), scenes=scenes)
    config = _config(tmp_path, "cut", steps_per_epoch=3, keep_all_checkpoints=True)
    train(config, scenes=scenes)
    # simulate a run killed right after `resume_from`: drop every later checkpoint and the bundle
    folder = Path(config.out) / CHECKPOINT_DIR
    order = ["pretrain-epoch001.pt", "stage1-epoch001.pt", "stage1-epoch002.pt", "stage2-epoch001.pt"]
    for later in order[order.index(resume_from) + 1 :] + ["stage2-epoch002.pt"]:
        (folder / later).unlink()
    phase, epoch = resume_from[:-3].split("-epoch")
    (folder / "latest.json").write_text(
        json.dumps({"file": resume_from, "phase": phase, "epoch": int(epoch)})
    )
    for name in ("model.safetensors", "config.json", TRAIN_CONFIG_FILE):
        (Path(config.out) / name).unlink()
    resumed = train(dataclasses.replace(config, resume=True), scenes=scenes)
    assert _identical(_weights(full), _weights(resumed))
    assert _losses(full["histories"]) == _losses(resumed["histories"])
    assert load_bundle(config.out).config.k == 16
    with pytest.raises(TrainError, match="seed"):
        train(dataclasses.replace(config, resume=True, seed=5), scenes=scenes)
    with pytest.raises(TrainError, match="training scenes"):
        train(dataclasses.replace(config, resume=True), scenes=_scenes(2))


@pytest.mark.parametrize(
    ("changed", "taken"),
    [
        ({"decorrelation_weight": 0.0}, "stage1-epoch002.pt"),
        ({"reverse_distillation": False}, "pretrain-epoch001.pt"),
        ({"alignment_weight": 0.5}, "pretrain-epoch001.pt"),
        ({"ranking_epochs": 1}, "stage1-epoch002.pt"),
    ],
)
def test_start_from_another_runs_phases_equals_training_them(
    tmp_path: Path, changed: dict, taken: str
) -> None:
    """An ablation that shares a run's first phases starts from its checkpoint (what
    cross-validation does) and ends bit-identical to training everything itself."""
    scenes = _scenes(1)
    source = _config(tmp_path, "main", steps_per_epoch=3)
    train(source, scenes=scenes)
    alone = train(_config(tmp_path, "alone", steps_per_epoch=3, **changed), scenes=scenes)
    start = str(Path(source.out) / CHECKPOINT_DIR / taken)
    shared = train(_config(tmp_path, "shared", steps_per_epoch=3, start_from=start, **changed), scenes=scenes)
    assert _identical(_weights(alone), _weights(shared))
    assert _losses(alone["histories"]) == _losses(shared["histories"])
    record = json.loads((tmp_path / "shared" / TRAIN_CONFIG_FILE).read_text())["started_from"]
    taken_phase = taken.split("-epoch")[0]
    assert record["checkpoint"] == start and record["phases"][-1] == taken_phase
    assert record["phases"] == alone["phases"][: len(record["phases"])] and len(record["sha256"]) == 64


def test_a_started_run_resumes_like_any_other(tmp_path: Path) -> None:
    scenes = _scenes(1)
    source = _config(tmp_path, "main", steps_per_epoch=3)
    train(source, scenes=scenes)
    start = str(Path(source.out) / CHECKPOINT_DIR / "stage1-epoch002.pt")
    config = _config(
        tmp_path,
        "shared",
        steps_per_epoch=3,
        start_from=start,
        decorrelation_weight=0.0,
        keep_all_checkpoints=True,
    )
    full = train(config, scenes=scenes)
    folder = Path(config.out) / CHECKPOINT_DIR  # killed after the first epoch of stage 2
    (folder / "stage2-epoch002.pt").unlink()
    (folder / "latest.json").write_text(
        json.dumps({"file": "stage2-epoch001.pt", "phase": "stage2", "epoch": 1})
    )
    resumed = train(dataclasses.replace(config, resume=True), scenes=scenes)
    assert _identical(_weights(full), _weights(resumed))
    record = json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())
    assert record["started_from"]["checkpoint"] == start


def test_start_from_refuses_what_it_cannot_take(tmp_path: Path) -> None:
    scenes = _scenes(1)
    source = _config(tmp_path, "main", steps_per_epoch=2, keep_all_checkpoints=True)
    train(source, scenes=scenes)
    folder = Path(source.out) / CHECKPOINT_DIR
    after_stage1 = str(folder / "stage1-epoch002.pt")
    for changed, message in [
        ({"lr": 1e-3}, "cannot take pretrain, stage1"),  # a setting every phase uses
        ({"alignment_weight": 0.5}, "shared: pretrain"),  # a setting of a taken phase
        ({"encoder": "random"}, "shared: none"),  # other phases
    ]:
        with pytest.raises(TrainError, match=message):
            train(
                _config(tmp_path, "x", steps_per_epoch=2, start_from=after_stage1, **changed), scenes=scenes
            )
    with pytest.raises(TrainError, match="middle of stage1"):
        train(
            _config(tmp_path, "x", steps_per_epoch=2, start_from=str(folder / "stage1-epoch001.pt")),
            scenes=scenes,
        )
    with pytest.raises(TrainError, match="training scenes"):
        train(_config(tmp_path, "x", steps_per_epoch=2, start_from=after_stage1), scenes=_scenes(2))
    # the same settings as written, but the phases ran on another number of threads (threads=None
    # on another machine): the weights would differ slightly
    state = torch.load(after_stage1, weights_only=True)
    assert state["threads_used"] == 1
    state["threads_used"] = 7
    other_machine = tmp_path / "other-machine.pt"
    torch.save(state, other_machine)
    with pytest.raises(TrainError, match="ran on 7 CPU thread"):
        train(_config(tmp_path, "x", steps_per_epoch=2, start_from=str(other_machine)), scenes=scenes)
    with pytest.raises(TrainError, match="cannot read"):
        train(_config(tmp_path, "x", start_from=str(folder / "missing.pt")), scenes=scenes)


def test_settings_that_train_the_same_are_not_refused(tmp_path: Path) -> None:
    """`--exclude b a` after `--exclude a b`, and `--threads` unset where the run used the same
    one thread, were refused as other configs ("shared: none"), though the weights are identical."""
    scenes = _scenes(3)
    config = _config(
        tmp_path, steps_per_epoch=2, keep_all_checkpoints=True, exclude=("synthetic-s1", "synthetic-s2")
    )
    full = train(config, scenes=scenes)
    reordered = dataclasses.replace(config, exclude=("synthetic-s2", "synthetic-s1"), resume=True)
    assert _identical(_weights(full), _weights(train(reordered, scenes=scenes)))  # resumed at its end
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        after_stage1 = str(Path(config.out) / CHECKPOINT_DIR / "stage1-epoch002.pt")
        unset = dataclasses.replace(
            config, out=str(tmp_path / "unset"), threads=None, start_from=after_stage1
        )
        started = train(dataclasses.replace(unset, keep_all_checkpoints=False), scenes=scenes)
    finally:
        torch.set_num_threads(threads)
    assert started["started_from"]["phases"] == ["pretrain", "stage1"]
    assert _identical(_weights(full), _weights(started))


def test_every_setting_is_classified_for_phase_sharing() -> None:
    """A new TrainConfig field must say which phases it changes, or sharing could take a phase
    computed with another value of it."""
    from edge_had.train.config import BOOKKEEPING_SETTINGS, COMMON_SETTINGS, PHASE_SETTINGS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    classified = set(COMMON_SETTINGS) | set(BOOKKEEPING_SETTINGS)
    for names in PHASE_SETTINGS.values():
        classified |= set(names)
    assert classified == fields
    assert not set(COMMON_SETTINGS) & set(BOOKKEEPING_SETTINGS)
    for names in PHASE_SETTINGS.values():
        assert not set(names) & (set(COMMON_SETTINGS) | set(BOOKKEEPING_SETTINGS))
    assert set(PHASE_SETTINGS) == {"pretrain", "stage1", "ranking", "stage2"}


def test_anomaly_masking_hides_anomaly_values_from_stage2(tmp_path: Path) -> None:
    scene = synthetic_scene(seed=3, lines=32, width=32, bands=24)
    assert scene.gt.sum() > 0
    altered = dataclasses.replace(scene, cube=scene.cube.copy())
    rng = np.random.default_rng(0)
    altered.cube[scene.gt] *= rng.uniform(0.5, 3.0, size=(int(scene.gt.sum()), 1)).astype(np.float32)

    def stage2_losses(s: Scene, mask: bool, name: str) -> list[float]:
        config = _config(
            tmp_path,
            name,
            tile=32,
            encoder="random",
            reverse_distillation=False,
            epochs=1,
            steps_per_epoch=3,
            mask_anomalies=mask,
        )
        return train(config, scenes=[s])["histories"]["stage2"]["loss"]

    assert stage2_losses(scene, True, "m0") == stage2_losses(altered, True, "m1")
    assert stage2_losses(scene, False, "u0") != stage2_losses(altered, False, "u1")

    # and directly: the loss of one whole-scene batch, same nets, anomaly values changed
    def one_loss(s: Scene, mask: bool) -> float:
        torch.manual_seed(0)
        spectral, spatial = SpectralEnhancer(16, 8, 2), SpatialStudent(16)
        trainer = Stage2Trainer(spectral, spatial, distributed=False)
        data = load_training_scenes([s], k=16, mask_anomalies=mask)
        return trainer.evaluate(TileSampler(data, 32, 1, seed=0, augment=False).sample())[0]

    assert one_loss(scene, True) == one_loss(altered, True)
    assert one_loss(scene, False) != one_loss(altered, False)


def test_grad_clip_bounds_the_gradient_norm() -> None:
    scenes = load_training_scenes(_scenes(1), k=16)
    batch = TileSampler(scenes, 16, 4, seed=0).sample()
    torch.manual_seed(0)
    spectral, spatial = SpectralEnhancer(16, 8, 2), SpatialStudent(16)
    trainer = Stage2Trainer(spectral, spatial, grad_clip=1e-3, distributed=False)
    total, parts = trainer.step(batch)
    assert np.isfinite(total) and set(parts) == {"decorrelation", "cosine", "variance", "reconstruction"}
    grads = [p.grad for p in trainer.optimizer.param_groups[0]["params"]]
    assert (
        float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        <= 1.0001e-3
    )


def test_config_validation() -> None:
    with pytest.raises(TrainError):
        TrainConfig(stage="3")
    with pytest.raises(TrainError):
        TrainConfig(encoder="imagenet")
    with pytest.raises(TrainError, match="nothing to do"):
        TrainConfig(stage="2", spatial=False)


def test_a_stage2_resume_before_its_first_checkpoint_starts_stage2_afresh(tmp_path: Path, capsys) -> None:
    """`--stage 2 --resume` right after `--stage 1` (stage 2 interrupted before its first checkpoint)
    took the stage-1 run's checkpoint for its own and refused the config diff (stage 1 -> 2)."""
    scenes = _scenes(1)
    train(_config(tmp_path, stage="1", steps_per_epoch=2), scenes=scenes)
    resumed = train(_config(tmp_path, stage="2", steps_per_epoch=2, resume=True), scenes=scenes)
    assert "no stage-2 checkpoint" in capsys.readouterr().err
    again = train(_config(tmp_path, stage="2", steps_per_epoch=2), scenes=scenes)  # the same run, not resumed
    assert _identical(_weights(resumed), _weights(again))


def test_stage2_alone_without_bundle_fails(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="stage-1 bundle"):
        train(_config(tmp_path, stage="2"), scenes=_scenes(1))


def test_cli_arguments_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, scene in enumerate(_scenes(2)):
        np.save(data / f"scene{i}.npy", scene.cube)
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / "cli-model"
    argv = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--exclude",
        "scene1",
        "--seed",
        "7",
        "--encoder",
        "random",
        "--no-spatial",
        "--alpha-spe",
        "0.5",
        "--quiet",
        "--threads",
        "1",
        "--k",
        "16",
        "--hidden",
        "8",
        "--blocks",
        "2",
        "--tile",
        "16",
        "--batch",
        "2",
    ]
    args = parser.parse_args(argv)
    config = config_from_args(args, command=["edge-had", "train", *argv])
    assert config.exclude == ("scene1",) and config.seed == 7 and not config.spatial and not config.progress
    assert parser.parse_args(["--out", "x"]).stage == "all"
    assert config.start_from is None and not config.ranking_implants
    implants = ["--out", "x", "--ranking-epochs", "1", "--ranking-implants"]
    assert config_from_args(parser.parse_args(implants)).ranking_implants
    assert (
        config_from_args(parser.parse_args(["--out", "x", "--start-from", "r/c.pt"])).start_from == "r/c.pt"
    )
    assert run_train(args) == 0
    printed = capsys.readouterr().out
    assert "stage1" in printed and str(out) in printed
    record = json.loads((out / TRAIN_CONFIG_FILE).read_text())
    assert [d["name"] for d in record["data"]] == ["scene0"] and len(record["data"][0]["sha256"]) == 64
    assert not load_bundle(out).config.spatial


# --------------------------------------------------------------------------- data parallel


def _ddp_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            # as under torchrun: the store is the launcher's (the test's), every rank a client
            "TORCHELASTIC_USE_AGENT_STORE": "True",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
        }
    )
    import edge_had.train.runner as runner

    writes: list[str] = []
    original_bundle, original_ckpt = runner.save_bundle, runner._save_checkpoint
    runner.save_bundle = lambda *a, **k: (writes.append("bundle"), original_bundle(*a, **k))[1]
    runner._save_checkpoint = lambda *a, **k: (writes.append("checkpoint"), original_ckpt(*a, **k))[1]
    config = TrainConfig(
        **{**SMALL, "threads": 1},
        out=str(Path(folder) / "model"),
        epochs=1,
        steps_per_epoch=2,
        pretrain_epochs=1,
        ranking_epochs=1,  # one labelled scene per rank
        device="cpu",
    )
    result = train(config, scenes=_scenes(2))
    torch.save(
        {
            "weights": _weights(result),
            "writes": writes,
            "world": result["world_size"],
            "history": result["histories"],
        },
        Path(folder) / f"rank{rank}.pt",
    )


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    # The ranks meet at a store the test hosts, as torchrun's agent does: bound to a port the kernel
    # picks and held until the ranks are done. A port found free first and bound later by rank 0
    # can be taken in between by another test run (seconds here: rank 0 imports torch first); its
    # ranks then fail with EADDRINUSE or join the other run's store.
    store = torch.distributed.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    mp.spawn(_ddp_worker, args=(2, store.port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert _identical(r0["weights"], r1["weights"])
    assert _losses(r0["history"]) == _losses(r1["history"])  # logged losses are averaged over ranks
    assert "bundle" in r0["writes"] and "checkpoint" in r0["writes"] and r1["writes"] == []
    assert list(r0["history"]) == ["pretrain", "stage1", "ranking", "stage2"]
    assert load_bundle(tmp_path / "model").config.k == 16


def test_a_checkpoint_from_another_number_of_processes_is_refused() -> None:
    """A 2-rank torchrun checkpoint drew a global batch of 2 x batch: resuming or starting from it
    in one process would not reproduce it (a review found it accepted), as with another thread
    count. Checkpoints from before the field was recorded are taken as before."""
    from edge_had.train.runner import TrainError, _check_world_size

    with pytest.raises(TrainError, match="its phases ran on 2 process"):
        _check_world_size({"world_size_used": 2, "loss_batch": "global"}, 1, "cannot resume")
    _check_world_size({"world_size_used": 2, "loss_batch": "global"}, 2, "cannot resume")
    _check_world_size({}, 1, "cannot resume")
    _check_world_size({"world_size_used": 1}, 1, "cannot resume")  # one process: the same objective
    # a 2-rank checkpoint from before the losses were taken over the global batch trained another
    # stage-2 objective: continuing it would switch objectives mid-run in silence (a review)
    with pytest.raises(TrainError, match="each taking the loss of its own batch"):
        _check_world_size({"world_size_used": 2}, 2, "cannot resume")


def test_resume_refuses_another_thread_count(tmp_path: Path) -> None:
    """Phases run on 1 thread continued on 2 give other weights (an audit: f8a66b... against
    cadeff...): refused as --start-from refuses it."""
    scenes = _scenes(1)
    config = _config(tmp_path, steps_per_epoch=2)
    train(config, scenes=scenes)
    with pytest.raises(TrainError, match="ran on 1 CPU thread"):
        train(dataclasses.replace(config, resume=True, threads=2), scenes=scenes)


@pytest.mark.parametrize(
    ("pointer", "content", "says"),
    [
        ({"file": "x.pt"}, bytes(range(64)), "UnpicklingError"),
        ({"file": "x.pt"}, b"", "EOFError"),
        ({"file": 3}, None, "cannot read the latest checkpoint"),
        (["x"], None, "TypeError"),
    ],
    ids=["random bytes", "empty file", "a number for the file", "a list for the pointer"],
)
def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, pointer, content, says: str) -> None:
    """Random bytes, an empty file or a mangled latest.json under --resume: a TrainError naming
    the file, not an UnpicklingError, EOFError or TypeError traceback (an audit)."""
    config = _config(tmp_path, resume=True)
    folder = Path(config.out) / CHECKPOINT_DIR
    folder.mkdir(parents=True)
    (folder / "latest.json").write_text(json.dumps(pointer))
    if content is not None:
        (folder / "x.pt").write_bytes(content)
    with pytest.raises(TrainError, match=says) as caught:
        train(config, scenes=_scenes(1))
    assert "latest.json" in str(caught.value) and "start over" in str(caught.value)


def test_a_checkpoint_that_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, resume=True)
    folder = Path(config.out) / CHECKPOINT_DIR
    folder.mkdir(parents=True)
    torch.save([1, 2, 3], folder / "x.pt")
    (folder / "latest.json").write_text(json.dumps({"file": "x.pt"}))
    with pytest.raises(TrainError, match="not an edge-had checkpoint"):
        train(config, scenes=_scenes(1))
    with pytest.raises(TrainError, match="EOFError"):
        (tmp_path / "empty.pt").write_bytes(b"")
        train(_config(tmp_path, "other", start_from=str(tmp_path / "empty.pt")), scenes=_scenes(1))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--ranking-lr", "0.5"], "--ranking-lr"),
        (["--encoder", "random", "--pretrain-epochs", "5"], "--pretrain-epochs"),
        (["--no-spatial", "--decorrelation-weight", "0"], "--decorrelation-weight"),
        (["--stage", "2", "--ranking-epochs", "3"], "--ranking-epochs"),
        (["--stage", "1", "--decorrelation-weight", "2"], "--decorrelation-weight"),
        (["--no-spatial", "--alpha-spa", "4"], "--alpha-spa"),
        (["--stage", "2", "--no-reverse-distillation"], "--no-reverse-distillation"),
    ],
)
def test_train_refuses_options_no_phase_reads(tmp_path: Path, capsys, options: list[str], named: str) -> None:
    """Accepted, recorded in train_config.json, and changing nothing (an audit): refused, naming
    the option and the run's phases, before any scene is read."""
    from edge_had.cli import main

    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), *options]) == 2
    error = capsys.readouterr().err
    assert f"{named}: no phase of this run reads them" in error and "its phases:" in error


def test_two_files_of_one_scene_name_are_refused(tmp_path: Path, capsys) -> None:
    """abu-beach-2.mat and a copy as .npy trained twice, the copy without its anomaly mask."""
    from edge_had.cli import main

    np.save(tmp_path / "scene.npy", np.zeros((4, 4, 3), np.float32))
    (tmp_path / "scene.mat").write_bytes(b"")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert (
        "more than one file per scene name (scene.mat, scene.npy); keep one of each"
        in capsys.readouterr().err
    )


def test_resume_without_a_checkpoint_says_so_even_when_quiet(tmp_path: Path, capsys) -> None:
    train(_config(tmp_path, resume=True, steps_per_epoch=1, epochs=1, pretrain_epochs=1), scenes=_scenes(1))
    assert "--resume: no checkpoint in" in capsys.readouterr().err


@pytest.mark.parametrize("broken", [{"config": "oops"}, {"config": None}, {"drop": "completed"}])
def test_a_checkpoint_with_parts_missing_is_a_clear_error(tmp_path: Path, broken: dict) -> None:
    """The right format, a part missing or damaged: a KeyError or TypeError traceback before."""
    scenes = _scenes(1)
    config = _config(tmp_path, steps_per_epoch=1, epochs=1, pretrain_epochs=1)
    train(config, scenes=scenes)
    folder = Path(config.out) / CHECKPOINT_DIR
    name = json.loads((folder / "latest.json").read_text())["file"]
    state = torch.load(folder / name, weights_only=True)
    if "drop" in broken:
        del state[broken["drop"]]
    else:
        state.update(broken)
    torch.save(state, folder / name)
    with pytest.raises(TrainError, match="incomplete or damaged checkpoint"):
        train(dataclasses.replace(config, resume=True), scenes=scenes)
