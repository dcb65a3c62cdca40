"""Shared fixtures and the skip policy.

* Tests that need the real scenes use the ``data_dir`` fixture: it skips when the folder is
  absent, and fails instead under ``EDGE_HAD_REQUIRE_DATA=1`` (CI).
* ``untrained_bundle(seed, **ModelConfig fields)`` saves a seeded, untrained model bundle in a
  fresh folder and returns that folder (for tests of everything downstream of training).
* Under ``EDGE_HAD_REQUIRE_DATA=1`` any skip of a test not marked ``gpu``, ``trt`` or
  ``cpu_feature`` (hardware the CI machine may lack) is turned into a failure, so CI cannot go
  green by skipping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_had import settings

HARDWARE_MARKERS = ("gpu", "trt", "cpu_feature")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = settings.data_dir()
    if not any(folder.glob("*.mat")):
        message = f"real scenes not found in {folder} (set {settings.DATA_ENV})"
        if settings.require_data():
            pytest.fail(message + f"; {settings.REQUIRE_DATA_ENV}=1 requires them")
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    def make(seed: int = 0, **config_fields: Any) -> Path:
        import torch

        from edge_had.models import ModelConfig, save_bundle

        torch.manual_seed(seed)
        config = ModelConfig(**config_fields)
        folder = tmp_path_factory.mktemp("model")
        save_bundle(folder, config, *config.build_networks())
        return folder

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and settings.require_data()):
        return
    if any(item.get_closest_marker(name) for name in HARDWARE_MARKERS):
        return
    if hasattr(report, "wasxfail"):
        return
    report.outcome = "failed"
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    hardware = "/".join(HARDWARE_MARKERS)
    rule = f"{settings.REQUIRE_DATA_ENV}=1"
    report.longrepr = f"skip not allowed under {rule} (not a {hardware} test): {reason}"
