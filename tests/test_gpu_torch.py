"""The enhancement network on a CUDA GPU through torch, as ``stream --backend torch --device cuda``
runs it, against the same model in FP32 on the CPU (the reference):

* FP32 on the GPU (cuDNN may use TF32 for the convolutions: torch's default) and FP16 under
  autocast (what the exported FP16 graph does: adapter and fusion FP32, the two networks FP16),
  on the synthetic gate scenes of :mod:`edge_had.build.gate`, which the shipped model never saw:
  each part's ``||gpu - cpu|| / ||cpu||`` and the enhanced-RX AUC within the FP16 gate's tolerance;
* the whole line loop on the GPU (torch FP16 enhancement, causal RX on the CUDA kernels) against
  the CPU loop (torch FP32, numpy RX): the same lines scored, the same AUC within the FP16 gate's
  tolerance, and scores close;
* offline enhanced detection on the GPU (``detect --device cuda``: the scene in bands of lines,
  the fused cube's two passes) against torch FP32 on the CPU, and the GPU memory it leaves behind.

Marked ``gpu``: skipped, with the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_had.build.gate import SYNTHETIC_GATE_SEEDS, TOLERANCES
from edge_had.detectors import enhance_tiles, scoring
from edge_had.detectors.enhanced import enhance_parts, enhance_whole_scene, enhanced_feature_cube, fuse_parts
from edge_had.eval.metrics import roc_auc
from edge_had.io.synthetic import synthetic_scene
from edge_had.models.bundle import load_bundle

pytestmark = pytest.mark.gpu

# ||gpu - cpu|| / ||cpu|| of each network output. TF32 and FP16 both keep 10 mantissa bits
# (unit roundoff 4.9e-4); a few layers of rounding stay well under 1e-2. A wrong layout, a
# missing branch or a stale weight gives errors of order 1.
PART_REL_ERROR = {"fp32": 5e-3, "fp16": 1e-2}
AUC_TOLERANCE = TOLERANCES["fp16"]  # the FP16 gate's |AUC - AUC_fp32|


@pytest.fixture(scope="module")
def cuda_device() -> str:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return "cuda"


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def enhanced_auc(bundle: Any, parts: dict[str, np.ndarray], scene: Any) -> float:
    config = bundle.config
    score = scoring.scorer("global")
    scores = fuse_parts(parts, config.alpha_spe, config.alpha_spa, "feature", lambda x: score(x, scene.valid))
    return roc_auc(scores, scene.gt, scene.valid)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_on_the_gpu_enhances_like_the_cpu(cuda_device: str, precision: str) -> None:
    from edge_had.runtime.torch_runner import TorchRunner

    bundle = load_bundle()
    for seed in SYNTHETIC_GATE_SEEDS:
        scene = synthetic_scene(seed=seed)
        cube, wavelengths = scene.detection_cube(), scene.detection_wavelengths()
        reference = enhance_parts(bundle, cube, scene.valid, wavelengths)  # torch FP32 on the CPU
        runner = TorchRunner(bundle.model_for(cube.shape[2], wavelengths), precision, cuda_device)
        with runner:
            parts = enhance_parts(bundle, cube, scene.valid, wavelengths, runner)
        for name, want in reference.items():
            if not np.any(want):
                assert not np.any(parts[name]), (seed, name)
                continue
            error = relative_error(parts[name], want)
            assert error <= PART_REL_ERROR[precision], (seed, precision, name, error)
        auc_gpu, auc_cpu = enhanced_auc(bundle, parts, scene), enhanced_auc(bundle, reference, scene)
        assert abs(auc_gpu - auc_cpu) <= AUC_TOLERANCE, (seed, precision, auc_gpu, auc_cpu)


def test_the_line_loop_on_the_gpu_scores_like_the_cpu_loop(cuda_device: str, tmp_path: Path) -> None:
    """``edge-had stream`` of the default synthetic scene with enhanced hybrid RX: torch FP16 and
    the CUDA kernels, in the loop and with ``--async-enhance`` (the network on a worker thread,
    warmed up there), against torch FP32 and numpy, from the command line."""
    from edge_had.cli import main

    base = ["stream", "--source", "synthetic", "--lines", "512", "--detector", "enhanced-hybrid-rx",
            "--backend", "torch"]  # fmt: skip
    gpu = ["--device", cuda_device, "--net-precision", "fp16", "--rx-device", "cuda"]
    runs = {
        "cpu": ["--device", "cpu", "--net-precision", "fp32", "--rx-device", "cpu"],
        "gpu": gpu,
        "gpu-async": [*gpu, "--async-enhance"],
    }
    reports, scores = {}, {}
    for name, options in runs.items():
        report, out = tmp_path / f"{name}.json", tmp_path / name
        assert main([*base, *options, "--json", str(report), "--out", str(out)]) == 0, name
        reports[name], scores[name] = json.loads(report.read_text()), np.load(out / "scores.npy")
    cpu = reports["cpu"]
    assert cpu["health"]["accounting_ok"] and cpu["health"]["lines_scored"] == 512
    finite = np.isfinite(scores["cpu"])
    for name in ("gpu", "gpu-async"):
        run = reports[name]
        assert run["backend"]["precision"] == "fp16" and run["rx_device"]["cuda"]["launcher"], name
        assert run["detector"]["warm_up_ms"] > 0 and "warm_up_error" not in run["detector"], name
        assert run["health"]["accounting_ok"] and run["health"]["lines_scored"] == 512, name
        assert run["health"]["enhancement_failures"] == 0, name
        assert abs(run["auc"] - cpu["auc"]) <= AUC_TOLERANCE, (name, run["auc"], cpu["auc"])
        assert np.array_equal(np.isfinite(scores[name]), finite), name
        assert relative_error(scores[name][finite], scores["cpu"][finite]) <= 2e-2, name
    # the same network and kernels, only on another thread: the same scores up to float rounding
    assert relative_error(scores["gpu-async"][finite], scores["gpu"][finite]) <= 1e-4


def test_a_cuda_runner_hands_out_page_locked_host_arrays(cuda_device: str) -> None:
    """The windows the stream writes its lines into are pinned for torch on CUDA (uploads 4x
    faster than from pageable memory on an H100), zeroed, and the runner reads them correctly."""
    import torch

    from edge_had.models.bundle import load_bundle as load
    from edge_had.runtime.torch_runner import TorchRunner

    # a bundle each: a runner moves its networks to its device in place
    with (
        TorchRunner(load(None).model_for(32), "fp32", cuda_device) as runner,
        TorchRunner(load(None).model_for(32), "fp32", "cpu") as cpu,
    ):
        window = runner.host_array((1, 32, 22, 64))
        assert torch.from_numpy(window).is_pinned() and not window.any()
        window[:] = np.random.default_rng(0).random(window.shape, dtype=np.float32)
        got = runner.infer({"cube": window}, ("enhanced",))["enhanced"]
        want = cpu.infer({"cube": window.copy()}, ("enhanced",))["enhanced"]
    assert relative_error(got, want) < PART_REL_ERROR["fp32"]


def identity(cube: np.ndarray) -> np.ndarray:
    return cube


@pytest.mark.parametrize("scorer", ["global", "hybrid"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_offline_enhancement_in_bands_of_lines_on_the_gpu(
    cuda_device: str, precision: str, scorer: str, record_property: Any
) -> None:
    """:func:`enhanced_feature_cube` as ``detect --device cuda`` runs a scene larger than one band
    (the adapter's pass, the spatial student once, the sum band by band; the CUDA cache emptied
    between stages) against torch FP32 on the CPU in one run: the enhancement (the cube minus the
    CPU's ``x_k``) within the part tolerance, ``x_k`` itself closer, the same against the GPU's own
    whole-scene run, and no scene-sized tensor left on the GPU afterwards."""
    import torch

    from edge_had.runtime.torch_runner import TorchRunner

    bundle = load_bundle().for_scorer(scorer)
    alphas = bundle.config.alphas_for(scorer)
    scene = synthetic_scene(seed=SYNTHETIC_GATE_SEEDS[0], lines=192, width=256)
    cube, wavelengths = scene.detection_cube(), scene.detection_wavelengths()
    reference = enhance_parts(bundle, cube, scene.valid, wavelengths)  # torch FP32 on the CPU
    want = fuse_parts(reference, *alphas, "feature", identity) - reference["x_k"]
    runner = TorchRunner(bundle.model_for(cube.shape[2], wavelengths), precision, cuda_device)
    with runner:
        assert enhance_tiles.split_networks(runner, bundle) is not None  # else nothing runs in bands
        # the whole scene first: what a process's first products allocate for good is not the
        # scene's (33554432 bytes were left when this test ran first in its process on an H200:
        # the size of torch's default cuBLAS workspace on Hopper, 4096 KiB x 8)
        whole = fuse_parts(
            enhance_whole_scene(bundle, cube, scene.valid, runner), *alphas, "feature", identity
        )
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        fused = enhanced_feature_cube(bundle, cube, scene.valid, wavelengths, runner, alphas, tile_lines=48)
        torch.cuda.synchronize()
        left = torch.cuda.memory_allocated() - before
    errors = {
        "enhancement vs cpu": relative_error(fused - reference["x_k"], want),
        "x_k vs cpu": relative_error(fused - want, reference["x_k"]),
        "bands vs whole scene on the gpu": relative_error(fused - reference["x_k"], whole - reference["x_k"]),
    }
    for name, error in errors.items():
        record_property(name, f"{error:.3e}")
    record_property("gpu bytes left", left)
    assert fused.dtype == np.float64 and np.isfinite(fused).all()
    assert np.abs(want).max() > 0  # the enhancement is there to compare
    assert errors["enhancement vs cpu"] <= PART_REL_ERROR[precision], errors
    # the adapter's resampling runs as a 1x1 convolution, in TF32 under cuDNN's defaults (10
    # mantissa bits): 4.6e-4 (FP32) and 7.8e-4 (FP16) measured on an H200
    assert errors["x_k vs cpu"] <= 1e-3, errors
    # the same network on the same device, in bands of lines or whole: 0 measured on an H200 (a
    # convolution algorithm chosen by height could change a few roundings, never 1e-5)
    assert errors["bands vs whole scene on the gpu"] <= 1e-5, errors
    assert left < 4 * 2**20, left  # a float32 scene is 25 MB: none of its tensors stays
    score = scoring.scorer(scorer)
    aucs = [roc_auc(score(c, scene.valid), scene.gt, scene.valid) for c in (fused, want + reference["x_k"])]
    assert abs(aucs[0] - aucs[1]) <= AUC_TOLERANCE, aucs


def test_detect_on_the_gpu_scores_like_detect_on_the_cpu(cuda_device: str, tmp_path: Path) -> None:
    """``edge-had detect --detector enhanced-rx --backend torch --device cuda --net-precision fp16``
    on a .mat scene larger than one band of lines, against ``--device cpu`` (torch FP32): the
    same finite pixels, scores close and the AUC within the FP16 gate's tolerance."""
    from scipy.io import savemat

    from edge_had.cli import main

    scene = synthetic_scene(seed=SYNTHETIC_GATE_SEEDS[1], lines=192, width=256)
    path = tmp_path / "scene.mat"
    savemat(path, {"data": scene.cube, "wavelength": scene.wavelengths, "map": scene.gt.astype(np.uint8)})
    scores = {}
    for name, options in {
        "cpu": ["--device", "cpu"],
        "gpu": ["--device", cuda_device, "--net-precision", "fp16"],
    }.items():
        npy = tmp_path / f"{name}.npy"
        argv = ["detect", str(path), "--detector", "enhanced-rx", "--backend", "torch", "--npy", str(npy)]
        assert main([*argv, *options]) == 0, name
        scores[name] = np.load(npy)
    finite = np.isfinite(scores["cpu"])
    assert finite.sum() > 0.9 * finite.size and np.array_equal(np.isfinite(scores["gpu"]), finite)
    assert relative_error(scores["gpu"][finite], scores["cpu"][finite]) <= 2e-2
    aucs = {name: roc_auc(s, scene.gt, finite) for name, s in scores.items()}
    assert abs(aucs["gpu"] - aucs["cpu"]) <= AUC_TOLERANCE, aucs
