"""`--interleave` on every command that reads scene files besides detect, eval and stream (see
tests/test_cli.py): train, release, crossval, calibrate and export read a folder of cubes stored
bands first (bsq) exactly as they read the same cubes stored rows x cols x bands, and record the
option in what they write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from edge_had.cli import main
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import load_bundle

#: a tiny training run (seconds on one thread)
TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--pretrain-epochs", "1", "--tile", "16", "--batch", "2",
        "--k", "8", "--hidden", "8", "--threads", "1", "--quiet"]  # fmt: skip


def write_both_layouts(root: Path, seeds: tuple[int, ...] = (0, 1)) -> tuple[Path, Path]:
    """The same labelled scenes (with their wavelengths) in ``root/bip`` as rows x cols x bands
    and in ``root/bsq`` as bands x rows x cols, under the same file names."""
    bip, bsq = root / "bip", root / "bsq"
    bip.mkdir()
    bsq.mkdir()
    for seed in seeds:
        scene = synthetic_scene(lines=24, width=20, bands=12, seed=seed)
        fields = {"map": scene.gt.astype(np.uint8), "wavelength": scene.wavelengths}
        savemat(bip / f"s{seed}.mat", {"data": scene.cube, **fields})
        savemat(bsq / f"s{seed}.mat", {"data": np.moveaxis(scene.cube, -1, 0), **fields})
    return bip, bsq


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_bundle(a), load_bundle(b)
    for net_a, net_b in ((first.spectral, second.spectral), (first.spatial, second.spatial)):
        pairs = zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True)
        for (name, x), (_, y) in pairs:
            assert torch.equal(x, y), name


def test_train_reads_a_bands_first_folder_with_interleave_and_records_it(tmp_path: Path, capsys) -> None:
    bip, bsq = write_both_layouts(tmp_path)
    assert main(["train", "--data", str(bsq), "--out", str(tmp_path / "no"), *TINY]) == 2
    assert "Read it as bsq (--interleave bsq" in capsys.readouterr().err  # needed, and said so
    argv = ["train", "--data", str(bsq), "--out", str(tmp_path / "bsq-model"), "--interleave", "bsq"]
    assert main([*argv, *TINY]) == 0
    assert main(["train", "--data", str(bip), "--out", str(tmp_path / "bip-model"), *TINY]) == 0
    assert_same_weights(tmp_path / "bsq-model", tmp_path / "bip-model")  # the same training data
    models = ("bsq-model", "bip-model")
    records = [json.loads((tmp_path / m / "train_config.json").read_text()) for m in models]
    assert [record["config"]["interleave"] for record in records] == ["bsq", None]
    read = [[(s["shape"], s["background_pixels"], s["adapter"]) for s in r["data"]] for r in records]
    assert read[0] == read[1] and read[0][0][0] == [8, 24, 20] and read[0][0][2] == "wavelength"


def test_release_reads_a_bands_first_folder_with_interleave_and_records_it(tmp_path: Path) -> None:
    bip, bsq = write_both_layouts(tmp_path)
    argv = ["release", "--data", str(bsq), "--out", str(tmp_path / "bsq-model"), "--interleave", "bsq"]
    assert main([*argv, *TINY]) == 0
    assert main(["release", "--data", str(bip), "--out", str(tmp_path / "bip-model"), *TINY]) == 0
    assert_same_weights(tmp_path / "bsq-model", tmp_path / "bip-model")
    sidecars = [json.loads((tmp_path / m / "sidecar.json").read_text()) for m in ("bsq-model", "bip-model")]
    # the alphas are chosen on the labelled scenes read the same way
    chosen = ("alpha_spe", "alpha_spa", "hybrid_alpha_spe", "alpha_scenes")
    assert [sidecars[0][key] for key in chosen] == [sidecars[1][key] for key in chosen]
    assert [sidecar["interleave"] for sidecar in sidecars] == ["bsq", None]
    record = json.loads((tmp_path / "bsq-model" / "train_config.json").read_text())
    assert record["config"]["interleave"] == "bsq"


def test_crossval_reads_a_bands_first_folder_with_interleave_and_records_it(
    tmp_path: Path, monkeypatch
) -> None:
    import edge_had.eval.crossval as crossval

    real = crossval.run_crossval
    tiny = {
        "epochs": 1,
        "steps_per_epoch": 2,
        "pretrain_epochs": 1,
        "tile": 16,
        "batch": 2,
        "k": 8,
        "hidden": 8,
    }

    def tiny_run(config):  # the command's own config, trained tiny (--epochs is its only override)
        config.train_overrides.update(tiny)
        return real(config)

    monkeypatch.setattr(crossval, "run_crossval", tiny_run)
    bip, bsq = write_both_layouts(tmp_path)
    argv = ["crossval", "--folds", "2", "--seeds", "0", "--jobs", "1", "--quiet"]
    assert main([*argv, "--data", str(bsq), "--out", str(tmp_path / "cv-bsq"), "--interleave", "bsq"]) == 0
    assert main([*argv, "--data", str(bip), "--out", str(tmp_path / "cv-bip")]) == 0
    reports = [json.loads((tmp_path / cv / "crossval.json").read_text()) for cv in ("cv-bsq", "cv-bip")]
    assert reports[0]["scenes"] == reports[1]["scenes"] and reports[0]["alphas"] == reports[1]["alphas"]
    assert [report["interleave"] for report in reports] == ["bsq", None]
    fold = Path("models") / "main" / "seed0" / "fold0"
    assert_same_weights(tmp_path / "cv-bsq" / fold, tmp_path / "cv-bip" / fold)
    record = json.loads((tmp_path / "cv-bsq" / fold / "train_config.json").read_text())
    assert record["config"]["interleave"] == "bsq"


def test_calibrate_reads_a_bands_first_folder_with_interleave_and_records_it(tmp_path: Path, capsys) -> None:
    from edge_had.build.calibration import load_calibration_set

    bip, bsq = write_both_layouts(tmp_path)
    argv = ["calibrate", "--blocks-per-scene", "2", "--lines-per-block", "8"]
    assert main([*argv, "--data", str(bsq), "--out", str(tmp_path / "bsq.npz"), "--interleave", "bsq"]) == 0
    assert main([*argv, "--data", str(bip), "--out", str(tmp_path / "bip.npz")]) == 0
    sets = [load_calibration_set(tmp_path / name) for name in ("bsq.npz", "bip.npz")]
    assert len(sets[0].blocks) == len(sets[1].blocks) == 4
    for got, want in zip(sets[0].blocks, sets[1].blocks, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [s.manifest["interleave"] for s in sets] == ["bsq", None]
    on_disk = json.loads((tmp_path / "bsq.manifest.json").read_text())
    assert on_disk["interleave"] == "bsq"
    # an ENVI file says its own layout: given one with it, a clear error naming the file
    from spectral import envi

    envi.save_image(str(bip / "e.hdr"), np.ones((8, 6, 12), np.float32), ext=".img")
    capsys.readouterr()
    assert main([*argv, "--data", str(bip), "--out", str(tmp_path / "x.npz"), "--interleave", "bip"]) == 2
    error = capsys.readouterr().err
    assert "e.hdr" in error and "interleave bip given for an ENVI file" in error


def test_export_gates_on_bands_first_scenes_with_interleave_and_records_it(
    tmp_path: Path, untrained_bundle, monkeypatch
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import edge_had.build.gate as gate_module

    monkeypatch.setitem(gate_module.TOLERANCES, "fp16", 1.0)  # the flow, not this untrained model's verdict
    model = untrained_bundle(seed=0, k=8, hidden=8, blocks=1)
    bip, bsq = write_both_layouts(tmp_path)
    reports = []
    for folder, extra in ((bsq, ["--interleave", "bsq"]), (bip, [])):
        out = tmp_path / f"export-{folder.name}"
        argv = ["export", "--model", str(model), "--bands", "12", "--precision", "fp16", "--out", str(out)]
        # the sensor's wavelengths from one of the scene files, read in the same order
        argv += ["--gate-data", str(folder), "--wavelengths", str(folder / "s0.mat")]
        assert main([*argv, *extra]) == 0
        reports.append(json.loads((out / "export_report.json").read_text()))
    assert reports[0]["gate"]["rows"] == reports[1]["gate"]["rows"]
    assert [row["source"] for row in reports[0]["gate"]["rows"]] == ["real", "real"]
    assert reports[0]["torch_vs_onnxruntime_fp32"] == reports[1]["torch_vs_onnxruntime_fp32"]
    assert [report["interleave"] for report in reports] == ["bsq", None]


def test_interleave_is_checked_where_a_training_run_takes_it() -> None:
    from edge_had.train.config import TrainConfig, TrainError
    from edge_had.train.data import training_scenes

    with pytest.raises(
        TrainError, match="interleave must be one of bip, bil, bsq or None, got 'bands-first'"
    ):
        TrainConfig(data="", out="", interleave="bands-first")
    scene = synthetic_scene(lines=8, width=8, bands=4, seed=0)
    with pytest.raises(ValueError, match="interleave bsq is for scene files; in-memory scenes were given"):
        training_scenes([scene], interleave="bsq")
