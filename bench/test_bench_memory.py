"""Peak memory of ``edge-had detect`` on a large scene, per detector, against the file's size.

Each detector runs in a fresh process; its peak resident set (``VmHWM`` of /proc/self/status) is
the whole command's: reading, the detector, the outputs - what a user sizes a machine by.
(``ru_maxrss`` would not do: Linux carries the parent's peak over ``execve``, and the pytest
process holding the rendered scene is larger than some commands.) The scene is a
synthetic 512 x 1024 x 224 int16 cube (235 MB, a flight line of an FX10-like sensor) written once.

    python -m pytest bench/test_bench_memory.py --benchmark-json=bench/results/memory_cpu.json
    python bench/summarize_memory.py bench/results/memory_cpu.json
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

DETECTORS = ["rx", "rx --precision float32", "hybrid-rx", "enhanced-rx", "enhanced-hybrid-rx"]
SHAPE = (512, 1024, 224)

PEAK_OF_DETECT = """
import sys
from edge_had.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("peak_kib", status.split("VmHWM:")[1].split()[0])
sys.exit(code)
"""


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory):
    from edge_had.io.synthetic import synthetic_scene

    cube = synthetic_scene(lines=SHAPE[0], width=SHAPE[1], bands=SHAPE[2], seed=13).cube
    counts = np.clip(cube / cube.max() * 30000, 0, 32767).astype(np.int16)
    path = tmp_path_factory.mktemp("memory") / "flight_line.npy"
    np.save(path, counts)
    return path


def peak_of_detect(scene, detector: str, scores) -> dict:
    command = [sys.executable, "-c", PEAK_OF_DETECT, "detect", str(scene), "--npy", str(scores)]
    finished = subprocess.run([*command, "--detector", *detector.split()], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    peak_kib = int(finished.stdout.split("peak_kib")[-1])
    return {"peak_mb": peak_kib * 1024 / 1e6}


@pytest.mark.parametrize("detector", DETECTORS)
def test_detect_peak_memory(benchmark, large_scene, tmp_path, detector):
    benchmark.group = "detect peak memory"
    result = benchmark.pedantic(
        peak_of_detect, args=(large_scene, detector, tmp_path / "scores.npy"), rounds=1, iterations=1
    )
    file_mb = large_scene.stat().st_size / 1e6
    benchmark.extra_info.update(
        detector=detector,
        shape=list(SHAPE),
        file_mb=file_mb,
        peak_mb=result["peak_mb"],
        peak_over_file=result["peak_mb"] / file_mb,
    )
    assert np.isfinite(np.load(tmp_path / "scores.npy")).any()
