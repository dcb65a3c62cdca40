"""Choose the event rule on training scenes only, report it on held-out scenes.

The rule (``edge_had.stream.events``): pixels above the chi-square quantile of the causal RX
statistic at a per-pixel false-alarm rate ``pfa`` are joined into 8-connected events, and events of
fewer than ``min_area`` pixels are dropped. Real backgrounds have heavier tails than a Gaussian, so
the nominal 1e-6 gives many false events. For each of the 5 cross-validation folds the rule is
chosen from a fixed grid by the best mean event F1 on the fold's 8 training scenes (precision =
events touching a ground-truth anomaly / events; recall = ground-truth objects, 8-connected,
touched by an event / objects), then the held-out scenes are reported with it: false events per
1000 lines, object recall, precision. Two grids: ``pfa`` alone (``min_area`` 1), and ``pfa`` and
``min_area`` jointly. The scores are the stream's (the recorded configuration of
``edge_had.stream.run``), per ``--detector`` as in ``edge-had stream``, thresholded as it does
(:func:`~edge_had.stream.events.stream_threshold`): plain RX on 32 bands (``rx``), hybrid RX
(``hybrid-rx``), and the enhanced ones (``enhanced-rx``, ``enhanced-hybrid-rx``) with each
fold's own cross-validation model and its alphas (``--cv``, ``--crossval``, ``--variant``; seed
0): a fold's rule is chosen on its training scenes scored by its model (the scenes it was trained
on, as the rule would be set before a mission) and reported on its held-out scenes scored by the
same model, which never saw them - every scene is scored five times. (Until 2026-11-29 the
training scenes were scored by the models that held *them* out, which had seen the fold's
held-out scenes: a weak indirect leak.)

    python bench/event_threshold.py --json bench/results/event_threshold.json
    python bench/event_threshold.py --detector hybrid-rx --json bench/results/event_threshold_hybrid.json
    python bench/event_threshold.py --detector enhanced-rx --cv CV --crossval CV/crossval.json \
        --json bench/results/event_threshold_enhanced.json   # --variant supervised-ranking (default)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from edge_had import settings
from edge_had.eval.crossval import fold_assignment
from edge_had.eval.fold_models import checked_fold_model
from edge_had.io import list_scenes, load_scene
from edge_had.runtime.torch_runner import TorchRunner
from edge_had.stream.enhance import StreamEnhancer
from edge_had.stream.events import EventDetector, judged, stream_threshold
from edge_had.stream.onboard import STREAM_DETECTORS
from edge_had.stream.run import stream_scene_scores

PFA_GRID = (1e-6, 1e-8, 1e-10, 1e-12, 1e-14, 1e-16, 1e-20, 1e-25, 1e-30)
MIN_AREA_GRID = (1, 2, 3, 4, 5, 6, 8)
KEYS = ("false_per_1000_lines", "recall", "precision", "f1")


def event_stats(
    scores: np.ndarray, gt: np.ndarray, level: float, min_area: int = 1, labelled: np.ndarray | None = None
) -> dict[str, float]:
    """Events as `edge-had stream` finds them, judged against ``gt``'s objects; an event with no
    anomaly pixel but some pixel the map leaves unlabelled (``labelled`` False) is neither true nor
    false: left out."""
    detector = EventDetector(level, min_area=min_area)
    events = []
    for index, line in enumerate(scores):
        events += detector.add(index, line, float(index))
    events += detector.finish()
    events = [event for event in events if judged(event.pixels, gt, labelled) != "unjudged"]
    objects, count = ndimage.label(gt, structure=np.ones((3, 3)))
    true_events, hit = 0, set()
    for event in events:
        touched = {int(objects[r, c]) for r, c in event.pixels} - {0}
        true_events += bool(touched)
        hit |= touched
    precision = true_events / len(events) if events else 0.0
    recall = len(hit) / count if count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false = len(events) - true_events
    return {"events": len(events), "false_per_1000_lines": 1000 * false / scores.shape[0],
            "precision": precision, "recall": recall, "f1": f1}  # fmt: skip


SceneStats = dict[str, dict[tuple[float, int], dict[str, float]]]  # scene -> rule -> event stats


def choose_per_fold(
    fold_stats: list[SceneStats],
    grid: list[tuple[float, int]],
    folds: list[list[str]],
) -> tuple[dict[str, dict[str, object]], dict[int, tuple[float, int]]]:
    """Per fold: the rule of ``grid`` with the best mean F1 on its training scenes (ties: the first
    in grid order), and the held-out scenes' rows with it; ``fold_stats[i]`` holds every scene as
    fold ``i`` scores it (its model, for the enhanced detectors)."""
    rows: dict[str, dict[str, object]] = {}
    chosen = {}
    for index, held in enumerate(folds):
        stats = fold_stats[index]
        training = [name for name in stats if name not in held]
        best = max(grid, key=lambda rule: np.mean([stats[name][rule]["f1"] for name in training]))
        chosen[index] = best
        for name in held:
            rows[name] = {"fold": index, "pfa": best[0], "min_area": best[1], **stats[name][best]}
    return rows, chosen


def scene_stats(
    scene, scores: np.ndarray, run, scorer: str, rules
) -> dict[tuple[float, int], dict[str, float]]:
    """Event statistics of one scored scene under every rule, thresholds as `edge-had stream` sets
    them from the scorer that ran."""
    return {
        (pfa, area): event_stats(
            scores, scene.gt, stream_threshold(scorer, run.pipeline.rx, pfa), area, scene.labelled
        )
        for pfa, area in rules
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(settings.data_dir()))
    parser.add_argument("--detector", choices=tuple(STREAM_DETECTORS), default="rx")
    parser.add_argument("--cv", help="enhanced detectors: the crossval output folder (fold models)")
    parser.add_argument("--crossval", help="enhanced detectors: its crossval.json (alphas per fold)")
    parser.add_argument(
        "--variant",
        default="supervised-ranking",
        help="enhanced detectors: the variant (default: the shipped recipe)",
    )
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    enhanced, scorer = STREAM_DETECTORS[args.detector]
    if enhanced and not (args.cv and args.crossval):
        parser.error(f"--detector {args.detector} needs --cv and --crossval")
    if not enhanced and (args.cv or args.crossval):
        parser.error(f"--cv and --crossval are for enhanced detectors; {args.detector} runs no network")
    report = json.loads(Path(args.crossval).read_text()) if enhanced else None
    if report is not None and args.variant not in report["alphas"]:
        parser.error(f"{args.crossval} has no {args.variant} models; it has {sorted(report['alphas'])}")
    scenes = {path.stem: load_scene(path) for path in list_scenes(args.data)}
    folds = fold_assignment(list(scenes), 5)  # the cross-validation's folds
    if report is not None and report["folds"] != folds:
        parser.error("the cross-validation report's folds are not the 5 folds of these scenes")
    joint = list(itertools.product(PFA_GRID, MIN_AREA_GRID))
    if enhanced:  # every scene as each fold's model scores it
        fold_stats = []
        for fold in range(len(folds)):
            # checked: its training record holds none of the fold's held-out scenes
            bundle = checked_fold_model(args.cv, report, args.variant, 0, fold).for_scorer(scorer)
            stats_of_fold = {}
            for name, scene in scenes.items():
                cube = scene.detection_cube()
                with TorchRunner(bundle.model_for(cube.shape[2])) as runner:
                    enhancer = StreamEnhancer(bundle, runner)
                    scores, run = stream_scene_scores(cube, scene.valid, enhancer=enhancer, scorer=scorer)
                stats_of_fold[name] = scene_stats(scene, scores, run, scorer, joint)
            fold_stats.append(stats_of_fold)
    else:  # no model: every fold scores a scene alike
        plain = {}
        for name, scene in scenes.items():
            scores, run = stream_scene_scores(scene.detection_cube(), scene.valid, scorer=scorer)
            plain[name] = scene_stats(scene, scores, run, scorer, joint)
        fold_stats = [plain] * len(folds)
    # each scene as the fold that held it out scores it (its model never saw it)
    stats = {name: fold_stats[fold][name] for fold, held in enumerate(folds) for name in held}
    results = {}
    for label, grid in (("pfa", [(pfa, 1) for pfa in PFA_GRID]), ("pfa_and_min_area", joint)):
        rows, chosen = choose_per_fold(fold_stats, grid, folds)
        on_all = max(grid, key=lambda rule: np.mean([stats[name][rule]["f1"] for name in scenes]))
        results[label] = {
            "chosen_per_fold": {str(k): list(v) for k, v in chosen.items()},
            "chosen_on_all_scenes": list(on_all),
            "held_out": rows,
            "mean_held_out": {key: float(np.mean([row[key] for row in rows.values()])) for key in KEYS},
        }
    nominal = {key: float(np.mean([stats[name][(1e-6, 1)][key] for name in scenes])) for key in KEYS}
    result = {
        "command": " ".join(["python", *sys.argv]),
        "detector": args.detector,
        "variant": args.variant if enhanced else None,
        "pfa_grid": PFA_GRID,
        "min_area_grid": MIN_AREA_GRID,
        **results,
        "mean_at_nominal_1e-6": nominal,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    header = "pfa, min area (chosen on training scenes) | false events / 1000 lines | recall | precision"
    print(f"| scene | fold | {header} |")
    print("|---|---|---|---|---|---|")
    for name, row in results["pfa_and_min_area"]["held_out"].items():
        rule = f"{row['pfa']:g}, {row['min_area']}"
        print(f"| {name} | {row['fold']} | {rule} | {row['false_per_1000_lines']:.0f} | "
              f"{row['recall']:.2f} | {row['precision']:.2f} |")  # fmt: skip
    for label, title in (("pfa_and_min_area", "pfa and min area per fold"), ("pfa", "pfa per fold")):
        mean = results[label]["mean_held_out"]
        print(f"| **mean, {title}** | | | {mean['false_per_1000_lines']:.0f} | {mean['recall']:.2f} | "
              f"{mean['precision']:.2f} |")  # fmt: skip
    print(f"| nominal pfa 1e-6, every event | | | {nominal['false_per_1000_lines']:.0f} | "
          f"{nominal['recall']:.2f} | {nominal['precision']:.2f} |")  # fmt: skip
    on_all = results["pfa_and_min_area"]["chosen_on_all_scenes"]
    print(f"chosen on all ten scenes: pfa {on_all[0]:g}, min area {on_all[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
