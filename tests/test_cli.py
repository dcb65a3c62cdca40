"""The edge-had command line, end to end on small files made here."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.io import savemat

from edge_had.cli import main
from edge_had.detectors import rx_reference
from edge_had.detectors.registry import make_detector
from edge_had.eval.metrics import roc_auc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_scene(seed: int, rows: int = 24, cols: int = 20, bands: int = 8):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 5.0, (rows, cols, bands)) + np.linspace(0, 20, bands)
    gt = np.zeros((rows, cols), dtype=np.uint8)
    gt[5, 7] = gt[15, 3] = 1
    cube[gt != 0] += rng.normal(0, 25.0, (2, bands))
    return cube, gt


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "detect", "eval", "demo"):
        assert command in out


def test_info_reports_backends_and_why_not(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out and "tensorrt" in out and "data:" in out
    # the platform record reads torch's threads only once torch is loaded: a fresh `edge-had info`
    # printed None (a review); in a process of its own, as a user runs it
    fresh = subprocess.run(
        [sys.executable, "-m", "edge_had", "info"], capture_output=True, text=True, check=True
    )
    assert re.search(r"torch_threads +[1-9][0-9]*\n", fresh.stdout), fresh.stdout
    from edge_had.train.numerics import fingerprint_at

    assert f"training numerics: fingerprint {fingerprint_at(1)} at 1 thread" in out


def test_detect_writes_map_and_scores_equal_to_the_oracle(tmp_path, capsys):
    cube, gt = small_scene(0)
    np.save(tmp_path / "cube.npy", cube)
    np.save(tmp_path / "gt.npy", gt)
    png, npy = tmp_path / "map.png", tmp_path / "scores.npy"
    argv = ["detect", str(tmp_path / "cube.npy"), "--gt", str(tmp_path / "gt.npy"), "--out", str(png)]
    assert main([*argv, "--detector", "rx", "--npy", str(npy)]) == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    expected = rx_reference(cube.astype(np.float32))
    np.testing.assert_allclose(np.load(npy), expected, rtol=1e-10)
    assert f"AUC {roc_auc(expected, gt != 0):.4f}" in capsys.readouterr().out


def test_detect_defaults_to_the_shipped_enhancement_then_rx(tmp_path, capsys):
    cube, gt = small_scene(0)
    np.save(tmp_path / "cube.npy", cube)
    npy = tmp_path / "scores.npy"
    assert main(["detect", str(tmp_path / "cube.npy"), "--npy", str(npy)]) == 0
    assert "enhanced-rx" in capsys.readouterr().out
    valid = np.ones(gt.shape, dtype=bool)
    expected = make_detector("enhanced-rx").score(cube.astype(np.float32), valid, None)
    np.testing.assert_allclose(np.load(npy), expected, rtol=1e-6)
    assert not np.allclose(np.load(npy), rx_reference(cube.astype(np.float32)), rtol=1e-3)  # not plain RX


def test_detect_missing_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.mat"
    assert main(["detect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "nowhere.mat" in err and "Traceback" not in err


def test_eval_writes_versioned_report_for_every_scene(tmp_path, capsys):
    for seed in (1, 2):
        cube, gt = small_scene(seed)
        savemat(tmp_path / f"scene-{seed}.mat", {"data": cube.astype(np.int16), "map": gt})
    out = tmp_path / "report.json"
    argv = ["eval", "--data", str(tmp_path), "--detector", "lrx", "--inner", "3", "--outer", "7"]
    assert main([*argv, "--quiet", "--json", str(out), "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    assert report["detector"]["name"] == "lrx" and report["detector"]["outer"] == 7
    assert [scene["name"] for scene in report["scenes"]] == ["scene-1", "scene-2"]
    assert (tmp_path / "plots" / "roc.png").read_bytes()[:8] == PNG_SIGNATURE
    table = capsys.readouterr().out
    assert "scene-1" in table and "mean" in table


def test_eval_skips_what_it_cannot_evaluate_and_says_why(tmp_path, capsys):
    """One unusable file (no anomaly in its map, no ground truth, a scores.npy left by `detect`)
    failed the whole run with no report; two files of one stem overwrote each other's plots; and
    ground-truth pixels on invalid pixels left the AUC without a word."""
    import h5py

    cube, gt = small_scene(1)
    cube[0, :, :] = np.nan  # a NaN first line ...
    gt[0, 4] = 1  # ... holding one ground-truth pixel
    savemat(tmp_path / "x.mat", {"data": cube, "map": gt})
    with h5py.File(tmp_path / "x.h5", "w") as handle:  # the same stem, another file
        handle["cube"], handle["gt"] = small_scene(2)
    savemat(tmp_path / "empty.mat", {"data": small_scene(3)[0], "map": np.zeros_like(gt)})
    np.save(tmp_path / "nogt.npy", small_scene(4)[0])
    np.save(tmp_path / "scores.npy", np.zeros((24, 20)))
    out = tmp_path / "report.json"
    argv = ["eval", "--data", str(tmp_path), "--detector", "rx", "--quiet", "--json", str(out)]
    assert main([*argv, "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads(out.read_text())
    assert [(scene["name"], scene["file"]) for scene in report["scenes"]] == [("x", "x.h5"), ("x", "x.mat")]
    assert [s["file"] for s in report["skipped"]] == ["empty.mat", "nogt.npy", "scores.npy"]
    errors = {s["file"]: s["error"] for s in report["skipped"]}
    assert "empty.mat: cannot evaluate: no anomaly pixel" in errors["empty.mat"]
    assert "nogt.npy: no ground truth" in errors["nogt.npy"]
    assert "or the one beside the file: nogt_gt.npy or nogt_gt.hdr" in errors["nogt.npy"]  # the way
    entry = report["scenes"][1]
    assert (entry["anomaly_pixels"], entry["anomaly_pixels_invalid"]) == (3, 1)
    assert entry["wavelengths_known"] is False  # a .mat without band centres: band index
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "roc.png",
        "x.h5_rx.png",
        "x.mat_rx.png",
    ]
    err = capsys.readouterr().err
    assert "warning: x: 1 of 3 ground-truth pixels are invalid" in err
    assert err.count("warning: not evaluated:") == 3
    for name in ("x.mat", "x.h5", "empty.mat"):
        (tmp_path / name).unlink()
    assert main(argv) == 2  # nothing left to evaluate: an error, with each reason
    assert "no scene could be evaluated" in capsys.readouterr().err


def test_eval_skips_a_sensor_the_model_cannot_resample(tmp_path, capsys):
    """A thermal file among the scenes (no canonical wavelength in 8-12 um) stopped the whole
    enhanced eval with an error naming no file."""
    import h5py

    cube, gt = small_scene(1)
    savemat(tmp_path / "vnir.mat", {"data": cube, "map": gt})
    with h5py.File(tmp_path / "thermal.h5", "w") as handle:
        handle["cube"], handle["gt"] = small_scene(2)
        handle["wavelength"] = np.linspace(8000.0, 12000.0, 8)
    out = tmp_path / "report.json"
    assert (
        main(["eval", "--data", str(tmp_path), "--detector", "enhanced-rx", "--quiet", "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert [scene["file"] for scene in report["scenes"]] == ["vnir.mat"]
    (skipped,) = report["skipped"]
    assert skipped["file"] == "thermal.h5" and "thermal.h5: cannot score with enhanced-rx" in skipped["error"]


def test_eval_of_a_folder_without_scenes_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path), "--quiet"]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_demo_runs_on_synthetic_data(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "demo_rx_map.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "AUC" in capsys.readouterr().out


def test_plain_detectors_run_without_torch_and_enhanced_ones_say_they_need_it(tmp_path):
    """On a Jetson without torch (TensorRT alone), plain `stream --detector rx` crashed with an
    ImportError traceback: the band reduction imported the torch adapter for its numpy matrix."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge_had.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    stream = ["stream", "--source", "synthetic", "--lines", "40", "--width", "16", "--bands", "12"]
    for detector in ("rx", "hybrid-rx"):
        done = subprocess.run([sys.executable, "-c", blocker, *stream, "--detector", detector],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0 and "AUC" in done.stdout, done.stderr[-600:]
    done = subprocess.run(
        [sys.executable, "-c", blocker, *stream], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "this needs torch" in done.stderr and "hybrid-rx" in done.stderr


def test_import_is_light():
    """`import edge_had`, its CPU modules and the CLI's parser never pull torch, ONNX Runtime,
    TensorRT or pycuda (so `edge-had --help`, `info` and plain RX start fast on a Jetson)."""
    code = (
        "import sys, edge_had, edge_had.io, edge_had.detectors, edge_had.eval, edge_had.cli\n"
        "edge_had.cli.build_parser()\n"
        "heavy = {'torch', 'onnxruntime', 'tensorrt', 'pycuda', 'matplotlib', 'cv2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_dash_m_runs_the_command_line():
    """`python -m edge_had` is the `edge-had` command (the GPU check runs it so, with nothing
    installed): same version line, and a usage error exits 2."""
    import edge_had

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_had", *args], capture_output=True, text=True)

    done, wrong = run("--version"), run("no-such-command")
    assert done.returncode == 0 and edge_had.__version__ in done.stdout + done.stderr
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def test_detect_eval_and_stream_read_a_bands_first_file_with_interleave(tmp_path, capsys):
    """A .mat cube stored (bands, rows, cols) is refused with the way out; with --interleave bsq
    it scores as the same cube stored bands-last (detect, eval and stream alike)."""
    cube, gt = small_scene(2)
    savemat(tmp_path / "last.mat", {"data": cube, "map": gt})
    folder = tmp_path / "first"
    folder.mkdir()
    savemat(folder / "first.mat", {"data": np.moveaxis(cube, -1, 0), "map": gt})
    first, last = str(folder / "first.mat"), str(tmp_path / "last.mat")
    assert main(["detect", first, "--detector", "rx"]) == 2
    assert "--interleave bsq" in capsys.readouterr().err
    for path, extra in [(first, ["--interleave", "bsq"]), (last, [])]:
        npy = tmp_path / f"{len(extra)}.npy"
        assert main(["detect", path, "--detector", "rx", "--npy", str(npy), *extra]) == 0
        # the reading is said with the scene's size: the override, else the default
        assert f"8 bands, read as {'bsq' if extra else 'bip'}, 0 masked px" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "2.npy"), np.load(tmp_path / "0.npy"))
    report = tmp_path / "eval.json"
    argv = ["eval", "--data", str(folder), "--detector", "rx", "--quiet", "--json", str(report)]
    assert main([*argv, "--interleave", "bsq"]) == 0
    expected = roc_auc(np.load(tmp_path / "0.npy"), gt != 0)
    (entry,) = json.loads(report.read_text())["scenes"]
    assert entry["auc"] == pytest.approx(expected, abs=1e-12) and entry["interleave"] == "bsq"
    stream = ["stream", "--detector", "rx", "--reorder-window", "0"]
    for path, extra in [(first, ["--interleave", "bsq"]), (last, [])]:
        out = tmp_path / f"s{len(extra)}"
        argv = [*stream, "--source", path, "--out", str(out), "--json", str(out / "report.json")]
        assert main([*argv, *extra]) == 0
        assert json.loads((out / "report.json").read_text())["interleave"] == ("bsq" if extra else "bip")
    np.testing.assert_array_equal(
        np.load(tmp_path / "s2" / "scores.npy"), np.load(tmp_path / "s0" / "scores.npy")
    )
    capsys.readouterr()
    assert main(["stream", "--source", "synthetic", "--lines", "8", "--interleave", "bsq"]) == 2
    assert "--interleave: only for a file --source" in capsys.readouterr().err


def test_detect_eval_and_stream_record_an_envi_headers_interleave(tmp_path, capsys):
    """An ENVI file says its own layout: detect and stream record the header's (BIL here). eval
    scores files with a ground truth (.mat, .h5) and records the default, bip, without the option;
    a stream from the synthetic source, read from no file, records none."""
    from spectral import envi

    cube, gt = small_scene(3)
    header = tmp_path / "scene.hdr"
    envi.save_image(str(header), cube.astype(np.float32), interleave="bil", ext=".img")
    assert main(["detect", str(header), "--detector", "rx"]) == 0
    assert "24 lines x 20 px x 8 bands, read as bil, 0 masked px" in capsys.readouterr().out
    folder = tmp_path / "data"
    folder.mkdir()
    savemat(folder / "s.mat", {"data": cube, "map": gt})
    report = tmp_path / "eval.json"
    assert main(["eval", "--data", str(folder), "--detector", "rx", "--quiet", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["scenes"][0]["interleave"] == "bip"
    stream = ["stream", "--detector", "rx", "--json", str(report)]
    assert main([*stream, "--source", str(header)]) == 0
    assert json.loads(report.read_text())["interleave"] == "bil"
    assert main([*stream, "--source", "synthetic", "--lines", "16", "--width", "16", "--bands", "8"]) == 0
    assert json.loads(report.read_text())["interleave"] is None


def test_the_interleave_choices_are_the_readers_layouts():
    from edge_had.cli_types import INTERLEAVES
    from edge_had.io.raw import LAYOUTS

    assert sorted(INTERLEAVES) == sorted(LAYOUTS)


def test_a_streams_notes_and_warnings_go_to_stderr_and_stdout_holds_its_summary(tmp_path):
    """The CLI's streams: results (tables, summaries, `-> path` lines) on stdout, every `note:`
    and `warning:` on stderr, so a script reading stdout gets the results alone. A stream of a
    16-line file asked for 20 lines (a note) with --show where no window can open (a warning),
    run as a user runs it."""
    from edge_had.stream.video import window_unavailable_reason

    if window_unavailable_reason() is None:
        pytest.skip("this OpenCV opens windows: --show would open one")
    cube, _ = small_scene(4, rows=16)
    np.save(tmp_path / "short.npy", cube)
    argv = ["stream", "--source", str(tmp_path / "short.npy"), "--detector", "rx", "--lines", "20"]
    done = subprocess.run(
        [sys.executable, "-m", "edge_had", *argv, "--show", "--json", str(tmp_path / "report.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "note: --lines 20: the file has 16 lines" in done.stderr
    assert "warning: --show: no live window" in done.stderr
    summary = (
        "16 lines in: 16 scored",
        "|",
        "pixels: ",
        "masking: ",
        "look-ahead: ",
        "line order: ",
        "events: ",
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith(summary[0]) and all(line.startswith(summary) for line in lines), lines


def test_every_note_and_warning_the_package_prints_goes_to_stderr():
    """A `print("note: ...")` without file=sys.stderr put a diagnostic among a command's results
    (detect's and stream's notes that the model was trained on the scene, the soak stream's
    notes did): every print whose text starts with note:/warning: names a file (stderr)."""
    import ast
    from pathlib import Path

    import edge_had

    to_stdout = []
    for path in Path(edge_had.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print" and node.args):
                continue
            first = node.args[0]
            head = first.values[0] if isinstance(first, ast.JoinedStr) and first.values else first
            text = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
            if text.startswith(("note:", "warning:")) and not any(k.arg == "file" for k in node.keywords):
                to_stdout.append(f"{path.name}:{node.lineno}")
    assert not to_stdout
