"""Every cross-validation fold model on the default synthetic scene, which no model saw.

The ten real scenes each have two fold models per seed that never saw them; the synthetic scene
(``edge_had.io.synthetic.synthetic_scene()``, the demo's) was seen by none, so *all* fold models
of a variant (folds x seeds) can be scored on it: an independent paired comparison of training
recipes, no scene of the cross-validation table involved. Each model uses the alphas chosen on
its own training scenes (``crossval.json``); ``random`` is the untrained network of the same
seeds. Global RX of ``x_k + a f_spe + b f_spa`` and hybrid RX of ``x_k + a_h f_spe``.

    python bench/synthetic_folds.py --cv CV --variants supervised-ranking supervised-ranking-implants \\
        --seeds 0 1 2 --json bench/results/synthetic_folds.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_had.detectors.enhanced import enhance_parts
from edge_had.detectors.registry import make_detector
from edge_had.eval.crossval import EnhancedScene
from edge_had.eval.fold_models import fold_model
from edge_had.eval.metrics import roc_auc
from edge_had.eval.report import SCHEMA_VERSION, platform_info
from edge_had.io.synthetic import synthetic_scene

BASELINES = ("rx", "resampled-rx", "resampled-hybrid-rx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cv", required=True, help="the --out folder of edge-had crossval")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="the seeds' fold models to score (default: every seed in the report)",
    )
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = json.loads((Path(args.cv) / "crossval.json").read_text())
    scene = synthetic_scene()
    cube, wavelengths = scene.detection_cube(), scene.detection_wavelengths()
    unknown = sorted(set(args.variants) - set(report["alphas"]))
    if unknown:
        parser.error(f"no fold models of {unknown} in {args.cv}; the report has {sorted(report['alphas'])}")
    seeds = report["seeds"] if args.seeds is None else args.seeds
    if not set(seeds) <= set(report["seeds"]):
        parser.error(f"{args.cv} has fold models of seeds {report['seeds']}, not {sorted(set(seeds))}")

    def auc(scores: np.ndarray) -> float:
        return roc_auc(scores, scene.gt, scene.counted)

    baselines = {name: auc(make_detector(name).score(cube, scene.valid, wavelengths)) for name in BASELINES}
    models: dict[str, dict[str, dict[str, float]]] = {}
    for variant in ["random", *args.variants]:
        models[variant] = {}
        for key in sorted(report["alphas"][variant]):
            seed, fold = (int(part[4:]) for part in key.split("/"))
            if seed not in seeds:
                continue
            bundle = fold_model(args.cv, report, variant, seed, fold)
            parts = enhance_parts(bundle, cube, scene.valid, wavelengths)
            enhanced = EnhancedScene(parts, scene.valid)
            config = bundle.config
            models[variant][key] = {
                "global": auc(enhanced.score("global", config.alpha_spe, config.alpha_spa)),
                "hybrid": auc(enhanced.score("hybrid", config.hybrid_alpha_spe, 0.0)),
            }
    summary = {}
    for variant, rows in models.items():
        summary[variant] = {}
        for scorer in ("global", "hybrid"):
            values = np.array([row[scorer] for row in rows.values()])
            spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[variant][scorer] = {"mean": float(values.mean()), "std": spread}
            if variant != "random":  # paired with the untrained network of the same seed and fold
                diffs = values - np.array([models["random"][key][scorer] for key in rows])
                summary[variant][scorer]["higher_than_random"] = int((diffs > 0).sum())
            summary[variant][scorer]["models"] = len(values)
    out = {
        "schema_version": SCHEMA_VERSION,
        "kind": "synthetic_folds",
        "scene": "synthetic_scene() (default seed)",
        "crossval_seeds": report["seeds"],
        "seeds": seeds,
        "baselines": baselines,
        "models": models,
        "summary": summary,
        "seconds": time.perf_counter() - start,
        "platform": platform_info(),
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(" | ".join(f"{name} {value:.4f}" for name, value in baselines.items()))
    for variant, scorers in summary.items():
        print(
            f"{variant}: " + ", ".join(f"{s} {v['mean']:.4f} +- {v['std']:.4f}" for s, v in scorers.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
