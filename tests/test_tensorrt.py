"""The TensorRT path: engine build, TensorRT runner, edge_had.cuda.

* CPU: the modules import without tensorrt and pycuda, and every entry point then raises a clear
  :class:`BackendError`, not an ImportError. The control flow of the build and of the runner
  (strongly typed flags, parser errors, cache hits, buffer growth, context push/pop from worker
  threads, freeing) runs against small in-memory stand-ins for ``tensorrt`` and
  ``pycuda.driver``; they check the calling conventions, not TensorRT.
* GPU (``trt`` + ``gpu`` markers, skipped with the reason where tensorrt, pycuda or a GPU is
  missing): a real engine is built from a small exported ONNX and compared to onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fake_cuda import DeviceMemory, fake_driver

import edge_had.build.tensorrt_engine as tensorrt_engine
from edge_had.build.engine_cache import EngineCacheError, EngineKey, sidecar_path
from edge_had.build.tensorrt_engine import (
    EngineBuildError,
    TensorRTUnavailableError,
    add_build_arguments,
    build_engine,
    network_flags,
    run_build,
)
from edge_had.cuda import CudaDevice, CudaUnavailableError, gpu_sm
from edge_had.runtime.base import BackendError
from edge_had.runtime.tensorrt_runner import TensorRTRunner

TRT_FILES = [
    Path(tensorrt_engine.__file__),
    Path(tensorrt_engine.__file__).with_name("engine_cache.py"),
    Path(sys.modules[TensorRTRunner.__module__].__file__ or ""),
    Path(sys.modules[CudaDevice.__module__].__file__ or ""),
]


@pytest.fixture
def no_gpu_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` and ``import pycuda.driver`` fail, as on a CPU-only install."""
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    tensorrt_engine.trt_logger.cache_clear()


# --------------------------------------------------------------------------- without tensorrt/pycuda


def test_modules_import_without_tensorrt_or_pycuda() -> None:
    code = (
        "import sys\n"
        "for name in ('tensorrt', 'pycuda', 'pycuda.driver'): sys.modules[name] = None\n"
        "import edge_had.cuda, edge_had.build.tensorrt_engine, edge_had.runtime.tensorrt_runner\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_clear_errors_without_tensorrt_or_pycuda(no_gpu_stack: None, tmp_path: Path) -> None:
    with pytest.raises(CudaUnavailableError, match="pycuda is not importable"):
        CudaDevice()
    with pytest.raises(CudaUnavailableError, match="pycuda"):
        gpu_sm()
    runner = TensorRTRunner(tmp_path / "model.engine", "fp16")  # constructing needs nothing
    with pytest.raises(TensorRTUnavailableError, match="tensorrt is not importable.*JetPack") as raised:
        runner.activate()
    assert isinstance(raised.value, BackendError) and not isinstance(raised.value, ImportError)
    assert not runner.is_active
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really onnx")
    with pytest.raises(TensorRTUnavailableError):
        build_engine(onnx, tmp_path / "cache", precision="fp32")


def test_build_command_options(no_gpu_stack: None, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    args = parser.parse_args(["--onnx", str(onnx), "--out", str(tmp_path), "--precision", "int8"])
    assert (args.min_width, args.opt_width, args.max_width) == tensorrt_engine.DEFAULT_WIDTHS
    assert (args.lines, args.gpu, args.force, args.workspace_mib) == (22, 0, False, 1024)
    with pytest.raises(TensorRTUnavailableError):
        run_build(args)


def test_no_api_that_tensorrt_11_removed() -> None:
    """The stubs (10.13) still list APIs TensorRT 11 removed, so mypy cannot catch them: grep."""
    removed = [
        r"BuilderFlag\.(FP16|INT8|FP8|BF16|INT4|FP4|OBEY_PRECISION_CONSTRAINTS|PREFER_PRECISION_CONSTRAINTS)",
        r"platform_has_fast_(fp16|int8)",
        r"int8_calibrator|IInt8\w*Calibrator|set_calibration_profile|quantization_flag",
        r"device_memory_size",
        r"execute_async_v2|execute_v2|get_binding_\w+|num_bindings|build_engine\(network",
    ]
    for path in TRT_FILES:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'""".*?"""', "", code, flags=re.DOTALL)  # prose may name them
        for pattern in removed:
            assert not re.search(pattern, code), f"{path.name} uses {pattern}, removed in TensorRT 11"


# --------------------------------------------------------------------------- stand-ins (CPU)


def _fake_tensorrt(cuda: SimpleNamespace, version: str = "10.3.0.30") -> SimpleNamespace:
    """A ``tensorrt`` whose engines compute ``double = 2 * cube`` and ``total = sum over bands``
    for cubes of 4 bands and 8..64 pixels per line, and whose builder 'builds' such an engine."""
    memory, need_context = cuda.memory, cuda.need_context
    profile = [(1, 4, 2, 8), (1, 4, 2, 32), (1, 4, 2, 64)]

    class Context:
        def __init__(self) -> None:
            self.shape: tuple[int, ...] | None = None
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            fits = len(shape) == 4 and all(
                a <= s <= b for a, s, b in zip(profile[0], shape, profile[2], strict=True)
            )
            self.shape = tuple(shape) if fits else None
            return fits

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            assert self.shape is not None
            n, _, lines, width = self.shape
            return self.shape if name == "double" else (n, 1, lines, width)

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            need_context()
            assert self.shape is not None and stream_handle == 0xC0FFEE
            shape, addresses = self.shape, dict(self.addresses)

            def run() -> None:  # on the stream, after the queued uploads
                cube = memory.view(addresses["cube"], np.float32, np.prod(shape)).reshape(shape)
                for name, value in (("double", 2 * cube), ("total", cube.sum(axis=1, keepdims=True))):
                    memory.view(addresses[name], np.float32, value.size)[:] = value.reshape(-1)

            cuda.enqueue(run)
            return True

    class Engine:
        names = ["cube", "double", "total"]
        num_io_tensors = 3
        dtypes: dict[str, str] = {}  # a test's other tensor types (FLOAT otherwise)
        freed_without_context = 0

        def __del__(self) -> None:  # a real engine frees device memory then
            try:
                need_context()
            except AssertionError:
                Engine.freed_without_context += 1

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name == "cube" else "OUTPUT"

        def get_tensor_dtype(self, name: str) -> str:
            return self.dtypes.get(name, "FLOAT")

        def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
            return profile

        def create_execution_context(self) -> Context:
            need_context()
            return Context()

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            need_context()
            return Engine() if data.startswith(b"FAKE ENGINE") else None

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape, self.dtype = name, shape, "FLOAT"

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.num_inputs, self.num_outputs = 1, 2

        def get_input(self, index: int) -> Tensor:
            return Tensor("cube", (-1, 4, -1, -1))

        def get_output(self, index: int) -> Tensor:
            return Tensor(["double", "total"][index], (-1, -1, -1, -1))

    class OnnxParser:
        errors: list[Any] = []

        def __init__(self, network: Network, logger: object) -> None:
            self.num_errors = len(self.errors)

        def parse_from_file(self, path: str) -> bool:
            return not self.errors

        def get_error(self, index: int) -> Any:
            return self.errors[index]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timings" if not self.data else self.data + b"+"

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Any] = []
            self.timing_cache: Any = None
            self.flags = {"TF32"}  # TensorRT's default, strongly typed networks included

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            assert pool == "WORKSPACE" and size > 0

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            return TimingCache(data) if not data or data.startswith(b"timings") else None  # unreadable

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            assert isinstance(cache, TimingCache)
            self.timing_cache = weakref.ref(cache)  # TensorRT does not own it: the caller must
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return None if self.timing_cache is None else self.timing_cache()

    class Profile:
        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes = (name, list(low), list(opt), list(high))

    class Builder:
        builds = 0
        flags: set[str] = set()  # the last build's flags
        freed_without_context = 0

        def __init__(self, logger: object) -> None:
            need_context()

        def __del__(self) -> None:  # a real builder frees device memory then
            try:
                need_context()
            except AssertionError:
                Builder.freed_without_context += 1

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            need_context()
            assert config.timing_cache is not None and config.timing_cache() is not None, "timing cache freed"
            Builder.builds += 1
            Builder.flags = set(config.flags)
            assert config.profiles[0].shapes[0] == "cube"
            return b"FAKE ENGINE " + repr(config.profiles[0].shapes).encode()

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str) -> None:
            pass

    return SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        Runtime=Runtime,
        Engine=Engine,
        OnnxParser=OnnxParser,
        Dims=list,
        DataType=SimpleNamespace(FLOAT="FLOAT"),
        TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=SimpleNamespace(TF32="TF32"),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
    )


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    cuda = fake_driver(DeviceMemory())
    trt = _fake_tensorrt(cuda)
    package = ModuleType("pycuda")
    package.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    tensorrt_engine.trt_logger.cache_clear()
    yield SimpleNamespace(cuda=cuda, trt=trt)
    tensorrt_engine.trt_logger.cache_clear()


def test_network_flags_strongly_typed_on_10_default_on_11(fakes: SimpleNamespace) -> None:
    fakes.trt.__version__ = "10.3.0.30"
    assert network_flags() == 1 << 1
    fakes.trt.__version__ = "11.4.1.2"
    assert network_flags() == 0


def test_build_with_fakes_stores_then_hits_the_cache(fakes: SimpleNamespace, tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    widths = {"min_width": 8, "opt_width": 32, "max_width": 64, "lines": 2}
    engine = build_engine(onnx, tmp_path / "cache", precision="fp16", **widths)
    assert engine.read_bytes().startswith(b"FAKE ENGINE")
    # lines vary too, 1..max_lines (the stream's last block is shorter), tuned for `lines`
    assert b"('cube', [1, 4, 1, 8], [1, 4, 2, 32], [1, 4, 2, 64])" in engine.read_bytes()
    assert "fp16_trt10.3.0.30_sm_87_b4_l1-2-2_w8-32-64" in engine.name
    whole_scenes = build_engine(onnx, tmp_path / "cache", precision="fp16", max_lines=100, **widths)
    assert b"[1, 4, 100, 64]" in whole_scenes.read_bytes() and whole_scenes != engine
    smaller = build_engine(onnx, tmp_path / "cache", precision="fp16", workspace_bytes=256 << 20, **widths)
    assert smaller != engine  # another workspace limit allows other tactics: another engine
    assert (tmp_path / "cache" / "timing_trt10.3.0.30_sm_87.cache").read_bytes() == b"timings++"  # 3 builds
    builds = fakes.trt.Builder.builds
    assert build_engine(onnx, tmp_path / "cache", precision="fp16", **widths) == engine
    assert fakes.trt.Builder.builds == builds  # cache hit: nothing rebuilt
    build_engine(onnx, tmp_path / "cache", precision="fp16", force=True, **widths)
    assert fakes.trt.Builder.builds == builds + 1
    onnx.write_bytes(b"another onnx file")  # a changed model gets a new engine
    assert build_engine(onnx, tmp_path / "cache", precision="fp16", **widths) != engine
    with pytest.raises(EngineBuildError, match="takes 4 bands, 224 were given"):
        build_engine(onnx, tmp_path / "cache", precision="fp16", bands=224, **widths)
    with pytest.raises(EngineBuildError, match="pass --precision"):
        build_engine(onnx, tmp_path / "cache", **widths)
    assert fakes.cuda.retained == fakes.cuda.detached  # every context released
    assert fakes.trt.Builder.freed_without_context == 0  # ... after the TensorRT objects in it


def test_a_build_frees_tensorrt_objects_in_its_context_even_when_it_fails(
    fakes: SimpleNamespace, tmp_path: Path
) -> None:
    """The builder, network and parser outlived the device context (freed when build_engine's frame
    went, after the context was popped and released), and a failed build kept them alive in its
    traceback for as long as the caller held the exception."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    widths = {"min_width": 8, "opt_width": 32, "max_width": 64, "lines": 2}
    build_engine(onnx, tmp_path / "cache", precision="fp16", **widths)  # built
    build_engine(onnx, tmp_path / "cache", precision="fp16", **widths)  # a cache hit
    with pytest.raises(EngineBuildError, match="224 were given") as failed:
        build_engine(onnx, tmp_path / "cache", precision="fp16", bands=224, **widths)
    del failed  # the caller lets go of the exception, long after the context went
    assert fakes.trt.Builder.freed_without_context == 0


def test_an_unreadable_timing_cache_is_replaced_not_fatal(
    fakes: SimpleNamespace, tmp_path: Path, caplog
) -> None:
    """A truncated timing cache (TensorRT cannot read it: create_timing_cache gives None) made
    set_timing_cache fail on None, so every later build failed until the file was removed by hand."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    timing = tmp_path / "cache" / "timing_trt10.3.0.30_sm_87.cache"
    timing.parent.mkdir()
    timing.write_bytes(b"tim")  # cut short
    widths = {"min_width": 8, "opt_width": 32, "max_width": 64, "lines": 2}
    with caplog.at_level("WARNING"):
        assert build_engine(onnx, tmp_path / "cache", precision="fp16", **widths).is_file()
    assert "unreadable" in caplog.text and timing.read_bytes() == b"timings"  # a new one, whole
    build_engine(onnx, tmp_path / "cache", precision="fp16", force=True, **widths)
    assert timing.read_bytes() == b"timings+"  # read back and extended by the next build


def test_fp32_layers_are_built_without_tf32_and_the_key_says_so(
    fakes: SimpleNamespace, tmp_path: Path
) -> None:
    """TF32 is on by default, strongly typed networks included: the FP32 layers of every engine
    (all of an fp32 one, the heads an INT8 graph keeps in FP32) rounded their inputs to 10 mantissa
    bits on Orin and Thor, which the accuracy gate (FP32 on the CPU) never measured."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    engine = build_engine(onnx, tmp_path / "cache", precision="fp32", min_width=8, opt_width=32, max_width=64)
    assert "TF32" not in fakes.trt.Builder.flags
    key = json.loads(sidecar_path(engine).read_text())["key"]
    assert key["tf32"] is False
    assert EngineKey.from_dict({k: v for k, v in key.items() if k != "tf32"}).tf32  # recorded before: on


def test_build_without_the_onnx_package_says_to_install_it(
    fakes: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the documented Jetson install (no onnx) the metadata read failed silently: `build` said
    the file had no precision metadata (false), and with --precision the engine lost its checks."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    widths = {"min_width": 8, "opt_width": 32, "max_width": 64}
    for precision in (None, "fp16"):
        with pytest.raises(EngineBuildError, match=r"needs the onnx package .*pip install onnx"):
            build_engine(onnx, tmp_path / "cache", precision=precision, **widths)
    assert fakes.trt.Builder.builds == 0


def test_the_engine_sidecar_records_the_model_it_was_built_from(
    fakes: SimpleNamespace, untrained_bundle, tmp_path: Path
) -> None:
    """What the runtime checks an engine against (weights, alphas, bands, precision)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from edge_had.build.onnx_export import export_onnx, read_metadata
    from edge_had.models import load_bundle

    onnx = export_onnx(load_bundle(untrained_bundle(seed=3)), 4, tmp_path / "model.onnx")  # fake: 4 bands
    widths = {"min_width": 8, "opt_width": 32, "max_width": 64, "lines": 2}
    engine = build_engine(onnx, tmp_path / "cache", precision="fp32", **widths)
    assert json.loads(sidecar_path(engine).read_text())["source"] == read_metadata(onnx)
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"an onnx file")
    engine = build_engine(foreign, tmp_path / "cache", precision="fp16", **widths)
    assert json.loads(sidecar_path(engine).read_text())["source"] is None


def test_build_lists_every_parser_error(fakes: SimpleNamespace, tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")

    class Error:
        def __init__(self, node: int, desc: str) -> None:
            self.node, self.desc, self.code = (lambda: node), (lambda: desc), (lambda: "UNSUPPORTED_NODE")

    fakes.trt.OnnxParser.errors = [Error(3, "no Foo op"), Error(7, "bad Bar")]
    with pytest.raises(EngineBuildError, match=r"2 error\(s\)") as raised:
        build_engine(onnx, tmp_path, precision="fp32")
    assert "ONNX node 3: no Foo op" in str(raised.value) and "ONNX node 7: bad Bar" in str(raised.value)


def _fake_engine(fakes: SimpleNamespace, tmp_path: Path) -> Path:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    return build_engine(onnx, tmp_path, precision="fp32", min_width=8, opt_width=32, max_width=64, lines=2)


def test_runner_with_fakes_grows_buffers_and_frees_them(fakes: SimpleNamespace, tmp_path: Path) -> None:
    runner = TensorRTRunner(_fake_engine(fakes, tmp_path), "fp32")
    downloads = []
    copy_back = fakes.cuda.memcpy_dtoh_async
    fakes.cuda.memcpy_dtoh_async = lambda dest, *args: (downloads.append(dest.nbytes), copy_back(dest, *args))
    with runner:
        assert runner.input_names == ["cube"] and runner.output_names == ["double", "total"]
        for width in (8, 64, 16, 64):  # grows once, then reuses
            cube = np.random.default_rng(width).normal(size=(1, 4, 2, width)).astype(np.float32)
            out = runner.infer({"cube": cube})
            np.testing.assert_array_equal(out["double"], 2 * cube)
            np.testing.assert_allclose(out["total"], cube.sum(axis=1, keepdims=True), rtol=1e-6)
            assert all(value.dtype == np.float32 for value in out.values())
        assert len(fakes.cuda.memory.blocks) == 3
        cube = np.random.default_rng(7).normal(size=(1, 4, 2, 64)).astype(np.float32)  # fresh values
        downloads.clear()
        only = runner.infer({"cube": cube}, ["total"])  # one output copied back
        assert list(only) == ["total"] and downloads == [2 * 64 * 4]  # (1, 1, 2, 64) float32, nothing else
        np.testing.assert_allclose(only["total"], cube.sum(axis=1, keepdims=True), rtol=1e-6)
        with pytest.raises(BackendError, match=r"outside the engine's profile \(1, 4, 2, 8\)"):
            runner.infer({"cube": np.zeros((1, 4, 2, 65), np.float32)})
        with pytest.raises(BackendError, match="takes inputs"):
            runner.infer({"image": cube})
        assert len(runner.inference_times) == 5
    assert not fakes.cuda.memory.blocks
    assert fakes.cuda.retained == fakes.cuda.detached


def test_a_runner_that_fails_to_activate_frees_the_engine_in_its_context(
    fakes: SimpleNamespace, tmp_path: Path
) -> None:
    """An engine refused after it was deserialized (here: a tensor not float32) was destroyed
    after the device's context had been released - its frame kept it until the caller let go of
    the error (a review). Now it goes while the context is current, and the context is released."""
    engine = _fake_engine(fakes, tmp_path)
    fakes.trt.Engine.dtypes = {"total": "HALF"}
    with pytest.raises(BackendError, match=r"tensors \['total'\] are not float32") as failed:
        TensorRTRunner(engine, "fp32").activate()
    del failed
    assert fakes.trt.Engine.freed_without_context == 0
    assert fakes.cuda.retained == fakes.cuda.detached
    fakes.trt.Engine.dtypes = {}
    with TensorRTRunner(engine, "fp32") as runner:
        runner.infer({"cube": np.ones((1, 4, 2, 8), np.float32)})
    assert fakes.trt.Engine.freed_without_context == 0  # (deactivate's own order, already right)


def test_runner_with_fakes_works_from_worker_threads(fakes: SimpleNamespace, tmp_path: Path) -> None:
    cube = np.ones((1, 4, 2, 32), np.float32)
    with TensorRTRunner(_fake_engine(fakes, tmp_path), "fp32") as runner, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: runner.infer({"cube": cube})["total"], range(8)))
    for total in results:
        np.testing.assert_array_equal(total, np.full((1, 1, 2, 32), 4, np.float32))


def test_runner_refuses_stale_or_foreign_engines(
    fakes: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _fake_engine(fakes, tmp_path)
    with pytest.raises(EngineCacheError, match="precision is fp32, int8 was asked for"):
        TensorRTRunner(engine, "int8").activate()
    fakes.trt.__version__ = "10.13.0.35"
    with pytest.raises(EngineCacheError, match="built with TensorRT 10.3.0.30, this is TensorRT 10.13"):
        TensorRTRunner(engine, "fp32").activate()
    fakes.trt.__version__ = "10.3.0.30"
    built_on = json.loads(sidecar_path(engine).read_text())["key"]["gpu"]
    assert built_on == "Fake Orin, 3 SMs"  # Jetson boards of one SM version may share a name
    monkeypatch.setattr(fakes.cuda.Device, "get_attribute", lambda self, attribute: 8)
    with pytest.raises(EngineCacheError, match="built on Fake Orin, 3 SMs, this GPU is Fake Orin, 8 SMs"):
        TensorRTRunner(engine, "fp32").activate()
    other = tmp_path / "other.engine"
    other.write_bytes(b"not an engine")  # no sidecar: TensorRT's own check decides
    with pytest.raises(BackendError, match="could not deserialize"):
        TensorRTRunner(other, "fp32").activate()
    assert fakes.cuda.retained == fakes.cuda.detached


# --------------------------------------------------------------------------- real TensorRT (GPU)


def _gpu_skip_reason() -> str | None:
    try:
        tensorrt_engine.require_tensorrt()
        gpu_sm()
    except BackendError as error:
        return str(error)
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        return f"onnxruntime is not importable ({error}); it is the reference here"
    return None


BANDS, LINES, WIDTHS = 24, 2, (8, 32, 64)


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _gpu_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    import torch

    from edge_had.models.enhancer import build_model

    torch.manual_seed(0)
    model = build_model(BANDS, k=8, hidden=8, blocks=1).eval()
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    axes = {0: "batch", 2: "lines", 3: "pixels"}
    names = list(model.output_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (torch.zeros(1, BANDS, LINES, WIDTHS[1]),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["cube"],
            output_names=names,
            dynamic_axes={name: axes for name in ["cube", *names]},
        )
    return path


@pytest.fixture(scope="module")
def engine_path(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    low, opt, high = WIDTHS
    return build_engine(
        exported_onnx,
        tmp_path_factory.mktemp("engines"),
        precision="fp32",
        lines=LINES,
        min_width=low,
        opt_width=opt,
        max_width=high,
    )


@pytest.mark.trt
@pytest.mark.gpu
def test_real_build_writes_engine_and_sidecar_then_hits(exported_onnx: Path, engine_path: Path) -> None:
    assert engine_path.stat().st_size > 0 and sidecar_path(engine_path).is_file()
    modified = engine_path.stat().st_mtime_ns
    low, opt, high = WIDTHS
    again = build_engine(
        exported_onnx,
        engine_path.parent,
        precision="fp32",
        lines=LINES,
        min_width=low,
        opt_width=opt,
        max_width=high,
    )
    assert again == engine_path and engine_path.stat().st_mtime_ns == modified


@pytest.mark.trt
@pytest.mark.gpu
def test_real_engine_matches_onnxruntime(exported_onnx: Path, engine_path: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    with TensorRTRunner(engine_path, "fp32") as runner:
        for width in (WIDTHS[0], WIDTHS[2], WIDTHS[1]):  # grow, then shrink
            cube = np.random.default_rng(width).normal(size=(1, BANDS, LINES, width)).astype(np.float32)
            got = runner.infer({"cube": cube})
            want = dict(zip(names, session.run(None, {"cube": cube}), strict=True))
            assert sorted(got) == sorted(want)
            for name, expected in want.items():
                assert got[name].shape == expected.shape, name
                # FP32 without TF32 (`build` clears it; with it, about 1e-3 relative)
                err = np.abs(got[name] - expected).max() / max(np.abs(expected).max(), 1e-12)
                assert err <= 1e-4, f"{name} at width {width}: max|trt - ort| / max|ort| = {err:.2e}"
        with pytest.raises(BackendError, match="outside the engine's profile"):
            runner.infer({"cube": np.zeros((1, BANDS, LINES, WIDTHS[2] + 1), np.float32)})


@pytest.mark.trt
@pytest.mark.gpu
def test_real_engine_runs_from_worker_threads(engine_path: Path) -> None:
    cube = np.random.default_rng(1).normal(size=(1, BANDS, LINES, WIDTHS[1])).astype(np.float32)
    with TensorRTRunner(engine_path, "fp32") as runner:
        reference = runner.infer({"cube": cube})
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: runner.infer({"cube": cube}), range(6)))
    for result in results:
        for name, value in reference.items():
            np.testing.assert_array_equal(result[name], value)
