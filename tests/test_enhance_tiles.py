"""Offline enhancement in bands of lines (edge_had/detectors/enhance_tiles.py) against the
whole-scene run of the same runner: the same parts and scores within float32 round-off."""

from __future__ import annotations

import numpy as np
import pytest

from edge_had.detectors import enhance_tiles
from edge_had.detectors.enhanced import (
    enhance_parts,
    enhance_whole_scene,
    enhanced_feature_cube,
    fuse_parts,
)
from edge_had.detectors.registry import make_detector
from edge_had.detectors.rx import rx_reference
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import load_bundle
from edge_had.runtime import enhancement_runner
from edge_had.runtime.select import BackendChoice


@pytest.fixture(scope="module")
def scene():
    scene = synthetic_scene(lines=45, width=40, bands=120, seed=5)
    valid = np.ones(scene.cube.shape[:2], bool)
    valid[[0, 6, 7, 30], [3, 39, 0, 17]] = False  # on the first line and either side of a band edge
    return scene, valid


@pytest.fixture(scope="module", params=["shipped", "four-blocks"])
def bundle(request, untrained_bundle):
    """The shipped model (3 blocks: 3 lines of halo) and one reaching 4 lines with another spatial
    student, at the alphas of global RX (spatial student run) and of hybrid RX (left out)."""
    if request.param == "shipped":
        return load_bundle(None)
    return load_bundle(
        untrained_bundle(seed=1, k=16, hidden=8, blocks=4, alpha_spa=0.5, hybrid_alpha_spe=2.0)
    )


def close_to(got: np.ndarray, want: np.ndarray) -> None:
    """Equal within a few float32 roundings of the largest value (ONNX Runtime: the same bits)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(np.float32).eps * np.abs(want).max())


@pytest.mark.parametrize("scorer", ["global", "hybrid"])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_bands_of_lines_give_the_whole_scene_parts(scene, bundle, scorer, backend):
    """Bands of 7 lines (the last one 3): every band edge, the scene's edges and invalid pixels next
    to a band edge; the spatial student pools the whole scene (f_spa far from zero)."""
    scene, valid = scene
    bundle = bundle.for_scorer(scorer)
    choice = BackendChoice(backend, "fp32", "test")
    with enhancement_runner(choice, bundle, scene.cube.shape[2], scene.wavelengths) as runner:
        assert enhance_tiles.split_networks(runner, bundle) is not None  # else the test runs whole
        whole = enhance_whole_scene(bundle, scene.cube, valid, runner)
        tiled = enhance_parts(bundle, scene.cube, valid, scene.wavelengths, runner, tile_lines=7)
        fused = enhanced_feature_cube(
            bundle,
            scene.cube,
            valid,
            scene.wavelengths,
            runner,
            bundle.config.alphas_for(scorer),
            tile_lines=7,
        )
    same = np.testing.assert_array_equal if backend == "onnxruntime" else close_to  # the same bits
    for name in ("x_k", "f_spe", "f_spa"):
        same(tiled[name], whole[name])
    assert (np.abs(whole["f_spa"]).max() > 0) == (scorer == "global")
    alphas = bundle.config.alphas_for(scorer)
    same(fused, fuse_parts(whole, *alphas, "feature", lambda cube: cube))
    # the fused cube's two passes (x_k from the adapter alone for the spatial student, then the
    # sum band by band) give the bits of the parts' one pass, with either backend
    np.testing.assert_array_equal(fused, fuse_parts(tiled, *alphas, "feature", lambda cube: cube))
    # RX of these (correlated) scenes moves by up to 8e-6 relative under a random 1-ulp change
    # of f_spe; torch's CPU convolutions choose other algorithms by height (f_spe within 4 ulp)
    np.testing.assert_allclose(
        rx_reference(fused, mask=valid),
        fuse_parts(whole, *alphas, "feature", lambda c: rx_reference(c, mask=valid)),
        rtol=1e-4,
    )


def test_torch_bands_run_the_spatial_student_once_on_the_whole_scene(scene):
    """The bands run the adapter and the spectral network only: the spatial student runs once,
    on the assembled x_k (it ran on every band too, and that output was dropped)."""
    from edge_had.runtime.torch_runner import TorchRunner

    scene, valid = scene
    bundle = load_bundle(None)
    model = bundle.model_for(scene.cube.shape[2], scene.wavelengths)
    calls = {"spectral": [], "spatial": []}
    for name, shapes in calls.items():
        getattr(model, name).register_forward_hook(
            lambda module, inputs, output, shapes=shapes: shapes.append(tuple(inputs[0].shape))
        )
    with TorchRunner(model) as runner:
        enhance_parts(bundle, scene.cube, valid, scene.wavelengths, runner, tile_lines=16)
        assert calls == {
            "spectral": [(1, 64, 19, 40), (1, 64, 22, 40), (1, 64, 16, 40)],  # 3-line halo
            "spatial": [(1, 64, 45, 40)],
        }
        for name in calls:
            calls[name].clear()
        # a scene that fits one band: one run of the whole model
        enhanced_feature_cube(bundle, scene.cube, valid, scene.wavelengths, runner, (1.0, 4.0), tile_lines=45)
        assert calls == {"spectral": [(1, 64, 45, 40)], "spatial": [(1, 64, 45, 40)]}


def test_onnxruntime_cuts_the_graph_once_per_runner_and_not_for_a_scene_of_one_band(scene, monkeypatch):
    """A scene that fits one band runs the whole graph once (no cut, no other session); scenes in
    bands of lines cut it once per runner (cube -> x_k, f_spe; cube -> x_k; x_k -> f_spa), not per
    scene. After a scene the runner lets every session that ran go (free_working_memory)."""
    import onnx

    extracted = []
    extractor = onnx.utils.Extractor

    def counting_extractor(model):
        extracted.append(len(model.graph.node))
        return extractor(model)

    monkeypatch.setattr(onnx.utils, "Extractor", counting_extractor)
    scene, valid = scene
    detector = make_detector("enhanced-rx", backend="onnxruntime")
    wavelengths = scene.wavelengths
    runner = detector.runner_for(scene.cube.shape[2], wavelengths)
    sessions, infer = [], runner.infer_impl  # what the main graph's session is asked for

    def counting_infer(feed, outputs):
        sessions.append(outputs)
        return infer(feed, outputs)

    monkeypatch.setattr(runner, "infer_impl", counting_infer)
    whole = enhance_whole_scene(detector.bundle, scene.cube, valid, runner)
    sessions.clear()
    one_band = detector.score(scene.cube, valid, wavelengths)  # 45 lines of 40 pixels: 819 per band
    assert extracted == [] and sessions == [("x_k", "f_spe", "f_spa")] and runner.parts == {}
    alphas = detector.bundle.config.alphas_for("global")
    np.testing.assert_array_equal(
        one_band, fuse_parts(whole, *alphas, "feature", lambda x: detector.detect(x, valid))
    )
    monkeypatch.setattr(enhance_tiles, "TILE_PIXELS", 10 * scene.cube.shape[1])
    for _ in range(3):
        tiled = detector.score(scene.cube, valid, wavelengths)
        np.testing.assert_array_equal(tiled, one_band)
    assert len(extracted) == 3 and sessions == [("x_k", "f_spe", "f_spa")]  # the main graph: not again
    assert all(not part.is_active for part in runner.parts.values())  # their sessions let go


def test_a_runner_that_cannot_split_the_graph_runs_the_scene_whole(scene):
    """A runner other than torch / ONNX Runtime FP32-FP16 (a TensorRT engine, an INT8 graph) gets
    the whole scene in one run, as before."""
    from edge_had.runtime.base import Runner
    from edge_had.runtime.torch_runner import TorchRunner

    class Engine(Runner):  # stands in for a TensorRT engine: only the whole graph
        backend = "tensorrt"

        def __init__(self, inner: Runner) -> None:
            super().__init__("fp32")
            self.inner, self.output_names, self.fed = inner, inner.output_names, []

        def activate_impl(self) -> None:
            self.inner.activate()

        def infer_impl(self, feed, outputs):
            self.fed.append(feed["cube"].shape)
            return self.inner.infer(feed, outputs)

        def deactivate_impl(self) -> None:
            self.inner.deactivate()

    scene, valid = scene
    bundle = load_bundle(None)
    model = bundle.model_for(scene.cube.shape[2], scene.wavelengths)
    with Engine(TorchRunner(model)) as engine, TorchRunner(model) as torch_runner:
        assert enhance_tiles.split_networks(engine, bundle) is None
        parts = enhance_parts(bundle, scene.cube, valid, scene.wavelengths, engine, tile_lines=7)
        fused = enhanced_feature_cube(
            bundle, scene.cube, valid, scene.wavelengths, engine, (1.0, 4.0), tile_lines=7
        )
        tiled = enhance_parts(bundle, scene.cube, valid, scene.wavelengths, torch_runner, tile_lines=7)
    assert engine.fed == [(1, 120, 45, 40)] * 2  # one run each, the whole scene
    for name in parts:
        close_to(parts[name], tiled[name])
    close_to(fused, fuse_parts(tiled, 1.0, 4.0, "feature", lambda cube: cube))


def test_enhanced_detectors_score_real_scene_as_the_whole_scene_run(data_dir, monkeypatch):
    """abu-beach-1 with the shipped model through the detectors (ONNX Runtime, as `detect` runs):
    bands of 13 lines score as one whole-scene run of the same runner."""
    from edge_had.band_resampling import wavelengths_to_use
    from edge_had.io import load_scene

    scene = load_scene(data_dir / "abu-beach-1.mat")
    cube = scene.detection_cube()
    monkeypatch.setattr(enhance_tiles, "TILE_PIXELS", 13 * cube.shape[1])
    for name in ("enhanced-rx", "enhanced-hybrid-rx"):
        detector = make_detector(name, backend="onnxruntime")
        tiled = detector.score(cube, scene.valid, scene.detection_wavelengths())
        wavelengths = wavelengths_to_use(detector.resample, scene.detection_wavelengths())
        whole = enhance_whole_scene(
            detector.bundle, cube, scene.valid, detector.runner_for(cube.shape[2], wavelengths)
        )
        alphas = detector.bundle.config.alphas_for(detector.scorer)
        reference = fuse_parts(whole, *alphas, "feature", lambda x, d=detector: d.detect(x, scene.valid))
        np.testing.assert_allclose(tiled, reference, rtol=1e-6)


def test_the_torch_runners_parts_refuse_to_run_inactive(untrained_bundle) -> None:
    """infer() refused an inactive runner, but the parts the tiled path runs (infer_spectral,
    infer_adapter, infer_spatial) ran anyway - on CUDA after deactivate() the model is back on the
    CPU (a review)."""
    import numpy as np
    import pytest

    from edge_had.models.bundle import load_bundle
    from edge_had.runtime.base import BackendError
    from edge_had.runtime.torch_runner import TorchRunner

    bundle = load_bundle(untrained_bundle(seed=2))
    runner = TorchRunner(bundle.model_for(12))
    cube = np.zeros((1, 12, 4, 5), np.float32)
    x_k = np.zeros((1, bundle.config.k, 4, 5), np.float32)
    calls = [
        ("infer_spectral", lambda: runner.infer_spectral(cube)),
        ("infer_spectral", lambda: runner.infer_adapter(cube)),
        ("infer_spatial", lambda: runner.infer_spatial(x_k)),
    ]
    for call, run in calls:
        with pytest.raises(BackendError, match=rf"{call}\(\) before activate\(\)"):
            run()
    with runner:
        assert runner.infer_adapter(cube)["x_k"].shape == (1, bundle.config.k, 4, 5)
