"""Where one block of the line loop's enhancement goes on a CUDA GPU (torch, the shipped model).

The stream runs the network on windows of ``2 context + block`` lines (22 at the defaults) of a
1024-pixel FX10 line (224 bands): ``(1, 224, 22, 1024)`` float32 in, 20 MB, and ``(1, K, 22,
1024)`` float32 out per output. For FP32 and FP16 (autocast, as :class:`TorchRunner`) it times:

* ``h2d``: the window to the GPU from pageable memory (what the runner does) and from pinned;
* ``forward``: the network alone (CUDA events), cuDNN autotuning off (torch's default) and on;
  for FP16 also with the two networks' weights cast to FP16 once instead of autocast
  (``forward_half_weights``; ``half_weights_vs_autocast`` is the relative difference of the
  enhanced outputs);
* ``d2h``: the outputs back to pageable host memory, all four or ``enhanced`` alone, and
  ``enhanced`` into pinned memory;
* ``runner``: :meth:`TorchRunner.infer` as the stream calls it (wall), every output or
  ``enhanced`` only.

Prints a table and writes ``--json``. Run on the GPU machine (``bench/device_check.sh`` does). Like
the ``edge-had`` command, it first keeps freed memory (:mod:`edge_had.allocator`; the JSON records
whether it could). The H100 runs so far profiled with glibc's defaults, where copying all four
outputs back cost 12-20 ms a block, more than the command's loop seemed to pay: fresh pages for
every large host array are the likely reason, not yet checked on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = (1, 224, 22, 1024)  # (batch, bands, 2 * context + block lines, pixels)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "mean": statistics.fmean(ordered),
    }


def wall(call: Callable[[], Any], repeats: int, torch: Any) -> dict[str, float]:
    """Host wall time of ``call`` with the GPU synchronised after it, in ms."""
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        samples.append(1e3 * (time.perf_counter() - start))
    return percentiles(samples)


def device(call: Callable[[], Any], repeats: int, torch: Any) -> dict[str, float]:
    """GPU time of ``call`` between CUDA events, in ms."""
    for _ in range(3):
        call()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return percentiles(samples)


def half_networks(model: Any) -> tuple[Any, Any]:
    """Copies of the model's two networks with FP16 weights (the spatial one may be None)."""
    import copy

    spatial = None if model.spatial is None else copy.deepcopy(model.spatial).half()
    return copy.deepcopy(model.spectral).half(), spatial


def half_weights_pass(model: Any, halves: tuple[Any, Any], cube: Any, torch: Any) -> dict[str, Any]:
    """FP16 without autocast: the :func:`half_networks` run on an FP16 ``x_k`` (the exported FP16
    graph's layout; not what :class:`TorchRunner` does today)."""
    spectral, spatial = halves
    with torch.no_grad():
        x_k = model.adapter(cube)
        half = x_k.half()
        f_spe = spectral(half).float()
        f_spa = torch.zeros_like(x_k) if spatial is None else spatial(half).float()
        return {"x_k": x_k, "f_spe": f_spe, "f_spa": f_spa, "enhanced": model.fuse(x_k, f_spe, f_spa)}


def relative_difference(got: Any, want: Any) -> float:
    return float((got - want).norm() / want.norm())


def profile_precision(
    bundle: Any, precision: str, window: np.ndarray, repeats: int, torch: Any
) -> dict[str, Any]:
    from edge_had.runtime.torch_runner import TorchRunner, run_on_device
    from edge_had.stream.enhance import ENHANCED

    model = bundle.model_for(WINDOW[1]).to("cuda").eval()
    on_gpu = torch.from_numpy(window).to("cuda")
    entry: dict[str, Any] = {}
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        timing = device(lambda: run_on_device(model, on_gpu, precision), repeats, torch)
        entry[f"forward_cudnn_benchmark_{'on' if benchmark else 'off'}"] = timing
    torch.backends.cudnn.benchmark = False
    if precision == "fp16":  # the alternative to autocast: the two networks' weights cast once
        halves = half_networks(model)
        entry["forward_half_weights"] = device(
            lambda: half_weights_pass(model, halves, on_gpu, torch), repeats, torch
        )
        half = half_weights_pass(model, halves, on_gpu, torch)["enhanced"]
        autocast = run_on_device(model, on_gpu, "fp16")["enhanced"]
        entry["half_weights_vs_autocast"] = relative_difference(half, autocast)
    outputs = run_on_device(model, on_gpu, precision)
    host = torch.empty(outputs["enhanced"].shape, pin_memory=True)
    entry["d2h"] = {
        "all_four_pageable": wall(lambda: [value.cpu() for value in outputs.values()], repeats, torch),
        "enhanced_pageable": wall(lambda: outputs["enhanced"].cpu(), repeats, torch),
        "enhanced_pinned": wall(lambda: host.copy_(outputs["enhanced"], non_blocking=True), repeats, torch),
    }
    feed = {"cube": window}
    with TorchRunner(bundle.model_for(WINDOW[1]), precision, "cuda") as runner:
        entry["runner"] = {
            "all_outputs": wall(lambda: runner.infer(feed), repeats, torch),
            "enhanced_only": wall(lambda: runner.infer(feed, ENHANCED), repeats, torch),
        }
    return entry


def profile(repeats: int) -> dict[str, Any]:
    import torch

    from edge_had.models.bundle import load_bundle

    bundle = load_bundle()
    window = np.random.default_rng(0).uniform(-0.1, 1.1, WINDOW).astype(np.float32)
    results: dict[str, Any] = {"window": list(WINDOW), "window_mb": window.nbytes / 2**20, "repeats": repeats}
    pinned = torch.from_numpy(window).pin_memory()
    on_gpu = torch.empty(WINDOW, device="cuda")
    results["h2d"] = {
        "pageable": wall(lambda: torch.from_numpy(window).to("cuda"), repeats, torch),
        "pinned": wall(lambda: on_gpu.copy_(pinned, non_blocking=True), repeats, torch),
    }
    for precision in ("fp32", "fp16"):
        results[precision] = profile_precision(bundle, precision, window, repeats, torch)
    results["device"] = torch.cuda.get_device_name()
    return results


def print_table(results: dict[str, Any]) -> None:
    def row(label: str, stats: dict[str, float]) -> None:
        print(f"  {label:<38} p50 {stats['p50']:7.3f} ms  p99 {stats['p99']:7.3f} ms")

    window, megabytes = results["window"], results["window_mb"]
    print(f"enhancement of one window {window} ({megabytes:.1f} MB) on {results['device']}")
    for name, stats in results["h2d"].items():
        row(f"h2d {name}", stats)
    for precision in ("fp32", "fp16"):
        entry = results[precision]
        for key in ("forward_cudnn_benchmark_off", "forward_cudnn_benchmark_on", "forward_half_weights"):
            if key in entry:
                row(f"{precision} {key}", entry[key])
        if "half_weights_vs_autocast" in entry:
            difference = entry["half_weights_vs_autocast"]
            print(f"  fp16 half weights vs autocast: relative difference {difference:.1e}")
        for name, stats in entry["d2h"].items():
            row(f"{precision} d2h {name}", stats)
        for name, stats in entry["runner"].items():
            row(f"{precision} runner.infer {name}", stats)


def main() -> None:
    from edge_had.allocator import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"keeps_freed_memory": keep_freed_memory()}  # as the edge-had command does at start
    results.update(profile(args.repeats))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
