"""Accuracy gate of the FP16 and INT8 graphs with the cross-validation fold models.

For each fold of a ``edge-had crossval`` run: the fold's model (trained without the fold's
scenes), its alphas chosen on its training scenes (as cross-validation does), a calibration set
drawn from its training scenes only, then FP32 / FP16 / INT8 graphs through ONNX Runtime on the
fold's held-out scenes - so no model is measured on a scene it was trained or calibrated on.

    python export/gate_folds.py --cv CV_OUT [--variant main] [--seed 0] [--data DIR] \
        [--method entropy|minmax|percentile] --json export/results/gate_folds.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from edge_had import settings
from edge_had.build.calibration import build_calibration_set
from edge_had.build.calibration_methods import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from edge_had.build.gate import TOLERANCES, GraphRecipe, gate_scenes, run_gate
from edge_had.eval.crossval import SceneCache, fold_assignment, select_alphas
from edge_had.eval.report import SCHEMA_VERSION, platform_info
from edge_had.io import list_scenes
from edge_had.models.bundle import load_bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cv", required=True, help="output folder of `edge-had crossval`")
    parser.add_argument("--variant", default="main")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--data", default=str(settings.data_dir()))
    parser.add_argument("--method", default=DEFAULT_CALIBRATION_METHOD, choices=list(CALIBRATION_METHODS))
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    paths = list_scenes(args.data)
    cache = SceneCache(paths)
    folds = fold_assignment([path.stem for path in paths], args.folds)
    rows, fold_records = [], []
    for index, held_out in enumerate(folds):
        model_dir = Path(args.cv) / "models" / args.variant / f"seed{args.seed}" / f"fold{index}"
        bundle = load_bundle(model_dir)
        training = sorted(set(cache.scenes) - set(held_out))
        alpha_spe, alpha_spa = select_alphas(cache, {name: cache.parts(bundle, name) for name in training})
        bundle.config = dataclasses.replace(bundle.config, alpha_spe=alpha_spe, alpha_spa=alpha_spa)
        calibration = build_calibration_set(args.data, exclude=held_out)
        scenes, excluded = gate_scenes(bundle, list(cache.scenes.values()), calibration, 0)
        assert sorted(scene.name for scene, _ in scenes) == sorted(held_out), "fold bookkeeping broke"
        report = run_gate(GraphRecipe(bundle, ["fp32", "fp16", "int8"], calibration, args.method), scenes)
        for row in report.rows:
            rows.append({"fold": index, **dataclasses.asdict(row)})
            print(
                f"fold {index} {row.scene}: " + ", ".join(f"{p} {a:.4f}" for p, a in row.auc.items()),
                flush=True,
            )
        fold_records.append(
            {
                "fold": index,
                "model": str(model_dir),
                "model_sha256": bundle.sha256,
                "alphas": [alpha_spe, alpha_spa],
                "trained_on": sorted(bundle.training_scenes.values()),
                "calibrated_on": [scene["name"] for scene in calibration.manifest["scenes"]],
                "held_out": held_out,
            }
        )
    passed = {
        p: all(abs(r["auc"][p] - r["auc"]["fp32"]) <= tol for r in rows) for p, tol in TOLERANCES.items()
    }
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "gate-folds",
        "command": " ".join(["python", *sys.argv]),
        "variant": args.variant,
        "seed": args.seed,
        "calibration_method": args.method,
        "tolerances": TOLERANCES,
        "passed": passed,
        "folds": fold_records,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "platform": platform_info(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0 if all(passed.values()) else 1


def table(result: dict) -> str:
    lines = [
        "| scene | fold | bands | FP32 | FP16 (diff) | INT8 (diff) |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(result["rows"], key=lambda r: r["scene"]):
        auc = row["auc"]
        cells = []
        for precision in ("fp16", "int8"):
            diff = auc[precision] - auc["fp32"]
            flag = "" if abs(diff) <= TOLERANCES[precision] else " FAIL"
            cells.append(f"{auc[precision]:.4f} ({diff:+.4f}){flag}")
        lines.append(
            f"| {row['scene']} | {row['fold']} | {row['bands']} | {auc['fp32']:.4f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
