"""Settings read from the environment (one place, so every module agrees)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "EDGE_HAD_DATA"
REQUIRE_DATA_ENV = "EDGE_HAD_REQUIRE_DATA"
DEFAULT_DATA_DIR = Path("../shared/data")


def data_dir() -> Path:
    """Folder of the real scenes: ``$EDGE_HAD_DATA``, default ``../shared/data``."""
    return Path(os.environ.get(DATA_ENV, str(DEFAULT_DATA_DIR))).expanduser()


def require_data() -> bool:
    """True when a missing data folder must fail (CI) instead of skipping."""
    return os.environ.get(REQUIRE_DATA_ENV, "") not in ("", "0", "false", "False")
