"""``edge-had stream --source FILE``: ENVI and .npy files stream from their memory map in bounded
memory, each line as load_scene reads the file."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from edge_had.cli import main
from edge_had.stream.sources import RELEASE_BYTES, file_lines
from tests.test_io_readers import write_envi


def int16_cube(rows: int, cols: int, bands: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1000 + 30 * rng.standard_normal((rows, cols, bands))).astype(np.int16)


@pytest.mark.parametrize("suffix", [".npy", ".hdr"])
def test_a_file_streams_without_a_float32_copy_of_its_cube(tmp_path: Path, suffix: str) -> None:
    """The command read the whole file into a float32 cube (load_scene) before the first line:
    2x an int16 file's size (reviewer: 424 MB peak for a 102 MB file, 724 MB for 205 MB).
    Streamed, what numpy allocates is a few lines and the rows x cols score map."""
    cube = int16_cube(1500, 64, 120)  # 23 MB as stored, 44 MB in float32
    path = tmp_path / f"scene{suffix}"
    if suffix == ".npy":
        np.save(path, cube)
    else:
        write_envi(path, cube, "bil")
    np.save(tmp_path / "small.npy", cube[:20, :8, :10])
    assert main(["stream", "--source", str(tmp_path / "small.npy"), "--detector", "rx"]) == 0  # imports
    tracemalloc.start()
    try:
        assert main(["stream", "--source", str(path), "--detector", "rx"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    float32_cube = cube.size * 4
    assert peak < float32_cube / 4, f"peak {peak / 2**20:.1f} MiB for a {float32_cube / 2**20:.0f} MiB cube"


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_a_memory_mapped_file_stays_out_of_memory_once_streamed(tmp_path: Path) -> None:
    """A memory map's pages stay resident once read: streamed whole, a 48 MB file was 48 MB of the
    process's memory. They are handed back every RELEASE_BYTES (the kernel's count of the map's
    resident pages, /proc/self/smaps)."""
    cube = int16_cube(600, 200, 200)  # 48 MB
    data = write_envi(tmp_path / "scene.hdr", cube, "bil")
    resident = []
    for line in file_lines(tmp_path / "scene.hdr").lines:
        if line.index % 25 == 24:
            resident.append(mapped_rss(data))
    assert cube.nbytes > 2.5 * RELEASE_BYTES and len(resident) == 24
    assert max(resident) < RELEASE_BYTES + 8 * 2**20, f"{max(resident) / 2**20:.1f} MiB resident"


def mapped_rss(data_file: Path) -> int:
    """Bytes of ``data_file``'s memory maps resident in this process."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: address range ... path
            inside = len(fields) >= 6 and Path(fields[5]) == data_file
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def test_a_streamed_envi_file_scores_as_its_pixels_read_whole(tmp_path: Path) -> None:
    """An int16 ENVI file with a bbl and a 'data ignore value', streamed line by line, against the
    same pixels as load_scene hands them over - its good bands in float32, NaN where no-data -
    written to an HDF5 file, which the command reads whole: the same scores, NaN where no-data."""
    cube = int16_cube(80, 40, 30, seed=1)
    cube[:, :4] = -9999  # a no-data edge
    cube[50, 20, 7] = -9999  # one sample
    good = np.ones(30, bool)
    good[[0, 1, 29]] = False
    write_envi(
        tmp_path / "scene.hdr", cube, "bil", **{"data ignore value": -9999, "bbl": good.astype(int).tolist()}
    )
    whole = cube[:, :, good].astype(np.float32)
    whole[cube[:, :, good].min(axis=2) == -9999] = np.nan
    with h5py.File(tmp_path / "scene.h5", "w") as store:
        store["cube"] = whole
    scores = {}
    for name in ("scene.hdr", "scene.h5"):
        out = tmp_path / name.replace(".", "_")
        argv = ["stream", "--source", str(tmp_path / name), "--detector", "rx", "--reorder-window", "0"]
        assert main([*argv, "--out", str(out)]) == 0
        scores[name] = np.load(out / "scores.npy")
    np.testing.assert_array_equal(scores["scene.hdr"], scores["scene.h5"])
    assert np.isnan(scores["scene.hdr"][:, :4]).all() and np.isnan(scores["scene.hdr"][50, 20])
    assert np.isfinite(scores["scene.hdr"][:, 4:]).sum() == 80 * 36 - 1


@pytest.mark.parametrize("suffix", [".npy", ".hdr"])
def test_a_file_with_no_valid_pixel_gives_load_scenes_error_before_the_stream(
    tmp_path: Path, suffix: str, capsys
) -> None:
    """Band 3 is NaN throughout, so no pixel is valid: the stream rejected every line ('no valid
    pixel') where detect says which band kills them. file_lines now raises load_scene's error
    before the first line, found in one pass over the memory map in bounded memory."""
    from edge_had.errors import SceneError
    from edge_had.io import load_scene

    cube = int16_cube(1500, 64, 120).astype(np.float32)  # 46 MB
    cube[:, :, 3] = np.nan
    path = tmp_path / f"dead{suffix}"
    if suffix == ".npy":
        np.save(path, cube)
    else:
        write_envi(path, cube, "bil")
    with pytest.raises(SceneError) as whole:
        load_scene(path)
    assert "0-based: 3" in str(whole.value)
    tracemalloc.start()
    try:
        with pytest.raises(SceneError) as streamed:
            file_lines(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(streamed.value) == str(whole.value)
    assert peak < cube.nbytes / 8, f"peak {peak / 2**20:.1f} MiB for a {cube.nbytes / 2**20:.0f} MiB cube"
    assert main(["stream", "--source", str(path), "--detector", "rx"]) == 2
    assert "no valid pixel" in capsys.readouterr().err


def test_a_file_saturated_throughout_under_saturation_gives_the_error_before_the_stream(
    tmp_path: Path, capsys
) -> None:
    """Band 5 is at the saturation level on every pixel: with --saturation no pixel is valid, and
    file_lines' check before the first line must apply the level too (a review dropped it from
    the check and every test passed: the stream then rejected every line)."""
    from edge_had.errors import SceneError

    cube = int16_cube(40, 16, 12)
    cube[:, :, 5] = 4095
    path = tmp_path / "glare.hdr"
    write_envi(path, cube, "bil")
    assert file_lines(path).width == 16  # valid without a saturation level
    with pytest.raises(SceneError, match=r"no valid pixel .*saturated \(>= 4095\).*0-based: 5"):
        file_lines(path, saturation=4095)
    argv = ["stream", "--source", str(path), "--detector", "rx", "--saturation", "4095"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "no valid pixel" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_file_whose_first_lines_are_dead_still_streams(tmp_path: Path) -> None:
    """The check stops at the first valid pixel: a file whose first 30 lines are NaN streams, those
    lines rejected as 'no valid pixel' and the rest scored."""
    cube = int16_cube(60, 16, 12).astype(np.float32)
    cube[:30] = np.nan
    np.save(tmp_path / "scene.npy", cube)
    stream = file_lines(tmp_path / "scene.npy")
    lines = list(stream.lines)
    assert len(lines) == 60 and np.isnan(lines[29].pixels).all() and np.isfinite(lines[30].pixels).all()


def test_scene_lines_stream_invalid_pixels_as_nan_without_touching_the_cube() -> None:
    """A .mat/.h5 scene streams its detection cube with Scene.valid applied line by line (the
    helper file streaming uses), not a masked copy of the whole cube."""
    from edge_had.io.scene import make_scene
    from edge_had.stream.sources import scene_lines

    cube = int16_cube(6, 5, 4).astype(np.float32)
    cube[2, 3, 1] = np.inf  # one sample: the pixel is invalid in every band
    scene = make_scene(cube)
    lines = [line.pixels for line in scene_lines(scene.detection_cube(), valid=scene.valid)]
    want = cube.copy()
    want[2, 3] = np.nan
    np.testing.assert_array_equal(np.stack(lines), want)
    assert np.isinf(scene.cube[2, 3, 1])  # the scene's own cube is left as it was


@pytest.mark.parametrize("count", [10, 15])
def test_lines_replays_the_first_lines_of_a_file_as_the_full_replay_scores_them(
    tmp_path: Path, count: int
) -> None:
    """`stream --lines N` was refused for a file. It replays the file's first N lines: causal RX
    scores them as the full replay scores its first N lines (bit for bit), the score map and the
    ENVI score image hold those lines only (on the file's map, which starts at its first line), and
    the report says how many lines were requested, replayed and in the file."""
    cube = int16_cube(40, 12, 10, seed=3)
    header = tmp_path / "scan.hdr"
    write_envi(header, cube, "bil")
    text = header.read_text()
    header.write_text(text + "map info = {UTM, 1, 1, 500.0, 800.0, 1.0, 1.0, 33, North, WGS-84}\n")
    argv = ["stream", "--source", str(header), "--detector", "rx"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, "--out", str(full)]) == 0
    report = tmp_path / "part.json"
    assert main([*argv, "--lines", str(count), "--out", str(part), "--json", str(report)]) == 0
    whole, first = np.load(full / "scores.npy"), np.load(part / "scores.npy")
    assert whole.shape == (40, 12) and first.shape == (count, 12)
    np.testing.assert_array_equal(first, whole[:count])
    image = np.fromfile(part / "scores.img", dtype="<f8").reshape(count, 12)
    np.testing.assert_array_equal(image, whole[:count])
    assert f"lines = {count}\n" in (part / "scores.hdr").read_text()
    written = json.loads(report.read_text())
    assert written["replay"] == {"lines_in_file": 40, "lines_requested": count, "lines_replayed": count}
    assert written["health"]["lines_in"] == count


def test_ctrl_c_before_the_first_line_is_a_message_not_a_traceback(monkeypatch, capsys) -> None:
    """Ctrl-C while the source was rendered or the model loaded (before the stream's own handler)
    ended in a raw KeyboardInterrupt traceback (a review)."""
    from edge_had.stream import command

    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_source", interrupted)
    assert main(["stream", "--source", "synthetic", "--detector", "rx"]) == 130
    assert capsys.readouterr().err == "edge-had stream: interrupted (Ctrl-C) before it finished\n"


def test_a_strip_with_no_target_writes_every_output_and_no_auc(tmp_path: Path, capsys) -> None:
    """`--lines N` stopping before the map's first target (a strip of the flight with none) scored
    the whole stream, then failed on the AUC ("no anomaly pixel") before the report, scores.npy and
    waterfall.png were written: exit 2 and the run lost (a review). Now the AUC is null, a note
    says why, and the outputs are written; with the target in the lines the AUC is there."""
    from scipy.io import savemat

    cube = int16_cube(30, 8, 10, seed=5)
    gt = np.zeros((30, 8), np.uint8)
    gt[25, 3] = 1
    path = tmp_path / "strip.mat"
    savemat(path, {"data": cube.astype(np.float32), "map": gt})
    report, out = tmp_path / "report.json", tmp_path / "out"
    argv = ["stream", "--source", str(path), "--detector", "rx", "--json", str(report), "--out", str(out)]
    assert main([*argv, "--lines", "20"]) == 0
    written = json.loads(report.read_text())
    assert written["auc"] is None
    assert written["notes"] == ["no AUC: no anomaly pixel among the lines streamed"]
    assert "warning: strip: no AUC: no anomaly pixel among the lines streamed" in capsys.readouterr().err
    assert np.load(out / "scores.npy").shape == (20, 8) and (out / "waterfall.png").is_file()
    assert main([*argv, "--lines", "30"]) == 0
    assert 0.0 <= json.loads(report.read_text())["auc"] <= 1.0


@pytest.mark.parametrize("suffix", [".npy", ".mat"])
def test_lines_past_the_end_of_a_file_replays_it_all_and_says_so(tmp_path: Path, suffix: str, capsys) -> None:
    cube = int16_cube(24, 8, 10, seed=4)
    path = tmp_path / f"scan{suffix}"
    if suffix == ".npy":
        np.save(path, cube)
    else:
        from scipy.io import savemat

        savemat(path, {"data": cube.astype(np.float32)})
    report = tmp_path / "report.json"
    argv = ["stream", "--source", str(path), "--detector", "rx", "--json", str(report)]
    assert main([*argv, "--lines", "100"]) == 0
    said = capsys.readouterr()  # on stderr, as the other warnings (stdout has the summary)
    assert "--lines 100: the file has 24 lines; all of them are replayed" in said.err
    assert "all of them are replayed" not in said.out
    written = json.loads(report.read_text())
    assert written["replay"] == {"lines_in_file": 24, "lines_requested": 100, "lines_replayed": 24}
    assert written["health"]["lines_in"] == 24
    assert main([*argv, "--lines", "12"]) == 0
    assert json.loads(report.read_text())["health"]["lines_in"] == 12


def test_file_lines_streams_the_first_lines_and_checks_only_those(tmp_path: Path) -> None:
    """The valid-pixel check covers the lines to be streamed: a file alive only past them fails,
    saying so."""
    from edge_had.errors import SceneError

    cube = int16_cube(30, 8, 6).astype(np.float32)
    cube[:10] = np.nan
    path = tmp_path / "late.npy"
    np.save(path, cube)
    stream = file_lines(path, lines=20)
    got = np.stack([line.pixels for line in stream.lines])
    np.testing.assert_array_equal(got, cube[:20])
    assert stream.lines_in_file == 30
    with pytest.raises(SceneError, match="in its first 10 of 30 lines: no valid pixel"):
        file_lines(path, lines=10)


def test_eval_and_stream_score_an_envi_scene_against_the_map_beside_it(tmp_path: Path, capsys) -> None:
    """An ENVI scene stores no ground truth: eval skipped it ("no ground truth") and stream
    reported no AUC. With NAME_gt.hdr beside it both score it against that map: eval's AUC is the
    AUC of global RX of the cube (float64 oracle), stream's that of the scores it writes; the map
    is not evaluated as a scene of its own."""
    from spectral.io import envi

    from edge_had.cli import main
    from edge_had.detectors.rx import rx_reference
    from edge_had.eval.metrics import roc_auc
    from edge_had.io.synthetic import synthetic_scene

    scene = synthetic_scene(seed=4, lines=48, width=40, bands=24)
    cube, nodata = scene.cube.copy(), np.zeros(scene.gt.shape, bool)
    nodata[np.argwhere(scene.gt)[0][0], np.argwhere(scene.gt)[0][1]] = True  # an anomaly pixel, no data
    nodata[30, 7] = True
    nodata[40] = True  # a line of no data: rejected by the stream ("no valid pixel"), its row kept
    cube[nodata] = -9999.0
    folder = tmp_path / "scans"
    folder.mkdir()
    envi.save_image(str(folder / "scan.hdr"), cube, interleave="bil", ext=".img", force=True,
                    metadata={"data ignore value": -9999})  # fmt: skip
    argv = ["eval", "--data", str(folder), "--detector", "rx", "--quiet", "--json", str(tmp_path / "e.json")]
    assert main(argv) == 2  # no scene could be evaluated
    assert "no ground truth: cannot evaluate" in capsys.readouterr().err
    gt = scene.gt.astype(np.uint8)[:, :, None]
    envi.save_image(str(folder / "scan_gt.hdr"), gt, interleave="bsq", ext=".img", force=True)
    assert main(argv) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["skipped"] == [] and len(report["scenes"]) == 1
    entry = report["scenes"][0]
    assert (entry["file"], entry["ground_truth_file"]) == ("scan.hdr", "scan_gt.hdr")
    assert entry["auc"] == pytest.approx(
        roc_auc(rx_reference(cube, mask=~nodata), scene.gt, ~nodata), abs=1e-9
    )

    out = tmp_path / "stream"
    argv = ["stream", "--source", str(folder / "scan.hdr"), "--detector", "rx", "--out", str(out)]
    assert main([*argv, "--json", str(tmp_path / "s.json")]) == 0
    streamed = json.loads((tmp_path / "s.json").read_text())
    scores = np.load(out / "scores.npy")
    assert np.array_equal(np.isnan(scores), nodata)  # the pixels the stream masked
    assert streamed["health"]["reasons"] == {"no valid pixel": 1}
    # left out of the AUC as detect and eval leave them out (a lost line would count, scored 0)
    auc = roc_auc(np.nan_to_num(scores, nan=0.0), scene.gt, ~nodata)
    assert streamed["auc"] == pytest.approx(auc, abs=1e-12) and streamed["auc"] > 0.8
    assert auc != roc_auc(np.nan_to_num(scores, nan=0.0), scene.gt)  # counting them would change it
    assert streamed["ground_truth_file"] == "scan_gt.hdr"
    envi.save_image(str(folder / "scan_gt.hdr"), gt[:40], interleave="bsq", ext=".img", force=True)
    assert main(argv) == 2  # a map that does not fit: both files named
    assert "scan_gt.hdr: ground-truth shape (40, 40) does not match cube (48, 40) of scan.hdr" in (
        capsys.readouterr().err
    )


def test_a_maps_unlabelled_pixels_are_scored_but_left_out_of_every_auc(tmp_path: Path, capsys) -> None:
    """A map's 'data ignore value' pixels (not surveyed) were refused; counted, they would be
    anomalies (255 != 0). detect, eval and stream score them - RX's statistics are the whole
    scene's, float64 oracle - and leave them out of the AUC: the AUC of the labelled pixels alone."""
    from spectral.io import envi

    from edge_had.detectors.rx import rx_reference
    from edge_had.eval.metrics import roc_auc
    from edge_had.io.synthetic import synthetic_scene

    scene = synthetic_scene(seed=4, lines=48, width=40, bands=24)
    folder = tmp_path / "scans"
    folder.mkdir()
    envi.save_image(str(folder / "scan.hdr"), scene.cube, interleave="bil", ext=".img", force=True)
    unlabelled = np.zeros(scene.gt.shape, bool)
    unlabelled[:, :6] = True  # a strip not surveyed, with anomalies in it
    unlabelled[np.argwhere(scene.gt)[-1][0], np.argwhere(scene.gt)[-1][1]] = True
    assert (scene.gt & unlabelled).any() and (scene.gt & ~unlabelled).any()
    labels = np.where(unlabelled, 255, scene.gt).astype(np.uint8)[:, :, None]
    envi.save_image(str(folder / "scan_gt.hdr"), labels, interleave="bsq", ext=".img", force=True,
                    metadata={"data ignore value": 255})  # fmt: skip
    labelled, gt = ~unlabelled, scene.gt
    oracle = rx_reference(scene.cube)  # every pixel in the statistics
    expected = roc_auc(oracle[labelled], gt[labelled])
    assert expected != pytest.approx(roc_auc(oracle, gt), abs=1e-4)  # counting them would change it

    evaluated = ["eval", "--data", str(folder), "--detector", "rx", "--quiet", "--json", f"{tmp_path}/e.json"]
    assert main(evaluated) == 0
    entry = json.loads((tmp_path / "e.json").read_text())["scenes"][0]
    assert entry["auc"] == pytest.approx(expected, abs=1e-9)
    assert entry["unlabelled_pixels"] == int(unlabelled.sum())
    assert any("hold its 'data ignore value' 255: unlabelled" in note for note in entry["notes"])

    assert main(["detect", f"{folder}/scan.hdr", "--detector", "rx", "--npy", f"{tmp_path}/d.npy"]) == 0
    printed = capsys.readouterr()
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), oracle, rtol=1e-4)  # scored all the same
    assert f"AUC {expected:.4f}" in printed.out and "unlabelled, scored but left out" in printed.err

    out = tmp_path / "stream"
    argv = ["stream", "--source", str(folder / "scan.hdr"), "--detector", "rx", "--out", str(out)]
    assert main([*argv, "--json", str(tmp_path / "s.json")]) == 0
    streamed = json.loads((tmp_path / "s.json").read_text())
    summary = capsys.readouterr().out
    assert f"; {streamed['events']['unjudged']} on unlabelled pixels (unjudged)" in summary
    scores = np.load(out / "scores.npy")
    assert np.isfinite(scores).all()  # the unlabelled pixels are scored
    assert streamed["auc"] == pytest.approx(roc_auc(scores[labelled], gt[labelled]), abs=1e-12)
    # the events again from the scores written (8-connected pixels at or above the threshold,
    # scipy): true with a labelled anomaly pixel, false when all pixels are labelled, else unjudged
    from scipy import ndimage

    objects, count = ndimage.label(scores >= streamed["events"]["threshold"], structure=np.ones((3, 3)))
    kinds = {"true": 0, "false": 0, "unjudged": 0}
    for index in range(1, count + 1):
        pixels = objects == index
        kind = "true" if (gt & labelled)[pixels].any() else "false" if labelled[pixels].all() else "unjudged"
        kinds[kind] += 1
    assert count == streamed["events"]["count"] and kinds["unjudged"] > 0
    judged = streamed["events"]
    assert (judged["false"], judged["unjudged"]) == (kinds["false"], kinds["unjudged"])


def test_an_event_partly_on_unlabelled_pixels_is_unjudged_not_false() -> None:
    """An event reaching into pixels the map leaves unlabelled was false when its labelled pixels
    held no anomaly, though an unlabelled one may be its cause: unjudged now. True needs a
    labelled anomaly pixel; false, every pixel labelled."""
    from types import SimpleNamespace

    from edge_had.stream.command import _judge_against_ground_truth, _Source

    gt = np.zeros((4, 6), bool)
    gt[0, 0] = True
    labelled = np.ones((4, 6), bool)
    labelled[:, 5] = False
    source = _Source(lines=None, gt=gt, valid=np.ones((4, 6), bool), width=6, bands=3, wavelengths=None,
                     labelled=labelled)  # fmt: skip
    events = [
        SimpleNamespace(pixels=[(0, 0), (0, 1)]),  # on the anomaly: true
        SimpleNamespace(pixels=[(2, 2)]),  # labelled background only: false
        SimpleNamespace(pixels=[(2, 4), (2, 5)]),  # background and an unlabelled pixel: unjudged
        SimpleNamespace(pixels=[(3, 5)]),  # wholly unlabelled: unjudged
    ]
    scores = np.arange(24.0).reshape(4, 6)
    report: dict = {"events": {}, "notes": []}
    _judge_against_ground_truth(report, source, scores, [], events, "scan")
    assert (report["events"]["false"], report["events"]["unjudged"]) == (1, 2)
    assert report["events"]["false_per_1000_lines"] == 250.0


def test_a_map_that_leaves_a_class_unlabelled_is_said_so_by_eval_stream_and_train(tmp_path, capsys) -> None:
    """A map whose anomalies are all unlabelled, or whose ignore value is 0 (every background
    pixel unlabelled), gives no AUC and no background to train on: eval said "no anomaly pixel
    among the counted pixels", stream "among the lines streamed" (every line was), train "no
    background pixel to train on" naming no file - none said that the map left them out (a review)."""
    from spectral.io import envi

    from edge_had.io.synthetic import synthetic_scene

    scene = synthetic_scene(seed=2, lines=32, width=32, bands=20)
    folder = tmp_path / "scans"
    folder.mkdir()
    envi.save_image(str(folder / "scan.hdr"), scene.cube, interleave="bil", ext=".img", force=True)
    labels = np.where(scene.gt, 255, 0).astype(np.uint8)[:, :, None]  # every anomaly unlabelled
    envi.save_image(str(folder / "scan_gt.hdr"), labels, interleave="bsq", ext=".img", force=True,
                    metadata={"data ignore value": 255})  # fmt: skip
    report = tmp_path / "e.json"
    assert main(["eval", "--data", str(folder), "--detector", "rx", "--quiet", "--json", str(report)]) == 2
    said = capsys.readouterr().err
    unlabelled = f"its ground-truth map leaves {int(scene.gt.sum())} pixels unlabelled"
    assert f"cannot evaluate: no anomaly pixel among its valid labelled pixels ({unlabelled}; " in said
    assert main(["stream", "--source", str(folder / "scan.hdr"), "--detector", "rx"]) == 0
    said = capsys.readouterr().err
    assert "no AUC: no anomaly pixel among the labelled pixels of the lines streamed" in said

    labels = scene.gt.astype(np.uint8)[:, :, None]  # 0 taken for the ignore value: no background
    envi.save_image(str(folder / "scan_gt.hdr"), labels, interleave="bsq", ext=".img", force=True,
                    metadata={"data ignore value": 0})  # fmt: skip
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "model"), "--epochs", "1"]) == 2
    said = capsys.readouterr().err
    assert f"scene 'scan' ({folder / 'scan.hdr'}): no background pixel to train on (its ground-truth" in said
    assert "(0 is the background label: if it is meant here, remove the field)" in said


def test_a_score_map_that_does_not_fit_the_ground_truth_says_why_there_is_no_auc(tmp_path, capsys) -> None:
    """Corrupted counter values that two lines in a row confirmed put rows past the file's 40
    lines: the report had no AUC and nothing said why (a review)."""
    from edge_had.io.synthetic import synthetic_scene

    scene = synthetic_scene(seed=3, lines=40, width=24, bands=16)
    np.save(tmp_path / "m.npy", scene.cube)
    np.save(tmp_path / "m_gt.npy", scene.gt.astype(np.uint8))
    report = tmp_path / "r.json"
    faults = ["--counter-bits", "16", "--faults", "index", "--fault-rate", "0.3", "--fault-seed", "2"]
    argv = ["stream", "--source", f"{tmp_path}/m.npy", "--detector", "rx", *faults, "--json", f"{report}"]
    assert main(argv) == 0
    note = "no AUC: the score map has 56 rows, the ground truth 40: line indices ran past the file's lines"
    written = json.loads(report.read_text())
    assert "auc" not in written and note in written["notes"]
    assert f"warning: m: {note}" in capsys.readouterr().err


def test_a_streamed_files_auc_leaves_out_masked_pixels_not_lost_lines() -> None:
    from edge_had.stream.command import masked_pixels_left_out

    scores = np.arange(16.0).reshape(4, 4)
    scores[1] = np.nan  # a line lost or rejected for its index: counted (scored 0)
    scores[2, 1] = np.nan  # a pixel the stream masked: left out
    scores[3] = np.nan  # a line with no valid pixel (a masked row): left out
    want = np.ones((4, 4), bool)
    want[2, 1] = False
    want[3] = False
    np.testing.assert_array_equal(masked_pixels_left_out(scores, [3]), want)
