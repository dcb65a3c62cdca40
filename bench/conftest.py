"""Benchmark fixtures: fixed BLAS thread count, platform facts in every JSON record."""

from __future__ import annotations

import os

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from edge_had import settings
from edge_had.eval.report import platform_info

BENCH_THREADS = int(os.environ.get("EDGE_HAD_BENCH_THREADS", "2"))


def pytest_benchmark_update_machine_info(config, machine_info):  # noqa: ARG001 - pytest-benchmark hook
    machine_info["edge_had_platform"] = platform_info()
    machine_info["bench_threads"] = BENCH_THREADS
    machine_info["blas"] = [
        {key: pool.get(key) for key in ("internal_api", "version", "num_threads", "architecture")}
        for pool in threadpool_info()
    ]


@pytest.fixture(autouse=True)
def fixed_threads():
    with threadpool_limits(limits=BENCH_THREADS):
        yield


@pytest.fixture(scope="session")
def bench_threads() -> int:
    return BENCH_THREADS


@pytest.fixture(scope="session")
def scene_paths():
    folder = settings.data_dir()
    paths = sorted(folder.glob("*.mat"))
    if not paths:
        pytest.skip(f"no scenes in {folder} (set {settings.DATA_ENV})")
    return paths
