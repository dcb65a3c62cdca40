"""Which pixels are masked - a live camera's as a file's - and why: a camera loop on
build_pipeline given the header's wavelengths, good bands (bbl) and no-data value scores as
`edge-had stream --source FILE.hdr`; a saturation level (`--saturation`, build_pipeline's
``saturation``) masks saturated pixels in detect and stream, against float64 RX oracles on the
unsaturated pixels; the masked pixels are counted by reason (detect's summary, the stream
report's ``health.masked_pixels``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_had.cli import main
from edge_had.io import load_scene
from edge_had.io.synthetic import synthetic_scene
from edge_had.stream.onboard import build_pipeline
from tests.test_io_readers import write_envi
from tests.test_stream import direct_rx

#: 40 bands: 30 dense in the VNIR, 10 sparse beyond (band index and wavelength resample apart)
UNEVEN = np.concatenate([np.linspace(400.0, 1000.0, 30), np.linspace(1100.0, 2400.0, 10)]).round(2)
FULL_SCALE = 4095  # a 12-bit camera


def counts_cube(lines: int, width: int, bands: int, seed: int) -> np.ndarray:
    """A synthetic scene in 12-bit counts (uint16), none at 0 or at full scale."""
    cube = synthetic_scene(lines=lines, width=width, bands=bands, seed=seed).cube
    scaled = 200.0 + 3000.0 * (cube - cube.min()) / (cube.max() - cube.min())
    return np.rint(scaled).astype(np.uint16)


def stored_lines(data_file: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A BIL uint16 file's lines read with numpy alone: (lines, width, bands), as a camera gives them."""
    lines, width, bands = shape
    return np.fromfile(data_file, dtype="<u2").reshape(lines, bands, width).transpose(0, 2, 1)


def camera_scores(onboard_args: dict, lines: np.ndarray, detector: str) -> tuple[np.ndarray, dict, list]:
    """A camera loop on build_pipeline: the score map (rows x width, NaN unscored), the detector
    record and the results."""
    results: list = []
    _, width, bands = lines.shape
    with build_pipeline(width, bands, detector, on_result=results.append, **onboard_args) as onboard:
        for index, line in enumerate(lines):
            onboard.pipeline.push(line, index, index / 330.0)
    scores = np.full(lines.shape[:2], np.nan)
    for result in results:
        if result.state == "scored":
            scores[result.row] = result.scores
    return scores, onboard.detector, results


@pytest.mark.parametrize("detector", ["rx", "enhanced-rx"])
def test_a_camera_loop_given_the_headers_masks_scores_as_stream_of_the_file(
    tmp_path: Path, detector: str
) -> None:
    """Reviewer (FX10): build_pipeline resampled on band index and had no way to pass the bbl or
    the no-data value, so a live feed scored bad bands and dead (0) pixels that `stream --source
    FILE.hdr` masks. Given the header's wavelengths, good bands and no-data value, the lines
    read from the file with numpy score as the command scores the file, and the masked pixels
    are those an independent numpy rule names (0 in a good band; 0 in a bad band only: kept)."""
    shape = (48, 24, 40)
    cube = counts_cube(*shape, seed=7)
    cube[:, :2] = 0  # dead edge pixels
    cube[30, 10, 17] = 0  # one good band at the no-data value
    good = np.ones(40, bool)
    good[[0, 1, 38]] = False
    cube[12, 5, 0] = 0  # a bad band only: the pixel stays
    header = tmp_path / "fx.hdr"
    metadata = {"data ignore value": 0, "bbl": good.astype(int).tolist(), "wavelength": UNEVEN.tolist()}
    data = write_envi(header, cube, "bil", **metadata, **{"wavelength units": "nm"})
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["stream", "--source", str(header), "--detector", detector, "--reorder-window", "4"]
    assert main([*argv, "--out", str(out), "--json", str(report)]) == 0
    want = np.load(out / "scores.npy")

    lines = stored_lines(data, shape)
    given = {"wavelengths": UNEVEN, "good_bands": good, "no_data_value": 0}
    got, record, _ = camera_scores(given, lines, detector)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    masked = (lines[:, :, good] == 0).any(axis=2)
    np.testing.assert_array_equal(np.isnan(got), masked)
    assert masked.sum() == 48 * 2 + 1 and not masked[12, 5]
    assert record["resampling"] == "wavelength" and record["good_bands"] == 37
    written = json.loads(report.read_text())
    assert written["detector"]["resampling"] == "wavelength"
    assert written["health"]["masked_pixels"] == {"non_finite": 0, "no_data": 97, "saturated": 0}

    bare, bare_record, _ = camera_scores({}, lines, detector)  # what the README's snippet did
    assert bare_record["resampling"] == "band_index" and np.isfinite(bare[:, :2]).all()


def test_read_sensor_header_gives_build_pipeline_what_stream_reads_from_the_file(tmp_path: Path) -> None:
    """The README's camera loop took the header's fields with spectral as written: band centres in
    micrometres went in as nm, a header without `bbl` or `data ignore value` was a KeyError, one in
    Latin-1 not read. `read_sensor_header` (the header alone: a live camera has no data file) gives
    the width, the bands and build_pipeline's options as `stream --source FILE.hdr` reads them: a
    header in micrometres and Latin-1, its lines pushed, scores as the command scores the file."""
    from edge_had.errors import SceneError
    from edge_had.io.envi import read_sensor_header

    shape = (40, 20, 40)
    cube = counts_cube(*shape, seed=3)
    cube[:, 0] = 0  # a dead edge
    good = np.ones(40, bool)
    good[[0, 39]] = False
    header = tmp_path / "cam.hdr"
    metadata = {
        "data ignore value": 0,
        "bbl": good.astype(int).tolist(),
        "wavelength": (UNEVEN / 1000).tolist(),
    }
    data = write_envi(header, cube, "bil", **metadata, **{"wavelength units": "Micrometers"})
    text = header.read_text() + "description = {Kamera \u00fcber Feld 3}\n"
    header.write_bytes(text.encode("latin-1"))
    sensor = read_sensor_header(header)
    assert (sensor.samples, sensor.bands) == (20, 40) and "Latin-1" in sensor.notes[0]
    options = sensor.pipeline_options()
    np.testing.assert_allclose(options["wavelengths"], UNEVEN)
    np.testing.assert_array_equal(options["good_bands"], good)
    assert options["no_data_value"] == 0
    out = tmp_path / "out"
    assert main(["stream", "--source", str(header), "--detector", "rx", "--out", str(out)]) == 0
    got, record, _ = camera_scores(options, stored_lines(data, shape), "rx")
    np.testing.assert_allclose(got, np.load(out / "scores.npy"), rtol=1e-6)
    assert record["resampling"] == "wavelength" and np.isnan(got[:, 0]).all()

    header.write_text(text.replace("bbl = {", "bbl = {1, "), encoding="utf-8")
    with pytest.raises(SceneError, match="'bbl' has 41 values for 40 bands"):
        read_sensor_header(header)
    header.write_text("ENVI\nsamples = 20\nlines = 40\n", encoding="utf-8")
    with pytest.raises(SceneError, match="'bands' is '': expected a whole number >= 1"):
        read_sensor_header(header)
    header.write_text("ENVI\nsamples = -20\nbands = 40\n", encoding="utf-8")
    with pytest.raises(SceneError, match="'samples' is '-20'"):
        read_sensor_header(header)
    header.write_text("ENVI\nsamples = 20\nbands = 40\n", encoding="utf-8")
    bare = read_sensor_header(header).pipeline_options()
    assert bare == {"wavelengths": None, "good_bands": None, "no_data_value": None}


def test_the_readmes_camera_loop_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python camera loop, executed as printed, on a camera whose header is
    `scan.hdr` (40 bands in micrometres, a bad band, a no-data value) and whose 16-bit frame
    counter starts at 1: every line is scored, the bad band is left out, nothing is missing."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "read_sensor_header" in block
    ]
    cube = counts_cube(24, 32, 40, seed=5)
    good = np.ones(40, bool)
    good[39] = False
    metadata = {
        "data ignore value": 0,
        "bbl": good.astype(int).tolist(),
        "wavelength": (UNEVEN / 1000).tolist(),
    }
    data = write_envi(tmp_path / "scan.hdr", cube, "bil", **metadata, **{"wavelength units": "Micrometers"})
    lines = stored_lines(data, cube.shape)
    results: list = []
    camera = [(line, frame_id, frame_id * 1000) for frame_id, line in enumerate(lines, start=1)]
    monkeypatch.chdir(tmp_path)
    names = {"handle": results.append, "log": print, "camera": camera}
    exec(code, names)  # noqa: S102 - the README's own code
    onboard = names["onboard"]
    assert onboard.detector["good_bands"] == 39 and onboard.detector["resampling"] == "wavelength"
    assert onboard.pipeline.health.missing_indices == 0
    assert len(results) == 24 and all(result.state == "scored" for result in results)
    assert [result.row for result in results] == list(range(1, 25))  # its rows: the counter's values


@pytest.mark.parametrize("bad", [[0, 1, 38, 39], [0, 1, 20, 38]])
def test_the_good_bands_of_a_line_are_a_view_when_they_are_one_run(bad: list[int]) -> None:
    """Masking a line took its good bands twice, each a boolean-index copy (0.24 of 0.46 ms per
    1024 x 224 line, a review). One run of good bands (a bbl leaving out the noisy ends) is now
    a view of the line, other masks one copy, handed to the no-data check; both as indexing
    with the mask does."""
    from edge_had.io.scene import PixelRule

    line = counts_cube(1, 16, 40, seed=2)[0]
    line[3, 20] = line[5, 2] = 0  # no-data in a good band (or in band 20, bad in the second mask)
    good = np.ones(40, bool)
    good[bad] = False
    rule = PixelRule(good, no_data_value=0)
    samples = rule.good_samples(line)
    np.testing.assert_array_equal(samples, line[:, good])
    assert np.shares_memory(samples, line) == (bad == [0, 1, 38, 39])
    values = line[:, good].astype(np.float32)
    given = rule.problems(line, values, samples=samples)
    np.testing.assert_array_equal(given["no_data"], (line[:, good] == 0).any(axis=1))
    np.testing.assert_array_equal(rule.problems(line, values)["no_data"], given["no_data"])


def test_build_pipeline_refuses_masks_that_do_not_fit_the_sensor() -> None:
    with pytest.raises(ValueError, match="good_bands must be a mask of 12 booleans"):
        build_pipeline(16, 12, "rx", good_bands=np.arange(4, 12))  # band numbers, not a mask
    with pytest.raises(ValueError, match="11 wavelengths for 12 bands"):
        build_pipeline(16, 12, "rx", wavelengths=np.linspace(400, 1000, 11))
    with pytest.raises(ValueError, match="saturation must be a finite number"):
        build_pipeline(16, 12, "rx", saturation=float("nan"))


def causal_rx_oracle(pixels: np.ndarray, valid: np.ndarray | None = None, warmup: int = 10) -> np.ndarray:
    """Causal RX in float64 of ``pixels`` (lines, width, bands): line t against the mean and
    covariance of the valid pixels of lines 0..t (a warm-up line: of the first ``warmup`` lines),
    loading 1e-6; invalid pixels NaN."""
    valid = np.ones(pixels.shape[:2], bool) if valid is None else valid
    scores = np.full(pixels.shape[:2], np.nan)
    for t in range(len(pixels)):
        seen = slice(0, max(t, warmup - 1) + 1)
        scores[t][valid[t]] = direct_rx(pixels[seen][valid[seen]], pixels[t], 1e-6)[valid[t]]
    return scores


def bbl_scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 12-bit BIL ENVI file (30 x 16 x 40) on the uneven UNEVEN grid whose bbl leaves out bands
    0, 1 and 38; its header, stored cube and good bands."""
    cube = counts_cube(30, 16, 40, seed=5)
    good = np.ones(40, bool)
    good[[0, 1, 38]] = False
    header = tmp_path / "bbl.hdr"
    write_envi(header, cube, "bil", bbl=good.astype(int).tolist(), wavelength=UNEVEN.tolist(),
               **{"wavelength units": "nm"})  # fmt: skip
    return header, cube, good


def good_band_rx_oracle(cube: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Causal RX of the good bands resampled to 32 on their own centres (``UNEVEN[good]``), as
    ``detect`` resamples a file with a bbl."""
    from edge_had.band_resampling import wavelength_matrix

    centres = UNEVEN[good]
    matrix = wavelength_matrix(centres, 32, lo=float(centres.min()), hi=float(centres.max()))[0]
    return causal_rx_oracle(cube[:, :, good].astype(np.float64) @ np.asarray(matrix, np.float64).T)


def test_a_stream_of_a_file_with_a_bbl_resamples_its_good_bands_on_their_own_centres(tmp_path: Path) -> None:
    """The good bands' wavelengths are the bbl's good entries of the header's list: a review
    shifted them by one band (in build_pipeline) and every test still passed. The stream scores
    as causal RX of the good bands resampled on their own centres."""
    header, cube, good = bbl_scene(tmp_path)
    out = tmp_path / "out"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--reorder-window", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out / "scores.npy"), good_band_rx_oracle(cube, good), rtol=1e-5)


def test_plain_rx_after_a_failed_network_resamples_the_good_bands_on_their_own_centres(
    tmp_path: Path, untrained_bundle
) -> None:
    """An enhanced stream whose network fails goes on with plain RX on 32 bands, resampled on
    the pipeline's good-band centres (detection_wavelengths): as the stream of the file does."""
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import EnhancementError, StreamEnhancer
    from edge_had.stream.pipeline import StreamPipeline

    header, cube, good = bbl_scene(tmp_path)
    bundle = load_bundle(untrained_bundle(k=8, hidden=4, blocks=1))

    class Broken(TorchRunner):
        def infer_impl(self, feed, outputs):
            raise RuntimeError("device lost")

    enhancer = StreamEnhancer(bundle, Broken(bundle.model_for(int(good.sum()))).activate())
    with pytest.raises(EnhancementError):
        enhancer.warm_up(16, int(good.sum()))
    results: list = []
    pipeline = StreamPipeline(
        16, 40, enhancer=enhancer, wavelengths=UNEVEN, good_bands=good, on_result=results.append
    )
    for index, line in enumerate(cube):
        pipeline.push(line, index, index / 330.0)
    pipeline.finish()
    assert all("plain-rx" in r.flags for r in results) and pipeline.reduction.shape == (32, 37)
    got = np.stack([r.scores for r in sorted(results, key=lambda r: r.row)])
    np.testing.assert_allclose(got, good_band_rx_oracle(cube, good), rtol=1e-5)


def saturated_scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A 12-bit BIL ENVI file (40 x 24 x 12, band 11 bad) with glints: pixels at full scale in
    some good bands (one in the warm-up), and one at full scale in the bad band only (kept).
    Returns the header, the stored cube, the good bands and the saturated pixels."""
    cube = counts_cube(40, 24, 12, seed=11)
    good = np.ones(12, bool)
    good[11] = False
    glints = [(3, 4), (15, 7), (15, 8), (22, 20), (33, 1)]
    for row, col in glints:
        cube[row, col, 2:6] = FULL_SCALE
    cube[27, 12, 11] = FULL_SCALE  # the bad band only
    header = tmp_path / "glint.hdr"
    write_envi(header, cube, "bil", bbl=good.astype(int).tolist())
    saturated = np.zeros(cube.shape[:2], bool)
    saturated[tuple(np.array(glints).T)] = True
    return header, cube, good, saturated


def test_detect_masks_saturated_pixels_as_rx_on_the_unsaturated_pixels_only(tmp_path: Path, capsys) -> None:
    """Glints were the top scores and in the background statistics. With --saturation they are
    NaN and out of the statistics: the other pixels score as a float64 RX oracle computed on the
    unsaturated pixels only; the summary line counts them."""
    header, cube, good, saturated = saturated_scene(tmp_path)
    argv = ["detect", str(header), "--detector", "rx"]
    assert main([*argv, "--npy", str(tmp_path / "plain.npy")]) == 0
    plain = np.load(tmp_path / "plain.npy")
    assert set(np.argsort(plain, axis=None)[-5:]) == set(np.flatnonzero(saturated))  # before: the top 5
    capsys.readouterr()
    assert main([*argv, "--saturation", "4095", "--npy", str(tmp_path / "masked.npy")]) == 0
    summary = capsys.readouterr().out
    got = np.load(tmp_path / "masked.npy")

    pixels = cube[:, :, good].astype(np.float64)
    background = pixels[~saturated]
    mean = background.mean(axis=0)
    cov = (background - mean).T @ (background - mean) / background.shape[0]
    diff = pixels - mean
    want = np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)
    np.testing.assert_allclose(got[~saturated], want[~saturated], rtol=1e-6)
    assert np.isnan(got[saturated]).all()
    assert "5 masked px (saturated 5 in some good band" in summary
    assert load_scene(header, saturation=FULL_SCALE).masked == {"non_finite": 0, "no_data": 0, "saturated": 5}


def test_stream_masks_saturated_pixels_as_causal_rx_on_the_unsaturated_pixels_only(tmp_path: Path) -> None:
    """The stream scores each line against the float64 statistics of the unsaturated pixels of
    the lines so far (the warm-up lines: of the warm-up block), saturated pixels NaN; the lines
    holding them are flagged 'saturated', health.masked_pixels counts them, and events.jsonl
    reports none of them (before, every glint was an event)."""
    header, cube, good, saturated = saturated_scene(tmp_path)
    argv = ["stream", "--source", str(header), "--detector", "rx", "--reorder-window", "0"]
    out, report = tmp_path / "out", tmp_path / "report.json"
    assert main([*argv, "--saturation", "4095", "--out", str(out), "--json", str(report)]) == 0
    got = np.load(out / "scores.npy")

    want = causal_rx_oracle(cube[:, :, good].astype(np.float64), valid=~saturated)
    np.testing.assert_allclose(got[~saturated], want[~saturated], rtol=1e-6)
    assert np.isnan(got[saturated]).all() and np.isfinite(got[~saturated]).all()

    written = json.loads(report.read_text())
    assert written["health"]["masked_pixels"] == {"non_finite": 0, "no_data": 0, "saturated": 5}
    assert written["health"]["flags"]["saturated"] == 4  # lines 3, 15, 22, 33
    assert written["detector"]["saturation"] == 4095
    assert not any(covers(event, saturated) for event in events_of(out))

    plain = tmp_path / "plain"
    assert main([*argv, "--out", str(plain)]) == 0
    assert sum(covers(event, saturated) for event in events_of(plain)) >= 4  # each glint an event


def events_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def covers(event: dict, pixels: np.ndarray) -> bool:
    """Whether ``event``'s box holds any of ``pixels`` (a rows x cols mask)."""
    rows = slice(event["first_line"], event["last_line"] + 1)
    cols = slice(event["first_pixel"], event["last_pixel"] + 1)
    return bool(pixels[rows, cols].any())


def test_the_camera_loop_flags_the_lines_holding_saturated_pixels(tmp_path: Path) -> None:
    _, cube, good, saturated = saturated_scene(tmp_path)
    scores, record, results = camera_scores({"good_bands": good, "saturation": FULL_SCALE}, cube, "rx")
    flagged = sorted(result.row for result in results if "saturated" in result.flags)
    assert flagged == sorted(set(np.flatnonzero(saturated.any(axis=1)))) == [3, 15, 22, 33]
    np.testing.assert_array_equal(np.isnan(scores), saturated)
    assert record["saturation"] == FULL_SCALE


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an Inf pixel made numpy warn in detect
def test_masked_pixels_are_counted_by_reason_in_detect_and_stream(tmp_path: Path, capsys) -> None:
    """Reviewer: one band at the 'data ignore value' over 20 lines x 60 px lost 1200 pixels and
    nothing said why. Each masked pixel is now counted under its first reason (NaN/Inf, no-data,
    saturated) in detect's summary and the stream report; the counts are made here with numpy."""
    rng = np.random.default_rng(5)
    cube = (1000.0 + 30.0 * rng.standard_normal((40, 30, 12))).astype(np.float32)
    cube[5:15, 10:20, 7] = 0.0  # one band at the no-data value: 100 pixels
    cube[20, 3, 2] = np.nan
    cube[21, 4, 5] = np.inf
    cube[25, 6:9, 1] = 4095.0  # saturated: 3 pixels
    cube[26, 9, [0, 4]] = [np.nan, 4095.0]  # NaN and saturated: counted NaN/Inf
    cube[7, 12, 3] = 4095.0  # no-data and saturated: counted no-data
    header = tmp_path / "lost.hdr"
    write_envi(header, cube, "bil", **{"data ignore value": 0})
    non_finite = ~np.isfinite(cube).all(axis=2)
    no_data = (cube == 0).any(axis=2) & ~non_finite
    saturated = (cube >= 4095).any(axis=2) & ~non_finite & ~no_data
    want = {
        "non_finite": int(non_finite.sum()),
        "no_data": int(no_data.sum()),
        "saturated": int(saturated.sum()),
    }
    assert want == {"non_finite": 3, "no_data": 100, "saturated": 3}

    assert main(["detect", str(header), "--detector", "rx", "--saturation", "4095"]) == 0
    summary = capsys.readouterr().out
    assert "106 masked px (NaN/Inf 3, no-data value 100, saturated 3 in some good band" in summary
    assert "one band masks the pixel" in summary
    report = tmp_path / "report.json"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--saturation", "4095"]
    assert main([*argv, "--json", str(report)]) == 0
    assert json.loads(report.read_text())["health"]["masked_pixels"] == want
    assert "106 masked px" in capsys.readouterr().out


def test_the_stream_report_says_how_the_file_was_masked(tmp_path: Path, capsys) -> None:
    """The report's detector record counted the good bands but not which were left out: now
    ``bad_bands`` lists the 0-based bands the header's bbl leaves out, beside the no-data value
    (the header's ``data ignore value``) and the saturation level (``--saturation``), None when
    there is none; the summary prints them."""
    cube = counts_cube(24, 12, 10, seed=5)
    bbl = [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]  # as a FX10 header marks its noisy ends
    masked = tmp_path / "masked.hdr"
    write_envi(masked, cube, "bil", bbl=bbl, **{"data ignore value": 0})
    report = tmp_path / "report.json"
    argv = ["stream", "--detector", "rx", "--json", str(report)]
    assert main([*argv, "--source", str(masked), "--saturation", "4095"]) == 0
    record = json.loads(report.read_text())["detector"]
    assert (record["sensor_bands"], record["good_bands"], record["bad_bands"]) == (10, 7, [0, 8, 9])
    assert (record["no_data_value"], record["saturation"]) == (0, 4095)
    out = capsys.readouterr().out
    assert "masking: 7 of 10 bands scored (left out: 0, 8, 9); no-data value 0, saturation 4095" in out

    plain = tmp_path / "plain.hdr"
    write_envi(plain, cube, "bil")
    assert main([*argv, "--source", str(plain)]) == 0
    record = json.loads(report.read_text())["detector"]
    assert (record["good_bands"], record["bad_bands"]) == (10, [])
    assert record["no_data_value"] is None and record["saturation"] is None
    assert "masking: 10 of 10 bands scored (left out: none); no-data value none, saturation none" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_a_stream_of_a_mat_or_h5_file_reports_the_masking_detect_uses(
    tmp_path: Path, suffix: str, capsys
) -> None:
    """MATLAB and HDF5 files carry no bad-band list and no no-data value: the stream report says
    every band scored (``bad_bands`` [], ``no_data_value`` null), as detect scores that file
    (load_scene's good bands), and counts its masked pixels as detect does. A band NaN on every
    pixel is not dropped: both refuse the file, naming the band."""
    import h5py
    from scipy.io import savemat

    def write(cube: np.ndarray) -> Path:
        path = tmp_path / f"scene{suffix}"
        if suffix == ".mat":
            savemat(path, {"data": cube})
        else:
            with h5py.File(path, "w") as store:
                store.create_dataset("cube", data=cube)
        return path

    cube = counts_cube(24, 12, 10, seed=7).astype(np.float32)
    cube[3, 4, 2] = np.nan
    cube[9, 1:4, 6] = FULL_SCALE  # 3 saturated pixels
    path = write(cube)
    scene = load_scene(path, saturation=FULL_SCALE)
    report = tmp_path / "report.json"
    argv = ["stream", "--source", str(path), "--detector", "rx", "--saturation", str(FULL_SCALE)]
    assert main([*argv, "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    record = written["detector"]
    assert (
        (record["sensor_bands"], record["good_bands"], record["bad_bands"])
        == (
            10,
            int(scene.good_bands.sum()),
            [int(b) for b in np.flatnonzero(~scene.good_bands)],
        )
        == (10, 10, [])
    )
    assert record["no_data_value"] is None and record["saturation"] == FULL_SCALE
    assert (
        written["health"]["masked_pixels"] == scene.masked == {"non_finite": 1, "no_data": 0, "saturated": 3}
    )
    out = capsys.readouterr().out
    assert "masking: 10 of 10 bands scored (left out: none); no-data value none, saturation 4095" in out

    cube[:, :, 5] = np.nan
    write(cube)
    for command in (["detect", str(path), "--detector", "rx"], argv):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert "on every pixel (0-based: 5)" in error and "leave them out of its cube" in error


def test_the_masking_record_follows_a_new_band_count() -> None:
    """The bbl is a mask of the sensor's 12 bands; when the sensor switches to 11 bands the mask no
    longer applies (every band good) and the record said 10 good bands, 2 left out, still."""
    good = np.ones(12, bool)
    good[[0, 11]] = False
    rng = np.random.default_rng(2)
    with build_pipeline(16, 12, "rx", good_bands=good, no_data_value=0) as onboard:
        assert (onboard.detector_record()["good_bands"], onboard.detector_record()["bad_bands"]) == (
            10,
            [0, 11],
        )
        for index in range(40):
            bands = 12 if index < 10 else 11
            onboard.pipeline.push(
                rng.normal(100.0, 5.0, (16, bands)).astype(np.float32), index, index / 330.0
            )
    record = onboard.detector_record()
    assert record["band_changes"] and record["sensor_bands"] == 11
    assert (record["good_bands"], record["bad_bands"], record["no_data_value"]) == (11, [], 0)


def test_unsigned_values_read_as_signed_are_noted_and_flagged(tmp_path, capsys) -> None:
    """A 16-bit camera's uint16 file whose header says data type 2 (int16) read without a word: its
    values past 32767 wrapped to -32768 and up, each pixel an extreme anomaly. detect notes the
    samples no signed measurement reaches (counted here with numpy on the bytes as written); the
    stream flags each line holding one (``int16-extremes``); a declared no-data value of -32768,
    and the small negatives of dark-subtracted data, are no such samples."""
    cube = counts_cube(30, 16, 12, seed=3).astype(np.uint16) * 10  # up to ~32000: bright
    cube[4, 5, 2:6] = 40_000  # a glint past 32767
    cube[17, 0:3, 7] = 50_000
    cube[22, 9, 3] = 61_000  # -4536 as int16: too close to real negatives to be told
    signed = cube.view(np.int16)
    assert int((signed < -8192).sum()) == 7 and int(signed.min()) == 40_000 - 65_536
    header = tmp_path / "camera.hdr"
    write_envi(header, signed, "bil")  # the header says int16: data type 2
    assert "data type = 2" in header.read_text()
    assert main(["detect", str(header), "--detector", "rx"]) == 0
    said = capsys.readouterr().err
    assert "7 int16 samples below -8192 (down to -25536) in good bands: unsigned 16-bit values" in said
    report = tmp_path / "report.json"
    assert main(["stream", "--source", str(header), "--detector", "rx", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["health"]["flags"]["int16-extremes"] == 2  # lines 4 and 17

    from spectral.io import envi

    envi.save_image(str(header), signed, interleave="bil", ext=".img", force=True, byteorder=1)
    assert "byte order = 1" in header.read_text()  # big-endian int16 (a review: '>i2' went unchecked)
    assert main(["detect", str(header), "--detector", "rx"]) == 0
    assert "7 int16 samples below -8192 (down to -25536)" in capsys.readouterr().err
    np.save(tmp_path / "camera.npy", signed)  # no header: the advice names the array's dtype
    assert main(["detect", str(tmp_path / "camera.npy"), "--detector", "rx"]) == 0
    assert "(the array stored as int16 where the camera writes uint16)" in capsys.readouterr().err

    flagged = []
    with build_pipeline(16, 12, "rx", on_result=lambda result: flagged.append(result.flags)) as onboard:
        for index, line in enumerate(signed):
            onboard.pipeline.push(line, index, index / 330.0)
    assert [k for k, flags in enumerate(flagged) if "int16-extremes" in flags] == [4, 17]

    quiet = np.where(signed < -8192, np.int16(-32768), signed)  # a declared fill value instead
    quiet[9, 2, 4] = -50  # a dark-subtracted sample
    write_envi(header, quiet, "bil", **{"data ignore value": -32768})
    assert main(["detect", str(header), "--detector", "rx"]) == 0
    assert "int16 samples below" not in capsys.readouterr().err
