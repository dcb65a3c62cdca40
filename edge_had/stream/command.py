"""``edge-had stream``: a line source through the pipeline, with events, sinks and a JSON report.

Sinks in ``--out``: ``events.jsonl`` (one event per line; from an ENVI file with ``map info``
with the map coordinates of its centroid and box: :meth:`edge_had.stream.events.Event.to_json`,
:mod:`edge_had.io.map_info`), ``scores.npy`` (the score lines,
unscored ones NaN), ``waterfall.png`` (score map with the ground truth outlined when known),
``waterfall.mp4`` (one frame every 8 lines) and, from an ENVI file, ``scores.hdr`` +
``scores.img`` (the scores on the file's map: :mod:`edge_had.io.score_image`). The
report (schema_version 1, ``kind: "stream"``) holds lines/s, the health counters, per-stage latency
p50/p99/max, the look-ahead, the line budget, the backend/precision that ran, the detector
settings (with the masking: good and bad bands, no-data value, saturation level), a file's
``replay`` (lines in it, requested with ``--lines``, replayed: its first ones), the ``interleave``
it was read in (``--interleave``'s or its ENVI header's; None for the synthetic source), its ``map``, the
events summary, and the AUC and false events per 1000 lines when ground truth exists.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge_had.band_resampling import ignored_bands_note, wavelengths_to_use
from edge_had.cli_types import (
    add_interleave_option,
    add_reduction_kernel_option,
    add_resample_option,
    add_saturation_option,
    changed_options,
    check_output_file,
    compute_device,
    existing_file,
    integer_from,
    open_probability,
    positive_number,
    probability,
    refuse_network_options,
)
from edge_had.errors import EdgeHadError, SceneError
from edge_had.eval.report import json_text
from edge_had.io.map_info import MapInfo
from edge_had.io.units import naming_the_file
from edge_had.stream.faults import FAULTS, parse_faults
from edge_had.stream.onboard import STREAM_DETECTORS, build_pipeline
from edge_had.stream.pipeline import NO_VALID_PIXEL
from edge_had.stream.presets import SENSORS, sensor

KEEP_LINES = 4096  # longer synthetic streams keep no per-line outputs in memory (soak runs)
DEFAULT_SYNTHETIC_LINES = 512
RSS_EVERY = 100_000  # lines between samples of the resident memory
FAULT_OPTION_DEFAULTS = {"fault_rate": 0.01, "fault_seed": 0}  # refused without --faults
PLAIN_OPTION_DEFAULTS = {"reduction_kernel": "linear"}  # refused for enhanced-* (no band reduction)
SOAK_STRIP_LINES = 256  # a long synthetic stream cycles strips of this many lines, rendered before it
SOAK_STRIPS = 8  # ... at most this many distinct strips
SOAK_STRIP_BYTES = 256 * 2**20  # ... holding at most this much together (at least one strip)


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="scene file (.mat, .hdr, .npy, .h5) or 'synthetic'")
    parser.add_argument(
        "--sensor", choices=sorted(SENSORS), default="fx10", help="sensor preset (default fx10)"
    )
    parser.add_argument("--line-rate", type=positive_number, help="line rate in Hz (default: the sensor's)")
    parser.add_argument(
        "--detector",
        choices=list(STREAM_DETECTORS),
        default="enhanced-rx",
        help="enhanced-rx (default): the shipped enhancement, then causal RX; rx: causal RX on the "
        "sensor's bands resampled to 32 (kept as they are at 32 or fewer); *hybrid-rx: sqrt(RX * LRX) "
        "with a causal local RX, 7 lines more look-ahead",
    )
    parser.add_argument("--model", help="enhanced-*: model folder (default: the shipped model)")
    parser.add_argument(
        "--backend",
        choices=["auto", "tensorrt", "onnxruntime", "torch"],
        default="auto",
        help="enhanced-*: auto (default) takes the first available of tensorrt > onnxruntime > torch",
    )
    parser.add_argument(
        "--net-precision",
        choices=["fp32", "fp16", "int8"],
        help="enhanced-*: default: what the --engine or --onnx file records, else fp32",
    )
    parser.add_argument(
        "--onnx",
        type=existing_file,
        help="enhanced-*: exported ONNX graph for the sensor (`edge-had export`; add --scorer hybrid "
        "for enhanced-hybrid-rx)",
    )
    parser.add_argument("--engine", type=existing_file, help="enhanced-*: TensorRT engine (`edge-had build`)")
    parser.add_argument(
        "--device", type=compute_device, default="cpu", help="enhanced-*: cpu (default), cuda or cuda:N"
    )
    parser.add_argument(
        "--rx-device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where causal RX's per-line sums and scores, and hybrid RX's local part, run: numpy (cpu) "
        "or edge-had's CUDA kernels (rx_kernels.cu through pycuda or CuPy: FP64 sums, FP32 scores; "
        "the local part in FP64)",
    )
    parser.add_argument(
        "--async-enhance",
        action="store_true",
        help="enhanced detectors: run the network on a worker thread, overlapping RX of the previous "
        "block (a GPU or ONNX Runtime's threads; a line may wait one block longer)",
    )
    parser.add_argument("--pace", action="store_true", help="replay at the line rate; late lines are dropped")
    parser.add_argument(
        "--lines",
        type=integer_from(1),
        help="synthetic: number of lines (default 512); a file: replay its first N lines only "
        "(default: all). rx scores them as the full replay does, bit for bit; the detectors with "
        "look-ahead (hybrid, enhanced) score the last lines without the lines after them: those differ",
    )
    parser.add_argument(
        "--width", type=integer_from(1), help="synthetic: pixels per line (default: the sensor's)"
    )
    parser.add_argument("--bands", type=integer_from(2), help="synthetic: bands (default: the sensor's)")
    parser.add_argument("--seed", type=int, help="synthetic: seed (default 0)")
    parser.add_argument(
        "--pfa",
        type=open_probability,
        default=1e-6,
        help="per-pixel false-alarm rate of the event threshold (default 1e-6)",
    )
    parser.add_argument(
        "--min-event-area",
        type=integer_from(1),
        default=1,
        help="drop events of fewer pixels, counted in the report (default 1: keep all; set it from "
        "your smallest target in pixels at your ground sampling distance)",
    )
    parser.add_argument("--faults", help="inject faults: 'all' or a comma list of " + ",".join(FAULTS))
    parser.add_argument(
        "--fault-rate",
        type=probability,
        default=FAULT_OPTION_DEFAULTS["fault_rate"],
        help="probability per line of each fault (0.01)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=FAULT_OPTION_DEFAULTS["fault_seed"], help="fault seed (default 0)"
    )
    parser.add_argument(
        "--reorder-window",
        type=integer_from(0),
        default=4,
        help="lines held to put late lines back in order (4; 0: reject them)",
    )
    parser.add_argument(
        "--counter-bits",
        type=integer_from(8),
        help="number the lines as a camera's line counter of this many bits (8 to 64) does - after "
        "2^N - 1 comes 0 - and stream them so: rehearses the counter's wraps (counter_wraps in the "
        "report; rows go on across a wrap). Default: lines numbered 0, 1, 2, ... without a wrap",
    )
    add_resample_option(parser, "every detector (plain RX resamples to 32 bands when it has more): ")
    add_reduction_kernel_option(parser)
    add_interleave_option(parser)
    add_saturation_option(parser)
    parser.add_argument(
        "--out",
        help="folder for events.jsonl, scores.npy, waterfall.png and waterfall.mp4 (from an ENVI file "
        "also scores.hdr + scores.img, on the file's map)",
    )
    parser.add_argument(
        "--show", action="store_true", help="live waterfall window (needs a GUI OpenCV and a display)"
    )
    parser.add_argument("--json", help="write the JSON report here")


SYNTHETIC_ONLY = ("width", "bands", "seed")  # options that shape a synthetic source
FILE_ONLY = ("interleave",)  # options that say how a file is read


@dataclass
class _Source:
    """Lines as the sensor (or the file) gives them, and what is known of them: what a camera
    loop passes to build_pipeline."""

    lines: Any  # an iterable of Line
    gt: np.ndarray | None
    valid: np.ndarray | None  # the pixels the AUC counts (with the ground truth) if the map labels them
    width: int
    bands: int  # each line's, good and bad
    wavelengths: np.ndarray | None  # band centres in nm, when known
    good_bands: np.ndarray | None = None  # ENVI bbl (None: all good)
    no_data_value: float | None = None  # ENVI 'data ignore value'
    distinct_strips: int | None = None  # a long synthetic stream: the strips it cycles
    envi_header: str | None = None  # an ENVI file's header: --out gets scores.hdr on its map
    meta: dict[str, Any] = field(default_factory=dict)  # a file's reader's (format, interleave, header, ...)
    notes: list[str] = field(default_factory=list)  # what the reader noted (a file read as detect reads it)
    map_info: MapInfo | None = None  # an ENVI file's map: events get map coordinates
    replay: dict[str, Any] | None = None  # a file: lines in it, requested (--lines), replayed
    labelled: np.ndarray | None = None  # the pixels the ground truth labels (None: all)


def masked_pixels_left_out(scores: np.ndarray, masked_rows: Sequence[int] = ()) -> np.ndarray:
    """The pixels an AUC counts for a file streamed line by line: all but the pixels the stream
    masked (NaN/Inf, no-data, saturated) - the unscored (NaN) pixels of the lines scored, and
    every pixel of the ``masked_rows``, lines rejected with no valid pixel - left out as
    ``detect`` leaves them out; a line lost or rejected for another reason counts, scored 0."""
    masked = np.isnan(scores) & np.isfinite(scores).any(axis=1, keepdims=True)
    masked[[row for row in masked_rows if row < len(scores)]] = True
    return ~masked


def _take_ground_truth_beside(source: _Source, path: str, rows: int) -> None:
    """An ENVI or .npy file's ground truth, the map beside it (``NAME_gt.npy``/``.hdr``, as
    ``load_scene`` takes it: :func:`~edge_had.io.readers.ground_truth_beside`), for the lines
    replayed, into ``source.gt`` (the pixels it labels into ``source.labelled``); its file into
    ``source.meta["gt_path"]`` (without one, nothing)."""
    from edge_had.io.readers import ground_truth_beside, load_ground_truth
    from edge_had.io.scene import labelled_pixels

    beside = ground_truth_beside(path)
    if beside is None:
        return
    assert source.replay is not None
    gt = load_ground_truth(beside, path, (rows, source.width), notes=source.notes)
    replayed = slice(0, source.replay["lines_replayed"])
    source.gt = np.ma.getdata(gt)[replayed]
    if (labelled := labelled_pixels(gt)) is not None:
        source.labelled = labelled[replayed]
    source.meta["gt_path"] = str(beside)


def _source(args: argparse.Namespace) -> _Source:
    from edge_had.io.scene import PixelRule
    from edge_had.stream.sources import file_lines, scene_lines, synthetic_lines

    preset = sensor(args.sensor)
    rate = args.line_rate or preset.line_rate_hz
    if args.source == "synthetic":
        from edge_had.io.synthetic import SyntheticSettings, synthetic_scene

        given = [f"--{name}" for name in FILE_ONLY if getattr(args, name) is not None]
        if given:  # the synthetic scene is rendered, not read
            raise EdgeHadError(f"{', '.join(given)}: only for a file --source")

        width, bands = args.width or preset.width, args.bands or preset.bands
        count, seed = args.lines or DEFAULT_SYNTHETIC_LINES, args.seed or 0
        if count <= KEEP_LINES:  # bounded: one scene, so its ground truth is known
            scene = synthetic_scene(seed=seed, lines=count, width=width, bands=bands)
            lines = scene_lines(scene.cube, rate, args.pace)
            valid = scene.valid
            if args.saturation is not None:  # the AUC counts the pixels the pipeline scores
                valid = valid & PixelRule(saturation=args.saturation).valid(scene.cube, scene.cube)
            return _Source(lines, scene.gt, valid, width, bands, scene.wavelengths)
        strip_bytes = SOAK_STRIP_LINES * width * bands * 4  # float32
        distinct = max(1, min(SOAK_STRIPS, -(-count // SOAK_STRIP_LINES), SOAK_STRIP_BYTES // strip_bytes))
        lines = synthetic_lines(
            width,
            bands,
            count,
            seed,
            SOAK_STRIP_LINES,
            line_rate=rate,
            pace=args.pace,
            distinct_strips=distinct,
        )
        print(
            f"note: {distinct} synthetic strip(s) of {SOAK_STRIP_LINES} lines rendered first, then cycled",
            file=sys.stderr,
        )
        return _Source(
            lines,
            None,
            None,
            width,
            bands,
            SyntheticSettings(bands=bands).band_centres(),
            distinct_strips=distinct,
        )
    given = [f"--{name}" for name in SYNTHETIC_ONLY if getattr(args, name) is not None]
    if given:  # a file has its own lines, width, bands: the options would be ignored
        raise EdgeHadError(f"{', '.join(given)}: only for --source synthetic; a file streams as it is")
    from edge_had.io.readers import CONTAINER_SUFFIXES

    if Path(args.source).suffix.lower() in CONTAINER_SUFFIXES:  # read whole: it may hold a ground truth
        from edge_had.io import load_scene

        scene = load_scene(args.source, interleave=args.interleave, saturation=args.saturation)
        replay = _replay(scene.cube.shape[0], args.lines)
        first = slice(0, replay["lines_replayed"])  # --lines: the first lines, their ground truth
        lines = scene_lines(scene.cube[first], rate, args.pace)  # every band; the pipeline masks
        _, width, bands = scene.cube.shape
        notes = list(scene.meta.get("notes", []))
        gt = None if scene.gt is None else scene.gt[first]
        return _Source(
            lines,
            gt,
            scene.valid[first],
            width,
            bands,
            scene.wavelengths,
            scene.good_bands,
            meta=scene.meta,
            notes=notes,
            replay=replay,
            labelled=None if scene.labelled is None else scene.labelled[first],
        )
    # ENVI, .npy: one line at a time from the memory map, as stored; the pipeline masks as load_scene
    stream = file_lines(
        args.source,
        interleave=args.interleave,
        line_rate=rate,
        pace=args.pace,
        saturation=args.saturation,
        lines=args.lines,
    )
    source = _Source(
        stream.lines,
        None,
        None,
        stream.width,
        stream.bands,
        stream.wavelengths,
        stream.good_bands,
        stream.no_data_value,
        meta=stream.meta,
        notes=list(stream.meta.get("notes", [])),
    )
    source.replay = _replay(stream.lines_in_file, args.lines)
    _take_ground_truth_beside(source, args.source, stream.lines_in_file)
    if stream.meta.get("format") == "envi":
        from edge_had.io.map_info import map_info_of

        source.envi_header = stream.meta["header"]
        try:
            source.map_info = map_info_of(source.envi_header)
        except SceneError as error:  # the lines are still worth scoring: said, and the events unplaced
            source.notes.append(f"{error}: events carry no map coordinates")
    return source


def _replay(in_file: int, requested: int | None) -> dict[str, Any]:
    """A file's replay: its lines, the ``--lines`` requested (None: all) and the lines replayed,
    the file's first ones; a request past the file's end is said."""
    replayed = in_file if requested is None else min(requested, in_file)
    if requested is not None and requested > in_file:
        note = f"note: --lines {requested}: the file has {in_file} lines; all of them are replayed"
        print(note, file=sys.stderr)
    return {"lines_in_file": in_file, "lines_requested": requested, "lines_replayed": replayed}


def run_stream_command(args: argparse.Namespace) -> int:
    # (build_pipeline refuses them too; here before a file is read or a CUDA context made)
    refuse_network_options(args, args.detector, enhanced=STREAM_DETECTORS[args.detector][0])
    if STREAM_DETECTORS[args.detector][0] and (given := changed_options(args, PLAIN_OPTION_DEFAULTS)):
        raise EdgeHadError(
            f"{' '.join(given)}: only rx and hybrid-rx reduce bands; {args.detector}'s model resamples them"
        )
    if args.json:  # refused now, not after the whole stream has run
        check_output_file(args.json, "--json")
    if args.faults:  # an unknown name, now rather than after the model is built
        try:
            parse_faults(args.faults)
        except ValueError as error:
            raise EdgeHadError(f"--faults: {error}") from None
    elif given := changed_options(args, FAULT_OPTION_DEFAULTS):
        raise EdgeHadError(f"{' '.join(given)}: only with --faults")
    cuda_rx = None
    if args.rx_device == "cuda":  # fails here, saying why, without a GPU, pycuda or CuPy
        from edge_had.cuda.rx_kernels import CudaRX

        cuda_rx = CudaRX()
    try:
        return _run_stream(args, cuda_rx)
    finally:
        if cuda_rx is not None:
            cuda_rx.close()


@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C (SIGINT) sets ``stop``: the stream finishes the lines it has and writes
    its outputs; a second one aborts as usual. Only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("interrupted: finishing the lines received so far (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_rx_device(scorer: Any) -> dict[str, Any] | None:
    """Where the hybrid scorer's local RX ran (None for global RX) and how many lines the CUDA
    kernel left to numpy (singular windows)."""
    if not hasattr(scorer, "local_math"):
        return None
    device = scorer.local_math
    return {
        "device": "numpy" if device is None else device.name,
        "numpy_lines": None if device is None else device.numpy_lines,
    }


def _run_stream(args: argparse.Namespace, cuda_rx: Any) -> int:
    from edge_had.eval.report import SCHEMA_VERSION, platform_info
    from edge_had.io import scene_sha256
    from edge_had.stream.events import EventDetector, stream_threshold
    from edge_had.stream.run import RowScoredTwiceError, paced_max_lag_s, run_stream

    _check_counter_bits(args)
    source = _source(args)
    lines, gt, width, bands = source.lines, source.gt, source.width, source.bands
    for note in source.notes:  # as detect prints a scene's notes; the report carries them
        print(f"warning: {Path(args.source).stem}: {note}", file=sys.stderr)
    preset = sensor(args.sensor)
    rate = args.line_rate or preset.line_rate_hz
    enhanced, scorer = STREAM_DETECTORS[args.detector]
    source_sha256 = None if args.source == "synthetic" else scene_sha256(args.source)
    resampled_on = wavelengths_to_use(args.resample, source.wavelengths)
    file = None if args.source == "synthetic" else args.source
    with naming_the_file(file, source.meta, f"cannot stream with {args.detector}"):
        onboard = build_pipeline(
            width,
            bands,
            args.detector,
            model=args.model,
            backend=args.backend,
            precision=args.net_precision,
            onnx=args.onnx,
            engine=args.engine,
            device=args.device,
            async_enhance=args.async_enhance,
            line_rate_hz=rate,
            reorder_window=args.reorder_window,
            cuda_rx=cuda_rx,
            wavelengths=resampled_on,
            good_bands=source.good_bands,
            no_data_value=source.no_data_value,
            saturation=args.saturation,
            reduction_kernel=args.reduction_kernel,
            counter_bits=args.counter_bits,
        )
    pipeline, backend = onboard.pipeline, onboard.backend
    trained_on = _say_what_it_runs(onboard, source, args.source, enhanced, source_sha256)
    if args.counter_bits is not None:  # the camera numbers its lines; faults then spoil their delivery
        from edge_had.stream.sources import counter_numbered

        lines = counter_numbered(lines, args.counter_bits)
    if args.faults:
        from edge_had.stream.faults import faulty_lines

        at = {} if args.saturation is None else {"saturation": args.saturation}  # 'saturate' clips there
        faults = parse_faults(args.faults)
        bits = 16 if args.counter_bits is None else args.counter_bits  # 'index' flips one of them
        lines = faulty_lines(lines, faults, rate=args.fault_rate, seed=args.fault_seed, index_bits=bits, **at)
    keep = not (args.source == "synthetic" and (args.lines or DEFAULT_SYNTHETIC_LINES) > KEEP_LINES)
    pfa, min_area = args.pfa, args.min_event_area

    events_detector = EventDetector(stream_threshold(scorer, pipeline.rx, pfa), min_area=min_area)
    threshold_bands = pipeline.rx.bands  # a fallback to plain RX changes the scored bands
    events: list[Any] = []
    video = _video(args, width)  # streams frame by frame: long streams get one too
    events_file = None
    if args.out:
        events_file = _open_outputs(Path(args.out), keep, envi=source.envi_header is not None)
    waiting: dict[int, Any] = {}
    seen = {"next": 0, "rows": 0, "results": 0, "events": 0}

    def event_line(event: Any) -> str:  # rows are the file's lines: its map places them
        return json_text(event.to_json(source.map_info), indent=None) + "\n"

    rss_curve: list[tuple[int, float | None]] = []

    def release(result: Any) -> None:
        nonlocal threshold_bands
        if result.state == "scored":
            if pipeline.rx.bands != threshold_bands:  # a fallback to plain RX, or a new band count
                events_detector.threshold = stream_threshold(scorer, pipeline.rx, pfa)
                threshold_bands = pipeline.rx.bands
            finished = events_detector.add(
                result.row,
                result.scores,
                result.timestamp,
                result.meta,
                segment=result.segment,
                index=result.index,
            )
            seen["events"] += len(finished)
            if events_file is not None:
                events_file.writelines(event_line(event) for event in finished)
            if keep:
                events.extend(finished)
            if video is not None:
                video.add_events(finished)
                video.add_line(result.row, result.scores)
        seen["rows"] = max(seen["rows"], result.row + 1)
        seen["next"] = max(seen["next"], result.row + 1)

    masked_rows: list[int] = []

    def on_result(result: Any) -> None:
        # warm-up lines arrive late: release in row order (the line's place along track, unique
        # even when the sensor's counter restarts), holding at most 64 results (a gap in the rows
        # never fills: a later line's scores, or the 65th result, release past it). A line with no
        # row - rejected for its index (a duplicate), or after finish - must not replace, or be
        # released before, the line that owns it.
        if result.row is not None:
            waiting[result.row] = result
            if result.state == "rejected" and result.reason == NO_VALID_PIXEL:
                masked_rows.append(result.row)  # every pixel masked: left out of the AUC
        if result.state == "scored":  # scores come in row order: every earlier line is settled,
            for row in sorted(r for r in waiting if r <= result.row):  # so a gap waits no longer
                release(waiting.pop(row))
        while seen["next"] in waiting:
            release(waiting.pop(seen["next"]))
        while len(waiting) > 64:
            release(waiting.pop(min(waiting)))
        seen["results"] += 1
        if seen["results"] % RSS_EVERY == 0:
            rss_curve.append((seen["results"], current_rss_mb()))

    from edge_had.stream.pipeline import current_rss_mb

    stop = threading.Event()
    scored_twice = None  # a bug: said, with a non-zero exit status, once the outputs are written
    with _stop_on_interrupt(stop):
        try:
            run = run_stream(
                lines,
                pipeline,
                max_lag_s=paced_max_lag_s(pipeline, rate) if args.pace else None,
                on_result=on_result,
                keep_scores=keep,
                stop=stop,
            )
        except RowScoredTwiceError as error:
            run, scored_twice = error.run, str(error)
    for row in sorted(waiting):  # after gaps in the rows
        release(waiting.pop(row))
    final = events_detector.finish()
    seen["events"] += len(final)
    events += final if keep else []
    if events_file is not None:
        events_file.writelines(event_line(event) for event in final)
        events_file.close()
    if video is not None:
        video.add_events(final)  # events the end of the stream closed get their boxes too
        video.close()
    rows = seen["rows"]
    if keep and not run.interrupted:  # lost last lines are missing lines too: NaN rows of the map
        replayed = gt.shape[0] if gt is not None else (source.replay or {}).get("lines_replayed", 0)
        rows = max(rows, replayed)  # (a row past the ground truth - a counter not from 0 - keeps its line)
    scores = run.score_map(rows if keep else 0, width)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "stream",
        "source": args.source,
        "source_sha256": source_sha256,
        "trained_on": trained_on,
        "sensor": {"preset": preset.name, "line_rate_hz": rate, "budget_ms": 1e3 / rate},
        "lines_per_second": run.lines_per_second,
        "interrupted": run.interrupted,
        "replay": source.replay,
        "interleave": source.meta.get("interleave"),  # a file's: --interleave's or its header's
        # the map the AUC is scored against, when not stored in the file (NAME_gt.npy/.hdr beside it)
        "ground_truth_file": Path(source.meta["gt_path"]).name if source.meta.get("gt_path") else None,
        "map": None if source.map_info is None else source.map_info.describe(),
        "synthetic_strips": None
        if source.distinct_strips is None
        else {
            "distinct": source.distinct_strips,
            "lines": SOAK_STRIP_LINES,
            "rendered_before_the_stream": True,
        },
        "detector": onboard.detector_record(),  # a band-count change mid-stream updates it
        "backend": None if backend is None else backend.to_dict(),
        "rx_device": {
            "device": args.rx_device,
            "cuda": None if cuda_rx is None else cuda_rx.describe(),
            "local_rx": _local_rx_device(run.pipeline.rx),
        },
        **run.pipeline.report(),
        "look_ahead_ms": run.pipeline.look_ahead_lines * 1e3 / rate,
        "events": {
            "threshold": events_detector.threshold,
            "threshold_rule": "chi-square" if scorer == "global" else "geometric mean of chi-square",
            "pfa": pfa,
            "min_area": min_area,
            "count": seen["events"],
            "suppressed_small": events_detector.suppressed,
        },
        "notes": source.notes,
        "faults": None
        if not args.faults
        else {"faults": args.faults, "rate": args.fault_rate, "seed": args.fault_seed},
        "rss_curve": [{"results": n, "rss_mb": mb} for n, mb in rss_curve],
        "platform": platform_info(),
    }
    if gt is not None and rows == gt.shape[0]:
        _judge_against_ground_truth(report, source, scores, masked_rows, events, Path(args.source).stem)
    elif gt is not None:  # rows the map does not have, or a map rows were not scored for: say so
        why = "the stream was interrupted" if run.interrupted else "line indices ran past the file's lines"
        note = f"no AUC: the score map has {rows} rows, the ground truth {gt.shape[0]}: {why}"
        report["notes"] = [*report["notes"], note]
        print(f"warning: {Path(args.source).stem}: {note}", file=sys.stderr)
    if args.json:  # the report first: it holds what the run measured
        from edge_had.eval.report import write_json

        write_json(report, args.json)
    if args.out and keep:
        _write_score_map(Path(args.out), scores, source, args)
    _print_summary(report)
    if not report["health"]["accounting_ok"]:
        raise EdgeHadError("line accounting does not add up (a bug): see the report's health object")
    if scored_twice is not None:
        raise EdgeHadError(f"{scored_twice} (the outputs are written)")
    if report["health"]["callback_errors"]:
        print(f"warning: writing results failed: {report['health']['first_callback_error']}", file=sys.stderr)
        return 2
    return 130 if run.interrupted else 0  # 128 + SIGINT, as a shell reports an interrupted command


def _say_what_it_runs(
    onboard: Any, source: _Source, name: str, enhanced: bool, source_sha256: str | None
) -> bool | None:
    """Warn of what the built pipeline leaves out or replaced (sensor bands the model gives no
    weight, a failed network warm-up, engine/ONNX files that did not run), and whether its model
    was trained on the source (None: no model; a note, also into the source's notes, when it was)."""
    from edge_had.eval.protocol import training_check

    detector = onboard.detector
    # the model's adapter resamples the good bands only, as detect does
    if enhanced and (ignored := ignored_bands_note(onboard.pipeline.detection_wavelengths())) is not None:
        print(f"warning: {Path(name).stem}: {ignored}", file=sys.stderr)
        source.notes.append(ignored)
    if "warm_up_error" in detector:
        print(
            f"warning: the enhancement network failed its warm-up: {detector['warm_up_error']}",
            file=sys.stderr,
        )
    for file, why in detector.get("files_not_used", {}).items():
        print(f"warning: {file} did not run, {onboard.backend.backend} ran instead: {why}", file=sys.stderr)
    if onboard.bundle is None:  # only an enhanced stream has a model that may have seen the source
        return None
    if source_sha256 is None:
        return False  # a synthetic source: no model saw it
    trained_on, notes = training_check(onboard.bundle.known_training_scenes, source_sha256, Path(name).stem)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    source.notes.extend(notes)
    return trained_on


def _open_outputs(out: Path, keep: bool, envi: bool) -> TextIO:
    """The ``--out`` folder made ready - no earlier run's score map left beside this run's outputs
    (``keep``: this run writes one; ``envi``: also as scores.hdr/.img) - and its events.jsonl
    opened for writing (the caller closes it)."""
    out.mkdir(parents=True, exist_ok=True)
    writes = {"scores.npy", "waterfall.png"} if keep else set()
    if keep and envi:
        writes |= {"scores.hdr", "scores.img"}
    for name in {"scores.npy", "waterfall.png", "scores.hdr", "scores.img"} - writes:
        (out / name).unlink(missing_ok=True)
    if not keep:  # no score map is kept: say so
        print(
            f"note: a synthetic stream of over {KEEP_LINES} lines keeps no score map (bounded "
            "memory): --out gets events.jsonl and waterfall.mp4, not scores.npy or waterfall.png",
            file=sys.stderr,
        )
    return open(out / "events.jsonl", "w")  # noqa: SIM115 - the stream closes it


def _judge_against_ground_truth(
    report: dict[str, Any],
    source: _Source,
    scores: np.ndarray,
    masked_rows: Sequence[int],
    events: Sequence[Any],
    name: str,
) -> None:
    """The stream's AUC against the source's ground truth (the pixels it masked, and those the map
    leaves unlabelled, left out; None with a note when a class is missing) and its events judged
    (false: no anomaly pixel, every pixel labelled; unjudged: no labelled anomaly pixel but some
    unlabelled one, which may be its cause), into ``report``."""
    from edge_had.eval.metrics import missing_class, roc_auc
    from edge_had.stream.events import judged

    gt, valid = source.gt, source.valid
    assert gt is not None
    if valid is None:  # a file streamed line by line (its map beside it): the pixels it masked
        valid = masked_pixels_left_out(scores, masked_rows)
    if source.labelled is not None:  # what the map leaves unlabelled is scored, not counted
        valid = valid & source.labelled
    missing = missing_class(gt, valid)
    if missing is None:
        report["auc"] = roc_auc(np.nan_to_num(scores, nan=0.0), gt, valid)
    else:  # a strip of the flight with no target (--lines N): the outputs still count
        report["auc"] = None
        among = "the lines streamed"
        if source.labelled is not None:  # the map leaves pixels out
            among = f"the labelled pixels of {among}"
        note = f"no AUC: no {missing} pixel among {among}"
        report["notes"] = [*report["notes"], note]
        print(f"warning: {name}: {note}", file=sys.stderr)
    verdicts = Counter(judged(event.pixels, gt, source.labelled) for event in events)
    report["events"]["false"] = verdicts["false"]
    report["events"]["unjudged"] = verdicts["unjudged"]  # reaching onto unlabelled pixels
    report["events"]["false_per_1000_lines"] = 1000.0 * verdicts["false"] / len(scores)


def _write_score_map(out: Path, scores: np.ndarray, source: _Source, args: argparse.Namespace) -> None:
    """scores.npy, an ENVI file's scores.hdr/.img on its map, and waterfall.png (the ground truth
    outlined when it covers the rows scored) into ``out``."""
    np.save(out / "scores.npy", scores)
    if source.envi_header is not None:  # the streamed lines are the file's first ones
        from edge_had.io.score_image import georeference_of, write_score_image

        write_score_image(
            out / "scores.hdr",
            scores,
            band_name=f"{args.detector} score",
            description=f"edge-had stream {args.detector} scores of {args.source}; NaN: not scored",
            georeference=georeference_of(source.envi_header),
        )
    from edge_had.eval.plots import save_score_map_png

    rows, gt = len(scores), source.gt
    # an interrupted stream has fewer rows (and rows past the ground truth have no outline)
    outline = None if gt is None or gt.shape[0] < rows else gt[:rows]
    labelled = None if outline is None or source.labelled is None else source.labelled[:rows]
    # unscored pixels (lost, rejected, masked) stay NaN: blank, not drawn as the lowest score
    save_score_map_png(scores, out / "waterfall.png", outline, f"stream: {args.source}", labelled)


def _check_counter_bits(args: argparse.Namespace) -> None:
    """--counter-bits within a counter's widths, and wide enough for --reorder-window."""
    from edge_had.stream.line_order import COUNTER_BITS, checked_counter_bits

    if args.counter_bits is not None and args.counter_bits not in COUNTER_BITS:
        raise EdgeHadError(f"--counter-bits {args.counter_bits}: a line counter has 8 to 64 bits")
    try:
        checked_counter_bits(args.counter_bits, args.reorder_window)
    except ValueError as error:
        raise EdgeHadError(f"--counter-bits {args.counter_bits} with --reorder-window "
                           f"{args.reorder_window}: {error}") from None  # fmt: skip


def _video(args: argparse.Namespace, width: int) -> Any:
    from edge_had.stream.video import WaterfallVideo, window_unavailable_reason

    show = bool(args.show)
    if show and (why := window_unavailable_reason()) is not None:
        instead = "the video is written to --out instead" if args.out else "give --out to keep a video"
        print(f"warning: --show: no live window: {why}; {instead}", file=sys.stderr)
        show = False
    if args.out is None and not show:
        return None
    path = None
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        path = Path(args.out) / "waterfall.mp4"
    return WaterfallVideo(path, width, show=show)


def _print_summary(report: dict[str, Any]) -> None:
    from edge_had.io.scene import masked_summary

    health, sensor_info = report["health"], report["sensor"]
    if report["interrupted"]:
        print("interrupted: the lines received until then were finished and are reported")
    print(
        f"{health['lines_in']} lines in: {health['lines_scored']} scored, "
        f"{health['lines_rejected']} rejected, {health['lines_dropped']} dropped; "
        f"{report['lines_per_second']:.0f} lines/s "
        f"(budget {sensor_info['budget_ms']:.2f} ms/line at {sensor_info['line_rate_hz']:.0f} Hz)"
    )
    print("| stage | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for stage, stats in report["latency_ms"].items():
        print(f"| {stage} | {stats['p50']:.3f} | {stats['p99']:.3f} | {stats['max']:.3f} |")
    print(f"pixels: {masked_summary(health['masked_pixels'])}")
    detector = report["detector"]
    left_out = ", ".join(map(str, detector["bad_bands"])) or "none"
    print(
        f"masking: {detector['good_bands']} of {detector['sensor_bands']} bands scored (left out: "
        f"{left_out}); no-data value {_value_or_none(detector['no_data_value'])}, saturation "
        f"{_value_or_none(detector['saturation'])}"
    )
    replay = report["replay"]
    if replay is not None and replay["lines_replayed"] < replay["lines_in_file"]:
        print(f"replayed the first {replay['lines_replayed']} of the file's {replay['lines_in_file']} lines")
    print(f"look-ahead: {report['look_ahead_lines']} lines ({report['look_ahead_ms']:.1f} ms)")
    print(
        f"line order: {health['missing_indices']} missing, {health['duplicates']} duplicates, "
        f"{health['counter_resets']} counter restarts, {health['counter_wraps']} counter wraps"
    )
    backend = report["backend"]
    if backend:
        print(f"backend: {backend['backend']} {backend['precision']} ({backend['reason']})")
    events = report["events"]
    line = (
        f"events: {events['count']} ({events['threshold_rule']} threshold {events['threshold']:.1f}, "
        f"pfa {events['pfa']:g}, min area {events['min_area']}; {events['suppressed_small']} smaller dropped)"
    )
    if "auc" in report:
        rate = events["false_per_1000_lines"]
        auc = "none (one class)" if report["auc"] is None else f"{report['auc']:.4f}"
        line += f"; AUC {auc}; false events {events['false']} ({rate:.1f}/1000 lines)"
        if events["unjudged"]:
            line += f"; {events['unjudged']} on unlabelled pixels (unjudged)"
    print(line)
    if report["trained_on"]:  # a note, with the warnings on stderr: stdout holds the results
        from edge_had.eval.protocol import TRAINED_ON_NOTE

        print(f"note: {TRAINED_ON_NOTE}", file=sys.stderr)


def _value_or_none(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"
