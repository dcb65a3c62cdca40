"""The runner contract, the backend choice (auto priority, reasons, no silent fallback) and the
enhanced detector on each CPU backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_had.build.onnx_export import ExportError
from edge_had.detectors.enhanced import EnhancedDetector
from edge_had.eval.metrics import roc_auc
from edge_had.io.synthetic import synthetic_scene
from edge_had.models import load_bundle
from edge_had.runtime import BackendError, Runner, choose_backend, enhancement_runner
from edge_had.runtime import select as select_module
from edge_had.runtime.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def bundle_dir(untrained_bundle) -> Path:
    return untrained_bundle(seed=1, k=16, hidden=8, blocks=2, alpha_spe=1.0, alpha_spa=0.5)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    """Pretend a chosen set of modules is installed."""

    def pretend(*modules: str) -> None:
        monkeypatch.setattr(select_module, "_installed", lambda name: name in modules)

    return pretend


# --------------------------------------------------------------------------- backend choice


def test_auto_follows_the_priority_and_says_why_it_skipped(installed) -> None:
    installed("onnx", "onnxruntime")
    choice = choose_backend("auto", "fp32")
    assert choice.backend == "onnxruntime"
    assert choice.skipped == {
        "tensorrt": "tensorrt and pycuda not installed (on a Jetson both come with JetPack)"
    }
    installed("tensorrt", "pycuda", "onnx", "onnxruntime")
    assert choose_backend("auto", "fp32", engine="model.engine").backend == "tensorrt"
    skipped = choose_backend("auto", "fp32").skipped["tensorrt"]
    assert "no TensorRT engine" in skipped
    installed()
    choice = choose_backend("auto", "fp32")
    assert choice.backend == "torch" and set(choice.skipped) == {"tensorrt", "onnxruntime"}
    assert "pip install 'edge-had[onnx]'" in choice.skipped["onnxruntime"]
    # --device cuda: ONNX Runtime (CPU provider here) is passed over for torch on the GPU, saying why
    installed("onnx", "onnxruntime")
    choice = choose_backend("auto", "fp32", device="cuda")
    assert choice.backend == "torch" and "--device cuda asks for the GPU" in choice.skipped["onnxruntime"]


def test_a_requested_backend_never_falls_back_silently(installed) -> None:
    installed()
    with pytest.raises(BackendError, match="--backend onnxruntime was requested but cannot run fp32"):
        choose_backend("onnxruntime", "fp32")
    with pytest.raises(BackendError, match="torch has no INT8 path"):
        choose_backend("torch", "int8")
    with pytest.raises(BackendError, match="torch FP16 needs a CUDA device"):
        choose_backend("torch", "fp16", device="cpu")
    assert choose_backend("torch", "fp32").reason == "requested"


def test_a_file_given_by_name_is_run_or_the_user_is_told(installed, bundle_dir: Path, capsys) -> None:
    """`--backend torch --onnx X` ran torch and ignored the graph, as did `--backend onnxruntime
    --engine Y` (and `--device cuda` with onnxruntime ran on the CPU); under `auto` with
    onnxruntime missing, an --onnx graph was passed over in silence. Devices are checked."""
    from edge_had.cli import main

    installed("onnx", "onnxruntime")
    with pytest.raises(
        BackendError, match="torch runs the model itself: the --onnx/--engine given would not be used"
    ):
        choose_backend("torch", "fp32", onnx="model.onnx")
    with pytest.raises(BackendError, match="the --engine given is TensorRT's: onnxruntime would not use it"):
        choose_backend("onnxruntime", "fp32", engine="model.engine")
    assert choose_backend("onnxruntime", "fp32", onnx="m.onnx", engine="m.engine").backend == "onnxruntime"
    with pytest.raises(
        BackendError, match="onnxruntime runs on the CPU here: --device cuda"
    ):  # it ran on the CPU
        choose_backend("onnxruntime", "fp32", device="cuda")
    for device in ("gpu", "mps", "cuda:x"):  # a torch traceback, or the CPU in silence
        with pytest.raises(SystemExit):
            main(["detect", "x.mat", "--device", device])
        assert "choose cpu, cuda or cuda:N" in capsys.readouterr().err
    installed()  # no onnxruntime: auto runs torch, and says the graph is not used
    scene = synthetic_scene(lines=16, width=16, bands=24, seed=0)
    np.save(bundle_dir.parent / "scene.npy", scene.cube)
    graph = bundle_dir.parent / "given.onnx"
    graph.write_bytes(b"a graph")
    argv = ["detect", str(bundle_dir.parent / "scene.npy"), "--model", str(bundle_dir), "--onnx", str(graph)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "warning: onnxruntime did not run, torch ran instead" in err and "the --onnx given is not used" in err
    )


def test_a_broken_onnx_install_lets_auto_go_on_to_torch(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnx present but failing to import (a numpy ABI mismatch): auto chose onnxruntime (the
    package is found) and the on-the-fly export crashed the command with an ImportError traceback."""
    import builtins
    import sys

    pytest.importorskip("onnxruntime", reason="auto chooses onnxruntime only where it is installed")
    real_import = builtins.__import__

    def broken(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("numpy.core.multiarray failed to import")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", broken)
    detector = EnhancedDetector(model=str(bundle_dir))
    scene = synthetic_scene(lines=16, width=16, bands=24, seed=0)
    detector.score(scene.cube, scene.valid, None)
    assert detector.backend.backend == "torch"
    assert "installed but cannot be imported" in detector.fallbacks["onnxruntime"]


def test_messages_name_the_actual_cause(tmp_path: Path) -> None:
    """A --model folder that does not exist was reported as its config.json missing."""
    from edge_had.models import ModelError

    with pytest.raises(ModelError, match="no such model folder"):
        load_bundle(tmp_path / "typo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json: missing"):
        load_bundle(tmp_path / "empty")


def test_int8_needs_a_quantized_graph_everywhere(installed) -> None:
    installed("onnx", "onnxruntime")
    with pytest.raises(BackendError) as error:
        choose_backend("auto", "int8")
    message = str(error.value)
    assert (
        "tensorrt:" in message
        and "onnxruntime: INT8 needs a quantized graph" in message
        and "torch:" in message
    )
    assert choose_backend("auto", "int8", onnx="model_int8.onnx").backend == "onnxruntime"
    with pytest.raises(BackendError, match="unknown precision"):
        choose_backend("auto", "int4")
    with pytest.raises(BackendError, match="unknown backend"):
        choose_backend("openvino", "fp32")


# --------------------------------------------------------------------------- runner contract


class EchoRunner(Runner):
    backend = "torch"

    def __init__(self) -> None:
        super().__init__("fp32")
        self.events: list[str] = []

    def activate_impl(self) -> None:
        self.events.append("activate")

    output_names = ("out", "negated")

    def infer_impl(self, feed, outputs):
        computed = {"out": feed["x"] * 2, "negated": -feed["x"]}
        return {name: computed[name] for name in outputs}

    def deactivate_impl(self) -> None:
        self.events.append("deactivate")


def test_runner_contract_context_manager_and_timing() -> None:
    runner = EchoRunner()
    with pytest.raises(BackendError, match="before activate"):
        runner.infer({"x": np.ones(3)})
    with runner as active:
        assert active.is_active
        out = active.infer({"x": np.arange(3, dtype=np.float64)})
        active.infer({"x": np.ones(2)})
        assert list(active.infer({"x": np.ones(2)}, ["negated"])) == ["negated"]  # only what was asked
        for wrong in (["sum"], []):
            with pytest.raises(BackendError, match="asked for outputs"):
                active.infer({"x": np.ones(2)}, wrong)
    assert out["out"].dtype == np.float32 and list(out["out"]) == [0, 2, 4]  # fed as float32
    assert sorted(out) == ["negated", "out"]  # every output by default
    assert runner.events == ["activate", "deactivate"] and not runner.is_active
    assert len(runner.inference_times) == 3 and runner.last_inference_time == runner.inference_times[-1] > 0
    assert runner.name == "torch-fp32"


def test_onnxruntime_and_torch_runners_agree(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    bundle = load_bundle(bundle_dir)
    feed = {"cube": (0.05 * np.random.default_rng(0).standard_normal((1, 30, 9, 21))).astype(np.float32)}
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        choice = choose_backend(backend, "fp32")
        with enhancement_runner(choice, bundle, 30, workdir=tmp_path) as runner:
            outputs[backend] = runner.infer(feed)
            assert runner.backend == backend and tuple(runner.output_names) == tuple(outputs[backend])
            only = runner.infer(feed, ["enhanced"])  # one output asked for: that one, the same values
            assert list(only) == ["enhanced"]
            assert np.array_equal(only["enhanced"], outputs[backend]["enhanced"])
    for name, want in outputs["torch"].items():
        got = outputs["onnxruntime"][name]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name


def test_a_whole_scene_leaves_no_working_memory_in_the_runner(bundle_dir: Path, tmp_path: Path) -> None:
    """ONNX Runtime's arena kept a whole scene's intermediates (~0.8 GB on a 512 x 1024 x 224
    scene) through the scoring and until the next scene; after each scene a new session frees it
    (peak RSS of `detect --detector enhanced-rx`: bench/test_bench_memory.py)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    bundle = load_bundle(bundle_dir)
    feed = {"cube": (0.05 * np.random.default_rng(1).standard_normal((1, 30, 9, 21))).astype(np.float32)}
    with enhancement_runner(choose_backend("onnxruntime", "fp32"), bundle, 30, workdir=tmp_path) as runner:
        before, session = runner.infer(feed), runner.session
        runner.free_working_memory()
        assert runner.is_active and runner.session is not None and runner.session is not session
        after = runner.infer(feed)
    assert all(np.array_equal(after[name], before[name]) for name in before)

    scene = synthetic_scene(lines=24, width=20, bands=30, seed=2)
    detector = EnhancedDetector(bundle_dir, backend="onnxruntime")
    scores = detector.score(scene.cube, scene.valid, scene.wavelengths)
    runner = detector.runner_for(30, scene.wavelengths)
    session = runner.session
    again = detector.score(scene.cube, scene.valid, scene.wavelengths)
    assert runner.session is not session  # the scene's session was let go after it
    assert np.array_equal(again, scores)


def test_a_graph_exported_on_the_fly_leaves_no_file_behind(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``workdir`` the graph goes to a temporary folder that is removed once the runner
    holds it (each start of a detector or stream used to leave one in /tmp); the runner still
    re-activates from memory, with the same outputs."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    feed = {"cube": (0.05 * np.random.default_rng(1).standard_normal((1, 30, 7, 11))).astype(np.float32)}
    runner = enhancement_runner(choose_backend("onnxruntime", "fp32"), load_bundle(bundle_dir), 30)
    assert list(scratch.iterdir()) == []
    with runner:
        first = runner.infer(feed)
    with runner:  # a second session, built from the bytes the runner kept
        again = runner.infer(feed)
    assert list(scratch.iterdir()) == []
    for name, values in first.items():
        assert np.array_equal(values, again[name]), name


def test_a_given_onnx_file_must_fit_the_model_sensor_and_precision(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from edge_had.build.onnx_export import export_onnx

    bundle = load_bundle(bundle_dir)
    graph = export_onnx(bundle, 30, tmp_path / "b30.onnx")
    choice = choose_backend("onnxruntime", "fp32")
    enhancement_runner(choice, bundle, 30, onnx=graph)  # fits
    with pytest.raises(BackendError, match="it takes 30 bands, the scene has 40"):
        enhancement_runner(choice, bundle, 40, onnx=graph)
    with pytest.raises(BackendError, match="its precision is fp32, fp16 was asked for"):
        enhancement_runner(choose_backend("onnxruntime", "fp16"), bundle, 30, onnx=graph)
    other = load_bundle(bundle_dir)
    other.sha256 = "0" * 64
    with pytest.raises(BackendError, match="not this model"):
        enhancement_runner(choice, other, 30, onnx=graph)
    hybrid = load_bundle(bundle_dir)  # e.g. a hybrid-RX stream, which adds f_spe at its own alpha
    hybrid.config = dataclasses.replace(hybrid.config, alpha_spe=hybrid.config.alpha_spe * 2, alpha_spa=0.0)
    with pytest.raises(
        BackendError, match="it adds the features at alphas.*`edge-had export --scorer hybrid`"
    ):
        enhancement_runner(choice, hybrid, 30, onnx=graph)
    # same band count, other resampling: a graph for band index is refused for a scene with
    # wavelengths, and one exported for wavelengths for another set or for none
    wavelengths = np.linspace(450.0, 2400.0, 30)
    with pytest.raises(
        BackendError, match="it resamples on band index, the scene needs on wavelengths 450-2400"
    ):
        enhancement_runner(choice, bundle, 30, wavelengths, onnx=graph)
    on_wavelengths = export_onnx(bundle, 30, tmp_path / "w30.onnx", wavelengths=wavelengths)
    enhancement_runner(choice, bundle, 30, wavelengths, onnx=on_wavelengths)  # fits
    with pytest.raises(BackendError, match="the scene needs on band index"):
        enhancement_runner(choice, bundle, 30, onnx=on_wavelengths)
    with pytest.raises(BackendError, match="band 1 at 517.241 nm, the scene's at 503.448 nm"):
        enhancement_runner(choice, bundle, 30, np.linspace(450.0, 2000.0, 30), onnx=on_wavelengths)
    enhancement_runner(choice, bundle, 30, wavelengths.round(2), onnx=on_wavelengths)  # rounded: the same


def test_a_given_onnx_file_is_read_once_and_a_missing_one_named(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes the checks look at are the bytes the session runs: one read of the file, and
    nothing read again when the runner starts (the file may be gone by then)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnx

    from edge_had.build.onnx_export import export_onnx

    bundle = load_bundle(bundle_dir)
    graph = export_onnx(bundle, 30, tmp_path / "b30.onnx")
    reads: list[str] = []
    read_bytes, load = Path.read_bytes, onnx.load

    def counted_read_bytes(self: Path) -> bytes:
        reads.append(str(self))
        return read_bytes(self)

    def counted_load(source: object, *args: object, **kwargs: object) -> object:
        reads.append(str(source))
        return load(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
    monkeypatch.setattr(onnx, "load", counted_load)
    runner = enhancement_runner(choose_backend("onnxruntime", "fp32"), bundle, 30, onnx=graph)
    graph.unlink()
    with runner:
        runner.infer({"cube": np.zeros((1, 30, 4, 5), np.float32)})
    assert reads == [str(graph)]
    with pytest.raises(BackendError, match="b30.onnx: ONNX file not found"):
        enhancement_runner(choose_backend("onnxruntime", "fp32"), bundle, 30, onnx=graph)


def test_a_graph_changed_after_export_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    """One flipped byte in a weight passed every metadata check and scored 162 % off (a review);
    the graph's checksum, recorded at export, catches it."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnx

    from edge_had.build.onnx_export import export_onnx

    bundle = load_bundle(bundle_dir)
    graph = export_onnx(bundle, 30, tmp_path / "b30.onnx")
    choice = choose_backend("onnxruntime", "fp32")
    enhancement_runner(choice, bundle, 30, onnx=graph)  # as exported: fits
    model = onnx.load(str(graph))
    weight = next(t for t in model.graph.initializer if t.raw_data)
    flipped = bytearray(weight.raw_data)
    flipped[0] ^= 0x40
    weight.raw_data = bytes(flipped)
    onnx.save(model, str(graph))
    with pytest.raises(BackendError, match="differ from what was exported"):
        enhancement_runner(choice, bundle, 30, onnx=graph)


def test_an_engine_must_come_from_the_model_and_alphas_it_stands_for(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """`edge-had build` records the source graph's metadata in the engine's sidecar; a mismatch is
    refused before TensorRT is touched (so this runs on any machine)."""
    from edge_had.build.engine_cache import EngineKey, store
    from edge_had.runtime.select import BackendChoice

    bundle = load_bundle(bundle_dir)
    source = {"weights_sha256": bundle.sha256, "alpha_spe": bundle.config.alpha_spe,
              "alpha_spa": bundle.config.alpha_spa, "bands": 30, "precision": "fp16"}  # fmt: skip
    key = EngineKey.for_line_widths("0" * 64, "10.3.0", "sm_87", "fp16", bands=30, lines=22,
                                    min_width=64, opt_width=256, max_width=1024)  # fmt: skip
    choice = BackendChoice("tensorrt", "fp16", "test", {})
    for changes, message in (
        ({"weights_sha256": "1" * 64}, "not this model"),
        ({"alpha_spa": 0.0}, "it adds the features at alphas"),
        ({"bands": 40}, "it takes 40 bands"),
    ):
        engine = store(tmp_path / str(len(message)), key, b"engine", source={**source, **changes})
        with pytest.raises(BackendError, match=message) as caught:
            enhancement_runner(choice, bundle, 30, engine=engine)
        assert "rebuild the engine with `edge-had build`" in str(caught.value)


def test_torch_runner_refuses_what_it_cannot_do(bundle_dir: Path) -> None:
    model = load_bundle(bundle_dir).model_for(30)
    with pytest.raises(BackendError, match="INT8"):
        TorchRunner(model, "int8")
    with pytest.raises(BackendError, match="CUDA"):
        TorchRunner(model, "fp16", "cpu")


def test_enhanced_detector_reports_its_backend_and_backends_agree(bundle_dir: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    scene = synthetic_scene(lines=48, width=40, bands=60, seed=4)
    aucs = {}
    for backend in ("torch", "onnxruntime"):
        detector = EnhancedDetector(bundle_dir, backend=backend)
        scores = detector.score(scene.cube, scene.valid, scene.wavelengths)
        aucs[backend] = roc_auc(scores, scene.gt, scene.valid)
        assert detector.settings["backend"]["backend"] == backend
        assert detector.settings["backend"]["reason"] == "requested"
    assert abs(aucs["torch"] - aucs["onnxruntime"]) <= 1e-4
    auto = EnhancedDetector(bundle_dir).settings["backend"]
    assert auto["reason"].startswith("auto") and "tensorrt" in auto["skipped"]


def test_auto_falls_back_past_a_corrupt_onnx_and_says_so(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from edge_had.build.onnx_export import export_onnx

    scene = synthetic_scene(lines=24, width=20, bands=30, seed=2)
    good = export_onnx(load_bundle(bundle_dir), 30, tmp_path / "good.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated copy
    detector = EnhancedDetector(bundle_dir, onnx=corrupt)
    assert detector.backend.backend == "onnxruntime"
    scores = detector.score(scene.cube, scene.valid, None)
    assert np.isfinite(scores).all()
    backend = detector.settings["backend"]
    assert backend["backend"] == "torch" and "failed to load" in backend["skipped"]["onnxruntime"]
    with pytest.raises(BackendError, match="corrupt.onnx"):  # asked for by name: no fallback
        EnhancedDetector(bundle_dir, backend="onnxruntime", onnx=corrupt).score(scene.cube, scene.valid, None)


def test_each_scene_records_the_backend_that_enhanced_it(bundle_dir: Path, tmp_path: Path) -> None:
    """A 30-band graph over scenes of 30, 24 and 30 bands: onnxruntime, torch (the graph does not
    fit), onnxruntime again; the eval report said torch for all three."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from edge_had.build.onnx_export import export_onnx
    from edge_had.eval.protocol import evaluate_scene

    graph = export_onnx(load_bundle(bundle_dir), 30, tmp_path / "b30.onnx")
    detector = EnhancedDetector(bundle_dir, onnx=graph)
    ran = []
    for bands in (30, 24, 30):
        scene = synthetic_scene(lines=16, width=16, bands=bands, seed=bands)
        scene.wavelengths = None  # the graph resamples on band index
        ran.append(evaluate_scene(detector, scene)[0]["backend"])
    assert ran == ["onnxruntime fp32", "torch fp32", "onnxruntime fp32"]


def test_a_foreign_onnx_is_refused_in_a_short_line_naming_it(bundle_dir: Path, tmp_path: Path) -> None:
    """An ONNX file from elsewhere (no edge-had metadata), given to the runner or to the factory:
    the error names the file and why, and does not dump the graph (it once quoted the whole
    protobuf, 13,635 characters for this small model)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnx

    from edge_had.build.onnx_export import export_onnx
    from edge_had.runtime.onnxruntime_runner import OnnxRuntimeRunner

    graph = onnx.load(str(export_onnx(load_bundle(bundle_dir), 30, tmp_path / "good.onnx")))
    del graph.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(graph, str(foreign))
    scene = synthetic_scene(lines=24, width=20, bands=30, seed=2)
    detector = EnhancedDetector(bundle_dir, backend="onnxruntime", onnx=foreign)
    for attempt in (lambda: OnnxRuntimeRunner(foreign), lambda: detector.score(scene.cube, scene.valid)):
        with pytest.raises((BackendError, ExportError)) as caught:
            attempt()
        message = str(caught.value)
        assert str(foreign) in message and "not an edge-had export" in message
        assert len(message) < 400 and "ir_version" not in message and message.count(str(foreign)) == 1


def test_damaged_edge_had_metadata_is_a_clear_error_and_auto_falls_back(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A hand-edited file whose edge_had.* value no longer parses: the error names the file and
    the key, and `auto` goes on with torch (a bare JSONDecodeError once escaped both)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnx

    from edge_had.build.onnx_export import export_onnx

    graph = onnx.load(str(export_onnx(load_bundle(bundle_dir), 30, tmp_path / "good.onnx")))
    for entry in graph.metadata_props:
        if entry.key == "edge_had.bands":
            entry.value = "[30"
    damaged = tmp_path / "damaged.onnx"
    onnx.save(graph, str(damaged))
    scene = synthetic_scene(lines=24, width=20, bands=30, seed=2)
    with pytest.raises(BackendError, match=r"damaged\.onnx: its edge_had\.bands metadata is damaged"):
        EnhancedDetector(bundle_dir, backend="onnxruntime", onnx=damaged).score(scene.cube, scene.valid)
    detector = EnhancedDetector(bundle_dir, onnx=damaged)
    assert np.isfinite(detector.score(scene.cube, scene.valid)).all()
    assert detector.settings["backend"]["backend"] == "torch"


@pytest.mark.parametrize(("device", "index"), [("cuda:1", 1), ("cuda", 0), ("cpu", 0), ("cuda:x", None)])
def test_a_tensorrt_engine_runs_on_the_gpu_device_names(
    bundle_dir: Path, tmp_path: Path, device, index
) -> None:
    """--device cuda:1 reached the torch runner only: an engine ran on GPU 0 whatever it said (a
    review). Constructing the runner needs no TensorRT (an engine without a sidecar is unchecked)."""
    from edge_had.runtime.select import BackendChoice

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    choice = BackendChoice("tensorrt", "fp16", "requested")
    build = lambda: enhancement_runner(choice, load_bundle(bundle_dir), 30, engine=engine, device=device)  # noqa: E731
    if index is None:
        with pytest.raises(BackendError, match="runs on cuda or cuda:N"):
            build()
    else:
        assert build().device_index == index
