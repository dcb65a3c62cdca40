"""Detectors on the synthetic payload scene (bench/payload_scene.py): what the 32- and 64-band
resamplings cost on 240 noisy bands, offline and streamed.

Offline (the scene's AUC with its ``payload_gt.npy``): global and hybrid RX on every band;
``resampled-*`` (the model's 64-band adapter alone) and ``enhanced-*`` (the shipped model), each
with the adapter as the package builds it (linear: two sensor bands per canonical band) and, as
an experiment, with a band-averaging adapter (``kernel="triangle"``, swapped in for this run
only: the model was trained behind the linear one). Streamed (``edge-had stream``): plain RX and
hybrid RX with ``--reduction-kernel linear|triangle``.

    python bench/payload_detectors.py --json bench/results/payload_detectors.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payload_scene import write_payload  # noqa: E402
from stream_reduction_kernels import streamed  # noqa: E402

from edge_had.detectors.registry import make_detector  # noqa: E402
from edge_had.eval.metrics import roc_auc  # noqa: E402
from edge_had.eval.report import SCHEMA_VERSION, platform_info  # noqa: E402
from edge_had.io import load_scene  # noqa: E402
from edge_had.models.adapter import SpectralAdapter  # noqa: E402

NATIVE = ("rx", "hybrid-rx")
ADAPTED = ("resampled-rx", "resampled-hybrid-rx", "enhanced-rx", "enhanced-hybrid-rx")


@contextlib.contextmanager
def adapter_kernel(kernel: str) -> Iterator[None]:
    """The model's adapter built with ``kernel`` while inside (an experiment: the package's is linear)."""
    package = SpectralAdapter.__dict__["for_sensor"]

    def for_sensor(cls, bands, wavelengths=None, k=64):  # noqa: ANN001, ANN202
        if wavelengths is None:
            return cls.from_band_count(bands, k, kernel=kernel)
        return cls.from_wavelengths(np.asarray(wavelengths, dtype=np.float64).ravel(), k, kernel=kernel)

    SpectralAdapter.for_sensor = classmethod(for_sensor)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        SpectralAdapter.for_sensor = package  # type: ignore[method-assign]


def offline_auc(scene, name: str) -> float:  # noqa: ANN001
    scores = make_detector(name).score(scene.detection_cube(), scene.valid, scene.detection_wavelengths())
    return round(roc_auc(scores, scene.gt, scene.counted), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--pixels", type=int, default=400)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        header = write_payload(Path(scratch), args.lines, args.pixels)
        scene = load_scene(header)  # its ground truth: payload_gt.npy beside it
        offline = {name: offline_auc(scene, name) for name in NATIVE}
        for kernel in ("linear", "triangle"):
            with adapter_kernel(kernel):
                offline.update({f"{name} (adapter {kernel})": offline_auc(scene, name) for name in ADAPTED})
        stream_aucs = {
            f"{detector} (reduction {kernel})": round(
                streamed(header, detector, kernel, Path(scratch))["auc"], 4
            )
            for detector in NATIVE
            for kernel in ("linear", "triangle")
        }
    result = {
        "schema_version": SCHEMA_VERSION,
        "command": "python " + " ".join(sys.argv),
        "scene": {"lines": args.lines, "pixels": args.pixels, "bands": 240, "zero_bands": 26, "targets": 25},
        "seconds": round(time.perf_counter() - started, 1),
        "platform": platform_info(),
        "offline_auc": offline,
        "stream_auc": stream_aucs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for table in ("offline_auc", "stream_auc"):
        for name, auc in result[table].items():
            print(f"{table:<12} {name:<40} {auc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
