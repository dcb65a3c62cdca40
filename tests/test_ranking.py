"""The supervised ranking phase: its loss and differentiable RX (against the numpy oracle and hand
values), labelled scenes, the scene sampler, the trainer, and the phase inside a training run.

Tiny synthetic scenes (32 x 32 px, 24 bands, K = 16) on the CPU, like tests/test_train.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_had.detectors.rx import rx_reference
from edge_had.io import Scene
from edge_had.io.synthetic import synthetic_scene
from edge_had.models.spectral import SpectralEnhancer
from edge_had.train.data import (
    IMPLANT_FRACTION,
    IMPLANT_OBJECTS,
    IMPLANT_SIDES,
    SceneBatch,
    SceneCrop,
    SceneSampler,
    background_spectra,
    implant_anomalies,
    load_labelled_scenes,
    load_training_scenes,
    prepare_scene,
    rankable,
)
from edge_had.train.loops import RankingTrainer
from edge_had.train.losses import log_global_rx, pairwise_ranking_loss
from edge_had.train.runner import CHECKPOINT_DIR, TRAIN_CONFIG_FILE, TrainConfig, TrainError, train

SMALL = {"k": 16, "hidden": 8, "blocks": 2, "tile": 16, "batch": 4, "threads": 1, "progress": False}


def _scenes(n: int = 2, size: int = 32) -> list[Scene]:
    scenes = [synthetic_scene(seed=s, lines=size, width=size, bands=24) for s in range(n)]
    return [dataclasses.replace(scene, name=f"s{i}") for i, scene in enumerate(scenes)]


def _config(tmp_path: Path, name: str = "model", **overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        **SMALL,
        "out": str(tmp_path / name),
        "encoder": "random",
        "reverse_distillation": False,
        "spatial": False,
        "ranking_epochs": 2,
        "steps_per_epoch": 3,
        "epochs": 1,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- losses


def test_log_global_rx_matches_the_numpy_oracle_and_is_differentiable() -> None:
    rng = np.random.default_rng(0)
    cube = rng.normal(size=(12, 9, 5)) @ rng.normal(size=(5, 5))  # correlated bands
    valid = np.ones((12, 9), dtype=bool)
    valid[0, :3] = False
    z = torch.tensor(cube.transpose(2, 0, 1), requires_grad=True)
    scores = log_global_rx(z, torch.from_numpy(valid))
    oracle = rx_reference(cube, mask=valid)[valid]
    np.testing.assert_allclose(scores.exp().detach().numpy(), oracle, rtol=1e-6)  # the 1e-9 ridge
    scores.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # RX is affine invariant: a scaled and shifted cube scores the same
    again = log_global_rx(3.0 * z.detach() + 1.0, torch.from_numpy(valid))
    np.testing.assert_allclose(again.numpy(), scores.detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="K x H x W"):
        log_global_rx(z.detach()[None], torch.from_numpy(valid))
    few = np.zeros((12, 9), dtype=bool)
    few[0, :6] = True  # 6 pixels in 5 bands: every RX score would be n - 1, nothing to rank
    with pytest.raises(ValueError, match="more than K"):
        log_global_rx(z.detach(), torch.from_numpy(few))


def test_pairwise_ranking_loss_hand_values() -> None:
    # one pair, positive ahead by 2 at temperature 1: log(1 + e^-2)
    loss = pairwise_ranking_loss(torch.tensor([2.0]), torch.tensor([0.0]), temperature=1.0)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-2.0)))
    # a tie costs log 2 per pair; the mean runs over all 2 x 3 pairs
    tie = pairwise_ranking_loss(torch.zeros(2), torch.zeros(3))
    assert float(tie) == pytest.approx(math.log(2.0))
    # the temperature scales the margin: ahead by 1 at 0.5 = ahead by 2 at 1
    half = pairwise_ranking_loss(torch.tensor([1.0]), torch.tensor([0.0]), temperature=0.5)
    assert float(half) == pytest.approx(float(loss))
    # positives behind the negatives cost more than positives ahead
    behind = pairwise_ranking_loss(torch.tensor([0.0]), torch.tensor([2.0]), temperature=1.0)
    assert float(behind) > math.log(2.0) > float(loss)
    with pytest.raises(ValueError, match="temperature"):
        pairwise_ranking_loss(torch.ones(1), torch.zeros(1), temperature=0.0)
    with pytest.raises(ValueError, match="at least one"):
        pairwise_ranking_loss(torch.ones(0), torch.zeros(1))


# --------------------------------------------------------------------------- data


def test_labelled_scenes_keep_the_anomalies_and_skip_unlabelled_scenes() -> None:
    scenes = _scenes(4)
    scenes[1] = dataclasses.replace(scenes[1], gt=None)
    scenes[2] = dataclasses.replace(scenes[2], gt=np.zeros_like(scenes[2].gt))
    scenes[3] = dataclasses.replace(scenes[3], gt=np.ones_like(scenes[3].gt))  # no background
    labelled = load_labelled_scenes(scenes, k=16)
    assert [s.name for s in labelled] == ["s0"]
    scene = labelled[0]
    assert scene.anomalies.sum() > 0 and torch.equal(scene.anomalies, torch.from_numpy(scenes[0].gt))
    # not inpainted: the anomaly pixels are the detector's input, not their surroundings
    assert torch.equal(scene.x, prepare_scene(scenes[0], 16, mask_anomalies=False).x)
    inpainted = prepare_scene(scenes[0], 16).x
    assert not torch.allclose(scene.x[:, scene.anomalies], inpainted[:, scene.anomalies])
    with pytest.raises(ValueError, match="no training scene has ground-truth anomalies"):
        load_labelled_scenes(scenes[1:], k=16)


def test_unlabelled_pixels_are_neither_ranked_nor_trained_on_as_background() -> None:
    """A map's unlabelled pixels (Scene.labelled False) may hide anomalies: the ranking phase
    never ranks them as background (they stay in its RX statistics, as in detection's), and with
    anomaly masking the background-only phases leave them out of the background (inpainted, as
    anomalies are)."""
    scene = _scenes(1)[0]
    labelled = np.ones(scene.gt.shape, bool)
    labelled[:, :8] = False
    assert (scene.gt & ~labelled).any() and (scene.gt & labelled).any()
    scene = dataclasses.replace(scene, labelled=labelled)
    ranked = load_labelled_scenes([scene], k=16)[0]
    assert torch.equal(ranked.valid, torch.from_numpy(scene.valid))  # the RX statistics' pixels
    assert torch.equal(ranked.labelled, torch.from_numpy(labelled))
    assert torch.equal(ranked.anomalies, torch.from_numpy(scene.gt & scene.valid & labelled))

    # the loss ranks the anomalies against valid labelled background only (negatives drawn there)
    torch.manual_seed(0)
    trainer = RankingTrainer(SpectralEnhancer(16, 8, 2), alpha=1.0)
    draws = torch.rand(64, dtype=torch.float64)
    crop = SceneCrop(ranked.x, ranked.valid, ranked.anomalies, draws, ranked.labelled)
    loss = float(trainer.loss(SceneBatch([crop], 1.0))[0].detach())
    with torch.no_grad():
        z = ranked.x + trainer.model(ranked.x[None])[0]
        scores = log_global_rx(z, ranked.valid)  # every valid pixel, in raster order
        anomaly, known = ranked.anomalies[ranked.valid], ranked.labelled[ranked.valid]
        background = scores[~anomaly & known]
        picks = (draws * background.numel()).long().clamp_(max=background.numel() - 1)
        expected = float(pairwise_ranking_loss(scores[anomaly], background[picks], trainer.temperature))
    assert loss == pytest.approx(expected, rel=1e-6)
    every = SceneCrop(ranked.x, ranked.valid, ranked.anomalies, draws, torch.ones_like(ranked.labelled))
    assert float(trainer.loss(SceneBatch([every], 1.0))[0].detach()) != pytest.approx(loss, rel=1e-3)
    background = prepare_scene(scene, 16).background[0].numpy()
    assert np.array_equal(background, scene.valid & ~scene.gt & labelled)
    assert np.array_equal(prepare_scene(scene, 16, mask_anomalies=False).background[0].numpy(), scene.valid)
    assert rankable(scene) and not rankable(dataclasses.replace(scene, labelled=~scene.gt))  # none labelled


def test_labelled_scenes_leave_out_the_excluded_ones() -> None:
    """The honesty boundary of cross-validation: a held-out scene's labels never reach the phase."""
    assert [s.name for s in load_labelled_scenes(_scenes(3), exclude=["s1"], k=16)] == ["s0", "s2"]
    with pytest.raises(ValueError, match="names no scene"):
        load_labelled_scenes(_scenes(3), exclude=["s9"], k=16)


def test_crop_window_holds_the_pixel_and_reaches_every_start() -> None:
    for length in range(1, 20):
        for size in range(1, 12):
            for at in range(length):
                starts = {
                    SceneSampler.crop_window(size, length, at, draw).start
                    for draw in np.linspace(0, 1, 200, endpoint=False)
                }
                if length <= size:
                    assert starts == {0}
                    continue
                expected = {s for s in range(length - size + 1) if s <= at < s + size}
                assert starts == expected, (length, size, at)


def test_scene_sampler_crops_hold_an_anomaly_and_ranks_split_the_scenes() -> None:
    labelled = load_labelled_scenes(_scenes(3), k=16)
    whole = SceneSampler(labelled, crop=64, negatives=10, seed=1).sample()
    assert [c.x.shape for c in whole.crops] == [(16, 32, 32)] * 3  # smaller than the crop: whole
    assert whole.weight == pytest.approx(1 / 3)
    sampler = SceneSampler(labelled, crop=8, negatives=10, seed=1)
    for _ in range(20):
        batch = sampler.sample()
        for crop in batch.crops:
            assert crop.x.shape == (16, 8, 8) and crop.anomalies.any()
            assert crop.negative_draws.shape == (10,)
    # deterministic, resumable
    a, b = SceneSampler(labelled, 8, 10, seed=2), SceneSampler(labelled, 8, 10, seed=2)
    assert all(torch.equal(x.x, y.x) for x, y in zip(a.sample().crops, b.sample().crops, strict=True))
    state = a.state_dict()
    after = a.sample()
    a.load_state_dict(state)
    assert all(torch.equal(x.x, y.x) for x, y in zip(a.sample().crops, after.crops, strict=True))
    # two ranks: scenes 0 and 2 on rank 0, scene 1 on rank 1, the same crops as one process
    single = SceneSampler(labelled, 8, 10, seed=3).sample()
    ranks = [SceneSampler(labelled, 8, 10, seed=3, rank=r, world_size=2).sample() for r in (0, 1)]
    assert [len(r.crops) for r in ranks] == [2, 1]
    assert torch.equal(ranks[1].crops[0].x, single.crops[1].x)
    assert torch.equal(ranks[0].crops[1].negative_draws, single.crops[2].negative_draws)
    assert ranks[0].weight == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="cannot feed"):
        SceneSampler(labelled[:1], 8, 10, rank=0, world_size=2)


def test_implanted_anomalies_mix_a_donor_spectrum_into_small_squares() -> None:
    """Hand-checkable case: a zero crop and one donor spectrum of ones, so an implanted pixel
    holds the mixing fraction f in every band (or a mix of two fractions where objects overlap,
    still inside [f_min, 1])."""
    x = torch.zeros(5, 20, 30)
    labelled = torch.zeros(20, 30, dtype=torch.bool)
    labelled[0, 0] = True
    donors = [torch.ones(3, 5)]
    sizes, lowest = set(), 1.0
    for seed in range(40):
        out, mask = implant_anomalies(x, labelled, donors, torch.Generator().manual_seed(seed))
        assert not x.any() and labelled.sum() == 1  # inputs untouched: a copy
        assert mask[0, 0]  # the labelled anomaly stays marked
        implanted = out.abs().sum(0) > 0
        # every changed pixel is marked, and every marked pixel but the labelled one changed
        assert bool((implanted <= mask).all()) and int((mask & ~implanted).sum()) <= 1
        values = out[:, implanted]
        assert torch.allclose(values, values[0:1].expand_as(values))  # the same in every band
        assert float(values.min()) >= IMPLANT_FRACTION[0] - 1e-6 and float(values.max()) <= 1.0 + 1e-6
        sizes.add(int(implanted.sum()))
        lowest = min(lowest, float(values.min()))
        assert 1 <= int(implanted.sum()) <= IMPLANT_OBJECTS[1] * IMPLANT_SIDES[1] ** 2
    assert min(sizes) < IMPLANT_OBJECTS[0] * IMPLANT_SIDES[1] ** 2 < max(sizes)  # the draws vary
    assert lowest < 0.6  # sub-pixel mixes happen, not only full replacement
    # deterministic in the generator
    a = implant_anomalies(x, labelled, donors, torch.Generator().manual_seed(3))
    b = implant_anomalies(x, labelled, donors, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a crop smaller than an object still works (the object is clipped)
    small, small_mask = implant_anomalies(
        torch.zeros(5, 1, 2), torch.zeros(1, 2, dtype=torch.bool), donors, torch.Generator().manual_seed(0)
    )
    assert small_mask.any() and small.shape == (5, 1, 2)
    for bad in ([], [torch.ones(0, 5)], [torch.ones(3, 4)]):
        with pytest.raises(ValueError, match="donor spectra"):
            implant_anomalies(x, labelled, bad, torch.Generator())


def test_scene_sampler_implants_spectra_of_the_other_scenes() -> None:
    scenes = _scenes(3)
    labelled = load_labelled_scenes(scenes, k=16)
    backgrounds = load_training_scenes(scenes, k=16)
    named = [(s.name, background_spectra(s)) for s in backgrounds]
    assert named[0][1].shape == (int(backgrounds[0].background.sum()), 16)
    sampler = SceneSampler(labelled, crop=64, negatives=10, seed=4, implant_from=named)
    assert sampler.implant_donors is not None
    for index, donors in enumerate(sampler.implant_donors):  # never the scene's own background
        others = [pixels for i, (_, pixels) in enumerate(named) if i != index]
        assert len(donors) == 2 and all(d is o for d, o in zip(donors, others, strict=True))
    plain = SceneSampler(labelled, crop=64, negatives=10, seed=4).sample()
    batch = sampler.sample()
    for scene, crop, before in zip(labelled, batch.crops, plain.crops, strict=True):
        changed = (crop.x != scene.x).any(0)
        assert changed.any() and bool((changed <= crop.anomalies).all())
        assert (
            bool((scene.anomalies <= crop.anomalies).all()) and crop.anomalies.sum() > scene.anomalies.sum()
        )
        assert torch.equal(before.anomalies, scene.anomalies)  # off: the labelled anomalies only
    # two ranks get one process's crops, implants included (drawn for every scene on every rank)
    single = SceneSampler(labelled, 64, 10, seed=5, implant_from=named).sample()
    ranks = [
        SceneSampler(labelled, 64, 10, seed=5, rank=r, world_size=2, implant_from=named).sample()
        for r in (0, 1)
    ]
    assert torch.equal(ranks[1].crops[0].x, single.crops[1].x)
    assert torch.equal(ranks[0].crops[1].anomalies, single.crops[2].anomalies)
    # one training scene: it donates to itself
    alone = SceneSampler(labelled[:1], 64, 10, implant_from=named[:1])
    assert alone.implant_donors == [[named[0][1]]]
    with pytest.raises(ValueError, match="no donor"):
        SceneSampler(labelled, 64, 10, implant_from=[])
    with pytest.raises(ValueError, match="donor spectra"):  # refused up front, not mid-run
        SceneSampler(labelled, 64, 10, implant_from=[("other", torch.ones(5, 15))])


def test_scene_sampler_without_implants_draws_what_it_always_drew() -> None:
    """Off, the sampler's random stream is the one recipes were trained with (bit-identical
    retraining of existing fold models depends on it): per scene an anchor, two window draws and
    the negatives, nothing else."""
    labelled = load_labelled_scenes(_scenes(3), k=16)
    sampler = SceneSampler(labelled, crop=8, negatives=10, seed=6)
    replay = torch.Generator().manual_seed(6)
    for _ in range(3):
        batch = sampler.sample()
        for scene, crop in zip(labelled, batch.crops, strict=True):
            torch.randint(0, int(scene.anomalies.sum()), (1,), generator=replay)
            torch.rand(2, generator=replay, dtype=torch.float64)
            assert torch.equal(crop.negative_draws, torch.rand(10, generator=replay, dtype=torch.float64))
    assert torch.equal(sampler.generator.get_state(), replay.get_state())


# --------------------------------------------------------------------------- trainer and runner


def _training_auc(spectral: SpectralEnhancer, labelled: list) -> float:
    """Mean AUC of global RX of x + f_spe on the labelled scenes (numpy oracle, eval mode)."""
    from edge_had.eval.metrics import roc_auc

    aucs = []
    with torch.no_grad():
        for scene in labelled:
            z = (scene.x + spectral(scene.x[None])[0]).numpy().transpose(1, 2, 0).astype(np.float64)
            aucs.append(roc_auc(rx_reference(z, mask=scene.valid.numpy()), scene.anomalies.numpy()))
    return float(np.mean(aucs))


def test_ranking_trainer_lowers_the_loss_and_raises_the_training_auc() -> None:
    torch.manual_seed(0)
    labelled = load_labelled_scenes(_scenes(2), k=16)
    spectral = SpectralEnhancer(16, 8, 2)
    trainer = RankingTrainer(spectral, lr=1e-2, device="cpu", distributed=False)
    sampler = SceneSampler(labelled, crop=64, negatives=256, seed=0)
    fixed = sampler.sample()
    before, auc_before = trainer.loss(fixed)[0].item(), _training_auc(spectral, labelled)
    trainer.run(sampler, 30, progress=False)
    after, auc_after = trainer.loss(fixed)[0].item(), _training_auc(spectral, labelled)
    assert after < 0.9 * before
    assert auc_after > auc_before + 0.02  # the anomalies, not the background, moved up
    trainer.finish(spectral)
    assert not any(p.requires_grad for p in spectral.parameters())


def test_ranking_phase_in_a_training_run(tmp_path: Path) -> None:
    scenes = _scenes(2)
    assert [p for p, _ in TrainConfig(data="", out="").phases()] == ["pretrain", "stage1", "stage2"]
    config = _config(tmp_path, spatial=True, ranking_lr=1e-2)
    assert [p for p, _ in config.phases()] == ["ranking", "stage2"]
    result = train(config, scenes=scenes)
    history = result["histories"]["ranking"]
    assert len(history["loss"]) == 6 and history["epoch_mean"][-1] < history["epoch_mean"][0]
    record = json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())
    assert record["phases"] == ["ranking", "stage2"] and record["config"]["ranking_epochs"] == 2
    # the ranking phase changes the spectral network: a run without it keeps the initial weights
    plain = train(_config(tmp_path, "plain", spatial=True, ranking_epochs=0), scenes=scenes)
    trained, untouched = result["networks"]["spectral"], plain["networks"]["spectral"]
    assert not torch.equal(trained.head[0].weight, untouched.head[0].weight)
    # implants change what the phase learns (against a run differing in nothing else), and the
    # record says they were on
    implants = train(_config(tmp_path, "implants", ranking_lr=1e-2, ranking_implants=True), scenes=scenes)
    without = train(_config(tmp_path, "without", ranking_lr=1e-2), scenes=scenes)
    epochs = implants["histories"]["ranking"]["epoch_mean"]
    assert epochs[-1] < epochs[0]
    with_head, without_head = (run["networks"]["spectral"].head[0].weight for run in (implants, without))
    assert not torch.equal(with_head, without_head)
    assert json.loads((tmp_path / "implants" / TRAIN_CONFIG_FILE).read_text())["config"]["ranking_implants"]


def _resume_after(config: TrainConfig, scenes: list[Scene], phase: str, epoch: int, drop: list[str]) -> dict:
    """Rewind a finished run to the checkpoint of ``phase`` ``epoch`` (later ones dropped) and
    resume it."""
    folder = Path(config.out) / CHECKPOINT_DIR
    for name in drop:
        (folder / name).unlink()
    pointer = {"file": f"{phase}-epoch{epoch:03d}.pt", "phase": phase, "epoch": epoch}
    (folder / "latest.json").write_text(json.dumps(pointer))
    return train(dataclasses.replace(config, resume=True), scenes=scenes)


def _assert_same_network(a: dict, b: dict, network: str) -> None:
    first, second = a["networks"][network].state_dict(), b["networks"][network].state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_ranking_phase_resumes_to_the_same_weights(tmp_path: Path) -> None:
    scenes = _scenes(2)
    full = train(_config(tmp_path, "full"), scenes=scenes)
    config = _config(tmp_path, "cut", keep_all_checkpoints=True)
    train(config, scenes=scenes)
    resumed = _resume_after(config, scenes, "ranking", 1, drop=["ranking-epoch002.pt"])
    _assert_same_network(full, resumed, "spectral")


def test_a_ranking_run_reads_each_scene_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tile phases and the ranking phase prepare their views from one load of each file, and
    the file's checksum (for the training record) is computed once too."""
    from scipy.io import savemat

    import edge_had.train.data as data_module

    folder = tmp_path / "data"
    folder.mkdir()
    for scene in _scenes(3):
        savemat(folder / f"{scene.name}.mat", {"data": scene.cube, "map": scene.gt.astype(np.uint8)})
    reads: list[str] = []
    real_load = data_module.load_scene

    def counting_load(path: object, *args: object, **kwargs: object) -> Scene:
        reads.append(Path(str(path)).stem)
        return real_load(path, *args, **kwargs)  # type: ignore[arg-type]

    hashed: list[str] = []
    real_checksum = data_module.scene_sha256

    def counting_checksum(path: object) -> str:
        hashed.append(Path(str(path)).stem)
        return real_checksum(path)  # type: ignore[arg-type]

    monkeypatch.setattr(data_module, "load_scene", counting_load)
    monkeypatch.setattr(data_module, "scene_sha256", counting_checksum)
    config = _config(tmp_path, data=str(folder), exclude=("s1",), ranking_implants=True)
    result = train(config)
    assert sorted(reads) == ["s0", "s2"] and sorted(hashed) == ["s0", "s2"]
    record = json.loads((Path(config.out) / TRAIN_CONFIG_FILE).read_text())
    assert [entry["sha256"] for entry in record["data"]] == [
        real_checksum(folder / "s0.mat"),
        real_checksum(folder / "s2.mat"),
    ]
    assert len(result["histories"]["ranking"]["loss"]) == 6


def test_ranking_config_and_data_errors(tmp_path: Path) -> None:
    for bad in (
        {"ranking_negatives": 0},
        {"ranking_alpha": 0.0},
        {"ranking_epochs": -1},
        {"ranking_lr": 0.0},
        {"ranking_temperature": 0.0},
        {"ranking_crop": 4},
        {"ranking_implants": True, "mask_anomalies": False},  # donors would hold anomalies
    ):
        with pytest.raises(TrainError):
            _config(tmp_path, **bad)
    unlabelled = [dataclasses.replace(s, gt=None) for s in _scenes(2)]
    with pytest.raises(TrainError, match="ranking phase: no training scene has ground-truth"):
        train(_config(tmp_path), scenes=unlabelled)


# --------------------------------------------------------------------------- data parallel


def _ranking_steps(rank: int, world: int, folder: str) -> None:
    """The gradient of one ranking batch from the same init, in a ``world``-rank gloo group (or
    alone). Gradients, not weights after some steps: Adam's first steps are ~lr * sign(gradient),
    which float rounding flips on a near-zero gradient. The group meets through a file, not a
    port (a free port found first could be taken by another test run before gloo bound it)."""
    import torch.distributed as dist

    if world > 1:
        rendezvous = f"file://{Path(folder) / 'rendezvous'}"
        dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.set_num_threads(1)
    labelled = load_labelled_scenes(_scenes(3), k=16)
    torch.manual_seed(0)
    spectral = SpectralEnhancer(16, 8, 2)
    trainer = RankingTrainer(spectral, lr=1e-2, device="cpu", distributed=world > 1)
    batch = SceneSampler(labelled, 16, 64, seed=0, rank=rank, world_size=world).sample()
    trainer.loss(batch)[0].backward()  # under DDP the backward averages the ranks' gradients
    if rank == 0:
        grads = {name: p.grad for name, p in spectral.named_parameters()}
        torch.save(grads, Path(folder) / f"world{world}.pt")
    if world > 1:
        dist.barrier()  # no rank tears the group down while another still uses it (gloo aborts)
        dist.destroy_process_group()


def test_ranking_data_parallel_equals_one_process(tmp_path: Path) -> None:
    """Two ranks holding different scenes get the gradient of one process holding all three:
    the batch weight (world size / scenes) turns DDP's gradient average into the mean over scenes."""
    import torch.multiprocessing as mp

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_ranking_steps, args=(2, str(tmp_path)), nprocs=2, join=True)
    # the one process is a fresh one too, not pytest's: the same start as the ranks whatever ran
    # before in this process, and its thread count of 1 stays out of the tests after this one
    mp.spawn(_ranking_steps, args=(1, str(tmp_path)), nprocs=1, join=True)
    two, one = (torch.load(tmp_path / f"world{w}.pt", weights_only=True) for w in (2, 1))
    assert set(two) == set(one)
    # The largest gradient of the network sets the tolerance, not each tensor's own: the biases'
    # true gradient is 0 (float64: < 4e-15), what float32 gives them (up to 1.4e-6 of the scale) is
    # rounding residue. The one process's float32 gradient is within 1.6e-5 of the scale of the
    # float64 one; 5e-5 holds two float32 computations that share no rounding. Measured between
    # the ranks and the one process: 2.4e-9. A batch weight without the world size is off by 50 %.
    scale = max(float(value.abs().max()) for value in one.values())
    assert one["head.0.weight"].abs().max() > 1e-3 * scale
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=5e-5 * scale, rtol=0, msg=name)


def test_resume_accepts_a_checkpoint_older_than_the_ranking_settings(tmp_path: Path) -> None:
    """A checkpoint written before the ranking fields existed resumes (missing = the default)."""
    scenes = _scenes(1)
    config = _config(tmp_path, "old", ranking_epochs=0, spatial=True, epochs=2, keep_all_checkpoints=True)
    full = train(config, scenes=scenes)
    checkpoint = Path(config.out) / CHECKPOINT_DIR / "stage2-epoch001.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = {k: v for k, v in state["config"].items() if not k.startswith("ranking_")}
    torch.save(state, checkpoint)
    resumed = _resume_after(config, scenes, "stage2", 1, drop=["stage2-epoch002.pt"])
    _assert_same_network(full, resumed, "spatial")
