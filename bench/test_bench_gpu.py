"""GPU benchmarks of the CUDA RX kernels (edge_had.cuda.rx_kernels); see bench/GPU.md.

What is measured, per launcher (pycuda, CuPy):

* per-line scoring at the Specim FX10 shape (1024 px x 224 bands, Cholesky whitener k = 224) and
  at K = 32 reduced bands, float32 (and float16 at 224 bands) pixels, over ``--lines`` (default
  10 000) lines cycling through 64 distinct device-resident lines:
  - ``kernel``: GPU time of the kernel alone, from CUDA events. A memset of a 512 MiB scratch
    buffer is queued before each start event, so the events bracket the kernel and not the
    Python launch overhead (the GPU would otherwise sit idle between the start event and the
    launch);
  - ``end to end``: wall time of upload (pinned, 0.9 MB) + kernel + download + synchronise, the
    latency one line sees in a streaming loop driven from Python;
* batched scoring: lines/s when 1..256 lines are scored per launch (kernel time from events, and
  end to end with the copies);
* covariance accumulation of one line (FP64 and FP32 sums);
* the roofline floor of each configuration: minimum bytes / bandwidth and FLOPs / FP32 (FP64 for
  the FP64 sums) peak, for the datasheet peaks of the GPU (labelled as such) and for peaks
  measured in the same run through PyTorch (a 1 GiB device copy, FP32/FP64 GEMMs with TF32 off).

Run as a script (what bench/device_check.sh does; no pytest-benchmark needed)::

    python bench/test_bench_gpu.py --json out/gpu_bench.json [--lines 10000] [--launchers pycuda,cupy]

or through pytest-benchmark (``gpu`` marker; skipped without a GPU)::

    python -m pytest bench/test_bench_gpu.py -m gpu --benchmark-json=bench/results/rx_gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_had.cuda import CudaUnavailableError
from edge_had.cuda.rx_kernels import CudaRX, cov_chunk, cov_pairs, score_splits

WIDTH = 1024  # pixels per line (Specim FX10)
BANDS = 224
REDUCED = 32
DISTINCT_LINES = 64
BATCHES = (1, 4, 16, 64, 256)
SCRATCH_BYTES = 512 << 20

# Datasheet peaks (boost clock), never measured here: NVIDIA H100 Tensor Core GPU datasheet and
# NVIDIA H200 datasheet. Matched on the device name; absent for other GPUs.
DATASHEET = {
    "H100 SXM5": {"bandwidth_GBps": 3350.0, "fp32_TFLOPs": 67.0, "fp64_TFLOPs": 34.0},
    "H100 PCIe": {"bandwidth_GBps": 2000.0, "fp32_TFLOPs": 51.0, "fp64_TFLOPs": 26.0},
    "H100 NVL": {"bandwidth_GBps": 3900.0, "fp32_TFLOPs": 60.0, "fp64_TFLOPs": 30.0},
    "H200": {"bandwidth_GBps": 4800.0, "fp32_TFLOPs": 67.0, "fp64_TFLOPs": 34.0},
}
DATASHEET_SOURCE = "NVIDIA H100 / H200 datasheets (boost-clock peaks), not measured"


def datasheet_peaks(device: str) -> dict[str, Any] | None:
    if "H200" in device:
        key = "H200"
    elif "H100" in device and "PCIe" in device:
        key = "H100 PCIe"
    elif "H100" in device and "NVL" in device:
        key = "H100 NVL"
    elif "H100" in device:  # "NVIDIA H100 80GB HBM3" is the SXM5 board
        key = "H100 SXM5"
    else:
        return None
    return {"model": key, "source": DATASHEET_SOURCE, **DATASHEET[key]}


def measured_peaks() -> dict[str, Any] | None:
    """Bandwidth of a 1 GiB device copy and FP32 / FP64 GEMM rates, through PyTorch (if it sees
    the GPU): what this GPU delivers in practice, next to the datasheet."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None

    def timed(work: Any, repeats: int) -> float:
        work()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            work()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3 / repeats

    def copy_seconds() -> float:
        source = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
        target = torch.empty_like(source)
        return timed(lambda: target.copy_(source), 10)

    def gemm_seconds(size: int, dtype: Any) -> float:
        matrix = torch.randn(size, size, device="cuda", dtype=dtype)
        return timed(lambda: matrix @ matrix, 5)

    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # plain FP32 (SIMT) rate, as the RX kernel uses
    try:
        copy_s = copy_seconds()
        fp32_s = gemm_seconds(8192, torch.float32)
        fp64_s = gemm_seconds(4096, torch.float64)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.cuda.empty_cache()
    return {
        "source": "measured in this run (PyTorch): 1 GiB device copy (read + write), 8192^3 SGEMM, "
        "4096^3 DGEMM",
        "bandwidth_GBps": 2 * (1 << 30) / copy_s / 1e9,
        "fp32_TFLOPs": 2 * 8192**3 / fp32_s / 1e12,
        "fp64_TFLOPs": 2 * 4096**3 / fp64_s / 1e12,
    }


def percentiles(values_us: list[float]) -> dict[str, float]:
    data = np.asarray(values_us)
    return {
        "p50": float(np.percentile(data, 50)),
        "p99": float(np.percentile(data, 99)),
        "mean": float(data.mean()),
        "min": float(data.min()),
        "count": int(data.size),
    }


def score_work(n: int, bands: int, k: int, itemsize: int, lower: bool) -> dict[str, float]:
    """Minimum bytes and the useful FLOPs of scoring n pixels (triangular W: k(k+1)/2 products;
    the mean in two float32 parts)."""
    multiply_adds = n * k * (k + 1) / 2 if lower else n * bands * k
    return {"bytes": n * bands * itemsize + k * bands * 4 + 2 * bands * 4 + n * 4, "flops": 2 * multiply_adds}


def floors_us(
    work: dict[str, float], peaks: dict[str, Any] | None, precision: str = "fp32"
) -> dict[str, Any] | None:
    if not peaks:
        return None
    memory = work["bytes"] / (peaks["bandwidth_GBps"] * 1e9) * 1e6
    compute = work["flops"] / (peaks[f"{precision}_TFLOPs"] * 1e12) * 1e6
    return {"memory_us": memory, "compute_us": compute, "floor_us": max(memory, compute)}


def background(pixels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from edge_had.detectors import calc_stats

    stats = calc_stats(pixels.astype(np.float64))
    return stats.mean, stats.whitener[:k]


def synthetic_lines(count: int, bands: int, seed: int = 0) -> np.ndarray:
    """Correlated pixels with a large offset (radiance-count-like), ``count`` lines of WIDTH."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands)) / np.sqrt(bands)
    pixels = rng.standard_normal((count * WIDTH, bands)) @ mixing * 100.0 + 1000.0
    return pixels.reshape(count, WIDTH, bands).astype(np.float32)


# --------------------------------------------------------------------------- measurements


def per_line(
    rx: CudaRX, scratch: Any, bands: int, dtype: Any, lines: int, peaks: dict[str, Any]
) -> dict[str, Any]:
    """Per-line scoring latency: kernel (events, stream kept busy) and end to end (wall)."""
    data = synthetic_lines(DISTINCT_LINES, bands, seed=bands)
    mean, whitener = background(data.reshape(-1, bands)[: 16 * WIDTH], bands)
    plan = rx.score_plan(DISTINCT_LINES * WIDTH, bands, bands, dtype)
    plan.set_background(mean, whitener)
    plan.upload(data.astype(dtype))
    for _ in range(50):  # warm-up
        plan.launch(WIDTH)
    rx.synchronize()
    events = []
    for i in range(lines):
        rx.zero(scratch)  # the GPU is busy while the start event, kernel, stop event get queued
        start = rx.record()
        plan.launch(WIDTH, (i % DISTINCT_LINES) * WIDTH)
        events.append((start, rx.record()))
    kernel_us = [1e3 * rx.elapsed_ms(start, stop) for start, stop in events]
    del events
    single = rx.score_plan(WIDTH, bands, bands, dtype)
    single.set_background(mean, whitener)
    host = [line.astype(dtype) for line in data]
    wall_us = []
    for i in range(lines):
        begin = time.perf_counter()
        n = single.upload(host[i % DISTINCT_LINES])
        single.launch(n)
        single.download(n)
        rx.synchronize()
        wall_us.append(1e6 * (time.perf_counter() - begin))
    itemsize = np.dtype(dtype).itemsize
    work = score_work(WIDTH, bands, bands, itemsize, plan.lower)
    kernel = percentiles(kernel_us)
    record: dict[str, Any] = {
        "shape": f"{WIDTH}x{bands}",
        "k": bands,
        "dtype": np.dtype(dtype).name,
        "lower_triangular": plan.lower,
        "splits": score_splits(WIDTH, bands, rx.multiprocessors),
        "lines": lines,
        "kernel_us": kernel,  # with more than one split, the scores' zeroing (a memset) as well
        "end_to_end_us": percentiles(wall_us),
        "work": work,
    }
    for name, peak in peaks.items():
        floor = floors_us(work, peak)
        if floor:
            floor["fraction_of_p50"] = floor["floor_us"] / kernel["p50"]
            record[f"floor_{name}"] = floor
    return record


def batched(
    rx: CudaRX, scratch: Any, bands: int, peaks: dict[str, Any], repeats: int = 20
) -> list[dict[str, Any]]:
    """Lines/s with 1..256 lines per launch: kernel only (events) and with the copies (wall)."""
    largest = max(BATCHES)
    base = synthetic_lines(DISTINCT_LINES, bands, seed=1)
    data = np.concatenate([base] * (largest // DISTINCT_LINES))
    mean, whitener = background(base.reshape(-1, bands)[: 16 * WIDTH], bands)
    plan = rx.score_plan(largest * WIDTH, bands, bands)
    plan.set_background(mean, whitener)
    plan.upload(data)
    results = []
    for batch in BATCHES:
        n = batch * WIDTH
        plan.launch(n)
        rx.synchronize()
        kernel_ms = []
        for _ in range(repeats):
            rx.zero(scratch)
            start = rx.record()
            plan.launch(n)
            kernel_ms.append(rx.elapsed_ms(start, rx.record()))
        wall_s = []
        block = data[:batch]
        for _ in range(max(3, repeats // 4)):
            begin = time.perf_counter()
            plan.upload(block)
            plan.launch(n)
            plan.download(n)
            rx.synchronize()
            wall_s.append(time.perf_counter() - begin)
        kernel = statistics.median(kernel_ms)
        work = score_work(n, bands, bands, 4, plan.lower)
        record: dict[str, Any] = {
            "lines_per_batch": batch,
            "bands": bands,
            "kernel_ms_median": kernel,
            "lines_per_s_kernel": batch / (kernel / 1e3),
            "lines_per_s_end_to_end": batch / statistics.median(wall_s),
            "work": work,
        }
        for name, peak in peaks.items():
            floor = floors_us(work, peak)
            if floor:
                floor["fraction"] = floor["floor_us"] / (kernel * 1e3)
                record[f"floor_{name}"] = floor
        results.append(record)
    return results


def covariance(
    rx: CudaRX, scratch: Any, bands: int, precision: str, peaks: dict[str, Any], lines: int = 1000
) -> dict[str, Any]:
    data = synthetic_lines(DISTINCT_LINES, bands, seed=2)
    plan = rx.cov_plan(DISTINCT_LINES * WIDTH, bands, precision=precision)
    plan.reset(data[0].mean(axis=0, dtype=np.float64))
    plan.add(data.reshape(-1, bands))
    rx.synchronize()
    times = []
    for i in range(lines):
        rx.zero(scratch)
        start = rx.record()
        plan.launch(WIDTH, (i % DISTINCT_LINES) * WIDTH)
        times.append((start, rx.record()))
    kernel_us = [1e3 * rx.elapsed_ms(start, stop) for start, stop in times]
    work = {"bytes": WIDTH * bands * 4 + 8 * bands * (bands + 1), "flops": WIDTH * bands * (bands + 1)}
    record: dict[str, Any] = {
        "shape": f"{WIDTH}x{bands}",
        "precision": precision,
        "chunk": cov_chunk(WIDTH, bands, rx.multiprocessors, precision),
        "blocks": cov_pairs(bands)
        * math.ceil(WIDTH / cov_chunk(WIDTH, bands, rx.multiprocessors, precision)),
        "kernel_us": percentiles(kernel_us),
        "work": work,
    }
    for name, peak in peaks.items():
        floor = floors_us(work, peak, "fp64" if precision == "fp64" else "fp32")
        if floor:
            floor["fraction_of_p50"] = floor["floor_us"] / record["kernel_us"]["p50"]
            record[f"floor_{name}"] = floor
    return record


def local_line(rx: CudaRX, scratch: Any, dims: int = 10, lines: int = 1000) -> dict[str, Any]:
    """The hybrid stream's local RX of one 1024-pixel line (15 x 15 window, 5 x 5 guard, ``dims``
    components): putting a line (upload of its projection, box-sum kernel, synchronise), putting
    the whole window at once (after a basis change), and scoring one (the window and score
    kernels' GPU time; end to end with the download, from Python)."""
    slots = 15
    plan = rx.local_plan(WIDTH, dims, slots, inner=2, outer=7)
    rng = np.random.default_rng(4)
    line, valid = rng.standard_normal((dims, WIDTH)), np.ones(WIDTH, bool)
    put_us, puts = [], slots + max(lines // 10, 10)
    for position in range(puts):
        t0 = time.perf_counter()
        plan.put([position], line[None], valid[None])
        rx.synchronize()
        put_us.append(1e6 * (time.perf_counter() - t0))
    window_us = []  # the whole window again, as after a basis change: one batch
    for start in range(puts, puts + 20 * slots, slots):
        t0 = time.perf_counter()
        positions = list(range(start, start + slots))
        plan.put(positions, np.repeat(line[None], slots, 0), np.repeat(valid[None], slots, 0))
        rx.synchronize()
        window_us.append(1e6 * (time.perf_counter() - t0))
    puts += 20 * slots
    last = puts - 1
    window = {"centre": last - 7, "top": last - 14, "bottom": last, "fallback": np.ones(dims), "load": 1e-3}
    plan(**window)  # warm
    times, end_to_end = [], []
    for _ in range(lines):
        rx.zero(scratch)
        start = rx.record()
        plan.launch(**window)
        times.append((start, rx.record()))
        t0 = time.perf_counter()
        plan(**window)
        end_to_end.append(1e6 * (time.perf_counter() - t0))
    kernel_us = [1e3 * rx.elapsed_ms(start, stop) for start, stop in times]
    return {"shape": f"{WIDTH}x{dims}", "window": "15x15-5x5", "kernel_us": percentiles(kernel_us),
            "end_to_end_us": percentiles(end_to_end), "put_us": percentiles(put_us[slots:]),
            "put_window_us": percentiles(window_us)}  # fmt: skip


def measure(launcher: str, lines: int, measured: dict[str, Any] | None) -> dict[str, Any]:
    with CudaRX(launcher=launcher) as rx:
        started = time.perf_counter()
        result: dict[str, Any] = {**rx.describe(), "per_line": [], "batched": [], "covariance": []}
        peaks = {"datasheet": datasheet_peaks(rx.device_name), "measured": measured}
        scratch = rx.allocate(SCRATCH_BYTES // 4, np.float32)
        for bands, dtype in ((BANDS, np.float32), (REDUCED, np.float32), (BANDS, np.float16)):
            result["per_line"].append(per_line(rx, scratch, bands, dtype, lines, peaks))
        for bands in (BANDS, REDUCED):
            result["batched"].extend(batched(rx, scratch, bands, peaks))
        for bands, precision in ((BANDS, "fp64"), (BANDS, "fp32"), (REDUCED, "fp64")):
            result["covariance"].append(covariance(rx, scratch, bands, precision, peaks))
        result["local"] = [local_line(rx, scratch)]
        result["seconds"] = time.perf_counter() - started
    return result


def summary_rows(result: dict[str, Any]) -> list[str]:
    launcher = result["launcher"]
    rows = []
    for r in result["per_line"]:
        floor = r.get("floor_datasheet") or {}
        share = f"{floor['fraction_of_p50']:.0%}" if floor else "n/a"
        rows.append(
            f"{launcher:6} line {r['shape']:>8} {r['dtype']:7} kernel p50/p99 {r['kernel_us']['p50']:7.1f}/"
            f"{r['kernel_us']['p99']:7.1f} us  end-to-end p50/p99 {r['end_to_end_us']['p50']:7.1f}/"
            f"{r['end_to_end_us']['p99']:7.1f} us  floor {share} of p50"
        )
    for r in result["batched"]:
        rows.append(
            f"{launcher:6} batch {r['lines_per_batch']:3d} x 1024x{r['bands']:<3} "
            f"{r['lines_per_s_kernel']:10.0f} lines/s kernel  "
            f"{r['lines_per_s_end_to_end']:9.0f} lines/s with copies"
        )
    for r in result["covariance"]:
        rows.append(
            f"{launcher:6} cov {r['shape']:>8} {r['precision']} kernel p50/p99 "
            f"{r['kernel_us']['p50']:7.1f}/{r['kernel_us']['p99']:7.1f} us"
        )
    for r in result.get("local", []):
        rows.append(
            f"{launcher:6} local RX {r['shape']:>8} {r['window']} kernel p50/p99 "
            f"{r['kernel_us']['p50']:7.1f}/{r['kernel_us']['p99']:7.1f} us  end-to-end p50/p99 "
            f"{r['end_to_end_us']['p50']:7.1f}/{r['end_to_end_us']['p99']:7.1f} us  put a line / "
            f"the window p50 {r['put_us']['p50']:7.1f} / {r['put_window_us']['p50']:7.1f} us"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--lines", type=int, default=10_000, help="lines per per-line measurement")
    parser.add_argument(
        "--launchers", default="pycuda,cupy", help="comma-separated; unavailable ones are noted"
    )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"python": platform.python_version(), "runs": [], "unavailable": {}}
    try:
        measured = measured_peaks()
    except Exception as error:  # noqa: BLE001 - a failed reference measurement is recorded, not fatal
        measured, report["measured_peaks_error"] = None, repr(error)
    report["measured_peaks"] = measured
    for launcher in [name.strip() for name in args.launchers.split(",") if name.strip()]:
        try:
            result = measure(launcher, args.lines, measured)
        except CudaUnavailableError as error:
            report["unavailable"][launcher] = str(error)
            print(f"{launcher}: unavailable: {error}", file=sys.stderr)
            continue
        except Exception as error:  # noqa: BLE001 - one launcher's crash must not cost the other's run
            report.setdefault("failed", {})[launcher] = repr(error)
            print(f"{launcher}: failed: {error!r}", file=sys.stderr)
            args.json.write_text(json.dumps(report, indent=2))
            continue
        if report.get("datasheet") is None:
            report["datasheet"] = datasheet_peaks(result["device"])
        report["runs"].append(result)
        args.json.write_text(json.dumps(report, indent=2))  # keep what is done if a later run dies
    args.json.write_text(json.dumps(report, indent=2))
    for result in report["runs"]:
        print("\n".join(summary_rows(result)))
    return 0 if report["runs"] and not report.get("failed") else 1


# --------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def gpu_rx() -> Any:
    try:
        rx = CudaRX()
    except CudaUnavailableError as error:
        pytest.skip(f"no GPU launcher for the RX kernels: {error}")
    yield rx
    rx.close()


@pytest.mark.gpu
@pytest.mark.parametrize("bands", [BANDS, REDUCED])
@pytest.mark.parametrize("batch", [1, 64])
def test_score_lines(benchmark: Any, gpu_rx: CudaRX, bands: int, batch: int) -> None:
    """Wall time of scoring ``batch`` device-resident lines (launch + synchronise)."""
    data = synthetic_lines(batch, bands)
    mean, whitener = background(data.reshape(-1, bands)[: 16 * WIDTH], bands)
    plan = gpu_rx.score_plan(batch * WIDTH, bands, bands)
    plan.set_background(mean, whitener)
    plan.upload(data)

    def run() -> None:
        plan.launch(batch * WIDTH)
        gpu_rx.synchronize()

    benchmark.group = f"score 1024x{bands}"
    benchmark.extra_info.update(gpu_rx.describe(), bands=bands, lines=batch)
    benchmark.pedantic(run, rounds=200, warmup_rounds=10)
    benchmark.extra_info["lines_per_s"] = batch / benchmark.stats.stats.median


@pytest.mark.gpu
def test_per_line_percentiles(gpu_rx: CudaRX) -> None:
    """The script's per-line measurement, shortened: it runs and its numbers are sane."""
    scratch = gpu_rx.allocate(SCRATCH_BYTES // 4, np.float32)
    record = per_line(
        gpu_rx, scratch, REDUCED, np.float32, 200, {"datasheet": datasheet_peaks(gpu_rx.device_name)}
    )
    assert 0 < record["kernel_us"]["p50"] <= record["kernel_us"]["p99"]
    assert record["end_to_end_us"]["p50"] > 0


if __name__ == "__main__":
    sys.exit(main())
