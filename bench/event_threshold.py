"""Choose the event threshold on training scenes only, report it on held-out scenes.

The rule is the chi-square quantile of the causal RX statistic (``edge_had.stream.events``) at a
per-pixel false-alarm rate ``pfa``; real backgrounds have heavier tails than a Gaussian, so the
nominal 1e-6 gives many false events. For each of the 5 cross-validation folds, ``pfa`` is chosen
from a fixed grid by the best mean event F1 on the fold's 8 training scenes (precision = events
touching a ground-truth anomaly / events; recall = ground-truth objects, 8-connected, touched by an
event / objects), then the held-out scenes are reported with it: false events per 1000 lines,
object recall, precision. Plain streaming RX (the recorded configuration of
``edge_had.stream.run``) supplies the scores; ``--scorer hybrid`` streams hybrid RX instead
(``stream --detector hybrid-rx``), thresholded at :func:`~edge_had.stream.events.hybrid_threshold`.

    python bench/event_threshold.py --json bench/results/event_threshold.json
    python bench/event_threshold.py --scorer hybrid --json bench/results/event_threshold_hybrid.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from edge_had import settings
from edge_had.detectors.lrx import LocalRXSettings
from edge_had.eval.crossval import fold_assignment
from edge_had.io import list_scenes, load_scene
from edge_had.stream.events import EventDetector, chi2_threshold, hybrid_threshold
from edge_had.stream.run import DEFAULT_REDUCED_BANDS, stream_scene_scores

PFA_GRID = (1e-6, 1e-8, 1e-10, 1e-12, 1e-14, 1e-16, 1e-20, 1e-25, 1e-30)


def threshold(scorer: str, pfa: float) -> float:
    """The event threshold the stream uses for ``scorer`` at per-pixel false-alarm rate ``pfa``."""
    if scorer == "hybrid":
        return hybrid_threshold(
            DEFAULT_REDUCED_BANDS, LocalRXSettings().n_components or DEFAULT_REDUCED_BANDS, pfa
        )
    return chi2_threshold(DEFAULT_REDUCED_BANDS, pfa)


def event_stats(scores: np.ndarray, gt: np.ndarray, pfa: float, scorer: str = "global") -> dict[str, float]:
    detector = EventDetector(threshold(scorer, pfa))
    events = []
    for index, line in enumerate(scores):
        events += detector.add(index, line, float(index))
    events += detector.finish()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(settings.data_dir()))
    parser.add_argument("--scorer", choices=("global", "hybrid"), default="global")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    scenes = {path.stem: load_scene(path) for path in list_scenes(args.data)}
    stats = {}
    for name, scene in scenes.items():
        scores = stream_scene_scores(scene.detection_cube(), scene.valid, scorer=args.scorer)[0]
        stats[name] = {pfa: event_stats(scores, scene.gt, pfa, args.scorer) for pfa in PFA_GRID}
    rows, chosen = {}, {}
    for index, held in enumerate(fold_assignment(list(scenes), 5)):
        training = [name for name in scenes if name not in held]
        best = max(PFA_GRID, key=lambda pfa: np.mean([stats[name][pfa]["f1"] for name in training]))
        chosen[index] = best
        for name in held:
            rows[name] = {"fold": index, "pfa": best, **stats[name][best], "at_1e-6": stats[name][1e-6]}
    all_scenes = max(PFA_GRID, key=lambda pfa: np.mean([stats[name][pfa]["f1"] for name in scenes]))
    keys = ("false_per_1000_lines", "recall", "precision", "f1")
    mean = {key: float(np.mean([row[key] for row in rows.values()])) for key in keys}
    nominal = {key: float(np.mean([row["at_1e-6"][key] for row in rows.values()])) for key in keys}
    result = {
        "command": " ".join(["python", *sys.argv]),
        "scorer": args.scorer,
        "pfa_grid": PFA_GRID,
        "chosen_per_fold": chosen,
        "chosen_on_all_scenes": all_scenes,
        "held_out": rows,
        "mean_held_out": mean,
        "mean_at_nominal_1e-6": nominal,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| scene | fold | pfa (chosen on training scenes) | false events / 1000 lines | recall | precision |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['fold']} | {row['pfa']:g} | {row['false_per_1000_lines']:.0f} | "
              f"{row['recall']:.2f} | {row['precision']:.2f} |")  # fmt: skip
    means = f"{mean['false_per_1000_lines']:.0f} | {mean['recall']:.2f} | {mean['precision']:.2f}"
    print(f"| **mean** | | | {means} |")
    print(f"| nominal pfa 1e-6 | | | {nominal['false_per_1000_lines']:.0f} | {nominal['recall']:.2f} | "
          f"{nominal['precision']:.2f} |")  # fmt: skip
    print(f"chosen on all ten scenes (the default for deployment): pfa {all_scenes:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
