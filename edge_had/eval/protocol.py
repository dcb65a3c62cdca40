"""The evaluation protocol: run one detector over every scene of a folder, the way the field does.

Per scene: load (not timed), score with the detector (timed: statistics included), then AUC,
AUC(D,tau), AUC(F,tau) and Pd at fixed false-alarm rates over the valid pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_had.band_resampling import RESAMPLE_CHOICES, ignored_bands_note, wavelengths_to_use
from edge_had.detectors.registry import Detector
from edge_had.detectors.stats import FAR_OUTLIER_SIGMA, far_outliers
from edge_had.errors import SceneError
from edge_had.eval.metrics import evaluate_map, missing_class, roc_curve
from edge_had.eval.report import eval_report
from edge_had.io import Scene, list_scenes, load_scene, scene_sha256
from edge_had.io.units import naming_the_file


def score_scene(detector: Detector, scene: Scene) -> tuple[np.ndarray, float]:
    """The detector's score map of a scene and the seconds it took. Band centres the detector's
    resampling cannot take are a :class:`SceneError` naming the scene's file (and, for a unit
    mislabelled, the header field to fix: :func:`~edge_had.io.units.naming_the_file`)."""
    cube = scene.detection_cube()
    start = time.perf_counter()
    with naming_the_file(scene.source, scene.meta, f"cannot score with {detector.name}"):
        scores = detector.score(cube, scene.valid, scene.detection_wavelengths())
    return scores, time.perf_counter() - start


def constant_scores_note(scores: np.ndarray, valid: np.ndarray) -> str | None:
    """A note when every valid pixel scored the same (None otherwise): a scene with no more valid
    pixels than the detector has dimensions (K = 64 for the enhanced detectors) gives a singular
    covariance, and every pixel the same score - the anomaly included."""
    counted = scores[valid & np.isfinite(scores)]
    if counted.size < 2 or np.ptp(counted) > 1e-9 * max(float(np.abs(counted).max()), 1e-300):
        return None
    return (
        f"every one of the {counted.size} valid pixels scored {float(counted[0]):.6g}: too few pixels for "
        "the detector's dimensions to estimate a covariance (no pixel stands out)"
    )


def scene_notes(scene: Scene, scores: np.ndarray, detector: Detector | None = None) -> list[str]:
    """What a user should know of a scored scene: what its reader left out (``meta["notes"]``),
    the sensor bands a detector resampling onto the model's canonical bands (one with a
    ``resample`` setting: the enhanced and resampled detectors) gave no weight
    (:func:`~edge_had.band_resampling.ignored_bands_note`), and a score map with no pixel standing
    out (:func:`constant_scores_note`)."""
    resample = getattr(detector, "resample", None)
    ignored = None
    if resample is not None:
        ignored = ignored_bands_note(wavelengths_to_use(resample, scene.detection_wavelengths()))
    constant = constant_scores_note(scores, scene.valid)
    return [*scene.meta.get("notes", []), *(note for note in (ignored, constant) if note is not None)]


#: A model folder without train_config.json or sidecar.json cannot say what it was trained on.
UNRECORDED_TRAINING_NOTE = (
    "the model's folder records no training scenes (no train_config.json or sidecar.json beside "
    "its weights): whether it was trained on this scene is unknown (trained_on null)"
)


#: Said beside the AUC of a scene the model was trained on.
TRAINED_ON_NOTE = "the model was trained on this scene, so its AUC says nothing about unseen scenes"


def training_check(
    training: dict[str, str] | None, sha256: str | None, name: str
) -> tuple[bool | None, list[str]]:
    """Whether a model whose training scenes are ``training`` (SHA-256 -> name; None: its folder
    records none) was trained on the scene file ``sha256`` named ``name`` - None when unknown - and
    the notes that go with the answer (:data:`UNRECORDED_TRAINING_NOTE`, or :func:`same_name_note`'s).
    :data:`TRAINED_ON_NOTE` is the caller's to say, where it reports an AUC."""
    if training is None:
        return None, [UNRECORDED_TRAINING_NOTE]
    same_name = same_name_note(training, sha256, name)
    return sha256 in training, [] if same_name is None else [same_name]


def same_name_note(training: dict[str, str] | None, sha256: str | None, name: str) -> str | None:
    """A note when ``name`` was a training scene's but the file's SHA-256 is not one of theirs
    (``trained_on`` is decided by file content, so a re-saved or converted training scene reads
    as unseen); None otherwise."""
    if not training or sha256 in training or name not in training.values():
        return None
    return (
        f"a scene named {name} was among the model's training scenes, in another file (re-saved or "
        "converted?): trained_on goes by the file's SHA-256 and says false - if it is that scene, "
        "its AUC is not a held-out one"
    )


def far_outlier_check(scene: Scene) -> tuple[int, str | None]:
    """How many valid pixels of the scene look like corrupt samples
    (:func:`~edge_had.detectors.stats.far_outliers`), and a warning naming the first (None if
    none): an offline detector's whole-scene statistics take them in, as the stream's do not."""
    far = far_outliers(scene.detection_cube(), scene.valid)
    count = int(far.sum())
    if count == 0:
        return 0, None
    row, col = (int(i) for i in np.argwhere(far)[0])
    return count, (
        f"{scene.name}: {count} pixel(s) more than {FAR_OUTLIER_SIGMA:g} robust deviations from the "
        f"scene's median in some band (the first at line {row}, pixel {col}) - corrupt samples? Each "
        "dominates the background statistics of every offline detector: mask it in the file, or "
        "stream the scene (the stream keeps such pixels out of its statistics)"
    )


def no_auc_reason(scene: Scene) -> str | None:
    """Why a scene with ground truth gives no AUC - no anomaly, or no background, pixel among its
    valid labelled pixels (``Scene.counted``), with how many pixels its map leaves unlabelled and
    what its reader noted, when the map leaves any -; None when it gives one."""
    assert scene.gt is not None
    missing = missing_class(scene.gt, scene.counted)
    if missing is None:
        return None
    return f"no {missing} pixel among its valid labelled pixels{scene.unlabelled_detail()}"


def evaluate_scene(detector: Detector, scene: Scene) -> tuple[dict[str, Any], np.ndarray]:
    """One scene's entry of the eval report (needs ground truth), and its score map.

    ``anomaly_pixels_invalid`` counts ground-truth pixels on invalid pixels (NaN, no-data): the
    AUC leaves them out, as it leaves out the ``unlabelled_pixels`` the map does not label.
    ``notes``: what the reader left out (``Scene.meta["notes"]``)."""
    if scene.gt is None:
        raise SceneError(
            "no ground truth: cannot evaluate (eval reads the anomaly map stored with a .mat or .h5 "
            f"scene, or the one beside the file: {scene.name}_gt.npy or {scene.name}_gt.hdr)",
            scene.source,
        )
    if (reason := no_auc_reason(scene)) is not None:  # before scoring: nothing could be measured
        raise SceneError(f"cannot evaluate: {reason}", scene.source)
    try:
        scores, seconds = score_scene(detector, scene)
    except SceneError:
        raise
    except ValueError as error:  # e.g. a sensor the model's resampling cannot take: this scene only
        raise SceneError(f"cannot score with {detector.name}: {error}", scene.source) from error
    rows, cols, _ = scene.shape
    try:
        metrics = evaluate_map(scores, scene.gt, scene.counted)
    except ValueError as error:  # e.g. no anomaly pixel: say which scene
        raise SceneError(f"cannot evaluate: {error}", scene.source) from error
    entry: dict[str, Any] = {
        "name": scene.name,
        "file": None if scene.source is None else scene.source.name,
        # the map's own file (--gt, or NAME_gt.npy/.hdr beside the scene; None: stored in the file)
        "ground_truth_file": Path(scene.meta["gt_path"]).name if scene.meta.get("gt_path") else None,
        # how its cube was read: --interleave's, the ENVI header's or bip (None: made in memory)
        "interleave": scene.meta.get("interleave"),
        "bands": int(scene.detection_cube().shape[2]),
        "rows": rows,
        "cols": cols,
        **metrics,
        "seconds": seconds,
        "valid_pixels": int(scene.valid.sum()),
        "anomaly_pixels": int(scene.gt.sum()),
        "anomaly_pixels_invalid": int((scene.gt & ~scene.valid).sum()),
        "unlabelled_pixels": scene.unlabelled_pixels,
        "far_outlier_pixels": far_outlier_check(scene)[0],
        # a fact of the file; what a resampling detector did with it is its settings' "resample"
        "wavelengths_known": scene.wavelengths is not None,
        "notes": scene_notes(scene, scores, detector),
    }
    ran_on = getattr(detector, "last_backend", None)  # a scene may run on another backend than the first
    if ran_on is not None:
        entry["backend"] = f"{ran_on.backend} {ran_on.precision}"
    macs = getattr(detector, "macs_per_pixel", None)
    if macs is not None:  # of the adapter that ran: on the wavelengths the detector resampled on
        resample = getattr(detector, "resample", RESAMPLE_CHOICES[0])
        entry["macs_per_pixel"] = macs(
            entry["bands"], wavelengths_to_use(resample, scene.detection_wavelengths())
        )
    if scene.source is not None:
        entry["source_sha256"] = scene_sha256(scene.source)
        if hasattr(detector, "training_scenes"):  # a detector with a model
            trained_on, notes = training_check(detector.training_scenes, entry["source_sha256"], scene.name)
            entry["trained_on"] = trained_on
            entry["notes"].extend(notes)
    return entry, scores


def evaluate_scenes(
    detector: Detector,
    paths: Iterable[Path],
    progress: bool = True,
    plots_dir: str | Path | None = None,
    interleave: str | None = None,
) -> dict[str, Any]:
    """Evaluate every scene file and return the versioned eval report.

    With ``plots_dir``: one score map PNG per scene and ``roc.png`` with every scene's curve.
    ``interleave``: how the cubes of MATLAB, HDF5 and ``.npy`` files are stored
    (:func:`~edge_had.io.load_scene`; an ENVI file given one is skipped with the reason).
    """
    paths = list(paths)
    stems = [path.stem for path in paths]
    entries, skipped = [], []
    curves = {}
    for path in tqdm(paths, desc=f"eval {detector.name}", unit="scene", disable=not progress):
        try:  # one unusable file (no ground truth, no anomaly, not a cube) must not cost the others
            scene = load_scene(path, interleave=interleave)
            entry, scores = evaluate_scene(detector, scene)
        except SceneError as error:
            skipped.append({"file": path.name, "error": str(error)})
            continue
        entries.append(entry)
        if plots_dir is not None:
            from edge_had.eval.plots import save_score_map_png

            label = scene.name if stems.count(path.stem) == 1 else path.name  # x.mat and x.h5 apart
            title = f"{label} - {detector.name} (AUC {entry['auc']:.4f})"
            plot = Path(plots_dir) / f"{label}_{detector.name}.png"
            save_score_map_png(scores, plot, scene.gt, title, labelled=scene.labelled)
            assert scene.gt is not None  # evaluate_scene checked it
            fpr, tpr, _ = roc_curve(scores, scene.gt, scene.counted)
            curves[label] = (fpr, tpr, entry["auc"])
    if not entries:
        reasons = "; ".join(f"{s['error']}" for s in skipped) or "no scene files"
        raise SceneError(f"no scene could be evaluated: {reasons}")
    if plots_dir is not None:
        from edge_had.eval.plots import save_roc_png

        save_roc_png(curves, Path(plots_dir) / "roc.png", title=f"ROC - {detector.name}", log_far=True)
    return eval_report({"name": detector.name, **detector.settings}, entries, skipped=skipped)


def evaluate_folder(
    detector: Detector,
    folder: str | Path,
    progress: bool = True,
    plots_dir: str | Path | None = None,
    interleave: str | None = None,
) -> dict[str, Any]:
    return evaluate_scenes(
        detector, list_scenes(folder), progress=progress, plots_dir=plots_dir, interleave=interleave
    )


def format_table(report: dict[str, Any]) -> str:
    """A plain-text per-scene table with the mean, as printed by ``edge-had eval``.

    Scenes the model was trained on are starred, and a last line gives the mean over the others.
    """
    fars = list(report["scenes"][0]["pd_at_far"])
    header = ["scene", "bands", "AUC", "AUC(D,tau)", "AUC(F,tau)", *[f"Pd@{far}" for far in fars], "s"]
    rows = [
        [
            scene["name"] + (" *" if scene.get("trained_on") else ""),
            str(scene["bands"]),
            f"{scene['auc']:.4f}",
            f"{scene['auc_dtau']:.4f}",
            f"{scene['auc_ftau']:.4f}",
            *[f"{scene['pd_at_far'][far]:.3f}" for far in fars],
            f"{scene['seconds']:.3f}",
        ]
        for scene in report["scenes"]
    ]
    rows.append(["mean", "", f"{report['mean_auc']:.4f}", *[""] * (len(header) - 3)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if "held_out_mean_auc" in report:
        held_out = report["held_out_mean_auc"]
        lines.append(
            "* the model was trained on this scene: its AUC says nothing about unseen scenes; mean of "
            + ("the others: none left" if held_out is None else f"the others: {held_out:.4f}")
            + " (held-out numbers for every scene: `edge-had crossval`)"
        )
    return "\n".join(line.rstrip() for line in lines)
