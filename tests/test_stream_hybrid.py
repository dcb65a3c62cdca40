"""Hybrid RX in the line loop (edge_had.stream.causal_local) against the offline detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_had.detectors.lrx import LocalRXSettings, local_rx_line_reference
from edge_had.detectors.scoring import hybrid_rx
from edge_had.eval.metrics import roc_auc
from edge_had.io import list_scenes, load_scene, sha256_file
from edge_had.stream.causal import CausalSettings
from edge_had.stream.causal_local import CausalHybridRX, _AlongLineBoxSums
from edge_had.stream.events import chi2_threshold, hybrid_threshold
from edge_had.stream.pipeline import StreamPipeline
from edge_had.stream.run import band_reduction, stream_scene_scores


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    rng = np.random.default_rng(1)
    cube = 50.0 + rng.standard_normal((36, 28, 12)) @ rng.standard_normal((12, 12))
    cube[20, 9] += 8 * rng.standard_normal(12)  # an anomaly
    return cube


def streamed(
    scorer: CausalHybridRX, cube: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, list[list[int]]]:
    """The score map and, per pushed line, the positions released by that push."""
    scores = np.full(valid.shape, -1.0)
    released = []
    for row in range(cube.shape[0]):
        out = scorer.push(cube[row], valid[row])
        released.append([position for position, _, _ in out])
        for position, line_scores, _ in out:
            scores[position] = line_scores
    for position, line_scores, _ in scorer.flush():
        scores[position] = line_scores
    return scores, released


@pytest.mark.parametrize("settings", [LocalRXSettings(), LocalRXSettings(3, 7, n_components=None)])
def test_with_the_whole_scene_as_warm_up_the_stream_equals_offline_hybrid_rx(cube, settings) -> None:
    """Warm-up = every line: the global statistics and the principal components are the whole
    scene's, as offline; the local windows are clipped at the first and last line, as offline."""
    valid = np.ones(cube.shape[:2], dtype=bool)
    valid[4, 3] = valid[30, 27] = False
    whole = CausalSettings(warmup_lines=cube.shape[0], regularization=0.0)
    scores, _ = streamed(CausalHybridRX(12, whole, settings), cube, valid)
    want = hybrid_rx(cube, valid, settings)
    assert np.array_equal(np.isnan(scores), ~valid)
    np.testing.assert_allclose(scores[valid], want[valid], rtol=1e-7)  # all components: a rotation


def brute_force_local_rx(
    cube: np.ndarray, valid: np.ndarray, row: int, basis: tuple, settings: LocalRXSettings
) -> np.ndarray:
    """Local RX of one line by the float64 loop oracle (no running sums, no box filters) on the
    cube projected with ``basis`` (mean, components, eigenvalues); NaN where invalid."""
    mean, components, eigenvalues = basis
    outer, inner = settings.outer // 2, settings.inner // 2
    top, bottom = max(row - outer, 0), min(row + outer + 1, len(cube))
    scores = local_rx_line_reference(
        (cube[top:bottom] - mean) @ components, valid[top:bottom], row - top, inner_half=inner,
        outer_half=outer, load=settings.regularization * eigenvalues.sum() / components.shape[1],
        fallback=(np.zeros(components.shape[1]), np.diag(eigenvalues)),
    )  # fmt: skip
    return np.where(valid[row], scores, np.nan)


@pytest.mark.parametrize("halves", [(7, 2), (0,), (3, 1), (6, 5, 0)])
@pytest.mark.parametrize("width", [1, 4, 40])
def test_along_line_box_sums_are_the_clipped_window_sums(halves, width) -> None:
    """Against explicit sums over each pixel's neighbours (clipped at the line's ends), for boxes
    wider than the line too, and twice in a row (the buffers are reused between lines)."""
    rng = np.random.default_rng(width)
    boxes = _AlongLineBoxSums(3, width, halves)
    for _ in range(2):
        values = rng.standard_normal((3, width))
        boxes.line[:] = values
        got = boxes()
        for half, box in zip(halves, got, strict=True):
            want = [values[:, max(x - half, 0) : x + half + 1].sum(axis=1) for x in range(width)]
            np.testing.assert_allclose(box, np.array(want).T, rtol=0, atol=1e-12)
    kept = [boxes.line, *got]  # each line's sums are kept for the window: new arrays each time
    assert not any(np.shares_memory(a, b) for n, a in enumerate(kept) for b in kept[n + 1 :])


def local_parts(
    scorer: CausalHybridRX, cube: np.ndarray, valid: np.ndarray, monkeypatch
) -> tuple[dict[int, np.ndarray], dict[int, tuple]]:
    """Stream ``cube``: each line's local RX and the basis (mean, components, eigenvalues) it
    was scored with."""
    used, local = {}, {}
    original = CausalHybridRX._local_scores

    def spy(self, position):
        local[position] = original(self, position)
        used[position] = (self._basis.mean, self._basis.vectors, self._basis.eigenvalues)
        return local[position]

    monkeypatch.setattr(CausalHybridRX, "_local_scores", spy)
    streamed(scorer, cube, valid)
    assert sorted(local) == list(range(cube.shape[0]))
    return local, used


def test_running_window_sums_survive_basis_changes(cube, monkeypatch) -> None:
    """Sliding statistics and a basis recomputed every 3 lines: each line's local part equals the
    brute-force local RX with the basis it was scored with."""
    valid = np.ones(cube.shape[:2], dtype=bool)
    valid[[8, 15], [3, 20]] = False
    settings = LocalRXSettings(3, 7, n_components=4)
    scorer = CausalHybridRX(12, CausalSettings(statistics="sliding", window=6, warmup_lines=4), settings,
                            basis_every=3)  # fmt: skip
    local, used = local_parts(scorer, cube, valid, monkeypatch)
    # the basis did change along the way: asked every 3 lines, it changes every 7 here (a new
    # basis takes over once a whole 7-line window has arrived since it was computed)
    assert len({id(basis[0]) for basis in used.values()}) >= 4
    for row in range(cube.shape[0]):
        want = brute_force_local_rx(cube, valid, row, used[row], settings)
        np.testing.assert_allclose(local[row], want, rtol=1e-8, equal_nan=True)


def test_a_restart_hands_the_local_part_a_basis_of_the_new_background_at_once() -> None:
    """basis_every 1000 never comes due here: the basis of the old background (mean ~100) is
    replaced because the statistics restarted on a new one (mean ~1e4), from the line after the
    restart plus the look-ahead (module docstring of causal_local: handed over at once)."""
    rng = np.random.default_rng(3)
    scorer = CausalHybridRX(3, CausalSettings(warmup_lines=3), LocalRXSettings(1, 3, n_components=2),
                            basis_every=1000)  # fmt: skip
    for _ in range(10):
        scorer.push(100.0 + rng.standard_normal((30, 3)))
    assert np.allclose(scorer._basis.mean, 100.0, atol=1.0)
    for _ in range(8):
        scorer.push(1e4 + rng.standard_normal((30, 3)))
    assert scorer.restarts == 1
    assert np.allclose(scorer._basis.mean, 1e4, atol=1.0)


@pytest.mark.parametrize("value", [1e10, 1e12, 1e22])
def test_a_huge_sample_leaves_no_trace_in_the_windows_after_it(cube, value, monkeypatch) -> None:
    """One corrupt finite sample at line 12: the lines whose window no longer holds it (20 on)
    score as the brute-force local RX of their window. Running window sums kept its rounding
    residue for the rest of the basis: scores up to 16x off on ~30 lines (a review)."""
    corrupt = cube.copy()
    corrupt[12, 9, 3] = value
    valid = np.ones(cube.shape[:2], dtype=bool)
    settings = LocalRXSettings(n_components=6)
    local, used = local_parts(CausalHybridRX(12, local=settings), corrupt, valid, monkeypatch)
    for row in range(20, cube.shape[0]):
        want = brute_force_local_rx(corrupt, valid, row, used[row], settings)
        np.testing.assert_allclose(local[row], want, rtol=1e-8, err_msg=f"line {row}")


@pytest.mark.parametrize("device", [False, True])
def test_a_basis_change_projects_no_more_lines_at_once_than_any_other_line(cube, device, monkeypatch) -> None:
    """The next basis is handed over line by line: no push projects more than two lines (the new
    line in the current and in the next basis). Re-projecting the window's lines at once made
    every basis change a latency spike (15 lines; 10 ms against 1.7 ms on the 2-core CPU)."""
    projected: list[int] = []  # per push: lines projected, and (numpy's path) their along-line sums
    summed: list[int] = []
    original_project, original_sums = CausalHybridRX._project, _AlongLineBoxSums.__call__

    def counting_project(self, basis, positions):
        projected[-1] += len(positions)
        return original_project(self, basis, positions)

    def counting_sums(self):
        summed[-1] += 1
        return original_sums(self)

    monkeypatch.setattr(CausalHybridRX, "_project", counting_project)
    monkeypatch.setattr(_AlongLineBoxSums, "__call__", counting_sums)
    local = LocalRXSettings(3, 7, n_components=4)
    scorer = CausalHybridRX(12, CausalSettings(warmup_lines=4), local, basis_every=6,
                            local_math=RefusingLocalMath(set()) if device else None)  # fmt: skip
    for row in range(cube.shape[0]):
        projected.append(0)
        summed.append(0)
        scorer.push(cube[row])
    bases_changed = scorer._basis.first > 0
    assert bases_changed and max(projected[12:]) <= 2  # after the first basis (released at line 7)
    assert max(summed[12:]) <= (0 if device else 2)  # a device sums the lines itself


class RefusingLocalMath:
    """A device for the local part that scores every line with a placeholder (ones) but hands
    ``refused`` lines back to numpy, as the CUDA one does with singular windows."""

    name, max_dims = "fake", 16

    def __init__(self, refused: set[int]) -> None:
        self.refused, self.held, self.numpy_lines = refused, set(), 0

    def holds(self, position: int) -> bool:
        return position in self.held

    def forget(self) -> None:
        self.held.clear()

    def put(self, positions, y, valid, *, slots, inner, outer) -> None:  # noqa: ANN001
        assert y.shape[0] == valid.shape[0] == len(positions) <= slots
        self.held.update(positions)

    def scores(self, centre, top, bottom, valid, *, fallback, load):  # noqa: ANN001
        if centre in self.refused:
            self.numpy_lines += 1
            return None
        return np.ones(valid.shape)


def test_lines_a_device_hands_back_are_scored_by_numpy_as_without_it(cube) -> None:
    """Lines 20 and 22 (a few lines apart, in one basis period) go back to numpy: their scores
    equal the numpy detector's, although numpy's running windows skipped the lines between."""
    valid = np.ones(cube.shape[:2], dtype=bool)
    settings = CausalSettings(warmup_lines=4)
    numpy_scores, _ = streamed(CausalHybridRX(12, settings), cube, valid)
    device = RefusingLocalMath({20, 22})
    scores, _ = streamed(CausalHybridRX(12, settings, local_math=device), cube, valid)
    assert device.numpy_lines == 2
    np.testing.assert_allclose(scores[[20, 22]], numpy_scores[[20, 22]], rtol=1e-12)
    assert not np.allclose(scores[21], numpy_scores[21])  # the placeholder: the device did score it


def test_each_line_is_released_once_in_order_after_its_look_ahead(cube) -> None:
    valid = np.ones(cube.shape[:2], dtype=bool)
    scorer = CausalHybridRX(12, CausalSettings(warmup_lines=5))
    scores, released = streamed(scorer, cube, valid)
    assert scorer.look_ahead_lines == 7
    # the warm-up ends with line 4; line t is released with line t + 7
    assert released[:7] == [[]] * 7
    assert all(released[t] == [t - 7] for t in range(7, cube.shape[0]))
    flat = [p for r in released for p in r]
    assert flat == list(range(cube.shape[0] - 7))  # the last 7 come from flush()
    assert (scores >= 0).all()
    assert np.unravel_index(np.argmax(scores), scores.shape) == (20, 9)


def test_memory_does_not_grow_with_the_stream() -> None:
    rng = np.random.default_rng(2)
    scorer = CausalHybridRX(6, CausalSettings(warmup_lines=5), basis_every=16)
    held = []
    for _ in range(300):
        scorer.push(rng.standard_normal((10, 6)))
        bases = [b for b in (scorer._basis, scorer._next_basis) if b is not None]
        held.append((len(scorer._lines), sum(len(b.features) for b in bases)))
    # lines held: the outer window's 15 lines + 1; per-line sums held: as many in the current basis
    # and, while a new one takes over, up to 15 more in that one
    assert max(h[0] for h in held[50:]) == max(h[0] for h in held[250:]) <= 16
    assert max(h[1] for h in held[50:]) == max(h[1] for h in held[250:]) <= 16 + 15


def test_the_pipeline_accounts_for_every_line_with_the_hybrid_scorer(cube) -> None:
    finals = []
    pipeline = StreamPipeline(
        28, 12, settings=CausalSettings(warmup_lines=4), scorer="hybrid", on_result=finals.append
    )
    bad = cube[6].copy()
    bad[[1, 5]] = np.nan
    for row in range(cube.shape[0]):
        line = bad if row == 6 else np.full((28, 12), np.nan) if row == 9 else cube[row]
        pipeline.push(line, row, float(row))
    pipeline.finish()
    health = pipeline.health.to_dict()
    assert health["accounting_ok"] and health["lines_scored"] == cube.shape[0] - 1
    assert health["reasons"] == {"no valid pixel": 1}
    masked = next(r for r in finals if r.index == 6)
    assert masked.flags == ["masked-pixels"] and np.isnan(masked.scores[[1, 5]]).all()
    assert np.isfinite(np.delete(masked.scores, [1, 5])).all()
    assert pipeline.report()["look_ahead_lines"] == 7 and pipeline.report()["scorer"] == "hybrid"
    with pytest.raises(ValueError, match="unknown scorer"):
        StreamPipeline(28, 12, scorer="local")


def test_hybrid_event_threshold_is_the_geometric_mean_of_the_chi_square_ones() -> None:
    from scipy.stats import chi2

    assert hybrid_threshold(64, 10, 1e-6) == pytest.approx(np.sqrt(chi2.isf(1e-6, 64) * chi2.isf(1e-6, 10)))
    assert chi2_threshold(10) < hybrid_threshold(64, 10) < chi2_threshold(64)


@pytest.mark.parametrize(("seconds_per_line", "late"), [(1.0, False), (1.5, True)])
def test_waiting_for_the_look_ahead_is_not_a_deadline_miss(cube, monkeypatch, seconds_per_line, late):
    """Lines arrive one budget apart (a simulated clock); a line waits 7 look-ahead lines for its
    local window. Keeping pace is on time; arriving and being processed 1.5 budgets per line is not."""
    import edge_had.stream.pipeline as pipeline_module

    clock = {"now": 0.0}
    monkeypatch.setattr(pipeline_module.time, "perf_counter", lambda: clock["now"])
    pipeline = StreamPipeline(28, 12, settings=CausalSettings(warmup_lines=3), scorer="hybrid", budget_s=1.0)
    for row in range(cube.shape[0]):
        clock["now"] = row * seconds_per_line
        pipeline.push(cube[row], row, float(row))
    misses = pipeline.health.deadline_misses
    assert (misses > 20) if late else (misses == 0)


def test_stream_command_runs_hybrid_rx(tmp_path: Path, cube) -> None:
    from edge_had.cli import main

    np.save(tmp_path / "scene.npy", cube.astype(np.float32))
    report_path = tmp_path / "report.json"
    argv = ["stream", "--source", str(tmp_path / "scene.npy"), "--detector", "hybrid-rx"]
    assert main([*argv, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["detector"]["name"] == "hybrid-rx" and report["scorer"] == "hybrid"
    assert report["health"]["lines_scored"] == cube.shape[0] and report["look_ahead_lines"] == 7


def test_streaming_hybrid_rx_on_real_scenes_stays_close_to_offline(data_dir: Path) -> None:
    streamed_auc, offline_auc = [], []
    for path in list_scenes(data_dir):
        scene = load_scene(path)
        cube = scene.detection_cube()
        scores, run = stream_scene_scores(cube, scene.valid, scorer="hybrid")
        assert run.pipeline.health.lines_scored == cube.shape[0]
        streamed_auc.append(roc_auc(np.nan_to_num(scores, nan=0.0), scene.gt, scene.valid))
        reduced = cube.astype(np.float64) @ band_reduction(cube.shape[2]).T
        offline_auc.append(roc_auc(hybrid_rx(reduced, scene.valid), scene.gt, scene.valid))
    # measured: see bench/results/stream_auc.json
    assert abs(np.mean(streamed_auc) - np.mean(offline_auc)) <= 0.01


def test_stream_report_says_whether_the_model_was_trained_on_the_source(
    data_dir: Path, tmp_path: Path, capsys
):
    """The shipped model was trained on every shared scene; a new file it has never seen."""
    from edge_had.cli import main

    seen = data_dir / "abu-urban-2.mat"
    unseen = tmp_path / "unseen.npy"
    np.save(unseen, load_scene(seen).cube[:40, :50])
    reports = {}
    for name, source in (("seen", seen), ("unseen", unseen)):
        path = tmp_path / f"{name}.json"
        assert main(["stream", "--source", str(source), "--json", str(path)]) == 0  # enhanced-rx
        reports[name] = json.loads(path.read_text())
    assert reports["seen"]["trained_on"] is True and reports["unseen"]["trained_on"] is False
    assert reports["seen"]["source_sha256"] == sha256_file(seen)
    assert reports["seen"]["detector"]["model_sha256"] == reports["unseen"]["detector"]["model_sha256"]
    printed = capsys.readouterr()  # a note, on stderr with the warnings
    assert printed.err.count("note: the model was trained on this scene") == 1
    assert "note:" not in printed.out
    plain = tmp_path / "plain.json"
    assert main(["stream", "--source", str(unseen), "--detector", "rx", "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["trained_on"] is None  # no model


def test_constant_lines_do_not_stop_the_hybrid_stream(cube) -> None:
    """Dark frames first: zero covariance, zero loading; local RX falls back to a pseudo-inverse
    instead of raising, as global RX does."""
    lines = np.concatenate([np.full((12, 28, 12), 7.0), cube[:20]])
    finals = []
    pipeline = StreamPipeline(
        28, 12, settings=CausalSettings(warmup_lines=4), scorer="hybrid", on_result=finals.append
    )
    for row, line in enumerate(lines):
        pipeline.push(line, row, float(row))
    pipeline.finish()
    assert pipeline.health.lines_scored == len(lines) and pipeline.health.to_dict()["accounting_ok"]
    assert all(np.isfinite(result.scores).all() for result in finals)
