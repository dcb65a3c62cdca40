"""The command line under bad options, unwritable outputs, degenerate inputs and Ctrl-C: a clear
usage error or message and the outputs kept, never a silent default or a traceback (a review
found each of these broken)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from edge_had.cli import main

SMALL_STREAM = ["stream", "--source", "synthetic", "--detector", "rx", "--width", "32", "--bands", "16"]


@pytest.mark.parametrize(
    ("argv", "option", "says"),
    [
        ([*SMALL_STREAM, "--pfa", "2"], "--pfa", "not strictly between 0 and 1"),
        ([*SMALL_STREAM, "--pfa", "0"], "--pfa", "not strictly between 0 and 1"),
        ([*SMALL_STREAM, "--line-rate", "0"], "--line-rate", "not above 0"),
        ([*SMALL_STREAM, "--line-rate", "-10"], "--line-rate", "not above 0"),
        (["stream", "--source", "synthetic", "--width", "0"], "--width", "below 1"),
        ([*SMALL_STREAM, "--fault-rate", "2"], "--fault-rate", "not in [0, 1]"),
        ([*SMALL_STREAM, "--reorder-window", "-3"], "--reorder-window", "below 0"),
        ([*SMALL_STREAM, "--lines", "ten"], "--lines", "is not an integer"),
        ([*SMALL_STREAM, "--counter-bits", "7"], "--counter-bits", "below 8"),
        (["detect", "x.npy", "--detector", "lrx", "--regularization", "-1"], "--regularization", "below 0"),
        (
            ["detect", "x.npy", "--detector", "rx", "--regularization", "nan"],
            "--regularization",
            "not a finite",
        ),
        (["detect", "x.npy", "--detector", "lrx", "--components", "-3"], "--components", "below 0"),
        (["detect", "x.npy", "--onnx", "nope.onnx"], "--onnx", "no such file"),
        ([*SMALL_STREAM, "--engine", "nope.engine"], "--engine", "no such file"),
    ],
)
def test_out_of_range_options_are_usage_errors(argv, option, says, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}" in error and says in error, error


@pytest.mark.parametrize(
    ("command", "options", "named"),
    [
        ("detect", ["--detector", "rx", "--model", "my-model"], "--model"),
        (
            "detect",
            ["--detector", "hybrid-rx", "--backend", "torch", "--fusion", "product"],
            "--backend --fusion",
        ),
        ("eval", ["--detector", "lrx", "--net-precision", "fp16"], "--net-precision"),
        ("stream", ["--detector", "rx", "--device", "cuda"], "--device"),
        ("stream", ["--detector", "hybrid-rx", "--model", "m", "--async-enhance"], "--model --async-enhance"),
    ],
)
def test_network_options_for_a_detector_without_a_network_are_refused(
    command, options, named, scene: Path, tmp_path: Path, capsys
) -> None:
    """`detect --detector rx --model X` ran and ignored the model (found by an audit of the
    README's commands); now every such option is named in the error."""
    target = {"detect": [str(scene)], "eval": ["--data", str(tmp_path)], "stream": ["--source", "synthetic"]}
    assert main([command, *target[command], *options]) == 2
    error = capsys.readouterr().err
    assert f"{named}: only enhanced-* detectors use them" in error, error


@pytest.mark.parametrize("command", ["detect", "eval", "stream"])
def test_the_network_options_defaults_are_the_parsers(command) -> None:
    """network_options_given compares with copied defaults: a parser default changed alone would
    refuse every plain-RX run (or let a set option pass)."""
    from edge_had.cli import build_parser
    from edge_had.cli_types import NETWORK_OPTIONS

    argv = {"detect": [command, "x.npy"], "eval": [command], "stream": [command, "--source", "synthetic"]}
    args = build_parser().parse_args(argv[command])
    for name, default in NETWORK_OPTIONS.items():
        assert getattr(args, name, default) == default, (command, name)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "scene.npy"
    np.save(path, rng.normal(100.0, 5.0, (20, 16, 8)))
    return path


def test_detect_names_the_file_np_save_wrote(scene: Path, tmp_path: Path, capsys) -> None:
    assert main(["detect", str(scene), "--detector", "rx", "--npy", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext.npy").is_file()
    assert f"scores -> {tmp_path / 'noext.npy'}" in capsys.readouterr().out


def test_detect_warns_of_what_the_reader_left_out(tmp_path: Path, capsys) -> None:
    """A 2-D array that fits no pixel grid of the cube, and ground-truth pixels on invalid pixels,
    vanished from detect's output without a word."""
    from scipy.io import savemat

    cube = np.random.default_rng(0).normal(100.0, 5.0, (20, 16, 8))
    cube[0] = np.nan
    gt = np.zeros((20, 16), np.uint8)
    gt[0, 3] = gt[9, 9] = 1
    savemat(tmp_path / "s.mat", {"data": cube, "map": gt, "crop_map": np.zeros((7, 3))})
    assert main(["detect", str(tmp_path / "s.mat"), "--detector", "rx"]) == 0
    err = capsys.readouterr().err
    assert "warning: s: 2-D array crop_map (7x3) does not fit the cube's 20x16 pixels" in err
    assert (
        "warning: s: 1 of 2 ground-truth pixels are invalid (NaN, Inf or no-data): left out of the AUC" in err
    )


def test_detect_warns_when_no_pixel_can_stand_out(tmp_path: Path, capsys) -> None:
    """64 pixels of 100 bands: a singular covariance, every pixel (the anomaly too) scored the same,
    and nothing said."""
    rng = np.random.default_rng(0)
    cube = rng.normal(100.0, 5.0, (8, 8, 100))
    cube[3, 3] = cube[3, 3][::-1] * 3
    np.save(tmp_path / "tiny.npy", cube)
    assert main(["detect", str(tmp_path / "tiny.npy"), "--detector", "rx"]) == 0
    assert "warning: tiny: every one of the 64 valid pixels scored 63" in capsys.readouterr().err
    np.save(tmp_path / "fine.npy", rng.normal(100.0, 5.0, (20, 20, 8)))
    assert main(["detect", str(tmp_path / "fine.npy"), "--detector", "rx"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_detect_makes_the_folder_of_its_npy_as_of_its_png(scene: Path, tmp_path: Path) -> None:
    """`--npy new/s.npy` failed after scoring (no such folder), and the PNG was lost with it."""
    argv = ["detect", str(scene), "--detector", "rx", "--npy", str(tmp_path / "new" / "s.npy")]
    assert main([*argv, "--out", str(tmp_path / "other" / "map.png")]) == 0
    assert (tmp_path / "new" / "s.npy").is_file() and (tmp_path / "other" / "map.png").is_file()


def test_detect_keeps_its_outputs_when_the_ground_truth_gives_no_auc(
    scene: Path, tmp_path: Path, capsys
) -> None:
    gt = tmp_path / "gt.npy"
    np.save(gt, np.zeros((20, 16), np.uint8))  # no anomaly pixel
    argv = ["detect", str(scene), "--gt", str(gt), "--detector", "rx"]
    assert main([*argv, "--out", str(tmp_path / "map.png"), "--npy", str(tmp_path / "s.npy")]) == 0
    assert (tmp_path / "map.png").is_file() and (tmp_path / "s.npy").is_file()
    assert "AUC undefined: no anomaly pixel" in capsys.readouterr().out


def test_an_unwritable_output_is_a_clear_error(scene: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["detect", str(scene), "--detector", "rx", "--out", str(blocker / "map.png")]) == 2
    assert "edge-had detect: error:" in capsys.readouterr().err
    assert main(["demo", "--out", str(blocker)]) == 2
    assert "edge-had demo: error:" in capsys.readouterr().err


def test_a_stream_report_that_cannot_be_written_is_refused_before_streaming(tmp_path: Path, capsys) -> None:
    assert main([*SMALL_STREAM, "--lines", "20", "--json", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "is a folder, not a file" in captured.err and "lines in" not in captured.out


@pytest.mark.parametrize(("faults", "lines_in"), [("short", 20), ("all", None)])
def test_a_stream_with_no_scored_line_still_writes_its_report_and_map(
    scene: Path, tmp_path: Path, faults: str, lines_in: int | None
) -> None:
    """Every line too short (all rejected), or every fault on every line (none even arrives)."""
    out, report = tmp_path / "run", tmp_path / "report.json"
    argv = ["stream", "--source", str(scene), "--detector", "rx", "--faults", faults, "--fault-rate", "1"]
    assert main([*argv, "--out", str(out), "--json", str(report)]) == 0
    health = strict_json(report.read_text())["health"]  # e.g. no latency to summarise: still JSON
    assert health["lines_scored"] == 0 and health["accounting_ok"]
    assert lines_in is None or health["lines_in"] == health["lines_rejected"] == lines_in
    assert (out / "waterfall.png").is_file() and (out / "scores.npy").is_file()


def test_ctrl_c_finishes_the_stream_and_writes_everything(tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGINT at line 60 of 400: the lines read so far are finished and reported, exit 130."""
    import edge_had.stream.command as command

    real_source = command._source

    def interrupting_source(args):
        source = real_source(args)
        lines = source.lines

        def lines_then_ctrl_c():
            for line in lines:
                if line.index == 60:
                    os.kill(os.getpid(), signal.SIGINT)
                yield line

        source.lines = lines_then_ctrl_c()
        return source

    monkeypatch.setattr(command, "_source", interrupting_source)
    out, report = tmp_path / "run", tmp_path / "report.json"
    assert main([*SMALL_STREAM, "--lines", "400", "--out", str(out), "--json", str(report)]) == 130
    written = json.loads(report.read_text())
    assert written["interrupted"] and written["health"]["accounting_ok"]
    assert (
        60 <= written["health"]["lines_in"] <= 61
        and written["health"]["lines_scored"] == written["health"]["lines_in"]
    )
    assert (out / "scores.npy").is_file() and (out / "events.jsonl").is_file()
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_detect_says_when_the_model_was_trained_on_the_scene(data_dir: Path, capsys) -> None:
    scene = data_dir / "abu-beach-3.mat"  # one of the shipped model's training scenes
    assert main(["detect", str(scene), "--detector", "enhanced-rx", "--backend", "torch"]) == 0
    printed = capsys.readouterr()  # a note, on stderr: stdout holds the results alone
    assert "note: the model was trained on this scene" in printed.err and "note:" not in printed.out


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as non-Python readers do."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_reports_are_strict_json(tmp_path: Path) -> None:
    from edge_had.eval.report import write_json

    path = write_json(
        {"auc": float("nan"), "rates": [1.5, float("inf"), -float("inf")], "n": 3}, tmp_path / "r.json"
    )
    assert strict_json(path.read_text()) == {"auc": None, "rates": [1.5, None, None], "n": 3}


def test_crossval_options_are_checked_before_anything_trains(tmp_path: Path, capsys) -> None:
    assert (
        main(["crossval", "--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--variants", "bogus"]) == 2
    )
    assert "unknown variant(s) bogus; choose from main" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # 0 epochs used to mean "the default" silently
        main(["crossval", "--out", str(tmp_path / "cv"), "--epochs", "0"])
    assert "argument --epochs: 0 is below 1" in capsys.readouterr().err


def test_a_sensor_outside_the_models_wavelength_range_is_a_clear_error(tmp_path: Path, capsys) -> None:
    """A thermal-infrared file through the shipped model: named, not a near-constant cube scored."""
    from spectral import envi

    header = tmp_path / "thermal.hdr"
    cube = np.random.default_rng(0).normal(size=(12, 10, 32)).astype(np.float32)
    wavelengths = [f"{w:.1f}" for w in np.linspace(8000.0, 12000.0, 32)]
    metadata = {"wavelength": wavelengths, "wavelength units": "nm"}
    envi.save_image(str(header), cube, metadata=metadata, ext=".img")
    assert main(["detect", str(header), "--detector", "enhanced-rx"]) == 2
    error = capsys.readouterr().err
    assert "8000-12000 nm, which holds none of the 64 canonical wavelengths" in error
    assert "Traceback" not in error
    assert main(["detect", str(header), "--detector", "rx"]) == 0  # plain RX needs no adapter


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--detector", "lrx", "--precision", "float32"], "lrx does not use --precision (rx only)"),
        (["--detector", "rx", "--components", "3"], "rx does not use --components (detectors with a local"),
        (["--detector", "resampled-rx", "--outer", "9", "--inner", "3"], "does not use --inner (detectors"),
    ],
)
def test_scorer_options_a_detector_ignores_are_refused(options, says, scene: Path, capsys) -> None:
    """`detect --detector lrx --precision float32` ran and ignored the precision (an audit)."""
    assert main(["detect", str(scene), *options]) == 2
    assert says in capsys.readouterr().err


def test_the_resampled_hybrid_baseline_takes_the_local_window(scene: Path, capsys) -> None:
    """resampled-hybrid-rx is enhanced-hybrid-rx's baseline: the window options now reach it."""
    from edge_had.detectors.enhanced import ResampledRXDetector
    from edge_had.detectors.lrx import LocalRXSettings

    scores = scene.parent / "scores.npy"
    assert (
        main(
            ["detect", str(scene), "--detector", "resampled-hybrid-rx", "--outer", "9", "--npy", str(scores)]
        )
        == 0
    )
    assert "'outer': 9" in capsys.readouterr().out
    cube = np.load(scene)
    expected = ResampledRXDetector(scorer="hybrid", lrx=LocalRXSettings(outer=9)).score(cube)
    np.testing.assert_allclose(np.load(scores), expected, rtol=1e-4)  # (the file is read as float32)
    assert not np.allclose(ResampledRXDetector(scorer="hybrid").score(cube), expected, rtol=1e-3)


def test_output_paths_are_checked_before_the_run(scene: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A `.jpg` map name (PNG bytes were written into it) or a folder as the JSON report is
    refused before anything is scored (eval used to find out after the whole folder)."""
    import edge_had.eval.protocol as protocol

    def must_not_run(*args, **kwargs):
        raise AssertionError("scored before the output path was checked")

    monkeypatch.setattr(protocol, "evaluate_folder", must_not_run)
    monkeypatch.setattr(protocol, "score_scene", must_not_run)
    assert main(["detect", str(scene), "--detector", "rx", "--out", str(tmp_path / "map.jpg")]) == 2
    assert "map.jpg: the file is written as PNG; name it .png" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path), "--detector", "rx", "--json", str(tmp_path)]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err


def test_a_given_onnx_that_does_not_fit_is_warned_about_when_auto_goes_on_without_it(
    scene: Path, tmp_path: Path, untrained_bundle, capsys
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from edge_had.build.onnx_export import export_onnx
    from edge_had.models import load_bundle

    model = untrained_bundle(seed=1, k=16, hidden=8, blocks=2)
    graph = export_onnx(load_bundle(model), 12, tmp_path / "b12.onnx")  # the scene has 8 bands
    assert main(["detect", str(scene), "--model", str(model), "--onnx", str(graph)]) == 0
    error = capsys.readouterr().err
    assert "warning: onnxruntime did not run, torch ran instead" in error
    assert "it takes 12 bands, the scene has 8" in error


def test_a_line_index_that_is_not_an_integer_is_a_type_error_and_not_counted() -> None:
    from edge_had.stream.pipeline import StreamPipeline

    pipeline = StreamPipeline(4, 3)
    pipeline.push(np.ones((4, 3)), np.int64(0), 0.0)
    with pytest.raises(TypeError, match="index must be an integer .* got str '24'"):
        pipeline.push(np.ones((4, 3)), "24", 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got float 2.0"):
        pipeline.drop(2.0, 0.0)  # type: ignore[arg-type]
    pipeline.finish()
    health = pipeline.report()["health"]
    assert health["lines_in"] == 1 and health["accounting_ok"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--fault-rate", "0.5"], "--fault-rate: only with --faults"),
        (["--fault-seed", "3"], "--fault-seed: only with --faults"),
        (["--faults", "bands,typo"], "--faults: unknown faults ['typo']"),
    ],
)
def test_stream_fault_options_are_checked_before_anything_runs(capsys, monkeypatch, options, message) -> None:
    """Fault options without --faults gave a clean run and "faults": null; an unknown fault name
    was refused only after the source was drawn and the model built (a review)."""
    import edge_had.stream.command as command

    monkeypatch.setattr(command, "_run_stream", lambda *a: pytest.fail("the stream started"))
    assert main(["stream", "--source", "synthetic", "--lines", "40", "--detector", "rx", *options]) == 2
    assert message in capsys.readouterr().err


def test_stream_event_threshold_follows_a_new_band_count(tmp_path: Path) -> None:
    """A plain-RX stream whose lines change band count restarts its statistics in the new count;
    the event threshold kept the old degrees of freedom (chi2(16) for 15 scored bands)."""
    from edge_had.stream.events import chi2_threshold

    report = tmp_path / "r.json"
    argv = ["stream", "--source", "synthetic", "--lines", "200", "--width", "64", "--bands", "16",
            "--detector", "rx", "--faults", "bands", "--fault-rate", "1", "--json", str(report)]  # fmt: skip
    main(argv)
    result = json.loads(report.read_text())
    assert result["health"]["reinitialisations"] >= 1 and result["reduced_bands"] != 16
    assert result["events"]["threshold"] == pytest.approx(chi2_threshold(result["reduced_bands"]), rel=1e-12)


@pytest.mark.parametrize("detector", ["rx", "enhanced-rx"])
def test_the_reports_detector_record_follows_a_new_band_count(tmp_path: Path, detector: str) -> None:
    """Every line of a 40-band synthetic stream loses its last band: after 8 such lines the stream
    re-initialises for 39 bands (plain RX on 32 of them, resampled on band index: the 40
    wavelengths no longer fit). The report's detector record kept describing the 40-band start."""
    report = tmp_path / "r.json"
    argv = ["stream", "--source", "synthetic", "--lines", "60", "--width", "32", "--bands", "40",
            "--detector", detector, "--backend", "torch", "--faults", "bands", "--fault-rate", "1",
            "--json", str(report)]  # fmt: skip
    if detector == "rx":
        argv.remove("--backend"), argv.remove("torch")
    assert main(argv) == 0
    result = json.loads(report.read_text())
    record = result["detector"]
    assert result["health"]["reinitialisations"] == 1 and record["name"] == detector
    change = {"sequence": 7, "bands": 39, "reduced_bands": 32, "resampling": "band_index"}
    assert record["band_changes"] == [change]
    assert (record["sensor_bands"], record["reduced_bands"], record["resampling"]) == (39, 32, "band_index")
    assert result["reduced_bands"] == 32


def test_a_long_synthetic_stream_writes_its_video_and_says_what_it_does_not_write(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Past KEEP_LINES no score map is kept: scores.npy, waterfall.png and waterfall.mp4 were all
    skipped without a word (the video streams and needs none), and an earlier run's map stayed."""
    pytest.importorskip("cv2", reason="OpenCV is not installed")
    import edge_had.stream.command as command

    monkeypatch.setattr(command, "KEEP_LINES", 40)
    out = tmp_path / "run"
    out.mkdir()
    (out / "scores.npy").write_bytes(b"an earlier run's")
    argv = ["stream", "--source", "synthetic", "--lines", "64", "--width", "32", "--bands", "8"]
    assert main([*argv, "--detector", "rx", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["events.jsonl", "waterfall.mp4"]
    printed = capsys.readouterr()
    assert "note: a synthetic stream of over 40 lines keeps no score map" in printed.err
    assert "note:" not in printed.out


def test_a_long_synthetic_stream_renders_a_bounded_set_of_strips_before_it_starts(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A long synthetic stream rendered each new strip inside the timed, paced loop (~1,500
    instead of ~8,000 lines/s at 256 x 64; at FX10 size a strip takes longer than its lines'
    budget, and the paced drops were blamed on overload). Now: a bounded set, rendered first."""
    import edge_had.stream.command as command
    import edge_had.stream.sources as sources

    monkeypatch.setattr(command, "KEEP_LINES", 40)
    monkeypatch.setattr(command, "SOAK_STRIP_LINES", 16)
    monkeypatch.setattr(command, "SOAK_STRIP_BYTES", 3 * 16 * 32 * 8 * 4)  # room for three strips
    made = []
    real = sources.synthetic_lines
    monkeypatch.setattr(sources, "synthetic_lines", lambda *a, **k: made.append(k) or real(*a, **k))
    report = tmp_path / "r.json"
    argv = ["stream", "--source", "synthetic", "--lines", "100", "--width", "32", "--bands", "8"]
    assert main([*argv, "--detector", "rx", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["synthetic_strips"] == {"distinct": 3, "lines": 16, "rendered_before_the_stream": True}
    assert made[0]["distinct_strips"] == 3 and result["health"]["lines_in"] == 100
    printed = capsys.readouterr()
    assert "note: 3 synthetic strip(s) of 16 lines rendered first" in printed.err
    assert "note:" not in printed.out
    monkeypatch.setattr(command, "SOAK_STRIP_BYTES", 1)  # not even one strip fits: one, still
    assert main([*argv, "--lines", "41", "--detector", "rx", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["synthetic_strips"]["distinct"] == 1


def test_a_stream_that_loses_its_last_line_still_reports_its_auc(tmp_path: Path) -> None:
    """The AUC and false-event count vanished from the report when the one line lost was the
    last (the map's rows were counted up to the last line seen), not when any other was."""
    from edge_had.stream.faults import faulty_lines
    from edge_had.stream.sources import scene_lines

    lines = 60
    seed = next(  # a fault seed whose drops take the last line
        s
        for s in range(200)
        if lines - 1
        not in [
            line.index
            for line in faulty_lines(
                scene_lines(np.zeros((lines, 1, 1)), 330.0), ("drop",), rate=0.05, seed=s
            )
        ]
    )
    report = tmp_path / "r.json"
    argv = ["stream", "--source", "synthetic", "--lines", str(lines), "--width", "64", "--bands", "16"]
    faults = ["--faults", "drop", "--fault-rate", "0.05", "--fault-seed", str(seed)]
    assert main([*argv, "--detector", "rx", *faults, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["health"]["lines_in"] < lines and 0.5 < result["auc"] <= 1.0
    assert "false" in result["events"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--counter-bits", "65"], "a line counter has 8 to 64 bits"),
        (["--counter-bits", "8", "--reorder-window", "32"], "too few for a reorder window of 32"),
    ],
)
def test_a_counter_width_the_stream_cannot_follow_is_an_error_before_the_stream(
    options, says, capsys
) -> None:
    assert main([*SMALL_STREAM, "--lines", "20", *options]) == 2
    error = capsys.readouterr().err
    assert "--counter-bits" in error and says in error and "Traceback" not in error, error
