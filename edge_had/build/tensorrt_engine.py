"""Build a TensorRT engine from an exported ONNX file, through the versioned engine cache.

One code path for TensorRT 10.x (JetPack 6: 10.3) and 11.x. The ONNX file is already explicitly
typed - FP32, FP16 weights and ops, or INT8 Q/DQ (:mod:`edge_had.build.quantize`) - and the network
is built *strongly typed*: the graph alone decides what runs in which precision, so no builder
precision flag, no calibrator and no platform query is used (TensorRT 11 removed all three). The
one math flag that still changes FP32 layers, ``TF32`` (on by default: inputs rounded to 10
mantissa bits on Ampere and later, Orin and Thor included), is cleared, so FP32 parts of a graph
compute in FP32 as the accuracy gate measured them; the engine key records it. On
10.x strong typing is requested with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x builds
every network strongly typed and deprecated that flag, so it is not passed there.

The engine has one optimisation profile for the input ``cube`` (batch, bands, lines, pixels) in
which the line width varies (``min_width..max_width``, tuned for ``opt_width``) and so does the
number of lines (``1..max_lines``, tuned for ``lines``: the stream's last block holds fewer lines
than the others, and offline detection feeds a whole scene, so build with ``--max-lines`` at least
its rows for that). Engines are cached under an :class:`~edge_had.build.engine_cache.EngineKey`
(ONNX SHA-256, TensorRT version, GPU SM and model name, precision, shapes, workspace limit, TF32); a
build with an equal key returns the cached file (``force`` rebuilds anyway). The builder's
timing cache is kept next to the engines, so rebuilding for other widths is quick.

``tensorrt`` is imported inside the functions; without it they raise
:class:`TensorRTUnavailableError`. :func:`add_build_arguments` and :func:`run_build` are the
``edge-had build`` subcommand.
"""

from __future__ import annotations

import argparse
import functools
import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_had.atomic_files import write_bytes_atomically
from edge_had.build.engine_cache import EngineKey, lookup, sha256_file, store
from edge_had.build.onnx_export import INPUT_NAME
from edge_had.cli_types import existing_file, integer_from
from edge_had.cuda import CudaDevice, gpu_sm
from edge_had.errors import EdgeHadError
from edge_had.runtime.base import PRECISIONS, BackendError

if TYPE_CHECKING:  # annotations only; the functions import tensorrt themselves
    import tensorrt as trt

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30
DEFAULT_WIDTHS = (64, 1024, 2048)  # min, opt, max pixels per line


class TensorRTUnavailableError(BackendError):
    """The ``tensorrt`` module cannot be imported."""


class EngineBuildError(EdgeHadError):
    """TensorRT could not parse or build the ONNX file; the message says where and why."""


def require_tensorrt() -> None:
    """Raise :class:`TensorRTUnavailableError`, saying how to get it, unless ``import tensorrt``
    works. Callers then ``import tensorrt as trt`` themselves, so the type checker sees the module."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: the module is there, libnvinfer is not
        raise TensorRTUnavailableError(
            f"tensorrt is not importable ({error}); on a Jetson it comes with JetPack "
            "(python3-libnvinfer), elsewhere `pip install tensorrt`"
        ) from None


@functools.cache
def trt_logger() -> trt.Logger:
    """The process's one TensorRT logger (warnings and errors go to stderr)."""
    require_tensorrt()
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def tensorrt_version() -> str:
    require_tensorrt()
    import tensorrt as trt

    return str(trt.__version__)


def build_target(device_index: int = 0) -> tuple[str, str]:
    """(TensorRT version, GPU SM) of this machine, e.g. ``("10.3.0.30", "sm_87")``: what an
    engine built or loaded here is tied to."""
    return tensorrt_version(), gpu_sm(device_index)


def network_flags() -> int:
    """Creation flags of a strongly typed network on this TensorRT (see the module docstring)."""
    import tensorrt as trt

    if int(trt.__version__.split(".")[0]) >= 11:
        return 0  # always strongly typed; the flag is deprecated and ignored
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _source_metadata(onnx_path: Path) -> dict[str, Any] | None:
    """The edge-had metadata of an exported ONNX file, recorded in the engine's sidecar (the runner
    checks an engine's model, alphas, bands and wavelengths against it). None when the file is no
    edge-had export or unreadable (TensorRT's parser then says what is wrong with it); without the
    ``onnx`` package it cannot be read at all, and :class:`EngineBuildError` says so."""
    from edge_had.build.onnx_export import read_metadata

    try:
        return read_metadata(onnx_path)
    except ImportError as error:  # reading it as "no metadata" gave a false message and unchecked engines
        raise EngineBuildError(
            f"{onnx_path}: reading its edge-had metadata needs the onnx package ({error}); "
            "install it (`pip install onnx`, export/TENSORRT.md) and build again"
        ) from None
    except Exception as error:  # ExportError, or onnx's own parse errors
        log.debug("%s: no edge-had metadata read (%s)", onnx_path, error)
        return None


def metadata_precision(onnx_path: Path) -> str | None:
    """The ``edge_had.precision`` metadata of an exported ONNX file (None: see :func:`_source_metadata`)."""
    precision = (_source_metadata(onnx_path) or {}).get("precision")
    return None if precision is None else str(precision)


def _resolve_precision(onnx_path: Path, asked: str | None) -> str:
    recorded = metadata_precision(onnx_path)
    if asked is not None and recorded is not None and asked != recorded:
        raise EngineBuildError(
            f"{onnx_path}: its metadata says {recorded}, {asked} was asked for; the graph's own types "
            f"decide what a strongly typed engine runs, so export a {asked} graph instead"
        )
    precision = asked or recorded
    if precision is None:
        raise EngineBuildError(
            f"{onnx_path}: not an edge-had export (no edge_had.precision metadata); pass --precision "
            "for a graph from elsewhere (its engine is then loaded without the model checks)"
        )
    if precision not in PRECISIONS:
        raise EngineBuildError(f"{onnx_path}: unknown precision {precision!r}; choose one of {PRECISIONS}")
    return precision


def _parse(builder: trt.Builder, onnx_path: Path) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """(network, parser) of the ONNX file; the parser must live as long as the network."""
    import tensorrt as trt

    network = builder.create_network(network_flags())
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(index) for index in range(parser.num_errors)]
        listing = "\n".join(
            f"  [{index}] ONNX node {error.node()}: {error.desc()} ({error.code()})"
            for index, error in enumerate(errors)
        )
        raise EngineBuildError(
            f"{onnx_path}: TensorRT {trt.__version__}'s ONNX parser rejected the graph "
            f"({len(errors)} error(s)):\n{listing or '  (no error recorded; see the log above)'}"
        )
    return network, parser


def _check_io(network: trt.INetworkDefinition, onnx_path: Path) -> int:
    """The graph's band count; raises unless its only input is ``cube`` (batch, B, lines, pixels)
    and every input and output is float32 (what the runners exchange)."""
    import tensorrt as trt

    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    outputs = [network.get_output(index) for index in range(network.num_outputs)]
    if [tensor.name for tensor in inputs] != [INPUT_NAME]:
        raise EngineBuildError(
            f"{onnx_path}: expected one input {INPUT_NAME!r}, found {[t.name for t in inputs]}"
        )
    not_float = [t.name for t in inputs + outputs if t.dtype != trt.DataType.FLOAT]
    if not_float:
        raise EngineBuildError(
            f"{onnx_path}: inputs and outputs must stay float32 (FP16/INT8 inside only); not: {not_float}"
        )
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] < 1:
        raise EngineBuildError(
            f"{onnx_path}: {INPUT_NAME!r} must be (batch, bands, lines, pixels) with a fixed band "
            f"count, found {shape}"
        )
    return int(shape[1])


def _use_timing_cache(config: trt.IBuilderConfig, path: Path) -> trt.ITimingCache:
    """Attach the timing cache in ``path`` to ``config`` (a new one when there is none, or when
    TensorRT cannot read it or it comes from another TensorRT or GPU) and return it: the caller
    holds it until the build is over (TensorRT's rule: it must not be destroyed before that)."""
    data = path.read_bytes() if path.is_file() else b""
    if data:
        try:
            cache: trt.ITimingCache | None = config.create_timing_cache(data)
        except Exception as error:  # a truncated or foreign blob: TensorRT may raise or return None
            log.warning("timing cache %s cannot be read (%s)", path, error)
            cache = None
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        log.warning("timing cache %s is unreadable or from another TensorRT or GPU; starting a new one", path)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def _build(
    builder: trt.Builder, network: trt.INetworkDefinition, key: EngineKey, workspace_bytes: int, timing: Path
) -> bytes:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not key.tf32:  # on by default (also strongly typed): FP32 layers would round their inputs
        config.clear_flag(trt.BuilderFlag.TF32)  # to 10 mantissa bits on Orin and Thor
    profile = builder.create_optimization_profile()
    low, opt, high = (trt.Dims(list(shape)) for shape in (key.min_shape, key.opt_shape, key.max_shape))
    profile.set_shape(key.input_name, low, opt, high)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimisation profile {key.min_shape}..{key.max_shape}")
    timing_cache = _use_timing_cache(config, timing)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {key.name} (its messages above say why)")
    timing.parent.mkdir(parents=True, exist_ok=True)
    # the cache the config holds now, with this build's timings (whether set_timing_cache copied
    # the one given or refers to it; timing_cache is kept alive until here either way)
    attached = config.get_timing_cache() or timing_cache
    write_bytes_atomically(timing, bytes(attached.serialize()))  # replaces an unreadable one
    return bytes(serialized)


def build_engine(
    onnx_path: str | Path,
    cache_dir: str | Path,
    *,
    min_width: int = DEFAULT_WIDTHS[0],
    opt_width: int = DEFAULT_WIDTHS[1],
    max_width: int = DEFAULT_WIDTHS[2],
    bands: int | None = None,
    lines: int = 1,
    max_lines: int | None = None,
    precision: str | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache_path: str | Path | None = None,
    device_index: int = 0,
    force: bool = False,
) -> Path:
    """The engine file for ``onnx_path`` in ``cache_dir``, built unless an equal one is cached.

    ``precision`` defaults to the file's ``edge_had.precision`` metadata (both given must agree);
    ``bands`` defaults to the graph's and is only checked when given. ``1..max_lines`` lines
    (default ``max_lines = lines``; tuned for ``lines``) of ``min_width..max_width`` pixels,
    batch 1. ``force`` rebuilds even on a cache hit. The timing cache defaults to
    ``cache_dir/timing_trt<version>_<sm>.cache``.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"{onnx_path}: no such ONNX file")
    precision = _resolve_precision(onnx_path, precision)
    require_tensorrt()
    import tensorrt as trt

    version = str(trt.__version__)
    with CudaDevice(device_index) as device, device.activated():
        try:
            key, found = _find_or_build(
                onnx_path, cache_dir, device, version=version, precision=precision, bands=bands,
                lines=lines, max_lines=max(lines, max_lines or lines),
                widths=(min_width, opt_width, max_width), workspace_bytes=workspace_bytes,
                timing_cache_path=timing_cache_path, force=force,
            )  # fmt: skip
        except BaseException as error:  # its frames hold TensorRT objects: free them in the context
            traceback.clear_frames(error.__traceback__)
            raise
    if isinstance(found, Path):
        return found
    return store(cache_dir, key, found, source=_source_metadata(onnx_path))


def _find_or_build(
    onnx_path: Path,
    cache_dir: str | Path,
    device: CudaDevice,
    *,
    version: str,
    precision: str,
    bands: int | None,
    lines: int,
    max_lines: int,
    widths: tuple[int, int, int],
    workspace_bytes: int,
    timing_cache_path: str | Path | None,
    force: bool,
) -> tuple[EngineKey, Path | bytes]:
    """:func:`build_engine`'s work in its device context: the key and the cached engine's path,
    or the engine built. Its TensorRT objects (builder, network, parser, config) are freed when it
    returns, while that context is current; freed after it, they freed into no context."""
    import tensorrt as trt

    min_width, opt_width, max_width = widths
    builder = trt.Builder(trt_logger())
    network, _parser = _parse(builder, onnx_path)  # _parser keeps the network's weights alive
    graph_bands = _check_io(network, onnx_path)
    if bands is not None and bands != graph_bands:
        raise EngineBuildError(f"{onnx_path}: the graph takes {graph_bands} bands, {bands} were given")
    key = EngineKey.for_line_widths(
        sha256_file(onnx_path),
        version,
        device.sm,
        precision,
        bands=graph_bands,
        lines=lines,
        min_lines=1,
        max_lines=max_lines,
        gpu=device.model,
        workspace_bytes=workspace_bytes,
        tf32=False,
        min_width=min_width,
        opt_width=opt_width,
        max_width=max_width,
    )
    cached = lookup(cache_dir, key)
    if cached is not None and not force:
        log.info("engine cache hit: %s", cached)
        return key, cached
    timing = Path(timing_cache_path or Path(cache_dir) / f"timing_trt{version}_{device.sm}.cache")
    log.info("building %s on %s (%s); this takes minutes on a Jetson", key.name, device.name, device.sm)
    return key, _build(builder, network, key, workspace_bytes, timing)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``edge-had build``."""
    low, opt, high = DEFAULT_WIDTHS
    parser.add_argument(
        "--onnx", required=True, type=existing_file, help="exported ONNX file (fp32, fp16 or int8 Q/DQ)"
    )
    parser.add_argument("--out", required=True, help="engine cache folder (engine + .json sidecar)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the graph's precision (default: its edge_had.precision metadata)",
    )
    parser.add_argument("--bands", type=integer_from(2), help="check the graph takes this many bands")
    parser.add_argument(
        "--lines",
        type=integer_from(1),
        default=22,
        help="lines per inference to tune for (default 22: a block of 16 new lines with 3 + 3 lines of "
        "context for the spectral branch's 7 x 7 receptive field, as in the edge budget count)",
    )
    parser.add_argument(
        "--max-lines",
        type=integer_from(1),
        help="most lines per inference (default: --lines; the engine takes 1 to this many): offline "
        "`detect` feeds whole scenes, so give at least their rows",
    )
    parser.add_argument(
        "--min-width", type=integer_from(1), default=low, help=f"smallest pixels per line (default {low})"
    )
    parser.add_argument(
        "--opt-width", type=integer_from(1), default=opt, help=f"width to tune for (default {opt})"
    )
    parser.add_argument(
        "--max-width", type=integer_from(1), default=high, help=f"largest pixels per line (default {high})"
    )
    parser.add_argument(
        "--workspace-mib",
        type=integer_from(1),
        default=DEFAULT_WORKSPACE_BYTES >> 20,
        help=f"builder workspace limit in MiB (default {DEFAULT_WORKSPACE_BYTES >> 20})",
    )
    parser.add_argument("--timing-cache", help="timing cache file (default: in --out, per TensorRT and GPU)")
    parser.add_argument("--gpu", type=integer_from(0), default=0, help="CUDA device index (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has this engine")


def run_build(args: argparse.Namespace) -> int:
    """``edge-had build``: build (or find) the engine and print its path."""
    engine = build_engine(
        args.onnx,
        args.out,
        min_width=args.min_width,
        opt_width=args.opt_width,
        max_width=args.max_width,
        bands=args.bands,
        lines=args.lines,
        max_lines=args.max_lines,
        precision=args.precision,
        workspace_bytes=args.workspace_mib << 20,
        timing_cache_path=args.timing_cache,
        device_index=args.gpu,
        force=args.force,
    )
    print(engine)
    return 0
