"""The accuracy gate sees FP16 arithmetic and scores the graphs `export` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_had.band_resampling import sensor_to_sensor_matrix  # noqa: E402
from edge_had.build import gate as gate_module  # noqa: E402
from edge_had.build.fp16_emulation import emulate_fp16_storage  # noqa: E402
from edge_had.cli import main  # noqa: E402
from edge_had.io.synthetic import synthetic_scene  # noqa: E402


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def fp16_chain() -> onnx.ModelProto:
    """x -> FP16 -> * c1 -> + c2 -> * c1 -> relu -> FP32, every constant and tensor FP16."""
    c1 = numpy_helper.from_array(np.array([300.0], np.float16), "c1")
    c2 = numpy_helper.from_array(np.array([-0.3333], np.float16), "c2")
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["h", "c1"], ["a"]),
        helper.make_node("Add", ["a", "c2"], ["b"]),
        helper.make_node("Mul", ["b", "c1"], ["c"]),
        helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        [c1, c2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fp16_storage_rounds_every_tensor_where_onnx_runtime_does_not():
    x = np.array([1.0, 0.001234, 1e-3, 0.2, -0.5], np.float32)
    half = np.float16
    c1, c2 = half(300.0), half(-0.3333)
    # FP16 storage, FP32 arithmetic: each result rounded to FP16 (overflow to inf)
    with np.errstate(over="ignore"):
        want = np.maximum(half(half(half(x) * c1) + c2) * c1, 0).astype(np.float32)
    want = np.where(np.isfinite(want), want, np.inf).astype(np.float32)
    assert np.isinf(want[0])  # 299.67 * 300 > 65504
    emulated = emulate_fp16_storage(fp16_chain())
    onnx.checker.check_model(emulated)
    np.testing.assert_array_equal(run(emulated, x), want)
    # what the gate measured before: ONNX Runtime's CPU drops the rounding between its FP32 kernels
    plain = run(fp16_chain(), x)
    assert np.isfinite(plain[0]) and abs(plain[0] - 89900.0) < 100.0


def test_on_sensor_bands_interpolates_each_pixel_on_wavelengths():
    scene = synthetic_scene(lines=12, width=10, bands=40, seed=5)
    target = np.linspace(420.0, 980.0, 57)
    seen = gate_module.on_sensor_bands(scene, 57, target)
    assert seen.cube.shape == (12, 10, 57) and np.array_equal(seen.wavelengths, target)
    assert seen.gt is scene.gt and seen.valid is scene.valid
    cube, wavelengths = scene.detection_cube(), scene.detection_wavelengths()
    for row, col in [(0, 0), (5, 7), (11, 9)]:
        want = np.interp(target, wavelengths, cube[row, col].astype(np.float64))
        np.testing.assert_allclose(seen.cube[row, col], want, rtol=1e-6)
    by_index = sensor_to_sensor_matrix(40, None, 57, target)  # the scene records none: band index
    np.testing.assert_allclose(by_index @ np.arange(40.0), np.linspace(0.0, 39.0, 57), atol=1e-12)


def test_export_gates_the_graphs_it_writes_with_fp16_arithmetic(
    untrained_bundle, tmp_path: Path, monkeypatch
) -> None:
    """The gate built graphs for each gate scene's own bands and wavelengths (another file than the
    one written), and scored FP16 through ONNX Runtime's unrounded CPU kernels."""
    scored: list[tuple[str, int]] = []
    original = gate_module.enhanced_rx_auc

    def recording(bundle, graph, scene, scorer="global"):
        scored.append((Path(graph).name, scene.detection_cube().shape[2]))
        return original(bundle, graph, scene, scorer)

    monkeypatch.setattr(gate_module, "enhanced_rx_auc", recording)
    monkeypatch.setitem(gate_module.TOLERANCES, "fp16", 1.0)  # the verdict is not what is tested
    wavelengths = tmp_path / "sensor.txt"
    np.savetxt(wavelengths, np.linspace(430.0, 950.0, 48))
    out = tmp_path / "export"
    model = str(untrained_bundle(seed=0))
    assert main(["export", "--model", model, "--bands", "48", "--wavelengths", str(wavelengths),
                 "--precision", "fp16", "--out", str(out), "--gate-data", "synthetic"]) == 0  # fmt: skip
    written = {path.name for path in out.glob("model_*.onnx")}
    assert written == {"model_fp32.onnx", "model_fp16.onnx"}
    # three synthetic scenes of the synthetic sensor's own bands, each seen through the 48 bands
    assert [bands for _, bands in scored] == [48] * 6
    assert {name for name, _ in scored} == {"model_fp32.onnx", "model_fp16_fp16_storage.onnx"}


def test_a_gate_scene_that_does_not_cover_the_sensor_is_left_out(untrained_bundle, tmp_path: Path) -> None:
    """Sensor bands beyond a gate scene's range copy its edge band: a 400-1000 nm sensor shown a
    430-860 nm scene gets 9 of 30 bands copied, a near-singular covariance. Such a scene is not
    gated on, and says why; a gate with no scene left fails."""
    from edge_had.build.onnx_export import ExportError
    from edge_had.models import load_bundle

    bundle = load_bundle(untrained_bundle(seed=1))
    recipe = gate_module.GraphRecipe(bundle, ["fp32", "fp16"])
    sensor_nm = np.linspace(400.0, 1000.0, 30)
    graphs = recipe.build(30, tmp_path / "g", sensor_nm)
    wide = synthetic_scene(lines=40, width=32, bands=40, seed=7)  # 400-2500 nm
    narrow = synthetic_scene(lines=40, width=32, bands=40, seed=8)
    narrow.wavelengths = np.linspace(430.0, 860.0, 40)
    assert gate_module.sensor_coverage(wide, sensor_nm) == 1.0
    assert gate_module.sensor_coverage(narrow, sensor_nm) == pytest.approx(21 / 30)  # 430-860 of 30 bands
    report = gate_module.run_gate(recipe, [(wide, "real"), (narrow, "real")], sensor=(30, sensor_nm, graphs))
    assert [row.scene for row in report.rows] == [wide.name]
    assert "cover 70% of the sensor's" in report.excluded[narrow.name]
    with pytest.raises(ExportError, match="no gate scene covers the sensor's bands"):
        gate_module.run_gate(recipe, [(narrow, "real")], sensor=(30, sensor_nm, graphs))


def test_fp16_storage_rounds_a_convolution_output_too():
    """A Conv's FP16 output is rounded before the next layer, as in the chain above (numpy's FP16
    rounding after each operator as the reference)."""
    w = numpy_helper.from_array(np.full((1, 1, 1, 1), 300.0, np.float16), "w")
    c2 = numpy_helper.from_array(np.array(-0.3333, np.float16), "c2")
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["h", "w"], ["a"]),
        helper.make_node("Add", ["a", "c2"], ["b"]),
        helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 5])],
        [w, c2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.array([1.0, 0.001234, 1e-3, 0.2, 300.0], np.float32).reshape(1, 1, 1, 5)
    half = np.float16
    with np.errstate(over="ignore"):
        want = (half(half(x) * half(300.0)) + half(-0.3333)).astype(np.float32)
    assert np.isinf(want[0, 0, 0, 4])  # 300 * 300 > 65504 once rounded to FP16
    unrounded = (x.astype(np.float64) * 300.0 + float(half(-0.3333))).astype(np.float32)
    assert not np.array_equal(want[np.isfinite(want)], unrounded[np.isfinite(want)])
    np.testing.assert_array_equal(run(emulate_fp16_storage(model), x), want)


def test_a_gate_row_passes_at_its_tolerance_exactly():
    # the module docstring: a reduced graph passes when |AUC - AUC_fp32| <= its tolerance
    row = gate_module.GateRow("s", 8, "real", {"fp32": 0.0, "fp16": 5e-4, "int8": 2e-3})
    assert row.passed("fp16") and row.passed("int8")
    beyond = gate_module.GateRow("s", 8, "real", {"fp32": 0.0, "fp16": 1e-3, "int8": 3e-3})
    assert not beyond.passed("fp16") and not beyond.passed("int8")


def test_a_gate_scene_covering_exactly_the_allowed_share_is_gated_on(
    untrained_bundle, tmp_path: Path
) -> None:
    """MAX_OUTSIDE_FRACTION = 0.25: a scene covering 6 of a sensor's 8 bands (75 %) is kept."""
    from edge_had.models import load_bundle

    bundle = load_bundle(untrained_bundle(seed=1))
    recipe = gate_module.GraphRecipe(bundle, ["fp32"])
    sensor_nm = np.linspace(400.0, 1100.0, 8)
    graphs = recipe.build(8, tmp_path / "g", sensor_nm)
    scene = synthetic_scene(lines=24, width=24, bands=40, seed=7)
    scene.wavelengths = np.linspace(400.0, 900.0, 40)
    assert gate_module.sensor_coverage(scene, sensor_nm) == 0.75
    report = gate_module.run_gate(recipe, [(scene, "real")], sensor=(8, sensor_nm, graphs))
    assert [row.scene for row in report.rows] == [scene.name] and not report.excluded


def test_the_gate_scores_feature_fusion_at_the_models_alphas(untrained_bundle, tmp_path: Path) -> None:
    """enhanced_rx_auc through ONNX Runtime against the same fusion computed with the torch
    networks (RX of x_k + alpha_spe f_spe + alpha_spa f_spa, the bundle's alphas)."""
    from edge_had.detectors.enhanced import enhance_parts, fuse_parts
    from edge_had.detectors.rx import rx_reference
    from edge_had.eval.metrics import roc_auc
    from edge_had.models import load_bundle

    bundle = load_bundle(untrained_bundle(seed=2, alpha_spe=0.3, alpha_spa=4.0))
    # 80 bands: x_k (K = 64) is not a resampling of fewer bands, its covariance well conditioned
    scene = synthetic_scene(lines=32, width=32, bands=80, seed=4)
    graphs = gate_module.GraphRecipe(bundle, ["fp32"]).build(80, tmp_path / "g")
    parts = enhance_parts(bundle, scene.detection_cube(), scene.valid, scene.detection_wavelengths())

    def auc(alpha_spe: float, alpha_spa: float) -> float:
        scores = fuse_parts(
            parts, alpha_spe, alpha_spa, "feature", lambda x: rx_reference(x, mask=scene.valid)
        )
        return roc_auc(scores, scene.gt, scene.valid)

    measured = gate_module.enhanced_rx_auc(bundle, graphs["fp32"], scene)
    assert measured == pytest.approx(auc(0.3, 4.0), abs=1e-5)
    assert abs(auc(0.3, 0.0) - auc(0.3, 4.0)) > 1e-3  # the spatial part counts in this scene
