"""Streaming: causal statistics against direct float64 computations, line accounting, sources,
and streaming RX on the real scenes against offline RX on the same band-reduced cube."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_had.detectors.rx import rx_reference
from edge_had.errors import SceneError
from edge_had.eval.metrics import roc_auc
from edge_had.io import list_scenes, load_scene
from edge_had.stream.causal import CausalRX, CausalSettings
from edge_had.stream.events import chi2_threshold, stream_threshold
from edge_had.stream.pipeline import StreamPipeline
from edge_had.stream.presets import SENSORS, sensor
from edge_had.stream.run import band_reduction, run_stream, stream_scene_scores
from edge_had.stream.sources import envi_lines, file_lines, scene_lines, synthetic_lines
from tests.test_io_readers import write_envi


def direct_rx(history: np.ndarray, line: np.ndarray, regularization: float) -> np.ndarray:
    """RX of ``line`` against the float64 mean/covariance (divide by N) of ``history`` pixels."""
    mean = history.mean(axis=0)
    centred = history - mean
    cov = centred.T @ centred / history.shape[0]
    cov += regularization * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    diff = line - mean
    return np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff)


@pytest.fixture(scope="module")
def lines() -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((6, 6))
    return 100.0 + rng.standard_normal((40, 25, 6)) @ mixing  # offset: tests the shifted sums


@pytest.mark.parametrize(
    ("settings", "history"),
    [
        (CausalSettings(warmup_lines=5), lambda t: slice(0, t + 1)),
        (
            CausalSettings(statistics="sliding", window=7, warmup_lines=5),
            lambda t: slice(max(0, t - 6), t + 1),
        ),
        (CausalSettings(include_current=False, warmup_lines=5), lambda t: slice(0, t)),
    ],
    ids=["cumulative", "sliding", "exclude-current"],
)
def test_causal_rx_matches_direct_statistics_of_the_lines_it_may_see(lines, settings, history) -> None:
    rx = CausalRX(6, settings)
    scored = {}
    for line in lines:
        for position, scores, late in rx.push(line):
            scored[position] = (scores, late)
    assert sorted(scored) == list(range(len(lines)))  # every line once
    assert [scored[t][1] for t in range(len(lines))] == [True] * 5 + [False] * 35
    for t in range(5, len(lines)):
        want = direct_rx(lines[history(t)].reshape(-1, 6), lines[t], settings.regularization)
        np.testing.assert_allclose(scored[t][0], want, rtol=1e-7)
    # warm-up lines are scored with the statistics of the warm-up block
    np.testing.assert_allclose(scored[0][0], direct_rx(lines[:5].reshape(-1, 6), lines[0], 1e-6), rtol=1e-7)


def test_refresh_interval_holds_the_factor_between_refreshes(lines) -> None:
    rx = CausalRX(6, CausalSettings(warmup_lines=5, refresh_every=4))
    out = {}
    for line in lines:
        out.update({p: s for p, s, _ in rx.push(line)})
    # the warm-up ends at line 4 (factor of lines 0-4); refreshes follow at lines 8, 12, ...
    np.testing.assert_allclose(out[7], direct_rx(lines[:5].reshape(-1, 6), lines[7], 1e-6), rtol=1e-7)
    np.testing.assert_allclose(out[8], direct_rx(lines[:9].reshape(-1, 6), lines[8], 1e-6), rtol=1e-7)
    np.testing.assert_allclose(out[11], direct_rx(lines[:9].reshape(-1, 6), lines[11], 1e-6), rtol=1e-7)
    assert rx.refreshes == 1 + (40 - 5) // 4


def test_exponential_statistics_forget_an_old_background() -> None:
    rng = np.random.default_rng(1)
    before = rng.standard_normal((30, 20, 3))
    after = rng.standard_normal((60, 20, 3)) + 5.0
    stream = np.concatenate([before, after])
    results = {}
    for kind in ("cumulative", "exponential"):
        rx = CausalRX(3, CausalSettings(statistics=kind, momentum=0.1, warmup_lines=5))
        for line in stream:
            rx.push(line)
        results[kind] = rx.statistics.mean_and_covariance()[0]
    assert np.all(np.abs(results["exponential"] - 5.0) < 0.1)  # forgot the old ground
    assert np.all(np.abs(results["cumulative"] - 5.0 * 60 / 90) < 0.2)  # remembers it


def test_exponential_statistics_match_the_weighted_direct_statistics(lines) -> None:
    """S <- (1 - m) S + m S_line for n, the sums and the products alike: line j of lines 0..t
    weighs m (1 - m)^(t - j) (the first line, which starts the sums, (1 - m)^t); each line scored
    against np.average / np.cov(aweights=..., bias=True) of the pixels so far, so weighted."""
    momentum, warmup = 0.2, 5
    rx = CausalRX(6, CausalSettings(statistics="exponential", momentum=momentum, warmup_lines=warmup))
    scored = {}
    for line in lines:
        scored.update((position, scores) for position, scores, _ in rx.push(line))

    def weighted_rx(t: int, line: np.ndarray) -> np.ndarray:
        weights = momentum * (1 - momentum) ** (t - np.arange(t + 1.0))
        weights[0] = (1 - momentum) ** t
        pixels = lines[: t + 1].reshape(-1, 6)
        per_pixel = np.repeat(weights, lines.shape[1])
        mean = np.average(pixels, axis=0, weights=per_pixel)
        cov = np.cov(pixels, rowvar=False, aweights=per_pixel, bias=True)
        cov += 1e-6 * np.trace(cov) / 6 * np.eye(6)
        diff = line - mean
        return np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff)

    for t in range(warmup, len(lines)):
        np.testing.assert_allclose(scored[t], weighted_rx(t, lines[t]), rtol=1e-7)
    np.testing.assert_allclose(scored[0], weighted_rx(warmup - 1, lines[0]), rtol=1e-7)


def test_a_singular_background_without_loading_is_scored_with_the_pseudo_inverse() -> None:
    """regularization 0 and a background of rank 2 in 4 bands (band 2 = band 0 + band 1, band 3
    zero): the Cholesky factor fails, and each line is scored with the pseudo-inverse of the
    statistics of the lines before it (np.linalg.pinv) - a pixel off the background's plane is not
    blown up by the rounding-level eigenvalue of the dependent band."""
    rng = np.random.default_rng(8)
    base = 10.0 + rng.standard_normal((12, 30, 2))
    stream = np.concatenate([base, base.sum(axis=2, keepdims=True), np.zeros((12, 30, 1))], axis=2)
    off_plane = stream[-1].copy()
    off_plane[:5, 2] += 3.0  # band 2 no longer the sum: a direction the background never took
    stream[-1] = off_plane
    rx = CausalRX(4, CausalSettings(regularization=0.0, warmup_lines=5, include_current=False))
    scored = {}
    for line in stream:
        scored.update((position, scores) for position, scores, _ in rx.push(line))
    for t in (5, 8, 11):
        history = stream[:t].reshape(-1, 4)
        mean = history.mean(axis=0)
        cov = np.cov(history, rowvar=False, bias=True)
        diff = stream[t] - mean
        want = np.einsum("ij,jk,ik->i", diff, np.linalg.pinv(cov, hermitian=True), diff)
        np.testing.assert_allclose(scored[t], want, rtol=1e-6, atol=1e-9)


def test_settings_are_validated() -> None:
    for bad in ({"statistics": "median"}, {"momentum": 0.0}, {"window": 0}, {"regularization": -1.0}):
        with pytest.raises(ValueError):
            CausalSettings(**bad)


# --------------------------------------------------------------------------- accounting


def test_every_line_ends_in_exactly_one_state(lines) -> None:
    finals = []
    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3), on_result=finals.append)
    states = [pipeline.push(lines[i], i, float(i)).state for i in range(3)]  # as returned
    assert states == ["pending", "pending", "scored"]  # the warm-up ends with the 3rd line
    pipeline.push(lines[3], 3, 3.0)
    assert pipeline.push(lines[4][:20], 4, 4.0).reason == "line shape (20, 6), expected (25, 6)"
    assert pipeline.push(lines[5][:, :5], 5, 5.0).state == "rejected"
    # a line as a BIL file stores it, bands first: the hint to transpose it (after a first line,
    # which waits for the next to confirm its index)
    bil = StreamPipeline(25, 6)
    assert bil.push(lines[4], 0, 0.0).state == "pending"
    assert bil.push(lines[5].T, 1, 1.0).reason == (
        "line shape (6, 25), expected (25, 6) (bands first, as a BIL file stores a line: pass it transposed"
        " - unless the pipeline was built with width and bands the other way round: it takes 25 pixels of"
        " 6 bands)"
    )
    assert pipeline.push(lines[6], 5, 6.0).reason == "duplicate index"
    assert pipeline.push(lines[6], 2, 6.0).reason == "duplicate index"  # processed lately
    # a width or band count read as text or float from a header, or 0: named at once (a review: numpy's
    # or torch's message later, or every line rejected)
    for width, bands, name in ((25, "6", "bands"), (25.0, 6, "width"), (0, 6, "width"), (True, 6, "width")):
        with pytest.raises(ValueError, match=f"^{name} must be a whole number >= 1, got"):
            StreamPipeline(width, bands)
    with pytest.raises(ValueError, match="^reorder_window must be a whole number >= 0, got 2.0"):
        StreamPipeline(25, 6, reorder_window=2.0)
    assert StreamPipeline(np.int64(25), np.uint16(6)).width == 25
    nan_line = lines[6].copy()
    nan_line[[2, 7], 1] = np.nan
    masked = pipeline.push(nan_line, 9, 9.0)  # indices 6-8 missing: a leap, held for the next line
    assert masked.state == "pending"
    assert pipeline.push(np.full((25, 6), np.inf), 10, 10.0).reason == "no valid pixel"
    assert masked.state == "scored" and masked.flags == ["masked-pixels"]  # 10 confirmed the leap
    assert np.isnan(masked.scores[[2, 7]]).all() and np.isfinite(np.delete(masked.scores, [2, 7])).all()
    assert pipeline.drop(11, 11.0).state == "dropped"
    pipeline.finish()
    health = pipeline.health
    counts = (health.lines_in, health.lines_scored, health.lines_rejected, health.lines_dropped)
    assert counts == (11, 5, 5, 1)
    assert health.missing_indices == 3 and health.duplicates == 2
    assert health.to_dict()["accounting_ok"]
    assert len(finals) == 11 and all(r.state in ("scored", "rejected", "dropped") for r in finals)
    assert sorted(r.index for r in finals if "late" in r.flags) == [0, 1, 2]


def test_a_stream_shorter_than_the_warmup_is_still_accounted(lines) -> None:
    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=10))
    for i in range(4):
        pipeline.push(lines[i], i, float(i))
    pipeline.finish()
    assert pipeline.health.lines_scored == 4 and pipeline.health.to_dict()["accounting_ok"]


def test_profiler_total_is_measured_independently_of_the_stages(lines) -> None:
    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3))
    for i, line in enumerate(lines):
        pipeline.push(line, i, float(i))
    summary = pipeline.profiler.summary()
    assert summary["total"]["count"] == 40 - 3  # warm-up lines are scored late, not timed
    assert summary["preprocess"]["count"] == summary["statistics+rx"]["count"] == 40
    for stage in summary.values():
        assert stage["p50"] <= stage["p99"] <= stage["max"]


def test_overloaded_paced_loop_drops_late_lines_and_counts_them(lines) -> None:
    from edge_had.stream.sources import Line

    current = {"index": 0}

    def source():
        for i in range(20):
            current["index"] = i
            yield Line(i, float(i), lines[i])

    def clock() -> float:  # from line 10 on the loop is 1.5 line periods behind the sensor
        return current["index"] + (1.5 if current["index"] >= 10 else 0.0)

    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3))
    run = run_stream(source(), pipeline, max_lag_s=1.0, clock=clock)
    assert pipeline.health.lines_dropped == 10 and pipeline.health.reasons["overload"] == 10
    assert sorted(run.scores) == list(range(10))


# --------------------------------------------------------------------------- sources


def test_scene_replay_is_paced_on_the_sensor_clock() -> None:
    cube = np.zeros((5, 4, 3), dtype=np.float32)
    ticks, slept = iter([100.0, 100.0, 100.05, 100.2, 100.2, 100.3]), []
    out = list(scene_lines(cube, line_rate=10.0, pace=True, clock=lambda: next(ticks), sleep=slept.append))
    assert [line.timestamp for line in out] == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])
    assert slept == pytest.approx([0.05, 0.1, 0.1])  # line 0 due at once; lines 2, 3 were late or on time
    assert [line.index for line in out] == list(range(5)) and out[0].pixels.shape == (4, 3)


def test_synthetic_sensor_streams_strips_of_the_requested_shape() -> None:
    out = list(synthetic_lines(width=16, bands=12, lines=70, strip_lines=32))
    assert len(out) == 70 and [line.index for line in out] == list(range(70))
    assert out[0].pixels.shape == (16, 12) and out[0].pixels.dtype == np.float32
    assert not np.array_equal(out[0].pixels, out[32].pixels)  # a new strip


def test_pre_rendered_synthetic_strips_are_drawn_before_the_paced_clock_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rendering a strip takes a second of (fake) time here. Pre-rendered strips cost it before
    # the stream starts, so every paced line is produced on time and the strips then repeat.
    import edge_had.io.synthetic as synthetic

    now = [0.0]
    real_scene = synthetic.synthetic_scene

    def slow_scene(**kwargs: Any) -> Any:
        now[0] += 1.0
        return real_scene(**kwargs)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(synthetic, "synthetic_scene", slow_scene)
    source = synthetic_lines(
        8,
        6,
        lines=50,
        strip_lines=10,
        line_rate=100.0,
        pace=True,
        clock=lambda: now[0],
        sleep=sleep,
        distinct_strips=2,
    )
    assert now[0] == 2.0  # both strips rendered when the source is made
    late = []
    for line in source:
        late.append(now[0] - line.timestamp)
        if line.index == 0:
            first = line.pixels
        if line.index == 20:
            np.testing.assert_array_equal(line.pixels, first)  # strip 2 is strip 0 again
    assert len(late) == 50 and max(late) <= 1e-9 and now[0] == 2.0 + 49 / 100.0
    with pytest.raises(ValueError, match="distinct_strips"):
        synthetic_lines(8, 6, lines=5, distinct_strips=0)


@pytest.mark.parametrize("written", ["bil", "Bip"])  # spectral read 'Bip' as BSQ: scrambled lines
def test_envi_file_is_read_line_by_line(tmp_path: Path, written: str) -> None:
    envi = pytest.importorskip("spectral.io.envi")
    cube = np.random.default_rng(2).random((9, 7, 5)).astype(np.float32)
    envi.save_image(str(tmp_path / "s.hdr"), cube, interleave=written.lower(), force=True)
    header = tmp_path / "s.hdr"
    header.write_text(
        header.read_text().replace(f"interleave = {written.lower()}", f"interleave = {written}")
    )
    out = list(envi_lines(header))
    np.testing.assert_array_equal(np.stack([line.pixels for line in out]), cube)


def test_envi_lines_come_as_stored_with_the_rule_that_masks_them_as_load_scene(tmp_path: Path) -> None:
    """An ENVI file streams as a camera sends: each line as stored (its dtype, every band), with
    the header's good bands and no-data value for the pipeline, whose rule (PixelRule) masks what
    load_scene masks: a pixel with the 'data ignore value' in a good band (an integer file
    compared as stored: 2**24 is not 2**24 + 1, though float32 makes them equal), not one with it
    only in a bad band; NaN in a good band, not Inf in a bad one."""
    no_data = 2**24 + 1
    rng = np.random.default_rng(3)
    cube = rng.integers(900, 1100, (6, 5, 7)).astype(np.int32)
    cube[1, 2, 3] = no_data  # a good band: the pixel is invalid
    cube[2, 0, 0] = no_data  # a bad band only: the pixel stays
    cube[3, 4, 2] = 2**24  # not no-data
    cube[4, :, 5] = no_data  # a whole line's pixels
    good = np.array([0, 1, 1, 1, 1, 1, 0], bool)
    header = tmp_path / "int.hdr"
    write_envi(header, cube, "bil", **{"data ignore value": no_data, "bbl": good.astype(int).tolist()})
    stream = file_lines(header)
    got = np.stack([line.pixels for line in stream.lines])
    assert got.dtype == np.int32 and stream.bands == 7 and stream.no_data_value == no_data
    np.testing.assert_array_equal(got, cube)
    np.testing.assert_array_equal(stream.good_bands, good)
    want = np.ones((6, 5), bool)
    want[1, 2] = False
    want[4] = False
    np.testing.assert_array_equal(masked_by_the_pipelines_rule(stream, got), ~want)
    assert load_scene(header).valid.tolist() == want.tolist()

    floats = rng.normal(0.0, 1.0, (4, 3, 5)).astype(np.float32)
    floats[0, 1, 2], floats[2, 2, 4], floats[3, 0, 1] = np.nan, np.inf, -9999.0
    header = tmp_path / "float.hdr"
    write_envi(header, floats, "bsq", **{"data ignore value": -9999, "bbl": [1, 1, 1, 1, 0]})
    stream = file_lines(header)
    got = np.stack([line.pixels for line in stream.lines])
    np.testing.assert_array_equal(got, floats)
    want = np.ones((4, 3), bool)
    want[0, 1] = want[3, 0] = False  # NaN and no-data in good bands; Inf in the bad band: kept
    np.testing.assert_array_equal(masked_by_the_pipelines_rule(stream, got), ~want)
    assert load_scene(header).valid.tolist() == want.tolist()

    header = tmp_path / "one.hdr"
    write_envi(header, floats, "bip", bbl=[0, 0, 1, 0, 0])
    with pytest.raises(SceneError, match="only 1 good band"):  # before any line, as load_scene says it
        envi_lines(header)


def masked_by_the_pipelines_rule(stream: Any, lines: np.ndarray) -> np.ndarray:
    """Which pixels of ``lines`` a pipeline given the file's good bands and no-data value masks."""
    pipeline = StreamPipeline(
        stream.width,
        stream.bands,
        settings=CausalSettings(warmup_lines=1),
        good_bands=stream.good_bands,
        no_data_value=stream.no_data_value,
    )
    results: list[Any] = []
    pipeline.on_result = results.append  # (the first line is scored once the second confirms its index)
    for index, line in enumerate(lines):
        pipeline.push(line, index, float(index))
    pipeline.finish()
    by_index = {result.index: result for result in results}
    return np.array(
        [
            np.ones(stream.width, bool) if by_index[i].scores is None else np.isnan(by_index[i].scores)
            for i in range(len(lines))
        ]
    )


def test_sensor_presets() -> None:
    assert sensor("fx10").budget_s == pytest.approx(1 / 330)
    assert set(SENSORS) == {"fx10", "fx17", "nano-hyperspec", "mjolnir-v1240", "pika-l", "enmap"}
    with pytest.raises(ValueError, match="unknown sensor"):
        sensor("fx99")


# --------------------------------------------------------------------------- real scenes


@pytest.mark.data
def test_streaming_rx_on_real_scenes_stays_close_to_offline_rx_on_the_same_bands(data_dir: Path) -> None:
    streamed, offline = [], []
    for path in list_scenes(data_dir):
        scene = load_scene(path)
        cube = scene.detection_cube()
        scores, run = stream_scene_scores(cube, scene.valid)
        assert run.pipeline.health.to_dict()["accounting_ok"]
        assert run.pipeline.health.lines_scored == cube.shape[0]
        streamed.append(roc_auc(np.nan_to_num(scores, nan=0.0), scene.gt, scene.valid))
        reduced = cube.astype(np.float64) @ band_reduction(cube.shape[2]).T
        offline.append(roc_auc(rx_reference(reduced, mask=scene.valid), scene.gt, scene.valid))
    # measured: streaming 0.9697, offline on the same 32 bands 0.9711 (tuned on these scenes)
    assert np.mean(streamed) >= 0.965
    assert abs(np.mean(streamed) - np.mean(offline)) <= 0.01


# --------------------------------------------------------------------------- events


def test_events_are_the_8_connected_components_of_the_thresholded_lines() -> None:
    from scipy import ndimage

    from edge_had.stream.events import EventDetector

    rng = np.random.default_rng(3)
    scores = rng.random((60, 40)) ** 8 * 10  # sparse hot pixels, some touching
    detector = EventDetector(threshold=2.0)
    events = []
    for index, line in enumerate(scores):
        events += detector.add(index, line, float(index))
    events += detector.finish()
    labels, count = ndimage.label(scores > 2.0, structure=np.ones((3, 3)))
    want = []
    for box, label in zip(ndimage.find_objects(labels), range(1, count + 1), strict=True):
        want.append(
            (box[0].start, box[0].stop - 1, box[1].start, box[1].stop - 1, int((labels == label).sum()))
        )
    got = [(e.first_line, e.last_line, e.first_pixel, e.last_pixel, e.area) for e in events]
    assert count > 20 and sorted(got) == sorted(want)
    peaks = {(e.first_line, e.first_pixel): e.peak_score for e in events}
    for box, label in zip(ndimage.find_objects(labels), range(1, count + 1), strict=True):
        assert peaks[(box[0].start, box[1].start)] == pytest.approx(scores[labels == label].max())


def test_a_score_at_the_threshold_is_not_above_it() -> None:
    """Events join the pixels *above* the threshold (module docstring): hand case at threshold 2,
    a pixel at exactly 2.0 and a NaN are cold, so 2.5 and 3.0 are two events of one pixel."""
    from edge_had.stream.events import EventDetector

    detector = EventDetector(threshold=2.0)
    events = detector.add(0, np.array([2.0, 2.5, 2.0, np.nan, 3.0, 2.0]), 0.0) + detector.finish()
    assert sorted((e.first_pixel, e.last_pixel, e.area) for e in events) == [(1, 1, 1), (4, 4, 1)]


def test_min_area_drops_the_small_components_and_counts_them() -> None:
    from scipy import ndimage

    from edge_had.stream.events import EventDetector

    rng = np.random.default_rng(3)
    scores = rng.random((60, 40)) ** 8 * 10  # as above: components of 1 to ~10 pixels
    scores[[0, -1]] = 0.0  # none touches the first or last line (those are kept whatever their size)
    labels, _ = ndimage.label(scores > 2.0, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    detector = EventDetector(threshold=2.0, min_area=3)
    events = []
    for index, line in enumerate(scores):
        events += detector.add(index, line, float(index))
    events += detector.finish()
    assert sorted(event.area for event in events) == sorted(sizes[sizes >= 3].tolist())
    assert detector.suppressed == int((sizes < 3).sum()) > 5 and len(events) > 5
    with pytest.raises(ValueError, match="min_area"):
        EventDetector(threshold=2.0, min_area=0)


def test_min_area_keeps_an_object_cut_by_a_missing_line() -> None:
    """A 3 x 2 object with min_area 4: whole, one event; with its middle line missing, two
    truncated halves of 2 pixels are kept (not suppressed); the stream's ends truncate too."""
    from edge_had.stream.events import EventDetector

    scores = np.zeros((8, 10))
    scores[2:5, 4:6] = 5.0
    for missing in (None, 3):
        detector = EventDetector(threshold=1.0, min_area=4)
        events = []
        for index, line in enumerate(scores):
            if index != missing:
                events += detector.add(index, line, float(index))
        events += detector.finish()
        got = [(e.first_line, e.last_line, e.area, e.truncated) for e in events]
        if missing is None:
            assert got == [(2, 4, 6, False)] and detector.suppressed == 0
        else:
            assert got == [(2, 2, 2, True), (4, 4, 2, True)] and detector.suppressed == 0
    detector = EventDetector(threshold=1.0, min_area=4)
    assert detector.add(0, scores[3], 0.0) == [] and [e.truncated for e in detector.finish()] == [True]


def test_truncation_comes_from_the_first_line_and_survives_merging() -> None:
    """A U-shaped object whose left arm starts on the first line: the arms merge lower down and
    the whole event stays truncated (kept whatever its size); a small object on lines 0-1 of a
    longer stream is kept as truncated, the same object in mid-stream is suppressed."""
    from edge_had.stream.events import EventDetector

    u = np.zeros((10, 10))
    u[0:4, 2] = u[2:4, 6] = u[3, 2:7] = 5.0  # left arm from line 0, right arm from line 2
    small = np.zeros((10, 10))
    small[0:2, 4] = small[6:8, 4] = 5.0  # 2 pixels at the start, 2 in mid-stream
    results = {}
    for name, scores in (("u", u), ("small", small)):
        detector = EventDetector(threshold=1.0, min_area=10)
        events = []
        for index, line in enumerate(scores):
            events += detector.add(index, line, float(index))
        events += detector.finish()
        results[name] = (
            [(e.first_line, e.last_line, e.area, e.truncated) for e in events],
            detector.suppressed,
        )
    assert results["u"] == ([(0, 3, 9, True)], 0)
    assert results["small"] == ([(0, 1, 2, True)], 1)


def test_an_event_carries_its_first_lines_timestamp_and_navigation_data() -> None:
    """A U-shaped event whose arms start on different lines, and lines whose timestamps are not
    increasing (clock jitter): the event is stamped with its first line's time and meta, not with
    the smallest timestamp it touched (a review found a later line's GPS on an event)."""
    from edge_had.stream.events import EventDetector

    detector = EventDetector(threshold=1.0)
    hot = {1: [6], 2: [2, 6], 3: [2, 6], 4: [2, 3, 4, 5, 6]}  # right arm from line 1, left from 2
    stamps = {0: 0.0, 1: 0.05, 2: 0.006, 3: 0.009, 4: 0.012, 5: 0.015}  # line 1 stamped late
    events = []
    for index in range(6):
        line = np.zeros(10)
        line[hot.get(index, [])] = 5.0
        events += detector.add(index, line, stamps[index], {"gps": index})
    events += detector.finish()
    assert len(events) == 1
    assert (events[0].first_line, events[0].timestamp, events[0].meta) == (1, 0.05, {"gps": 1})


def test_a_stream_with_an_implanted_anomaly_reports_an_event_at_its_place(tmp_path: Path) -> None:
    import json

    from edge_had.cli import main

    rng = np.random.default_rng(4)
    cube = rng.normal(100.0, 1.0, (120, 48, 20)).astype(np.float32)
    cube[70:73, 30:32] += rng.normal(0, 1, 20) * 15  # a 3 x 2 anomaly with its own spectrum
    np.save(tmp_path / "scene.npy", cube)
    report_path = tmp_path / "report.json"
    source = str(tmp_path / "scene.npy")
    code = main(
        ["stream", "--source", source, "--detector", "rx", "--out", str(tmp_path), "--json", str(report_path)]
    )
    assert code == 0
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    hits = [
        e
        for e in events
        if e["first_line"] <= 72 and e["last_line"] >= 70 and e["first_pixel"] <= 31 <= e["last_pixel"] + 1
    ]
    assert len(hits) == 1 and hits[0]["area"] >= 4
    report = json.loads(report_path.read_text())
    assert report["kind"] == "stream" and report["health"]["accounting_ok"]
    assert report["health"]["lines_scored"] == 120
    assert report["detector"]["reduced_bands"] == 20 and report["detector"]["resampling"] == "none"
    assert np.load(tmp_path / "scores.npy").shape == (120, 48)
    assert (tmp_path / "waterfall.png").stat().st_size > 0
    import cv2

    video = cv2.VideoCapture(str(tmp_path / "waterfall.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 120 // 8  # one frame every 8 lines
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (48, 256)


def test_the_score_map_holds_every_replayed_line_with_or_without_ground_truth(tmp_path: Path) -> None:
    """A review: the map was as long as the last line received unless a ground truth sized it, so
    a file without one whose last lines were lost got a shorter scores.npy (98 of 100 lines) while
    the report said 100 replayed. Now the lost lines are NaN rows either way."""
    import json

    from edge_had.cli import main

    rng = np.random.default_rng(2)
    cube = rng.normal(100.0, 1.0, (60, 16, 8)).astype(np.float32)
    np.save(tmp_path / "scene.npy", cube)
    last_lost = 0
    for seed in range(8):  # drop faults at rate 0.3: some seeds lose the last line
        out = tmp_path / f"out{seed}"
        faults = ["--faults", "drop", "--fault-rate", "0.3", "--fault-seed", str(seed)]
        source = ["--source", str(tmp_path / "scene.npy"), "--detector", "rx"]
        argv = ["stream", *source, *faults, "--out", str(out), "--json", str(out / "r.json")]
        assert main(argv) == 0
        scores = np.load(out / "scores.npy")
        assert scores.shape == (60, 16), (seed, scores.shape)
        assert json.loads((out / "r.json").read_text())["replay"]["lines_replayed"] == 60
        last_lost += int(np.isnan(scores[-1]).all())
    assert last_lost >= 1  # the case that lost rows before


@pytest.mark.parametrize(("lines", "width"), [(1, 64), (30, 1)])
def test_a_stream_one_line_or_one_pixel_wide_writes_its_waterfall(tmp_path: Path, lines, width) -> None:
    """Its ground truth is 1 x 64 or 30 x 1, with a target: drawing the outline crashed after the
    run (exit 1, no waterfall.png)."""
    from edge_had.cli import main
    from edge_had.io.synthetic import synthetic_scene

    assert synthetic_scene(seed=0, lines=lines, width=width, bands=40).gt.any()  # an outline to draw
    argv = [
        "stream",
        "--source",
        "synthetic",
        "--detector",
        "rx",
        "--lines",
        str(lines),
        "--width",
        str(width),
    ]
    assert main([*argv, "--bands", "40", "--out", str(tmp_path)]) == 0
    assert np.load(tmp_path / "scores.npy").shape == (lines, width)
    assert (tmp_path / "waterfall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_says_why_there_is_no_window(monkeypatch) -> None:
    from edge_had.stream import video

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    reason = video.window_unavailable_reason()
    assert reason is not None and ("no GUI" in reason or "no display" in reason)


def test_enhanced_stream_of_one_block_equals_offline_enhancement(untrained_bundle) -> None:
    from edge_had.detectors.enhanced import enhance_parts
    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2, alpha_spe=2.0, alpha_spa=0.5))
    scene = synthetic_scene(lines=40, width=30, bands=50, seed=1)
    with TorchRunner(bundle.model_for(50)) as runner:
        offline = enhance_parts(bundle, scene.cube, None, None, runner)
        enhancer = StreamEnhancer(bundle, runner, block=40, context=0, fit_lines=40)
        out = []
        for row in scene.cube:
            out += enhancer.push(row, np.ones(30, bool))
        out += enhancer.flush()
        want = offline["x_k"] + 2.0 * offline["f_spe"] + 0.5 * offline["f_spa"]
        np.testing.assert_allclose(np.stack([line for line, _ in out]), want, rtol=1e-5, atol=1e-6)
        # blocks of 8 with 3 lines of look-ahead: every line comes out once, in order, close to offline
        enhancer = StreamEnhancer(bundle, runner, block=8, context=3, fit_lines=40)
        out = []
        for row in scene.cube:
            out += enhancer.push(row, np.ones(30, bool))
        assert len(out) == 40 - 8  # the last block waits for the end of the stream
        out += enhancer.flush()
        assert len(out) == 40 and enhancer.look_ahead_lines == 10
        error = np.abs(np.stack([line for line, _ in out]) - want).max() / np.abs(want).max()
        assert error < 0.05  # the spatial student sees 14-line windows instead of the scene


class _SlowRunner:
    """Wraps a runner: sleeps inside ``infer`` and checks that its input did not change meanwhile
    (the asynchronous enhancer must not write a window the worker is reading)."""

    def __init__(self, runner, seconds: float = 0.02, fail_at: int | None = None) -> None:
        self.runner, self.seconds, self.fail_at, self.calls, self.threads = runner, seconds, fail_at, 0, set()

    def infer(self, feed, outputs=None):
        import threading
        import time

        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_at == self.calls:
            raise RuntimeError("inference failed")
        before = feed["cube"].copy()
        time.sleep(self.seconds)
        assert np.array_equal(before, feed["cube"]), "the window changed during inference"
        return self.runner.infer(feed, outputs)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_warm_up_runs_one_zero_window_before_the_first_line_and_changes_nothing(
    untrained_bundle, asynchronous
) -> None:
    """``warm_up`` runs the network once, on a zero window of the stream's shape (asking for the
    enhanced output alone, as every block does), on the thread the blocks run on (the worker when
    asynchronous); the lines that follow are bit-identical to a stream without it, and a warm-up
    once a line was pushed is refused."""
    import threading

    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import EnhancementError, StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2))
    scene = synthetic_scene(lines=20, width=30, bands=50, seed=1)
    feeds = []

    class Recording:
        def infer(self, feed, outputs=None):
            feeds.append((feed["cube"].copy(), outputs, threading.current_thread().name))
            return runner.infer(feed, outputs)

    with TorchRunner(bundle.model_for(50)) as runner:
        outputs = {}
        for warm in (False, True):
            enhancer = StreamEnhancer(
                bundle, Recording(), block=8, context=3, fit_lines=8, asynchronous=asynchronous
            )
            if warm:
                assert enhancer.warm_up(30, 50) > 0
                window, asked, thread = feeds[-1]
                assert window.shape == (1, 50, 14, 30) and not window.any() and asked == ("enhanced",)
                assert thread.startswith("enhance") == asynchronous
            out = enhancer.push(scene.cube[0], np.ones(30, bool))
            with pytest.raises(EnhancementError, match="before the first line"):
                enhancer.warm_up(30, 50)  # a line is held (for the normalisation fit)
            for line in scene.cube[1:]:
                out += enhancer.push(line, np.ones(30, bool))
            outputs[warm] = np.stack([line for line, _ in out + enhancer.flush()])
    assert len(feeds) == 2 * 3 + 1  # 3 blocks a stream (20 lines in blocks of 8) and the warm-up
    assert {thread.startswith("enhance") for _, _, thread in feeds} == {asynchronous}
    assert np.array_equal(outputs[True], outputs[False])


def test_asynchronous_enhancement_gives_the_same_lines_in_order(untrained_bundle) -> None:
    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2, alpha_spe=2.0, alpha_spa=0.5))
    scene = synthetic_scene(lines=61, width=30, bands=50, seed=1)
    rng = np.random.default_rng(0)
    valid = rng.random((61, 30)) > 0.05
    with TorchRunner(bundle.model_for(50)) as runner:
        outputs = {}
        for asynchronous in (False, True):
            slow = _SlowRunner(runner)
            enhancer = StreamEnhancer(
                bundle, slow, block=8, context=3, fit_lines=12, asynchronous=asynchronous
            )
            out, per_push = [], []
            for row, line in enumerate(scene.cube):
                got = enhancer.push(line, valid[row])
                per_push.append(len(got))
                out += got
            out += enhancer.flush()
            outputs[asynchronous] = (out, per_push, slow.threads, enhancer.look_ahead_lines)
    (sync, sync_pushes, sync_threads, sync_ahead), (late, late_pushes, late_threads, late_ahead) = (
        outputs[False],
        outputs[True],
    )
    assert len(sync) == len(late) == 61
    for (a, va), (b, vb) in zip(sync, late, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    assert late_threads == {"enhance_0"} and "enhance_0" not in sync_threads  # the worker ran them
    assert sum(late_pushes) < sum(sync_pushes)  # some blocks were still running when push returned
    assert (sync_ahead, late_ahead) == (10, 18)


class _GatedRunner:
    """Run k >= 2 waits until the test opens its gate (the test opens the gates of the runs
    submitted so far after each push returns): a push that waited for the run it had just
    submitted would time out here."""

    def __init__(self, runner) -> None:
        import collections
        import threading

        self.runner, self.calls, self.timed_out = runner, 0, []
        self.gates = collections.defaultdict(threading.Event)

    def infer(self, feed, outputs=None):
        self.calls += 1
        if self.calls >= 2 and not self.gates[self.calls].wait(timeout=2.0):
            self.timed_out.append(self.calls)
        return self.runner.infer(feed, outputs)


def _enhancer_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("enhance")]


def test_asynchronous_push_waits_only_for_the_older_run(untrained_bundle) -> None:
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2))
    lines = np.random.default_rng(1).random((30, 12, 20)).astype(np.float32)
    with TorchRunner(bundle.model_for(20)) as runner:
        gated = _GatedRunner(runner)
        enhancer = StreamEnhancer(bundle, gated, block=4, context=1, fit_lines=4, asynchronous=True)
        out = []
        for line in lines:
            out += enhancer.push(line, np.ones(12, bool))
            for k in range(1, enhancer.blocks_run + len(enhancer._in_flight) + 1):
                gated.gates[k].set()
        for k in range(1, 20):  # flush waits for its own run
            gated.gates[k].set()
        out += enhancer.flush()
    assert gated.timed_out == [] and gated.calls == 8 and len(out) == 30
    assert _enhancer_threads() == []  # flush ended the worker


class _HostArrayRunner:
    """Hands out its own host arrays (as a runner on a CUDA device hands out page-locked ones) and
    records what each inference read."""

    def __init__(self, runner) -> None:
        self.runner, self.given, self.read = runner, [], []

    def host_array(self, shape):
        self.given.append(np.zeros(shape, np.float32))
        return self.given[-1]

    def infer(self, feed, outputs=None):
        self.read.append(feed["cube"])
        return self.runner.infer(feed, outputs)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_enhancer_writes_lines_into_the_runners_host_arrays(untrained_bundle, asynchronous) -> None:
    """Every block the network reads, the warm-up's too, lies in an array the runner handed out:
    for torch on CUDA that is page-locked memory, which uploads a block 4x faster on an H100."""
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2))
    lines = np.random.default_rng(1).random((30, 12, 20)).astype(np.float32)
    with TorchRunner(bundle.model_for(20)) as torch_runner:
        runner = _HostArrayRunner(torch_runner)
        enhancer = StreamEnhancer(bundle, runner, block=4, context=1, fit_lines=4, asynchronous=asynchronous)
        enhancer.warm_up(12, 20)
        out = []
        for line in lines:
            out += enhancer.push(line, np.ones(12, bool))
        out += enhancer.flush()
    assert len(out) == 30 and len(runner.given) == (3 if asynchronous else 2)  # warm-up + windows
    blocks = runner.read[1:-1]  # the flush's last, partial block is a copy
    assert len(blocks) >= 6
    assert all(any(np.shares_memory(block, given) for given in runner.given[1:]) for block in blocks)
    assert np.shares_memory(runner.read[0], runner.given[0])


def test_an_asynchronous_run_error_is_raised_by_a_later_call_and_then_on(untrained_bundle) -> None:
    import functools

    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import EnhancementError, StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2))
    lines = np.random.default_rng(1).random((40, 12, 20)).astype(np.float32)
    with TorchRunner(bundle.model_for(20)) as runner:
        for asynchronous in (False, True):
            enhancer = StreamEnhancer(bundle, _SlowRunner(runner, fail_at=2), block=4, context=1,
                                      fit_lines=4, asynchronous=asynchronous)  # fmt: skip
            with pytest.raises(EnhancementError, match="inference failed") as raised:
                for line in lines:
                    enhancer.push(line, np.ones(12, bool))
            assert isinstance(raised.value.__cause__, RuntimeError)
            for call in (functools.partial(enhancer.push, lines[0], np.ones(12, bool)), enhancer.flush):
                with pytest.raises(EnhancementError, match="a network run failed"):
                    call()
            assert _enhancer_threads() == []
        enhancer = StreamEnhancer(bundle, runner, block=4, context=1, fit_lines=4)
        enhancer.push(lines[0], np.ones(12, bool))
        enhancer.flush()
        with pytest.raises(EnhancementError, match="flush"):
            enhancer.push(lines[1], np.ones(12, bool))


@pytest.mark.parametrize("scorer", ["global", "hybrid"])
def test_a_failing_network_leaves_the_stream_on_plain_rx(untrained_bundle, scorer) -> None:
    """The third network run fails: the lines the enhancer held are rejected with the failure as
    the reason, the stream goes on with plain RX (flag plain-rx), every line is accounted for."""
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    bundle = load_bundle(untrained_bundle(seed=0, k=16, hidden=8, blocks=2))
    lines = 100 + np.random.default_rng(2).random((60, 12, 40)).astype(np.float32)
    finals = []
    with TorchRunner(bundle.model_for(40)) as runner:
        for asynchronous in (False, True):
            finals.clear()
            enhancer = StreamEnhancer(bundle, _SlowRunner(runner, 0.0, fail_at=3), block=4, context=1,
                                      fit_lines=4, asynchronous=asynchronous)  # fmt: skip
            pipeline = StreamPipeline(12, 40, settings=CausalSettings(warmup_lines=3), enhancer=enhancer,
                                      on_result=finals.append, scorer=scorer)  # fmt: skip
            for row, line in enumerate(lines):
                pipeline.push(line, row, float(row))
            pipeline.finish()
            health = pipeline.health.to_dict()
            assert (
                health["accounting_ok"] and health["enhancement_failures"] == 1 and pipeline.enhancer is None
            )
            rejected = [r for r in finals if r.state == "rejected"]
            assert rejected and all("network run failed" in r.reason for r in rejected)
            # the failed block and (asynchronous) the one filling; hybrid RX's look-ahead lines are
            # scored with the old statistics, not rejected
            assert len(rejected) <= (4 if not asynchronous else 8) + 1
            late = [r for r in finals if r.state == "scored" and "plain-rx" in r.flags]
            assert len(late) >= 40 and pipeline.rx.bands == 32
            assert sorted(r.index for r in finals) == list(range(60))


def test_reorder_window_puts_late_lines_back_in_order(lines) -> None:
    order = [0, 1, 2, 3, 5, 4, 6, 9, 7, 8, 10, 12, 13, 14, 15, 16, 11, 17, 17]
    finals = []
    pipeline = StreamPipeline(
        25, 6, settings=CausalSettings(warmup_lines=3), on_result=finals.append, reorder_window=3
    )
    for index in order:
        pipeline.push(lines[index], index, float(index))
    pipeline.finish()
    health = pipeline.health
    scored = [r.index for r in finals if r.state == "scored"]
    assert scored == [i for i in range(18) if i != 11] and health.lines_scored == 17  # in order; 11 too late
    rejected = {r.index: r.reason for r in finals if r.state == "rejected"}
    assert rejected[11].startswith("out-of-order index (beyond the reorder window")
    assert health.missing_indices == 0 and health.duplicates == 1  # 11 came too late, not missing; 17 twice
    assert {r.index for r in finals if "reordered" in r.flags} == {4, 7, 8}
    assert health.to_dict()["accounting_ok"]
    # scores of a reordered stream equal those of the same lines pushed in order
    in_order = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3))
    results = {}
    in_order.on_result = lambda r: results.__setitem__(r.index, r)
    for index in [i for i in range(18) if i != 11]:
        in_order.push(lines[index], index, float(index))
    in_order.finish()
    for result in finals:
        if result.state == "scored":
            np.testing.assert_allclose(result.scores, results[result.index].scores, rtol=1e-12)


def test_a_new_band_count_reinitialises_only_after_enough_lines(lines) -> None:
    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3), reinit_after=4)
    states = [pipeline.push(lines[i], i, float(i)).state for i in range(5)]
    states += [pipeline.push(lines[5][:, :5], 5, 5.0).state]  # one odd line
    states += [pipeline.push(lines[6], 6, 6.0).state]
    states += [pipeline.push(lines[i][:, :5], i, float(i)).state for i in range(7, 14)]  # the sensor switched
    pipeline.finish()
    assert states[:5] == ["pending", "pending", "scored", "scored", "scored"]
    assert states[5:7] == ["rejected", "scored"]
    assert states[7:] == ["rejected"] * 4 + ["pending", "pending", "scored"]  # new warm-up of 3 lines
    health = pipeline.health
    assert health.reinitialisations == 1 and pipeline.bands == 5
    assert health.lines_rejected == 5 and health.to_dict()["accounting_ok"]


@pytest.mark.parametrize("fail_at", [3, 1])
def test_the_stream_command_goes_on_with_plain_rx_when_the_network_fails(
    monkeypatch, tmp_path, fail_at
) -> None:
    """Network run ``fail_at`` raises (1: the warm-up before the first line; 3: the second block,
    after a block was enhanced): the command finishes, accounts for every line, counts the
    failure, and thresholds events for the 32 bands plain RX now scores."""
    import json

    import edge_had.runtime as runtime
    from edge_had.cli import main
    from edge_had.stream.events import chi2_threshold

    real = runtime.enhancement_runner

    class Failing:
        def __init__(self, runner) -> None:
            self.runner, self.calls = runner, 0

        def activate(self):
            self.runner.activate()
            return self

        def infer(self, feed, outputs=None):
            self.calls += 1
            if self.calls == fail_at:
                raise RuntimeError("device lost")
            return self.runner.infer(feed, outputs)

    monkeypatch.setattr(runtime, "enhancement_runner", lambda *a, **k: Failing(real(*a, **k)))
    report_path = tmp_path / "report.json"
    argv = ["stream", "--source", "synthetic", "--lines", "120", "--width", "48", "--bands", "40",
            "--backend", "torch", "--json", str(report_path)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    health = report["health"]
    assert health["accounting_ok"] and health["enhancement_failures"] == 1
    assert health["flags"]["plain-rx"] > 60, health
    if fail_at == 1:
        assert (
            "device lost" in report["detector"]["warm_up_error"] and report["detector"]["warm_up_ms"] is None
        )
        # plain RX from the first line: no line is lost to the failure
        assert health["flags"]["plain-rx"] == health["lines_scored"] == 120 and not health["reasons"]
    else:
        assert report["detector"]["warm_up_ms"] > 0 and "warm_up_error" not in report["detector"]
        assert health["flags"]["plain-rx"] < health["lines_scored"]  # some lines were enhanced first
        # the lines the enhancer held when it failed are rejected, saying why
        assert any("network run failed" in reason for reason in health["reasons"]), health
    assert report["events"]["threshold"] == pytest.approx(chi2_threshold(32, 1e-6))


def test_async_enhance_without_a_network_is_refused(capsys) -> None:
    from edge_had.cli import main

    assert (
        main(["stream", "--source", "synthetic", "--lines", "20", "--detector", "rx", "--async-enhance"]) == 2
    )
    assert (
        "--async-enhance: only enhanced-* detectors use them; rx runs no network" in capsys.readouterr().err
    )


def test_lines_pushed_after_finish_are_rejected(lines) -> None:
    finals = []
    pipeline = StreamPipeline(25, 6, settings=CausalSettings(warmup_lines=3), on_result=finals.append)
    for index in range(10):
        pipeline.push(lines[index], index, float(index))
    pipeline.finish()
    result = pipeline.push(lines[10], 10, 10.0)
    pipeline.finish()  # twice: nothing more
    assert result.state == "rejected" and result.reason.startswith("stream finished")
    assert pipeline.health.to_dict()["accounting_ok"] and len(finals) == 11


def test_a_refresh_of_corrupt_statistics_gives_nan_scores_not_an_error(monkeypatch) -> None:
    """Where LAPACK flags a NaN covariance as not positive definite, the pseudo-inverse path's
    eigh would raise; the refresh gives an all-NaN whitener instead."""
    from scipy.linalg import lapack

    from edge_had.stream.causal import CausalRX

    rng = np.random.default_rng(0)
    rx = CausalRX(5, CausalSettings(warmup_lines=2, outlier_sigma=None))  # no gate: NaN gets in
    rx.push(rng.random((20, 5)))
    rx.push(rng.random((20, 5)))
    monkeypatch.setattr(lapack, "dpotrf", lambda a, **k: (a, 1))  # as reference LAPACK on NaN
    bad = rng.random((20, 5))
    bad[3, 2] = np.nan  # marked valid: reaches the statistics
    [(_, scores, _)] = rx.push(bad)
    assert np.isnan(scores).all()
    monkeypatch.undo()
    gated = CausalRX(5, CausalSettings(warmup_lines=2))  # the outlier gate keeps the NaN out
    gated.push(rng.random((20, 5)))
    gated.push(rng.random((20, 5)))
    [(_, scores, _)] = gated.push(bad)
    assert gated.screened == [(2, 1, False)] and np.isfinite(np.delete(scores, 3)).all()


def test_async_enhance_leaves_a_core_for_rx(monkeypatch, tmp_path) -> None:
    """With --async-enhance the runner gets one CPU thread fewer than the machine has (ONNX
    Runtime's intra-op threads; RX keeps a core); without it, the runner's default."""
    import json

    import edge_had.runtime as runtime
    from edge_had.cli import main
    from edge_had.stream.enhance import runner_threads_beside_rx

    real, seen = runtime.enhancement_runner, []

    def spy(*args, **kwargs):
        runner = real(*args, **kwargs)
        seen.append((kwargs.get("cpu_threads"), getattr(runner, "threads", "n/a")))
        return runner

    monkeypatch.setattr(runtime, "enhancement_runner", spy)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    for flags in ([], ["--async-enhance"]):
        path = tmp_path / f"r{len(flags)}.json"
        argv = ["stream", "--source", "synthetic", "--lines", "40", "--width", "24", "--bands", "30",
                "--backend", "onnxruntime", "--json", str(path), *flags]  # fmt: skip
        assert main(argv) == 0
        assert json.loads(path.read_text())["detector"]["enhancement_cpu_threads"] == (5 if flags else None)
    assert seen == [(None, None), (5, 5)] and runner_threads_beside_rx() == 5


def test_the_waterfall_boxes_events_on_their_own_rows_across_a_gap(monkeypatch) -> None:
    """Lines 0-5, then 9-30 (three missing): an event on lines 4-5, before the gap, is boxed on the
    rows that show those lines, and a frame comes every 8 lines shown (rows were taken as
    contiguous indices, so the box sat 3 rows off, and line 7's frame never came)."""
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    from edge_had.stream.events import Event
    from edge_had.stream.video import WaterfallVideo

    video = WaterfallVideo(None, 16)
    boxes = []
    monkeypatch.setattr(
        video.cv2,
        "rectangle",
        lambda frame, low, high, *rest: boxes.append((low, high, video.indices.copy())),
    )
    video.add_events([Event(4, 5, 5, 6, 9.0, 4, 0.0)])
    for index in [*range(6), *range(9, 31)]:
        video.add_line(index, np.ones(16))
    assert video.frames == 3  # after 8, 16 and 24 lines shown
    for low, high, shown in boxes:  # each frame's box, with the rows then on screen
        rows = {index: row for row, index in enumerate(shown) if index >= 0}
        assert (low, high) == ((5 - 2, rows[4] - 2), (6 + 2, rows[5] + 2))


def test_the_waterfall_forgets_events_off_screen_and_shows_the_last_lines(monkeypatch) -> None:
    """Every frame drew every event ever seen (3 ms a line after 10 000 events), and the lines
    after the last full frame - with the events the stream's end closed - were never shown."""
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    from edge_had.stream.events import Event
    from edge_had.stream.video import WaterfallVideo

    video = WaterfallVideo(None, 16, height=8, every=8)
    drawn = []
    monkeypatch.setattr(video.cv2, "rectangle", lambda frame, low, high, *rest: drawn.append(low))
    video.add_events([Event(0, 1, 2, 3, 9.0, 4, 0.0), Event(10, 11, 2, 3, 9.0, 4, 0.0)])
    for index in range(16):
        video.add_line(index, np.ones(16))
    assert [event.first_line for event in video.events] == [10]  # lines 8-15 on screen
    for index in range(16, 19):
        video.add_line(index, np.ones(16))
    video.add_events([Event(17, 18, 5, 6, 9.0, 4, 0.0)])  # closed by the stream's end
    drawn.clear()
    video.close()
    # a last frame: lines 11-18 on screen, line 11 of the older event on row 0, the late one on rows 6-7
    assert video.frames == 3 and drawn == [(2 - 2, 0 - 2), (5 - 2, 6 - 2)]


def test_the_waterfall_boxes_the_events_the_end_closed_after_a_full_frame(monkeypatch) -> None:
    """A review: with a line count that is a multiple of the frame interval (the default 512-line
    synthetic stream), the last frame came before the stream's end closed its last events, and no
    frame was drawn after: those events were never boxed. Without new events, no extra frame."""
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    from edge_had.stream.events import Event
    from edge_had.stream.video import WaterfallVideo

    for late_events in ([Event(14, 15, 5, 6, 9.0, 4, 0.0)], []):
        video = WaterfallVideo(None, 16, height=8, every=8)
        drawn: list[tuple[int, int]] = []

        def rectangle(frame, low, high, *rest, drawn=drawn) -> None:
            drawn.append(low)

        monkeypatch.setattr(video.cv2, "rectangle", rectangle)
        for index in range(16):
            video.add_line(index, np.ones(16))
        assert video.frames == 2 and not drawn
        video.add_events(late_events)  # closed by the stream's end
        video.close()
        assert (video.frames, drawn) == ((3, [(5 - 2, 6 - 2)]) if late_events else (2, []))


def test_the_streams_first_and_last_lines_are_enhanced_as_offline() -> None:
    """The context before the first line and after the last one repeats that line, as the model's
    convolutions pad the scene's borders; it was zeros, and the first and last lines' enhanced
    values were 4.7 % and 2.8 % off the offline ones (of the largest value), here <= 0.1 %."""
    from edge_had.detectors.enhanced import enhance_parts
    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models import load_bundle
    from edge_had.runtime.torch_runner import TorchRunner
    from edge_had.stream.enhance import StreamEnhancer

    scene = synthetic_scene(seed=0, lines=64, width=48, bands=60)
    bundle = load_bundle(None)
    valid = np.ones(scene.cube.shape[:2], bool)
    with TorchRunner(bundle.model_for(60)) as runner:
        enhancer = StreamEnhancer(bundle, runner, fit_lines=64)  # normalised on the whole scene
        out = []
        for row in scene.cube:
            out += enhancer.push(row, np.ones(48, bool))
        out += enhancer.flush()
        parts = enhance_parts(bundle, scene.cube, valid, None, runner)
    streamed = np.stack([line for line, _ in out])
    offline = (
        parts["x_k"] + bundle.config.alpha_spe * parts["f_spe"] + bundle.config.alpha_spa * parts["f_spa"]
    )
    error = np.abs(streamed - offline).max(axis=(1, 2)) / np.abs(offline).max()
    assert error.max() <= 1e-3, error[[0, 1, -2, -1]]


def test_chi2_threshold_default_pfa_is_one_in_a_million():
    """Chi-square with 2 dof: P(X > t) = exp(-t / 2), so t = -2 ln(pfa)."""
    assert chi2_threshold(2) == pytest.approx(-2.0 * math.log(1e-6), rel=1e-9)
    assert chi2_threshold(2, 1e-3) == pytest.approx(-2.0 * math.log(1e-3), rel=1e-9)


def _chi2_isf_4(pfa: float) -> float:
    """Chi-square with 4 dof: P(X > t) = exp(-t / 2) (1 + t / 2); solved by bisection."""
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.exp(-mid / 2) * (1 + mid / 2) > pfa else (lo, mid)
    return (lo + hi) / 2


def test_stream_threshold_takes_the_local_part_on_its_components():
    pfa = 1e-6
    pipeline_rx = SimpleNamespace(bands=4, components=2)
    t4, t2 = _chi2_isf_4(pfa), -2.0 * math.log(pfa)
    assert stream_threshold("global", pipeline_rx, pfa) == pytest.approx(t4, rel=1e-9)
    assert stream_threshold("hybrid", pipeline_rx, pfa) == pytest.approx(math.sqrt(t4 * t2), rel=1e-9)


def test_the_waterfall_video_keeps_every_pixel_of_an_odd_width_line(tmp_path) -> None:
    """MPEG-4 wants even frame sides: a 33-pixel line came back 32 pixels wide (a review)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    from edge_had.stream.video import WaterfallVideo

    video = WaterfallVideo(tmp_path / "w.mp4", 33, height=16, every=4)
    for index in range(8):
        scores = np.zeros(33)
        scores[-1] = 1e6  # the last pixel bright
        video.add_line(index, scores)
    video.close()
    capture = cv2.VideoCapture(str(tmp_path / "w.mp4"))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[1] >= 33
    assert frame[-4:, 32].mean() > frame[-4:, 16].mean() + 50  # the last column is there
