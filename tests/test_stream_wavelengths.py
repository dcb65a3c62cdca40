"""A stream resamples a file's bands on its wavelengths, as detect does: plain RX on 32 bands
evenly spaced over the sensor's own range, an enhanced stream through the model's adapter (so an
ONNX graph exported with --wavelengths fits, and a sensor outside the model's range is refused as
detect refuses it). Only a synthetic source takes --lines/--width/--bands/--seed."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from spectral import envi

from edge_had.cli import main
from edge_had.io.synthetic import synthetic_scene
from edge_had.models.adapter import SpectralAdapter
from edge_had.stream.run import band_reduction, stream_scene_scores

#: 40 bands: 30 dense in the VNIR, 10 sparse beyond (band index and wavelength resample apart)
UNEVEN = np.concatenate([np.linspace(400.0, 1000.0, 30), np.linspace(1100.0, 2400.0, 10)]).round(2)


def envi_file(folder: Path, wavelengths: np.ndarray, name: str = "scene") -> tuple[Path, np.ndarray]:
    cube = synthetic_scene(lines=48, width=24, bands=len(wavelengths), seed=5).cube
    header = folder / f"{name}.hdr"
    metadata = {"wavelength": [f"{w:.2f}" for w in wavelengths], "wavelength units": "nm"}
    envi.save_image(str(header), cube, metadata=metadata, ext=".img", force=True)
    return header, cube


def test_plain_rx_stream_resamples_on_the_files_wavelengths(tmp_path: Path) -> None:
    header, cube = envi_file(tmp_path, UNEVEN)
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--reorder-window", "0"]
    assert main([*argv, "--out", str(out), "--json", str(report)]) == 0
    streamed = np.load(out / "scores.npy")
    on_wavelengths, _ = stream_scene_scores(cube, wavelengths=UNEVEN)
    on_index, _ = stream_scene_scores(cube)
    np.testing.assert_allclose(streamed, on_wavelengths, rtol=1e-5)
    assert not np.allclose(streamed, on_index, rtol=1e-2)  # the choice matters for this sensor
    assert json.loads(report.read_text())["detector"]["resampling"] == "wavelength"


@pytest.mark.parametrize("bands", [12, 32, 40])
@pytest.mark.parametrize("known", [False, True], ids=["no-wavelengths", "wavelengths"])
def test_the_detector_record_says_what_plain_rx_did_to_the_bands(bands: int, known: bool) -> None:
    """A sensor of 32 bands or fewer is scored on its own bands: the record said 32 bands
    resampled (on wavelength when known) all the same (a review). It now says what the line
    loop does: checked against the pipeline's own reduction and scored bands."""
    from edge_had.stream.onboard import build_pipeline

    wavelengths = np.linspace(400.0, 1000.0, bands) if known else None
    with build_pipeline(16, bands, "rx", wavelengths=wavelengths) as onboard:
        reduction, scored = onboard.pipeline.reduction, onboard.pipeline.rx.bands
        record = onboard.detector
    assert (reduction is None) == (bands <= 32)
    assert record["reduced_bands"] == scored == min(bands, 32)
    if reduction is None:
        assert record["resampling"] == "none"
    else:
        assert record["resampling"] == ("wavelength" if known else "band_index")


def test_plain_rx_reduction_spans_the_sensors_own_range() -> None:
    """A VNIR sensor keeps 32 distinct bands (the model's 400-2500 nm grid would copy its last
    band into most of them), and a thermal one is reduced too: plain RX needs no canonical grid."""
    vnir = band_reduction(60, 32, np.linspace(400.0, 1000.0, 60))
    assert np.linalg.matrix_rank(vnir) == 32
    assert band_reduction(60, 32, np.linspace(8000.0, 12000.0, 60)).shape == (32, 60)
    with pytest.raises(ValueError, match="59 wavelengths for 60 bands"):
        band_reduction(60, 32, np.linspace(400.0, 1000.0, 59))


@pytest.mark.parametrize("given", ["list", "scene file"])
def test_a_graph_exported_for_the_wavelengths_streams_and_one_without_is_refused(
    tmp_path: Path, untrained_bundle, capsys, given: str
) -> None:
    """`export --wavelengths` takes a list (.txt) or the sensor's scene file itself (its header)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model = untrained_bundle(seed=1, k=16, hidden=8, blocks=2)
    header, _ = envi_file(tmp_path, UNEVEN)
    centres = tmp_path / "centres.txt"
    centres.write_text("\n".join(f"{w:.2f}" for w in UNEVEN))
    fitted, plain = tmp_path / "fitted", tmp_path / "plain"  # export folders
    export = ["export", "--model", str(model), "--bands", "40"]
    source = centres if given == "list" else header
    assert main([*export, "--out", str(fitted), "--wavelengths", str(source)]) == 0
    assert main([*export, "--out", str(plain)]) == 0
    stream = ["stream", "--source", str(header), "--model", str(model), "--backend", "onnxruntime"]
    report = tmp_path / "report.json"
    assert main([*stream, "--onnx", str(fitted / "model_fp32.onnx"), "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    assert (
        written["backend"]["backend"] == "onnxruntime" and written["detector"]["resampling"] == "wavelength"
    )
    capsys.readouterr()
    assert main([*stream, "--onnx", str(plain / "model_fp32.onnx")]) == 2
    assert "it resamples on band index, the scene needs on wavelengths 400-2400 nm" in capsys.readouterr().err


def test_an_enhanced_stream_refuses_a_sensor_outside_the_models_range_as_detect_does(
    tmp_path: Path, capsys
) -> None:
    header, _ = envi_file(tmp_path, np.linspace(8000.0, 12000.0, 32), "thermal")
    assert main(["stream", "--source", str(header)]) == 2  # enhanced-rx, the shipped model
    error = capsys.readouterr().err
    assert (
        "8000-12000 nm, which holds none of the 64 canonical wavelengths" in error
        and "Traceback" not in error
    )
    assert main(["stream", "--source", str(header), "--detector", "rx"]) == 0  # plain RX needs no grid


@pytest.mark.parametrize("option", [["--width", "8"], ["--bands", "4"], ["--seed", "3"]])  # --lines: replay
def test_synthetic_only_options_are_refused_for_a_file(tmp_path: Path, capsys, option: list[str]) -> None:
    header, _ = envi_file(tmp_path, UNEVEN)
    assert main(["stream", "--source", str(header), "--detector", "rx", *option]) == 2
    assert f"{option[0]}: only for --source synthetic" in capsys.readouterr().err


def test_export_refuses_a_scene_file_without_wavelengths(tmp_path: Path, capsys) -> None:
    mat = tmp_path / "bare.mat"
    from scipy.io import savemat

    savemat(mat, {"data": np.zeros((4, 4, 40), np.float32)})
    assert main(["export", "--bands", "40", "--out", str(tmp_path / "x"), "--wavelengths", str(mat)]) == 2
    assert "bare.mat: the file records no wavelengths" in capsys.readouterr().err


def test_resample_band_index_ignores_the_files_wavelengths_in_a_stream(tmp_path: Path) -> None:
    header, cube = envi_file(tmp_path, UNEVEN)
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--reorder-window", "0"]
    assert main([*argv, "--resample", "band-index", "--out", str(out), "--json", str(report)]) == 0
    on_index, _ = stream_scene_scores(cube)
    np.testing.assert_allclose(np.load(out / "scores.npy"), on_index, rtol=1e-5)
    assert json.loads(report.read_text())["detector"]["resampling"] == "band_index"


@pytest.mark.parametrize("command", ["stream", "detect"])
def test_a_sensor_outside_the_models_range_runs_on_band_index_when_asked(
    tmp_path: Path, capsys, command: str
) -> None:
    """The refusal names the way out, and `--resample band-index` takes it: the same scores as the
    cube in a file without wavelengths."""
    header, cube = envi_file(tmp_path, np.linspace(8000.0, 12000.0, 32), "thermal")
    bare = tmp_path / "bare.npy"
    np.save(bare, cube)
    source = ["--source"] if command == "stream" else []
    outputs = tmp_path / "with", tmp_path / "bare"
    save = (
        (lambda folder: ["--out", str(folder)])
        if command == "stream"
        else (lambda folder: ["--npy", str(folder / "scores.npy")])
    )
    assert main([command, *source, str(header)]) == 2
    assert "resample on band index (--resample band-index)" in capsys.readouterr().err
    assert main([command, *source, str(header), "--resample", "band-index", *save(outputs[0])]) == 0
    assert main([command, *source, str(bare), *save(outputs[1])]) == 0
    np.testing.assert_array_equal(np.load(outputs[0] / "scores.npy"), np.load(outputs[1] / "scores.npy"))


@pytest.mark.parametrize("detector", ["enhanced-hybrid-rx", "resampled-rx"])
def test_detect_resamples_on_band_index_when_asked(tmp_path: Path, capsys, detector: str) -> None:
    header, cube = envi_file(tmp_path, UNEVEN)
    bare = tmp_path / "bare.npy"
    np.save(bare, cube)
    scores = {}
    for name, scene, extra in [
        ("wavelength", header, []),
        ("band-index", header, ["--resample", "band-index"]),
        ("bare", bare, []),
    ]:
        npy = tmp_path / f"{name}.npy"
        assert main(["detect", str(scene), "--detector", detector, "--npy", str(npy), *extra]) == 0
        scores[name] = np.load(npy)
    assert "'resample': 'band-index'" in capsys.readouterr().out
    np.testing.assert_array_equal(scores["band-index"], scores["bare"])
    assert not np.allclose(scores["band-index"], scores["wavelength"], rtol=1e-2)


def test_bands_outside_the_models_range_are_named_where_they_are_left_out(tmp_path: Path, capsys) -> None:
    """Up to a quarter of a sensor's bands outside the model's 400-2500 nm get no weight in the
    canonical resampling, and nothing said so (a 350-1050 nm file lost 16 bands in silence): detect
    prints a note naming how many and where, the eval entry and the stream report carry it; a
    sensor inside the range, or one resampled on band index, gets none."""
    from edge_had.detectors.registry import make_detector
    from edge_had.eval.protocol import evaluate_scene
    from edge_had.io import load_scene

    header, _ = envi_file(tmp_path, np.linspace(350.0, 1050.0, 40), "wide")
    inside, _ = envi_file(tmp_path, UNEVEN, "inside")
    # 350.0, 367.9 and 385.9 nm lie below 400 nm; 385.9 carries weight (the 400 nm canonical band
    # interpolates between it and 403.8 nm: the note said all three got none, a review)
    assert SpectralAdapter.from_wavelengths(np.linspace(350.0, 1050.0, 40)).matrix[:, :3].sum(axis=0)[2] > 0.1
    note = (
        "2 of the sensor's 40 bands lie outside the model's 400-2500 nm and get no weight (2 at "
        "350.0-367.9 nm): targets seen only there are missed. To use them, resample on band index "
        "(--resample band-index) or use a plain detector (rx, hybrid-rx)"
    )
    report = tmp_path / "report.json"
    assert main(["stream", "--source", str(header), "--json", str(report)]) == 0  # enhanced-rx
    assert note in json.loads(report.read_text())["notes"]
    assert main(["detect", str(header), "--detector", "resampled-rx"]) == 0
    assert capsys.readouterr().err.count(f"warning: wide: {note}\n") == 2  # stream, detect
    scene = load_scene(header)
    scene.gt = np.zeros(scene.valid.shape, dtype=bool)
    scene.gt[0, 0] = True
    assert note in evaluate_scene(make_detector("resampled-rx"), scene)[0]["notes"]
    assert main(["detect", str(inside), "--detector", "resampled-rx"]) == 0
    assert main(["detect", str(header), "--detector", "resampled-rx", "--resample", "band-index"]) == 0
    assert "get no weight" not in capsys.readouterr().err


def hdf5_file(folder: Path, wavelengths: np.ndarray, units: str) -> Path:
    path = folder / "scene.h5"
    with h5py.File(path, "w") as handle:
        handle["cube"] = synthetic_scene(lines=48, width=24, bands=len(wavelengths), seed=5).cube
        handle["wavelength"] = wavelengths
        handle["wavelength"].attrs["units"] = units
    return path


RESAMPLING_ERRORS = {  # case: (band centres, file kind, the error after the file name)
    "ENVI micrometres labelled nm": (
        np.linspace(0.4, 1.0, 40),
        "envi",
        "wavelengths look like micrometres (max 1), but the header says `wavelength units = nm`: fix "
        "`wavelength units` in {path} (to Micrometers), or resample on band index (--resample band-index)",
    ),
    "HDF5 micrometres labelled nm": (
        np.linspace(0.4, 1.0, 40),
        "hdf5",
        "wavelengths look like micrometres (max 1), but the file gives their unit as 'nm': fix the unit "
        "the file gives them (`wavelength_units`, or the wavelength dataset's `units`) (to Micrometers), "
        "or resample on band index (--resample band-index)",
    ),
    "over a quarter outside the model's range": (
        np.linspace(150.0, 1000.0, 40),
        "envi",
        "12 of the sensor's 40 bands lie outside the model's 400-2500 nm, where the resampling gives them "
        "little or no weight",
    ),
}


@pytest.mark.parametrize("command", ["detect", "eval", "stream"])
@pytest.mark.parametrize("case", sorted(RESAMPLING_ERRORS))
def test_band_centres_a_resampling_cannot_take_are_an_error_naming_the_file_and_the_fix(
    tmp_path: Path, capsys, command: str, case: str
) -> None:
    """A header saying nanometres over micrometre values failed with 'wavelengths look like
    micrometres (max 0.99294); pass nanometres (x 1000)' - no file, and a fix for a caller of
    the function, not for the file's owner; '62 of the sensor's 216 bands lie outside ...' named
    no file either. Each now names the file, and a mislabelled unit the field to fix."""
    from edge_had.detectors.registry import make_detector
    from edge_had.errors import SceneError
    from edge_had.eval.protocol import evaluate_scene
    from edge_had.io import load_scene

    wavelengths, kind, expected = RESAMPLING_ERRORS[case]
    path = envi_file(tmp_path, wavelengths)[0] if kind == "envi" else hdf5_file(tmp_path, wavelengths, "nm")
    # plain RX's stream reduces 40 bands to 32 on the sensor's own range: a unit is its problem too
    detector = "resampled-rx" if command != "stream" else "rx" if "micrometres" in case else "enhanced-rx"
    doing = f"cannot stream with {detector}" if command == "stream" else f"cannot score with {detector}"
    expected = f"{path}: {doing}: {expected.format(path=path)}"
    if command == "eval":  # the eval command's scenes go through evaluate_scene
        scene = load_scene(path)
        scene.gt = np.zeros(scene.valid.shape, dtype=bool)
        scene.gt[0, 0] = True
        with pytest.raises(SceneError) as raised:
            evaluate_scene(make_detector(detector), scene)
        assert str(raised.value).startswith(expected), str(raised.value)
        return
    argv = [command, *(["--source"] if command == "stream" else []), str(path), "--detector", detector]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"edge-had {command}: error: {expected}"), error


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
def test_export_refuses_a_wavelength_table_instead_of_reading_it_as_twice_the_bands(
    tmp_path: Path, capsys, suffix: str
) -> None:
    """A sensor's band list often comes as "wavelength fwhm" lines (EnMAP, PRISMA): raveled, 240
    bands read as 480 centres, half of them "outside 400-2500 nm", and the error said to export
    for --bands 480."""
    centres = np.concatenate([np.linspace(420.0, 1000.0, 96), np.linspace(900.0, 2450.0, 144)])
    table = np.column_stack([centres, np.full(centres.size, 8.0)])
    path = tmp_path / f"bands{suffix}"
    np.savetxt(path, table) if suffix == ".txt" else np.save(path, table)
    assert main(["export", "--out", str(tmp_path / "x"), "--no-gate", "--wavelengths", str(path)]) == 2
    error = capsys.readouterr().err
    assert "a table of shape (240, 2): keep its wavelength column alone" in error
    assert "480" not in error and not (tmp_path / "x").exists()
    # that column alone, stored as a (240, 1) column or a (1, 240) row, is a list (a review)
    from edge_had.cli import _read_wavelengths

    for shape in ((-1, 1), (1, -1)):
        column = tmp_path / f"column{suffix}"
        np.savetxt(column, centres.reshape(shape)) if suffix == ".txt" else np.save(
            column, centres.reshape(shape)
        )
        np.testing.assert_array_equal(_read_wavelengths(str(column))[0], centres)


def test_export_of_a_micrometre_list_says_to_scale_its_numbers(tmp_path: Path, capsys) -> None:
    """A .txt list has no unit field: the error named `wavelength_units` and a dataset's `units`."""
    path = tmp_path / "centres_um.txt"
    np.savetxt(path, np.linspace(0.42, 2.45, 40))
    assert main(["export", "--out", str(tmp_path / "x"), "--no-gate", "--wavelengths", str(path)]) == 2
    error = capsys.readouterr().err
    assert "a list of band centres is read in nm: fix its numbers (x 1000)" in error
    assert "wavelength_units" not in error and "export on band index (--bands 40 without" in error


def test_the_triangle_reduction_is_the_triangle_wavelength_matrix_over_the_sensors_own_range() -> None:
    """``kernel="triangle"``: the band-averaging matrix of the adapter's triangle kernel, on the
    sensor's own range (on band index without wavelengths); the linear kernel stays the default."""
    from edge_had.band_resampling import band_index_matrix, wavelength_matrix

    wavelengths = np.linspace(420.0, 2450.0, 120)
    triangle = band_reduction(120, 32, wavelengths, "triangle")
    want = wavelength_matrix(wavelengths, 32, lo=420.0, hi=2450.0, kernel="triangle")[0]
    np.testing.assert_array_equal(triangle, want)
    np.testing.assert_allclose(triangle.sum(axis=1), 1.0, atol=1e-12)
    assert (np.count_nonzero(triangle[1:-1], axis=1) > 2).all()  # averages, not a 2-band interpolation
    np.testing.assert_array_equal(
        band_reduction(120, 32, wavelengths), wavelength_matrix(wavelengths, 32, lo=420.0, hi=2450.0)[0]
    )
    np.testing.assert_array_equal(
        band_reduction(120, 32, None, "triangle"), band_index_matrix(120, 32, kernel="triangle")[0]
    )
    with pytest.raises(ValueError, match="unknown reduction kernel 'box'"):
        band_reduction(120, 32, wavelengths, "box")


@pytest.mark.parametrize("bands", [40, 120], ids=["gather", "product"])
def test_a_stream_with_the_triangle_kernel_scores_as_rx_of_the_cube_reduced_by_it(
    tmp_path: Path, bands: int
) -> None:
    """``--reduction-kernel triangle``: the stream scores as the float64 causal RX oracle on the
    cube reduced by the triangle matrix (its weights can be negative near the range ends), both
    where the pipeline gathers the few bands of each row (40 bands) and where it multiplies (120),
    and the report records the kernel."""
    from edge_had.band_resampling import wavelength_matrix
    from edge_had.stream.pipeline import sparse_rows
    from tests.test_stream_masking import causal_rx_oracle

    wavelengths = np.linspace(400.0, 2400.0, bands).round(2)
    header, cube = envi_file(tmp_path, wavelengths)
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["stream", "--source", str(header), "--detector", "rx", "--reorder-window", "0"]
    assert main([*argv, "--reduction-kernel", "triangle", "--out", str(out), "--json", str(report)]) == 0
    matrix = wavelength_matrix(wavelengths, 32, lo=400.0, hi=2400.0, kernel="triangle")[0]
    assert (sparse_rows(matrix) is None) == (bands == 120)  # both of _reduce's paths are covered
    streamed = np.load(out / "scores.npy")
    if bands == 120:  # the pipeline's float32 product: RX of the cube reduced so, to float precision ...
        reduced32 = (cube.astype(np.float32) @ matrix.astype(np.float32).T).astype(np.float64)
        np.testing.assert_allclose(streamed, causal_rx_oracle(reduced32), rtol=1e-6)
    # ... and the float64 reduction within 1e-5 of the largest score (measured 1.6e-6; a
    # pixel's own score within 1.3e-5: the smoother triangle bands' covariance is worse conditioned)
    want = causal_rx_oracle(cube.astype(np.float64) @ matrix.T)
    np.testing.assert_allclose(streamed, want, rtol=2e-5, atol=1e-5 * np.nanmax(want))
    detector = json.loads(report.read_text())["detector"]
    assert detector["reduction_kernel"] == "triangle" and detector["resampling"] == "wavelength"


def test_the_reduction_kernel_is_refused_for_an_enhanced_detector(capsys) -> None:
    """The model resamples the bands itself: the option would be ignored, so it is refused, in
    the command, the API and the plan, as the network-only options are for plain detectors."""
    from edge_had.stream.onboard import build_pipeline
    from edge_had.stream.plan import plan

    argv = ["stream", "--source", "synthetic", "--lines", "20", "--detector", "enhanced-rx"]
    assert main([*argv, "--reduction-kernel", "triangle"]) == 2
    assert "--reduction-kernel: only rx and hybrid-rx reduce bands" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only rx and hybrid-rx reduce bands"):
        build_pipeline(16, 60, "enhanced-hybrid-rx", reduction_kernel="triangle")
    with pytest.raises(ValueError, match="unknown reduction kernel 'box'"):
        build_pipeline(16, 60, "rx", reduction_kernel="box")
    with pytest.raises(ValueError, match="only rx and hybrid-rx reduce bands"):
        plan("orin-nano-8gb", "fx10", "enhanced-rx", reduction_kernel="triangle")
    assert (
        main(
            [
                "plan",
                "--device",
                "orin-nano-8gb",
                "--detector",
                "enhanced-rx",
                "--reduction-kernel",
                "triangle",
            ]
        )
        == 2
    )  # plan() refuses it (the command adds no check of its own)
    assert "(--reduction-kernel): only rx and hybrid-rx reduce bands" in capsys.readouterr().err


@pytest.mark.parametrize("kernel", ["linear", "triangle"])
def test_a_reinitialisation_for_a_new_band_count_keeps_the_reduction_kernel(kernel: str) -> None:
    """Lines of another band count re-initialise the statistics with a new reduction: built
    with the kernel the stream was built with (on band index: the new count has no centres)."""
    from edge_had.stream.onboard import build_pipeline

    with build_pipeline(
        16, 60, "rx", wavelengths=np.linspace(400.0, 1000.0, 60), reduction_kernel=kernel
    ) as onboard:
        pipeline = onboard.pipeline
        assert pipeline.reduction_kernel == kernel
        rng = np.random.default_rng(0)
        for index in range(12):
            pipeline.push(rng.normal(size=(16, 50)).astype(np.float32), index, index / 330.0)
        assert [change["bands"] for change in pipeline.band_changes] == [50]
        np.testing.assert_array_equal(pipeline.reduction, band_reduction(50, 32, None, kernel))


def test_the_plan_counts_the_triangle_reduction_as_the_pipeline_applies_it() -> None:
    """The triangle kernel's rows span more sensor bands than the gather takes: the plan counts
    a dense product for it (224 -> 32), the 2-tap gather for the linear kernel."""
    from edge_had.stream.plan import plan, reduction_taps

    assert reduction_taps(224, 32) == 2 and reduction_taps(224, 32, "triangle") is None
    parts = {
        kernel: {
            p["name"]: p
            for p in plan("orin-nano-8gb", "fx10", "rx", bands=224, reduction_kernel=kernel)["parts"]
        }
        for kernel in ("linear", "triangle")
    }
    assert parts["triangle"]["band reduction"]["flops"] == 2.0 * 1024 * 224 * 32
    assert parts["linear"]["band reduction"]["flops"] == 2.0 * 1024 * 32 * 2


def test_export_reads_a_scene_files_band_centres_without_its_pixels(tmp_path: Path) -> None:
    """`export --wavelengths scan.hdr` loaded the whole scene (a float32 copy of the cube, every
    pixel checked) for its header's list. It reads the header and the cube's shape alone now: the
    same good-band centres as the loaded scene's (micrometres converted, the bbl's bad bands left
    out; and a .mat file's), and a scene whose every pixel is NaN - which detect refuses - still
    gives its header's list."""
    from scipy.io import savemat

    from edge_had.cli import _read_wavelengths
    from edge_had.io import load_scene
    from edge_had.io.scene import SceneError

    bands = 12
    cube = np.random.default_rng(5).normal(1000.0, 50.0, (5, 7, bands)).astype(np.float32)
    good = np.ones(bands, dtype=int)
    good[[0, 7]] = 0
    metadata = {"wavelength": np.linspace(0.45, 2.2, bands).tolist(), "wavelength units": "Micrometers",
                "bbl": good.tolist()}  # fmt: skip
    header = tmp_path / "scan.hdr"
    envi.save_image(str(header), cube, interleave="bsq", metadata=metadata, ext=".img", force=True)
    mat = tmp_path / "scan.mat"
    savemat(mat, {"data": cube, "wavelength": np.linspace(450.0, 2200.0, bands)})
    for path in (header, mat):
        centres, why, _ = _read_wavelengths(str(path))
        np.testing.assert_array_equal(centres, load_scene(path).detection_wavelengths())
    assert centres.size == bands and _read_wavelengths(str(header))[0].size == bands - 2
    assert "12 bands, 2 of them bad (bbl)" in _read_wavelengths(str(header))[1]
    np.testing.assert_allclose(_read_wavelengths(str(header))[0][[0, -1]], [450.0 + 1750.0 / 11, 2200.0])

    blank = tmp_path / "blank.hdr"
    envi.save_image(str(blank), np.full_like(cube, np.nan), interleave="bsq", metadata=metadata, ext=".img",
                    force=True)  # fmt: skip
    with pytest.raises(SceneError, match="no valid pixel"):
        load_scene(blank)
    np.testing.assert_array_equal(_read_wavelengths(str(blank))[0], _read_wavelengths(str(header))[0])
