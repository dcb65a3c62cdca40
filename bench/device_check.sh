#!/usr/bin/env bash
# GPU check of the CUDA RX kernels, as one prepared script (bench/GPU.md says how to run it).
#
# Run from the repository root on the GPU machine, with $OUT an output folder:
#   1 env       GPU, driver, python3, nvcc, cmake, packages
#   2 pycuda    pip install --no-index --find-links .wheels pycuda (when pycuda is not importable)
#   3 smoke     pycuda: driver up, nvcc-compiled kernel launched and checked (CuPy is the fallback)
#   4 cmake     kernels built for this GPU (its compute capability, or $EDGE_HAD_CUDA_ARCH; warnings
#               as errors)
#   5 pytest    python3 -m pytest -m "gpu or trt" on the modules holding such tests (both launchers;
#               real scenes from $EDGE_HAD_DATA; torch on CUDA; stream on the GPU vs the CPU)
#   6 render    one synthetic FX10 scene (1024 x 224) for the stream stages
#   6a tensorrt where TensorRT exists (a Jetson): FP32 ONNX export, engine build, enhanced-rx on it
#               (before the torch streams: on a Jetson it is the stage that matters most)
#   6b stream   python3 -m edge_had stream on the GPU: plain global and hybrid RX, then torch FP16
#               enhancement (in the loop and on a worker thread), RX on the kernels (lines/s,
#               per-line latency, AUC)
#   7 profile   python3 bench/gpu_enhance_profile.py (one enhancement block: copies, network, runner)
#   8 bench     python3 bench/test_bench_gpu.py  (per-line p50/p99, batched lines/s, rooflines)
#   9 summary   $OUT/device.json, then a short table, printed last
# Every stage runs under `timeout` inside one overall budget (DEVICE_CHECK_BUDGET, default 340 s,
# the whole check must stay under 6 minutes on the lent H100; each stage's own cap grows with a
# larger budget, so DEVICE_CHECK_BUDGET=1800 on a Jetson gives every stage 1800/340 x its time) and the
# script goes on after a failed stage,
# recording each stage's status. Nothing needs the internet. Exit status: 0 when the kernels
# were built, every module holding GPU tests was collected, the tests ran to the end and none
# failed, at least one launcher passed all its kernel tests, and every later stage (smoke where
# pycuda is installed, render, tensorrt, stream, profile, bench) ran to its end or was skipped for a
# reason other than the time budget; 1 otherwise. Results of an earlier
# run in $OUT are removed first.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out/device-check}
mkdir -p "$OUT"
# results of an earlier run in the same folder must not pass for this run's
rm -f "$OUT/pytest-gpu.xml" "$OUT/gpu_bench.json" "$OUT/enhance_profile.json" "$OUT/device.json"
BUDGET=${DEVICE_CHECK_BUDGET:-340}
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "DEVICE_CHECK_BUDGET must be whole seconds, got '$BUDGET'" >&2; exit 2; }
STREAM_LINES=${STREAM_LINES:-1024}
BENCH_LINES=${BENCH_LINES:-10000}
PY=${PYTHON:-python3}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # edge_had from the tree, nothing installed
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# Real scenes: $EDGE_HAD_DATA, else the first of these folders that holds .mat files.
if [ -z "${EDGE_HAD_DATA:-}" ]; then
  for folder in out/data ../shared/data; do
    if ls "$folder"/*.mat >/dev/null 2>&1; then export EDGE_HAD_DATA="$folder"; break; fi
  done
fi

STAGES=()
declare -A STATUS SECONDS_TAKEN

# stage NAME CAP_SECONDS COMMAND...: run under the smaller of CAP (for the default budget; a larger
# DEVICE_CHECK_BUDGET scales it up, a smaller one leaves it) and what is left of the budget.
stage() {
  local name=$1 cap=$2
  ((BUDGET > 340)) && cap=$((cap * BUDGET / 340))
  shift 2
  local left=$((BUDGET - SECONDS)) limit rc begin=$SECONDS
  limit=$((cap < left ? cap : left))
  STAGES+=("$name")
  if ((limit < 5)); then
    STATUS[$name]="skipped: time budget spent"
    SECONDS_TAKEN[$name]=0
    echo "== $name: skipped (budget)"
    return 99
  fi
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  SECONDS_TAKEN[$name]=$((SECONDS - begin))
  case $rc in
    0) STATUS[$name]="ok" ;;
    124 | 137) STATUS[$name]="timeout after ${limit}s" ;;
    *) STATUS[$name]="failed (exit $rc)" ;;
  esac
  tail -n 15 "$LOGS/$name.log"
  echo "== $name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s"
  return $rc
}

# ---- 1 env
stage env 30 bash -c '
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
  '"$PY"' --version; command -v nvcc && nvcc --version | tail -n 2; cmake --version | head -n 1
  '"$PY"' -m pip list 2>/dev/null | grep -iE "^(numpy|torch|cupy|pycuda|pytest|pytest-benchmark|scipy|h5py) " || true
  echo "EDGE_HAD_DATA=${EDGE_HAD_DATA:-unset}"; ls "${EDGE_HAD_DATA:-/nonexistent}" 2>/dev/null | head -n 12'

# ---- 2 pycuda from the carried wheels
if timeout 30 $PY -c "import pycuda" >/dev/null 2>&1; then
  STAGES+=(pycuda); STATUS[pycuda]="ok (already installed)"; SECONDS_TAKEN[pycuda]=0
elif [ -d .wheels ]; then
  stage pycuda 90 $PY -m pip install --no-index --find-links .wheels pycuda
elif [ -f /etc/nv_tegra_release ]; then  # a Jetson: pycuda builds against JetPack's CUDA
  STAGES+=(pycuda); STATUS[pycuda]="failed: pycuda is not installed (export PATH=/usr/local/cuda/bin:\$PATH; pip install pycuda - export/TENSORRT.md)"
  SECONDS_TAKEN[pycuda]=0
else
  STAGES+=(pycuda); STATUS[pycuda]="failed: no .wheels folder (copy ../shared/wheels/cp312 and carry it)"
  SECONDS_TAKEN[pycuda]=0
fi

# ---- 3 pycuda smoke test: the README of the wheels asks for a real launch before relying on it
stage smoke 60 $PY - <<'PY'
import numpy as np
import pycuda.driver as driver
from pycuda.compiler import SourceModule

driver.init()
device = driver.Device(0)
context = device.retain_primary_context()
context.push()
try:
    module = SourceModule("__global__ void iota(float *x) { x[threadIdx.x] = 2.0f * threadIdx.x; }")
    out = np.zeros(64, np.float32)
    module.get_function("iota")(driver.Out(out), block=(64, 1, 1), grid=(1, 1))
    assert np.array_equal(out, 2 * np.arange(64, dtype=np.float32)), out
    print("pycuda", driver.get_version(), "driver", driver.get_driver_version(), device.name(),
          "sm_%d%d" % device.compute_capability(), "launch ok")
finally:
    context.pop()
    context.detach()
PY

# ---- 4 kernels for this GPU with CMake: $EDGE_HAD_CUDA_ARCH (e.g. 87 for an Orin), else the GPU's
# compute capability (nvidia-smi, else pycuda), else 90 (H100 / H200)
# (each probe under `timeout`: a hung driver query must not eat the budget; nvidia-smi's "[N/A]" on a
# Jetson is no number, so pycuda is asked then - it was asked only for an empty answer, and an Orin
# got sm_90 kernels it cannot load)
ARCH=${EDGE_HAD_CUDA_ARCH:-$(timeout 20 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')}
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=$(timeout 20 $PY -c "import pycuda.driver as d; d.init(); print('%d%d' % d.Device(0).compute_capability())" 2>/dev/null)
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=$(timeout 20 $PY -c "import cupy; print(cupy.cuda.Device(0).compute_capability)" 2>/dev/null)
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90  # e.g. nvidia-smi's "[N/A]" on a Jetson, and no pycuda or CuPy
BUILD=build/device-sm$ARCH
stage cmake 120 bash -c "cmake -S . -B $BUILD -DEDGE_HAD_CUDA_ARCHS=$ARCH -DEDGE_HAD_CUDA_WERROR=ON \
  && cmake --build $BUILD -j \$(nproc)"
if [ -f "$BUILD/edge_had_kernels/rx_kernels.fatbin" ]; then
  export EDGE_HAD_CUDA_KERNELS="$PWD/$BUILD/edge_had_kernels"
fi

# ---- 5 GPU tests: the modules that hold gpu/trt tests (others may need packages the GPU machine
# lacks, e.g. `spectral`); a collection error there still must not stop the rest
GPU_TEST_FILES=$(grep -l -E "pytest\.mark\.(gpu|trt)" tests/test_*.py)
stage pytest 150 $PY -m pytest -m "gpu or trt" $GPU_TEST_FILES -q -rs -p no:cacheprovider \
  --continue-on-collection-errors --junitxml="$OUT/pytest-gpu.xml" -o junit_family=xunit1

# ---- 6 one synthetic FX10 scene (STREAM_LINES lines) rendered once into HDF5 for the streams below
# (rendering costs more than streaming it)
mkdir -p "$LOGS/streams"
stage render 60 $PY - "$LOGS/fx10.h5" "$STREAM_LINES" <<'RENDER'
import sys
import h5py
from edge_had.io.synthetic import synthetic_scene
from edge_had.stream.presets import sensor
fx10 = sensor("fx10")
scene = synthetic_scene(seed=0, lines=int(sys.argv[2]), width=fx10.width, bands=fx10.bands)
with h5py.File(sys.argv[1], "w") as store:
    store["cube"], store["map"] = scene.cube, scene.gt.astype("uint8")
RENDER

# ---- 6a where TensorRT exists (a Jetson; not the lent H100): the shipped model exported as it deploys
# (FP32: its global-RX FP16 graph fails the accuracy gate) for the FX10's 224 bands, an engine built
# from it, and enhanced-rx streamed on that engine
if timeout 30 $PY -c "import tensorrt" >/dev/null 2>&1; then
  stage tensorrt 240 bash -c '
    set -e
    '"$PY"' -m edge_had export --bands 224 --precision fp32 --out '"$LOGS"'/trt
    '"$PY"' -m edge_had build --onnx '"$LOGS"'/trt/model_fp32.onnx --out '"$LOGS"'/trt/engines
    engine=$(ls '"$LOGS"'/trt/engines/*.engine | head -n 1)
    for mode in sync async; do
      '"$PY"' -m edge_had stream --source '"$LOGS"'/fx10.h5 --rx-device cuda --detector enhanced-rx \
        --backend tensorrt --engine "$engine" $([ $mode = async ] && echo --async-enhance) \
        --json '"$LOGS"'/streams/enhanced-rx-tensorrt-$mode.json
    done'
else
  STAGES+=(tensorrt); STATUS[tensorrt]="skipped: tensorrt is not importable"; SECONDS_TAKEN[tensorrt]=0
fi

# ---- 6b the line loop on the GPU, as a Jetson runs it (torch FP16 stands in for the TensorRT engine):
# plain global and hybrid RX first (fast; hybrid also with --reduction-kernel triangle), then each
# enhanced detector with the network in the loop and on a worker thread (--async-enhance), on the
# rendered scene; a failed run does not stop the others; the reports go to $LOGS/streams,
# device.json keeps their summary
stage stream 150 bash -c '
  rc=0
  run() { '"$PY"' -m edge_had stream --source '"$LOGS"'/fx10.h5 --rx-device cuda "$@" || rc=1; }
  for detector in rx hybrid-rx; do run --detector $detector --json '"$LOGS"'/streams/$detector.json; done
  run --detector hybrid-rx --reduction-kernel triangle --json '"$LOGS"'/streams/hybrid-rx-triangle.json
  for detector in enhanced-rx enhanced-hybrid-rx; do
    for mode in sync async; do
      run --detector $detector --backend torch --device cuda --net-precision fp16 \
        $([ $mode = async ] && echo --async-enhance) --json '"$LOGS"'/streams/$detector-$mode.json
    done
  done
  exit $rc'

# ---- 7 where a block of enhancement goes on the GPU (copies, network, runner)
stage profile 60 $PY bench/gpu_enhance_profile.py --json "$OUT/enhance_profile.json"

# ---- 8 GPU benchmarks (the JSON is rewritten after each launcher: a timeout keeps what finished)
stage bench 180 $PY bench/test_bench_gpu.py --json "$OUT/gpu_bench.json" --lines "$BENCH_LINES" \
  --launchers pycuda,cupy

# ---- 9 device.json and the table, printed last
for name in "${STAGES[@]}"; do
  printf '%s\t%s\t%s\n' "$name" "${STATUS[$name]}" "${SECONDS_TAKEN[$name]}"
done >"$LOGS/stages.tsv"
for name in "${STAGES[@]}"; do
  [ -f "$LOGS/$name.log" ] && { echo "######## $name"; cat "$LOGS/$name.log"; }
done >"$OUT/stages.log"
$PY - "$LOGS/stages.tsv" "$OUT" "$SECONDS" "$LOGS/streams" <<'PY'
import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

stages_file, out, elapsed, stream_reports = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
stages = {}
for line in stages_file.read_text().splitlines():
    name, status, seconds = line.split("\t")
    stages[name] = {"status": status, "seconds": int(seconds or 0)}

tests = {"passed": 0, "failed": 0, "skipped": 0}
launchers = {name: {"passed": 0, "failed": 0, "skipped": 0} for name in ("pycuda", "cupy")}
failures, skips, collection_errors = [], [], []
properties = {}  # what a test measured (record_property: errors against its reference)
junit = out / "pytest-gpu.xml"
if junit.is_file():
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        measured = {p.get("name"): p.get("value") for p in case.iter("property")}  # record_property
        if measured:
            properties[name] = measured
        if problem is not None and "collection failure" in problem.get("message", ""):
            # a module chosen for holding gpu/trt tests that cannot import here: its tests never ran
            collection_errors.append(f"{name}: {problem.text.strip().splitlines()[-1] if problem.text else ''}")
            continue
        if problem is not None:
            outcome = "failed"
            failures.append(name)
        elif case.find("skipped") is not None:
            outcome = "skipped"
            skips.append(f"{name}: {case.find('skipped').get('message', '')[:160]}")
        else:
            outcome = "passed"
        tests[outcome] += 1
        for launcher in launchers:
            if re.search(rf"[\[-]{launcher}[\]-]", case.get("name", "")):
                launchers[launcher][outcome] += 1

streams = []
for path in sorted(stream_reports.glob("*.json")):
    run = json.loads(path.read_text())
    streams.append({
        "detector": run["detector"]["name"],
        "reduction_kernel": run["detector"].get("reduction_kernel"),
        "asynchronous": bool(run["detector"].get("asynchronous_enhancement")),
        "backend": f"{run['backend']['backend']} {run['backend']['precision']}" if run["backend"] else "none",
        "rx_device": run["rx_device"]["device"],
        "lines_per_second": run["lines_per_second"],
        "budget_ms": run["sensor"]["budget_ms"],
        "latency_ms": {stage: {k: v[k] for k in ("p50", "p99", "max")} for stage, v in run["latency_ms"].items()},
        "deadline_misses": run["health"]["deadline_misses"],
        "lines_scored": run["health"]["lines_scored"],
        "warm_up_ms": run["detector"].get("warm_up_ms"),
        "auc": run.get("auc"),
        "local_rx": run["rx_device"].get("local_rx"),
    })

profile_file = out / "enhance_profile.json"
bench = {}
bench_file = out / "gpu_bench.json"
if bench_file.is_file():
    bench = json.loads(bench_file.read_text())
ran = [run["launcher"] for run in bench.get("runs", [])]
passed_with = [name for name, counts in launchers.items() if counts["passed"] and not counts["failed"]]
report = {
    "seconds": elapsed,
    "stages": stages,
    "launcher": {
        "tests_passed_with": passed_with,
        "tests_per_launcher": launchers,
        "benchmarked_with": ran,
        "unavailable": bench.get("unavailable", {}),
        "benchmark_failed": bench.get("failed", {}),
        "kernels": {run["launcher"]: run.get("kernels") for run in bench.get("runs", [])},
    },
    "tests": tests,
    "failures": failures,
    "skips": skips,
    "test_properties": properties,
    "collection_errors": collection_errors,
    "device": (bench.get("runs") or [{}])[0].get("device"),
    "datasheet_peaks": bench.get("datasheet"),
    "measured_peaks": bench.get("measured_peaks"),
    "benchmarks": bench.get("runs", []),
    "streams": streams,
    "enhance_profile": json.loads(profile_file.read_text()) if profile_file.is_file() else None,
}
kernels_built = stages.get("cmake", {}).get("status") == "ok"
tests_finished = stages.get("pytest", {}).get("status", "").startswith(("ok", "failed"))  # not cut short
# the stages after the tests count too (a stream that timed out printed "RESULT: ok" before): each
# must have run to its end or been skipped for a reason other than the budget; the pycuda smoke
# test only where pycuda was installed (CuPy alone is a valid launcher)
checked = ["render", "tensorrt", "stream", "profile", "bench"]
if stages.get("pycuda", {}).get("status", "").startswith("ok"):
    checked.insert(0, "smoke")
stage_failures = [
    f"{name}: {stages[name]['status']}"
    for name in checked
    if name in stages
    and not (stages[name]["status"] == "ok"
             or (stages[name]["status"].startswith("skipped") and "budget" not in stages[name]["status"]))
]
report["stage_failures"] = stage_failures
report["ok"] = bool(
    kernels_built and tests_finished and junit.is_file() and tests["passed"] and not failures
    and not collection_errors and passed_with  # at least one launcher ran its kernel tests, all passed
    and not stage_failures
)
(out / "device.json").write_text(json.dumps(report, indent=2))

print()
print(f"device check: {report['device']}  ({elapsed} s)")
print(f"{'stage':<8} {'status':<40} {'s':>4}")
for name, stage in stages.items():
    print(f"{name:<8} {stage['status']:<40} {stage['seconds']:>4}")
print(f"gpu tests: {tests}  launchers: " + ", ".join(f"{k} {v}" for k, v in launchers.items()))
for error in collection_errors:
    print(f"  NOT COLLECTED {error}")
for failure in stage_failures:
    print(f"  STAGE FAILED {failure}")
if not passed_with:
    print("  no launcher (pycuda, CuPy) ran its kernel tests and passed them all")
for launcher, error in bench.get("failed", {}).items():
    print(f"  benchmark with {launcher} FAILED: {error}")
for failure in failures[:10]:
    print(f"  FAILED {failure}")
for name, measured in properties.items():
    print(f"  {name.split('::')[-1]}: " + ", ".join(f"{k} {v}" for k, v in measured.items()))
for run in streams:
    total, enhance, rx = (run["latency_ms"].get(k, {}) for k in ("total", "enhance", "statistics+rx"))
    mode = "async" if run["asynchronous"] else "sync"
    name = run["detector"] + ("/triangle" if run["reduction_kernel"] == "triangle" else "")
    print(f"stream {name:<18} {mode:<5} {run['backend']}, rx {run['rx_device']}: {run['lines_per_second']:.0f} "
          f"lines/s, total p50/p99 {total.get('p50', float('nan')):.2f}/{total.get('p99', float('nan')):.2f} ms "
          f"(enhance p99 {enhance.get('p99', float('nan')):.2f}, rx p99 {rx.get('p99', float('nan')):.2f}; "
          f"budget {run['budget_ms']:.2f}), misses {run['deadline_misses']}/{run['lines_scored']}, "
          + (f"AUC {run['auc']:.4f}" if run["auc"] is not None else "no AUC")
          + (f", warm-up {run['warm_up_ms']:.0f} ms" if run["warm_up_ms"] else "")
          + (f", local RX on {run['local_rx']['device']}" if run.get("local_rx") else "")
          + (f" ({run['local_rx']['numpy_lines']} lines to numpy)"
             if (run.get("local_rx") or {}).get("numpy_lines") is not None else ""))
if report["enhance_profile"]:
    profile = report["enhance_profile"]
    h2d = profile["h2d"]
    print(f"enhance block {profile['window']}: h2d pageable/pinned {h2d['pageable']['p50']:.2f}/{h2d['pinned']['p50']:.2f} ms")
    for precision in ("fp32", "fp16"):
        entry = profile[precision]
        half = entry.get("forward_half_weights")
        print(f"  {precision}: forward {entry['forward_cudnn_benchmark_off']['p50']:.2f} ms "
              f"(cudnn.benchmark {entry['forward_cudnn_benchmark_on']['p50']:.2f}"
              + (f", FP16 weights {half['p50']:.2f}, vs autocast {entry['half_weights_vs_autocast']:.1e}" if half else "")
              + "), d2h all/enhanced/pinned "
              + "/".join(f"{v['p50']:.2f}" for v in entry["d2h"].values())
              + f" ms, runner all/enhanced {entry['runner']['all_outputs']['p50']:.2f}/"
              f"{entry['runner']['enhanced_only']['p50']:.2f} ms")
for run in bench.get("runs", []):
    for record in run["per_line"]:
        floor = record.get("floor_datasheet") or {}
        share = f"{floor['floor_us']:.2f} us = {floor['fraction_of_p50']:.1%} of p50" if floor else "n/a"
        print(f"{run['launcher']:<6} line {record['shape']:>8} {record['dtype']:<7} kernel p50/p99 "
              f"{record['kernel_us']['p50']:.1f}/{record['kernel_us']['p99']:.1f} us, end-to-end p50/p99 "
              f"{record['end_to_end_us']['p50']:.1f}/{record['end_to_end_us']['p99']:.1f} us, "
              f"datasheet floor {share}")
    best = {}
    for record in run["batched"]:
        if record["lines_per_s_kernel"] > best.get(record["bands"], {}).get("lines_per_s_kernel", 0):
            best[record["bands"]] = record
    for bands, record in best.items():
        print(f"{run['launcher']:<6} batched 1024x{bands}: {record['lines_per_s_kernel']:.0f} lines/s kernel "
              f"({record['lines_per_batch']} lines/launch), {record['lines_per_s_end_to_end']:.0f} with copies")
    for record in run["covariance"]:
        print(f"{run['launcher']:<6} covariance {record['shape']} {record['precision']}: kernel p50 "
              f"{record['kernel_us']['p50']:.1f} us")
    for record in run.get("local", []):
        window = record.get("put_window_us", {}).get("p50", float("nan"))
        print(f"{run['launcher']:<6} local RX {record['shape']} {record['window']}: kernels p50/p99 "
              f"{record['kernel_us']['p50']:.1f}/{record['kernel_us']['p99']:.1f} us, end-to-end p50 "
              f"{record['end_to_end_us']['p50']:.1f} us, put a line / the window p50 "
              f"{record['put_us']['p50']:.1f} / {window:.1f} us")
print(f"RESULT: {'ok' if report['ok'] else 'NOT OK'} (needs: kernels built; GPU tests collected, ran to the end "
      "and none failed; one launcher at least passed all its kernel tests; every later stage ended ok)")
sys.exit(0 if report["ok"] else 1)
PY
