"""The line loop on the CPU at the Specim FX10 shape (1024 px x 224 bands, budget 3.03 ms/line).

* plain causal RX (band reduction to 32, cumulative statistics, factor refreshed every line:
  the recorded streaming configuration, ``edge_had.stream.run.DEFAULT_SETTINGS``), and again
  without its outlier gate (the gate's cost, within one run) and with the triangle reduction
  (``--reduction-kernel triangle``: its cost, global and hybrid);
* the full pipeline: block enhancement (16 lines + 3 + 3 context, a seeded untrained model of
  the shipped architecture: speed does not depend on the weights) on each backend, then causal
  RX in the model's K = 64 bands;
* both again with hybrid RX (causal global x dual-window local RX, ``edge_had.stream.causal_local``);
* ONNX Runtime again with the network on a worker thread (``StreamEnhancer(asynchronous=True)``,
  ``stream --async-enhance``), overlapping RX of the previous block.

Each round streams 256 lines of a synthetic FX10 scene (generated once, outside the timing);
lines/s = 256 / round time. ``extra_info`` carries the per-stage latency table of the last round.

    python -m pytest bench/test_bench_stream.py --benchmark-json=bench/results/stream_cpu.json
    python bench/summarize_stream.py bench/results/stream_cpu.json
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edge_had.io.synthetic import synthetic_scene
from edge_had.models import ModelConfig, load_bundle, save_bundle
from edge_had.stream.pipeline import StreamPipeline
from edge_had.stream.presets import sensor
from edge_had.stream.run import DEFAULT_REDUCED_BANDS, DEFAULT_SETTINGS, band_reduction, run_stream
from edge_had.stream.sources import scene_lines

LINES = 256
FX10 = sensor("fx10")


@pytest.fixture(scope="module")
def cube():
    return synthetic_scene(seed=0, lines=LINES, width=FX10.width, bands=FX10.bands).cube


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig()
    folder = tmp_path_factory.mktemp("model")
    save_bundle(folder, config, *config.build_networks())
    return load_bundle(folder)


def _record(benchmark, pipeline: StreamPipeline, name: str) -> None:
    benchmark.extra_info.update(
        pipeline=name,
        lines_per_round=LINES,
        shape=[FX10.width, FX10.bands],
        budget_ms=FX10.budget_s * 1e3,
        latency_ms=pipeline.profiler.summary(),
        health=pipeline.health.to_dict(),
        causal_settings=pipeline.settings.to_dict(),
    )


def _time_rounds(benchmark, cube, make_pipeline, name: str) -> None:
    """Stream the cube through a fresh pipeline per round; record the last round's stages."""
    made = {}

    def one_round():
        made["pipeline"] = make_pipeline()
        run_stream(scene_lines(cube), made["pipeline"], keep_scores=False)

    benchmark.group = "fx10-stream"
    benchmark.pedantic(one_round, rounds=5, warmup_rounds=1)
    _record(benchmark, made["pipeline"], name)
    assert made["pipeline"].health.lines_scored == LINES


SCORER_LABELS = {"global": "causal RX", "hybrid": "causal hybrid RX"}


@pytest.mark.parametrize("scorer", ["global", "hybrid"])
def test_plain_causal_rx(benchmark, cube, bench_threads, scorer):
    reduction = band_reduction(FX10.bands, DEFAULT_REDUCED_BANDS)

    def make():
        return StreamPipeline(
            FX10.width, FX10.bands, reduction=reduction, settings=DEFAULT_SETTINGS, scorer=scorer
        )

    _time_rounds(benchmark, cube, make, f"plain {SCORER_LABELS[scorer]}, K={DEFAULT_REDUCED_BANDS}")


@pytest.mark.parametrize("scorer", ["global", "hybrid"])
def test_plain_causal_rx_triangle_reduction(benchmark, cube, bench_threads, scorer):
    """``--reduction-kernel triangle``'s cost: the rows above against these, in the same run (its
    band-averaging rows are a dense float32 product, the linear ones a 2-tap gather)."""
    reduction = band_reduction(FX10.bands, DEFAULT_REDUCED_BANDS, kernel="triangle")

    def make():
        return StreamPipeline(
            FX10.width, FX10.bands, reduction=reduction, settings=DEFAULT_SETTINGS, scorer=scorer,
            reduction_kernel="triangle",
        )  # fmt: skip

    label = f"plain {SCORER_LABELS[scorer]}, K={DEFAULT_REDUCED_BANDS}, triangle reduction"
    _time_rounds(benchmark, cube, make, label)


def test_plain_causal_rx_without_the_outlier_gate(benchmark, cube, bench_threads):
    """The outlier gate's cost: the global row above against this one, in the same run."""
    reduction = band_reduction(FX10.bands, DEFAULT_REDUCED_BANDS)
    ungated = dataclasses.replace(DEFAULT_SETTINGS, outlier_sigma=None)

    def make():
        return StreamPipeline(FX10.width, FX10.bands, reduction=reduction, settings=ungated)

    _time_rounds(benchmark, cube, make, f"plain causal RX, K={DEFAULT_REDUCED_BANDS}, no outlier gate")


@pytest.mark.parametrize(
    ("backend", "scorer", "asynchronous"),
    [
        ("torch", "global", False),
        ("onnxruntime", "global", False),
        ("onnxruntime", "global", True),
        ("onnxruntime", "hybrid", False),
        ("onnxruntime", "hybrid", True),
    ],
)
def test_full_pipeline(benchmark, cube, bundle, backend, scorer, asynchronous, bench_threads, tmp_path):
    from edge_had.runtime import choose_backend, enhancement_runner
    from edge_had.stream.enhance import StreamEnhancer, runner_threads_beside_rx

    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    torch.set_num_threads(bench_threads)
    if scorer == "hybrid":  # as `stream --detector enhanced-hybrid-rx`: spectral branch alone
        bundle = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, alpha_spa=0.0))
    choice = choose_backend(backend, "fp32")
    threads = runner_threads_beside_rx() if asynchronous else None  # as `stream --async-enhance`
    runner = enhancement_runner(choice, bundle, FX10.bands, workdir=tmp_path, cpu_threads=threads).activate()

    def make():
        enhancer = StreamEnhancer(bundle, runner, asynchronous=asynchronous)
        return StreamPipeline(
            FX10.width, FX10.bands, settings=DEFAULT_SETTINGS, enhancer=enhancer, scorer=scorer
        )

    mode = ", asynchronous" if asynchronous else ""
    _time_rounds(benchmark, cube, make, f"enhancement ({backend} fp32{mode}) + {SCORER_LABELS[scorer]}, K=64")
