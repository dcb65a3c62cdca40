"""Report fields against independent counts: each field is what it says (a field written from the
wrong variable, or not updated, passed every other test - found by hand-made mutants)."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage
from scipy.io import savemat

from edge_had.cli import main
from edge_had.detectors import rx_reference
from edge_had.detectors.registry import make_detector
from edge_had.eval.metrics import roc_auc
from edge_had.eval.protocol import evaluate_scene
from edge_had.io import Scene
from edge_had.io.synthetic import synthetic_scene
from edge_had.stream.causal import CausalSettings
from edge_had.stream.pipeline import StreamPipeline
from edge_had.stream.run import run_stream
from edge_had.stream.sources import synthetic_lines


def scene_with_invalid_background(seed: int = 3):
    """A synthetic scene (AUC < 1) whose background holds 40 invalid pixels."""
    scene = synthetic_scene(lines=48, width=40, bands=24, seed=seed)
    cube = np.array(scene.cube, dtype=np.float32)
    rng = np.random.default_rng(seed)
    background = np.flatnonzero(~scene.gt.ravel())
    invalid = rng.choice(background, 40, replace=False)
    rows, cols = np.unravel_index(invalid, scene.gt.shape)
    cube[rows, cols, :] = np.nan
    valid = np.ones(scene.gt.shape, dtype=bool)
    valid[rows, cols] = False
    return cube, scene.gt, valid, scene.wavelengths


def test_eval_entry_counts_valid_pixels_good_bands_and_scores_valid_pixels_only():
    cube, gt, valid, wavelengths = scene_with_invalid_background()
    good = np.ones(cube.shape[2], dtype=bool)
    good[[0, 5, 23]] = False  # bad bands (an ENVI bbl)
    scene = Scene(cube=cube, valid=valid, good_bands=good, name="s", gt=gt, wavelengths=wavelengths)
    entry, _ = evaluate_scene(make_detector("rx"), scene)
    assert entry["valid_pixels"] == 48 * 40 - 40
    assert entry["bands"] == 21
    oracle = rx_reference(cube[:, :, good], mask=valid)  # float64 RX on the valid pixels, good bands
    assert entry["auc"] == roc_auc(np.where(valid, oracle, np.nan), gt, valid) < 1.0
    # the invalid pixels left in as the lowest scores would have raised it
    assert roc_auc(np.nan_to_num(np.where(valid, oracle, np.nan), nan=0.0), gt) > entry["auc"]


def test_stream_report_auc_counts_valid_pixels_only(tmp_path):
    cube, gt, valid, _ = scene_with_invalid_background(seed=5)
    savemat(tmp_path / "scene.mat", {"data": cube.astype(np.float64), "map": gt.astype(np.uint8)})
    report_path = tmp_path / "report.json"
    argv = ["stream", "--source", str(tmp_path / "scene.mat"), "--detector", "rx", "--out", str(tmp_path)]
    assert main([*argv, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    scores = np.load(tmp_path / "scores.npy")
    assert np.isnan(scores[~valid]).all()
    assert report["auc"] == roc_auc(np.nan_to_num(scores, nan=0.0), gt, valid)
    assert report["auc"] != roc_auc(np.nan_to_num(scores, nan=0.0), gt)


def test_stream_report_counts_small_events_and_the_look_ahead(tmp_path):
    out = tmp_path / "run"
    argv = ["stream", "--source", "synthetic", "--detector", "enhanced-rx", "--width", "48", "--bands", "20",
            "--lines", "160", "--pfa", "1e-2", "--min-event-area", "3", "--out", str(out),
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    hot = np.nan_to_num(np.load(out / "scores.npy"), nan=-np.inf) > report["events"]["threshold"]
    labels, count = ndimage.label(hot, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())[1:]
    # a component on the stream's first or last line is cut (its size unknown): kept whatever its area
    on_edge = np.unique(labels[[0, -1]])
    cut = np.zeros(count, dtype=bool)
    cut[on_edge[on_edge > 0] - 1] = True
    assert report["events"]["suppressed_small"] == int(((areas < 3) & ~cut).sum()) > 0
    assert report["events"]["count"] == int(((areas >= 3) | cut).sum())
    # the enhancement holds lines back as well as RX: the whole pipeline's look-ahead, in time
    assert report["look_ahead_lines"] > 0
    assert report["look_ahead_ms"] == report["look_ahead_lines"] * 1e3 / 330.0  # the FX10's line rate


def test_health_counts_every_statistics_refresh():
    pipeline = StreamPipeline(16, 12, settings=CausalSettings(warmup_lines=5, refresh_every=3))
    run_stream(synthetic_lines(16, 12, lines=50, seed=2), pipeline)
    # refreshed at the end of the warm-up, then every third line after it
    assert pipeline.health.statistics_refreshes == pipeline.rx.refreshes == 1 + (50 - 5) // 3


def test_eval_notes_go_by_the_good_bands_the_scores_and_the_file_hash():
    from edge_had.eval.protocol import constant_scores_note, same_name_note

    # bands 0 and 1 (350.0, 367.9 nm: below the model's 400 nm) are bad: every good band gets weight
    scene = synthetic_scene(lines=24, width=24, bands=40, seed=2)
    scene.wavelengths = np.linspace(350.0, 1050.0, 40)
    scene.good_bands = np.arange(40) >= 2
    entry, _ = evaluate_scene(make_detector("resampled-rx"), scene)
    assert entry["bands"] == 38 and not any("get no weight" in note for note in entry["notes"])
    # a map with every valid pixel alike says so; one varying by 1e-6 is not alike
    valid = np.ones((2, 2), dtype=bool)
    valid[1, 1] = False
    note = constant_scores_note(np.array([[5.0, 5.0], [5.0, 7.0]]), valid)
    assert note is not None and note.startswith("every one of the 3 valid pixels scored 5:")
    assert constant_scores_note(np.array([[5.0, 5.0], [5.000005, np.nan]]), valid) is None
    assert constant_scores_note(np.array([[5.0, np.nan]]), np.ones((1, 2), dtype=bool)) is None  # one pixel
    # a training scene's name on another file is said; the training file itself is no news
    training = {"aa11": "urban-1"}
    assert same_name_note(training, "aa11", "urban-1") is None
    assert same_name_note(training, "bb22", "urban-1").startswith("a scene named urban-1 was among")
    assert same_name_note(training, "bb22", "beach-2") is None
