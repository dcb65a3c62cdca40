"""Plots write valid PNG files, without pyplot and without a GUI; reports say where they were made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_had.eval import roc_auc, roc_curve
from edge_had.eval.plots import save_roc_png, save_score_map_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 2000


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    gt = np.zeros((40, 50), bool)
    gt[10:14, 20:25] = True
    gt[30:32, 5:7] = True
    scores = rng.gamma(2.0, size=gt.shape) + 4.0 * gt
    return scores, gt


def test_save_roc_png(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    scores, gt = scene
    fpr, tpr, _ = roc_curve(scores, gt)
    curves = {"rx": (fpr, tpr, roc_auc(scores, gt)), "noise": (np.array([0.0, 1.0]), np.array([0.0, 1.0]))}
    for log_far in (False, True):
        out = save_roc_png(curves, tmp_path / f"roc_{log_far}.png", title="ROC", log_far=log_far)
        assert out == tmp_path / f"roc_{log_far}.png"
        assert_png(out)


def test_save_roc_png_rejects_bad_curve(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fpr, tpr"):
        save_roc_png({"bad": (np.zeros(2),)}, tmp_path / "bad.png")


def test_save_score_map_png_with_and_without_gt(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    scores, gt = scene
    plain = save_score_map_png(scores, tmp_path / "plain.png", title="scores")
    with_gt = save_score_map_png(scores, tmp_path / "sub" / "with_gt.png", gt=gt, title="scores + gt")
    assert_png(plain)
    assert_png(with_gt)
    assert with_gt.stat().st_size != plain.stat().st_size


def test_save_score_map_png_tolerates_nan_and_empty_gt(tmp_path: Path) -> None:
    scores = np.arange(30, dtype=float).reshape(5, 6)
    scores[0, 0] = np.nan
    assert_png(save_score_map_png(scores, tmp_path / "nan.png", gt=np.zeros((5, 6), bool)))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("shape", [(0, 16), (16, 0)])
def test_save_score_map_png_of_an_empty_map_says_so_without_a_warning(tmp_path: Path, shape) -> None:
    """A stream with no line scored writes a waterfall too: a PNG that says nothing was scored,
    not matplotlib's singular-limits warning on the user's terminal."""
    assert_png(save_score_map_png(np.zeros(shape), tmp_path / "empty.png"))
    assert_png(save_score_map_png(np.zeros(shape), tmp_path / "empty_gt.png", gt=np.zeros(shape, bool)))


@pytest.mark.parametrize(
    ("shape", "target"), [((1, 5), (0, 2)), ((6, 1), (4, 0)), ((1, 1), (0, 0)), ((3, 4), (0, 3))]
)
def test_a_target_is_outlined_on_a_map_one_pixel_thin(tmp_path: Path, shape, target) -> None:
    """A 1-line stream, 1-pixel-wide lines or a stream stopped after its first line: contour refuses
    maps under 2 x 2, and ``stream`` crashed after its run without a waterfall. The outline of one
    target pixel spans that pixel's square (half way to its neighbours' centres), on any map; the
    view stays on the map."""
    from edge_had.eval.plots import _draw_outline, _new_figure

    gt = np.zeros(shape, bool)
    gt[target] = True
    assert_png(save_score_map_png(np.ones(shape), tmp_path / "thin.png", gt=gt))
    ax = _new_figure(4.0, 4.0).add_subplot()
    ax.imshow(np.zeros(shape))
    view = ax.get_xlim(), ax.get_ylim()
    _draw_outline(ax, gt)
    points = np.concatenate([path.vertices for path in ax.collections[-1].get_paths()])
    row, col = target
    np.testing.assert_allclose(points.min(axis=0), [col - 0.5, row - 0.5])
    np.testing.assert_allclose(points.max(axis=0), [col + 0.5, row + 0.5])
    assert (ax.get_xlim(), ax.get_ylim()) == view == ((-0.5, shape[1] - 0.5), (shape[0] - 0.5, -0.5))


def test_unlabelled_pixels_are_grey_in_the_ground_truth_panel(tmp_path: Path) -> None:
    """They were drawn as background (a review)."""
    from edge_had.eval.plots import ground_truth_image

    gt = np.array([[0, 1, 0], [0, 0, 1]], bool)
    labelled = np.array([[1, 1, 0], [1, 1, 1]], bool)
    assert ground_truth_image(gt, labelled).tolist() == [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]
    assert ground_truth_image(gt).tolist() == gt.astype(float).tolist()
    assert_png(save_score_map_png(np.ones(gt.shape), tmp_path / "grey.png", gt=gt, labelled=labelled))


def test_save_score_map_png_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        save_score_map_png(np.zeros((2, 3, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        save_score_map_png(np.zeros((2, 3)), tmp_path / "x.png", gt=np.zeros((3, 2), bool))


def test_eval_package_does_not_import_matplotlib_or_pyplot() -> None:
    code = (
        "import sys, edge_had.eval; assert 'matplotlib' not in sys.modules; "
        "import edge_had.eval.plots; assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_platform_info_records_jetson_facts_from_the_board(tmp_path, monkeypatch) -> None:
    import os
    import stat

    from edge_had.eval.report import jetson_info, platform_info

    assert jetson_info(tmp_path) == {}  # not a Jetson
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1\nmore\n")
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "nvpmodel": "echo 'NV Power Mode: MAXN'; echo 0",
        "jetson_clocks": "echo 'cpu0: Online=1 MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600'",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    info = jetson_info(tmp_path)
    assert info == {
        "l4t_release": "# R36 (release), REVISION: 4.0, GCID: 1",
        "module": "NVIDIA Jetson AGX Orin Developer Kit",
        "power_mode": "NV Power Mode: MAXN 0",
        "jetson_clocks": True,
    }
    here = platform_info()
    assert here["cpu_count"] >= 1 and "torch" in here["versions"] and "gpu" in here
