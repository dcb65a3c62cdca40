"""``edge-had plan``: FLOPs and bytes per line of the configured pipeline, and the roofline lower
bound of its time per line on a Jetson board, next to the sensor's line budget.

Counts per line of ``W`` pixels and ``B`` bands (1 multiply-add = 2 FLOPs):

* **enhancement** (``enhanced-rx``): the model's multiply-adds per pixel as the stream runs it
  (:func:`edge_had.models.budget.count_macs_per_pixel`: the whole graph on 16 new lines + 3 + 3
  context every 16 lines) x ``W`` x 2. Bytes, on that window too (22 lines in per 16 new): the
  line in (FP32), the enhanced ``K``-band line out (FP32; new lines only), the weights once per
  16-line block and each layer's activations written once and read once, at the networks'
  precision (``--net-precision``, default fp32: 4 bytes; fp16: 2) - a lower bound that assumes no
  layer fusion beyond that.
* **band reduction** (plain ``rx``): a gather of the 2 sensor bands each of the ``D`` bands
  interpolates, ``2 W D`` multiply-adds, as the pipeline applies it (a dense ``W x B x D`` product
  only where a row has more than 4 taps); bytes: the line in, the reduced line out.
* **causal RX** in ``D`` dimensions: statistics update ``W x D^2`` (the product as computed),
  scoring ``W x D^2 + W x D``, factor refresh ``D^3 / 3 + D^3`` (Cholesky + triangular inverse)
  every ``refresh_every`` lines; bytes: the line in and the scores out (FP32), the ``D x D``
  factor read and the statistics read and written (FP64).

* **causal local RX** (``hybrid-rx``, ``enhanced-hybrid-rx``: :mod:`edge_had.stream.causal_local`,
  ``c`` components, ``P = c (c + 1) / 2`` products, ``F = 1 + c + P`` sums per pixel): each new
  line is projected (``2 W D c``), its products formed (``W P``) and box-summed along the line for
  both windows (one cumulative sum, two differences: ``3 W F``); the two running sums over lines
  and their difference (``5 W F``); per pixel the local mean and covariance ``c + 3 P`` and the
  bordered elimination ``c (c + 1) (2 c + 1) / 3 + c (c + 1) / 2``; every 64 lines the basis
  (``9 D^3``) and the window's 15 lines again. Bytes (FP32 as a GPU would keep them): the line in,
  its components and both box sums out, each running sum read and written with the line that
  enters and the one that leaves it, the scores out.
  scores out. It runs on the CPU in numpy, or with ``--rx-device cuda`` on the local-RX kernels
  of ``rx_kernels.cu``, which compute in FP64: counted here at FP32 bytes and the FP32 peak, so
  for those kernels the bound is optimistic (a Jetson's FP64 rate is a small fraction of FP32).

The bound is ``max(FLOPs / peak, bytes / bandwidth)`` per part with the board's vendor peaks
(:mod:`edge_had.stream.boards`): the networks' precision's peak for the enhancement (FP32 by
default), FP32 peak for RX, the memory
bandwidth for the bytes. Peaks are upper bounds, so this is a lower bound on time, not a
prediction; the covariance update runs FP64 in the CUDA kernel by default, which the FP32 peak
does not cover (stated in the output).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from typing import Any

from edge_had.stream.onboard import STREAM_DETECTORS
from edge_had.stream.presets import SENSORS, sensor


@dataclass(frozen=True)
class PartCost:
    name: str
    flops: float
    bytes: float
    precision: str  # which peak bounds it: "fp16" or "fp32"


def rx_costs(width: int, dims: int, refresh_every: int = 1) -> list[PartCost]:
    w, d = float(width), float(dims)
    update = PartCost("statistics update", 2 * w * d * d, 4 * w * d + 2 * 8 * (d * d + d), "fp32")
    scoring = PartCost("scoring", 2 * (w * d * d + w * d), 4 * w * d + 4 * w + 4 * d * d, "fp32")
    refresh = PartCost(
        "factor refresh", 2 * (d**3 / 3 + d**3) / refresh_every, 8 * 2 * d * d / refresh_every, "fp32"
    )
    return [update, scoring, refresh]


def local_rx_costs(
    width: int, dims: int, components: int = 10, outer: int = 15, basis_every: int = 64
) -> list[PartCost]:
    """The causal local RX of hybrid RX, per line (see the module docstring)."""
    w, d, c = float(width), float(dims), float(components)
    pairs = c * (c + 1) / 2
    f = 1 + c + pairs
    new_line_flops = 2 * w * d * c + w * pairs + 3 * w * f  # projection, products, box sums
    new_line_bytes = 4 * w * d + 4 * w * (c + 2 * f)  # the line in; y and both box sums out
    new_line = PartCost("local RX: new line", new_line_flops, new_line_bytes, "fp32")
    sums = PartCost("local RX: window sums", 5 * w * f, 4 * (2 * 4 * w * f), "fp32")
    elimination = c * (c + 1) * (2 * c + 1) / 3 + c * (c + 1) / 2
    solve = PartCost(
        "local RX: statistics + solve", w * (c + 3 * pairs + elimination), 4 * w * f + 4 * w, "fp32"
    )
    basis = PartCost(
        "local RX: basis refresh",
        (9 * d**3 + outer * new_line_flops) / basis_every,
        (8 * d * d + outer * new_line_bytes) / basis_every,
        "fp32",
    )
    return [new_line, sums, solve, basis]


def reduction_cost(width: int, bands: int, dims: int, taps: int | None = None) -> PartCost:
    """The band reduction to ``dims`` bands: a gather of ``taps`` sensor bands per output band,
    as the pipeline applies a linear interpolation (2 taps), or a dense product (None)."""
    if taps is not None:
        return PartCost(
            "band reduction",
            2.0 * width * dims * taps,
            4.0 * width * (bands + dims) + 8.0 * dims * taps,
            "fp32",
        )
    return PartCost(
        "band reduction",
        2.0 * width * bands * dims,
        4.0 * width * (bands + dims) + 4.0 * bands * dims,
        "fp32",
    )


def reduction_taps(bands: int, dims: int, kernel: str = "linear") -> int | None:
    """Sensor bands per reduced band as the pipeline applies its band reduction with ``kernel``
    (:func:`edge_had.stream.pipeline.sparse_rows`; None: a dense product)."""
    from edge_had.stream.pipeline import sparse_rows
    from edge_had.stream.run import band_reduction

    matrix = band_reduction(bands, dims, kernel=kernel)
    assert matrix is not None
    gather = sparse_rows(matrix)
    return None if gather is None else int(gather[0].shape[1])


def enhancement_cost(
    model: Any, bands: int, width: int, block: int = 16, precision: str = "fp32"
) -> PartCost:
    """The networks on one line at ``precision`` (``fp32`` or ``fp16``: the bytes of each
    activation and weight, and the peak that bounds the arithmetic); FP32 input and outputs."""
    from edge_had.models.budget import count_macs_per_pixel

    if precision not in ("fp32", "fp16"):  # before the counting, which runs the model
        raise ValueError(f"the plan counts fp32 or fp16 networks, not {precision!r}")
    value = 2.0 if precision == "fp16" else 4.0  # bytes of an activation or weight
    counted = count_macs_per_pixel(model, bands, width, lines_per_call=block)
    flops = 2.0 * counted["total_macs_per_pixel"] * width
    weights = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    rerun = counted["assumptions"]["window_lines"] / block  # every call runs its context lines again
    activations = _activation_elements_per_pixel(model, bands) * width * rerun
    k = counted["k"]
    data = 4.0 * width * bands * rerun + 4.0 * width * k + value * 2 * activations + value * weights / block
    return PartCost("enhancement", flops, data, precision)


def _activation_elements_per_pixel(model: Any, bands: int) -> float:
    """Output elements per pixel of every conv layer of the spectral branch (one write + one read
    each, at the networks' precision); the spatial student's are negligible after amortisation and
    left out."""
    import torch

    counts = []

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        counts.append(output.shape[1])

    handles = [
        m.register_forward_hook(hook) for m in model.spectral.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model.spectral(torch.zeros(1, model.k, 1, 1))
    finally:
        for handle in handles:
            handle.remove()
    return float(sum(counts))


HOST_CAVEAT = (
    "the host side is not counted - the Python loop, copies and each network call: it limited "
    "every GPU run so far (on an H100 host enhanced-rx streamed 267-390 lines/s in the loop while this bound "
    "said microseconds, bench/GPU.md); measure on the board with bench/device_check.sh"
)


def plan(board: str, sensor_name: str, detector: str = "enhanced-rx", *, model_dir: str | None = None,
         reduced_bands: int = 32, refresh_every: int = 1, net_precision: str = "fp32",
         power_mode: str | None = None, width: int | None = None, bands: int | None = None,
         line_rate_hz: float | None = None, reduction_kernel: str = "linear") -> dict[str, Any]:  # fmt: skip
    """The plan for ``detector`` (enhanced: the model in ``model_dir``, default the shipped one,
    at the alphas its scorer uses, its networks at ``net_precision``) on ``board`` in
    ``power_mode`` (default its fastest sourced mode), for the sensor preset with ``width``,
    ``bands`` and ``line_rate_hz`` overriding its figures (e.g. spatial binning, another frame
    rate). ``reduction_kernel``: the plain detectors' band reduction (``stream
    --reduction-kernel``: the triangle kernel's wider rows can make it a dense product)."""
    from edge_had.stream.boards import board_mode, max_mode
    from edge_had.stream.run import checked_reduction_kernel

    overrides: dict[str, Any] = {"width": width, "bands": bands, "line_rate_hz": line_rate_hz}
    preset = replace(sensor(sensor_name), **{k: v for k, v in overrides.items() if v is not None})
    if preset.width < 1 or preset.bands < 2 or not preset.line_rate_hz > 0:
        raise ValueError(f"need width >= 1, bands >= 2 and a positive line rate, got {preset}")
    mode = max_mode(board) if power_mode is None else board_mode(board, power_mode)
    if detector not in STREAM_DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {list(STREAM_DETECTORS)}")
    parts: list[PartCost] = []
    enhanced, scorer = STREAM_DETECTORS[detector]
    checked_reduction_kernel(reduction_kernel, detector if enhanced else None)
    if enhanced:
        from edge_had.models.bundle import load_bundle

        bundle = load_bundle(model_dir).for_scorer(scorer)
        model = bundle.model_for(preset.bands)  # hybrid: alpha_spa 0, no spatial student
        parts.append(enhancement_cost(model, preset.bands, preset.width, precision=net_precision))
        dims = model.k
    else:
        dims = min(reduced_bands, preset.bands)
        if dims < preset.bands:
            taps = reduction_taps(preset.bands, dims, reduction_kernel)
            parts.append(reduction_cost(preset.width, preset.bands, dims, taps))
    parts += rx_costs(preset.width, dims, refresh_every)
    if scorer == "hybrid":
        parts += local_rx_costs(preset.width, dims)
    peaks = {"fp16": mode.fp16_tflops, "fp32": mode.fp32_tflops}
    rows = []
    for part in parts:
        peak = peaks[part.precision]
        compute = part.flops / (peak * 1e12) if peak else None
        memory = part.bytes / (mode.bandwidth_gbs * 1e9) if mode.bandwidth_gbs else None
        bound = max(t for t in (compute, memory) if t is not None) if (compute or memory) else None
        rows.append({**asdict(part), "compute_s": compute, "memory_s": memory, "bound_s": bound})
    total = sum(row["bound_s"] for row in rows if row["bound_s"] is not None)
    return {
        "board": asdict(mode),
        "sensor": {
            "preset": preset.name,
            "width": preset.width,
            "bands": preset.bands,
            "line_rate_hz": preset.line_rate_hz,
            "budget_s": preset.budget_s,
        },  # fmt: skip
        "detector": detector,
        "rx_dims": dims,
        "parts": rows,
        "flops_per_line": sum(part.flops for part in parts),
        "bytes_per_line": sum(part.bytes for part in parts),
        "lower_bound_s": total,
        "budget_fraction": total / preset.budget_s,
        "caveat": "vendor peaks: a lower bound on the GPU's time, not a prediction; "
        + HOST_CAVEAT
        + "; the FP64 covariance accumulation of the CUDA kernel is bounded here by the FP32 peak "
        "(a Jetson's FP64 rate is a small fraction of it)"
        + (
            "; local RX runs in numpy (~1.6-2 ms per 1024-pixel line on a 2-core x86) or on the "
            "FP64 local-RX kernels (--rx-device cuda), counted here at FP32: optimistic for those"
            if scorer == "hybrid"
            else ""
        ),
    }


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_had.cli_types import add_reduction_kernel_option, integer_from, positive_number
    from edge_had.stream.boards import BOARDS

    parser.add_argument(
        "--sensor", choices=sorted(SENSORS), default="fx10", help="sensor preset (default fx10)"
    )
    parser.add_argument("--device", choices=sorted(BOARDS), required=True, help="Jetson board")
    parser.add_argument(
        "--power-mode",
        help="nvpmodel power mode as listed for the board (default: its fastest sourced mode; an "
        "unknown name lists them)",
    )
    parser.add_argument("--width", type=integer_from(1), help="pixels per line (default: the sensor's)")
    parser.add_argument("--bands", type=integer_from(2), help="bands per pixel (default: the sensor's)")
    parser.add_argument("--line-rate", type=positive_number, help="line rate in Hz (default: the sensor's)")
    parser.add_argument("--detector", choices=list(STREAM_DETECTORS), default="enhanced-rx")
    parser.add_argument("--model", help="enhanced-*: model folder (default: the shipped model)")
    parser.add_argument(
        "--net-precision",
        choices=["fp32", "fp16"],
        help="enhanced-*: the networks' precision (default fp32, what the shipped model deploys at: "
        "its FP16 graph fails the accuracy gate, export/README.md)",
    )
    add_reduction_kernel_option(parser)
    parser.add_argument("--json", help="write the plan here")


def run_plan(args: argparse.Namespace) -> int:
    from edge_had.cli_types import check_output_file
    from edge_had.errors import EdgeHadError
    from edge_had.eval.report import write_json

    for option, value in (("--model", args.model), ("--net-precision", args.net_precision)):
        if value is not None and not STREAM_DETECTORS[args.detector][0]:  # refused as stream refuses it
            raise EdgeHadError(f"{option}: only enhanced-* detectors use it; {args.detector} runs no network")
    if args.json:  # before the table, not after it
        check_output_file(args.json, "--json")
    result = plan(
        args.device,
        args.sensor,
        args.detector,
        model_dir=args.model,
        net_precision=args.net_precision or "fp32",
        power_mode=args.power_mode,
        width=args.width,
        bands=args.bands,
        line_rate_hz=args.line_rate,
        reduction_kernel=args.reduction_kernel,
    )
    board, preset = result["board"], result["sensor"]
    fp16 = "not published" if board["fp16_tflops"] is None else board["fp16_tflops"]  # (Orin: INT8 TOPS only)
    peaks = f"FP16/FP32 {fp16}/{board['fp32_tflops']} TFLOP/s, {board['bandwidth_gbs']} GB/s"
    print(f"{board['board']} ({board['mode']}): {peaks}  [{board['source']}]")
    shape = f"{preset['width']} px x {preset['bands']} bands at {preset['line_rate_hz']:.0f} lines/s"
    print(
        f"{preset['preset']}: {shape} -> budget {preset['budget_s'] * 1e3:.2f} ms/line; {result['detector']}"
    )
    print("| part | MFLOP/line | kB/line | bound by | lower bound us/line |")
    print("|---|---|---|---|---|")
    for row in result["parts"]:
        by = (
            "compute" if (row["compute_s"] or 0) >= (row["memory_s"] or 0) else "memory"
        ) + f" ({row['precision']})"
        if row["compute_s"] is None:
            by = f"memory; no {row['precision'].upper()} peak published"
        bound = "n/a" if row["bound_s"] is None else f"{row['bound_s'] * 1e6:.2f}"
        counts = f"{row['flops'] / 1e6:.2f} | {row['bytes'] / 1e3:.1f}"
        print(f"| {row['name']} | {counts} | {by} | {bound} |")
    totals = (
        f"{result['flops_per_line'] / 1e6:.1f} MFLOP and {result['bytes_per_line'] / 1e6:.2f} MB per line"
    )
    bound = f"{result['lower_bound_s'] * 1e6:.1f} us = {result['budget_fraction'] * 100:.2f} % of the budget"
    print(f"total: {totals}; lower bound {bound}")
    print(f"({result['caveat']})")
    if args.json:
        write_json(result, args.json)
    return 0
