"""The line loop ``edge-had stream`` runs, built in one call for a camera SDK's own loop.

:func:`build_pipeline` makes the :class:`~edge_had.stream.pipeline.StreamPipeline` of a stream
detector (``enhanced-rx``, ``rx``, ``enhanced-hybrid-rx``, ``hybrid-rx``) with the recorded
causal-RX settings: for the enhanced ones it loads the model (default: the shipped one), picks
and starts the backend (``auto``: tensorrt > onnxruntime > torch), warms the network up before
the first line and plugs the enhancer in; for the plain ones it reduces the bands to 32. The
caller pushes lines (``push(line, index, timestamp, meta)``), takes results in ``on_result``,
and at the end of the scan leaves the ``with`` block (or calls :meth:`OnboardPipeline.close`),
which finishes the pipeline and releases the network's runner (for TensorRT, its CUDA
context)::

    from threadpoolctl import threadpool_limits
    from edge_had.stream.onboard import build_pipeline

    with build_pipeline(1024, 224, "enhanced-rx", wavelengths=centres, good_bands=bbl, no_data_value=0,
                        saturation=4095, on_result=handle) as onboard, threadpool_limits(1, "blas"):
        for index, (line, timestamp) in enumerate(camera):  # (1024, 224) arrays, as the camera gives them
            onboard.pipeline.push(line, index, timestamp)

``wavelengths``, ``good_bands`` and ``no_data_value`` are what the sensor's ENVI header says
(``wavelength``, ``bbl``, ``data ignore value``): given the same, the live loop scores a line as
``edge-had stream --source FILE.hdr`` scores the file's line (that command is this loop fed
with :func:`~edge_had.stream.sources.file_lines`).

numpy's BLAS on one thread is what ``edge-had stream`` runs its loop under
(:func:`edge_had.stream.run.run_stream` says why); scores do not depend on it. RX's per-line work
runs on the CUDA kernels when an open :class:`~edge_had.cuda.rx_kernels.CudaRX` is given as
``cuda_rx`` (the caller closes it after the stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_had.stream.pipeline import LineResult, StreamPipeline

#: stream detector -> (enhanced, scorer of :class:`~edge_had.stream.pipeline.StreamPipeline`)
STREAM_DETECTORS = {
    "enhanced-rx": (True, "global"),
    "rx": (False, "global"),
    "enhanced-hybrid-rx": (True, "hybrid"),
    "hybrid-rx": (False, "hybrid"),
}


@dataclass
class OnboardPipeline:
    """What :func:`build_pipeline` made: the ``pipeline``, and for the report the ``detector``'s
    record (name; enhanced: warm-up time or error, the model and its settings), the ``backend``
    chosen and the model ``bundle``; the ``enhancer`` and its ``runner`` (enhanced only), which
    :meth:`close` releases."""

    pipeline: StreamPipeline
    detector: dict[str, Any] = field(default_factory=dict)
    backend: Any = None
    bundle: Any = None
    enhancer: Any = None
    runner: Any = None

    def detector_record(self) -> dict[str, Any]:
        """The ``detector`` record as the stream stands now: after the sensor changed its band
        count mid-stream (the pipeline re-initialised: plain RX on the new bands), its
        ``sensor_bands``, ``reduced_bands`` and ``resampling`` are the new ones, and
        ``band_changes`` lists each change (:attr:`StreamPipeline.band_changes`), and its
        ``good_bands`` and ``bad_bands`` those of the new count (at a count other than the mask's,
        every band is good)."""
        record = dict(self.detector)
        changes = self.pipeline.band_changes
        if changes:
            latest = changes[-1]
            record.update(
                sensor_bands=latest["bands"],
                good_bands=self.pipeline.detection_bands,
                bad_bands=bad_band_indices(self.pipeline.pixel_rule.good),
                reduced_bands=latest["reduced_bands"],
                resampling=latest["resampling"],
                band_changes=[dict(change) for change in changes],
            )
        return record

    def close(self) -> None:
        """Finish the pipeline (the lines still held are scored; a no-op if finished) and release
        the network: the enhancer's worker thread and the runner. Safe to call more than once.
        Refused from ``on_result``, before anything is released (it finished the stream there no
        more than finish() does, but released the network while lines went on arriving)."""
        self.pipeline.refuse_from_callback("close")
        try:
            self.pipeline.finish()
        finally:
            _release(self.enhancer, self.runner)

    def __enter__(self) -> OnboardPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_pipeline(
    width: int,
    bands: int,
    detector: str = "enhanced-rx",
    *,
    model: str | None = None,
    backend: str = "auto",
    precision: str | None = None,
    onnx: str | None = None,
    engine: str | None = None,
    device: str = "cpu",
    async_enhance: bool = False,
    line_rate_hz: float = 330.0,
    reorder_window: int = 4,
    cuda_rx: Any = None,
    on_result: Callable[[LineResult], None] | None = None,
    wavelengths: Any = None,
    good_bands: Any = None,
    no_data_value: float | None = None,
    saturation: float | None = None,
    reduction_kernel: str = "linear",
    counter_bits: int | None = None,
    counter_start: int = 0,
) -> OnboardPipeline:
    """The line loop of ``detector`` for ``width``-pixel lines of ``bands`` bands. The options
    are ``edge-had stream``'s: ``precision`` is ``--net-precision`` (None: what ``engine`` or
    ``onnx`` records, else fp32), ``line_rate_hz`` your
    camera's line rate (``--line-rate``: it sets the deadline of the late-line flag; default the
    FX10's 330 Hz), ``cuda_rx`` an open CudaRX for ``--rx-device cuda`` (yours to close). The
    network-only ones (``model`` to ``async_enhance``) are refused for ``rx`` and ``hybrid-rx``,
    as the command refuses them. A network that fails its warm-up does not stop the loop: the
    pipeline scores plain RX from the first line, flagged, and ``detector["warm_up_error"]``
    says why (nothing is printed or logged: the caller decides). If building fails after the
    network started, the network is released before the error propagates. ``wavelengths``: the
    sensor's ``bands`` band centres in nm, when known - the bands are then resampled on them, as
    ``detect`` does (the model's adapter, or the 32 bands of plain RX), else on band index; an
    ONNX graph or engine given must have been exported for the same (``edge-had export
    --wavelengths``; of the good bands, when some are bad). ``good_bands``: a mask of the sensor's
    ``bands`` (bool or 0/1, ENVI's ``bbl``; None: all good), only the good ones scored - the
    network and the band reduction are built for them. ``no_data_value`` (ENVI's ``data ignore
    value``) and ``saturation`` (the sensor's saturation level, e.g. 4095 for 12 bits): a pixel
    holding the one, or at or above the other, in a good band is masked - scored NaN, kept out of
    the statistics, counted in ``health.masked_pixels`` by reason, the line flagged
    ``masked-pixels`` (and ``saturated``) - as for a NaN/Inf pixel; None (the default): no such
    value. ``reduction_kernel`` (``--reduction-kernel``): how ``rx`` and ``hybrid-rx`` reduce more
    than 32 bands to 32 - ``"linear"`` (default: interpolation, 2 sensor bands per reduced band)
    or ``"triangle"`` (band-averaging: less noise on many noisy bands;
    :func:`edge_had.stream.run.band_reduction`); refused for enhanced-* detectors, whose model
    does its own resampling. The ``detector`` record says so: ``good_bands`` (the count scored),
    ``bad_bands`` (0-based, the ones left out), ``no_data_value``, ``saturation``,
    ``reduction_kernel`` (plain detectors). ``push(line, index,
    timestamp)`` takes the line's number as ``index`` (consecutive lines differ by 1) and any
    clock, e.g. the camera's tick counter, as ``timestamp``. ``counter_bits``: the width of that
    line counter when it wraps (e.g. 16: after 65535 comes 0), so a wrap costs no line
    (``health.counter_wraps``; :mod:`edge_had.stream.line_order`); None (default): a wrap is
    followed as a counter restart, its first line lost. ``counter_start``: the value it wraps to
    - 0 (default), or 1 for a counter that skips 0 (GigE Vision 1.x block IDs: after 65535 comes
    1); with 0 such a counter would have one index counted missing at each wrap."""
    from argparse import Namespace

    from edge_had.cli_types import refuse_network_options
    from edge_had.stream.causal import NUMPY_LINE_MATH
    from edge_had.stream.line_order import checked_counter_bits
    from edge_had.stream.pipeline import StreamPipeline, checked_count, sensor_good_bands
    from edge_had.stream.run import (
        DEFAULT_REDUCED_BANDS,
        DEFAULT_SETTINGS,
        band_reduction,
        checked_reduction_kernel,
    )

    if detector not in STREAM_DETECTORS:
        raise ValueError(f"unknown stream detector {detector!r}; choose one of {list(STREAM_DETECTORS)}")
    width, bands = checked_count("width", width, 1), checked_count("bands", bands, 1)
    reorder_window = checked_count("reorder_window", reorder_window, 0)
    if not line_rate_hz > 0:
        raise ValueError(f"line_rate_hz must be > 0, got {line_rate_hz}")
    enhanced, scorer = STREAM_DETECTORS[detector]
    options = Namespace(model=model, onnx=onnx, engine=engine, backend=backend, net_precision=precision,
                        device=device, async_enhance=async_enhance)  # fmt: skip
    refuse_network_options(options, detector, enhanced)
    checked_reduction_kernel(reduction_kernel, detector if enhanced else None)
    checked_counter_bits(counter_bits, reorder_window, counter_start)
    good = sensor_good_bands(good_bands, bands)  # (ValueError for a mask that does not fit)
    scored = bands if good is None else int(good.sum())
    if wavelengths is not None:
        wavelengths = np.asarray(wavelengths, dtype=np.float64).ravel()
        if wavelengths.size != bands:
            raise ValueError(f"{wavelengths.size} wavelengths for {bands} bands")
    good_wavelengths = wavelengths if wavelengths is None or good is None else wavelengths[good]
    for name, value in (("no_data_value", no_data_value), ("saturation", saturation)):
        if value is not None and not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    record: dict[str, Any] = {
        "name": detector,
        "sensor_bands": bands,
        "good_bands": scored,
        "bad_bands": bad_band_indices(good),
        "no_data_value": no_data_value,
        "saturation": saturation,
        "resampling": "band_index" if wavelengths is None else "wavelength",
        "counter_bits": counter_bits,
        "counter_start": counter_start,
    }
    enhancer, runner, choice, bundle, reduction = None, None, None, None, None
    if enhanced:
        artifacts: dict[str, Any] = {"onnx": onnx, "engine": engine, "device": device}
        enhancer, runner, choice, bundle = _enhancer(
            record,
            scorer,
            scored,
            width,
            good_wavelengths,
            model,
            backend,
            precision,
            artifacts,
            async_enhance,
        )
    else:
        reduction = band_reduction(scored, DEFAULT_REDUCED_BANDS, good_wavelengths, reduction_kernel)
        if reduction is None:  # 32 bands or fewer: scored as they are
            record["resampling"] = "none"
        record["reduced_bands"] = scored if reduction is None else reduction.shape[0]
        record["reduction_kernel"] = reduction_kernel  # also kept for a new band count
    try:
        line_math: Any = NUMPY_LINE_MATH
        local_math: Any = None
        if cuda_rx is not None:
            from edge_had.stream.cuda_line_math import CudaLineMath, CudaLocalMath

            line_math, local_math = CudaLineMath(cuda_rx), CudaLocalMath(cuda_rx)
        pipeline = StreamPipeline(
            width,
            bands,
            reduction=reduction,
            settings=DEFAULT_SETTINGS,
            budget_s=1.0 / line_rate_hz,
            on_result=on_result,
            enhancer=enhancer,
            reorder_window=reorder_window,
            scorer=scorer,
            line_math=line_math,
            local_math=local_math,
            wavelengths=wavelengths,
            good_bands=good,
            no_data_value=no_data_value,
            saturation=saturation,
            reduction_kernel=reduction_kernel,
            counter_bits=counter_bits,
            counter_start=counter_start,
        )
    except BaseException:
        _release(enhancer, runner)
        raise
    return OnboardPipeline(pipeline, record, choice, bundle, enhancer, runner)


def _enhancer(
    record: dict[str, Any],
    scorer: str,
    bands: int,
    width: int,
    wavelengths: Any,
    model: str | None,
    backend: str,
    precision: str | None,
    artifacts: dict[str, Any],
    asynchronous: bool,
) -> tuple[Any, Any, Any, Any]:
    """The started, warmed-up enhancer of an enhanced detector, its runner, the backend chosen and
    the model; ``record`` gets the warm-up and the model's record. Released again if the warm-up
    is interrupted (e.g. Ctrl-C)."""
    from edge_had.models.bundle import load_bundle
    from edge_had.runtime import choose_backend, enhancement_runner
    from edge_had.runtime.select import passed_over_files
    from edge_had.stream.enhance import EnhancementError, StreamEnhancer, runner_threads_beside_rx

    bundle = load_bundle(model).for_scorer(scorer)
    choice = choose_backend(backend, precision, **artifacts)
    if passed_over := passed_over_files(choice, **artifacts):  # files given but not run: said
        record["files_not_used"] = passed_over
    threads = runner_threads_beside_rx() if asynchronous else None  # a core left for RX
    runner = enhancement_runner(
        choice, bundle, bands, wavelengths, cpu_threads=threads, **artifacts
    ).activate()
    enhancer = StreamEnhancer(bundle, runner, asynchronous=asynchronous)
    try:
        record["warm_up_ms"] = 1e3 * enhancer.warm_up(width, bands)  # before the first line
    except EnhancementError as error:  # the pipeline falls back to plain RX at the first line
        record["warm_up_ms"], record["warm_up_error"] = None, str(error)
    except BaseException:
        _release(enhancer, runner)
        raise
    record["asynchronous_enhancement"] = asynchronous
    record["enhancement_cpu_threads"] = threads
    record.update(model=str(bundle.directory), model_sha256=bundle.sha256, **bundle.config.to_dict())
    return enhancer, runner, choice, bundle


def bad_band_indices(good: np.ndarray | None) -> list[int]:
    """The 0-based indices of the bands a good-band mask leaves out (ENVI ``bbl`` 0; None: none)."""
    return [] if good is None else [int(band) for band in np.flatnonzero(~np.asarray(good, dtype=bool))]


def _release(enhancer: Any, runner: Any) -> None:
    """Stop the enhancer's worker thread, then deactivate its runner (either may be None)."""
    try:
        if enhancer is not None:
            enhancer.close()
    finally:
        if runner is not None:
            runner.deactivate()
