"""Multiply-adds per pixel of the inference path, for the onboard budget (<= 50 000 per pixel).

:func:`count_macs_per_pixel` runs each stage on the tensor shape it sees when streaming one
``width``-pixel line at a time, and counts:

* **FlopCounter part** - ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2: convolutions
  (bias excluded) and matrix products (the spatial branch's pyramid pooling is written as matmuls,
  so it lands here).
* **Hand part** - what FlopCounterMode skips, tallied per aten op by a dispatch-mode counter and
  counted in multiply-add equivalents: conv bias adds (1 per output element), element-wise
  ``add/sub/mul/div`` (1 per output element: residual adds, the squeeze-excitation scale, the
  fusion), reductions ``mean/sum`` (1 per input element: the gate's global pooling, pooling-matrix
  normalisation) and bilinear upsampling (4 per output element: a weighted sum of 4 neighbours).
* **Not counted as multiply-adds** - ReLU and sigmoid (comparisons / one transcendental, reported
  separately as ``nonlinear_ops``), padding, concatenation, reshapes, index arithmetic
  (data movement or integer work).

Streaming model (what :class:`edge_had.stream.enhance.StreamEnhancer` runs; the assumptions are
returned in the dict): every ``lines_per_call`` new lines the whole graph - adapter, spectral
branch, spatial student, fusion - runs on a window of those lines plus ``context_lines`` lines of
context on each side (the spectral branch's receptive radius), so every stage costs its
per-window work over ``lines_per_call`` lines of new pixels. The spectral branch's purely
per-pixel (layer-cached) cost is reported too as ``spectral_layer_cached``.

At the defaults (K = 64, hidden 32, 3 blocks; calls of 16 lines with 3 + 3 context lines, a
22-line window; 1024 pixels per line) the measured totals, the same at every band count because
the adapter gathers 2 sensor bands per canonical band (:func:`~edge_had.models.adapter.sparse_taps`),
are

=====================  ========
adapter (2 taps)            352
spectral (as run)        11 440
spatial (as run)          2 266
fusion                      352
**total**                14 410
=====================  ========

(2026-11-28. Before, the count assumed an adapter run once per line and a spatial student over a
64-line buffer that the stream did not have, and the adapter was a dense K x B product: 24 394 /
30 026 / 32 330 / 46 794 at 100 / 188 / 224 / 450 bands as counted, 22 858 / 30 602 / 33 770 /
53 658 as the stream ran it, over budget at 450 bands; a review found the gap.)
Line-by-line calls (``lines_per_call=1``) recompute a 7-line window per line, 58 240 for the
spectral branch alone: batch lines or cache per-layer activations.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from edge_had.models.enhancer import EnhancementModel

BUDGET_MACS_PER_PIXEL = 50_000

_ELEMENTWISE = {"add", "sub", "mul", "div", "rsub"}
_REDUCTIONS = {"mean", "sum"}
_NONLINEAR = {"relu", "sigmoid", "clamp", "clamp_min", "threshold", "hardtanh"}
_MATMUL_OR_CONV = {"convolution", "_convolution", "mm", "bmm", "addmm", "baddbmm"}


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_numel(v) for v in value)
    return 0


class _HandTally(TorchDispatchMode):
    """Counts, per aten op, the work that FlopCounterMode does not (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs: Counter[str] = Counter()
        self.nonlinear: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("convolution", "_convolution"):
            if len(args) > 2 and args[2] is not None:
                self.macs["conv_bias"] += _numel(out)
        elif name in _ELEMENTWISE:
            self.macs[name] += _numel(out)
        elif name in _REDUCTIONS:
            self.macs[name] += _numel(args[0])
        elif name.startswith("upsample_bilinear2d"):
            self.macs["upsample_bilinear2d"] += 4 * _numel(out)
        elif name in _NONLINEAR:
            self.nonlinear[name] += _numel(out)
        return out


def _count(fn: Any, inputs: tuple[torch.Tensor, ...], pixels: int) -> dict[str, Any]:
    """Run ``fn(*inputs)`` under both counters; everything divided by ``pixels``."""
    tally = _HandTally()
    with torch.no_grad(), FlopCounterMode(display=False) as flops, tally:
        fn(*inputs)
    counted = flops.get_total_flops() / 2 / pixels
    hand = {name: value / pixels for name, value in sorted(tally.macs.items())}
    return {
        "flop_counter": counted,
        "hand": hand,
        "total": counted + sum(hand.values()),
        "nonlinear_ops": sum(tally.nonlinear.values()) / pixels,
    }


def count_macs_per_pixel(
    model: EnhancementModel,
    bands: int | None = None,
    width: int = 1024,
    *,
    context_lines: int | None = None,
    lines_per_call: int = 16,
    budget: int = BUDGET_MACS_PER_PIXEL,
) -> dict[str, Any]:
    """Multiply-adds per new pixel of ``model``'s inference path as the stream runs it, with the
    breakdown per stage (see the module doc).

    ``bands`` defaults to the model's adapter input; ``context_lines`` (per side) to the spectral
    branch's receptive radius.
    """
    bands = model.bands if bands is None else bands
    if bands != model.bands:
        raise ValueError(f"model's adapter takes {model.bands} bands, not {bands}")
    if min(width, lines_per_call) < 1:
        raise ValueError("width and line counts must be >= 1")
    radius = model.spectral.receptive_radius
    context = radius if context_lines is None else context_lines
    if context < radius:
        raise ValueError(f"context_lines={context} is below the spectral receptive radius {radius}")
    k = model.k
    param = next(model.parameters())
    dtype, device = param.dtype, param.device

    def zeros(channels: int, lines: int) -> torch.Tensor:
        return torch.zeros(1, channels, lines, width, dtype=dtype, device=device)

    window = lines_per_call + 2 * context
    new_pixels = lines_per_call * width  # each stage runs on the whole window for these
    stages: dict[str, dict[str, Any]] = {
        "adapter": _count(model.adapter, (zeros(bands, window),), new_pixels),
        "spectral": _count(model.spectral, (zeros(k, window),), new_pixels),
    }
    spatial: nn.Module | None = model.spatial
    if spatial is not None:
        stages["spatial"] = _count(spatial, (zeros(k, window),), new_pixels)
    stages["fusion"] = _count(model.fuse, (zeros(k, window),) * 3, new_pixels)

    flop_counter = sum(s["flop_counter"] for s in stages.values())
    hand = sum(sum(s["hand"].values()) for s in stages.values())
    total = flop_counter + hand
    return {
        "bands": bands,
        "k": k,
        "width": width,
        "assumptions": {
            "context_lines": context,
            "lines_per_call": lines_per_call,
            "window_lines": window,
        },
        **stages,
        "spectral_layer_cached": stages["spectral"]["total"] * lines_per_call / window,
        "flop_counter_macs_per_pixel": flop_counter,
        "hand_macs_per_pixel": hand,
        "total_macs_per_pixel": total,
        "nonlinear_ops_per_pixel": sum(s["nonlinear_ops"] for s in stages.values()),
        "budget_macs_per_pixel": budget,
        "within_budget": total <= budget,
        "hand_counted": "conv bias adds, add/sub/mul/div, mean/sum, bilinear upsampling (4 per output)",
        "not_counted": "ReLU/sigmoid (see nonlinear_ops_per_pixel), padding, concat, reshapes, index math",
    }
