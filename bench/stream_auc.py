"""Streaming AUC on the ten scenes next to offline RX, plain and enhanced, global and hybrid.

Per scene: offline global RX on the native bands; offline RX on the same 32-band reduced cube
the plain stream scores; plain streaming RX (``edge_had.stream.run`` configuration); offline
enhanced RX and streaming enhanced RX with the cross-validation fold model that did not see the
scene (variant ``--variant``, seed 0, its alphas chosen on its training scenes, from
``crossval.json``); then the same four with hybrid RX ``sqrt(RX * LRX)`` (streaming: causal
local RX, :mod:`edge_had.stream.causal_local`; enhanced: the fold's hybrid alpha, spectral branch
only). AUC over all pixels, unscored pixels count as 0; every line is scored here (warm-up lines
late).

    python bench/stream_auc.py --cv CV_OUT --crossval CV_OUT/crossval.json \
        --variant supervised-ranking --json bench/results/stream_auc.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_had import settings
from edge_had.detectors.enhanced import enhance_parts, fuse_parts
from edge_had.detectors.rx import rx_reference
from edge_had.detectors.scoring import hybrid_rx
from edge_had.eval.fold_models import held_out_fold, held_out_model
from edge_had.eval.metrics import roc_auc
from edge_had.eval.report import SCHEMA_VERSION, platform_info
from edge_had.io import list_scenes, load_scene
from edge_had.runtime.torch_runner import TorchRunner
from edge_had.stream.enhance import StreamEnhancer
from edge_had.stream.run import DEFAULT_SETTINGS, band_reduction, stream_scene_scores

COLUMNS = (
    "offline rx",
    "offline rx (32 bands)",
    "stream rx",
    "offline enhanced",
    "stream enhanced",
    "offline hybrid (32 bands)",
    "stream hybrid",
    "offline enhanced hybrid",
    "stream enhanced hybrid",
)


def auc(scores: np.ndarray, scene) -> float:
    return roc_auc(np.nan_to_num(scores, nan=0.0), scene.gt, scene.counted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cv", required=True)
    parser.add_argument("--crossval", required=True)
    parser.add_argument("--variant", default="supervised-ranking")
    parser.add_argument("--data", default=str(settings.data_dir()))
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = json.loads(Path(args.crossval).read_text())
    rows = {}
    for path in list_scenes(args.data):
        scene = load_scene(path)
        cube = scene.detection_cube()
        bundle = held_out_model(args.cv, report, args.variant, scene.name)
        hybrid_bundle = bundle.for_scorer("hybrid")
        alpha_spe, alpha_spa = bundle.config.alpha_spe, bundle.config.alpha_spa
        hybrid_alpha = hybrid_bundle.config.alpha_spe
        row = {"offline rx": auc(rx_reference(cube, mask=scene.valid), scene)}
        reduced = cube.astype(np.float64) @ band_reduction(cube.shape[2]).T
        row["offline rx (32 bands)"] = auc(rx_reference(reduced, mask=scene.valid), scene)
        row["stream rx"] = auc(stream_scene_scores(cube, scene.valid)[0], scene)
        row["offline hybrid (32 bands)"] = auc(hybrid_rx(reduced, scene.valid), scene)
        row["stream hybrid"] = auc(stream_scene_scores(cube, scene.valid, scorer="hybrid")[0], scene)
        with TorchRunner(bundle.model_for(cube.shape[2])) as runner:
            parts = enhance_parts(bundle, cube, scene.valid, None, runner)
            detect = lambda x, valid=scene.valid: rx_reference(x, mask=valid)  # noqa: E731
            offline = fuse_parts(parts, alpha_spe, alpha_spa, "feature", detect)
            row["offline enhanced"] = auc(offline, scene)
            scores, _ = stream_scene_scores(cube, scene.valid, enhancer=StreamEnhancer(bundle, runner))
        row["stream enhanced"] = auc(scores, scene)
        with TorchRunner(hybrid_bundle.model_for(cube.shape[2])) as runner:
            parts = enhance_parts(hybrid_bundle, cube, scene.valid, None, runner)
            score_hybrid = lambda x, valid=scene.valid: hybrid_rx(x, valid)  # noqa: E731
            hybrid = fuse_parts(parts, hybrid_alpha, 0.0, "feature", score_hybrid)
            row["offline enhanced hybrid"] = auc(hybrid, scene)
            enhancer = StreamEnhancer(hybrid_bundle, runner)
            scores, _ = stream_scene_scores(cube, scene.valid, enhancer=enhancer, scorer="hybrid")
        row["stream enhanced hybrid"] = auc(scores, scene)
        row["fold"] = held_out_fold(report, scene.name)
        rows[scene.name] = row
        print(scene.name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    means = {column: float(np.mean([row[column] for row in rows.values()])) for column in COLUMNS}
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "stream-auc",
        "command": " ".join(["python", *sys.argv]),
        "variant": args.variant,
        "causal_settings": DEFAULT_SETTINGS.to_dict(),
        "scenes": rows,
        "mean": means,
        "seconds": time.perf_counter() - start,
        "platform": platform_info(),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("| scene | fold | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, row in rows.items():
        print(f"| {name} | {row['fold']} | " + " | ".join(f"{row[c]:.4f}" for c in COLUMNS) + " |")
    print("| **mean** | | " + " | ".join(f"{means[c]:.4f}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
