"""The ``edge-had`` command line: thin argparse front end over the package's modules."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edge_had
from edge_had.band_resampling import RESAMPLE_CHOICES
from edge_had.cli_types import (
    add_interleave_option,
    add_resample_option,
    add_saturation_option,
    changed_options,
    check_output_file,
    compute_device,
    existing_file,
    integer_from,
    non_negative_number,
    refuse_network_options,
)
from edge_had.errors import EdgeHadError

DESCRIPTION = """\
edge-had: onboard hyperspectral anomaly detection.

Scenes are read from .mat (v5 and v7.3), ENVI (.hdr + BIL/BIP/BSQ), .npy and HDF5 files; cubes are
(rows = along-track lines, cols, bands). Detectors: global RX ('rx'), dual-window local RX
('lrx'), their geometric mean ('hybrid-rx') and all three after the shipped background-enhancement
model ('enhanced-rx', 'enhanced-lrx', 'enhanced-hybrid-rx'); 'enhanced-rx' is the default of
`detect`, `eval` and `stream`.
`stream` runs the pushbroom line loop; `export`, `calibrate` and `build` make ONNX / INT8 /
TensorRT artifacts; `plan` bounds the time per line on a Jetson. Start with `edge-had demo`,
which needs no data.
"""


#: the local window's settings: every detector with a local RX part takes them
LOCAL_RX_DETECTORS = ("lrx", "hybrid-rx", "enhanced-lrx", "enhanced-hybrid-rx", "resampled-hybrid-rx")
#: the detectors that resample the sensor's bands to the model's K canonical ones
RESAMPLING_DETECTORS = (
    "enhanced-rx",
    "enhanced-lrx",
    "enhanced-hybrid-rx",
    "resampled-rx",
    "resampled-hybrid-rx",
)
#: the detectors whose score is global RX alone (of the native, enhanced or resampled cube)
GLOBAL_RX_DETECTORS = ("rx", "enhanced-rx", "resampled-rx")
#: scorer option -> (its default, the detectors that use it); another detector would ignore it
SCORER_OPTIONS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "precision": ("float64", ("rx",)),
    "regularization": (None, (*GLOBAL_RX_DETECTORS, *LOCAL_RX_DETECTORS)),
    "inner": (5, LOCAL_RX_DETECTORS),
    "outer": (15, LOCAL_RX_DETECTORS),
    "components": (10, LOCAL_RX_DETECTORS),
    "resample": (RESAMPLE_CHOICES[0], RESAMPLING_DETECTORS),  # add_resample_option's default
}
#: how an error names a group of detectors
DETECTOR_GROUPS: dict[tuple[str, ...], str] = {
    LOCAL_RX_DETECTORS: "detectors with a local RX part",
    RESAMPLING_DETECTORS: "the enhanced-* and resampled-* detectors",
}


def _detectors_named(users: tuple[str, ...]) -> str:
    return DETECTOR_GROUPS.get(users, "/".join(users))


def _refuse_unused_scorer_options(args: argparse.Namespace) -> None:
    """ValueError naming the scorer options set (away from their defaults) for a detector that
    does not use them: `--detector lrx --precision float32` ran and ignored it."""
    unused = [
        f"{flag} ({_detectors_named(users)} only)"
        for name, (default, users) in SCORER_OPTIONS.items()
        if args.detector not in users
        for flag in changed_options(args, {name: default})
    ]
    if unused:
        raise ValueError(f"{args.detector} does not use {', '.join(unused)}")


def _add_detector_options(parser: argparse.ArgumentParser) -> None:
    from edge_had.detectors.registry import DETECTORS

    group = parser.add_argument_group("detector")
    group.add_argument(
        "--detector",
        choices=list(DETECTORS),
        default="enhanced-rx",
        help="enhanced-*: the trained background enhancement (shipped model unless --model), then "
        "global RX / LRX / sqrt(RX * LRX) (enhanced-hybrid-rx is the most accurate offline; see the "
        "README); rx / lrx: classic global / dual-window RX on the native bands; hybrid-rx: "
        "sqrt(RX * LRX); resampled-(hybrid-)rx: the same without the networks, on K = 64 "
        "resampled bands (the enhancement's baselines). Default: enhanced-rx",
    )
    group.add_argument(
        "--model", help="enhanced-*: model folder (default: the weights shipped in the package)"
    )
    group.add_argument(
        "--fusion",
        choices=["feature", "product"],
        default="feature",
        help="enhanced-*: RX of x + f_spe + f_spa (feature, default) or the product of the two "
        "normalised RX maps (product)",
    )
    group.add_argument(
        "--precision",
        choices=["float64", "float32"],
        default=SCORER_OPTIONS["precision"][0],
        help="rx only: float64 numpy reference (default) or the fast float32-scoring path",
    )
    group.add_argument(
        "--regularization",
        type=non_negative_number,
        default=None,
        help="diagonal loading as a fraction of trace/bands: of global RX in rx, enhanced-rx and "
        "resampled-rx (default 0), of the local RX part of the others (default 1e-3; the global part "
        "of a hybrid is not loaded)",
    )
    backend = parser.add_argument_group("enhancement backend (enhanced-* detectors)")
    backend.add_argument(
        "--backend",
        choices=["auto", "tensorrt", "onnxruntime", "torch"],
        default="auto",
        help="auto (default) takes the first available of tensorrt > onnxruntime > torch and reports "
        "why the others were skipped; a named backend that cannot run is an error",
    )
    backend.add_argument(
        "--net-precision",
        choices=["fp32", "fp16", "int8"],
        help="precision of the enhancement networks (fp16: CUDA torch, onnxruntime or tensorrt; int8: "
        "a quantized --onnx file or a tensorrt engine). Default: what the --engine or --onnx file "
        "records, else fp32",
    )
    backend.add_argument(
        "--onnx", type=existing_file, help="exported ONNX graph to run (default: exported on the fly)"
    )
    backend.add_argument("--engine", type=existing_file, help="TensorRT engine to run (`edge-had build`)")
    backend.add_argument(
        "--device",
        type=compute_device,
        default="cpu",
        help="cpu (default), cuda or cuda:N: where the network runs",
    )
    group.add_argument(
        "--inner",
        type=integer_from(1),
        default=SCORER_OPTIONS["inner"][0],
        help="detectors with a local RX part (*lrx, *hybrid-rx): guard window (odd, default 5)",
    )
    group.add_argument(
        "--outer",
        type=integer_from(1),
        default=SCORER_OPTIONS["outer"][0],
        help="detectors with a local RX part: outer window (odd, default 15)",
    )
    group.add_argument(
        "--components",
        type=integer_from(0),
        default=SCORER_OPTIONS["components"][0],
        help="detectors with a local RX part: principal components before the local statistics "
        "(default 10; 0 = all)",
    )
    add_resample_option(group, "enhanced-* and resampled-*: ")


def _detector_from_args(args: argparse.Namespace) -> Any:
    from edge_had.detectors.registry import make_detector

    refuse_network_options(args, args.detector, enhanced=args.detector.startswith("enhanced-"))
    _refuse_unused_scorer_options(args)
    from edge_had.detectors.lrx import LocalRXSettings

    lrx: dict[str, Any] = {"inner": args.inner, "outer": args.outer, "n_components": args.components or None}
    if args.regularization is not None:
        lrx["regularization"] = args.regularization
    # --regularization loads global RX in a global-RX detector, the local RX part in the others
    scorer: dict[str, Any] = (
        {"regularization": args.regularization or 0.0}
        if args.detector in GLOBAL_RX_DETECTORS
        else {"lrx": LocalRXSettings(**lrx)}
    )
    if args.detector == "rx":
        return make_detector("rx", precision=args.precision, **scorer)
    if args.detector in ("lrx", "hybrid-rx"):
        return make_detector(args.detector, **lrx)
    if args.detector.startswith("resampled-"):  # the baselines of the enhanced detectors: same scorer
        return make_detector(args.detector, resample=args.resample, **scorer)
    return make_detector(
        args.detector,
        model=args.model,
        fusion=args.fusion,
        backend=args.backend,
        precision=args.net_precision,  # None: what the --engine / --onnx file records, else fp32
        onnx=args.onnx,
        engine=args.engine,
        device=args.device,
        resample=args.resample,
        **scorer,
    )


def _module_status(name: str) -> tuple[str, str]:
    """(version or 'missing', detail) for an optional module, importing it only here."""
    try:
        module = importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - report any import failure as the reason
        return "missing", f"{type(error).__name__}: {error}".splitlines()[0]
    return str(getattr(module, "__version__", "?")), ""


def _opencv_gui_status() -> str:
    from edge_had.stream.video import window_unavailable_reason

    why = window_unavailable_reason()
    return (
        "live windows available (stream --show)"
        if why is None
        else f"no live window: {why}; files are written"
    )


def _shipped_model_status() -> str:
    """The shipped enhancement model and its multiply-adds per pixel at the FX10's 224 bands."""
    try:
        from edge_had.detectors.enhanced import EnhancedDetector

        detector = EnhancedDetector()
    except Exception as error:  # noqa: BLE001 - info reports any reason
        return f"no shipped model ({error})"
    config = detector.bundle.config
    return (
        f"{detector.bundle.directory} (sha256 {detector.bundle.sha256[:12]}, K={config.k}, "
        f"alpha_spe={config.alpha_spe}, alpha_spa={config.alpha_spa}, "
        f"hybrid_alpha_spe={config.alphas_for('hybrid')[0]}, "
        f"{detector.macs_per_pixel(224):,} multiply-adds/pixel at 224 bands, budget 50,000)"
    )


def cmd_info(args: argparse.Namespace) -> int:
    from edge_had import settings
    from edge_had.eval.report import platform_info

    print(f"edge-had {edge_had.__version__}")
    with contextlib.suppress(Exception):  # the platform record reads torch's threads and GPU once loaded
        import torch  # noqa: F401
    for key, value in platform_info().items():
        print(f"  {key:12s} {value}")
    print("packages:")
    for name in ("numpy", "scipy", "torch", "spectral", "h5py", "cv2", "matplotlib", "onnx", "onnxruntime"):
        version, why = _module_status(name)
        print(f"  {name:12s} {version}" + (f"  ({why})" if why else ""))
    print("backends:")
    torch_version, torch_why = _module_status("torch")
    cuda = "no (torch missing)"
    if torch_version != "missing":
        import torch

        cuda = "no (no CUDA device)"
        if torch.cuda.is_available():
            cuda = f"yes ({torch.cuda.get_device_name(0)})"
    print(f"  torch CPU    {'yes' if torch_version != 'missing' else 'no (' + torch_why + ')'}")
    print(f"  torch CUDA   {cuda}")
    for name, label in (("onnxruntime", "onnxruntime"), ("tensorrt", "tensorrt"), ("pycuda", "pycuda")):
        version, why = _module_status(name)
        print(f"  {label:12s} {'yes ' + version if version != 'missing' else 'no (' + why + ')'}")
    print(f"  display      {_opencv_gui_status()}")
    from edge_had.runtime import choose_backend

    choice = choose_backend("auto", "fp32")
    skipped = "; ".join(f"{name}: {why}" for name, why in choice.skipped.items()) or "none"
    print(f"  --backend auto (fp32, no engine/onnx given) -> {choice.backend}; skipped: {skipped}")
    print(f"model:       {_shipped_model_status()}")
    if torch_version != "missing":  # whether a retraining here reproduces another machine's bits
        from edge_had.train.numerics import fingerprint_at

        print(
            f"training numerics: fingerprint {fingerprint_at(1)} at 1 thread (CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}): weights retrain bit for bit only where a "
            "training record's numerics match (edge_had/train/numerics.py)"
        )
    folder = settings.data_dir()
    found = f"{len(list(folder.glob('*.mat')))} .mat scenes" if folder.is_dir() else "no such folder"
    print(f"data: {folder} ({found}; set {settings.DATA_ENV} to change)")
    return 0


def _save_score_image(header: str, scores: Any, scene: Any, detector: str) -> None:
    """``detect --envi``: the scores as an ENVI image, on the scene's map when it has one."""
    from edge_had.io.score_image import georeference_of, write_score_image

    from_envi = scene.meta.get("format") == "envi"
    georeference = georeference_of(scene.meta["header"]) if from_envi else {}
    data = write_score_image(
        header,
        scores,
        band_name=f"{detector} score",
        description=f"edge-had {detector} scores of {scene.source or scene.name}; NaN: invalid pixels",
        georeference=georeference,
    )
    where = (
        f"map information of {scene.meta['header']} copied ({', '.join(georeference)})"
        if georeference
        else f"no map information: {'its header has none' if from_envi else 'the scene is not an ENVI file'}"
    )
    print(f"scores -> {header} + {data.name} ({where})")


def cmd_detect(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_had.eval.metrics import roc_auc
    from edge_had.eval.plots import save_score_map_png
    from edge_had.eval.protocol import far_outlier_check, scene_notes, score_scene
    from edge_had.io import load_scene
    from edge_had.io.scene import masked_summary

    if args.out:  # refused before the scene is read and scored
        check_output_file(args.out, "--out", suffix=".png")
    if args.npy:
        check_output_file(args.npy, "--npy")
    if args.envi:
        check_output_file(args.envi, "--envi", suffix=".hdr")
    scene = load_scene(
        args.scene,
        cube_var=args.cube_var,
        gt_var=args.gt_var,
        gt_path=args.gt,
        interleave=args.interleave,
        saturation=args.saturation,
    )
    detector = _detector_from_args(args)
    scores, seconds = score_scene(detector, scene)
    _warn_fallbacks(detector)
    if (warning := far_outlier_check(scene)[1]) is not None:
        print(f"warning: {warning}", file=sys.stderr)
    anomalies = 0 if scene.gt is None else int(scene.gt.sum())
    invalid_anomalies = 0 if scene.gt is None else int((scene.gt & ~scene.valid).sum())
    for note in _scene_notes(scene_notes(scene, scores, detector), anomalies, invalid_anomalies):
        print(f"warning: {scene.name}: {note}", file=sys.stderr)
    rows, cols, bands = scene.shape
    stored = f"read as {scene.meta['interleave']}"  # --interleave's, the ENVI header's, or bip
    print(f"{scene.name}: {rows} lines x {cols} px x {bands} bands, {stored}, {masked_summary(scene.masked)}")
    print(f"{detector.name} {detector.settings}: {seconds:.3f} s")
    if args.npy:  # the outputs first: a ground truth that gives no AUC must not cost them
        path = Path(args.npy) if str(args.npy).endswith(".npy") else Path(f"{args.npy}.npy")
        path.parent.mkdir(parents=True, exist_ok=True)  # as check_output_file promised
        np.save(path, scores)
        print(f"scores -> {path}")
    if args.envi:
        _save_score_image(args.envi, scores, scene, detector.name)
    if args.out:
        title = f"{scene.name} - {detector.name}"
        save_score_map_png(scores, args.out, gt=scene.gt, title=title, labelled=scene.labelled)
        print(f"map -> {args.out}")
    if scene.gt is not None:
        try:
            print(f"AUC {roc_auc(scores, scene.gt, scene.counted):.4f}")
        except ValueError as error:  # e.g. no anomaly pixel in the ground truth
            print(f"AUC undefined: {error}")
        if hasattr(detector, "training_scenes"):  # a detector with a model
            from edge_had.eval.protocol import TRAINED_ON_NOTE, training_check
            from edge_had.io import scene_sha256

            training = detector.training_scenes  # by the file's SHA-256, read only when there are some
            sha256 = scene_sha256(args.scene) if training else None
            trained_on, notes = training_check(training, sha256, scene.name)
            # notes go to stderr with the warnings: stdout holds the results
            for note in ([TRAINED_ON_NOTE] if trained_on else []) + notes:
                print(f"note: {note}", file=sys.stderr)
    return 0


def _scene_notes(notes: list[str], anomalies: int, invalid_anomalies: int) -> list[str]:
    """What the reader left out, and ground-truth pixels the AUC cannot count (they are invalid)."""
    if invalid_anomalies:
        notes = [
            *notes,
            f"{invalid_anomalies} of {anomalies} ground-truth pixels are invalid (NaN, Inf or no-data): "
            "left out of the AUC",
        ]
    return notes


def _warn_fallbacks(detector: Any) -> None:
    """`--backend auto` went past a backend that could not run (e.g. an --onnx graph for another
    band count): say so on stderr, not only in the report's settings."""
    ran = getattr(getattr(detector, "backend", None), "backend", None)
    for backend, why in getattr(detector, "fallbacks", {}).items():
        print(f"warning: {backend} did not run, {ran} ran instead: {why}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_had import settings
    from edge_had.eval.protocol import evaluate_folder, format_table
    from edge_had.eval.report import write_json

    folder = Path(args.data) if args.data else settings.data_dir()
    if args.json:  # refused now, not after every scene has been scored
        check_output_file(args.json, "--json")
    detector = _detector_from_args(args)
    report = evaluate_folder(
        detector, folder, progress=not args.quiet, plots_dir=args.plots, interleave=args.interleave
    )
    _warn_fallbacks(detector)
    for scene in report["scenes"]:
        if scene.get("far_outlier_pixels"):
            print(
                f"warning: {scene['name']}: {scene['far_outlier_pixels']} pixel(s) look like corrupt "
                "samples (far_outlier_pixels in the report; `edge-had detect` names the first)",
                file=sys.stderr,
            )
        for note in _scene_notes(scene["notes"], scene["anomaly_pixels"], scene["anomaly_pixels_invalid"]):
            print(f"warning: {scene['name']}: {note}", file=sys.stderr)
    for skipped in report["skipped"]:
        print(f"warning: not evaluated: {skipped['error']}", file=sys.stderr)
    print(format_table(report))
    if args.json:
        print(f"report -> {write_json(report, args.json)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_had.detectors.registry import make_detector
    from edge_had.eval.metrics import evaluate_map
    from edge_had.eval.plots import save_score_map_png
    from edge_had.eval.protocol import score_scene
    from edge_had.io.synthetic import synthetic_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scene = synthetic_scene(seed=args.seed)
    assert scene.gt is not None  # the synthetic scene always comes with its anomaly map
    rows, cols, bands = scene.shape
    print(
        f"synthetic pushbroom scene (seed {args.seed}): {rows} lines x {cols} px x {bands} bands, "
        f"{int(scene.gt.sum())} anomalous px, made in {time.perf_counter() - start:.2f} s"
    )
    runs = [("rx", {"precision": "float32"}, "global RX (fast path)")]
    from edge_had.models.bundle import WEIGHTS_FILE, default_model_dir

    shipped = (default_model_dir() / WEIGHTS_FILE).is_file()
    if shipped:
        runs.append(("enhanced-rx", {}, "enhanced RX (shipped model)"))
        runs.append(("enhanced-hybrid-rx", {}, "enhanced hybrid RX (shipped model, offline)"))
    for name, settings, label in runs:
        detector = make_detector(name, **settings)
        scores, seconds = score_scene(detector, scene)
        metrics = evaluate_map(scores, scene.gt, scene.counted)
        pd_at_far: dict[str, float] = metrics["pd_at_far"]  # type: ignore[assignment]
        path = save_score_map_png(
            scores, out / f"demo_{name}_map.png", gt=scene.gt, title=f"{label}, synthetic scene"
        )
        print(
            f"{label}: {seconds * 1e3:.1f} ms, AUC {metrics['auc']:.4f}, "
            f"Pd@FAR=1e-3 {pd_at_far['0.001']:.3f} -> {path}"
        )
    if not shipped:
        print(f"enhanced RX skipped: no shipped model in {default_model_dir()}")
    _demo_stream(scene, out, "enhanced-rx" if shipped else "rx")
    return 0


def _demo_stream(scene: Any, out: Path, detector: str) -> None:
    """The same scene as a pushbroom stream (FX10 line rate), line by line, on this CPU."""
    import h5py
    import numpy as np

    from edge_had.stream.command import add_stream_arguments, run_stream_command

    with h5py.File(out / "demo_scene.h5", "w") as handle:  # with its ground truth: the report has AUC
        handle.create_dataset("cube", data=scene.cube)
        handle.create_dataset("gt", data=scene.gt.astype(np.uint8))
    parser = argparse.ArgumentParser()
    add_stream_arguments(parser)
    print(f"\nstreaming the scene line by line ({detector}, FX10 line rate 330 Hz, unpaced):")
    stream_out = out / "stream"
    source = str(out / "demo_scene.h5")
    report = str(stream_out / "report.json")
    args = parser.parse_args(
        ["--source", source, "--detector", detector, "--out", str(stream_out), "--json", report]
    )
    status = run_stream_command(args)
    if status != 0:
        raise EdgeHadError(f"the demo's stream ended with status {status} (report: {report})")
    import json

    auc = json.loads(Path(report).read_text())["auc"]
    print(f"streaming AUC {auc:.4f} -> {stream_out / 'waterfall.png'}")


def cmd_train(args: argparse.Namespace) -> int:
    from edge_had.train.cli import run_train

    return run_train(args)


def cmd_crossval(args: argparse.Namespace) -> int:
    from edge_had import settings
    from edge_had.eval.crossval import (
        TABLE_ROWS,
        VARIANTS,
        CrossValConfig,
        alpha_table,
        markdown_table,
        run_crossval,
        write_report,
    )

    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        raise EdgeHadError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if len(set(args.seeds)) != len(args.seeds):  # a seed twice would count its models twice
        raise EdgeHadError(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    config = CrossValConfig(
        data=str(args.data or settings.data_dir()),
        out=args.out,
        folds=args.folds,
        seeds=args.seeds,
        variants=args.variants,
        jobs=args.jobs,
        train_overrides=overrides,
        progress=not args.quiet,
        interleave=args.interleave,
    )
    report = run_crossval(config)
    print(markdown_table(report, [row for row in TABLE_ROWS if row in report["summary"]]))
    print(alpha_table(report))
    print(alpha_table(report, "hybrid"))
    print(f"report -> {write_report(report, args.out)} ({report['seconds']:.0f} s)")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from edge_had.train.cli import config_from_args
    from edge_had.train.config import TrainConfig
    from edge_had.train.release import read_crossval_summary, release

    defaults = TrainConfig(data="", out="")
    given = changed_options(args, {name: getattr(defaults, name) for name in ("alpha_spe", "alpha_spa")})
    if given:  # release picks them on the training scenes: they would be ignored
        raise EdgeHadError(
            f"{', '.join(given)}: release chooses the alphas on the training scenes (alpha_selection in "
            "the sidecar); set them with `edge-had train`, or edit config.json after the release"
        )
    crossval = read_crossval_summary(args.crossval) if args.crossval else None  # before training
    sidecar = release(config_from_args(args), crossval, command=sys.argv)
    print(
        f"released -> {args.out}: alpha_spe {sidecar['alpha_spe']}, alpha_spa {sidecar['alpha_spa']}, "
        f"MACs/pixel {sidecar['macs_per_pixel']}"
    )
    return 0


def _read_wavelengths(path: str, interleave: str | None = None) -> tuple[Any, str, dict[str, Any] | None]:
    """Band centres in nm from a list (``.npy``; ``.txt``, one per line) or from a scene file
    (ENVI header, .mat, HDF5; its cube stored in ``interleave`` order): the wavelengths of its good
    bands, as detect and stream resample that file. Also returns what a band count that differs
    from them should be told (a scene file's bands left out by its ``bbl``), and a scene file's
    reader's meta (``{"format": "list"}`` for a list: its numbers are nm, it records no unit)."""
    import numpy as np

    if _is_scene_file(path):
        from edge_had.io.readers import read_raw
        from edge_had.io.scene import band_vector, check_cube

        # the file's band metadata and the cube's shape, as load_scene checks them, without reading
        # a pixel (an ENVI cube stays memory-mapped: no scene-sized float32 copy for a header's list)
        raw = read_raw(path, interleave=interleave)
        good = check_cube(raw.cube, raw.good_bands, Path(path))
        wavelengths = band_vector(raw.wavelengths, len(good), "wavelength list", Path(path))
        if wavelengths is None:
            raise EdgeHadError(f"--wavelengths {path}: the file records no wavelengths")
        centres = wavelengths[good]  # as Scene.detection_wavelengths
        left_out = int((~good).sum())
        why = f"the file has {len(good)} bands, {left_out} of them bad (bbl), and detect and stream feed "
        return centres, (why + f"its {len(centres)} good ones") if left_out else "", raw.meta
    values = np.asarray(
        np.load(path, allow_pickle=False)
        if Path(path).suffix.lower() == ".npy"
        else np.loadtxt(path, ndmin=1),
        dtype=np.float64,
    )
    if sum(length > 1 for length in values.shape) > 1:  # a "wavelength fwhm" table, raveled, read as
        # twice the bands, half of them < 400 nm; a (bands, 1) column is a list
        raise EdgeHadError(
            f"--wavelengths {path}: a list of band centres holds one number per band (nm; a .txt one per "
            f"line), this one is a table of shape {values.shape}: keep its wavelength column alone"
        )
    return values.ravel(), "", {"format": "list"}


def _is_scene_file(path: str) -> bool:
    """Whether ``--wavelengths path`` is a scene file (ENVI header or data file, .mat, HDF5), not a list."""
    from edge_had.io.envi import header_beside
    from edge_had.io.readers import CONTAINER_SUFFIXES

    suffix = Path(path).suffix.lower()
    return suffix == ".hdr" or suffix in CONTAINER_SUFFIXES or header_beside(Path(path)) is not None


def _export_sensor(args: argparse.Namespace, bundle: Any) -> tuple[int, Any]:
    """The sensor's band count and wavelengths: ``--bands``, or the count ``--wavelengths`` gives;
    both given and different is refused with the count to use (a review: an FX10 header with a
    ``bbl`` holds 224 bands of which detect and stream feed 216). Band centres the model's adapter
    cannot take are refused here, naming their file, before anything is read or written."""
    if args.wavelengths is None:
        if args.bands is None:
            raise EdgeHadError("give --bands B (the sensor's band count), or --wavelengths to take it from")
        return args.bands, None
    from edge_had.io.units import naming_the_file

    wavelengths, why, meta = _read_wavelengths(args.wavelengths, args.interleave)
    if args.bands is not None and args.bands != len(wavelengths):
        because = f" ({why})" if why else ""
        raise EdgeHadError(
            f"--bands {args.bands}, but --wavelengths {args.wavelengths} gives {len(wavelengths)} band "
            f"centres{because}: pass --bands {len(wavelengths)} or leave --bands out"
        )
    instead = f"export on band index (--bands {len(wavelengths)} without --wavelengths)"
    with naming_the_file(args.wavelengths, meta or {}, "cannot export for its band centres", instead):
        bundle.adapter_for(len(wavelengths), wavelengths)
    return len(wavelengths), wavelengths


def cmd_export(args: argparse.Namespace) -> int:
    from edge_had.build.calibration import load_calibration_set
    from edge_had.build.calibration_methods import DEFAULT_CALIBRATION_METHOD
    from edge_had.build.export_model import export_model
    from edge_had.io import list_scenes, load_scene
    from edge_had.models.bundle import load_bundle

    bundle = load_bundle(args.model)
    calibration = load_calibration_set(args.calibration) if args.calibration else None
    if args.precision == "int8" and calibration is None:
        raise EdgeHadError("--precision int8 needs --calibration FILE (make one with `edge-had calibrate`)")
    unused: dict[str, Any] = {"method": DEFAULT_CALIBRATION_METHOD} if args.precision != "int8" else {}
    if args.precision == "fp32":
        unused["keep_float"] = []  # every node is float already
    ignored = changed_options(args, unused)
    if ignored:
        raise EdgeHadError(f"{' '.join(ignored)}: not used by a --precision {args.precision} export")
    bands, wavelengths = _export_sensor(args, bundle)  # its errors before any gate scene is read
    gate_scenes = []
    if args.precision != "fp32" and not args.no_gate and args.gate_data != "synthetic":
        from edge_had import settings

        # a --gate-data folder that is not there is an error (a typo must not gate on synthetic
        # scenes); without the option, the data folder when there is one
        folder = Path(args.gate_data) if args.gate_data else settings.data_dir()
        if args.gate_data or folder.is_dir():
            gate_scenes = [load_scene(path, interleave=args.interleave) for path in list_scenes(folder)]
    read_scene_file = bool(gate_scenes) or (args.wavelengths is not None and _is_scene_file(args.wavelengths))
    if args.interleave is not None and not read_scene_file:
        raise EdgeHadError(
            "--interleave: this export reads no scene file (no gate scene, no --wavelengths scene)"
        )
    report = export_model(
        bundle,
        bands,
        args.out,
        precision=args.precision,
        wavelengths=wavelengths,
        calibration=calibration,
        method=args.method,
        keep_float=args.keep_float,
        gate_data=gate_scenes,
        gate=not args.no_gate,
        scorer=args.scorer,
        interleave=args.interleave,
    )
    worst = max(report["torch_vs_onnxruntime_fp32"].values())
    print(f"exported {args.precision} for {bands} bands -> {report['graphs'][args.precision]}")
    print(f"FP32 graph vs torch: max relative error {worst:.1e}")
    if report.get("gate_table"):
        scored = "enhanced hybrid-RX" if args.scorer == "hybrid" else "enhanced-RX"
        print(f"accuracy gate ({scored} AUC through ONNX Runtime, FP16 arithmetic emulated, passed):")
        print(report["gate_table"])
        excluded = report["gate"]["excluded"]
        if excluded:
            print("not gated on: " + "; ".join(f"{name} ({why})" for name, why in sorted(excluded.items())))
    print(f"report -> {Path(args.out) / 'export_report.json'}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge_had.build.calibration import CalibrationSampling, build_calibration_set
    from edge_had.models.bundle import load_bundle

    sampling = CalibrationSampling(args.blocks_per_scene, args.lines_per_block, args.seed)
    normalization = load_bundle(args.model).normalization  # export refuses a set normalised otherwise
    calibration = build_calibration_set(
        args.data,
        exclude=args.exclude,
        sampling=sampling,
        normalization=normalization,
        interleave=args.interleave,
    )
    path = calibration.save(args.out)
    scenes = ", ".join(scene["name"] for scene in calibration.manifest["scenes"])
    lines = sorted({block.shape[1] for block in calibration.blocks})
    print(f"{len(calibration.blocks)} blocks of {'/'.join(map(str, lines))} lines from {scenes} -> {path}")
    for note in calibration.shortfalls():
        print(f"warning: {note}", file=sys.stderr)
    if len(lines) > 1:
        print(f"warning: quantizing crops every block to its shortest, {lines[0]} lines", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-had", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"edge-had {edge_had.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="versions, available backends and why others are not")
    info.set_defaults(func=cmd_info)

    detect = sub.add_parser("detect", help="score one scene and write its anomaly map")
    detect.add_argument("scene", help="scene file (.mat, .hdr, .npy, .h5)")
    detect.add_argument("--out", help="score map PNG to write (with the ground truth outlined if known)")
    detect.add_argument("--npy", help="also save the raw scores as .npy")
    detect.add_argument(
        "--envi",
        metavar="SCORES.hdr",
        help="also save the scores as an ENVI image (.hdr + .img, float64, invalid pixels NaN); from an "
        "ENVI scene its map information is copied, so GIS tools overlay the scores on the scene",
    )
    detect.add_argument("--cube-var", help="variable/dataset name of the cube (default: found by shape)")
    detect.add_argument("--gt-var", help="variable/dataset name of the ground truth (default: by shape)")
    detect.add_argument(
        "--gt",
        help="separate ground-truth file (2-D array; default: NAME_gt.npy or NAME_gt.hdr beside the "
        "scene, if any)",
    )
    add_interleave_option(detect)
    add_saturation_option(detect)
    _add_detector_options(detect)
    detect.set_defaults(func=cmd_detect)

    evaluate = sub.add_parser("eval", help="evaluate a detector on every scene of a folder")
    evaluate.add_argument("--data", help="folder of scenes (default: $EDGE_HAD_DATA or ../shared/data)")
    evaluate.add_argument("--json", help="write the versioned JSON report here")
    evaluate.add_argument("--plots", help="folder for a score map PNG per scene and roc.png")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_interleave_option(evaluate)
    _add_detector_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    train = sub.add_parser(
        "train",
        help="train the enhancement model (stage 1 spectral teacher, stage 2 spatial student)",
        description="Train the enhancement model. The defaults are METHOD.md's recipe, trained on "
        "background (ground-truth anomalies of the training scenes are masked out of every loss): "
        "frozen pretrained encoder, reverse distillation, then the spatial student. The shipped "
        "recipe instead ranks the training scenes' labelled anomalies above their background: "
        "--encoder random --no-reverse-distillation --ranking-epochs 4 (see the README). Works under "
        "torchrun (DistributedDataParallel).",
    )
    from edge_had.train.cli import add_train_arguments

    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    release = sub.add_parser(
        "release",
        help="train the shipped model on every scene, pick its alphas, write sidecar and model card",
    )
    add_train_arguments(release)
    release.add_argument("--crossval", help="crossval.json whose summary goes into the sidecar")
    release.set_defaults(func=cmd_release)

    crossval = sub.add_parser(
        "crossval",
        help="leave-scenes-out cross-validation of the enhancement (trains one model per fold and seed)",
    )
    crossval.add_argument("--data", help="folder of scenes (default: $EDGE_HAD_DATA or ../shared/data)")
    crossval.add_argument("--out", required=True, help="folder for fold models and crossval.json")
    crossval.add_argument("--folds", type=integer_from(2), default=5, help="number of folds (default 5)")
    crossval.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    crossval.add_argument(
        "--variants",
        nargs="+",
        default=["main"],
        help="training variants: main and ablations (see edge_had.eval.crossval.VARIANTS)",
    )
    crossval.add_argument(
        "--epochs", type=integer_from(1), help="override the training epochs (default: train's)"
    )
    crossval.add_argument(
        "--jobs", type=integer_from(1), default=2, help="parallel training processes (default 2)"
    )
    crossval.add_argument("--quiet", action="store_true", help="no progress bars")
    add_interleave_option(crossval)
    crossval.set_defaults(func=cmd_crossval)

    from edge_had.build.calibration_methods import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD

    export = sub.add_parser(
        "export",
        help="model -> ONNX for one sensor (fp32, fp16 or int8 Q/DQ), checked and accuracy-gated",
    )
    export.add_argument("--model", help="model folder (default: the shipped model)")
    export.add_argument(
        "--bands",
        type=integer_from(2),
        help="the sensor's band count B as detect and stream feed it (default: what --wavelengths gives)",
    )
    export.add_argument(
        "--wavelengths",
        help="the sensor's band centres in nm (.txt, one per line, or .npy), or a scene file of the "
        "sensor (.hdr, .mat, .h5) whose good bands' wavelengths to use (the bands its bbl marks bad "
        "left out, as detect and stream leave them out)",
    )
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="default fp32")
    export.add_argument(
        "--scorer",
        choices=["global", "hybrid"],
        default="global",
        help="the RX the graph feeds: global (enhanced-rx, default) or hybrid (enhanced-hybrid-rx: "
        "the model's hybrid alphas, spectral branch alone; gated with hybrid RX)",
    )
    export.add_argument("--calibration", help="int8: calibration set from `edge-had calibrate`")
    export.add_argument(
        "--method",
        choices=list(CALIBRATION_METHODS),
        default=DEFAULT_CALIBRATION_METHOD,
        help="int8 activation ranges: entropy (default; TensorRT's KL-divergence threshold search, "
        "2048 bins per sign, about a minute), minmax or percentile (99.999)",
    )
    export.add_argument(
        "--keep-float",
        nargs="+",
        default=[],
        metavar="NODE",
        help="ONNX nodes to keep in FP32 (fp16/int8; the names: the export report's metadata, reduced_nodes)",
    )
    export.add_argument(
        "--gate-data",
        help="scenes for the accuracy gate (default: $EDGE_HAD_DATA; scenes the model was trained or "
        "calibrated on are skipped; 'synthetic' or no scene left: synthetic scenes)",
    )
    export.add_argument("--no-gate", action="store_true", help="skip the accuracy gate")
    add_interleave_option(export)  # the gate scenes' and a --wavelengths scene file's
    export.set_defaults(func=cmd_export)

    from edge_had.build.tensorrt_engine import add_build_arguments, run_build

    build = sub.add_parser(
        "build", help="build (or reuse from the versioned cache) the TensorRT engine of an exported ONNX"
    )
    add_build_arguments(build)
    build.set_defaults(func=run_build)

    calibrate = sub.add_parser(
        "calibrate", help="INT8 calibration set: line blocks sampled from training scenes"
    )
    calibrate.add_argument("--data", required=True, help="folder of training scenes")
    calibrate.add_argument("--out", required=True, help="calibration .npz to write (+ .manifest.json)")
    calibrate.add_argument(
        "--exclude", nargs="+", default=[], metavar="SCENE", help="scenes (names) to leave out"
    )
    calibrate.add_argument("--blocks-per-scene", type=integer_from(1), default=4, help="default 4")
    calibrate.add_argument("--lines-per-block", type=integer_from(1), default=16, help="default 16")
    calibrate.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    calibrate.add_argument(
        "--model",
        help="model the set calibrates, whose normalisation the blocks get (default: the shipped model)",
    )
    add_interleave_option(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    from edge_had.stream.command import add_stream_arguments, run_stream_command

    stream = sub.add_parser(
        "stream",
        help="pushbroom line loop: causal (enhanced) RX per line, events, latency and line accounting",
    )
    add_stream_arguments(stream)
    stream.set_defaults(func=run_stream_command)

    from edge_had.stream.plan import add_plan_arguments, run_plan

    plan = sub.add_parser(
        "plan",
        help="FLOPs and bytes per line and the roofline lower bound on a Jetson board vs the line budget",
    )
    add_plan_arguments(plan)
    plan.set_defaults(func=run_plan)

    demo = sub.add_parser("demo", help="synthetic pushbroom scene -> RX -> map PNG and AUC (no data needed)")
    demo.add_argument("--out", default="edge-had-demo", help="output folder (default: ./edge-had-demo)")
    demo.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from edge_had.allocator import keep_freed_memory

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.func(args))
    except ImportError as error:
        name = error.name or ""
        if not (name == "torch" or name.startswith("torch.") or "torch" in str(error).split()):
            raise  # not a missing torch: a bug, with its traceback
        print(
            f"edge-had {args.command}: error: this needs torch, which is not importable ({error}): the "
            "enhanced detectors, training and export run the model's networks in it. Install it "
            "(`pip install torch`; on a Jetson, NVIDIA's wheel), or use a plain detector (rx, "
            "hybrid-rx, lrx), which needs no torch",
            file=sys.stderr,
        )
        return 2
    except (EdgeHadError, ValueError, OSError) as error:  # OSError: e.g. an output path not writable
        print(f"edge-had {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (stream finishes the lines it received itself: its own Ctrl-C handling)
        print(f"edge-had {args.command}: interrupted (Ctrl-C) before it finished", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports an interrupted command


if __name__ == "__main__":
    sys.exit(main())
