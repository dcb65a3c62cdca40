"""Enhancement inference per backend and precision on the CPU, with the error against torch.

Shapes: a Specim FX10 block of 16 lines x 1024 px x 224 bands (time per line = block time / 16;
the streaming loop runs the networks on such blocks) and one 100 x 100 x 205-band scene (the ABU
size). Backends: torch FP32, ONNX Runtime FP32, FP16 and INT8 (Q/DQ, output heads FP32). Weights
are a seeded untrained model of the shipped architecture (speed does not depend on the values);
the INT8 graph is calibrated on synthetic scenes. Each record carries ``max_rel_error``:
max over outputs of max|out - torch| / max|torch|.

    python -m pytest bench/test_bench_backends.py --benchmark-json=bench/results/backends_cpu.json
    python bench/summarize_backends.py bench/results/backends_cpu.json
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_had.models import ModelConfig, load_bundle, save_bundle

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

SHAPES = {"fx10-block16": (224, 16, 1024), "scene-100x100": (205, 100, 100)}
LINES_PER_CALL = {"fx10-block16": 16, "scene-100x100": 100}
RUNNERS = ("torch-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig()
    spectral, spatial = config.build_networks()
    folder = tmp_path_factory.mktemp("model")
    save_bundle(folder, config, spectral, spatial)
    return load_bundle(folder)


def synthetic_calibration(bands: int):
    from edge_had.build.calibration import CalibrationSet
    from edge_had.io.synthetic import synthetic_scene
    from edge_had.models.normalize import Normalization

    blocks = []
    for seed in range(4):
        scene = synthetic_scene(seed=seed, bands=bands, lines=64, width=128)
        cube = Normalization()(scene.cube)
        blocks += [np.ascontiguousarray(cube[i : i + 16].transpose(2, 0, 1)) for i in (0, 32)]
    manifest = {
        "format": "edge-had-calibration",
        "normalization": Normalization().to_dict(),
        "sampling": {"synthetic_seeds": [0, 1, 2, 3]},
        "scenes": [],
        "blocks": [{} for _ in blocks],
    }
    return CalibrationSet(blocks, manifest)


@pytest.fixture(scope="module")
def runners(bundle, tmp_path_factory, bench_threads):
    from edge_had.build.onnx_export import export_onnx
    from edge_had.build.quantize import to_fp16, to_int8
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from edge_had.runtime.torch_runner import TorchRunner

    torch.set_num_threads(bench_threads)
    made = {}
    for shape_name, (bands, _, _) in SHAPES.items():
        folder = tmp_path_factory.mktemp(shape_name)
        fp32 = export_onnx(bundle, bands, folder / "fp32.onnx")
        graphs = {
            "fp32": fp32,
            "fp16": to_fp16(fp32, folder / "fp16.onnx"),
            "int8": to_int8(fp32, folder / "int8.onnx", synthetic_calibration(bands), method="minmax"),
        }
        made[shape_name] = {"torch-fp32": TorchRunner(bundle.model_for(bands)).activate()}
        for precision, path in graphs.items():
            made[shape_name][f"onnxruntime-{precision}"] = OnnxRuntimeRunner(
                path, threads=bench_threads
            ).activate()
    return made


@pytest.mark.parametrize("runner_name", RUNNERS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_enhancement_inference(benchmark, runners, shape_name, runner_name):
    bands, lines, pixels = SHAPES[shape_name]
    feed = {
        "cube": (0.05 * np.random.default_rng(0).standard_normal((1, bands, lines, pixels))).astype(
            np.float32
        )
    }
    runner = runners[shape_name][runner_name]
    reference = runners[shape_name]["torch-fp32"].infer(feed)
    benchmark.group = shape_name
    outputs = benchmark.pedantic(runner.infer, args=(feed,), rounds=10, warmup_rounds=2)
    error = max(
        float(np.abs(outputs[k] - reference[k]).max() / np.abs(reference[k]).max()) for k in reference
    )
    benchmark.extra_info.update(
        shape=shape_name,
        input=[1, bands, lines, pixels],
        lines_per_call=LINES_PER_CALL[shape_name],
        runner=runner_name,
        max_rel_error=error,
    )
    assert np.isfinite(error)
